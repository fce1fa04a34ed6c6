//! End-to-end tests of `ftprof record --subprocesses` on the real free-threaded CPython: a
//! `ProcessPoolExecutor` with 2 workers (fork and spawn start methods), a non-Python child, the
//! default (target only), and attaching to a pool that is already running.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::Value;

const WL: &str = "process_pool.py";

/// Every stack as (thread, frames, samples, wait_us).
fn stacks(p: &Profile) -> Vec<(u64, Vec<Frame>, u64, u64)> {
    let waits: Vec<u64> = p.0["stacks"].as_array().unwrap().iter().map(|s| s["wait_us"].as_u64().unwrap()).collect();
    p.stacks().into_iter().zip(waits).map(|((t, f, n), w)| (t, f, n, w)).collect()
}

/// The pid in a `process PID (command)` root frame.
fn root_pid(frames: &[Frame]) -> Option<u64> {
    let f = frames.first()?;
    f.name.strip_prefix("process ")?.split_whitespace().next()?.parse().ok()
}

/// The lines of `hot`'s loop in the workload.
fn hot_lines() -> BTreeSet<u64> {
    let text = std::fs::read_to_string(workload(WL)).unwrap();
    let def = text.lines().position(|l| l.starts_with("def hot(")).unwrap() as u64 + 1;
    (def + 1..=def + 4).collect()
}

/// Check one recording of the pool: both workers' stacks under their own process roots, with
/// `hot` and its line; the parent waiting on the results; every stack rooted under a process.
fn check_pool(p: &Profile, stderr: &str) {
    let target = p.0["target"]["pid"].as_u64().unwrap();
    let lines = hot_lines();
    let result_line = line_of(&workload(WL), "# RESULTS-LINE");
    let mut hot_samples: BTreeMap<u64, u64> = BTreeMap::new();
    let mut parent_wait_us = 0;
    for (_, frames, samples, wait_us) in stacks(p) {
        let pid = root_pid(&frames).unwrap_or_else(|| panic!("a stack without a process root: {:?}", frames[0]));
        assert_eq!(frames[0].kind, "thread");
        assert!(frames[1].name.ends_with(')'), "the thread frame follows the process root: {:?}", frames[1]);
        if let Some(f) = innermost_python(&frames).filter(|f| f.name == "hot") {
            assert!(f.file.as_deref().is_some_and(|x| x.ends_with(WL)), "{f:?}");
            assert!(f.line.is_some_and(|l| lines.contains(&l)), "hot at line {:?}, not in {lines:?}", f.line);
            assert_ne!(pid, target, "hot ran in the parent: {frames:?}");
            *hot_samples.entry(pid).or_default() += samples;
        }
        let waits_on_results = frames.iter().any(|f| f.name == "Future.result")
            && frames.iter().any(|f| f.kind == "python" && f.line == Some(result_line));
        if pid == target && waits_on_results {
            parent_wait_us += wait_us;
        }
    }
    let busy: Vec<(&u64, &u64)> = hot_samples.iter().filter(|(_, n)| **n >= 10).collect();
    assert!(busy.len() >= 2, "two worker processes with ≥ 10 samples in hot, got {hot_samples:?}\n{stderr}");
    assert!(parent_wait_us > 100_000, "the parent waited on the results for only {parent_wait_us} µs");
    // The summary lists the processes, the target first, all with CPython.
    let procs = p.0["summary"]["processes"].as_array().unwrap();
    assert_eq!(procs[0]["pid"].as_u64(), Some(target));
    for pid in hot_samples.keys() {
        let e = procs.iter().find(|e| e["pid"].as_u64() == Some(*pid)).unwrap_or_else(|| panic!("{pid} in {procs:?}"));
        assert_eq!(e["python"], true);
    }
    assert!(stderr.contains("processes followed (--subprocesses)"), "{stderr}");
    stacks_read_at_the_instant(p);
}

/// As root the followed processes' Python stacks are read in the kernel at the sample instant
/// too (BPF): all but a thread's first few samples, before its thread state is registered.
fn stacks_read_at_the_instant(p: &Profile) {
    let s = &p.0["summary"];
    let at = s["python_stacks"]["at_instant"].as_u64().unwrap_or(0);
    assert_eq!(s["python_stacks"]["path"], "bpf", "{s}");
    assert!(at as f64 >= 0.8 * s["with_python"].as_u64().unwrap() as f64, "{s}");
}

fn record_pool(method: &str) {
    let (p, out) = record_json(WL, &[method], &["--subprocesses"]);
    check_pool(&p, &String::from_utf8_lossy(&out.stderr));
}

#[test]
fn process_pool_with_fork_workers_is_followed() {
    record_pool("fork");
}

#[test]
fn process_pool_with_spawn_workers_is_followed() {
    // spawn: fork + exec of the interpreter; the new image's mappings and CPython are read anew.
    record_pool("spawn");
}

#[test]
fn process_pool_with_forkserver_workers_is_followed() {
    // forkserver: the workers are forked by a server process the target started (grandchildren).
    record_pool("forkserver");
}

