//! Blocked time made exact where the kernel timed it.
//!
//! The collector splits each thread's exact blocked total (kernel accounting) between the
//! stacks it saw the thread blocked at, in proportion to what it observed there, less the wait
//! for a CPU after each wake-up, which it only knows on average per thread (`collect`). On a
//! loaded machine that average fits a lock hand-off badly: its wake-ups wait longer or shorter
//! for a CPU than the thread's other waits, and a lock's blocked time came out up to half off.
//! When BPF timed every wait at each parked-on address of each thread (switch-out to wake-up:
//! [`KernelWaits`]), those times are exact, and the samples only need to say at which lines.
//!
//! [`exact_blocked_times`] is a pure function of the samples and the kernel's per-(thread,
//! address) totals. Per thread, the blocked samples parked at an address the kernel timed get
//! that address's exact total, split between them in proportion to their estimates, plus the
//! thread's timed waits at addresses no sample saw (a `Condition` waits on a new lock each
//! time: a sample at one waiter lock stands for the others), in proportion to the timed
//! samples' estimates; the thread's other blocked samples share what is left of its blocked
//! total, in proportion to theirs. The thread's blocked total is unchanged (it was exact already), and so is every
//! sample that no kernel timing concerns: a thread whose timed waits add up to more than its
//! total (the two are counted by different hooks) has them scaled down to fit it, and when it
//! has no other blocked sample to take the rest, the rest is blocked time no sample explains
//! (`[off-CPU, not observed]`, [`UNOBSERVED_MARKER`]).

/// The marker frame of blocked time that no observation explains.
pub const UNOBSERVED_MARKER: &str = "[off-CPU, not observed]";

use std::collections::{BTreeMap, HashMap};

use crate::capture::CapturedSample;
use crate::profile::{KernelWaits, Observation};

/// The blocked times with the kernel's timings applied (see the module's comment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExactBlocked {
    /// Per sample (same order as the samples), its blocked time (µs): `Some` for the blocked
    /// samples of threads that have a timed address among their samples, `None` for every other
    /// sample (unchanged).
    pub times: Vec<Option<u64>>,
    /// Per thread, blocked time (µs) that no sample explains any more.
    pub unobserved: Vec<(u32, u64)>,
}

/// See the module's comment.
pub fn exact_blocked_times(samples: &[CapturedSample], kernel: &[(u32, u64, KernelWaits)]) -> ExactBlocked {
    let timed: HashMap<(u32, u64), u64> =
        kernel.iter().map(|&(tid, addr, k)| ((tid, addr), k.total_ns / 1000)).collect();
    let mut out = vec![None; samples.len()];
    let mut unobserved = Vec::new();
    // Per thread, in a fixed order: its blocked samples, grouped by timed address (None: not
    // timed), as (sample index, estimate).
    type Groups = BTreeMap<Option<u64>, Vec<(usize, u64)>>;
    let mut threads: BTreeMap<u32, Groups> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        let Observation::OffCpu { wait_us, preempted: false, .. } = s.observation else { continue };
        let addr = s.parked.as_ref().map(|p| p.addr).filter(|&a| timed.contains_key(&(s.tid, a)));
        threads.entry(s.tid).or_default().entry(addr).or_default().push((i, wait_us));
    }
    for (tid, groups) in threads {
        if groups.keys().all(Option::is_none) {
            continue;
        }
        let total: u64 = groups.values().flatten().map(|&(_, w)| w).sum();
        let addrs: Vec<(u64, u64)> = groups.keys().flatten().map(|&a| (a, timed[&(tid, a)])).collect();
        let sampled: u64 = addrs.iter().map(|a| a.1).sum();
        // The thread's timed waits at addresses no sample saw: a `Condition` waits on a new lock
        // each time, so a sample at one waiter lock stands for the waits at the others.
        let unsampled: u64 = kernel
            .iter()
            .filter(|&&(t, a, _)| t == tid && !groups.contains_key(&Some(a)))
            .map(|(_, _, k)| k.total_ns / 1000)
            .sum();
        // The timed time as it fits the thread's total: each sampled address its own, the rest
        // to the sampled addresses in proportion to their estimates; the thread's other blocked
        // samples share what is left.
        let fit = (sampled + unsampled).min(total);
        let parts = split(fit, &[sampled, unsampled]);
        let per_addr = split(parts[0], &addrs.iter().map(|&(_, k)| k).collect::<Vec<_>>());
        let estimates: Vec<u64> = addrs.iter().map(|(a, _)| groups[&Some(*a)].iter().map(|x| x.1).sum()).collect();
        // (Evenly when every estimate rounded to nothing: the parts still add up.)
        let estimates = if estimates.iter().all(|&e| e == 0) { vec![1; estimates.len()] } else { estimates };
        let extra = split(parts[1], &estimates);
        for (((addr, _), own), more) in addrs.iter().zip(per_addr).zip(extra) {
            assign(&groups[&Some(*addr)], own + more, &mut out);
        }
        let others: Vec<(usize, u64)> = groups.get(&None).cloned().unwrap_or_default();
        if others.is_empty() && total > fit {
            unobserved.push((tid, total - fit));
        }
        assign(&others, total - fit, &mut out);
    }
    ExactBlocked { times: out, unobserved }
}

