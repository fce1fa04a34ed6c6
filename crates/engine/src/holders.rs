//! The holder search (one, used by `record` and `top` at each tick, and by `dump` on its one
//! snapshot through [`HolderSampler::unbounded`]).
//!
//! Holder sampling for blame (`record`): at each wait-sampling tick, for the threads seen blocked
//! on a lock, a critical section or a PyMutex, find the thread holding it — as `dump` does: for a
//! critical section the thread whose active critical sections hold the object's mutex, for a
//! `threading.Lock` the thread with a `with lock:` block open on it, for an `RLock` the owner it
//! records — and read that thread's Python stack at the same instant. The observation, weighted
//! like the waiter's own snapshot, goes to [`analysis::blame::BlameCollector`].
//!
//! Bounded cost: searching reads other threads' state from the target (a few `process_vm_readv`
//! per thread), so it runs on a budget of [`SEARCH_BUDGET`] of one CPU (a token bucket refilled
//! with wall time): per tick, each thread is read at most once, the last holder of a lock is tried
//! first (one read when it still holds it), a lock whose holder was not found is backed off for
//! up to 64 ticks, and waiters seen when the budget is spent are skipped (counted in
//! `summary.blame.skipped`). Skipping does not depend on who holds the lock, so the split of the
//! waiting time between holder stacks stays an unbiased estimate. Interpreter-internal PyMutexes
//! record no owner: their waits are observed without a holder, at no cost.

use std::collections::HashMap;
use std::time::Instant;

use analysis::blame::BlameCollector;
use symbolizer::python::{ParkedInfo, PyFrame, PyProcess, PyStack};

/// Share of one CPU that the holder search may use, on average.
pub const SEARCH_BUDGET: f64 = 0.02;
/// Most search time that may be spent in one burst (ns).
const BURST_NS: f64 = 20e6;
/// Longest back-off (ticks) of a lock whose holder was not found.
const MAX_BACKOFF: u64 = 64;
/// Locks whose last holder or back-off is remembered, at most (beyond, they are forgotten).
const MAX_REMEMBERED: usize = 4096;

/// What a blocked thread waits on, as far as blame is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitedLock {
    /// A `_thread.lock` (object address, and its PyMutex).
    Lock { obj: u64, mutex: u64 },
    /// A `_thread.RLock` parked on (3.14+): its owner is recorded in the object.
    RLock { obj: u64 },
    /// An object's critical section (object and its `ob_mutex`).
    CriticalSection { obj: u64, mutex: u64 },
    /// Another PyMutex (no owner recorded anywhere).
    Internal { mutex: u64 },
}

impl WaitedLock {
    pub fn from_parked(p: &ParkedInfo) -> Option<WaitedLock> {
        if p.gil || p.stw_victim {
            return None;
        }
        if let Some((obj, t)) = &p.lock_object {
            return Some(if t == "_thread.RLock" {
                WaitedLock::RLock { obj: *obj }
            } else {
                WaitedLock::Lock { obj: *obj, mutex: p.addr }
            });
        }
        if let Some((obj, _)) = &p.cs_object {
            return Some(WaitedLock::CriticalSection { obj: *obj, mutex: p.addr });
        }
        Some(WaitedLock::Internal { mutex: p.addr })
    }

    /// The address the profile identifies the lock by (`LockIdentity::address`).
    pub fn identity(&self) -> u64 {
        match *self {
            WaitedLock::Lock { obj, .. } | WaitedLock::RLock { obj } | WaitedLock::CriticalSection { obj, .. } => obj,
            WaitedLock::Internal { mutex } => mutex,
        }
    }
}

/// One thread seen waiting by a tick.
#[derive(Clone, Copy, Debug)]
pub struct Waiter {
    pub tid: u32,
    pub lock: WaitedLock,
    /// The interval the tick's snapshot stands for.
    pub weight_ns: u64,
    /// Where it waits: its innermost Python frame (see [`innermost`]).
    pub at: Option<(u64, u32)>,
}

/// The innermost Python frame of a stack: code object address and instruction index.
pub fn innermost(s: &PyStack) -> Option<(u64, u32)> {
    s.frames.iter().find_map(|f| match f {
        PyFrame::Code { code_addr, lasti, .. } => Some((*code_addr, *lasti)),
        PyFrame::Entry => None,
    })
}

