//! The stack half of the BPF path as a recorder uses it: one object per recording that attaches
//! to the sampling events, keeps the walked processes and their thread states current, and
//! answers "the Python stack of this perf sample" from the kernel's record.

use std::os::fd::BorrowedFd;

use symbolizer::python::{PyProcess, PyStack};

use crate::loader::Refusal;
use crate::pystack::{Joiner, PyOffsets, PySample, PyStacks};

/// How the samples' Python stacks were obtained (for the summary: which path, how often not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstantCounts {
    /// Samples whose stack came from the kernel record.
    pub joined: u64,
    /// Samples with no record (lost, or not yet walkable): the caller reads the stack itself.
    pub missing: u64,
    /// Records of a thread not yet registered (a new thread): its thread states are re-read.
    pub no_tstate: u64,
    /// Records lost in the ring (full).
    pub ring_lost: u64,
    /// Of `no_tstate`: re-reads of the thread list that failed, or that did not list the
    /// sampled thread (its later samples stay unregistered); see [`InstantStacks::sync_trouble`].
    pub sync_failed: u64,
    pub sync_unlisted: u64,
    /// Of `no_tstate`: records taken after an earlier re-read had registered their thread (the
    /// kernel did not find what it was given: a fault).
    pub after_registered: u64,
}

/// Python stacks read at the sample instant, for one recording.
pub struct InstantStacks {
    stacks: PyStacks,
    joiner: Joiner,
    max_depth: u32,
    counts: InstantCounts,
    /// The first failed re-read of a thread list; per sampled thread that was not registered,
    /// what the re-reads saw of it (not listed: a thread being created or torn down, a thread
    /// that runs no Python: once or always; a Python thread many times: a fault).
    sync_error: Option<String>,
    unregistered: std::collections::HashMap<u32, Unregistered>,
}

/// What the re-reads saw of one thread whose records said "not registered".
#[derive(Default)]
struct Unregistered {
    /// Its records that said so.
    records: u64,
    /// Re-reads that listed it, and that did not.
    listed: u64,
    unlisted: u64,
    /// When (CLOCK_MONOTONIC ns) a re-read first registered it.
    registered_at: Option<u64>,
    /// How long after the latest such record was taken ftprof read it (ns).
    last_late_ns: u64,
}

impl InstantStacks {
    /// Load the program (refused in one line: privileges, BTF, verifier). `waker_budget`: waker
    /// records per CPU and second (0: none).
    pub fn new(max_depth: u32, waker_budget: u64) -> Result<InstantStacks, Refusal> {
        let mut stacks = PyStacks::load()?;
        if waker_budget > 0 {
            stacks.record_wakers(waker_budget)?;
        }
        Ok(InstantStacks {
            stacks,
            joiner: Joiner::default(),
            max_depth,
            counts: InstantCounts::default(),
            sync_error: None,
            unregistered: std::collections::HashMap::new(),
        })
    }