/// `amount` split between `samples` in proportion to their estimates (evenly when they are all
/// zero), into `out`.
fn assign(samples: &[(usize, u64)], amount: u64, out: &mut [Option<u64>]) {
    if samples.is_empty() {
        return;
    }
    let weights: Vec<u64> = samples.iter().map(|&(_, w)| w).collect();
    let weights = if weights.iter().all(|&w| w == 0) { vec![1; weights.len()] } else { weights };
    for (&(i, _), part) in samples.iter().zip(split(amount, &weights)) {
        out[i] = Some(part);
    }
}

/// `amount` split in proportion to `weights`, exactly (all-zero weights: all to nothing).
fn split(amount: u64, weights: &[u64]) -> Vec<u64> {
    if weights.iter().all(|&w| w == 0) {
        return vec![0; weights.len()];
    }
    crate::collect::apportion(amount, &weights.iter().map(|&w| w as f64).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use frames::python::ParkedInfo;

    fn blocked(tid: u32, parked: Option<u64>, wait_us: u64) -> CapturedSample {
        CapturedSample {
            tid,
            native: Vec::new(),
            native_complete: true,
            python: None,
            kernel: Vec::new(),
            leaf_prev: None,
            parked: parked.map(|addr| ParkedInfo { addr, ..Default::default() }),
            observation: Observation::OffCpu { wait_us, waits: 1, max_us: 0, preempted: false },
            alone: false,
            marker: None,
            syscall: None,
            operand: None,
            concurrent: true,
        }
    }

    fn kernel(tid: u32, addr: u64, total_us: u64) -> (u32, u64, KernelWaits) {
        (tid, addr, KernelWaits { count: 1, total_ns: total_us * 1000, max_ns: 0, runq_ns: 0 })
    }

    /// (case, samples, the kernel's timings, the times expected, the unobserved time expected).
    type Case = (&'static str, Vec<CapturedSample>, Vec<(u32, u64, KernelWaits)>, Vec<Option<u64>>, Vec<(u32, u64)>);

    #[test]
    fn timed_addresses_get_the_kernels_times_and_the_rest_shares_what_is_left() {
        const LOCK: u64 = 0xa0;
        const JOIN: u64 = 0xb0;
        let cpu = CapturedSample { observation: Observation::Cpu { samples: 3 }, ..blocked(1, None, 0) };
        let runq = CapturedSample {
            observation: Observation::OffCpu { wait_us: 50, waits: 1, max_us: 0, preempted: true },
            ..blocked(1, Some(LOCK), 0)
        };
        let cases: Vec<Case> = vec![
            (
                // The loaded machine's case: the lock's blocked time estimated at half the
                // kernel's, the rest of the thread's total given to its sleep.
                "a lock estimated low takes its exact time from the thread's other wait",
                vec![blocked(1, Some(LOCK), 300), blocked(1, Some(LOCK), 200), blocked(1, None, 500)],
                vec![kernel(1, LOCK, 800)],
                vec![Some(480), Some(320), Some(200)],
                vec![],
            ),
            (
                "a lock estimated high gives its excess to the thread's other waits, by their estimates",
                vec![blocked(1, Some(LOCK), 900), blocked(1, Some(JOIN), 60), blocked(1, None, 40)],
                vec![kernel(1, LOCK, 500)],
                vec![Some(500), Some(300), Some(200)],
                vec![],
            ),
            (
                "two timed addresses each get their own time",
                vec![blocked(1, Some(LOCK), 100), blocked(1, Some(JOIN), 100), blocked(1, None, 800)],
                vec![kernel(1, LOCK, 250), kernel(1, JOIN, 50)],
                vec![Some(250), Some(50), Some(700)],
                vec![],
            ),
            (
                "timed waits beyond the thread's total are scaled to fit it",
                vec![blocked(1, Some(LOCK), 100), blocked(1, Some(JOIN), 100), blocked(1, None, 100)],
                vec![kernel(1, LOCK, 400), kernel(1, JOIN, 200)],
                vec![Some(200), Some(100), Some(0)],
                vec![],
            ),
            (
                "with no other blocked sample the rest of the thread's total is not observed",
                vec![blocked(1, Some(LOCK), 100), blocked(1, Some(LOCK), 300)],
                vec![kernel(1, LOCK, 200)],
                vec![Some(50), Some(150)],
                vec![(1, 200)],
            ),
            (
                "another thread's timing, CPU samples and runqueue time change nothing",
                vec![blocked(2, Some(LOCK), 100), cpu, runq, blocked(1, None, 10)],
                vec![kernel(1, LOCK, 999)],
                vec![None, None, None, None],
                vec![],
            ),
            (
                // A `Condition` waits on a new lock each time: the sample at one waiter lock
                // stands for the waits at the others, which the kernel timed too.
                "waits at addresses no sample saw stay with the sampled timed waits",
                vec![blocked(1, Some(LOCK), 600), blocked(1, None, 400)],
                vec![kernel(1, LOCK, 100), kernel(1, 0xc0, 300), kernel(1, 0xd0, 200)],
                vec![Some(600), Some(400)],
                vec![],
            ),
            (
                "estimates that rounded to nothing still take the unsampled addresses' time",
                vec![blocked(1, Some(LOCK), 0), blocked(1, Some(JOIN), 0), blocked(1, None, 100)],
                vec![kernel(1, LOCK, 10), kernel(1, JOIN, 10), kernel(1, 0xc0, 40)],
                vec![Some(30), Some(30), Some(40)],
                vec![],
            ),
            (
                "each thread on its own",
                vec![
                    blocked(1, Some(LOCK), 10),
                    blocked(1, None, 90),
                    blocked(2, Some(LOCK), 10),
                    blocked(2, None, 10),
                ],
                vec![kernel(1, LOCK, 60), kernel(2, LOCK, 15)],
                vec![Some(60), Some(40), Some(15), Some(5)],
                vec![],
            ),
            (
                "parts add up exactly (largest remainders)",
                vec![
                    blocked(1, Some(LOCK), 1),
                    blocked(1, Some(LOCK), 1),
                    blocked(1, Some(LOCK), 1),
                    blocked(1, None, 7),
                ],
                vec![kernel(1, LOCK, 5)],
                vec![Some(2), Some(2), Some(1), Some(5)],
                vec![],
            ),
        ];
        for (name, samples, k, want, unobserved) in cases {
            let exact = exact_blocked_times(&samples, &k);
            let got = exact.times;
            assert_eq!(got, want, "{name}");
            assert_eq!(exact.unobserved, unobserved, "{name}");
            assert_thread_totals_kept(name, &samples, &got, &exact.unobserved);
        }
    }

    /// Each thread's blocked total is what it was: its samples' new times plus its unobserved time.
    fn assert_thread_totals_kept(
        name: &str,
        samples: &[CapturedSample],
        got: &[Option<u64>],
        unobserved: &[(u32, u64)],
    ) {
        for tid in [1, 2] {
            let before: u64 = samples
                .iter()
                .filter(|s| s.tid == tid)
                .filter_map(|s| match s.observation {
                    Observation::OffCpu { wait_us, preempted: false, .. } => Some(wait_us),
                    _ => None,
                })
                .sum();
            let after: u64 = samples
                .iter()
                .zip(got)
                .filter(|(s, _)| s.tid == tid)
                .filter_map(|(s, g)| match s.observation {
                    Observation::OffCpu { wait_us, preempted: false, .. } => Some(g.unwrap_or(wait_us)),
                    _ => None,
                })
                .sum::<u64>()
                + unobserved.iter().filter(|u| u.0 == tid).map(|u| u.1).sum::<u64>();
            assert_eq!(before, after, "{name}: thread {tid}'s blocked total");
        }
    }
}
