//! End-to-end tests of `ftprof record --pid` and `ftprof dump --pid` against running free-threaded
//! and default (GIL) CPython processes, and of their error paths.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;
fn record_pid(pid: u32, seconds: &str) -> (Profile, Output) {
    let dir = tempdir();
    let path = dir.path().join("a.json");
    let out = ftprof()
        .args(["record", "--pid", &pid.to_string(), "--duration", seconds, "-f", "json", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ftprof failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (Profile(v), out)
}

fn attach_finds_the_hot_line(python: &Path) {
    let wl = workload("server.py");
    // Runs until told to finish (SIGUSR1), so that the hot thread still runs when ftprof (2 s,
    // plus its start-up and post-processing on a busy machine) is done, for its CPU time to be read.
    let mut bg = Background::start(python, "server.py", &["600"]);
    bg.wait_for("ready");
    let hot: u64 = bg.value("tid hot").parse().unwrap();
    let cpu_before = thread_cpu_s(bg.pid(), hot as u32);
    let (p, out) = record_pid(bg.pid(), "2");
    let cpu = thread_cpu_s(bg.pid(), hot as u32) - cpu_before;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the target keeps running"), "{stderr}");
    let hot_line = line_of(&wl, "HOT-LINE");
    let (mut in_hot, mut at_line, mut total) = (0, 0, 0);
    for (tid, frames, n) in p.stacks() {
        if tid != hot || n == 0 {
            continue;
        }
        total += n;
        if let Some(f) = innermost_python(&frames).filter(|f| f.name == "hot_loop") {
            in_hot += n;
            // The loop is two lines: its `while` test and the HOT-LINE body.
            assert!(matches!(f.line, Some(l) if l == hot_line || l == hot_line - 1), "{f:?}");
            if f.line == Some(hot_line) {
                at_line += n;
            }
        }
    }
    // How much CPU the hot thread gets in 2 s depends on the machine's load, so there is no
    // count to expect; it had samples, and never more than its CPU time from before ftprof
    // started to after it ended allows.
    let most = 1.2 * p.summary("rate_hz") * cpu;
    assert!(total > 0 && total as f64 <= most, "{total} samples of the hot thread for {cpu:.2} CPU s");
    assert!(in_hot as f64 >= 0.9 * total as f64, "hot_loop innermost in {in_hot}/{total}");
    assert!(at_line > 0);
    assert_eq!(p.0["target"]["attached"], true);
    assert_eq!(p.0["target"]["partial"], false);
    // As root, attached too, the Python stacks are read in the kernel at the sample instant.
    let s = &p.0["summary"];
    assert_eq!(s["python_stacks"]["path"], "bpf", "{s}");
    assert!(
        s["python_stacks"]["at_instant"].as_u64().unwrap() as f64 >= 0.8 * s["with_python"].as_u64().unwrap() as f64,
        "{s}"
    );
    // Detaching left it alone: it runs to its normal end.
    // SAFETY: kill(2) on our own child, which is alive.
    unsafe { libc::kill(bg.pid() as i32, libc::SIGUSR1) };
    let (code, rest) = bg.finish();
    assert_eq!(code, Some(0));
    assert!(rest.contains("done"), "{rest}");
}

#[test]
fn attach_to_a_free_threaded_process() {
    attach_finds_the_hot_line(&python());
}

#[test]
fn attach_to_a_gil_process() {
    attach_finds_the_hot_line(&python_gil());
}

#[test]
fn gil_contention_shows_as_gil_waits() {
    let mut bg = Background::start(&python_gil(), "gil_contended.py", &["4"]);
    bg.wait_for("ready");
    let (p, out) = record_pid(bg.pid(), "1.5");
    let gil = p.0["locks"].as_array().unwrap().iter().find(|l| l["kind"] == "gil").cloned();
    let gil = gil.unwrap_or_else(|| panic!("no gil waits: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(gil["waits"].as_u64().unwrap() > 20, "{gil}");
    let share = p.0["summary"]["categories"].as_array().unwrap().iter().find(|c| c["category"] == "gil").unwrap()
        ["share"]
        .as_f64()
        .unwrap();
    assert!(share > 0.2, "three threads on one GIL wait a lot; gil share {share}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GIL: enabled (default build)"), "{stderr}");
}

fn dump_json(pid: u32, native: bool) -> Value {
    let mut cmd = ftprof();
    cmd.args(["dump", "--json", "--pid", &pid.to_string()]);
    if native {
        cmd.arg("--native");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// 8 threads handing a lock around with bare `acquire()`/`release()`: no `with` block says who
/// holds it, so `dump` watches who releases it (the kernel's waker stacks, BPF): the waiting
/// threads are "released by" a worker at the release line.
#[test]
fn dump_names_who_releases_a_bare_acquired_lock() {
    let wl = workload("bare_handoff.py");
    let release = format!("worker (bare_handoff.py:{})", line_of(&wl, "RELEASE-LINE"));
    // Held long enough (~10 ms) that the waiters park rather than spin.
    let mut bg = Background::start(&python(), "bare_handoff.py", &["8", "30", "300000"]);
    bg.wait_for("ready");
    let lock = hex(&bg.value("lock"));
    // At a given instant some worker waits on the lock (7 of 8 most of the time); up to three
    // snapshots in case one found none of them parked.
    let mut tries = Vec::new();
    let released = (0..3).find_map(|_| {
        let d = dump_json(bg.pid(), false);
        tries.push(d.clone());
        let watch = d["release_watch"].clone();
        d["threads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["wait"] == "lock" && t["lock"]["address"].as_u64() == Some(lock))
            .find(|t| !t["released_by"].is_null())
            .map(|t| (t.clone(), watch))
    });
    let (t, watch) = released.unwrap_or_else(|| panic!("no waiting thread with released_by: {tries:#?}"));
    assert!(watch["reason"].is_null() && watch["wakeups"].as_u64().unwrap() > 0, "{watch}");
    let r = &t["released_by"];
    let tids = r["tids"].as_array().unwrap();
    assert!(!tids.is_empty() && !tids.contains(&t["tid"]), "{t}");
    assert_eq!(r["python"][0], release.as_str(), "{t}");
    assert!(r["wakeups"].as_u64().unwrap() >= 1 && r["wakeups"].as_u64() <= r["all_wakeups"].as_u64(), "{t}");
    let out = ftprof().args(["dump", "--pid", &bg.pid().to_string()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Releases watched for 250 ms"), "{text}");
    // Turned off: said, not silent.
    let off = (0..3).find_map(|_| {
        let out =
            ftprof().args(["dump", "--json", "--pid", &bg.pid().to_string()]).env("FTPROF_BPF", "0").output().unwrap();
        let d: Value = serde_json::from_slice(&out.stdout).unwrap();
        (!d["release_watch"].is_null()).then_some(d)
    });
    let d = off.expect("a waiting thread without holder in one of three snapshots");
    assert_eq!(d["release_watch"]["reason"], "turned off (FTPROF_BPF=0)", "{d:#}");
}

fn dump_deadlock(python: &Path, rlock: bool) {
    let wl = workload("deadlock.py");
    let mut bg = Background::start(python, "deadlock.py", if rlock { &["rlock"] } else { &[] });
    let type_name = if rlock { "_thread.RLock" } else { "_thread.lock" };
    bg.wait_for("ready");
    let (a, b) = (hex(&bg.value("lock_a")), hex(&bg.value("lock_b")));
    let (first, second): (u64, u64) = (bg.value("tid first").parse().unwrap(), bg.value("tid second").parse().unwrap());
    let d = dump_json(bg.pid(), false);
    let thread = |tid: u64| d["threads"].as_array().unwrap().iter().find(|t| t["tid"] == tid).unwrap().clone();
    for (tid, waits_on, holder, marker, func) in
        [(first, b, second, "FIRST-WAIT", "first"), (second, a, first, "SECOND-WAIT", "second")]
    {
        let t = thread(tid);
        assert_eq!(t["state"], "waiting", "{t}");
        assert!(t["name"].as_str().unwrap().ends_with(&format!("({func})")), "Python thread name: {t}");
        assert_eq!(t["wait"], "lock");
        assert_eq!(t["lock"]["address"].as_u64(), Some(waits_on), "{t}");
        assert_eq!(t["lock"]["type_name"], type_name);
        assert_eq!(t["holder"].as_u64(), Some(holder), "{t}");
        assert_eq!(t["python"][0], format!("{func} (deadlock.py:{})", line_of(&wl, marker)));
    }
    let cycle: Vec<u64> = d["deadlocks"][0].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(cycle, expected);

    let out = ftprof().args(["dump", "--pid", &bg.pid().to_string()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DEADLOCK: thread"), "{text}");
    assert!(text.contains(&format!("{type_name} @ {a:#x}")) && text.contains(&format!("{type_name} @ {b:#x}")));
}

#[test]
fn dump_names_a_deadlock_cycle() {
    dump_deadlock(&python(), false);
}

#[test]
fn dump_names_an_rlock_deadlock_cycle() {
    dump_deadlock(&python(), true);
}

#[test]
fn dump_names_a_deadlock_cycle_on_the_gil_build() {
    dump_deadlock(&python_gil(), false);
}

#[test]
fn dump_shows_a_critical_section_wait_on_a_list() {
    let mut bg = Background::start(&python(), "cs_holder.py", &[]);
    bg.wait_for("ready");
    let list = hex(&bg.value("list"));
    let appender: u64 = bg.value("tid appender").parse().unwrap();
    let sorter: u64 = bg.value("tid sorter").parse().unwrap();
    let d = dump_json(bg.pid(), true);
    let t = d["threads"].as_array().unwrap().iter().find(|t| t["tid"] == appender).unwrap();
    assert_eq!(t["wait"], "critical_section", "{t}");
    assert_eq!(t["lock"]["type_name"], "list");
    assert_eq!(t["lock"]["address"].as_u64(), Some(list));
    assert_eq!(t["holder"].as_u64(), Some(sorter));
    let merged: Vec<&str> = t["merged"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(merged.iter().any(|f| f.starts_with("_PyCriticalSection")), "{merged:?}");
    assert!(merged.iter().any(|f| f.starts_with("appender (cs_holder.py:")), "{merged:?}");
}

// ---- errors: one line, a remedy, non-zero exit, no panic ----
fn record_and_dump(pid: u32) -> [Output; 2] {
    let dir = tempdir();
    [
        ftprof().args(["record", "--pid", &pid.to_string(), "-o"]).arg(dir.path().join("x.svg")).output().unwrap(),
        ftprof().args(["dump", "--pid", &pid.to_string()]).output().unwrap(),
    ]
}

#[test]
fn no_such_process() {
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    let pid = (2..pid_max).rev().find(|p| !Path::new(&format!("/proc/{p}")).exists()).unwrap();
    for out in record_and_dump(pid) {
        assert_one_line_error(&out, &format!("no such process: {pid}"));
    }
}

#[test]
fn not_a_python_process() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    for out in record_and_dump(child.id()) {
        let e = assert_one_line_error(&out, "is not a CPython process");
        assert!(e.contains("sleep"), "{e}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn old_cpython_process_is_not_supported() {
    use std::io::BufRead;
    let old = python_old();
    let (major, minor) = python_version(&old);
    let mut child = Command::new(&old)
        .args(["-c", "import time; print('ready', flush=True); time.sleep(30)"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    for out in record_and_dump(child.id()) {
        let e = assert_one_line_error(&out, &format!("runs CPython {major}.{minor}"));
        assert!(e.contains("not supported") && e.contains("3.13 or newer"), "{e}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn zombie_process() {
    // The child exits at once; its parent waits until it has exited without reaping it
    // (WNOWAIT), then prints its pid: a zombie from then on.
    let mut parent = Command::new(python())
        .args([
            "-c",
            "import os, sys, time\npid = os.fork()\nif pid == 0: os._exit(0)\n\
             os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)\nprint(pid, flush=True)\ntime.sleep(30)",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(parent.stdout.take().unwrap()), &mut line).unwrap();
    let zombie: u32 = line.trim().parse().unwrap();
    for out in record_and_dump(zombie) {
        assert_one_line_error(&out, &format!("process {zombie} is a zombie"));
    }
    parent.kill().unwrap();
    parent.wait().unwrap();
}

#[test]
fn permission_denied_for_another_users_process() {
    let mut bg = Background::start(&python(), "server.py", &["10"]);
    bg.wait_for("ready");
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    for sub in [vec!["record", "--pid"], vec!["dump", "--pid"]] {
        let mut cmd = ftprof();
        cmd.args(&sub).arg(bg.pid().to_string()).args(["-o"]).arg(dir.path().join("x.svg"));
        if sub[0] == "dump" {
            cmd = ftprof();
            cmd.args(&sub).arg(bg.pid().to_string());
        }
        // Run ftprof as `nobody`: the kernel refuses it access to root's process.
        // SAFETY: setgroups/setgid/setuid are async-signal-safe; no memory is shared.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let e = assert_one_line_error(&out, "permission denied");
        assert!(e.contains("ptrace_scope") && e.contains("perf_event_paranoid") && e.contains("sudo"), "{e}");
    }
}

#[test]
fn target_exiting_mid_recording_gives_a_partial_profile() {
    let mut bg = Background::start(&python(), "server.py", &["1.5"]);
    bg.wait_for("ready");
    let (p, out) = record_pid(bg.pid(), "20");
    assert_eq!(p.0["target"]["partial"], true);
    assert!(p.summary("samples") > 0.0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("partial"));
    let (code, _) = bg.finish();
    assert_eq!(code, Some(0));
}

#[test]
fn ctrl_c_while_attached_writes_the_output_and_leaves_the_target_running() {
    let mut bg = Background::start(&python(), "server.py", &["6"]);
    bg.wait_for("ready");
    let dir = tempdir();
    let path = dir.path().join("a.json");
    let rec = ftprof()
        .args(["record", "--pid", &bg.pid().to_string(), "-f", "json", "-o"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child, which has not been waited for (its pid is still ours).
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let out = rec.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["target"]["interrupted"], true);
    assert!(v["summary"]["samples"].as_u64().unwrap() > 0);
    let names: Vec<&str> = v["frames"].as_array().unwrap().iter().filter_map(|f| f["name"].as_str()).collect();
    assert!(names.contains(&"hot_loop"), "{names:?}");
    let (code, rest) = bg.finish();
    assert_eq!(code, Some(0), "the target was not disturbed");
    assert!(rest.contains("done"));
}

#[test]
fn dump_tells_io_from_semaphore_waits() {
    let wl = workload("blocked_kinds.py");
    let mut bg = Background::start(&python(), "blocked_kinds.py", &[]);
    bg.wait_for("ready");
    let (reader, sem): (u64, u64) = (bg.value("tid reader").parse().unwrap(), bg.value("tid sem").parse().unwrap());
    let d = dump_json(bg.pid(), false);
    let thread = |tid: u64| d["threads"].as_array().unwrap().iter().find(|t| t["tid"] == tid).unwrap().clone();
    let r = thread(reader);
    assert_eq!(r["state"], "in I/O", "{r}");
    assert_eq!(r["python"][0], format!("reader (blocked_kinds.py:{})", line_of(&wl, "READ-LINE")));
    let s = thread(sem);
    assert_eq!(s["wait"], "lock", "a Semaphore nobody releases is contention, not idling: {s}");
    assert!(s["python"].as_array().unwrap().iter().any(|f| f.as_str().unwrap().starts_with("Semaphore.acquire")));
}

/// CPU time (s) thread `tid` of `pid` has run so far (`/proc/…/schedstat`).
fn thread_cpu_s(pid: u32, tid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).expect("the thread is alive");
    s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).expect("schedstat") / 1e9
}
