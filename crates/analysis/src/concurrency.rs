//! Contention means concurrency: which CPU samples ran while another thread of the same process
//! was on a CPU *touching the same thing* at the same time.
//!
//! A refcount update on an object another thread owns is an atomic instruction whether or not
//! anyone else touches the object; it only becomes contention (the cache line bouncing between
//! cores) when other threads update the same object at the same time. Each CPU sample says which
//! thread was on which CPU at its time, and what the thread was working on: the object its
//! current instruction names (see `symbolizer::python::operand`) and the function (code object)
//! it was running.
//!
//! "At the same time" is decided over a window, not by two samples landing within one sampling
//! period: a thread that touches an object in a loop spends a few per cent of its time on it, so
//! at 199 Hz two threads hammering one object rarely have samples on it within the same 5 ms. A
//! sample of thread A on object O is *concurrent* when another thread B of its process
//!
//! - was on a CPU at that moment: B has a sample (on anything) within [`Overlap::new`]'s
//!   `window_ns` (one sampling period; CPU-wide sampling takes one sample per CPU per period,
//!   so a thread running on another CPU then has one there), and
//! - was working on O in the same tens of milliseconds: B has a sample on O within
//!   [`OBJECT_WINDOW_NS`] of it, an estimate of B's rate of touches on O around that moment.
//!
//! When the object is not known (or is immortal: its reference count is never written), the
//! sample is not concurrent: two threads merely running the same function touch different
//! objects far more often than the same one, and counting them made any parallel loop look
//! contended once every load of the refcount machinery counts as a refcount stall.
//!
//! Samples arrive ring by ring (per CPU), so slightly out of time order: they are held for a
//! short horizon before they are decided.

use std::collections::VecDeque;

/// What a sample was working on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Touch {
    pub pid: u32,
    pub tid: u32,
    /// Address of the object its instruction names (0: unknown).
    pub object: u64,
    /// Address of the innermost Python code object (0: no Python frame).
    pub code: u64,
}

impl Touch {
    fn same_object(&self, other: &Touch) -> bool {
        self.object != 0 && self.object == other.object
    }
}

/// How far apart in time two threads' samples on one object may be for the threads to count as
/// working on it at the same time (either side).
pub const OBJECT_WINDOW_NS: u64 = 50_000_000;

#[derive(Clone)]
struct Held {
    time: u64,
    key: u32,
    touch: Touch,
    /// Other threads on a CPU at that moment.
    on_cpu: Vec<u32>,
    /// Other threads working on the same object (or function) around that moment.
    on_it: Vec<u32>,
}

impl Held {
    fn concurrent(&self) -> bool {
        self.on_it.iter().any(|t| self.on_cpu.contains(t))
    }
}

fn note(v: &mut Vec<u32>, tid: u32) {
    if !v.contains(&tid) {
        v.push(tid);
    }
}

/// How long samples are held for out-of-order arrivals from other CPUs' rings when the source
/// does not say how far it has drained ([`Overlap::release`]): ftprof drains at least every
/// 10 ms on an idle machine, but a target that keeps every CPU busy can delay it by hundreds.
const HOLD_NS: u64 = 2_000_000_000;

/// See the module documentation.
#[derive(Clone)]
pub struct Overlap {
    window_ns: u64,
    object_window_ns: u64,
    held: VecDeque<Held>,
    latest: u64,
}

impl Overlap {
    /// `window_ns`: how close in time two samples must be for their threads to have been on CPUs
    /// at the same moment (one sampling period).
    pub fn new(window_ns: u64) -> Overlap {
        Overlap { window_ns, object_window_ns: OBJECT_WINDOW_NS.max(window_ns), held: VecDeque::new(), latest: 0 }
    }

    /// Add a sample of key `key`; returns the samples decided now, as `(key, concurrent)`.
    pub fn push(&mut self, time: u64, key: u32, touch: Touch, out: &mut Vec<(u32, bool)>) {
        let mut me = Held { time, key, touch, on_cpu: Vec::new(), on_it: Vec::new() };
        for h in self.held.iter_mut() {
            if h.touch.pid != touch.pid || h.touch.tid == touch.tid {
                continue;
            }
            let dt = h.time.abs_diff(time);
            if dt <= self.window_ns {
                note(&mut me.on_cpu, h.touch.tid);
                note(&mut h.on_cpu, touch.tid);
            }
            if dt <= self.object_window_ns && touch.same_object(&h.touch) {
                note(&mut me.on_it, h.touch.tid);
                note(&mut h.on_it, touch.tid);
            }
        }
        self.held.push_back(me);
        self.latest = self.latest.max(time);
        // Without word from the source (`release`), samples are held for a bounded time: a
        // source that drains its rings late (ftprof itself kept off the CPUs by a busy
        // target) then decides too early, never unboundedly late.
        self.decide_before(self.latest.saturating_sub(self.object_window_ns + HOLD_NS), out);
    }

