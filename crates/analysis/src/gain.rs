//! Predicted gain: how much faster the recorded run would have finished had one contention (a
//! category, or one lock or object) not been there — computed from the recording, from the time
//! the waits or stalls cost on the critical path, not from their share of thread time.
//!
//! # The model
//!
//! For each thread `i` of the recording, from its stacks:
//!
//! - `cpu_i`: its CPU time (samples × period, every on-CPU category, stalls included);
//! - `wait_i`: its time blocked on anything but a notification or a join (locks, critical
//!   sections, I/O, sleeps, …) — time it needed, not time it waited for others to finish;
//! - `runq_i`: its time runnable but not running (no CPU free);
//! - `xc_i`, `xw_i`: the part of `cpu_i` and `wait_i` the contention stands for (its CPU
//!   samples — refcount stalls, spins — and its off-CPU waits).
//!
//! Each thread was active for `T_i = cpu_i / a_i + wait_i`. When the process has more running
//! threads than CPUs, `a_i = cpu_i / (cpu_i + runq_i)` is how often the thread got a CPU when it
//! was runnable, and its CPU time stretches by `1 / a_i`; otherwise its time waiting for a CPU is
//! the machine's other load, not the program's, and is left out (`a_i = 1`). Without the
//! contention the same work takes it `T'_i = (cpu_i − xc_i) / a_i + wait_i − xw_i`, so it works
//! `g_i = T_i / T'_i` times faster. The run's throughput is the threads' work together, each
//! weighed by the work it did (its CPU time outside the contention, `w_i = cpu_i − xc_i`):
//!
//! `gain = min(Σ w_i g_i, N · W) / Σ w_i`
//!
//! where the bound `N · W` is the CPU time the `N` CPUs it could use (the machine's CPUs, at most
//! one per thread) offer in the run's wall time `W = max_i T_i`: removing waits makes the threads
//! want more CPU at once, and a lock that serialised the work on a machine with one CPU gains
//! nothing. The factor is a throughput gain (work per second); for a fixed amount of work split
//! evenly between the threads it is also the wall-time gain.
//!
//! # Assumptions (where the prediction can be wrong)
//!
//! - Removing the contention removes exactly its sampled time: the threads then do the same
//!   work, and nothing else slows down in its place (a lock removed can uncover contention on
//!   the next shared thing; the prediction is then too high).
//! - The waits are on the threads' own path: a thread that waits and then has nothing to do anyway
//!   (a consumer waiting on a lock its producer holds) gains nothing in truth, but the model
//!   credits it. A thread that holds a lock across a sleep or I/O loses nothing while others wait
//!   on it; its sleep stays.
//! - A refcount stall's cost is the time of the samples in the refcount machinery. Cache-line
//!   bouncing also slows other instructions that touch the object's line (its type lookup,
//!   neighbouring fields), which are sampled as ordinary Python time: for refcount contention
//!   the prediction is a lower bound.
//! - The prediction is for the program on its CPUs: time other processes took from it (waiting for
//!   a CPU while it had no more threads than CPUs) is left out, so on a loaded machine the gain
//!   seen can be smaller.
//!
//! The interval is the sampling error of the contention's time: with `n` samples and observed
//! waits behind it, its time is known to about `±2/√n` (relative), and the gain is computed at
//! both ends.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::profile::Profile;
use crate::wait::Category;

/// A predicted gain: the factor by which the run would be faster (1.0: none), with an interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gain {
    pub factor: f64,
    pub low: f64,
    pub high: f64,
}

/// One thread's time in a recording (µs), and the part of it one contention stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThreadTime {
    pub cpu_us: f64,
    pub wait_us: f64,
    pub runqueue_us: f64,
    pub removed_cpu_us: f64,
    pub removed_wait_us: f64,
}

/// What is removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every sample and wait of a category.
    Category(Category),
    /// One lock or object: the lock table's `kind` and `description`.
    Lock { kind: Category, description: String },
    /// The profile's stacks at these indices (a finding's evidence).
    Stacks(Vec<usize>),
}

impl Target {
    fn matches(&self, stack: usize, category: Category, frame_names: &[&str]) -> bool {
        match self {
            Target::Stacks(v) => v.contains(&stack),
            Target::Category(c) => *c == category,
            Target::Lock { kind, description } => {
                *kind == category && {
                    let want = format!("{}: {description}", kind.name());
                    frame_names.iter().rev().take(3).any(|n| *n == want)
                }
            }
        }
    }
}

