//! The engine on synthetic inputs: a replayed record stream, a `/proc` that knows a fixed set
//! of threads, and a target without a CPython runtime (no memory to read). Exact answers.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use profiler::threads::SchedStat;
use profiler::{ExitStatus, Record, RecordingOutcome, Regs, Sample, SampleSource, StopReason};
use symbolizer::native::Mapping;
use symbolizer::python::{PyError, PyProcess};

use crate::*;

/// `/proc` of a process whose threads are `tids`, all running.
struct FixedThreads {
    tids: Vec<u32>,
}

impl ThreadSource for FixedThreads {
    fn tids(&mut self, _pid: u32) -> Vec<u32> {
        self.tids.clone()
    }
    fn state(&mut self, _pid: u32, _tid: u32) -> Option<char> {
        Some('R')
    }
    fn thread_name(&mut self, _pid: u32, _tid: u32) -> String {
        String::new()
    }
    fn cmdline(&mut self, pid: u32) -> Vec<String> {
        vec![format!("/usr/bin/prog{pid}"), "arg".into()]
    }
    fn descendants(&mut self, _pid: u32) -> Vec<u32> {
        Vec::new()
    }
    fn executable_mappings(&mut self, _pid: u32) -> Vec<Mapping> {
        Vec::new()
    }
    fn schedstat(&mut self, _pid: u32, _tid: u32) -> Option<SchedStat> {
        None
    }
    fn ctxt_switches(&mut self, _pid: u32, _tid: u32) -> Option<(u64, u64)> {
        None
    }
    fn syscall(&mut self, _pid: u32, _tid: u32) -> Option<(Option<u64>, Regs)> {
        None
    }
}

/// A target with no CPython runtime.
struct NoPython;

impl MemorySource for NoPython {
    fn python(&mut self, pid: u32) -> Result<PyProcess, PyError> {
        Err(PyError::NoProcess(pid))
    }
    fn stack(&mut self, _pid: u32, _sp: u64, _len: usize) -> Vec<u8> {
        Vec::new()
    }
}

fn cpu_sample(pid: u32, tid: u32, time: u64) -> Record {
    Record::Sample(Sample {
        source: SampleSource::CpuClock,
        pid,
        tid,
        time,
        cpu: 0,
        period: 1,
        ip: 0,
        regs: None,
        stack: Vec::new(),
        kernel: false,
        kernel_stack: Vec::new(),
    })
}

fn outcome(pid: i32) -> RecordingOutcome {
    RecordingOutcome {
        pid,
        exit: Some(ExitStatus::Code(3)),
        stop: StopReason::TargetExited,
        duration: Duration::from_millis(500),
        start_ns: 1_000,
        lost: 2,
        lost_switches: 0,
        target_cpu_seconds: Some(0.25),
        followed_children: false,
        held: Duration::ZERO,
        held_at_exec: false,
    }
}

/// Replays `records` of target 100 through a recorder with `cfg` and builds the profile.
fn replay(cfg: &EngineConfig, records: Vec<Record>) -> analysis::Profile {
    let rec = Recorder::with_sources(cfg, Box::new(FixedThreads { tids: vec![100, 101] }), Box::new(NoPython));
    let mut source = Replay { pid: 100, records, outcome: outcome(100) };
    let stop = AtomicBool::new(false);
    let mut rec = rec;
    let outcome = source.run(&mut rec, &stop).unwrap();
    let collection = rec.collector.clone().finish(outcome.start_ns + outcome.duration.as_nanos() as u64);
    profile_of(&rec, collection, &mut Symbols::default(), Some(&outcome))
}

fn stream() -> Vec<Record> {
    let mut r = vec![
        Record::Comm { pid: 100, tid: 100, name: "main".into(), exec: false },
        Record::Fork { pid: 100, ppid: 100, tid: 101, ptid: 100, time: 1_500 },
        Record::Comm { pid: 100, tid: 101, name: "worker".into(), exec: false },
        // Another process (not followed without `subprocesses`).
        Record::Comm { pid: 200, tid: 200, name: "other".into(), exec: false },
        cpu_sample(200, 200, 2_000),
        Record::Lost { count: 2, time: 3_000, source: SampleSource::CpuClock },
    ];
    for i in 0..3 {
        r.push(cpu_sample(100, 100, 2_000 + i * 1_000));
    }
    r.push(cpu_sample(100, 101, 2_500));
    r.push(Record::Drained { upto: 10_000 });
    r
}

#[test]
fn cpu_samples_per_thread_from_a_replayed_stream() {
    let cfg = EngineConfig { waits: Waits::Off, command: vec!["prog".into(), "x".into()], ..Default::default() };
    let p = replay(&cfg, stream());
    assert_eq!(p.summary.samples, 4);
    assert_eq!(p.summary.wait_mode, "off");
    assert_eq!(p.summary.lost_records, 2);
    assert_eq!(p.summary.lost.len(), 1);
    assert_eq!((p.summary.lost[0].ring.as_str(), p.summary.lost[0].count), ("samples", 2));
    assert_eq!(p.summary.target_cpu_s, Some(0.25));
    let mut threads: Vec<(u32, &str, u64)> = p.threads.iter().map(|t| (t.tid, t.name.as_str(), t.samples)).collect();
    threads.sort();
    assert_eq!(threads, vec![(100, "main", 3), (101, "worker", 1)]);
    assert_eq!(p.target.command, vec!["prog", "x"]);
    assert_eq!(p.target.pid, 100);
    assert_eq!(p.target.exit.as_deref(), Some("exit code 3"));
    assert!(p.target.python.is_none());
    assert!(!p.target.attached && !p.target.partial && !p.target.interrupted);
}

#[test]
fn other_processes_are_kept_only_with_subprocesses() {
    let cfg = EngineConfig { waits: Waits::Off, subprocesses: true, ..Default::default() };
    let p = replay(&cfg, stream());
    // pid 200 has no CPython runtime: skipped, and listed.
    let listed: Vec<(u32, bool)> = p.summary.processes.iter().map(|q| (q.pid, q.python)).collect();
    assert!(listed.contains(&(200, false)), "{listed:?}");
    assert!(p.threads.iter().all(|t| t.pid != 200));
    // The launched command comes from /proc when the config has none.
    assert_eq!(p.target.command, vec!["/usr/bin/prog100", "arg"]);
}

#[test]
fn wait_modes_name_the_profile_and_the_sampling() {
    for (w, name, kernel_switches) in
        [(Waits::Off, "off", false), (Waits::Sampled, "sampled", false), (Waits::Exact, "exact", true)]
    {
        let cfg = EngineConfig { waits: w, ..Default::default() };
        assert_eq!(w.name(), name);
        assert_eq!(cfg.sampling().switch_samples, kernel_switches, "{w:?}");
    }
}