/// CPU time of the calling thread (ns). The budget counts the CPU the search uses, not the
/// wall time: on a loaded machine ftprof's thread is preempted mid-search, and wall time then
/// charged the search for the target's own CPU use (halving the observations on 2 busy CPUs).
fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Order one tick's lock groups for searching: never searched first, then the least recently
/// searched (`served`: the tick a lock was last searched at); ties keep the waiters' order.
pub fn order_fairly<T>(groups: &mut [(WaitedLock, T)], served: impl Fn(&WaitedLock) -> Option<u64>) {
    groups.sort_by_key(|(l, _)| served(l).map_or(0, |t| t + 1));
}

/// What one thread was found holding during one tick.
#[derive(Default)]
struct Held {
    critical: Option<Vec<u64>>,
    with: Option<Vec<u64>>,
}

/// What one tick has read of each thread (each is read at most once per tick).
#[derive(Default)]
struct TickCache {
    held: HashMap<u32, Held>,
    stacks: HashMap<u32, Option<PyStack>>,
    /// Python thread identifiers to native TIDs.
    idents: Option<HashMap<u64, u32>>,
}

impl TickCache {
    fn stack(&mut self, py: &mut PyProcess, tid: u32) -> &Option<PyStack> {
        self.stacks.entry(tid).or_insert_with(|| py.stack_for_tid(tid).ok().flatten())
    }
}

/// How one lock's search ended.
enum Search {
    Found {
        holder: u32,
        /// It was handed the lock and has not run since.
        handed_over: bool,
    },
    NotFound,
    OutOfBudget,
}

/// See the module documentation.
#[derive(Clone)]
pub struct HolderSampler {
    pub collector: BlameCollector,
    /// `FTPROF_NO_BLAME` is set: no holder search (for measuring its cost).
    pub disabled: bool,
    tokens_ns: f64,
    refilled: Option<Instant>,
    ticks: u64,
    last_holder: HashMap<u64, u32>,
    /// Per lock: consecutive searches that found no holder, and the tick before which it is
    /// not searched again.
    backoff: HashMap<u64, (u32, u64)>,
    search_ns: u128,
    /// What each thread was last seen waiting on.
    last_wait: HashMap<u32, u64>,
    /// Per lock: the tick it was last searched at (the least recently searched go first).
    served: HashMap<u64, u64>,
    /// Parked-on address (a lock's PyMutex, an object's mutex) → the lock's identity address,
    /// as seen of the waiters (to place the wake-ups recorded in the kernel).
    identities: HashMap<u64, Option<u64>>,
}

impl Default for HolderSampler {
    fn default() -> Self {
        HolderSampler {
            collector: BlameCollector::new(),
            disabled: std::env::var_os("FTPROF_NO_BLAME").is_some(),
            tokens_ns: BURST_NS,
            refilled: None,
            ticks: 0,
            last_holder: HashMap::new(),
            backoff: HashMap::new(),
            search_ns: 0,
            last_wait: HashMap::new(),
            served: HashMap::new(),
            identities: HashMap::new(),
        }
    }
}