/// The gain of removing each thread's `removed_*` time from a run whose threads spent
/// `threads`, with `evidence` samples and observed waits behind the removed time, on a machine
/// of `cpus` CPUs (`None`: one per thread). `None` when the run has no thread time.
pub fn predict(threads: &[ThreadTime], evidence: u64, cpus: Option<usize>) -> Option<Gain> {
    let factor = factor_at(threads, 1.0, cpus)?;
    let rel = 2.0 / (evidence.max(1) as f64).sqrt();
    let low = factor_at(threads, (1.0 - rel).max(0.0), cpus).unwrap_or(factor);
    // The high end removes at most 99 % of a thread's CPU time (the interval stays finite).
    let most = threads
        .iter()
        .filter(|t| t.removed_cpu_us > 0.0)
        .map(|t| 0.99 * t.cpu_us / t.removed_cpu_us)
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let high = factor_at(threads, (1.0 + rel).min(most), cpus).unwrap_or(factor);
    Some(Gain { factor, low: low.min(factor), high: high.max(factor) })
}

/// Threads shorter than this share of the longest are left out of the CPU count (a main thread
/// that only starts and joins the workers).
const ACTIVE_SHARE: f64 = 0.05;

/// The gain with the removed time scaled by `scale`.
fn factor_at(threads: &[ThreadTime], scale: f64, cpus: Option<usize>) -> Option<f64> {
    let longest = threads.iter().map(|t| t.cpu_us + t.wait_us).fold(0.0, f64::max);
    if longest <= 0.0 {
        return None;
    }
    let active = threads.iter().filter(|t| t.cpu_us >= ACTIVE_SHARE * longest).count().max(1);
    let n = cpus.map_or(active, |c| c.clamp(1, active)) as f64;
    // More threads than CPUs: waiting for a CPU is the program's own; else the machine's.
    let oversubscribed = cpus.is_some_and(|c| active > c);
    let share = |t: &ThreadTime| {
        if oversubscribed && t.cpu_us > 0.0 {
            t.cpu_us / (t.cpu_us + t.runqueue_us)
        } else {
            1.0
        }
    };
    let wall = threads.iter().map(|t| t.cpu_us / share(t) + t.wait_us).fold(0.0, f64::max);
    let (mut work, mut faster) = (0.0, 0.0);
    for t in threads {
        let xc = (t.removed_cpu_us * scale).min(t.cpu_us);
        let xw = (t.removed_wait_us * scale).min(t.wait_us);
        let a = share(t);
        let before = t.cpu_us / a + t.wait_us;
        let after = (t.cpu_us - xc) / a + t.wait_us - xw;
        let w = t.cpu_us - xc;
        // A thread with no work left outside the contention adds none to weigh.
        if w <= 0.0 || after <= 0.0 {
            continue;
        }
        work += w;
        faster += w * before / after;
    }
    // All the work was the contention: the gain is not bounded by anything the run shows.
    if work <= 0.0 {
        return None;
    }
    Some(faster.min(n * wall) / work)
}

/// Categories whose off-CPU time a thread needs for its own work (the rest is waiting for
/// others: joins, notifications) — `runqueue` is counted apart.
fn needed_wait(c: Category) -> bool {
    !c.on_cpu() && !matches!(c, Category::Join | Category::Idle | Category::Runqueue)
}

/// Each thread's time in `p`, with the part `target` stands for; and the number of samples and
/// observed waits behind that part.
pub fn thread_times(p: &Profile, target: &Target) -> (Vec<ThreadTime>, u64) {
    let period_us = p.summary.period_us();
    let mut by: HashMap<u32, ThreadTime> = HashMap::new();
    let mut evidence = 0;
    for (i, s) in p.stacks.iter().enumerate() {
        let t = by.entry(s.thread).or_default();
        let names: Vec<&str> =
            s.frames.iter().filter_map(|&f| p.frames.get(f as usize)).map(|f| f.name.as_str()).collect();
        let hit = target.matches(i, s.category, &names);
        let cpu = s.samples as f64 * period_us;
        let off = s.wait_us as f64;
        t.cpu_us += cpu;
        if s.category == Category::Runqueue {
            t.runqueue_us += off;
        } else if needed_wait(s.category) {
            t.wait_us += off;
        }
        if hit {
            t.removed_cpu_us += cpu;
            if needed_wait(s.category) {
                t.removed_wait_us += off;
            }
            evidence += s.samples + s.waits.max(u64::from(s.wait_us > 0));
        }
    }
    let mut v: Vec<(u32, ThreadTime)> = by.into_iter().collect();
    v.sort_by_key(|x| x.0);
    (v.into_iter().map(|x| x.1).collect(), evidence)
}

/// The predicted gain of removing `target` from the run recorded in `p`, on a machine of `cpus`
/// CPUs (`None`: one per thread).
pub fn gain(p: &Profile, target: &Target, cpus: Option<usize>) -> Option<Gain> {
    let (threads, evidence) = thread_times(p, target);
    if evidence == 0 {
        return None;
    }
    predict(&threads, evidence, cpus)
}

