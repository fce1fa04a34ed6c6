//! End-to-end tests of what `ftprof scale` concludes: the category whose thread time per unit
//! of work grew (`--fail-under`), and regressions against a baseline (`--baseline`), on the real
//! free-threaded CPython at N = 1 and 2 (this machine has 2 cores).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::Value;

fn py() -> String {
    python().to_string_lossy().into_owned()
}

fn scale(out_dir: &Path, args: &[&str], command: &[&str]) -> Output {
    ftprof().arg("scale").args(args).arg("-o").arg(out_dir).arg("--").args(command).output().unwrap()
}

fn results(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap()
}

/// stdout and stderr, and the machine's load (these tests need CPUs that are not saturated by
/// other work: threads that wait for a CPU most of the time rarely run at the same time, and
/// neither contention nor parallel speedup can show).
fn text(out: &Output) -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{}\n{}\n(load average {}on {} CPUs)",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        load.split_whitespace().take(3).map(|v| format!("{v} ")).collect::<String>(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    )
}

#[test]
fn fail_under_blames_the_cause_that_grows_per_unit_of_work_not_runqueue_or_join() {
    // Weak scaling: every thread reads a shared global list in its hot loop. The shared
    // reference counts cost something at N = 1 already and more with 2 threads writing them.
    let wl = workload("scale_shared_list.py");
    let line = format!("scale_shared_list.py:{}", line_of(&wl, "SHARED-LINE"));
    let dir = tempdir();
    let out = scale(
        dir.path(),
        &["--weak", "--threads", "1,2", "--repeat", "5", "--fail-under", "0.95"],
        &[&py(), &wl.to_string_lossy(), "{n}"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "--fail-under 0.95 must fail: {all}");
    let gate =
        String::from_utf8_lossy(&out.stderr).lines().find(|l| l.contains("is below 0.95")).unwrap_or("").to_string();
    assert!(
        gate.contains("the largest growing category is refcount")
            || gate.contains("the largest growing category is python"),
        "blamed: {gate}\n{all}"
    );
    assert!(gate.contains(&line), "the gate names the line {line}: {gate}");
    for wrong in ["category is runqueue", "category is join", "category is idle"] {
        assert!(!gate.contains(wrong), "{gate}");
    }
    let r = results(dir.path());
    let g = &r["growth"];
    assert!(g["category"] == "refcount" || g["category"] == "python", "{g}");
    assert!(g["line"].as_str().is_some_and(|l| l.contains(&line)), "{g}");
    // Present at N = 1, and grown at N = 2, per unit of work.
    let (from, to) = (g["from_us"].as_f64().unwrap(), g["to_us"].as_f64().unwrap());
    assert!(from > 0.0 && to > from, "{g}");
    for p in r["points"].as_array().unwrap() {
        assert!(p["per_work_us"].as_object().is_some_and(|m| !m.is_empty()), "{p}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("growth: thread time per unit of work"), "{all}");
}

fn flag_lock(dir: &Path, baseline: Option<&Path>, lock: bool) -> Output {
    let wl = workload("scale_flag_lock.py").to_string_lossy().into_owned();
    // Four interleaved repeats: four paired speedups per run.
    let mut args = vec!["--threads", "1,2", "--repeat", "4"];
    let b;
    if let Some(p) = baseline {
        b = p.to_string_lossy().into_owned();
        args.extend(["--baseline", b.as_str()]);
    }
    let mut cmd = vec![py(), wl, "{n}".into()];
    if lock {
        cmd.push("--lock".into());
    }
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    scale(dir, &args, &cmd)
}

#[test]
fn baseline_flags_a_lock_added_to_the_hot_loop_and_not_the_noise_between_equal_runs() {
    let dir = tempdir();
    let base_dir = dir.path().join("base");
    let out = flag_lock(&base_dir, None, false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let base: PathBuf = base_dir.join("results.json");

    // The "new commit" takes a shared lock in the hot loop.
    let new_dir = dir.path().join("locked");
    let out = flag_lock(&new_dir, Some(&base), true);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "a regression must exit 3: {all}");
    let line = format!("scale_flag_lock.py:{}", line_of(&workload("scale_flag_lock.py"), "LOCK-LINE"));
    assert!(all.contains("SCALING REGRESSION"), "{all}");
    let grew = all.lines().find(|l| l.contains("share of thread time grew:")).unwrap_or("");
    assert!(grew.contains("lock ") && grew.contains(&line), "names lock and {line}: {all}");
    // The message ends with the top finding of the largest thread count: what to change, where.
    let finding = all.lines().find(|l| l.contains("; top finding: ")).unwrap_or_else(|| panic!("no finding: {all}"));
    assert!(finding.contains("(scale_flag_lock.py:") && finding.contains("— do: "), "{finding}");
    let r = results(&new_dir);
    let c = &r["baseline"];
    assert_eq!(c["verdict"], "regression", "{c}");
    let p = &c["points"][0];
    assert_eq!(p["threads"], 2);
    assert_eq!(p["regression"], true);
    assert!(p["speedup_range"][1].as_f64().unwrap() < p["baseline_range"][0].as_f64().unwrap(), "{p}");
    let grown = p["grown"].as_array().unwrap();
    let lock = grown.iter().find(|g| g["category"] == "lock").unwrap_or_else(|| panic!("lock not grown: {p}"));
    assert!(lock["site"]["line"].as_str().is_some_and(|l| l.contains(&line)), "{lock}");

    // The same code again, three times: the differences are this machine's noise.
    for i in 0..3 {
        let again = dir.path().join(format!("again{i}"));
        let out = flag_lock(&again, Some(&base), false);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(0), "run {i} without the lock against the baseline: {all}");
        assert!(all.contains("no scaling regression"), "{all}");
        assert_eq!(results(&again)["baseline"]["verdict"], "no regression");
    }
}

#[test]
fn a_baseline_that_cannot_be_compared_is_a_one_line_error() {
    let dir = tempdir();
    let missing = dir.path().join("nope/results.json");
    let out = scale(
        &dir.path().join("o"),
        &["--threads", "1", "--no-profile", "--baseline", &missing.to_string_lossy()],
        &[&py(), "-c", "pass"],
    );
    assert_one_line_error(&out, "cannot read the --baseline");
    std::fs::write(dir.path().join("bad.json"), "{\"x\": 1}").unwrap();
    let out = scale(
        &dir.path().join("o"),
        &["--threads", "1", "--no-profile", "--baseline", &dir.path().join("bad.json").to_string_lossy()],
        &[&py(), "-c", "pass"],
    );
    assert_one_line_error(&out, "is not an ftprof scale results.json");
    // A strong-scaling baseline for a weak-scaling run.
    let out = scale(&dir.path().join("strong"), &["--threads", "1,2", "--no-profile"], &[&py(), "-c", "pass"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = scale(
        &dir.path().join("o"),
        &[
            "--threads",
            "1,2",
            "--no-profile",
            "--weak",
            "--baseline",
            &dir.path().join("strong/results.json").to_string_lossy(),
        ],
        &[&py(), "-c", "pass"],
    );
    assert_one_line_error(&out, "not comparable");
    let out = scale(&dir.path().join("o"), &["--threads", "1", "--tolerance", "0.1"], &[&py(), "-c", "pass"]);
    assert!(!out.status.success());
}
