//! End-to-end tests of `ftprof scale` on this machine (N = 1, 2, and a few quick unprofiled runs).

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;

fn scale(args: &[&str], command: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempdir();
    let out = ftprof()
        .arg("scale")
        .args(args)
        .arg("-o")
        .arg(dir.path().join("out"))
        .arg("--")
        .args(command)
        .output()
        .unwrap();
    (out, dir)
}

fn results(dir: &tempfile::TempDir) -> Value {
    serde_json::from_slice(&std::fs::read(dir.path().join("out/results.json")).unwrap()).unwrap()
}

fn point(r: &Value, n: u64) -> Value {
    r["points"].as_array().unwrap().iter().find(|p| p["threads"] == n).unwrap().clone()
}

fn py() -> String {
    python().to_string_lossy().into_owned()
}

fn svg_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    // inferno's SVGs carry a DOCTYPE.
    let opts = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(&text, opts)
        .unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
    doc.descendants().filter(|n| n.is_text()).map(|n| n.text().unwrap()).collect::<Vec<_>>().join(" ")
}

#[test]
fn embarrassingly_parallel_workload_scales() {
    let wl = workload("scale_parallel.py").to_string_lossy().into_owned();
    let (out, dir) = scale(&["--threads", "1,2", "--repeat", "3"], &[&py(), &wl, "{n}", "15000000"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = results(&dir);
    assert_eq!(r["scaling"], "strong");
    let (p1, p2) = (point(&r, 1), point(&r, 2));
    // The wall-clock efficiency depends on how many CPUs other work leaves free (0.58 to 0.92 at
    // N = 2 on a 2-core machine, depending on its load), so it is not asserted. What holds on any
    // machine: the threads share nothing, so no time goes to contention at either N ...
    const CONTENTION: [&str; 8] =
        ["refcount", "atomic_refcount", "spin", "critical_section", "lock", "pymutex", "stop_the_world", "gil"];
    for p in [&p1, &p2] {
        let c: f64 = CONTENTION.iter().map(|k| p["categories"][k].as_f64().unwrap_or(0.0)).sum();
        assert!(c < 0.05, "contention share {:.1} % at N = {}: {}", c * 100.0, p["threads"], p["categories"]);
    }
    // ... and one unit of work costs as much CPU time at N = 2 as at N = 1 (a busy machine
    // delays the threads — runqueue time — but does not make the work itself bigger). Margin:
    // CPU frequency and cache effects of a second running thread, measured within ±15 %.
    let cpu =
        |p: &Value| ["python", "native", "gc"].iter().map(|k| p["per_work_us"][k].as_f64().unwrap_or(0.0)).sum::<f64>();
    let ratio = cpu(&p2) / cpu(&p1);
    assert!(
        (0.7..=1.4).contains(&ratio),
        "CPU time per unit of work at N = 2 vs N = 1: {ratio:.2} ({:.0} µs vs {:.0} µs)",
        cpu(&p2),
        cpu(&p1)
    );
    // The efficiency itself is wall clock over wall clock: on a loaded machine an unlucky N = 1
    // run makes it anything (1.70 once, with two busy loops beside the suite), so only its
    // consistency is asserted: speedup / N, within the speedups of the fastest and slowest runs.
    let f = |p: &Value, k: &str| p[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {p}"));
    let eff = f(&p2, "efficiency");
    assert!(eff.is_finite() && eff > 0.0, "efficiency {eff}");
    assert!((eff - f(&p2, "speedup") / 2.0).abs() < 1e-9, "{p2}");
    assert!((f(&p2, "speedup_min")..=f(&p2, "speedup_max")).contains(&f(&p2, "speedup")), "{p2}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("speedup") && table.contains("efficiency"), "{table}");
}

#[test]
fn workload_serialised_on_one_lock_gate_agrees_and_charts_are_written() {
    let wl = workload("scale_serialized.py").to_string_lossy().into_owned();
    let (out, dir) = scale(&["--threads", "1,2", "--fail-under", "0.7"], &[&py(), &wl, "{n}"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r = results(&dir);
    let (p1, p2) = (point(&r, 1), point(&r, 2));
    // Wall-clock efficiency depends on how many CPUs other work leaves free (on a busy 2-core
    // machine a slowed N = 1 run can make N = 2 look better than it is): the gate must agree
    // with it, whatever it is.
    let eff = p2["efficiency"].as_f64().unwrap();
    let failed = eff < 0.7;
    assert_eq!(out.status.code(), Some(if failed { 3 } else { 0 }), "efficiency {eff}: {stderr}");
    // One thread never waits for the lock. With two, one waits while the other holds it unless
    // it is waiting for a CPU then: from 0 (4 of 10 runs at load 8 on 2 cores, where the two
    // threads seldom ran at the same moment) to about the Python time per unit of work on an
    // idle machine, so N = 2 is not asserted here (lock waits themselves: tests/waits.rs).
    let per = |p: &Value, k: &str| p["per_work_us"][k].as_f64().unwrap_or(0.0);
    assert!(per(&p1, "lock") <= 0.01 * per(&p1, "python"), "lock at N = 1: {}", p1["per_work_us"]);
    assert!(per(&p2, "python") > 0.0, "{}", p2["per_work_us"]);
    // Which category grows most per unit of work (lock on an idle machine; python too, or none
    // beyond the run-to-run variation, when the two threads seldom run at the same moment)
    // depends on the load: the gate names the one `largest_growth` picks from the measured
    // points (table-tested in analysis::scaling).
    if failed {
        assert!(stderr.contains("below 0.70"), "{stderr}");
        let result: analysis::scaling::ScaleResult = serde_json::from_value(r.clone()).unwrap();
        match analysis::scaling::largest_growth(&result.points) {
            Some(g) => assert!(stderr.contains(&format!("largest growing category is {}", g.category)), "{stderr}"),
            None => assert!(stderr.contains("no category of the program grew"), "{stderr}"),
        }
    }
    for key in ["threads", "median", "spread", "speedup", "efficiency", "oversubscribed", "categories"] {
        assert!(!p2[key].is_null(), "results.json point lacks {key}: {p2}");
    }

    // Charts: XML, axis labels, the workload's command line.
    let scaling = svg_text(&dir.path().join("out/scaling.svg"));
    assert!(
        scaling.contains("threads (N)") && scaling.contains("speedup") && scaling.contains("scale_serialized.py"),
        "{scaling}"
    );
    let breakdown = svg_text(&dir.path().join("out/breakdown.svg"));
    assert!(breakdown.contains("share of thread time") && breakdown.contains("scale_serialized.py"), "{breakdown}");
    // Every category some point measured is in the legend (lock, unless the two threads never
    // ran at the same moment: see above).
    for p in r["points"].as_array().unwrap() {
        for (c, v) in p["categories"].as_object().unwrap() {
            if v.as_f64().unwrap_or(0.0) > 0.0 {
                assert!(breakdown.contains(c.as_str()), "{c} not in the legend: {breakdown}");
            }
        }
    }
    let diff = svg_text(&dir.path().join("out/diff.svg"));
    assert!(diff.contains("N = 1 to N = 2") && diff.contains("scale_serialized.py"), "{diff}");
    for n in [1, 2] {
        svg_text(&dir.path().join(format!("out/flame-n{n}.svg")));
    }
}

/// A program that prints a rate proportional to N: speedup N, efficiency 1, exactly.
const RATE_SCRIPT: &str =
    "import sys\nn = int(sys.argv[1])\nprint('warming up: 1 op/s')\nprint(f'throughput {100.0 * n} op/s')";

#[test]
fn metric_fit_and_oversubscription_in_results() {
    let (out, dir) = scale(
        &[
            "--threads",
            "1,2,4",
            "--repeat",
            "2",
            "--no-profile",
            "--metric",
            r"throughput ([0-9.]+)",
            "--higher-is-better",
        ],
        &[&py(), "-c", RATE_SCRIPT, "{n}"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = results(&dir);
    let cpus = r["online_cpus"].as_u64().unwrap();
    for n in [1u64, 2, 4] {
        let p = point(&r, n);
        assert!((p["speedup"].as_f64().unwrap() - n as f64).abs() < 1e-9, "{p}");
        assert!((p["efficiency"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(p["oversubscribed"], n > cpus);
        assert_eq!(p["runs"].as_array().unwrap().len(), 2);
    }
    // Fits only from the points within the CPUs, and only when they determine the model: Amdahl
    // (one parameter) from two thread counts besides N = 1, the USL (two) from three.
    let within = [1u64, 2, 4].iter().filter(|&&n| n <= cpus).count() - 1;
    let note = r["fit_note"].as_str().unwrap_or("");
    if within >= 2 {
        assert!(r["amdahl"]["serial_fraction"].as_f64().unwrap().abs() < 1e-6, "{r}");
    } else {
        assert!(r["amdahl"].is_null(), "{r}");
        assert!(note.contains("no Amdahl fit: Amdahl's law has 1 parameter(s)"), "{note}");
        assert!(note.contains("N = 4 left out of the fits (more threads than CPUs)"), "{note}");
    }
    assert!(r["usl"].is_null(), "three thread counts cannot determine the USL: {r}");
    assert!(note.contains("no USL fit: the USL has 2 parameter(s)"), "{note}");
    assert_eq!(r["measure"]["higher_is_better"], true);
    if 4 > cpus {
        assert!(String::from_utf8_lossy(&out.stderr).contains("oversubscribed"));
    }
}

#[test]
fn weak_scaling_uses_n_t1_over_tn() {
    // Every "run" reports the same duration: perfect weak scaling, speedup N.
    let (out, dir) = scale(
        &["--threads", "1,2", "--weak", "--no-profile", "--metric", r"took ([0-9.]+) s"],
        &[&py(), "-c", "print('took 2.5 s')"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = results(&dir);
    assert_eq!(r["scaling"], "weak");
    assert!((point(&r, 2)["speedup"].as_f64().unwrap() - 2.0).abs() < 1e-9);
}

#[test]
fn a_failing_thread_count_is_reported_and_the_others_kept() {
    let script = "import sys\nsys.exit(1 if sys.argv[1] == '2' else 0)";
    let (out, dir) = scale(&["--threads", "1,2,3", "--no-profile"], &[&py(), "-c", script, "{n}"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("N=2 run 1: exit code 1"));
    let r = results(&dir);
    assert_eq!(point(&r, 2)["failed_runs"], 1);
    assert!(point(&r, 1)["median"].as_f64().unwrap() > 0.0 && point(&r, 3)["median"].as_f64().unwrap() > 0.0);
}
#[test]
fn metric_that_never_matches_is_an_error() {
    let (out, _dir) =
        scale(&["--threads", "1,2", "--no-profile", "--metric", r"rate=(\d+)"], &[&py(), "-c", "print('hello')"]);
    assert_one_line_error(&out, "--metric regex never matched");
}

#[test]
fn non_numeric_thread_counts_are_an_error() {
    let (out, _dir) = scale(&["--threads", "1,x"], &[&py(), "-c", "pass"]);
    assert_one_line_error(&out, "'x' is not a thread count");
}
