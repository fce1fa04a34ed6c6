//! Scheduler accounting from the kernel's own events (BPF `sched_switch` / `sched_wakeup`)
//! instead of `/proc/PID/task/TID/schedstat`.
//!
//! Why: on 6.12+ kernels (EEVDF delayed dequeue) the schedstat "run delay" also counts time a
//! thread spent blocked, so "waiting for a CPU" was overstated and blocked time understated
//! (a 243 ms critical-section wait showed 228 ms of run delay with a CPU free). The BPF off-CPU
//! programs ([`bpf::OffCpu`]) time each blocked and runnable period exactly.
//!
//! [`KernelSched`] is a [`ThreadSource`] that answers `schedstat` from them and everything else
//! from the wrapped source. A thread the programs have not seen yet (it has not switched since
//! the accounting began, or it was blocked since before it) is answered from `/proc` until they
//! have; then [`Splice`] continues the series from the kernel's totals, so that the differences
//! the recorder takes between two readings stay true across the change. The engine derives
//! blocked time as wall time minus run and runqueue time: here "run" is the rest of the wall time
//! once the kernel's blocked and runnable periods are taken out, so that derivation gives back
//! exactly the kernel's blocked time.

use std::collections::{HashMap, HashSet};

use profiler::threads::SchedStat;
use profiler::Regs;
use symbolizer::native::Mapping;

use crate::ThreadSource;

/// A thread's cumulative kernel accounting at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTimes {
    /// Blocked time, the wait in progress included (ns).
    pub blocked_ns: u64,
    /// Runnable-but-not-running time, the period in progress included (ns).
    pub runq_ns: u64,
    /// Times it was put on a CPU.
    pub switch_ins: u64,
    /// Of `runq_ns`, the time after wake-ups (ns).
    pub woken_runq_ns: u64,
}

