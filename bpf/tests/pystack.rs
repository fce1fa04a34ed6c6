//! The Python-stack program on a real free-threaded CPython: a thread spinning in a known
//! function (bpf/tests/py/spin.py), sampled by ftprof's own perf events (inherited per-CPU
//! cpu-clock events, as `record` opens them) with the program attached. The frames read in the
//! kernel at each sample must be the frames the symbolizer reads from the process, and every
//! perf sample of the thread must join its record.

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bpf::{Joiner, PyOffsets, PyStacks};
use common::Workload;
use profiler::perf::open_process_rings;
use profiler::{Record, SampleSource, SamplingConfig};
use symbolizer::python::{PyFrame, PyProcess};

#[test]
fn frames_at_the_sample_instant_are_the_symbolizers_frames() {
    frames_match(Workload::start("spin.py", &[]));
}

/// The same on the default (GIL) build of the same CPython (its own `_Py_DebugOffsets`).
#[test]
fn frames_at_the_sample_instant_on_the_gil_build() {
    frames_match(Workload::start_with(&common::python_gil(), &[], "spin.py", &[]));
}

/// Debian's CPython 3.14 and 3.15 (chrooted; 3.15 ends the chain at its base frame).
#[test]
fn frames_at_the_sample_instant_on_314_and_315() {
    let root = common::rootfs();
    for version in ["3.14", "3.15"] {
        eprintln!("CPython {version}");
        frames_match(Workload::start_in_root(&root, version, "spin.py"));
    }
}

fn frames_match(mut w: Workload) {
    let _stats = bpf::StatsGuard::enable().unwrap_or_else(|e| panic!("{e}"));
    let stacks = PyStacks::load().unwrap_or_else(|e| panic!("{e}"));
    let pid = w.pid();
    let mut py = PyProcess::locate(pid).expect("locate the workload's runtime");
    stacks.set_process(pid, &PyOffsets::of(&py, 128).expect("offsets fit")).unwrap();
    // Opened on the process before its worker thread exists: the thread is sampled by the
    // inherited copies of the events, which must carry the program too.
    let cfg = SamplingConfig { rate_hz: 499, stack_bytes: 64, ring_pages: 64, ..Default::default() };
    let mut rings = open_process_rings(pid as i32, &cfg, false).expect("open the sampling events");
    for r in rings.iter().filter(|r| r.source() == SampleSource::CpuClock) {
        stacks.attach(r.as_fd()).unwrap_or_else(|e| panic!("{e}"));
    }
    for r in &rings {
        r.enable().unwrap();
    }
    w.send("go");
    let line = w.line();
    let tid: u32 = line.strip_prefix("tid ").and_then(|t| t.parse().ok()).expect("tid line");
    assert!(stacks.sync_threads(&py).unwrap().len() >= 2, "main and worker thread states");
    // Samples taken before the thread was registered carry no frames (said by `no_tstate`).
    let synced = bpf::now_ns();

    // The symbolizer's own walk of the thread (its frames do not change while it spins).
    let own = py.stack_for_tid(tid).unwrap().expect("the worker has a thread state");
    let own_names: Vec<String> = names(&own.frames);
    assert_eq!(&own_names[..4], ["spin", "level3", "level2", "level1"], "{own_names:?}");

    let mut records: VecDeque<_> = VecDeque::new();
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while records.len() < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        for r in &mut rings {
            r.drain(&mut |rec| {
                if let Record::Sample(s) = rec {
                    if s.tid == tid && s.source == SampleSource::CpuClock && s.time > synced {
                        samples.push(s);
                    }
                }
            });
        }
        records.extend(stacks.drain().into_iter().filter(|s| s.tid == tid && s.time_ns > synced));
    }
    assert!(records.len() >= 50, "only {} records for the spinning thread in 60 s", records.len());
    assert_eq!(stacks.lost(), 0, "records lost in the ring");

    for r in &records {
        assert!(!r.read_error && !r.no_tstate && !r.truncated, "{r:?}");
        let stack = r.to_stack(&mut py);
        assert!(!stack.truncated);
        assert_eq!(names(&stack.frames), own_names, "frames read in BPF vs the symbolizer");
        let addrs = |f: &[PyFrame]| f.iter().filter_map(code_addr).collect::<Vec<_>>();
        assert_eq!(addrs(&stack.frames), addrs(&own.frames));
    }

    // Every perf sample of the thread finds its record (same thread, same user registers, taken
    // nearest in time: perf reads its time a few µs before the program runs).
    let mut joined = 0;
    let total = samples.len();
    let mut joiner = Joiner::default();
    joiner.feed(records.iter().cloned().collect());
    let mut unjoined = Vec::new();
    for s in &samples {
        let regs = s.regs.expect("user registers");
        if joiner.take(s.tid, s.time, regs.ip, regs.sp).is_some() {
            joined += 1;
        } else {
            let near = records.iter().min_by_key(|r| r.time_ns.abs_diff(s.time));
            unjoined.push(format!(
                "sample t={} ip={:#x} sp={:#x} kernel={}; nearest record {:?}",
                s.time,
                regs.ip,
                regs.sp,
                s.kernel,
                near.map(|r| (r.time_ns, r.user_ip, r.user_sp))
            ));
        }
    }
    for p in stacks.prog_stats().into_iter().filter(|p| p.name == "ftprof_pystack") {
        assert!(p.run_cnt > 0, "{} never ran", p.name);
        eprintln!(
            "cost: {} ran {} times, {:.0} ns per run ({} frames)",
            p.name,
            p.run_cnt,
            p.ns_per_run().unwrap(),
            own.frames.len()
        );
    }
    eprintln!("{} records, {total} perf samples of the thread, {joined} joined", records.len());
    assert!(total > 0);
    // Samples whose records were drained after the loop ended may lack theirs: only the
    // samples taken before the last record drained are required to join.
    let last = records.back().unwrap().time_ns;
    let required = samples.iter().filter(|s| s.time + Joiner::WINDOW_NS <= last).count();
    assert!(joined >= required, "{joined} of {required} samples joined their record: {unjoined:#?}");
}

