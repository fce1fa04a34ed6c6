//! Off-CPU intervals: pairing switch-out and switch-in records per thread, and attaching the
//! observation (a stack) that explains each interval.
//!
//! Every `PERF_RECORD_SWITCH` of the target is seen, so each thread's off-CPU intervals and
//! whether it was preempted (still runnable) or blocked are exact. What the thread was blocked
//! *on* comes from observations, which are either
//!
//! * **exact**: a sample taken at every switch-out (`--exact-waits`); it arrives just before
//!   or just after its switch-out record and belongs to the interval that record starts; or
//! * **sampled**: a snapshot of a blocked thread taken at a periodic tick (wall-clock sampling).
//!   A tick sees an interval of length `d` with probability `min(1, d / gap)` (`gap` = time since
//!   the previous tick), so an observed interval stands for `max(d, gap)` of waiting and
//!   `max(1, gap / d)` waits ([`Interval::weight`]): an unbiased (Horvitz–Thompson) estimate.
//!   Only the first observation of an interval is kept: the thread cannot change what it waits
//!   on without running.
//!
//! The tracker is a pure state machine over timestamps: [`OffCpuTracker::switch_out`],
//! [`OffCpuTracker::switch_in`], [`OffCpuTracker::observe`], [`OffCpuTracker::exit`],
//! [`OffCpuTracker::lost`] and [`OffCpuTracker::finish`] produce [`Interval`]s, which the caller
//! drains with [`OffCpuTracker::take_intervals`]. Events of one thread must be fed in time order
//! (the caller sorts what it drains from the per-CPU rings).

use std::collections::HashMap;

/// An exact observation and its switch-out record are emitted by the same scheduler call:
/// they pair when they are at most this far apart.
pub const PAIR_WINDOW_NS: u64 = 50_000;

/// Where a thread is, as far as the switch records say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// Not known (before its first record, or after lost records).
    Unknown,
    /// Running since this time.
    On { since: u64 },
    /// Off CPU since this time; `preempted`: still runnable (preempted or yielding).
    Off { since: u64, preempted: bool },
}

/// What explains an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed<P> {
    pub time: u64,
    pub payload: P,
    /// Taken at the switch-out itself (every interval gets one) rather than by a periodic tick.
    pub exact: bool,
    /// Sampled observations: time since the previous tick (the sampling interval it stands for).
    pub gap_ns: u64,
}

/// How an interval ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntervalEnd {
    /// The thread ran again.
    SwitchIn,
    /// The thread exited while off CPU.
    Exit,
    /// The recording ended while the thread was off CPU.
    RecordingEnd,
}

/// One off-CPU interval of one thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval<P> {
    pub tid: u32,
    pub start: u64,
    pub end: u64,
    pub preempted: bool,
    pub observed: Option<Observed<P>>,
    pub ended: IntervalEnd,
}

/// What an observed interval stands for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weight {
    /// Off-CPU time (ns) this interval stands for.
    pub time_ns: f64,
    /// Number of intervals it stands for.
    pub count: f64,
}

impl<P> Interval<P> {
    pub fn duration_ns(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// The estimate this observed interval contributes (see the module documentation).
    pub fn weight(&self) -> Weight {
        let d = self.duration_ns();
        match &self.observed {
            Some(o) if !o.exact && o.gap_ns > d => {
                Weight { time_ns: o.gap_ns as f64, count: o.gap_ns as f64 / d.max(1) as f64 }
            }
            _ => Weight { time_ns: d as f64, count: 1.0 },
        }
    }
}

/// Counters of what the tracker could not use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Observations that matched no off-CPU interval (the thread was running by then).
    pub unmatched_observations: u64,
    /// Open intervals discarded because switch records were lost while they were open.
    pub discarded_intervals: u64,
    /// A switch-out followed by another switch-out (a switch-in was missed).
    pub out_of_order: u64,
}

#[derive(Clone)]
struct Track<P> {
    state: ThreadState,
    observed: Option<Observed<P>>,
    /// An exact observation that arrived before its switch-out record.
    early: Option<Observed<P>>,
}

impl<P> Default for Track<P> {
    fn default() -> Self {
        Track { state: ThreadState::Unknown, observed: None, early: None }
    }
}

/// Per-thread off-CPU state machine.
#[derive(Clone)]
pub struct OffCpuTracker<P> {
    threads: HashMap<u32, Track<P>>,
    done: Vec<Interval<P>>,
    pub stats: TrackerStats,
}

impl<P> Default for OffCpuTracker<P> {
    fn default() -> Self {
        OffCpuTracker { threads: HashMap::new(), done: Vec::new(), stats: TrackerStats::default() }
    }
}

