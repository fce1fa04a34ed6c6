//! End-to-end tests of wait attribution: lock identity, critical sections, stop-the-world,
//! idle kinds and refcount contention, against the real free-threaded CPython. Ground truth is
//! measured by the workloads themselves.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::Value;

fn locks(p: &Profile) -> Vec<Value> {
    p.0["locks"].as_array().unwrap().clone()
}

fn find_lock<'a>(locks: &'a [Value], kind: &str, address: u64) -> Option<&'a Value> {
    locks.iter().find(|l| l["kind"] == kind && l["identity"]["address"].as_u64() == Some(address))
}

/// Thread time (µs) per category for one thread.
fn thread_categories(p: &Profile, tid: u64) -> HashMap<String, f64> {
    let period_us = 1e6 / p.summary("rate_hz");
    let mut m = HashMap::new();
    for s in p.0["stacks"].as_array().unwrap() {
        if s["thread"].as_u64() == Some(tid) {
            let t = s["samples"].as_f64().unwrap() * period_us + s["wait_us"].as_f64().unwrap();
            *m.entry(s["category"].as_str().unwrap().to_string()).or_insert(0.0) += t;
        }
    }
    m
}

/// A wait attributed to a lock versus the waiter's own measurement around it: the lock's total
/// must not exceed what was measured (within `tol`), and together with the waiter's time in the
/// runqueue (woken, or preempted, but no CPU free — which a loaded machine adds and ftprof
/// reports as `runqueue`, not as the lock) it must account for it.
fn assert_wait_matches(what: &str, lock_us: f64, runqueue_us: f64, measured_us: f64, tol: f64) {
    assert!(
        lock_us <= (1.0 + tol) * measured_us && lock_us + runqueue_us >= (1.0 - tol) * measured_us,
        "{what}: {lock_us:.0} µs on the lock + {runqueue_us:.0} µs in the runqueue vs measured {measured_us:.0} µs"
    );
}

const CONTENTION: [&str; 7] = ["refcount", "spin", "critical_section", "lock", "pymutex", "stop_the_world", "gil"];

#[test]
fn lock_wait_is_attributed_to_the_lock_and_the_waiting_line() {
    let wl = workload("lock_handoff.py");
    let (p, out) = record_json("lock_handoff.py", &[], &[]);
    let lock = hex(&printed(&out.stdout, "lock"));
    let blocked_us = printed(&out.stdout, "blocked").parse::<f64>().unwrap() * 1e6;
    let locks = locks(&p);
    let l = find_lock(&locks, "lock", lock).unwrap_or_else(|| panic!("no lock wait on {lock:#x}: {locks:#?}"));
    assert_eq!(l["identity"]["type_name"], "_thread.lock");
    let total = l["total_us"].as_f64().unwrap();
    let waiter: u64 = printed(&out.stdout, "tid waiter").parse().unwrap();
    let runqueue = thread_categories(&p, waiter).get("runqueue").copied().unwrap_or(0.0);
    assert_wait_matches("lock wait", total, runqueue, blocked_us, 0.05);
    let line = format!("waiter (lock_handoff.py:{})", line_of(&wl, "WAIT-LINE"));
    assert_eq!(l["top_lines"][0]["line"], line.as_str());
    // The workload counts its acquisitions that found the lock held (10 on an idle machine; a
    // waiter slow to wake may find it free), and the times it gave up its CPU inside them (its
    // voluntary context switches: each one a park; an acquisition that got the lock while it
    // spun has none, and a spin preempted on a loaded machine is an involuntary switch). As
    // root the kernel's switch and wake-up events are accounted (BPF): the count of blocked
    // waits is exact.
    let waits: u64 = printed(&out.stdout, "waits").parse().unwrap();
    let short: u64 = printed(&out.stdout, "short").parse().unwrap();
    let parks: u64 = printed(&out.stdout, "parks").parse().unwrap();
    assert_eq!(p.0["summary"]["sched_accounting"]["source"], "bpf", "{}", p.0["summary"]);
    let counted = l["waits"].as_u64().unwrap();
    assert!(
        waits >= 1 && counted == parks,
        "{counted} waits from the kernel's events; the workload counted {waits} acquisitions that waited ({short} under 1 ms) and {parks} parks"
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("GIL: disabled"), "{summary}");
    assert!(summary.contains(&format!("_thread.lock @ {lock:#x}")), "{summary}");
}