    /// Attach to the sampling events (from `profiler::Sink::sampling_events`).
    pub fn attach(&self, events: &[BorrowedFd<'_>]) -> Result<(), Refusal> {
        events.iter().try_for_each(|fd| self.stacks.attach(*fd))
    }

    /// Walk the stacks of `py`'s process from now on (call when its runtime is located).
    pub fn add_process(&self, py: &PyProcess) -> Result<(), Refusal> {
        let offsets = PyOffsets::of(py, self.max_depth).ok_or_else(|| Refusal::Map {
            map: "py_procs".into(),
            reason: format!("CPython {} frame fields lie past what the program reads", py.offsets.version_string()),
        })?;
        self.stacks.set_process(py.pid, &offsets)?;
        self.stacks.sync_threads(py)?;
        Ok(())
    }

    /// Stop walking process `pid` (it exited).
    pub fn remove_process(&self, pid: u32) -> Result<(), Refusal> {
        self.stacks.forget_process(pid)
    }

    /// Thread `tid` exited.
    pub fn forget_thread(&self, tid: u32) -> Result<(), Refusal> {
        self.stacks.forget_thread(tid)
    }

    /// The Python stack of the perf sample of `tid` at `time_ns` with user registers (`ip`,
    /// `sp`), from the kernel's record; `None` when there is none (counted): the caller reads the
    /// stack itself, as without BPF. A record of a thread not registered yet re-reads `py`'s
    /// thread states, so the thread's next samples have theirs.
    pub fn stack_for_sample(
        &mut self,
        py: &mut PyProcess,
        tid: u32,
        time_ns: u64,
        ip: u64,
        sp: u64,
    ) -> Option<PyStack> {
        self.joiner.feed(self.stacks.drain());
        match self.joiner.take(tid, time_ns, ip, sp) {
            Some(rec) if rec.no_tstate => {
                self.counts.missing += 1;
                // Registered well before this record was taken, and still not found by the kernel.
                const SLACK_NS: u64 = 1_000_000;
                let now = crate::loader::now_ns();
                let u = self.unregistered.entry(tid).or_default();
                if u.registered_at.is_some_and(|at| rec.time_ns > at + SLACK_NS) {
                    self.counts.after_registered += 1;
                }
                u.records += 1;
                u.last_late_ns = now.saturating_sub(rec.time_ns);
                match self.stacks.sync_threads(py) {
                    Ok(tids) if !tids.contains(&tid) => {
                        u.unlisted += 1;
                    }
                    Ok(_) => {
                        u.registered_at.get_or_insert(now);
                        u.listed += 1;
                    }
                    Err(e) => {
                        self.counts.sync_failed += 1;
                        self.sync_error.get_or_insert_with(|| e.to_string());
                    }
                }
                None
            }
            Some(rec) => {
                self.counts.joined += 1;
                Some(rec.to_stack(py))
            }
            None => {
                self.counts.missing += 1;
                None
            }
        }
    }

    /// What kept sampled threads unregistered, in one line, when it looks like a fault: re-reads
    /// of a thread list that failed 10 times or more (with the first reason), threads that
    /// `is_python` says run Python and that 10 re-reads or more did not list, 10 records or
    /// more taken after their thread was registered that still found no registration, or a
    /// thread with 100 records or more before it was registered.
    pub fn sync_trouble(&self, is_python: impl Fn(u32) -> bool) -> Option<String> {
        const MANY: u64 = 10;
        let mut why = Vec::new();
        if self.counts.sync_failed >= MANY {
            let first = self.sync_error.as_deref().unwrap_or("");
            why.push(format!("{} re-reads of the thread list failed (first: {first})", self.counts.sync_failed));
        }
        let mut unlisted: Vec<(u32, u64)> = self
            .unregistered
            .iter()
            .filter(|&(&t, u)| u.unlisted >= MANY && is_python(t))
            .map(|(&t, u)| (t, u.unlisted))
            .collect();
        unlisted.sort_unstable();
        for (tid, n) in unlisted {
            why.push(format!("Python thread {tid} missing from its thread list at {n} re-reads"));
        }
        if self.counts.after_registered >= MANY {
            why.push(format!(
                "{} kernel records taken after their thread was registered did not find it",
                self.counts.after_registered
            ));
        }
        // Whatever the cause, a Python thread unregistered for many samples is named, with what
        // was seen of it: how many re-reads listed it, and how late its last such record was read.
        // (Not a thread that runs no Python: a native pool's thread is never listed.)
        let mut long: Vec<(&u32, &Unregistered)> = self
            .unregistered
            .iter()
            .filter(|(&t, u)| u.records >= 10 * MANY && (u.listed > 0 || is_python(t)))
            .collect();
        long.sort_unstable_by_key(|&(&t, _)| t);
        for (tid, u) in long {
            why.push(format!(
                "thread {tid}: {} records before it was registered ({} re-reads listed it; the last read {} ms after it was taken)",
                u.records,
                u.listed,
                u.last_late_ns / 1_000_000
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// Waker records so far (the release sites of futex hand-offs), taken out.
    pub fn take_wakers(&mut self) -> Vec<PySample> {
        self.joiner.feed(self.stacks.drain());
        self.joiner.take_wakers()
    }

    /// Drop records older than `before_ns` that found no sample (call now and then).
    pub fn expire(&mut self, before_ns: u64) {
        self.joiner.expire(before_ns);
    }

    /// The counts so far; `no_tstate` and `sync_unlisted` are the per-thread tallies summed.
    pub fn counts(&self) -> InstantCounts {
        let u = self.unregistered.values();
        InstantCounts {
            ring_lost: self.stacks.lost(),
            no_tstate: u.clone().map(|u| u.records).sum(),
            sync_unlisted: u.map(|u| u.unlisted).sum(),
            ..self.counts
        }
    }

    /// The records of `tid` still waiting for their samples (diagnostics).
    pub fn pending(&self, tid: u32) -> Vec<PySample> {
        self.joiner.pending(tid).cloned().collect()
    }

    /// Records that found no sample.
    pub fn unmatched(&self) -> u64 {
        self.joiner.unmatched
    }
}