impl<P> OffCpuTracker<P> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn state(&self, tid: u32) -> ThreadState {
        self.threads.get(&tid).map_or(ThreadState::Unknown, |t| t.state)
    }

    /// Declare a thread blocked since `since` without having seen its switch-out (it was
    /// already blocked when recording started).
    pub fn assume_blocked(&mut self, tid: u32, since: u64) {
        let t = self.threads.entry(tid).or_default();
        if t.state == ThreadState::Unknown {
            t.state = ThreadState::Off { since, preempted: false };
            t.observed = None;
        }
    }

    pub fn switch_out(&mut self, tid: u32, time: u64, preempted: bool) {
        let t = self.threads.entry(tid).or_default();
        if let ThreadState::Off { .. } = t.state {
            // The switch-in in between was not seen: the open interval cannot be trusted.
            self.stats.out_of_order += 1;
        }
        t.state = ThreadState::Off { since: time, preempted };
        t.observed = None;
        if let Some(e) = t.early.take() {
            if e.time.abs_diff(time) <= PAIR_WINDOW_NS {
                t.observed = Some(e);
            } else {
                self.stats.unmatched_observations += 1;
            }
        }
    }

    pub fn switch_in(&mut self, tid: u32, time: u64) {
        let t = self.threads.entry(tid).or_default();
        if let ThreadState::Off { since, preempted } = t.state {
            self.done.push(Interval {
                tid,
                start: since,
                end: time.max(since),
                preempted,
                observed: t.observed.take(),
                ended: IntervalEnd::SwitchIn,
            });
        }
        t.state = ThreadState::On { since: time };
        t.observed = None;
    }

    /// An observation of `tid` (see [`Observed`]).
    pub fn observe(&mut self, tid: u32, obs: Observed<P>) {
        let t = self.threads.entry(tid).or_default();
        match t.state {
            ThreadState::Off { since, .. } if obs.time.saturating_add(PAIR_WINDOW_NS) >= since => {
                if t.observed.is_none() {
                    t.observed = Some(obs);
                }
            }
            // An exact observation can precede its switch-out record.
            ThreadState::On { .. } | ThreadState::Unknown if obs.exact => {
                if t.early.replace(obs).is_some() {
                    self.stats.unmatched_observations += 1;
                }
            }
            _ => self.stats.unmatched_observations += 1,
        }
    }

    /// The thread exited at `time`.
    pub fn exit(&mut self, tid: u32, time: u64) {
        if let Some(mut t) = self.threads.remove(&tid) {
            if let ThreadState::Off { since, preempted } = t.state {
                self.done.push(Interval {
                    tid,
                    start: since,
                    end: time.max(since),
                    preempted,
                    observed: t.observed.take(),
                    ended: IntervalEnd::Exit,
                });
            }
            if t.early.is_some() {
                self.stats.unmatched_observations += 1;
            }
        }
    }

    /// Switch records were lost (ring buffer full): every thread's state is unknown until its
    /// next record, and open intervals are discarded (their end or start may be missing).
    pub fn lost(&mut self) {
        for t in self.threads.values_mut() {
            if let ThreadState::Off { .. } = t.state {
                self.stats.discarded_intervals += 1;
            }
            t.state = ThreadState::Unknown;
            t.observed = None;
            t.early = None;
        }
    }

    /// Close every open interval at `end` (the end of the recording).
    pub fn finish(&mut self, end: u64) {
        let mut tids: Vec<u32> = self.threads.keys().copied().collect();
        tids.sort_unstable();
        for tid in tids {
            let t = self.threads.get_mut(&tid).expect("present");
            if let ThreadState::Off { since, preempted } = t.state {
                self.done.push(Interval {
                    tid,
                    start: since,
                    end: end.max(since),
                    preempted,
                    observed: t.observed.take(),
                    ended: IntervalEnd::RecordingEnd,
                });
                t.state = ThreadState::Unknown;
            }
            if t.early.take().is_some() {
                self.stats.unmatched_observations += 1;
            }
        }
    }

    /// Intervals completed so far (in completion order).
    pub fn take_intervals(&mut self) -> Vec<Interval<P>> {
        std::mem::take(&mut self.done)
    }
}

#[cfg(test)]
mod tests {
    //! Timelines: one character per microsecond. `=` running, `_` blocked, `-` preempted
    //! (runnable), `*` blocked and observed by a tick at that moment, `x` exit. An exact
    //! observation is given separately as a time.

    use super::*;

    #[derive(Debug)]
    enum Ev {
        Out(u64, bool),
        In(u64),
        Obs(u64, &'static str),
        Exit(u64),
    }

    const US: u64 = 1000;

