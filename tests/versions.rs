//! Version-sensitive end-to-end tests, run on every CPython ftprof supports and can run here:
//! the project's own 3.13.5t and 3.13.5 builds, and Debian unstable's stripped `python3.14`
//! (3.14.10) and `python3.15` (3.15.2) in a root filesystem made by
//! `scripts/provision-python.sh 3.14|3.15`. Each check runs twice: with ftprof launched next to
//! the interpreter (inside the root filesystem, for 3.14/3.15) and attached from outside
//! (`record --pid`, `dump --pid` from this process's root). Ground truth comes from the
//! workloads (addresses from `id()`, native thread ids, their own timings).

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::*;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `ftprof record -- python …` next to the interpreter.
    Launched,
    /// `ftprof record --pid` / `dump --pid` from outside its root filesystem.
    Attached,
}

/// `record` of a workload, as JSON: launched (`--`) or attached for `seconds` (`--pid`, then the
/// workload is killed). Returns the profile and the workload's stdout.
fn record(interp: &Interp, mode: Mode, workload: &str, args: &[&str], seconds: &str) -> (Profile, String) {
    match mode {
        Mode::Launched => {
            let (inside, outside, _keep) = interp.scratch(&format!("p-{}-{workload}.json", std::process::id()));
            let out = interp
                .ftprof_inside()
                .args(["record", "-f", "json", "-o"])
                .arg(&inside)
                .arg("--")
                .arg(&interp.exe)
                .arg(interp.workload(workload))
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} ftprof record failed: {}",
                interp.label,
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&std::fs::read(&outside).unwrap()).unwrap();
            let _ = std::fs::remove_file(&outside);
            (Profile(v), String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Mode::Attached => {
            let mut bg = interp.background(workload, args);
            bg.wait_for("ready");
            let dir = tempdir();
            let path = dir.path().join("p.json");
            let out = ftprof()
                .args(["record", "--pid", &bg.pid().to_string(), "--duration", seconds, "-f", "json", "-o"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} ftprof record --pid failed: {}",
                interp.label,
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            (Profile(v), bg.lines.join("\n"))
        }
    }
}

fn check_python_version(p: &Profile, interp: &Interp) {
    let v = p.0["target"]["python"]["version"].as_str().unwrap_or("").to_string();
    let want = interp.label.trim_end_matches('t');
    assert!(v.starts_with(&format!("{want}.")), "profile says CPython {v}, expected {want}");
    assert_eq!(p.0["target"]["python"]["free_threaded"].as_bool(), Some(interp.label.ends_with('t')));
}

/// Frames, lines, merged native stacks; shares of Python frames, mismatches, unresolved frames.
fn frames_lines_and_merged_stacks(interp: Interp, mode: Mode) {
    let wl = workload("cpu_bound.py");
    let (p, _) = match mode {
        Mode::Launched => record(&interp, mode, "cpu_bound.py", &["2", "20000000"], ""),
        Mode::Attached => record(&interp, mode, "cpu_bound.py", &["2", "400000000", "ready"], "3"),
    };
    check_python_version(&p, &interp);
    let samples = p.summary("samples");
    assert!(samples > 150.0, "{} samples", samples);
    let share = |k: &str| p.summary(k) / samples;
    let label = interp.label;
    eprintln!(
        "{label} {mode:?}: {samples} samples; with Python {:.1} %, mismatch {:.1} %, unresolved core {:.1} %",
        100.0 * share("with_python"),
        100.0 * share("mismatched"),
        100.0 * share("unresolved_core")
    );
    // Samples outside the program's Python code have no Python frame by nature: the main
    // thread in the interpreter's start-up or finalization (under `Py_BytesMain`, no Python
    // frame) and a thread's teardown after its function returned (`PyThreadState_Clear`). There
    // are a few per run whatever its length (an idle run once had 5 of 498: 99.0 %).
    let outside: u64 = p
        .stacks()
        .into_iter()
        .filter(|(_, frames, _)| {
            frames.iter().all(|f| f.kind != "python")
                && frames.iter().any(|f| f.name == "Py_BytesMain" || f.name == "PyThreadState_Clear")
        })
        .map(|(_, _, n)| n)
        .sum();
    // Without the BPF path (3.14 and 3.15 launched in their root filesystem) stacks are read
    // after the sample: when ftprof fell behind until a thread had finished (a loaded CI run
    // once had 46 % of the samples so), those have no Python frames, and the run says how many.
    let too_late = p.0["summary"]["python_stacks"]["too_late"].as_f64().unwrap_or(0.0);
    let in_python_code = samples - outside as f64 - too_late;
    if p.summary("with_python") / in_python_code < 0.99 {
        // What the samples without a Python frame were (a loaded CI run once had 20 % of them).
        let mut without: Vec<(u64, u64, String)> = p
            .stacks()
            .into_iter()
            .filter(|(_, frames, n)| *n > 0 && frames.iter().all(|f| f.kind != "python"))
            .map(|(tid, frames, n)| {
                let names: Vec<&str> = frames.iter().rev().take(6).map(|f| f.name.as_str()).collect();
                (n, tid, names.join(" < "))
            })
            .collect();
        without.sort_by(|a, b| b.cmp(a));
        without.truncate(8);
        panic!(
            "{label}: Python frames in {:.1} % of the {in_python_code} samples in Python code ({outside} outside it, {too_late} read too late); top stacks without (samples, thread, leaf first): {without:#?}\n{}",
            100.0 * p.summary("with_python") / in_python_code,
            p.0["summary"]
        );
    }
    // As root the stacks are read in the kernel at the sample instant, on every version; ftprof
    // run inside a root filesystem without /sys (3.14 and 3.15 launched) cannot load BPF
    // programs (no kernel BTF there) and says so.
    let ps = &p.0["summary"]["python_stacks"];
    if interp.root.is_some() && mode == Mode::Launched {
        assert_eq!(ps["path"], "after-sample", "{label}: {ps}");
        assert!(ps["reason"].as_str().unwrap().contains("no BTF"), "{label}: {ps}");
    } else {
        assert_eq!(ps["path"], "bpf", "{label}: {}", p.0["summary"]);
        let at_instant = ps["at_instant"].as_f64().unwrap();
        assert!(at_instant >= 0.9 * samples, "{label}: {at_instant} of {samples} samples read at the instant");
    }
    assert!(share("mismatched") <= 0.02, "{label}: mismatch in {:.1} % of samples", 100.0 * share("mismatched"));
    assert!(
        share("unresolved_core") <= 0.05,
        "{label}: unresolved in {:.1} % of samples",
        100.0 * share("unresolved_core")
    );

    // Lines: the samples in `work` are on its loop.
    let hot = line_of(&wl, "HOT-LINE");
    let (mut in_work, mut on_loop, mut native_below) = (0, 0, 0);
    for (_, frames, n) in p.stacks() {
        let Some(i) = frames.iter().rposition(|f| f.kind == "python") else { continue };
        if frames[i].name != "work" {
            continue;
        }
        in_work += n;
        if frames[i].line.is_some_and(|l| l == hot || l == hot - 1) {
            on_loop += n;
        }
        // The merged stack continues below the Python frame with the native code it called.
        if frames[i + 1..].iter().any(|f| f.kind == "native" && f.name != "[unknown]") {
            native_below += n;
        }
        assert!(frames.iter().all(|f| f.name != "[python/native mismatch]") || n < 3, "{label}: {frames:?}");
    }
    assert!(in_work as f64 > 0.8 * samples, "{label}: {in_work} of {samples} samples in work()");
    assert!(on_loop as f64 > 0.95 * in_work as f64, "{label}: {on_loop} of {in_work} samples on the loop lines");
    assert!(
        native_below as f64 > 0.05 * in_work as f64,
        "{label}: {native_below} of {in_work} samples show native code under work()"
    );
}

/// Thread time (µs) of one category over all threads.
fn category_us(p: &Profile, cat: &str) -> f64 {
    p.0["summary"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["category"] == cat)
        .map(|c| c["time_us"].as_f64().unwrap())
        .sum()
}

/// A GIL-bound workload waits for the GIL (free-threaded 3.13t: with PYTHON_GIL=1).
fn gil_waits(interp: Interp, mode: Mode) {
    let (p, _) = match mode {
        Mode::Launched => record(&interp, mode, "gil_contended.py", &["2"], ""),
        Mode::Attached => record(&interp, mode, "gil_contended.py", &["30"], "1.5"),
    };
    let gil = category_us(&p, "gil");
    // Of the workers' time not spent waiting for a CPU (how much that is depends on the
    // machine's load): the main thread's `join` lasts the whole run, and counting it made the
    // share depend on how the load split the workers' time (15 % once under two busy loops,
    // when the workers alone waited 29 % of theirs on the GIL).
    let total = p.summary("thread_time_us") - category_us(&p, "runqueue") - category_us(&p, "join");
    assert!(
        gil > 0.2 * total,
        "{}: GIL waits {gil:.0} µs of {total:.0} µs: {:#?}",
        interp.label,
        p.0["summary"]["categories"]
    );
    let locks = p.0["locks"].as_array().unwrap();
    assert!(locks.iter().any(|l| l["kind"] == "gil"), "{}: {locks:#?}", interp.label);
}

/// `threading.Lock`/`RLock` waits: kind `lock`, the right type, the address `id()` printed.
fn lock_identity(interp: Interp, mode: Mode, rlock: bool) {
    let kind = if rlock { "rlock" } else { "lock" };
    let (p, stdout) = match mode {
        Mode::Launched => record(&interp, mode, "lock_handoff.py", &[kind], ""),
        Mode::Attached => record(&interp, mode, "lock_handoff.py", &[kind, "1000", "ready"], "1.5"),
    };
    let lock = hex(&printed(stdout.as_bytes(), "lock"));
    let type_name = if rlock { "_thread.RLock" } else { "_thread.lock" };
    let locks = p.0["locks"].as_array().unwrap();
    let waits: Vec<&Value> = locks.iter().filter(|l| l["kind"] == "lock").collect();
    assert!(!waits.is_empty(), "{}: no lock waits: {locks:#?}", interp.label);
    let top = waits.iter().max_by_key(|l| l["total_us"].as_u64().unwrap_or(0)).unwrap();
    assert_eq!(top["identity"]["type_name"], type_name, "{}: {top:#?}", interp.label);
    // 3.13's RLock waits on a private semaphore: its address is only known to `dump`.
    if !(rlock && interp.label.starts_with("3.13")) {
        assert_eq!(top["identity"]["address"].as_u64(), Some(lock), "{}: {top:#?} (lock at {lock:#x})", interp.label);
    }
    let wl = workload("lock_handoff.py");
    let line = format!("waiter (lock_handoff.py:{})", line_of(&wl, "WAIT-LINE"));
    assert_eq!(top["top_lines"][0]["line"], line.as_str(), "{}: {top:#?}", interp.label);
    assert!(top["waits"].as_u64().unwrap() >= 3, "{}: {top:#?}", interp.label);
}

/// `dump` of an A/B–B/A deadlock names both holders and the cycle, with the locks' addresses.
fn dump_deadlock(interp: Interp, mode: Mode, rlock: bool) {
    let args: &[&str] = if rlock { &["rlock"] } else { &[] };
    let mut bg = interp.background("deadlock.py", args);
    bg.wait_for("ready");
    let pid = bg.pid().to_string();
    let out: Output = match mode {
        Mode::Launched => interp.ftprof_inside().args(["dump", "--json", "--pid", &pid]).output().unwrap(),
        Mode::Attached => ftprof().args(["dump", "--json", "--pid", &pid]).output().unwrap(),
    };
    assert!(out.status.success(), "{} dump failed: {}", interp.label, String::from_utf8_lossy(&out.stderr));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tid = |name: &str| -> u64 {
        bg.lines.iter().find_map(|l| l.strip_prefix(&format!("tid {name} "))?.parse().ok()).unwrap()
    };
    let (t1, t2) = (tid("first"), tid("second"));
    let (a, b) = (hex(&bg.value("lock_a")), hex(&bg.value("lock_b")));
    let threads = d["threads"].as_array().unwrap();
    let th = |t: u64| {
        threads.iter().find(|x| x["tid"].as_u64() == Some(t)).unwrap_or_else(|| panic!("no thread {t}: {d:#}"))
    };
    let type_name = if rlock { "_thread.RLock" } else { "_thread.lock" };
    for (t, waits_for, holder) in [(t1, b, t2), (t2, a, t1)] {
        let x = th(t);
        assert_eq!(x["wait"], "lock", "{}: {x:#}", interp.label);
        assert_eq!(x["lock"]["type_name"], type_name, "{}: {x:#}", interp.label);
        assert_eq!(x["lock"]["address"].as_u64(), Some(waits_for), "{}: {x:#}", interp.label);
        assert_eq!(x["holder"].as_u64(), Some(holder), "{}: {x:#}", interp.label);
        assert!(x["python"][0].as_str().unwrap_or("").contains("deadlock.py"), "{}: {x:#}", interp.label);
    }
    let cycle: Vec<u64> = d["deadlocks"][0].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let mut want = vec![t1, t2];
    want.sort();
    assert_eq!(cycle, want, "{}: {d:#}", interp.label);
}

macro_rules! matrix {
    ($($name:ident: $label:expr, $env:expr;)*) => {
        $(
            mod $name {
                use super::*;

                fn interp() -> Interp {
                    let mut i = common::interp($label);
                    for (k, v) in $env {
                        i = i.with_env(k, v);
                    }
                    i
                }

                #[test]
                fn record_frames_lines_merged_launched() {
                    frames_lines_and_merged_stacks(interp(), Mode::Launched);
                }
                #[test]
                fn record_frames_lines_merged_attached() {
                    frames_lines_and_merged_stacks(interp(), Mode::Attached);
                }
                #[test]
                fn gil_waits_launched() {
                    gil_waits(interp().with_env("PYTHON_GIL", "1"), Mode::Launched);
                }
                #[test]
                fn gil_waits_attached() {
                    gil_waits(interp().with_env("PYTHON_GIL", "1"), Mode::Attached);
                }
                #[test]
                fn lock_identity_launched() {
                    lock_identity(interp(), Mode::Launched, false);
                }
                #[test]
                fn lock_identity_attached() {
                    lock_identity(interp(), Mode::Attached, false);
                }
                #[test]
                fn rlock_identity_launched() {
                    lock_identity(interp(), Mode::Launched, true);
                }
                #[test]
                fn rlock_identity_attached() {
                    lock_identity(interp(), Mode::Attached, true);
                }
                #[test]
                fn dump_deadlock_launched() {
                    dump_deadlock(interp(), Mode::Launched, false);
                }
                #[test]
                fn dump_deadlock_attached() {
                    dump_deadlock(interp(), Mode::Attached, false);
                }
                #[test]
                fn dump_rlock_deadlock_launched() {
                    dump_deadlock(interp(), Mode::Launched, true);
                }
                #[test]
                fn dump_rlock_deadlock_attached() {
                    dump_deadlock(interp(), Mode::Attached, true);
                }
            }
        )*
    };
}

const NO_ENV: [(&str, &str); 0] = [];

matrix! {
    cpython_3_13t: "3.13t", NO_ENV;
    cpython_3_13: "3.13", NO_ENV;
    cpython_3_14: "3.14", NO_ENV;
    cpython_3_15: "3.15", NO_ENV;
}

/// A copy of the free-threaded interpreter with its `.symtab` (and DWARF) stripped
/// (`objcopy --strip-all`) merges Python and native stacks as well as the original.
#[test]
fn stripped_interpreter_merges_like_the_original() {
    let original = python();
    let dir = tempdir();
    let stripped = dir.path().join(original.file_name().unwrap());
    let st = std::process::Command::new("objcopy").arg("--strip-all").arg(&original).arg(&stripped).status().unwrap();
    assert!(st.success(), "objcopy --strip-all failed");
    // The copy finds its standard library through PYTHONHOME.
    let home: PathBuf = original.parent().unwrap().parent().unwrap().to_path_buf();
    let run = |exe: &PathBuf| {
        let d = tempdir();
        let path = d.path().join("p.json");
        let out = ftprof()
            .env("PYTHONHOME", &home)
            .args(["record", "-f", "json", "-o"])
            .arg(&path)
            .arg("--")
            .arg(exe)
            .arg(workload("cpu_bound.py"))
            .args(["2", "6000000"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Profile(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap())
    };
    let (a, b) = (run(&original), run(&stripped));
    let share = |p: &Profile, k: &str| 100.0 * p.summary(k) / p.summary("samples");
    eprintln!(
        "mismatch: original {:.1} %, stripped {:.1} %; with Python {:.1} % / {:.1} %; unresolved core {:.1} % / {:.1} %",
        share(&a, "mismatched"),
        share(&b, "mismatched"),
        share(&a, "with_python"),
        share(&b, "with_python"),
        share(&a, "unresolved_core"),
        share(&b, "unresolved_core")
    );
    assert!((share(&a, "mismatched") - share(&b, "mismatched")).abs() <= 2.0);
    assert!(share(&b, "with_python") >= share(&a, "with_python") - 2.0);
    // The stripped copy still names the eval loop and exported functions in merged stacks.
    let names: std::collections::HashSet<String> = b
        .stacks()
        .into_iter()
        .flat_map(|(_, f, _)| f.into_iter().filter(|f| f.kind == "native").map(|f| f.name))
        .collect();
    assert!(names.iter().any(|n| n == "PyNumber_Remainder" || n == "PyNumber_Multiply"), "{names:?}");
}

/// Host PID of the only child of `parent` (what `unshare --fork` started), waiting for it.
fn child_of(parent: u32) -> u32 {
    for _ in 0..200 {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
        if let Some(c) = children.split_whitespace().next() {
            return c.parse().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("unshare started no child");
}

/// Thread ids as the target's PID namespace numbers them → as ours does (`NSpid:`).
fn ns_to_host(pid: u32) -> std::collections::HashMap<u64, u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let ids: Vec<u64> = status
                .lines()
                .find(|l| l.starts_with("NSpid:"))?
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            Some((*ids.last()?, *ids.first()?))
        })
        .collect()
}

/// A container-like target: Debian's python3.14 in its root filesystem, in its own PID and
/// mount namespaces. `dump --pid` from outside reads its files through /proc/PID/root and maps
/// the thread ids CPython stores (the namespace's) to ours.
#[test]
fn dump_of_a_target_in_its_own_pid_and_mount_namespace() {
    let interp = common::interp("3.14");
    let root = interp.root.clone().unwrap();
    let mut cmd = std::process::Command::new("unshare");
    let mut mount_proc = std::ffi::OsString::from("--mount-proc=");
    mount_proc.push(root.join("proc"));
    cmd.args(["--pid", "--fork", "--kill-child"])
        .arg(mount_proc)
        .arg("chroot")
        .arg(&root)
        .arg(&interp.exe)
        .arg(interp.workload("deadlock.py"));
    let mut bg = Background::spawn(cmd);
    bg.wait_for("ready");
    let pid = child_of(bg.pid());
    let map = ns_to_host(pid);
    let tid = |name: &str| -> u64 {
        let ns: u64 = bg.lines.iter().find_map(|l| l.strip_prefix(&format!("tid {name} "))?.parse().ok()).unwrap();
        assert_ne!(map[&ns], ns, "the target should have its own PID namespace");
        map[&ns]
    };
    let (t1, t2) = (tid("first"), tid("second"));
    let out = ftprof().args(["dump", "--json", "--pid", &pid.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    let threads = d["threads"].as_array().unwrap();
    let th = |t: u64| {
        threads.iter().find(|x| x["tid"].as_u64() == Some(t)).unwrap_or_else(|| panic!("no thread {t}: {d:#}"))
    };
    let (a, b) = (hex(&bg.value("lock_a")), hex(&bg.value("lock_b")));
    for (t, waits_for, holder, func) in [(t1, b, t2, "first"), (t2, a, t1, "second")] {
        let x = th(t);
        assert_eq!(x["lock"]["address"].as_u64(), Some(waits_for), "{x:#}");
        assert_eq!(x["holder"].as_u64(), Some(holder), "{x:#}");
        assert!(x["python"][0].as_str().unwrap_or("").starts_with(func), "{x:#}");
        assert_eq!(x["name"].as_str(), Some(if func == "first" { "Thread-1 (first)" } else { "Thread-2 (second)" }));
    }
    let mut want = vec![t1, t2];
    want.sort();
    let cycle: Vec<u64> = d["deadlocks"][0].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(cycle, want, "{d:#}");
}

/// `record --pid` of the same kind of target: samples (host thread ids) meet the Python stacks
/// and thread names CPython keeps under the namespace's ids; lock waits keep their identity.
#[test]
fn record_of_a_target_in_its_own_pid_and_mount_namespace() {
    let interp = common::interp("3.15");
    let root = interp.root.clone().unwrap();
    let mut mount_proc = std::ffi::OsString::from("--mount-proc=");
    mount_proc.push(root.join("proc"));
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child"])
        .arg(mount_proc)
        .arg("chroot")
        .arg(&root)
        .arg(&interp.exe)
        .arg(interp.workload("lock_handoff.py"))
        .args(["lock", "1000", "ready"]);
    let mut bg = Background::spawn(cmd);
    bg.wait_for("ready");
    let pid = child_of(bg.pid());
    let map = ns_to_host(pid);
    let waiter_ns: u64 = bg.value("tid waiter").parse().unwrap();
    let waiter = map[&waiter_ns];
    assert_ne!(waiter, waiter_ns);
    let dir = tempdir();
    let path = dir.path().join("p.json");
    let out = ftprof()
        .args(["record", "--pid", &pid.to_string(), "--duration", "1.5", "-f", "json", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = Profile(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
    let threads = p.0["threads"].as_array().unwrap();
    let t = threads.iter().find(|t| t["tid"].as_u64() == Some(waiter)).unwrap_or_else(|| panic!("{threads:#?}"));
    assert_eq!(t["name"], "waiter", "{t:#}");
    let lock = hex(&bg.value("lock"));
    let locks = p.0["locks"].as_array().unwrap();
    assert!(
        locks.iter().any(|l| l["kind"] == "lock" && l["identity"]["address"].as_u64() == Some(lock)),
        "no lock wait on {lock:#x}: {locks:#?}"
    );
    let with_python = p.summary("with_python") / p.summary("samples");
    assert!(with_python >= 0.99, "Python frames in {:.1} % of samples", 100.0 * with_python);
    // In its own PID namespace too, the stacks are read in the kernel at the sample instant and
    // the off-CPU split comes from the kernel's events.
    let s = &p.0["summary"];
    assert_eq!(s["python_stacks"]["path"], "bpf", "{s}");
    assert!(s["python_stacks"]["at_instant"].as_f64().unwrap() >= 0.8 * p.summary("with_python"), "{s}");
    assert_eq!(s["sched_accounting"]["source"], "bpf", "{s}");
}