#[test]
fn folded_and_svg_outputs_root_threads_under_their_process() {
    let dir = tempdir();
    let folded = dir.path().join("p.txt");
    let out = ftprof()
        .args(["record", "--subprocesses", "-f", "folded", "-o"])
        .arg(&folded)
        .arg("--")
        .arg(python())
        .arg(workload(WL))
        .arg("fork")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&folded).unwrap();
    let roots: BTreeSet<&str> = text.lines().filter_map(|l| l.split(';').next()).collect();
    assert!(roots.iter().all(|r| r.starts_with("process ")), "{roots:?}");
    let hot_roots: BTreeSet<&str> =
        text.lines().filter(|l| l.contains(";hot (process_pool.py:")).filter_map(|l| l.split(';').next()).collect();
    assert!(hot_roots.len() >= 2, "hot under {hot_roots:?}");

    let svg = dir.path().join("p.svg");
    let out = ftprof()
        .args(["record", "--subprocesses", "-o"])
        .arg(&svg)
        .arg("--")
        .arg(python())
        .arg(workload(WL))
        .arg("fork")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    let roots: BTreeSet<&str> =
        text.match_indices("<title>process ").filter_map(|(i, _)| text[i + 15..].split_whitespace().next()).collect();
    assert!(roots.len() >= 3, "the parent and two workers as roots in the SVG: {roots:?}");
}

#[test]
fn a_non_python_child_is_skipped_with_a_note() {
    let (p, out) = record_json(WL, &["fork", "--shell"], &["--subprocesses"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let procs = p.0["summary"]["processes"].as_array().unwrap();
    // Its command line, or its name when it exited before ftprof read it.
    let sh: Vec<&Value> = procs
        .iter()
        .filter(|e| e["command"].as_str().is_some_and(|c| c.starts_with("/bin/sh -c") || c == "sh"))
        .collect();
    assert_eq!(sh.len(), 1, "{procs:?}");
    assert_eq!(sh[0]["python"], false);
    let sh_pid = sh[0]["pid"].as_u64().unwrap();
    assert!(stacks(&p).iter().all(|(_, f, ..)| root_pid(f) != Some(sh_pid)), "the shell's stacks are in the profile");
    assert!(p.0["threads"].as_array().unwrap().iter().all(|t| t["pid"].as_u64() != Some(sh_pid)));
    assert!(
        stderr.contains("note: skipped 1 child process(es) where no CPython runtime was found")
            && stderr.contains(&format!("{sh_pid} (")),
        "{stderr}"
    );
    check_pool(&p, &stderr);
}

#[test]
fn without_the_option_only_the_target_is_recorded() {
    let (p, out) = record_json(WL, &["fork"], &[]);
    let target = p.0["target"]["pid"].as_u64().unwrap();
    for t in p.0["threads"].as_array().unwrap() {
        assert_eq!(t["pid"].as_u64(), Some(target), "{t}");
    }
    assert!(p.0["summary"]["processes"].is_null());
    for (_, frames, ..) in stacks(&p) {
        assert!(root_pid(&frames).is_none() && innermost_python(&frames).is_none_or(|f| f.name != "hot"));
    }
    assert!(!String::from_utf8_lossy(&out.stderr).contains("--subprocesses"));
}

#[test]
fn attaching_follows_the_workers_already_running() {
    let mut bg = Background::start(&python(), WL, &["fork", "--wait-ready"]);
    bg.wait_for("ready");
    let dir = tempdir();
    let path = dir.path().join("a.json");
    let out = ftprof()
        .args(["record", "--subprocesses", "--pid", &bg.pid().to_string(), "--duration", "2", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let p = Profile(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
    let target = bg.pid() as u64;
    let workers: BTreeSet<u64> = stacks(&p)
        .iter()
        .filter(|(_, f, n, _)| *n > 0 && innermost_python(f).is_some_and(|f| f.name == "hot"))
        .filter_map(|(_, f, ..)| root_pid(f))
        .collect();
    assert!(workers.len() >= 2 && !workers.contains(&target), "hot in {workers:?}: {stderr}");
    stacks_read_at_the_instant(&p);
    bg.usr1();
    let (code, _) = bg.finish();
    assert_eq!(code, Some(0));
}

#[test]
fn attaching_with_per_thread_events_says_children_are_not_followed() {
    // FTPROF_PER_TASK_EVENTS: the fallback used without CAP_PERFMON (events on the target's own
    // threads), which cannot see its children.
    let mut bg = Background::start(&python(), WL, &["fork", "--wait-ready"]);
    bg.wait_for("ready");
    let dir = tempdir();
    let out = ftprof()
        .env("FTPROF_PER_TASK_EVENTS", "1")
        .args(["record", "--subprocesses", "--pid", &bg.pid().to_string(), "--duration", "0.5", "-o"])
        .arg(dir.path().join("a.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("--subprocesses: child processes were not followed"), "{stderr}");
    // Let it finish (killing the parent would leave its pool's workers behind).
    bg.usr1();
    let (code, _) = bg.finish();
    assert_eq!(code, Some(0));
}