fn names(frames: &[PyFrame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            PyFrame::Code { code, .. } => Some(code.qualname.clone()),
            PyFrame::Entry => None,
        })
        .collect()
}

fn code_addr(f: &PyFrame) -> Option<u64> {
    match f {
        PyFrame::Code { code_addr, .. } => Some(*code_addr),
        PyFrame::Entry => None,
    }
}

/// Hand-off with bare `acquire()`/`release()` (bpf/tests/py/waits.py lock): at each of the
/// rounds the holder's release wakes the parked waiter, and the waker record taken then is the
/// holder's stack at the release site, for the lock's mutex.
#[test]
fn waker_stack_is_the_release_site() {
    let rounds = 10;
    let _stats = bpf::StatsGuard::enable().unwrap_or_else(|e| panic!("{e}"));
    let mut stacks = PyStacks::load().unwrap_or_else(|e| panic!("{e}"));
    let mut w = Workload::start("waits.py", &["lock", &rounds.to_string(), "0.02"]);
    let pid = w.pid();
    let mut py = PyProcess::locate(pid).expect("locate the workload's runtime");
    stacks.set_process(pid, &PyOffsets::of(&py, 128).expect("offsets fit")).unwrap();
    stacks.record_wakers(1000).unwrap();
    let offset = py.offsets.pyobject_size + py.layout.lock_mutex_after_header;
    w.send(&format!("go {offset}"));
    assert_eq!(w.line(), "started");
    assert!(stacks.sync_threads(&py).unwrap().len() >= 3, "main, holder and waiter thread states");
    w.send("");
    let r: serde_json::Value = serde_json::from_str(&w.line()).unwrap();
    let waiter = r["waiter_tid"].as_u64().unwrap() as u32;
    let holder = r["holder_tid"].as_u64().unwrap() as u32;
    let mutex = r["addr_obj"].as_u64().unwrap() + offset;

    let records = stacks.drain();
    let at_lock: Vec<_> =
        records.iter().filter(|s| s.waker_of.is_some_and(|k| k.wakee == waiter && k.addr == mutex)).collect();
    assert_eq!(stacks.wakers_skipped(), 0);
    assert_eq!(stacks.lost(), 0);
    assert_eq!(at_lock.len(), rounds, "one waker record per hand-off: {records:#x?}");
    for s in at_lock {
        assert_eq!(s.tid, holder, "woken by the holder");
        assert!(!s.no_tstate && !s.read_error && !s.truncated, "{s:?}");
        let names = s.names(&mut py);
        assert_eq!(names.first().map(String::as_str), Some("lock_holder"), "{names:?}");
    }
    for p in stacks.prog_stats().into_iter().filter(|p| p.name == "ftprof_waker") {
        assert!(p.run_cnt > 0, "{} never ran", p.name);
        eprintln!("cost: {} ran {} times, {:.0} ns per run", p.name, p.run_cnt, p.ns_per_run().unwrap());
    }
}