/// Thread time at `line` (the innermost Python frame) in `cats`, per thread: off-CPU time plus
/// CPU samples x period.
fn time_at_line(p: &Profile, cats: &[&str], line: u64) -> HashMap<u64, f64> {
    let period_us = 1e6 / p.summary("rate_hz");
    let frames = p.0["frames"].as_array().unwrap();
    let mut out = HashMap::new();
    for s in p.0["stacks"].as_array().unwrap() {
        let innermost = s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &frames[i.as_u64().unwrap() as usize])
            .rfind(|f| f["kind"] == "python");
        if cats.contains(&s["category"].as_str().unwrap()) && innermost.is_some_and(|f| f["line"] == line) {
            let t = s["wait_us"].as_f64().unwrap_or(0.0) + s["samples"].as_f64().unwrap() * period_us;
            *out.entry(s["thread"].as_u64().unwrap()).or_default() += t;
        }
    }
    out
}

/// 8 threads taking turns at one lock (1 ms under it, 2 ms of their own work), more threads
/// than CPUs on most machines: time inside `acquire()` is blocked on the lock, or waiting for a
/// CPU after the wake-up, or after a preemption in the lock's spin (a yield). With the kernel's
/// events (BPF) runqueue time is shown where it happened, so `lock` + `runqueue` at the acquire
/// line account for the time each thread measured inside `acquire()`: within 2-3 % here on an
/// otherwise idle machine, 5 % with two busy loops beside it (the part after preemptions is
/// split by the ticks' samples, 10 % off for one thread in one run), asserted within 15 % per
/// thread and 8 % over all of them.
#[test]
fn oversubscribed_lock_and_runqueue_at_the_acquire_line_add_up_to_the_time_in_acquire() {
    let wl = workload("oversub_acquire.py");
    let line = line_of(&wl, "ACQUIRE-LINE");
    let (p, out) = record_json("oversub_acquire.py", &["8", "3"], &[]);
    assert_eq!(p.0["summary"]["sched_accounting"]["source"], "bpf", "{}", p.0["summary"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let measured: HashMap<u64, f64> = stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("thread")).then_some(())?;
            let tid = w.next()?.parse().ok()?;
            (w.next() == Some("inside")).then_some(())?;
            Some((tid, w.next()?.parse::<f64>().ok()? * 1e6))
        })
        .collect();
    assert_eq!(measured.len(), 8, "{stdout}");
    let shown = time_at_line(&p, &["lock", "runqueue"], line);
    let report: Vec<String> = measured
        .iter()
        .map(|(tid, m)| format!("{tid}: {:.0} of {m:.0} µs", shown.get(tid).copied().unwrap_or(0.0)))
        .collect();
    for (tid, m) in &measured {
        let s = shown.get(tid).copied().unwrap_or(0.0);
        assert!((s - m).abs() <= 0.15 * m, "thread {tid}: {report:?}");
    }
    let (s, m) = (shown.values().sum::<f64>(), measured.values().sum::<f64>());
    assert!((s - m).abs() <= 0.08 * m, "all: {s:.0} of {m:.0} µs; {report:?}");
    eprintln!("all: {:.3} of the time measured inside acquire()", s / m);
    // The lock's own figures: blocked and woken-then-waiting time timed in the kernel.
    let lock = hex(&printed(&out.stdout, "lock"));
    let l = find_lock(&locks(&p), "lock", lock).unwrap().clone();
    assert!(l["kernel_wait_us"].as_u64().unwrap() > 0 && l["kernel_runqueue_us"].as_u64().is_some(), "{l:#}");
}

#[test]
fn critical_section_wait_names_the_list_and_its_address() {
    let wl = workload("list_cs.py");
    let (p, out) = record_json("list_cs.py", &[], &[]);
    let list = hex(&printed(&out.stdout, "list"));
    let blocked_us = printed(&out.stdout, "blocked").parse::<f64>().unwrap() * 1e6;
    let locks = locks(&p);
    let l = find_lock(&locks, "critical_section", list)
        .unwrap_or_else(|| panic!("no critical_section wait on {list:#x}: {locks:#?}"));
    assert_eq!(l["identity"]["type_name"], "list");
    let total = l["total_us"].as_f64().unwrap();
    let appender: u64 = printed(&out.stdout, "tid appender").parse().unwrap();
    let runqueue = thread_categories(&p, appender).get("runqueue").copied().unwrap_or(0.0);
    assert_wait_matches("critical section", total, runqueue, blocked_us, 0.10);
    let line = format!("appender (list_cs.py:{})", line_of(&wl, "APPEND-LINE"));
    assert_eq!(l["top_lines"][0]["line"], line.as_str());
}