    /// Events of one thread's timeline (observations carry the label "tick", gap = `gap_us`).
    fn events(timeline: &str) -> Vec<Ev> {
        let mut ev = Vec::new();
        let mut prev = '=';
        for (i, c) in timeline.chars().enumerate() {
            let t = i as u64 * US;
            let off = |c: char| matches!(c, '_' | '-' | '*');
            if c == 'x' {
                ev.push(Ev::Exit(t));
                break;
            }
            if off(c) && !off(prev) {
                ev.push(Ev::Out(t, c == '-'));
            } else if off(c) && off(prev) && (c == '-') != (prev == '-') {
                // blocked → preempted without running is not a thing; treat as a new switch-out
                ev.push(Ev::In(t));
                ev.push(Ev::Out(t, c == '-'));
            }
            if !off(c) && off(prev) {
                ev.push(Ev::In(t));
            }
            if c == '*' {
                ev.push(Ev::Obs(t, "tick"));
            }
            prev = c;
        }
        ev
    }

    fn run(timeline: &str, gap_us: u64) -> (Vec<Interval<&'static str>>, TrackerStats) {
        let mut tr = OffCpuTracker::new();
        tr.switch_in(1, 0);
        for e in events(timeline) {
            match e {
                Ev::Out(t, p) => tr.switch_out(1, t, p),
                Ev::In(t) => tr.switch_in(1, t),
                Ev::Obs(t, p) => tr.observe(1, Observed { time: t, payload: p, exact: false, gap_ns: gap_us * US }),
                Ev::Exit(t) => tr.exit(1, t),
            }
        }
        tr.finish(timeline.len() as u64 * US);
        (tr.take_intervals(), tr.stats)
    }

    fn spans(iv: &[Interval<&str>]) -> Vec<(u64, u64, bool, bool)> {
        iv.iter().map(|i| (i.start / US, i.end / US, i.preempted, i.observed.is_some())).collect()
    }

    #[test]
    fn pairs_out_and_in() {
        let (iv, st) = run("==___==__====", 10);
        assert_eq!(spans(&iv), vec![(2, 5, false, false), (7, 9, false, false)]);
        assert_eq!(st, TrackerStats::default());
    }

    #[test]
    fn preemption_is_kept_apart() {
        let (iv, _) = run("==---==___=", 10);
        assert_eq!(spans(&iv), vec![(2, 5, true, false), (7, 10, false, false)]);
    }

    #[test]
    fn a_tick_observes_the_interval_it_falls_in_and_only_the_first_counts() {
        let (iv, st) = run("==_*_*__==__=", 4);
        assert_eq!(spans(&iv), vec![(2, 8, false, true), (10, 12, false, false)]);
        assert_eq!(iv[0].observed.as_ref().unwrap().time, 3 * US);
        assert_eq!(st.unmatched_observations, 0);
        // 6 µs observed by a 4 µs tick: its own length, one interval.
        assert_eq!(iv[0].weight(), Weight { time_ns: 6000.0, count: 1.0 });
    }

    #[test]
    fn a_short_observed_interval_stands_for_the_whole_gap() {
        // 2 µs interval seen by a tick every 8 µs: 8 µs of waiting, 4 such intervals.
        let (iv, _) = run("===_*=====", 8);
        assert_eq!(iv[0].weight(), Weight { time_ns: 8000.0, count: 4.0 });
    }

    #[test]
    fn thread_exiting_while_off_cpu() {
        let (iv, _) = run("==____x", 10);
        assert_eq!(spans(&iv), vec![(2, 6, false, false)]);
        assert_eq!(iv[0].ended, IntervalEnd::Exit);
    }

    #[test]
    fn recording_end_closes_open_intervals() {
        let (iv, _) = run("==__*_", 10);
        assert_eq!(spans(&iv), vec![(2, 6, false, true)]);
        assert_eq!(iv[0].ended, IntervalEnd::RecordingEnd);
    }

    #[test]
    fn observation_while_running_is_not_attached() {
        let mut tr: OffCpuTracker<&str> = OffCpuTracker::new();
        tr.switch_in(1, 0);
        tr.observe(1, Observed { time: 5, payload: "late", exact: false, gap_ns: 10 });
        tr.switch_out(1, 10, false);
        tr.switch_in(1, 20);
        let iv = tr.take_intervals();
        assert!(iv[0].observed.is_none());
        assert_eq!(tr.stats.unmatched_observations, 1);
    }

