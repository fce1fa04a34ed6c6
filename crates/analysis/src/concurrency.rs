//! Contention means concurrency: which CPU samples ran while another thread of the same process
//! was on a CPU *touching the same thing* at the same moment.
//!
//! A refcount update on an object another thread owns is an atomic instruction whether or not
//! anyone else touches the object; it only becomes contention (the cache line bouncing between
//! cores) when other threads update the same object at the same time. Each CPU sample says which
//! thread was on which CPU at its time, and what the thread was working on: the object its
//! current instruction names (see `symbolizer::python::operand`) and the function (code object)
//! it was running. A sample is *concurrent* when another thread of its process has a sample
//! within one sampling period of it (CPU-wide sampling takes one sample per CPU per period, so
//! a thread running on another CPU at that moment has one there) on the same object, or, when
//! the object is not known, in the same function.
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
    fn overlaps(&self, other: &Touch) -> bool {
        self.pid == other.pid
            && self.tid != other.tid
            && ((self.object != 0 && self.object == other.object)
                || ((self.object == 0 || other.object == 0) && self.code != 0 && self.code == other.code))
    }
}

#[derive(Clone)]
struct Held {
    time: u64,
    key: u32,
    touch: Touch,
    concurrent: bool,
}

/// How long samples are held for out-of-order arrivals from other CPUs' rings (they are drained
/// at least every 10 ms).
const REORDER_NS: u64 = 50_000_000;

/// See the module documentation.
#[derive(Clone)]
pub struct Overlap {
    window_ns: u64,
    held: VecDeque<Held>,
    latest: u64,
}

impl Overlap {
    /// `window_ns`: how close in time two samples must be (one sampling period).
    pub fn new(window_ns: u64) -> Overlap {
        Overlap { window_ns, held: VecDeque::new(), latest: 0 }
    }

    /// Add a sample of key `key`; returns the samples decided now, as `(key, concurrent)`.
    pub fn push(&mut self, time: u64, key: u32, touch: Touch, out: &mut Vec<(u32, bool)>) {
        let mut concurrent = false;
        if touch.code != 0 || touch.object != 0 {
            for h in self.held.iter_mut() {
                if h.time.abs_diff(time) <= self.window_ns && touch.overlaps(&h.touch) {
                    h.concurrent = true;
                    concurrent = true;
                }
            }
        }
        self.held.push_back(Held { time, key, touch, concurrent });
        self.latest = self.latest.max(time);
        let horizon = self.latest.saturating_sub(self.window_ns + REORDER_NS);
        while self.held.front().is_some_and(|h| h.time < horizon) {
            let h = self.held.pop_front().expect("checked");
            out.push((h.key, h.concurrent));
        }
    }

    /// Decide every sample still held.
    pub fn flush(&mut self, out: &mut Vec<(u32, bool)>) {
        out.extend(self.held.drain(..).map(|h| (h.key, h.concurrent)));
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
    }

    #[test]
    fn other_objects_other_times_and_other_processes_do_not_count() {
        let s = [
            (10 * MS, 1, t(10, 0xa0, 0xc0)),
            (11 * MS, 2, t(11, 0xb0, 0xc0)), // another object
            (30 * MS, 3, t(12, 0xa0, 0xc0)), // 20 ms later
            (10 * MS, 4, Touch { pid: 2, tid: 13, object: 0xa0, code: 0xc0 }), // another process
            (10 * MS, 5, t(10, 0xa0, 0xc0)), // the same thread
        ];
        assert!(run(&s).iter().all(|&(_, c)| !c), "{:?}", run(&s));
    }

    #[test]
    fn without_an_object_the_same_function_counts() {
        let s = [(10 * MS, 1, t(10, 0, 0xc0)), (13 * MS, 2, t(11, 0xa0, 0xc0)), (13 * MS, 3, t(12, 0, 0xc9))];
        assert_eq!(run(&s), vec![(1, true), (2, true), (3, false)]);
    }

    #[test]
    fn samples_are_decided_once_past_the_horizon() {
        let mut o = Overlap::new(5 * MS);
        let mut out = Vec::new();
        o.push(0, 1, t(10, 0xa0, 0xc0), &mut out);
        assert!(out.is_empty());
        o.push(100 * MS, 2, t(10, 0xa0, 0xc0), &mut out);
        assert_eq!(out, vec![(1, false)]);
    }
}