#[test]
fn sleeping_event_waiting_and_joining_are_not_contention() {
    let (p, out) = record_json("idle_kinds.py", &[], &[]);
    let ids = tids(&out.stdout);
    for (name, kind) in [("sleeper", "sleep"), ("event_waiter", "idle"), ("joiner", "join")] {
        let cats = thread_categories(&p, ids[name]);
        let total: f64 = cats.values().sum();
        let expected = cats.get(kind).copied().unwrap_or(0.0);
        let contention: f64 = CONTENTION.iter().filter_map(|c| cats.get(*c)).sum();
        assert!(total > 500_000.0, "{name}: only {total} µs observed: {cats:?}");
        assert!(expected >= 0.9 * total, "{name}: {kind} is {expected:.0} of {total:.0} µs: {cats:?}");
        assert!(contention <= 0.02 * total, "{name}: contention {contention:.0} µs: {cats:?}");
    }
}

#[test]
fn stop_the_world_pauses_are_counted_on_the_paused_threads() {
    let (p, out) = record_json("gc_stw.py", &["1.5"], &[]);
    let ids = tids(&out.stdout);
    let locks = locks(&p);
    let paused = locks
        .iter()
        .find(|l| l["kind"] == "stop_the_world" && l["description"].as_str().unwrap().contains("paused"))
        .unwrap_or_else(|| panic!("no stop-the-world pauses: {locks:#?}"));
    assert!(paused["waits"].as_u64().unwrap() >= 5, "{paused}");
    assert!(paused["max_us"].as_u64().unwrap() > 0 && paused["total_us"].as_u64().unwrap() > 0);
    let threads: Vec<u64> = paused["threads"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
    for a in ["alloc0", "alloc1"] {
        assert!(threads.contains(&ids[a]), "{a} not among paused threads {threads:?}");
        let stw = thread_categories(&p, ids[a]).get("stop_the_world").copied().unwrap_or(0.0);
        assert!(stw > 0.0, "{a} has no stop-the-world time");
    }
}

#[test]
fn top_locks_list_the_dict_and_the_lock_with_their_types() {
    // Its workers at real-time priority where permitted (see `common::realtime`): with two
    // CPU-bound processes beside it, the dict's critical section was not waited on once.
    let mut cmd = ftprof();
    realtime_workers(&mut cmd);
    let (p, out) = record_json_with(cmd, "dict_and_lock.py", &["1.5"], &[]);
    let dict = hex(&printed(&out.stdout, "dict"));
    let lock = hex(&printed(&out.stdout, "lock"));
    let locks = locks(&p);
    // On a miss, the whole summary (categories, threads, where they ran) besides the lock table:
    // once, with two busy loops beside the suite, the dict was not waited on at all.
    let d = find_lock(&locks, "critical_section", dict).unwrap_or_else(|| {
        panic!("dict missing: {locks:#?}\n{}\n{}", String::from_utf8_lossy(&out.stderr), p.0["threads"])
    });
    assert_eq!(d["identity"]["type_name"], "dict");
    let l = find_lock(&locks, "lock", lock).unwrap_or_else(|| panic!("lock missing: {locks:#?}"));
    assert_eq!(l["identity"]["type_name"], "_thread.lock");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains(&format!("dict @ {dict:#x}")) && summary.contains(&format!("_thread.lock @ {lock:#x}")),
        "{summary}"
    );
}

/// Share of the threads' CPU time spent in `cats` with `line` as the innermost Python frame.
fn share_at_line(p: &Profile, cats: &[&str], line: &str) -> f64 {
    let period_us = 1e6 / p.summary("rate_hz");
    let frames = p.0["frames"].as_array().unwrap();
    let label = |i: &Value| {
        let f = &frames[i.as_u64().unwrap() as usize];
        (f["kind"] == "python").then(|| {
            let file = f["file"].as_str().unwrap_or("");
            format!("{} ({}:{})", f["name"].as_str().unwrap(), file.rsplit('/').next().unwrap(), f["line"])
        })
    };
    let mut at = 0.0;
    let mut total = 0.0;
    for s in p.0["stacks"].as_array().unwrap() {
        // CPU time only: how long the threads also waited for a CPU depends on the machine's
        // load, not on the program.
        let t = s["samples"].as_f64().unwrap() * period_us;
        total += t;
        let innermost = s["frames"].as_array().unwrap().iter().rev().find_map(label);
        if cats.contains(&s["category"].as_str().unwrap()) && innermost.as_deref() == Some(line) {
            at += t;
        }
    }
    at / total
}