    #[test]
    fn exact_sample_before_or_after_its_switch_record() {
        let mut tr = OffCpuTracker::new();
        let obs = |t, p| Observed { time: t, payload: p, exact: true, gap_ns: 0 };
        tr.switch_in(7, 0);
        // Sample first, record 300 ns later.
        tr.observe(7, obs(1_000, "before"));
        tr.switch_out(7, 1_300, false);
        tr.switch_in(7, 5_000);
        // Record first, sample 200 ns later.
        tr.switch_out(7, 9_000, false);
        tr.observe(7, obs(9_200, "after"));
        tr.switch_in(7, 12_000);
        let iv = tr.take_intervals();
        assert_eq!(iv.len(), 2);
        assert_eq!(iv[0].observed.as_ref().unwrap().payload, "before");
        assert_eq!(iv[0].weight(), Weight { time_ns: 3_700.0, count: 1.0 });
        assert_eq!(iv[1].observed.as_ref().unwrap().payload, "after");
        assert_eq!(tr.stats.unmatched_observations, 0);
    }

    #[test]
    fn exact_sample_too_far_from_the_record_is_not_paired() {
        let mut tr = OffCpuTracker::new();
        tr.switch_in(7, 0);
        tr.observe(7, Observed { time: 1_000, payload: "stale", exact: true, gap_ns: 0 });
        tr.switch_out(7, 1_000 + PAIR_WINDOW_NS + 1, false);
        tr.switch_in(7, 200_000);
        let iv = tr.take_intervals();
        assert!(iv[0].observed.is_none());
        assert_eq!(tr.stats.unmatched_observations, 1);
    }

    #[test]
    fn lost_records_in_the_middle_discard_open_intervals_and_resync() {
        let mut tr: OffCpuTracker<&str> = OffCpuTracker::new();
        // Thread 1: ==___[lost]___==__==   thread 2 running throughout the loss.
        tr.switch_in(1, 0);
        tr.switch_in(2, 0);
        tr.switch_out(1, 2 * US, false);
        tr.lost();
        // The switch-in of thread 1 after the loss closes nothing (its start is not trusted).
        tr.switch_in(1, 8 * US);
        tr.switch_out(1, 10 * US, false);
        tr.switch_in(1, 12 * US);
        tr.switch_out(2, 13 * US, true);
        tr.switch_in(2, 14 * US);
        let iv = tr.take_intervals();
        assert_eq!(
            iv.iter().map(|i| (i.tid, i.start / US, i.end / US)).collect::<Vec<_>>(),
            vec![(1, 10, 12), (2, 13, 14)]
        );
        assert_eq!(tr.stats.discarded_intervals, 1);
    }

    #[test]
    fn missed_switch_in_is_counted() {
        let mut tr: OffCpuTracker<&str> = OffCpuTracker::new();
        tr.switch_in(1, 0);
        tr.switch_out(1, 10, false);
        tr.switch_out(1, 30, false);
        tr.switch_in(1, 40);
        let iv = tr.take_intervals();
        assert_eq!(iv.len(), 1);
        assert_eq!((iv[0].start, iv[0].end), (30, 40));
        assert_eq!(tr.stats.out_of_order, 1);
    }

    #[test]
    fn assumed_blocked_thread_closes_at_its_first_switch_in() {
        let mut tr: OffCpuTracker<&str> = OffCpuTracker::new();
        tr.assume_blocked(4, 100);
        tr.observe(4, Observed { time: 100, payload: "attach snapshot", exact: true, gap_ns: 0 });
        tr.switch_in(4, 900);
        let iv = tr.take_intervals();
        assert_eq!((iv[0].start, iv[0].end), (100, 900));
        assert_eq!(iv[0].observed.as_ref().unwrap().payload, "attach snapshot");
    }

    /// The estimate is unbiased: many short intervals seen by a regular tick add up to their
    /// true total on average.
    #[test]
    fn sampled_estimate_matches_truth_over_many_intervals() {
        let mut tr: OffCpuTracker<u32> = OffCpuTracker::new();
        let gap = 1_000_000u64; // 1 ms tick
        let mut t = 0u64;
        let mut truth = 0u64;
        let mut next_tick = 0u64;
        // Deterministic pseudo-random interval lengths between 10 and 400 µs, runs of 50–300 µs.
        let mut x: u64 = 12345;
        let mut rnd = |lo: u64, hi: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lo + x % (hi - lo)
        };
        tr.switch_in(1, 0);
        for _ in 0..20_000 {
            t += rnd(50_000, 300_000);
            let d = rnd(10_000, 400_000);
            tr.switch_out(1, t, false);
            while next_tick < t {
                next_tick += gap;
            }
            if next_tick < t + d {
                tr.observe(1, Observed { time: next_tick, payload: 0, exact: false, gap_ns: gap });
            }
            t += d;
            truth += d;
            tr.switch_in(1, t);
        }
        let est: f64 = tr.take_intervals().iter().filter(|i| i.observed.is_some()).map(|i| i.weight().time_ns).sum();
        let err = (est - truth as f64).abs() / truth as f64;
        assert!(err < 0.03, "estimate {est} vs truth {truth}: {err}");
    }
}
