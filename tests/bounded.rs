//! End-to-end tests of bounded-cost collection: many threads and high switch rates (launched and
//! attached) keep every thread and lose no record silently; the sampled off-CPU view agrees with the
//! exact reference mode (`--exact-waits`); machine load does not show up as contention.
//! (Speed and memory goals are measured by benches/bounded_cost.py, not here.)

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

/// benches/workloads/contention.py: `KIND THREADS SECONDS`.
fn contention() -> std::path::PathBuf {
    root().join("benches/workloads/contention.py")
}

fn category_share(p: &Profile, cat: &str) -> f64 {
    p.0["summary"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == cat)
        .map_or(0.0, |c| c["share"].as_f64().unwrap())
}

fn contention_share(p: &Profile) -> f64 {
    p.0["summary"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["contention"] == true)
        .map(|c| c["share"].as_f64().unwrap())
        .sum()
}

fn record_contention(extra: &[&str], kind: &str, threads: usize, seconds: &str) -> (Profile, std::process::Output) {
    let dir = tempdir();
    let path = dir.path().join("p.json");
    let out = ftprof()
        .args(["record", "-f", "json", "-o"])
        .arg(&path)
        .args(extra)
        .arg("--")
        .arg(python())
        .arg(contention())
        .args([kind, &threads.to_string(), seconds])
        .output()
        .unwrap();
    assert!(out.status.success(), "ftprof failed: {}", String::from_utf8_lossy(&out.stderr));
    (Profile(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()), out)
}

/// Worker threads (not the main thread) that have thread time in the profile.
/// Records the kernel dropped are counted, and said with where: 0 on an idle machine (the
/// benchmarks, `benches/bounded_cost.py`, measure that), but on a loaded one ftprof's reader,
/// at normal priority among 33 target threads and two busy loops on 2 CPUs, was once not drained
/// for 0.4 s (202 sample records). The test asserts what holds under any load: a loss is in
/// `summary.lost` with its span, and the terminal summary warns of it; no loss, no warning.
fn losses_are_reported(p: &Profile, summary: &str, what: &str) {
    let lost = p.summary("lost_records");
    let spans = p.0["summary"]["lost"].as_array().map_or(0, Vec::len);
    assert_eq!(lost > 0.0, spans > 0, "{what}: {lost} lost records, spans {}", p.0["summary"]["lost"]);
    assert_eq!(lost > 0.0, summary.contains("warning: the kernel dropped"), "{what}: {lost} lost:\n{summary}");
}