#[test]
fn shared_object_refcount_contention_stands_out() {
    let wl = workload("shared_object.py");
    let line = format!("worker (shared_object.py:{})", line_of(&wl, "CALL-LINE"));
    // The private variant runs faster: give it more iterations so both have as many samples.
    // How much two threads collide on one object's refcount varies from run to run and from
    // machine to machine (the scheduler may keep them on one core for a while: 6 % to 13 % at
    // this line here, under 5 % in all three tries on one CI machine), so the shared variant is
    // judged against the private one recorded in the same run (0.4 % to 0.9 % here), with up to
    // four tries.
    let (private, _) = record_json("shared_object.py", &["private", "12000000"], &["--rate", "999"]);
    let q = share_at_line(&private, &["refcount", "atomic_refcount", "spin"], &line);
    let want = (4.0 * q).max(0.02);
    // Contended (`refcount`) or not (`atomic_refcount`: the two threads did not run at the same
    // moment, which depends on the machine's load), the stalls are on the shared `Counter`, read
    // from the target through the local `obj`, wherever they land: on the `LOAD_FAST` or on the
    // `CALL` (the callee's frame drops `self` when it returns, with the caller's frame current
    // again), where the call's `self` is read through the instructions that pushed it. So the
    // refcount leaves that name the `Counter` outweigh those left naming "objects of a call"
    // (before the call's objects were read, those led in every recording with two busy loops
    // beside it: 17–22 samples against 7–11).
    let names_counter = |p: &Profile| {
        let frames = p.0["frames"].as_array().unwrap();
        let (mut counter, mut call) = (0.0, 0.0);
        for s in p.0["stacks"].as_array().unwrap() {
            let leaf = s["frames"].as_array().unwrap().last().and_then(|i| i.as_u64()).map(|i| &frames[i as usize]);
            let name = leaf.and_then(|f| f["name"].as_str()).unwrap_or("");
            if !["refcount", "atomic_refcount"].contains(&s["category"].as_str().unwrap()) {
                continue;
            }
            let n = s["samples"].as_f64().unwrap();
            if name.contains("Counter @ 0x") && name.ends_with("(local `obj`)") {
                counter += n;
            } else if name.contains("objects of a call") {
                call += n;
            }
        }
        counter > 0.0 && counter > call
    };
    let mut tries = Vec::new();
    loop {
        let (p, out) = record_json("shared_object.py", &["shared", "6000000"], &["--rate", "999"]);
        let s = share_at_line(&p, &["refcount", "atomic_refcount", "spin"], &line);
        tries.push((s, names_counter(&p)));
        if (s >= want && names_counter(&p)) || tries.len() == 4 {
            let summary = String::from_utf8_lossy(&out.stderr);
            assert!(
                s >= want,
                "shared variant: refcount (contended or not)+spin at {line} only {:?} %, private {:.1} %",
                tries.iter().map(|t| t.0 * 100.0).collect::<Vec<_>>(),
                q * 100.0
            );
            assert!(
                names_counter(&p),
                "the refcount leaves that name `Counter @ 0x… (local `obj`)` do not outweigh the call's unread objects in {} tries\n{summary}",
                tries.len()
            );
            break;
        }
    }
}

#[test]
fn wait_mode_flamegraph_has_the_lock_as_leaf_weighted_by_time() {
    let dir = tempdir();
    let folded = dir.path().join("w.txt");
    let out = ftprof()
        .args(["record", "--mode", "wait", "-f", "folded", "-o"])
        .arg(&folded)
        .arg("--")
        .arg(python())
        .arg(workload("lock_handoff.py"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lock = hex(&printed(&out.stdout, "lock"));
    let blocked_us = printed(&out.stdout, "blocked").parse::<f64>().unwrap() * 1e6;
    let text = std::fs::read_to_string(&folded).unwrap();
    let leaf = format!("[lock: _thread.lock @ {lock:#x}]");
    // The waiter thread's waiting: parked on the lock, plus any spinning for it just before.
    let weight = |pred: &dyn Fn(&str) -> bool| -> f64 {
        text.lines()
            .filter(|l| pred(l.rsplit_once(' ').unwrap().0))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum()
    };
    let on_lock = weight(&|st| st.ends_with(&leaf) || (st.starts_with("waiter (") && st.contains(";[spin: ")));
    let runqueue = weight(&|st| st.starts_with("waiter (") && st.ends_with("[runqueue]"));
    assert_wait_matches("lock wait (folded)", on_lock, runqueue, blocked_us, 0.05);
    assert!(text.lines().any(|l| l.rsplit_once(' ').unwrap().0.ends_with(&leaf)), "no {leaf} leaf");
    assert!(!text.contains("[join"), "idle kinds are left out without --idle");

    let svg = dir.path().join("w.svg");
    let out = ftprof()
        .args(["record", "--mode", "wait", "-o"])
        .arg(&svg)
        .arg("--")
        .arg(python())
        .arg(workload("lock_handoff.py"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("[lock: _thread.lock @ 0x"), "lock leaf in the SVG");
    assert!(text.contains(" us") || text.contains("us,"), "weighted in microseconds");
}