/// ftprof's own recording loop (`profiler::record`, attached to a running process) with a
/// `Sink` that uses `InstantStacks` as the recorder will: attach in `sampling_events`, then the
/// Python stack of each sample of the spinning thread comes from the kernel. The process is
/// added before its worker thread exists: the first records of the thread find no thread
/// state, which re-reads them.
#[test]
fn the_recording_loop_carries_the_program_through_its_sink() {
    use std::sync::atomic::AtomicBool;

    struct BpfSink {
        instant: bpf::InstantStacks,
        py: PyProcess,
        tid: Option<u32>,
        attached: usize,
        samples: usize,
        names: Vec<Vec<String>>,
        late_missing: usize,
    }
    impl profiler::Sink for BpfSink {
        fn sampling_events(&mut self, events: &[std::os::fd::BorrowedFd<'_>]) {
            self.instant.attach(events).unwrap_or_else(|e| panic!("{e}"));
            self.attached = events.len();
        }
        fn record(&mut self, r: Record) {
            if let Record::Sample(s) = r {
                if Some(s.tid) == self.tid && s.source == SampleSource::CpuClock {
                    self.samples += 1;
                    let regs = s.regs.expect("user registers");
                    match self.instant.stack_for_sample(&mut self.py, s.tid, s.time, regs.ip, regs.sp) {
                        Some(stack) => self.names.push(names(&stack.frames)),
                        None if !self.names.is_empty() => {
                            self.late_missing += 1;
                            let pending: Vec<_> =
                                self.instant.pending(s.tid).iter().map(|r| (r.time_ns, r.user_ip, r.user_sp)).collect();
                            eprintln!(
                                "no record for the sample t={} cpu={} ip={:#x} sp={:#x} kernel={}; pending {pending:x?}",
                                s.time, s.cpu, regs.ip, regs.sp, s.kernel
                            );
                        }
                        None => {}
                    }
                }
            }
        }
    }

    let mut w = Workload::start("spin.py", &[]);
    let pid = w.pid();
    let py = PyProcess::locate(pid).expect("locate the workload's runtime");
    let instant = bpf::InstantStacks::new(128, 0).unwrap_or_else(|e| panic!("{e}"));
    instant.add_process(&py).unwrap();
    let mut sink = BpfSink { instant, py, tid: None, attached: 0, samples: 0, names: vec![], late_missing: 0 };
    w.send("go");
    sink.tid = w.line().strip_prefix("tid ").and_then(|t| t.parse().ok());
    let target = profiler::Target::Attach { pid: pid as i32, duration: Some(Duration::from_millis(1500)) };
    let cfg = SamplingConfig { rate_hz: 499, stack_bytes: 64, ring_pages: 64, ..Default::default() };
    profiler::record(&target, &cfg, &AtomicBool::new(false), &mut sink).expect("record");
    let counts = sink.instant.counts();
    eprintln!("{} samples; {counts:?}; {} records unmatched", sink.samples, sink.instant.unmatched());
    assert!(sink.attached > 0, "the recording loop offered no sampling event");
    assert!(sink.samples > 0, "no sample of the spinning thread");
    assert_eq!(counts.ring_lost, 0);
    // Every sample has its record; only those before the thread state was re-read lack frames.
    assert_eq!(counts.joined + counts.missing, sink.samples as u64);
    // Once a sample had its stack, every later one had too (the first miss re-read the states).
    assert_eq!(sink.late_missing, 0, "{counts:?}");
    assert!(counts.joined > 0);
    assert_eq!(sink.names.len() as u64, counts.joined);
    for n in &sink.names {
        assert_eq!(&n[..4], ["spin", "level3", "level2", "level1"], "{n:?}");
    }
}

/// Eight threads handing one lock around with bare `acquire()`/`release()`
/// (bpf/tests/py/handoff.py): the waiting at the lock (exact, from the off-CPU programs) has a
/// holder (a waker record at the same address, from `release_site`) for ≥ 90 % of its waits.
#[test]
fn handoff_waits_have_their_holder() {
    let off = bpf::OffCpu::start().unwrap_or_else(|e| panic!("{e}"));
    let mut stacks = PyStacks::load().unwrap_or_else(|e| panic!("{e}"));
    let mut w = Workload::start("handoff.py", &["100"]);
    let pid = w.pid();
    let mut py = PyProcess::locate(pid).expect("locate the workload's runtime");
    stacks.set_process(pid, &PyOffsets::of(&py, 128).unwrap()).unwrap();
    // A budget no hand-off rate of this workload reaches: every wake-up is recorded.
    stacks.record_wakers(1_000_000).unwrap();
    off.add_target(pid).unwrap();
    w.send("go");
    assert_eq!(w.line(), "started");
    assert!(stacks.sync_threads(&py).unwrap().len() >= 9);
    w.send("");
    let r: serde_json::Value = serde_json::from_str(&w.line()).unwrap();
    let mutex = r["addr_obj"].as_u64().unwrap() + py.offsets.pyobject_size + py.layout.lock_mutex_after_header;
    let tids: Vec<u32> = r["tids"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();

    let waits: u64 = off
        .waits()
        .unwrap()
        .iter()
        .filter(|x| tids.contains(&x.tid) && x.kind == bpf::WaitKind::Futex { addr: mutex })
        .map(|x| x.count)
        .sum();
    let records = stacks.drain();
    let wakers: Vec<_> = records.iter().filter(|s| s.waker_of.is_some_and(|k| k.addr == mutex)).collect();
    assert_eq!(stacks.wakers_skipped(), 0);
    assert_eq!(stacks.lost(), 0);
    let from_release = wakers
        .iter()
        .filter(|s| tids.contains(&s.tid) && s.names(&mut py).first().map(String::as_str) == Some("release_site"))
        .count();
    eprintln!(
        "{waits} blocked waits at the lock; {} waker records there, {from_release} from release_site",
        wakers.len()
    );
    assert!(waits > 0, "the threads never blocked on the lock");
    assert!(from_release as f64 >= 0.9 * waits as f64, "{from_release} holders for {waits} waits");
}
