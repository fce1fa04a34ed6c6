//! End-to-end tests of `ftprof record` against the real free-threaded CPython.

mod common;

use common::*;

#[test]
fn native_and_python_frames_merge_per_thread() {
    let wl = workload("two_threads.py");
    let (p, out) = record_json("two_threads.py", &["2"], &[]);
    let ids = tids(&out.stdout);
    let (hasher, spinner) = (ids["hasher"], ids["spinner"]);
    let sha_line = line_of(&wl, "SHA-LINE");
    let stacks = p.stacks();

    // Hasher: its Python function, at the hashing line, is an ancestor of the native SHA-256 code.
    let total_h = p.thread_samples(hasher);
    let with_sha: u64 = stacks
        .iter()
        .filter(|s| s.0 == hasher)
        .filter(|(_, frames, _)| {
            let py = frames.iter().position(|f| f.kind == "python" && f.name == "hasher" && f.line == Some(sha_line));
            let native = frames.iter().rposition(|f| f.kind == "native" && f.name.to_lowercase().contains("sha2"));
            matches!((py, native), (Some(a), Some(b)) if a < b)
        })
        .map(|s| s.2)
        .sum();
    assert!(total_h > 100, "hasher thread has {total_h} samples");
    assert!(
        with_sha * 2 > total_h,
        "only {with_sha} of {total_h} hasher samples show hasher:{sha_line} above SHA-256 code"
    );

    // Spinner: innermost Python frame is `spinner` in nearly every sample that has Python frames.
    let mut py_samples = 0;
    let mut in_spinner = 0;
    for (tid, frames, n) in &stacks {
        if *tid != spinner {
            continue;
        }
        if let Some(f) = innermost_python(frames) {
            py_samples += n;
            if f.name == "spinner" {
                in_spinner += n;
            }
        }
    }
    assert!(py_samples > 100, "spinner has {py_samples} samples with Python frames");
    assert!(in_spinner as f64 >= 0.9 * py_samples as f64, "spinner innermost in {in_spinner}/{py_samples}");
    // Thread roots carry the Python thread name and the TID.
    for (name, tid) in [("spinner", spinner), ("hasher", hasher)] {
        let roots: Vec<_> = stacks.iter().filter(|s| s.0 == tid).map(|s| s.1[0].name.clone()).collect();
        assert!(roots.iter().all(|r| *r == format!("{name} ({tid})")), "{roots:?}");
    }
}

#[test]
fn shares_follow_cpu_time_two_to_one() {
    let (p, _) = record_json("split_2_1.py", &["3"], &[]);
    let (mut two, mut one) = (0u64, 0u64);
    for (_, frames, n) in p.stacks() {
        match innermost_python(&frames).map(|f| f.name.as_str()) {
            Some("two_parts") => two += n,
            Some("one_part") => one += n,
            _ => {}
        }
    }
    let share = 100.0 * two as f64 / (two + one) as f64;
    assert!(two + one > 300, "{two} + {one} samples");
    assert!((57.0..=77.0).contains(&share), "two_parts share {share:.1} % (want 67 ± 10)");
}

#[test]
fn sample_count_matches_rate_times_cpu_time() {
    let (p, _) = record_json("cpu_bound.py", &["2", "8000000"], &["--rate", "199"]);
    let cpu = p.summary("target_cpu_s");
    let samples = p.summary("samples");
    let expected = 199.0 * cpu;
    assert!(cpu > 0.5, "target used {cpu} CPU s");
    let ratio = samples / expected;
    assert!((0.8..=1.2).contains(&ratio), "{samples} samples for {cpu:.2} CPU s at 199 Hz (ratio {ratio:.2})");
}

#[test]
fn few_unresolved_frames_in_the_interpreter_and_libc() {
    let (p, _) = record_json("two_threads.py", &["1.5"], &[]);
    let unresolved = p.summary("unresolved_core") / p.summary("samples");
    assert!(p.summary("samples") > 100.0);
    assert!(unresolved < 0.05, "{:.1} % of samples have unresolved libpython/libc frames", unresolved * 100.0);
    assert!(p.summary("unwind_incomplete") / p.summary("samples") < 0.05);
}

#[test]
fn thread_started_later_is_recorded() {
    let (p, out) = record_json("late_thread.py", &[], &[]);
    let late = tids(&out.stdout)["late"];
    let stacks = p.stacks();
    let n: u64 = stacks
        .iter()
        .filter(|s| s.0 == late && s.1.iter().any(|f| f.kind == "python" && f.name == "late_worker"))
        .map(|s| s.2)
        .sum();
    assert!(n > 50, "late thread {late}: {n} samples in late_worker");
}