/// The contention categories and the locks/objects of `p` with their predicted gains, largest
/// first (at most `n`).
pub fn top_gains(p: &Profile, n: usize, cpus: Option<usize>) -> Vec<(Target, Gain)> {
    let mut out: Vec<(Target, Gain)> = Vec::new();
    for c in &p.summary.categories {
        if c.contention && c.time_us > 0 {
            let t = Target::Category(c.category);
            if let Some(g) = gain(p, &t, cpus) {
                out.push((t, g));
            }
        }
    }
    for l in &p.locks {
        if !l.kind.is_contention() {
            continue;
        }
        let t = Target::Lock { kind: l.kind, description: l.description.clone() };
        if let Some(g) = gain(p, &t, cpus) {
            out.push((t, g));
        }
    }
    out.sort_by(|a, b| b.1.factor.total_cmp(&a.1.factor));
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(cpu: f64, wait: f64, runq: f64, xc: f64, xw: f64) -> ThreadTime {
        ThreadTime { cpu_us: cpu, wait_us: wait, runqueue_us: runq, removed_cpu_us: xc, removed_wait_us: xw }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Table: threads, CPUs, expected factor (exact).
    #[test]
    fn gain_table() {
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<ThreadTime>, Option<usize>, f64)> = vec![
            ("nothing removed", vec![t(100.0, 0.0, 0.0, 0.0, 0.0), t(100.0, 0.0, 0.0, 0.0, 0.0)], Some(2), 1.0),
            // Two workers blocked half their time on a lock that serialises them, two CPUs:
            // without it both run at once, twice as fast.
            ("serialised by a lock, two CPUs", vec![t(50.0, 50.0, 0.0, 0.0, 50.0), t(50.0, 50.0, 0.0, 0.0, 50.0)], Some(2), 2.0),
            // The same on one CPU: the CPU was the limit, not the lock.
            ("serialised by a lock, one CPU", vec![t(50.0, 50.0, 0.0, 0.0, 50.0), t(50.0, 50.0, 0.0, 0.0, 50.0)], Some(1), 1.0),
            // On-CPU stalls of 25 % on both threads, two CPUs fully used: 4/3 faster.
            ("refcount stalls, CPU-bound", vec![t(100.0, 0.0, 0.0, 25.0, 0.0), t(100.0, 0.0, 0.0, 25.0, 0.0)], Some(2), 100.0 / 75.0),
            // Three threads on two CPUs, each got a CPU a third of the time; removing a third of
            // the CPU work removes about a third of the wall time.
            ("stalls on an oversubscribed machine", vec![t(100.0, 0.0, 200.0, 33.0, 0.0), t(100.0, 0.0, 200.0, 33.0, 0.0), t(100.0, 0.0, 200.0, 33.0, 0.0)], Some(2), 300.0 / 201.0),
            // One thread waits 80 % of its time: it would do 5 times the work, weighed by the
            // work it does against the other thread's.
            ("waits of one thread", vec![t(10.0, 40.0, 0.0, 0.0, 40.0), t(100.0, 0.0, 0.0, 0.0, 0.0)], Some(2), 150.0 / 110.0),
            // One CPU bounds it: ten times the work of a thread that waited on a lock most of the
            // time cannot exceed what the CPU offers.
            ("bounded by the CPU", vec![t(10.0, 90.0, 0.0, 0.0, 90.0), t(80.0, 0.0, 20.0, 0.0, 0.0)], Some(1), 100.0 / 90.0),
            // Two threads on two CPUs of a machine loaded by others (runqueue): that time is the
            // machine's, left out: a lock wait of 40 on a path of 60 is three times the work.
            ("lock waits on a machine loaded by others", vec![t(20.0, 40.0, 40.0, 0.0, 40.0), t(20.0, 40.0, 40.0, 0.0, 40.0)], Some(2), 3.0),
            // A main thread that only joins is left out of the CPU count: one worker, one CPU.
            ("main thread joining", vec![t(100.0, 0.0, 0.0, 20.0, 0.0), t(1.0, 0.0, 0.0, 0.0, 0.0)], Some(2), 100.0 / 81.0),
            // Unknown CPU count: one per active thread.
            ("CPUs unknown", vec![t(50.0, 50.0, 0.0, 0.0, 50.0), t(50.0, 50.0, 0.0, 0.0, 50.0)], None, 2.0),
        ];
        let mut failures = Vec::new();
        for (name, threads, cpus, want) in &cases {
            let g = predict(threads, 100, *cpus).unwrap();
            if !close(g.factor, *want) {
                failures.push(format!("{name}: expected {want}, got {g:?}"));
            }
            if !(g.low <= g.factor && g.factor <= g.high) {
                failures.push(format!("{name}: interval {g:?} does not hold the factor"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn the_interval_narrows_with_more_evidence() {
        let threads = [t(100.0, 0.0, 0.0, 25.0, 0.0), t(100.0, 0.0, 0.0, 25.0, 0.0)];
        let few = predict(&threads, 4, Some(2)).unwrap();
        let many = predict(&threads, 400, Some(2)).unwrap();
        assert!(close(few.factor, many.factor));
        assert!(few.high - few.low > many.high - many.low, "{few:?} vs {many:?}");
        // 4 samples: ±100 %: from no gain to removing twice the time.
        assert!(close(few.low, 1.0), "{few:?}");
        assert!(close(few.high, 2.0), "{few:?}");
        // 400 samples: ±10 %.
        assert!(close(many.low, 100.0 / 77.5) && close(many.high, 100.0 / 72.5), "{many:?}");
    }

    /// Thread times read from a profile: each thread's CPU samples and waits by category, and
    /// the part one lock (matched by its leaf frame `kind: description`) or one category stands
    /// for.
    #[test]
    fn thread_times_and_gains_from_a_profile() {
        use crate::profile::{Frame, FrameKind, Stack};
        let mut p = Profile::default();
        p.summary.period_ns = 1_000_000; // 1 ms per sample
        let frame = |kind, name: &str| Frame {
            kind,
            name: name.into(),
            file: None,
            line: None,
            start_line: None,
            module: None,
            offset: None,
            inlined: false,
        };
        p.frames = vec![
            frame(FrameKind::Thread, "w1 (1)"),
            frame(FrameKind::Thread, "w2 (2)"),
            frame(FrameKind::Python, "work"),
            frame(FrameKind::Wait, "lock: _thread.lock @ 0x10"),
            frame(FrameKind::Wait, "lock: _thread.lock @ 0x20"),
        ];
        let stack = |thread: u32, frames: Vec<u32>, category, samples, wait_us, waits| Stack {
            thread,
            frames,
            category,
            samples,
            wait_us,
            waits,
        };
        p.stacks = vec![
            stack(1, vec![0, 2], Category::Python, 50, 0, 0),
            stack(1, vec![0, 2, 3], Category::Lock, 0, 40_000, 20),
            stack(1, vec![0, 2, 4], Category::Lock, 0, 10_000, 5),
            stack(2, vec![1, 2], Category::Python, 50, 0, 0),
            stack(2, vec![1, 2, 3], Category::Lock, 0, 40_000, 20),
            stack(2, vec![1, 2], Category::Runqueue, 0, 30_000, 3),
            stack(2, vec![1, 2], Category::Join, 0, 99_000, 1),
        ];
        let one = Target::Lock { kind: Category::Lock, description: "_thread.lock @ 0x10".into() };
        let (threads, evidence) = thread_times(&p, &one);
        assert_eq!(evidence, 40);
        assert_eq!(threads[0], t(50_000.0, 50_000.0, 0.0, 0.0, 40_000.0));
        // Joins are not needed waits; the runqueue is kept apart.
        assert_eq!(threads[1], t(50_000.0, 40_000.0, 30_000.0, 0.0, 40_000.0));
        // Two CPUs, no more threads than CPUs: thread 1 gets 100/60, thread 2 90/50, equal work.
        let g = gain(&p, &one, Some(2)).unwrap();
        assert!(close(g.factor, (100.0 / 60.0 + 90.0 / 50.0) / 2.0), "{g:?}");
        let all = gain(&p, &Target::Category(Category::Lock), Some(2)).unwrap();
        assert!(all.factor > g.factor, "{all:?} vs {g:?}");
        assert_eq!(thread_times(&p, &Target::Category(Category::Lock)).1, 45);
        // Nothing of it in the profile: no prediction.
        let none = Target::Lock { kind: Category::Lock, description: "_thread.lock @ 0x30".into() };
        assert_eq!(gain(&p, &none, Some(2)), None);
    }

    #[test]
    fn an_empty_run_has_no_prediction() {
        assert_eq!(predict(&[], 10, Some(2)), None);
        assert_eq!(predict(&[t(0.0, 0.0, 0.0, 0.0, 0.0)], 10, Some(2)), None);
        // Nothing but the contention: unbounded, so no prediction.
        assert_eq!(predict(&[t(100.0, 0.0, 0.0, 100.0, 0.0)], 10, Some(2)), None);
    }

    /// With one sample the interval is wide, but finite (results.json cannot hold infinities):
    /// the high end removes at most 99 % of a thread's CPU time.
    #[test]
    fn intervals_are_finite_with_little_evidence() {
        let threads = [t(100.0, 0.0, 0.0, 40.0, 0.0), t(100.0, 0.0, 0.0, 40.0, 0.0)];
        let g = predict(&threads, 1, Some(2)).unwrap();
        assert!(close(g.factor, 100.0 / 60.0), "{g:?}");
        assert!(g.low == 1.0 && g.high.is_finite() && g.high >= g.factor, "{g:?}");
    }
}