    /// Every sample up to `upto` has been pushed (the source drained all its rings up to
    /// then): decide those that no later sample can still change.
    pub fn release(&mut self, upto: u64, out: &mut Vec<(u32, bool)>) {
        self.decide_before(upto.saturating_sub(self.object_window_ns), out);
    }

    fn decide_before(&mut self, horizon: u64, out: &mut Vec<(u32, bool)>) {
        // Held in arrival order, roughly in time order: decided from the front.
        while self.held.front().is_some_and(|h| h.time < horizon) {
            let h = self.held.pop_front().expect("checked");
            out.push((h.key, h.concurrent()));
        }
    }

    /// Decide every sample still held.
    pub fn flush(&mut self, out: &mut Vec<(u32, bool)>) {
        out.extend(self.held.drain(..).map(|h| (h.key, h.concurrent())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn t(tid: u32, object: u64, code: u64) -> Touch {
        Touch { pid: 1, tid, object, code }
    }

    fn run(samples: &[(u64, u32, Touch)]) -> Vec<(u32, bool)> {
        let mut o = Overlap::new(5 * MS);
        let mut out = Vec::new();
        for &(time, key, touch) in samples {
            o.push(time, key, touch, &mut out);
        }
        o.flush(&mut out);
        out.sort();
        out
    }

    #[test]
    fn one_thread_alone_is_never_concurrent() {
        let s: Vec<_> = (0..100).map(|i| (i * 5 * MS, 1, t(10, 0xa0, 0xc0))).collect();
        assert!(run(&s).iter().all(|&(_, c)| !c));
    }

    #[test]
    fn two_threads_on_one_object_at_once_are_concurrent_both_ways() {
        // Thread 11's sample arrives first although it is later (another CPU's ring).
        let s = [(12 * MS, 2, t(11, 0xa0, 0xc1)), (10 * MS, 1, t(10, 0xa0, 0xc0))];
        assert_eq!(run(&s), vec![(1, true), (2, true)]);
        // 40 ms apart, each thread on a CPU at the other's moment (samples on other things).
        let s = [
            (10 * MS, 1, t(10, 0xa0, 0xc0)),
            (11 * MS, 3, t(11, 0xb0, 0xc1)),
            (50 * MS, 2, t(11, 0xa0, 0xc1)),
            (51 * MS, 4, t(10, 0xb1, 0xc0)),
        ];
        assert_eq!(run(&s), vec![(1, true), (2, true), (3, false), (4, false)]);
    }

    #[test]
    fn other_objects_other_times_and_other_processes_do_not_count() {
        let s = [
            (10 * MS, 1, t(10, 0xa0, 0xc0)),
            (11 * MS, 2, t(11, 0xb0, 0xc0)), // another object
            (90 * MS, 3, t(12, 0xa0, 0xc0)), // 80 ms later
            (10 * MS, 4, Touch { pid: 2, tid: 13, object: 0xa0, code: 0xc0 }), // another process
            (10 * MS, 5, t(10, 0xa0, 0xc0)), // the same thread
        ];
        assert!(run(&s).iter().all(|&(_, c)| !c), "{:?}", run(&s));
    }

    #[test]
    fn without_a_known_object_running_the_same_function_is_not_contention() {
        // Two threads in one parallel loop at the same moment, objects unknown (or immortal):
        // not contention. A known shared object in the same function still is.
        let s = [(10 * MS, 1, t(10, 0, 0xc0)), (13 * MS, 2, t(11, 0, 0xc0)), (13 * MS, 3, t(12, 0, 0xc9))];
        assert_eq!(run(&s), vec![(1, false), (2, false), (3, false)]);
        let s = [(10 * MS, 1, t(10, 0xa0, 0xc0)), (13 * MS, 2, t(11, 0xa0, 0xc0)), (13 * MS, 3, t(12, 0, 0xc0))];
        assert_eq!(run(&s), vec![(1, true), (2, true), (3, false)]);
    }

    /// Decided once the source has drained past them (by the object window), else after a
    /// bounded hold.
    #[test]
    fn samples_are_decided_once_past_the_horizon() {
        let mut o = Overlap::new(5 * MS);
        let mut out = Vec::new();
        o.push(0, 1, t(10, 0xa0, 0xc0), &mut out);
        o.push(100 * MS, 2, t(10, 0xa0, 0xc0), &mut out);
        assert!(out.is_empty());
        o.release(49 * MS, &mut out);
        assert!(out.is_empty(), "a sample within the object window may still come");
        o.release(51 * MS, &mut out);
        assert_eq!(out, vec![(1, false)]);
        // No word from the source: held for the object window and HOLD_NS.
        o.push(100 * MS + OBJECT_WINDOW_NS + HOLD_NS, 3, t(10, 0xa0, 0xc0), &mut out);
        assert_eq!(out, vec![(1, false)]);
        o.push(101 * MS + OBJECT_WINDOW_NS + HOLD_NS, 4, t(10, 0xa0, 0xc0), &mut out);
        assert_eq!(out, vec![(1, false), (2, false)]);
    }

    /// ftprof drained its rings late (kept off the CPUs by a busy target): one CPU's ring brings
    /// 300 ms of thread 10's samples, then the other's brings thread 11's of the same time. Until
    /// the source says it drained past them, none is decided, so they pair.
    #[test]
    fn a_late_drain_of_one_ring_still_pairs_with_the_other() {
        let mut o = Overlap::new(5 * MS);
        let mut out = Vec::new();
        for i in 0..60u64 {
            o.push(i * 5 * MS, 1, t(10, 0xa0, 0xc0), &mut out);
        }
        for i in 0..60u64 {
            o.push(i * 5 * MS + 2 * MS, 2, t(11, 0xa0, 0xc1), &mut out);
        }
        o.release(u64::MAX, &mut out);
        assert_eq!(out.len(), 120);
        assert!(out.iter().all(|&(_, c)| c), "{out:?}");
    }

    /// Two threads that each spend a few per cent of their samples on one object, both on CPUs
    /// the whole time: their samples on it rarely fall within one period of each other, but
    /// within the same tens of milliseconds they do.
    #[test]
    fn two_threads_on_one_object_in_the_same_tens_of_milliseconds_are_concurrent() {
        // Threads 10 and 11 sample every 5 ms, each on the object once every 30 ms, 15 ms apart.
        let mut s = Vec::new();
        for i in 0..60u64 {
            let t0 = i * 5 * MS;
            let a_on = i % 6 == 0;
            let b_on = i % 6 == 3;
            s.push((t0, if a_on { 1 } else { 0 }, t(10, if a_on { 0xa0 } else { 0xb0 + i }, 0xc0)));
            s.push((t0 + MS, if b_on { 2 } else { 0 }, t(11, if b_on { 0xa0 } else { 0xd0 + i }, 0xc1)));
        }
        let out = run(&s);
        let on_object: Vec<_> = out.iter().filter(|o| o.0 != 0).collect();
        assert_eq!(on_object.len(), 20);
        assert!(on_object.iter().all(|o| o.1), "{on_object:?}");
    }

    /// The other thread touched the object nearby but was off CPU at that moment (preempted,
    /// blocked): no contention then.
    #[test]
    fn a_thread_off_cpu_at_the_moment_does_not_count() {
        let s = [
            (0, 2, t(11, 0xa0, 0xc1)),
            (30 * MS, 1, t(10, 0xa0, 0xc0)),
            // Thread 11 has no sample within a period of 30 ms.
            (31 * MS, 3, t(12, 0xe0, 0xc2)),
        ];
        assert_eq!(run(&s), vec![(1, false), (2, false), (3, false)]);
        // With a sample of thread 11 (on something else) at 31 ms, it was on a CPU: concurrent.
        let s = [(0, 2, t(11, 0xa0, 0xc1)), (30 * MS, 1, t(10, 0xa0, 0xc0)), (31 * MS, 3, t(11, 0xe0, 0xc2))];
        assert_eq!(run(&s), vec![(1, true), (2, false), (3, false)]);
    }
}