impl HolderSampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// A search with no budget and no memory between calls (`ftprof dump`: one snapshot).
    pub fn unbounded() -> Self {
        HolderSampler { tokens_ns: f64::INFINITY, disabled: false, ..Self::default() }
    }

    /// One tick's waiters of one process; `threads`: the live threads of that process;
    /// `woken_not_run(tid)`: whether a thread seen blocked by a tick has been woken since but has
    /// not run yet (it may have been handed the lock it waited for). The observations go to
    /// [`HolderSampler::collector`]; returns each waiter's holder, where found.
    pub fn sample(
        &mut self,
        py: &mut PyProcess,
        threads: &[u32],
        waiters: &[Waiter],
        woken_not_run: &mut dyn FnMut(u32) -> bool,
    ) -> HashMap<u32, u32> {
        self.ticks += 1;
        let now = Instant::now();
        if let Some(t) = self.refilled {
            self.tokens_ns = (self.tokens_ns + now.duration_since(t).as_nanos() as f64 * SEARCH_BUDGET).min(BURST_NS);
        }
        self.refilled = Some(now);
        let mut holders = HashMap::new();
        if waiters.is_empty() {
            return holders;
        }
        let start = thread_cpu_ns();
        let mut groups: Vec<(WaitedLock, Vec<&Waiter>)> = Vec::new();
        for w in waiters {
            match groups.iter_mut().find(|(l, _)| *l == w.lock) {
                Some((_, v)) => v.push(w),
                None => groups.push((w.lock, vec![w])),
            }
        }
        // When the budget runs out mid-tick the locks left are skipped: search the least recently
        // searched first, so that one busy lock cannot starve another of holder observations.
        order_fairly(&mut groups, |l| self.served.get(&l.identity()).copied());
        let mut tick = TickCache::default();
        for (lock, ws) in groups {
            let id = lock.identity();
            if let WaitedLock::Internal { .. } = lock {
                for w in ws {
                    self.collector.observe(w.tid, id, None, false, w.weight_ns);
                }
                continue;
            }
            let backed_off = self.backoff.get(&id).is_some_and(|&(_, until)| self.ticks < until);
            if backed_off || self.spent(start) {
                self.collector.stats.skipped += ws.len() as u64;
                continue;
            }
            self.served.insert(id, self.ticks);
            match self.search(py, &mut tick, lock, &ws, threads, woken_not_run, start) {
                Search::OutOfBudget => self.collector.stats.skipped += ws.len() as u64,
                Search::Found { holder, handed_over } => {
                    self.last_holder.insert(id, holder);
                    self.backoff.remove(&id);
                    let stack = tick.stack(py, holder).clone();
                    for w in ws {
                        holders.insert(w.tid, holder);
                        self.collector.observe(w.tid, id, Some((holder, stack.clone())), handed_over, w.weight_ns);
                    }
                }
                Search::NotFound => {
                    self.last_holder.remove(&id);
                    let e = self.backoff.entry(id).or_insert((0, 0));
                    e.0 += 1;
                    // The first miss is often a hand-over in progress: back off from the second.
                    if e.0 >= 2 {
                        e.1 = self.ticks + (1u64 << (e.0 - 1).min(6)).min(MAX_BACKOFF);
                    }
                    for w in ws {
                        self.collector.observe(w.tid, id, None, false, w.weight_ns);
                    }
                }
            }
        }
        self.last_wait.extend(waiters.iter().map(|w| (w.tid, w.lock.identity())));
        for w in waiters {
            let parked = match w.lock {
                WaitedLock::Lock { mutex, .. } | WaitedLock::CriticalSection { mutex, .. } => mutex,
                WaitedLock::Internal { mutex } => mutex,
                WaitedLock::RLock { obj } => obj,
            };
            self.identities.insert(parked, Some(w.lock.identity()));
        }
        self.forget_old();
        let spent = thread_cpu_ns().saturating_sub(start);
        self.search_ns += spent as u128;
        self.tokens_ns -= spent as f64;
        self.collector.stats.search_ms = self.search_ns as f64 / 1e6;
        holders
    }

    /// A waker record of the BPF path: thread `waker` woke `wakee`, parked on `addr`, with
    /// `stack` its Python stack then. The lock is named as the tick names it (the parked-on
    /// address is classified once, by reading the target, when no tick has seen it).
    pub fn wake(&mut self, py: &mut PyProcess, wakee: u32, addr: u64, waker: u32, stack: PyStack) {
        if self.disabled {
            return;
        }
        let id = *self
            .identities
            .entry(addr)
            .or_insert_with(|| WaitedLock::from_parked(&py.probe_parked(wakee, addr)).map(|l| l.identity()));
        if let Some(id) = id {
            self.collector.observe_waker(wakee, id, waker, Some(stack));
        }
        if self.identities.len() > MAX_REMEMBERED {
            self.identities.clear();
        }
    }

    /// Programs that wait on many short-lived locks: keep the remembered maps small (they only
    /// speed the search up).
    fn forget_old(&mut self) {
        if self.backoff.len() > MAX_REMEMBERED {
            let now = self.ticks;
            self.backoff.retain(|_, &mut (_, until)| until > now);
        }
        if self.last_holder.len() > MAX_REMEMBERED {
            self.last_holder.clear();
        }
        if self.last_wait.len() > MAX_REMEMBERED {
            self.last_wait.clear();
        }
        if self.served.len() > MAX_REMEMBERED {
            self.served.clear();
        }
    }

    /// Who holds `lock`, which the waiters `ws` wait on.
    #[allow(clippy::too_many_arguments)]
    fn search(
        &mut self,
        py: &mut PyProcess,
        tick: &mut TickCache,
        lock: WaitedLock,
        ws: &[&Waiter],
        threads: &[u32],
        woken_not_run: &mut dyn FnMut(u32) -> bool,
        start: u64,
    ) -> Search {
        let waiting: Vec<u32> = ws.iter().map(|w| w.tid).collect();
        if let WaitedLock::RLock { obj } = lock {
            let owner = py.rlock_owner(obj);
            let map = tick.idents.get_or_insert_with(|| {
                py.threads().unwrap_or_default().into_iter().map(|t| (t.thread_id, t.native_tid)).collect()
            });
            return match owner.and_then(|o| map.get(&o).copied()).filter(|h| !waiting.contains(h)) {
                Some(holder) => Search::Found { holder, handed_over: false },
                None => Search::NotFound,
            };
        }
        // Where this lock's waiters wait: a thread there is acquiring it, not holding it.
        let acquiring_at: Vec<(u64, u32)> = ws.iter().filter_map(|w| w.at).collect();
        let mut acquiring = None;
        let first = self.last_holder.get(&lock.identity()).copied();
        let candidates = first.into_iter().chain(threads.iter().copied().filter(|&t| Some(t) != first));
        for cand in candidates {
            // A thread waiting in `with lock:` has the lock's `__exit__` on its stack too;
            // a critical section being waited for is not active yet (its mutex is unset),
            // so there a waiter found holding it has just been handed it.
            if matches!(lock, WaitedLock::Lock { .. }) && waiting.contains(&cand) {
                continue;
            }
            if self.spent(start) {
                return Search::OutOfBudget;
            }
            let h = tick.held.entry(cand).or_default();
            self.collector.stats.threads_scanned += 1;
            let holds = match lock {
                WaitedLock::CriticalSection { mutex, .. } => {
                    h.critical.get_or_insert_with(|| py.critical_sections_held(cand)).contains(&mutex)
                }
                WaitedLock::Lock { obj, .. } => {
                    h.with.get_or_insert_with(|| py.with_block_objects(cand)).contains(&obj)
                }
                _ => false,
            };
            if holds && matches!(lock, WaitedLock::Lock { .. }) {
                // `with lock:` pushes `__exit__` before it calls `__enter__`: a thread
                // still acquiring (woken, or spinning) has it on its stack too. It is
                // the holder only if nobody else is (it may have been handed the lock).
                if tick.stack(py, cand).as_ref().and_then(innermost).is_some_and(|a| acquiring_at.contains(&a)) {
                    acquiring = acquiring.or(Some(cand));
                    continue;
                }
            }
            if holds {
                return Search::Found { holder: cand, handed_over: false };
            }
        }
        if let Some(holder) = acquiring.filter(|&a| woken_not_run(a)) {
            return Search::Found { holder, handed_over: true };
        }
        self.handed_over(py, lock, &waiting, woken_not_run, start)
    }

    /// Not found among the others, yet locked: PyMutex hands a lock over to a waiter that
    /// waited for more than 1 ms, which owns it from then on, before it has run (nothing records
    /// that yet, and on 3.13 the `with` block of a frame inside a C call is not visible). The
    /// owner is a thread last seen waiting on it that has been woken but has not run since (for
    /// a critical section, still inside `_PyCriticalSection_BeginSlow`).
    fn handed_over(
        &mut self,
        py: &mut PyProcess,
        lock: WaitedLock,
        waiting: &[u32],
        woken_not_run: &mut dyn FnMut(u32) -> bool,
        start: u64,
    ) -> Search {
        let mutex = match lock {
            WaitedLock::Lock { mutex, .. } | WaitedLock::CriticalSection { mutex, .. } => Some(mutex),
            _ => None,
        };
        let mut byte = [0u8];
        let locked = mutex.is_some_and(|m| py.mem.read(m, &mut byte).is_ok() && byte[0] & 1 != 0);
        if !locked {
            return Search::NotFound;
        }
        let id = lock.identity();
        let before = self.last_wait.iter().filter(|(_, &l)| l == id).map(|(&t, _)| t);
        let mut woken: Vec<u32> = waiting.iter().copied().chain(before).collect();
        woken.sort_unstable();
        woken.dedup();
        for cand in woken {
            if self.spent(start) {
                return Search::OutOfBudget;
            }
            if !woken_not_run(cand) {
                continue;
            }
            self.collector.stats.threads_scanned += 1;
            let holds = match lock {
                WaitedLock::CriticalSection { .. } => py.critical_section_pending(cand),
                _ => true,
            };
            if holds {
                return Search::Found { holder: cand, handed_over: true };
            }
        }
        Search::NotFound
    }

    /// Whether this tick's search (begun at `start`) has used up the budget.
    fn spent(&self, start: u64) -> bool {
        thread_cpu_ns().saturating_sub(start) as f64 >= self.tokens_ns
    }

    pub fn finish(self) -> analysis::blame::BlameData {
        self.collector.finish()
    }
}