#[test]
fn svg_and_folded_outputs() {
    let dir = tempdir();
    let svg = dir.path().join("p.svg");
    let out = ftprof()
        .args(["record", "-o"])
        .arg(&svg)
        .arg("--")
        .arg(python())
        .arg(workload("late_thread.py"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<?xml"), "SVG header");
    assert!(text.contains("late_worker (late_thread.py:"), "Python frame in SVG");
    assert!(text.contains("late_thread.py"), "title carries the command line");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("samples") && summary.contains("lost records") && summary.contains("with Python frames"),
        "{summary}"
    );

    let folded = dir.path().join("p.txt");
    let out = ftprof()
        .args(["record", "--format", "folded", "--mode", "cpu", "--rate", "499", "-o"])
        .arg(&folded)
        .arg("--")
        .arg(python())
        .arg(workload("split_2_1.py"))
        .arg("1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&folded).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let (stack, count) = l.rsplit_once(' ').unwrap();
        assert!(count.parse::<u64>().unwrap() > 0);
        assert!(stack.split(';').count() >= 2, "{l}");
    }
    // 499 Hz for ~1 CPU second.
    let total: u64 = lines.iter().map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap()).sum();
    assert!(total > 300, "{total} samples at 499 Hz");
}

#[test]
fn target_exit_status_is_reported_and_returned() {
    let dir = tempdir();
    let out = ftprof()
        .args(["record", "-o"])
        .arg(dir.path().join("p.svg"))
        .arg("--")
        .arg(python())
        .args(["-c", "import sys\nx = sum(i for i in range(3_000_000))\nsys.exit(3)"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exit code 3"));
    assert!(dir.path().join("p.svg").exists());
}

#[test]
fn ctrl_c_stops_the_target_and_still_writes_output() {
    use std::io::{BufRead, BufReader};
    let dir = tempdir();
    let path = dir.path().join("p.json");
    let mut child = ftprof()
        .args(["record", "-f", "json", "-o"])
        .arg(&path)
        .arg("--")
        .arg(python())
        .arg(workload("forever.py"))
        .arg("60")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    // SAFETY: kill(2) on our own child, which has not been waited for (its pid is still ours).
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["target"]["interrupted"], true);
    assert!(v["summary"]["samples"].as_u64().unwrap() > 0, "samples before Ctrl-C");
    let names: Vec<&str> = v["frames"].as_array().unwrap().iter().filter_map(|f| f["name"].as_str()).collect();
    assert!(names.contains(&"burn"));
}

/// Without the BPF path, Python stacks are read after the sample. When ftprof falls behind
/// (stopped here) until the threads have finished, those samples lose their Python frames: the
/// run counts them and says so, rather than showing native-only stacks unexplained.
#[test]
fn python_stacks_read_after_their_threads_finished_are_counted_and_said() {
    use std::io::{BufRead, BufReader, Write};
    use std::time::Duration;
    let dir = tempdir();
    let path = dir.path().join("p.json");
    let mut child = ftprof()
        .env("FTPROF_BPF", "0")
        .args(["record", "-f", "json", "-o"])
        .arg(&path)
        .arg("--")
        .arg(python())
        .arg(workload("finish_on_stdin.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // ftprof reads the threads' stacks while they run, then stops reading (SIGSTOP) for 0.5 s
    // of their work and until they have finished.
    std::thread::sleep(Duration::from_millis(1000));
    let ftprof_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(ftprof_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    writeln!(child.stdin.take().unwrap(), "stop").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::kill(ftprof_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let ps = &v["summary"]["python_stacks"];
    assert_eq!(ps["path"], "after-sample", "{ps}");
    let too_late = ps["too_late"].as_u64().unwrap_or(0);
    assert!(too_late > 0, "no sample counted as read too late: {ps}\n{stderr}");
    // The threads ran 0.5 s while ftprof was stopped: the earliest of those samples was read
    // that long after it was taken, less the moments before its thread was next sampled.
    assert!(ps["too_late_ms"].as_u64().unwrap() >= 200, "{ps}");
    assert!(stderr.contains(&format!("Python stacks lost: {too_late} samples have no Python frames")), "{stderr}");
    // They are all the samples without Python frames but a few (the interpreter's start-up).
    let samples = v["summary"]["samples"].as_u64().unwrap();
    let with_python = v["summary"]["with_python"].as_u64().unwrap();
    assert!(
        with_python + too_late + 10 + samples / 20 >= samples,
        "{samples} samples, {with_python} with Python frames, {too_late} too late"
    );
}