fn workers_seen(p: &Profile, pid: u64) -> usize {
    p.0["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["tid"].as_u64() != Some(pid))
        .filter(|t| t["samples"].as_u64().unwrap() > 0 || t["wait_us"].as_u64().unwrap() > 0)
        .count()
}

#[test]
fn many_threads_launched_keep_every_thread_and_report_any_loss() {
    for n in [32, 128] {
        let (p, out) = record_contention(&[], "mixed", n, "3");
        let summary = String::from_utf8_lossy(&out.stderr);
        losses_are_reported(&p, &summary, &format!("{n} threads"));
        let pid = p.0["target"]["pid"].as_u64().unwrap();
        assert_eq!(workers_seen(&p, pid), n, "{n} threads: every worker has thread time");
        assert!(category_share(&p, "lock") + category_share(&p, "spin") > 0.0, "{summary}");
        assert_eq!(p.0["summary"]["wait_mode"], "sampled");
        let rate = p.summary("wait_rate_hz");
        if n == 128 {
            // 129 threads: the tick's budget lowers the per-thread rate, and the summary says so.
            assert!(rate < 199.0, "{rate}");
            assert!(summary.contains("lowered from 199 Hz"), "{summary}");
        } else {
            assert!(rate > 0.0, "{rate}");
        }
    }
}

#[test]
fn many_threads_attached_keep_every_thread_and_report_any_loss() {
    let n = 128;
    let mut target = Command::new(python())
        .arg(contention())
        .args(["pool", &n.to_string(), "6"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(target.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let dir = tempdir();
    let path = dir.path().join("a.json");
    let out = ftprof()
        .args(["record", "--pid", &target.id().to_string(), "--duration", "2", "-f", "json", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{summary}");
    let p = Profile(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
    losses_are_reported(&p, &summary, "attached");
    assert!(p.summary("switch_outs") > 10_000.0, "a pool of {n} hands off constantly");
    assert_eq!(workers_seen(&p, target.id() as u64), n);
    // Idle workers wait in queue.get (a Condition): idle, not contention.
    assert!(category_share(&p, "idle") > 0.0);
    assert!(target.wait().unwrap().success(), "the target keeps running after ftprof detaches");
}

/// The default (sampled) off-CPU view and the exact reference (a stack at every switch-out)
/// of an 8-thread lock hand-off agree on the waiting line, and each one's time blocked on the
/// lock is the kernel's own timing of the waits at the lock's address (BPF, as root) in the
/// same run: the blocked samples at a timed address take its exact time
/// (`analysis::reconcile`), whatever the machine's load. (Before they did, the split of each
/// hand-off between blocked and waiting for a CPU after the wake-up was estimated from the
/// thread's average, and with two busy loops on 2 cores the lock's blocked time came out at
/// 0.47 of the kernel's once.) What stays inexact: a thread whose waits at the lock no tick saw
/// keeps them in its other blocked time (less than a few sampling periods each: one period per
/// thread is allowed), and a thread whose blocked total (its accounting) falls short of its
/// timed waits has them scaled down to that total (the two are counted by different hooks; up
/// to 6 % of the lock's time with two busy loops and a test suite beside it: 10 % is allowed).
/// (The two modes' lock shares are not compared: a stack at every switch-out slows the
/// hand-offs down some 30 times here — 1.4 M switch-outs in 3 s sampled, 48 k exact — so the
/// two runs are different programs.)
#[test]
fn sampled_waits_agree_with_the_exact_reference() {
    let (sampled, _) = record_contention(&[], "handoff", 8, "3");
    let (exact, _) = record_contention(&["--exact-waits"], "handoff", 8, "3");
    assert_eq!(exact.0["summary"]["wait_mode"], "exact");
    for (mode, p) in [("sampled", &sampled), ("exact", &exact)] {
        assert_eq!(p.0["summary"]["sched_accounting"]["source"], "bpf", "{mode}: {}", p.0["summary"]);
        let lock = p.0["locks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["kind"] == "lock" && l["kernel_wait_us"].is_u64())
            .unwrap_or_else(|| panic!("{mode}: no lock with the kernel's timing: {}", p.0["locks"]));
        // The lock's time less its spinning (CPU samples) is its blocked time.
        let blocked = lock["total_us"].as_f64().unwrap() - lock["spin_us"].as_f64().unwrap();
        let kernel = lock["kernel_wait_us"].as_f64().unwrap();
        let period_us = 1e6 / p.0["summary"]["rate_hz"].as_f64().unwrap();
        // The hand-off's 8 threads, one sampling period each.
        let tolerance = 0.1 * kernel + 8.0 * period_us;
        assert!(
            kernel > 0.0 && (blocked - kernel).abs() <= tolerance,
            "{mode}: {blocked} µs blocked vs the kernel's {kernel} µs (±{tolerance:.0} µs, runqueue {:.0} %): {lock}",
            category_share(p, "runqueue") * 100.0
        );
    }
    // The lock's own waiting line (the run's top line of all categories can be another kind of
    // wait: with a stack at every switch-out on a loaded machine, the main thread's
    // stop-the-world request in `Thread.start` outweighed the slowed-down hand-offs once).
    let top = |p: &Profile| {
        let lock = p.0["locks"].as_array().unwrap().iter().find(|l| l["kind"] == "lock").unwrap();
        lock["top_lines"][0]["line"].as_str().unwrap().to_string()
    };
    assert_eq!(top(&sampled), top(&exact));
    assert!(top(&sampled).starts_with("handoff (contention.py:"), "{}", top(&sampled));
}

struct Hogs(Vec<Child>);

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `f` with this thread, and the processes it starts, on one CPU (the first this test may
/// use), whatever the machine's size.
fn on_one_cpu<T>(f: impl FnOnce() -> T) -> T {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let all = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    let first = (0..CpuSet::count()).find(|&c| all.is_set(c).unwrap_or(false)).expect("no CPU in our affinity mask");
    let mut one = CpuSet::new();
    one.set(first).unwrap();
    sched_setaffinity(Pid::from_raw(0), &one).expect("sched_setaffinity");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    sched_setaffinity(Pid::from_raw(0), &all).expect("sched_setaffinity");
    r.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Two busy loops share one CPU with a single-threaded program (all three pinned there, so the
/// load is the same on a 2-core and a 16-core machine): it is preempted all the time, and none
/// of that is contention.
#[test]
fn machine_load_does_not_show_up_as_contention() {
    on_one_cpu(|| {
        let _hogs =
            Hogs((0..2).map(|_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap()).collect());
        for extra in [&[][..], &["--exact-waits"][..]] {
            let (p, out) = record_json("single_thread.py", &[], extra);
            let summary = String::from_utf8_lossy(&out.stderr);
            let c = contention_share(&p);
            assert!(c <= 0.02, "{extra:?}: {:.1} % contention with one thread:\n{summary}", c * 100.0);
            // Its fair share of the CPU is a third: most of its time is spent waiting for it.
            assert!(category_share(&p, "runqueue") > 0.25, "{extra:?}: the load shows as runqueue:\n{summary}");
        }
    })
}