impl KernelTimes {
    fn of(t: &bpf::ThreadTimes, now_ns: u64) -> KernelTimes {
        let runnable_now = t.state == bpf::ThreadState::Runnable;
        KernelTimes {
            blocked_ns: t.blocked_at(now_ns),
            runq_ns: t.runq_at(now_ns),
            switch_ins: t.runq_count.saturating_sub(runnable_now as u64),
            woken_runq_ns: t.wake_runq_at(now_ns),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Track {
    /// The last value returned.
    last: Option<SchedStat>,
    /// From when the kernel's totals are used: their time, values, and the value returned then.
    base: Option<(u64, KernelTimes, SchedStat)>,
}

/// Per thread: one continuous schedstat-shaped series, from `/proc` until the kernel's totals
/// are available, from those after (see the module documentation).
#[derive(Default)]
pub struct Splice {
    tracks: HashMap<u32, Track>,
}

impl Splice {
    /// The value to report for `tid` at `at_ns` given the kernel's totals (`None`: it has not
    /// seen the thread, or lost it) and `/proc`'s schedstat read at the same moment (`None`:
    /// unread or unreadable). `/proc` is used until the kernel's totals are; from then on the
    /// series follows the kernel's, starting from `/proc`'s value at that moment.
    pub fn next(
        &mut self,
        tid: u32,
        at_ns: u64,
        kernel: Option<KernelTimes>,
        proc: Option<SchedStat>,
    ) -> Option<SchedStat> {
        let t = self.tracks.entry(tid).or_default();
        let out = match (kernel, t.base) {
            (None, Some(_)) => t.last?,
            (None, None) => proc?,
            (Some(k), None) => {
                let start = proc.or(t.last).unwrap_or_default();
                t.base = Some((at_ns, k, start));
                start
            }
            (Some(k), Some((t0, k0, s0))) => {
                let wall = at_ns.saturating_sub(t0);
                let blocked = k.blocked_ns.saturating_sub(k0.blocked_ns);
                let runq = k.runq_ns.saturating_sub(k0.runq_ns);
                SchedStat {
                    run_ns: s0.run_ns + wall.saturating_sub(blocked + runq),
                    runqueue_ns: s0.runqueue_ns + runq,
                    timeslices: s0.timeslices + k.switch_ins.saturating_sub(k0.switch_ins),
                    woken_runqueue_ns: s0.woken_runqueue_ns + k.woken_runq_ns.saturating_sub(k0.woken_runq_ns),
                }
            }
        };
        t.last = Some(out);
        Some(out)
    }

    /// Whether `tid`'s series follows the kernel's totals.
    pub fn is_kernel(&self, tid: u32) -> bool {
        self.tracks.get(&tid).is_some_and(|t| t.base.is_some())
    }

    pub fn forget(&mut self, tid: u32) {
        self.tracks.remove(&tid);
    }
}

/// A [`ThreadSource`] whose scheduler accounting comes from [`bpf::OffCpu`] (see the module
/// documentation); the rest from `inner`.
pub struct KernelSched {
    inner: Box<dyn ThreadSource>,
    offcpu: bpf::OffCpu,
    targets: HashSet<u32>,
    splice: Splice,
    /// Threads answered from the kernel's totals (at any point), for the summary.
    pub kernel_threads: HashSet<u32>,
    /// The waits of threads that exited (taken out of the kernel's map).
    finished: Vec<bpf::Wait>,
    /// Threads waiting for a CPU after a preemption at their last reading: user ip, sp, bp,
    /// and since when.
    preempted: HashMap<u32, ((u64, u64, u64), u64)>,
    /// Per thread, schedstat's run delay next to the kernel events' runnable time, read at the
    /// same moments (see [`ThreadSource::sched_cross_check`]).
    cross: HashMap<u32, CrossCheck>,
    /// The same summed over threads that exited: (threads, schedstat ns, events ns).
    cross_done: (u64, u64, u64),
}

/// Read `/proc`'s schedstat beside the kernel's totals every this many readings of a thread.
const CROSS_CHECK_EVERY: u64 = 8;

/// (schedstat run delay, the events' runnable time) of one thread, first and last read together.
#[derive(Clone, Copy, Debug, Default)]
struct CrossCheck {
    readings: u64,
    first: Option<(u64, u64)>,
    last: (u64, u64),
}

impl CrossCheck {
    fn add_to(&self, out: &mut (u64, u64, u64)) {
        if let Some(f) = self.first {
            out.0 += 1;
            out.1 += self.last.0.saturating_sub(f.0);
            out.2 += self.last.1.saturating_sub(f.1);
        }
    }
}

impl KernelSched {
    pub fn new(inner: Box<dyn ThreadSource>, offcpu: bpf::OffCpu) -> KernelSched {
        KernelSched {
            inner,
            offcpu,
            targets: HashSet::new(),
            splice: Splice::default(),
            kernel_threads: HashSet::new(),
            finished: Vec::new(),
            preempted: HashMap::new(),
            cross: HashMap::new(),
            cross_done: (0, 0, 0),
        }
    }

    /// Account process `pid`'s threads from now on (done at its first reading otherwise).
    pub fn add_target(&mut self, pid: u32) {
        if self.targets.insert(pid) {
            let _ = self.offcpu.add_target(pid);
        }
    }

    /// What the programs could not account (a full map, a wake-up not seen…).
    pub fn lost(&self) -> Option<bpf::OffCpuLost> {
        self.offcpu.lost().ok()
    }
}

impl ThreadSource for KernelSched {
    fn tids(&mut self, pid: u32) -> Vec<u32> {
        self.inner.tids(pid)
    }
    fn state(&mut self, pid: u32, tid: u32) -> Option<char> {
        self.inner.state(pid, tid)
    }
    fn thread_name(&mut self, pid: u32, tid: u32) -> String {
        self.inner.thread_name(pid, tid)
    }
    fn cmdline(&mut self, pid: u32) -> Vec<String> {
        self.inner.cmdline(pid)
    }
    fn descendants(&mut self, pid: u32) -> Vec<u32> {
        self.inner.descendants(pid)
    }
    fn executable_mappings(&mut self, pid: u32) -> Vec<Mapping> {
        self.inner.executable_mappings(pid)
    }
    fn schedstat(&mut self, pid: u32, tid: u32) -> Option<SchedStat> {
        self.add_target(pid);
        let now = bpf::now_ns();
        let times = self.offcpu.thread(tid).ok().flatten();
        let kernel = times.as_ref().map(|t| KernelTimes::of(t, now));
        match times {
            Some(t) if t.state == bpf::ThreadState::Runnable && !t.after_wake && t.preempted_at.1 != 0 => {
                self.preempted.insert(tid, (t.preempted_at, t.since_ns));
            }
            _ => {
                self.preempted.remove(&tid);
            }
        }
        if kernel.is_some() {
            self.kernel_threads.insert(tid);
        }
        // `/proc` until the kernel's totals take over, and once at that moment (the start);
        // after that every CROSS_CHECK_EVERY readings for the cross-check.
        let kernel_now = self.splice.is_kernel(tid);
        let c = self.cross.entry(tid).or_default();
        c.readings += 1;
        let proc =
            if !kernel_now || c.readings % CROSS_CHECK_EVERY == 0 { self.inner.schedstat(pid, tid) } else { None };
        if let (Some(k), Some(p)) = (kernel, proc) {
            let at = (p.runqueue_ns, k.runq_ns);
            c.first.get_or_insert(at);
            c.last = at;
        }
        self.splice.next(tid, now, kernel, if kernel_now { None } else { proc })
    }
    fn sched_cross_check(&self) -> Option<(u64, u64, u64)> {
        let mut out = self.cross_done;
        for c in self.cross.values() {
            c.add_to(&mut out);
        }
        Some(out)
    }
    fn ctxt_switches(&mut self, pid: u32, tid: u32) -> Option<(u64, u64)> {
        self.inner.ctxt_switches(pid, tid)
    }
    fn syscall(&mut self, pid: u32, tid: u32) -> Option<(Option<u64>, Regs)> {
        self.inner.syscall(pid, tid)
    }
    fn preempted(&mut self, _pid: u32, tid: u32, before_ns: u64) -> Option<Regs> {
        let &((ip, sp, bp), _) = self.preempted.get(&tid).filter(|(_, since)| *since < before_ns)?;
        Some(Regs { ip, sp, bp, ..Regs::default() })
    }
    fn forget(&mut self, tid: u32) {
        self.inner.forget(tid);
        self.preempted.remove(&tid);
        if let Some(c) = self.cross.remove(&tid) {
            c.add_to(&mut self.cross_done);
        }
        self.splice.forget(tid);
        if let Ok(w) = self.offcpu.take_thread(tid) {
            self.finished.extend(w);
        }
    }
    fn kernel_waits(&self) -> Option<Vec<bpf::Wait>> {
        let mut all = self.finished.clone();
        all.extend(self.offcpu.waits().ok()?);
        Some(all)
    }
    fn follow(&mut self, pid: u32) {
        self.add_target(pid);
    }
    fn sched_exact(&self, tid: u32) -> bool {
        self.splice.is_kernel(tid)
    }
    fn kernel_accounted(&self) -> Option<usize> {
        Some(self.kernel_threads.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn proc(run: u64, runq: u64, slices: u64) -> Option<SchedStat> {
        Some(SchedStat { run_ns: run * MS, runqueue_ns: runq * MS, timeslices: slices, woken_runqueue_ns: 0 })
    }

    fn kernel(blocked: u64, runq: u64, ins: u64) -> Option<KernelTimes> {
        Some(KernelTimes {
            blocked_ns: blocked * MS,
            runq_ns: runq * MS,
            switch_ins: ins,
            woken_runq_ns: runq * MS / 2,
        })
    }

    /// Blocked time as the recorder derives it between two readings: wall minus run and
    /// runqueue.
    fn blocked(a: (u64, SchedStat), b: (u64, SchedStat)) -> u64 {
        (b.0 - a.0) - (b.1.run_ns - a.1.run_ns) - (b.1.runqueue_ns - a.1.runqueue_ns)
    }

    /// A thread read from /proc for two ticks, then seen by the kernel: the series continues
    /// from /proc's value at that moment, and over the kernel's part the recorder's derivation
    /// gives back exactly the kernel's blocked time (not the schedstat run delay).
    ///
    /// ```text
    ///   t (ms)   0        10       20              30              40
    ///   /proc    0,0,0    6,2,3    12,2,4          -               -
    ///   kernel   -        -        b=5 q=1 in=2    b=12 q=1 in=3   b=12 q=4 in=5
    /// ```
    #[test]
    fn the_series_continues_when_the_kernel_takes_over() {
        let mut s = Splice::default();
        let r0 = s.next(7, 0, None, proc(0, 0, 0)).unwrap();
        let r1 = s.next(7, 10 * MS, None, proc(6, 2, 3)).unwrap();
        assert_eq!(r1, SchedStat { run_ns: 6 * MS, runqueue_ns: 2 * MS, timeslices: 3, woken_runqueue_ns: 0 });
        let r2 = s.next(7, 20 * MS, kernel(5, 1, 2), proc(12, 2, 4)).unwrap();
        assert_eq!(r2, proc(12, 2, 4).unwrap(), "the kernel's first reading is the base: /proc's value then");
        assert!(s.is_kernel(7));
        let r3 = s.next(7, 30 * MS, kernel(12, 1, 3), None).unwrap();
        assert_eq!(blocked((20 * MS, r2), (30 * MS, r3)), 7 * MS);
        assert_eq!(r3.runqueue_ns - r2.runqueue_ns, 0);
        assert_eq!(r3.timeslices, 5, "one more switch-in");
        let r4 = s.next(7, 40 * MS, kernel(12, 4, 5), None).unwrap();
        assert_eq!(blocked((30 * MS, r3), (40 * MS, r4)), 0);
        assert_eq!(r4.runqueue_ns - r3.runqueue_ns, 3 * MS);
        // Half of the kernel's runnable time followed wake-ups (the helper's rule): 0.5 ms then 2 ms.
        assert_eq!(r4.woken_runqueue_ns - r2.woken_runqueue_ns, 3 * MS / 2);
        assert_eq!(r4.run_ns - r3.run_ns, 7 * MS);
        // Over the whole recording: /proc's part (20 - 12 - 2) plus the kernel's exact part.
        assert_eq!(blocked((0, r0), (40 * MS, r4)), 6 * MS + 7 * MS);
        // The kernel lost the thread (a full map): its last value stays.
        assert_eq!(s.next(7, 50 * MS, None, proc(100, 100, 100)), Some(r4));
    }

    /// The cross-check sums what changed between a thread's first and last paired readings;
    /// a thread never read in pairs adds nothing.
    #[test]
    fn the_cross_check_compares_the_same_periods() {
        let mut out = (0, 0, 0);
        CrossCheck { readings: 24, first: Some((5 * MS, MS)), last: (300 * MS, 40 * MS) }.add_to(&mut out);
        CrossCheck { readings: 3, first: None, last: (0, 0) }.add_to(&mut out);
        CrossCheck { readings: 9, first: Some((0, 0)), last: (10 * MS, 10 * MS) }.add_to(&mut out);
        assert_eq!(out, (2, 305 * MS, 49 * MS));
    }

    /// A thread the kernel saw from its first reading (a thread started after the accounting
    /// began) starts at /proc's value; a forgotten thread starts over.
    #[test]
    fn a_thread_seen_from_the_start_and_forgotten() {
        let mut s = Splice::default();
        assert_eq!(s.next(3, 5 * MS, kernel(0, 1, 1), proc(1, 1, 1)), proc(1, 1, 1));
        let r = s.next(3, 105 * MS, kernel(90, 1, 1), None).unwrap();
        assert_eq!(r, SchedStat { run_ns: 11 * MS, runqueue_ns: MS, timeslices: 1, woken_runqueue_ns: 0 });
        s.forget(3);
        assert!(!s.is_kernel(3));
        assert_eq!(s.next(3, 200 * MS, None, proc(1, 1, 1)).unwrap().run_ns, MS);
        // Neither source: nothing.
        assert_eq!(s.next(4, 200 * MS, None, None), None);
    }
}
