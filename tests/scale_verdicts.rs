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
    let dir = tempdir();
    let out = scale(
        dir.path(),
        &["--weak", "--threads", "1,2", "--repeat", "5", "--fail-under", "0.95"],
        &[&py(), &wl.to_string_lossy(), "{n}"],
    );
    let all = text(&out);
    // Whether 2 threads reach 95 % efficiency, and which category grows most per unit of work
    // (refcount, python, or none beyond the run-to-run variation), depends on how often the two
    // threads run at the same moment, i.e. on the machine and its load; those decisions are
    // table-tested in `analysis::scaling`. What holds on any machine: the gate, the verdict and
    // results.json agree with each other and with the decision on the measured points, and
    // waiting for a CPU is never blamed on the program.
    let r = results(dir.path());
    let result: analysis::scaling::ScaleResult = serde_json::from_value(r.clone()).unwrap();
    let eff = result.points.last().and_then(|p| p.efficiency).unwrap();
    assert_eq!(out.status.code(), Some(if eff < 0.95 { 3 } else { 0 }), "efficiency {eff}: {all}");
    for p in &result.points {
        assert!(!p.per_work_us.is_empty(), "{p:?}");
        assert!(p.per_work_us.get("python").is_some_and(|&v| v > 0.0), "{p:?}");
    }
    let growth = analysis::scaling::largest_growth(&result.points);
    assert_eq!(serde_json::to_value(&growth).unwrap(), r["growth"], "{all}");
    let gate =
        String::from_utf8_lossy(&out.stderr).lines().find(|l| l.contains("is below 0.95")).unwrap_or("").to_string();
    match &growth {
        Some(g) => {
            assert!(analysis::scaling::blamable(&g.category), "{g:?}");
            assert!(g.to_us > g.from_us, "{g:?}");
            if eff < 0.95 {
                assert!(gate.contains(&format!("the largest growing category is {}", g.category)), "{gate}\n{all}");
            }
            // Its site is in the workload (the shared line, or the loop around it).
            assert!(g.line.as_deref().is_some_and(|l| l.contains("scale_shared_list.py:")), "{g:?}");
            let table = String::from_utf8_lossy(&out.stdout);
            assert!(table.contains("growth: thread time per unit of work"), "{all}");
        }
        None if eff < 0.95 => assert!(gate.contains("no category of the program grew"), "{gate}\n{all}"),
        None => {}
    }
    for wrong in ["category is runqueue", "category is join", "category is idle"] {
        assert!(!gate.contains(wrong), "{gate}");
    }
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
    // At a real-time priority where permitted (see `common::realtime`): with other CPU-bound
    // processes on the CPUs, each 3 ms wait ended behind another process's time slice, a run's
    // repeats spread by 40–60 %, the lock barely showed (1 % of thread time) and the regression
    // could not be told from the noise.
    realtime(&mut ftprof(), 1).arg("scale").args(&args).arg("-o").arg(dir).arg("--").args(&cmd).output().unwrap()
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
    let line = format!("scale_flag_lock.py:{}", line_of(&workload("scale_flag_lock.py"), "LOCK-LINE"));
    let grew = all
        .lines()
        .find(|l| l.contains("share of the program's own time (less waiting for a CPU) grew:"))
        .unwrap_or("");
    the_regression_is_flagged(&out, &all, grew, &line, &new_dir);

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

/// The full verdict on the locked run: exit 3, the regression, what grew, the top finding.
fn the_regression_is_flagged(out: &Output, all: &str, grew: &str, line: &str, new_dir: &Path) {
    assert_eq!(out.status.code(), Some(3), "a regression must exit 3: {all}");
    assert!(all.contains("SCALING REGRESSION"), "{all}");
    assert!(grew.contains("lock ") && grew.contains(line), "names lock and {line}: {all}");
    // The message ends with the top finding of the largest thread count: what to change, where.
    let finding = all.lines().find(|l| l.contains("; top finding: ")).unwrap_or_else(|| panic!("no finding: {all}"));
    assert!(finding.contains("(scale_flag_lock.py:") && finding.contains("— do: "), "{finding}");
    let r = results(new_dir);
    let c = &r["baseline"];
    assert_eq!(c["verdict"], "regression", "{c}");
    let p = &c["points"][0];
    assert_eq!(p["threads"], 2);
    assert_eq!(p["regression"], true);
    assert!(p["speedup_range"][1].as_f64().unwrap() < p["baseline_range"][0].as_f64().unwrap(), "{p}");
    let grown = p["grown"].as_array().unwrap();
    let lock = grown.iter().find(|g| g["category"] == "lock").unwrap_or_else(|| panic!("lock not grown: {p}"));
    assert!(lock["site"]["line"].as_str().is_some_and(|l| l.contains(line)), "{lock}");
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
