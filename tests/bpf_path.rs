//! The BPF path of `record`: by default (when permitted: root here) the CPU samples' Python
//! stacks are read in the kernel at the sample instant, and the run says so in its summary and
//! JSON (never a silent fallback). `FTPROF_BPF=0` turns it off, and the fallback is named; the
//! fallback under dropped privileges is in `tests/privilege.rs`.

mod common;

use common::*;
use serde_json::Value;

/// `ftprof record` of two CPU-bound threads with `FTPROF_BPF` set to `env` (`None`: unset):
/// the JSON, and the summary's `Python stacks:` line.
fn record(env: Option<&str>) -> (Value, String) {
    let dir = tempdir();
    let out_path = dir.path().join("p.json");
    let mut c = ftprof();
    match env {
        Some(v) => c.env("FTPROF_BPF", v),
        None => c.env_remove("FTPROF_BPF"),
    };
    let out = c
        .arg("record")
        .args(["--format", "json", "-o"])
        .arg(&out_path)
        .arg("--")
        .arg(python())
        .arg(workload("two_threads.py"))
        .arg("2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ftprof failed: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("Python stacks: "))
        .unwrap_or_else(|| panic!("no summary line saying how Python stacks were read:\n{stderr}"))
        .trim()
        .to_string();
    (serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap(), line)
}

/// By default as root: the BPF path, named with its counts in the summary and the JSON, and
/// ≤ 1 % of the samples' Python stacks disagree with their native ones. A run that fell back
/// fails here with the reason it printed.
#[test]
fn record_reads_python_stacks_in_the_kernel_by_default_and_says_so() {
    for env in [None, Some("1")] {
        let (v, line) = record(env);
        let summary = &v["summary"];
        let ps = &summary["python_stacks"];
        eprintln!("FTPROF_BPF={env:?}: {line}");
        assert_eq!(ps["path"], "bpf", "FTPROF_BPF={env:?}: the BPF path was not taken: {line}");
        assert!(line.starts_with("Python stacks: read in the kernel at the sample instant (BPF) for "), "{line}");
        let at_instant = ps["at_instant"].as_u64().unwrap();
        assert!(line.contains(&format!("for {at_instant} samples")), "{line} vs {ps}");
        let samples = summary["samples"].as_u64().unwrap();
        assert!(at_instant > 0 && at_instant <= samples, "{ps}, {samples} samples");
        // Most samples are of the two Python threads: nearly all read at the instant.
        assert!(at_instant as f64 >= 0.9 * summary["with_python"].as_u64().unwrap() as f64, "{ps}; {summary}");
        // A launched target starts before the programs are verified only with --no-waits (not
        // here; with FTPROF_BPF=1 never): samples taken before are counted and named.
        let before = ps["before_ready"].as_u64().unwrap_or(0);
        if env.is_some() {
            assert_eq!(before, 0, "{ps}");
        }
        assert_eq!(
            before > 0,
            line.contains(&format!("and {before} (taken while the kernel verified the BPF programs)")),
            "{line} vs {ps}"
        );
        // The few samples read after the fact (a thread's first, before its thread state was
        // registered) may disagree; the acceptance is ≤ 1 %.
        assert!(summary["mismatched"].as_u64().unwrap() * 100 <= samples, "{summary}");
    }
}

/// `FTPROF_BPF=0`: stacks are read after the sample, and the summary and JSON say why.
#[test]
fn turned_off_the_fallback_is_named() {
    let (v, line) = record(Some("0"));
    let ps = &v["summary"]["python_stacks"];
    assert_eq!(ps["path"], "after-sample", "{ps}");
    assert_eq!(ps["reason"], "turned off (FTPROF_BPF=0)", "{ps}");
    assert_eq!(ps["at_instant"], 0, "{ps}");
    assert_eq!(line, "Python stacks: read after the sample (BPF not used: turned off (FTPROF_BPF=0))");
    assert!(v["summary"]["with_python"].as_u64().unwrap() > 0, "stacks are still read: {}", v["summary"]);
}

/// A launched interpreter starts up while the kernel verifies the BPF programs, held at
/// `Py_RunMain` until they are attached: the kernel's accounting still sees the program's very
/// first wait (one wait of ~300 ms on the lock, with the kernel's timing), even when the programs
/// are ready only 400 ms after ftprof's start (`FTPROF_TEST_BPF_DELAY_MS`: the interpreter's
/// start-up is long done by then). With `FTPROF_HOLD=0` (waiting before its exec) the same.
#[test]
fn the_first_wait_of_a_launched_program_is_counted_by_the_kernel() {
    for hold in [None, Some("0")] {
        let dir = tempdir();
        let out_path = dir.path().join("p.json");
        let mut c = ftprof();
        c.env_remove("FTPROF_BPF").env("FTPROF_TEST_BPF_DELAY_MS", "400");
        match hold {
            Some(v) => c.env("FTPROF_HOLD", v),
            None => c.env_remove("FTPROF_HOLD"),
        };
        let out = c
            .args(["record", "--format", "json", "-o"])
            .arg(&out_path)
            .arg("--")
            .arg(python())
            .arg(workload("first_wait.py"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "FTPROF_HOLD={hold:?}: ftprof failed: {stderr}");
        let v: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
        assert_eq!(v["summary"]["sched_accounting"]["source"], "bpf", "{}", v["summary"]);
        let lock = v["locks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["top_lines"][0]["line"].as_str().is_some_and(|t| t.starts_with("first_waiter (first_wait.py:")))
            .unwrap_or_else(|| panic!("FTPROF_HOLD={hold:?}: no lock waited for by first_waiter: {}", v["locks"]))
            .clone();
        assert_eq!(lock["waits"], 1, "FTPROF_HOLD={hold:?}: {lock}");
        let kernel_us = lock["kernel_wait_us"].as_u64().unwrap_or_else(|| panic!("no kernel timing: {lock}"));
        // The waiter may start late on a loaded machine: the bounds are loose.
        assert!((50_000..5_000_000).contains(&kernel_us), "FTPROF_HOLD={hold:?}: {kernel_us} µs: {lock}");
    }
}