/// One wake-up of a thread blocked at a watched address: the waking thread and its Python stack
/// then (the release site), read in the kernel ([`watch_releases`]).
#[derive(Clone, Debug)]
pub struct Release {
    pub addr: u64,
    pub waker: u32,
    pub stack: PyStack,
}

/// Who releases what threads wait on when no holder can be searched for (bare
/// `acquire()`/`release()`, interpreter-internal PyMutexes): watch `py`'s process for
/// `window` with the kernel's waker records (BPF, the release site of each futex hand-off) and
/// return the wake-ups at `addrs` (parked-on addresses). `Err`: why it could not watch, in one
/// line (BPF turned off, not permitted, or refused).
pub fn watch_releases(
    py: &mut PyProcess,
    addrs: &std::collections::HashSet<u64>,
    window: std::time::Duration,
) -> Result<Vec<Release>, String> {
    if crate::bpf_requested() == crate::Bpf::Off {
        return Err("turned off (FTPROF_BPF=0)".into());
    }
    if profiler::access::is_elevated() {
        return Err("ftprof runs with privileges its caller lacks (it reads only what the caller may)".into());
    }
    let mut stacks = bpf::InstantStacks::new(128, crate::recorder::WAKER_BUDGET).map_err(|e| e.to_string())?;
    stacks.add_process(py).map_err(|e| e.to_string())?;
    std::thread::sleep(window);
    Ok(stacks
        .take_wakers()
        .into_iter()
        .filter_map(|r| {
            let w = r.waker_of?;
            (r.tgid == py.pid && addrs.contains(&w.addr)).then(|| Release {
                addr: w.addr,
                waker: r.tid,
                stack: r.to_stack(py),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_parked_thread_waits_on() {
        let lock =
            ParkedInfo { addr: 0x1018, lock_object: Some((0x1000, "_thread.lock".into())), ..Default::default() };
        assert_eq!(WaitedLock::from_parked(&lock), Some(WaitedLock::Lock { obj: 0x1000, mutex: 0x1018 }));
        let cs = ParkedInfo { addr: 0x200a, cs_object: Some((0x2000, "dict".into())), ..Default::default() };
        let w = WaitedLock::from_parked(&cs).unwrap();
        assert_eq!(w, WaitedLock::CriticalSection { obj: 0x2000, mutex: 0x200a });
        assert_eq!(w.identity(), 0x2000);
        let gil = ParkedInfo { addr: 0x3000, gil: true, ..Default::default() };
        assert_eq!(WaitedLock::from_parked(&gil), None);
        let internal = ParkedInfo { addr: 0x4000, symbol: Some("_PyRuntime+0x40".into()), ..Default::default() };
        assert_eq!(WaitedLock::from_parked(&internal).map(|w| w.identity()), Some(0x4000));
    }

    /// A budget that allows one search per tick: with two locks waited on at every tick, the
    /// searches alternate between them (the one always listed first does not starve the other).
    #[test]
    fn a_spent_budget_does_not_starve_the_lock_listed_last() {
        let a = WaitedLock::Lock { obj: 0xa, mutex: 0xa8 };
        let b = WaitedLock::Lock { obj: 0xb, mutex: 0xb8 };
        let mut served: HashMap<u64, u64> = HashMap::new();
        let mut searched = Vec::new();
        for tick in 1..=6u64 {
            let mut groups = vec![(a, ()), (b, ())];
            order_fairly(&mut groups, |l| served.get(&l.identity()).copied());
            let first = groups[0].0.identity();
            served.insert(first, tick);
            searched.push(first);
        }
        assert_eq!(searched, [0xa, 0xb, 0xa, 0xb, 0xa, 0xb]);
        // A lock never searched goes before ones searched, in the waiters' order otherwise.
        let c = WaitedLock::CriticalSection { obj: 0xc, mutex: 0xc8 };
        let mut groups = vec![(a, ()), (b, ()), (c, ())];
        order_fairly(&mut groups, |l| served.get(&l.identity()).copied());
        assert_eq!(groups.iter().map(|g| g.0.identity()).collect::<Vec<_>>(), [0xc, 0xa, 0xb]);
    }
}
