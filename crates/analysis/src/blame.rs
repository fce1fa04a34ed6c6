//! Blame: the holder's side of every wait.
//!
//! While recording, each time the wait-sampling tick sees a thread blocked on a lock, a critical
//! section or a PyMutex, the recorder looks for the thread holding it and reads that thread's
//! Python stack at the same instant; [`BlameCollector::observe`] keeps the observation with the
//! tick's weight (the interval it stands for), interned like the other keys: memory grows with
//! the number of distinct (waiter, lock, holder, holder stack) combinations, not with time.
//!
//! Afterwards, [`attach`] splits each waiter's (estimated) waiting time on each lock between the
//! holder stacks seen while it waited, in proportion to the observations' weights — the same ratio
//! estimate that splits a thread's exact blocked time between its own wait stacks — and adds to
//! the [`Profile`] the blame stacks ([`BlameStack`], rooted at the lock) and, per lock, the
//! holder's top lines ([`HeldBy`]). Waiting time of a waiter that no holder observation covers is
//! kept as `[holder not sampled]`; observations that found no holder as `[holder not found]`: the
//! blame of a lock always adds up to its off-CPU waiting time.

use std::collections::HashMap;

use frames::python::PyStack;
use serde::{Deserialize, Serialize};

use crate::collect::PyInterner;
use crate::merge::merge_stacks;
use crate::profile::{thread_label, Frame, FrameKind, Profile};
use crate::wait::Category;

/// Marker of blame observations where no thread was found holding the lock.
pub const NOT_FOUND: &str = "[holder not found]";
/// Marker of waiting time no holder observation covers.
pub const NOT_SAMPLED: &str = "[holder not sampled]";
/// Marker under the thread of a holder known from the wake-up (the BPF path): the thread that
/// woke the waiter, with its stack as it released the lock.
pub const AT_RELEASE: &str = "[woke the waiter: its stack at the release]";
/// Marker above the stack of a holder that had been handed the lock but had not run yet: the
/// waiting it caused is the machine's CPU oversubscription, not the holder's code.
pub const HANDED_OVER: &str = "[handed the lock, waiting for a CPU]";

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Counters of the holder sampling (in the JSON `summary.blame`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BlameStats {
    /// Observations of a waiting thread for which the holder was looked for.
    pub observations: u64,
    /// Of those, the ones where a holder was found.
    pub holders_found: u64,
    /// Waiting threads seen by a tick but not looked at (ftprof's holder-search budget was
    /// spent, or the lock had no findable holder recently and was backed off).
    pub skipped: u64,
    /// Threads examined while searching for holders.
    pub threads_scanned: u64,
    /// CPU time ftprof spent searching (ms).
    pub search_ms: f64,
    /// Wake-ups of a waiter whose waker (the releasing thread) and its stack were recorded in
    /// the kernel (the BPF path); they stand in where the search found no holder.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wakeups: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ObsKey {
    waiter: u32,
    lock: u64,
    /// Holder TID and its interned Python stack (`u32::MAX`: unreadable).
    holder: Option<(u32, u32)>,
    /// The holder had been handed the lock and had not run since.
    handed_over: bool,
}

/// Holder observations while recording (see the module documentation).
#[derive(Clone, Default)]
pub struct BlameCollector {
    py: PyInterner,
    obs: HashMap<ObsKey, (f64, u64)>,
    /// (waiter, lock, waker, interned stack) → wake-ups.
    wakes: HashMap<(u32, u64, u32, u32), u64>,
    pub stats: BlameStats,
}

/// Wake-ups of one waiter on one lock by one thread at one stack (the release site).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WakeObservation {
    pub waiter: u32,
    /// The lock's identity address (as in [`BlameObservation::lock`]).
    pub lock: u64,
    pub waker: u32,
    pub python: Option<PyStack>,
    pub count: u64,
}

/// One distinct holder observation, as returned by [`BlameCollector::finish`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlameObservation {
    /// The waiting thread.
    pub waiter: u32,
    /// The lock's identity address ([`crate::LockIdentity::address`]: the object for thread
    /// locks and critical sections, the mutex for other PyMutexes).
    pub lock: u64,
    /// The holding thread, when found.
    pub holder: Option<u32>,
    /// The holder's Python stack at the observations.
    pub python: Option<PyStack>,
    /// The holder had been handed the lock and had not run since (waiting for a CPU).
    pub handed_over: bool,
    /// Sum of the observations' weights (ns).
    pub weight_ns: f64,
    pub count: u64,
}

/// Everything the holder sampling collected.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BlameData {
    pub observations: Vec<BlameObservation>,
    pub wakes: Vec<WakeObservation>,
    pub stats: BlameStats,
}

impl BlameCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Thread `waiter` was seen waiting on `lock` by a tick standing for `weight_ns`; `holder`:
    /// the thread holding it at that moment and its Python stack then, when found;
    /// `handed_over`: the holder had been handed the lock by the previous holder and had not
    /// run since (it was waiting for a CPU).
    pub fn observe(
        &mut self,
        waiter: u32,
        lock: u64,
        holder: Option<(u32, Option<PyStack>)>,
        handed_over: bool,
        weight_ns: u64,
    ) {
        let holder = holder.map(|(tid, py)| (tid, py.map(|p| self.py.id(p)).unwrap_or(u32::MAX)));
        self.stats.observations += 1;
        self.stats.holders_found += holder.is_some() as u64;
        let handed_over = handed_over && holder.is_some();
        let e = self.obs.entry(ObsKey { waiter, lock, holder, handed_over }).or_default();
        e.0 += weight_ns as f64;
        e.1 += 1;
    }

    /// Thread `waker` woke `waiter`, blocked on `lock`, with `python` its stack then (it had just
    /// released the lock: the end of its hold).
    pub fn observe_waker(&mut self, waiter: u32, lock: u64, waker: u32, python: Option<PyStack>) {
        let py = python.map(|p| self.py.id(p)).unwrap_or(u32::MAX);
        self.stats.wakeups += 1;
        *self.wakes.entry((waiter, lock, waker, py)).or_default() += 1;
    }

    /// Distinct observations kept so far.
    pub fn distinct(&self) -> usize {
        self.obs.len()
    }

    pub fn finish(self) -> BlameData {
        let mut observations: Vec<BlameObservation> = self
            .obs
            .into_iter()
            .map(|(k, (w, n))| BlameObservation {
                waiter: k.waiter,
                lock: k.lock,
                holder: k.holder.map(|h| h.0),
                python: k.holder.and_then(|h| self.py.get(h.1).cloned()),
                handed_over: k.handed_over,
                weight_ns: w,
                count: n,
            })
            .collect();
        observations.sort_by_key(|o| (o.lock, o.waiter, o.holder, o.handed_over));
        let mut wakes: Vec<WakeObservation> = self
            .wakes
            .into_iter()
            .map(|((waiter, lock, waker, py), count)| WakeObservation {
                waiter,
                lock,
                waker,
                python: self.py.get(py).cloned(),
                count,
            })
            .collect();
        wakes.sort_by_key(|w| (w.lock, w.waiter, w.waker, std::cmp::Reverse(w.count)));
        BlameData { observations, wakes, stats: self.stats }
    }
}

/// Waiting time on one lock caused while its holder was at one stack.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BlameStack {
    /// Index into `Profile::locks`.
    pub lock: usize,
    /// The holding thread (absent for `[holder not found]` / `[holder not sampled]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<u32>,
    /// Indexes into `Profile::frames`, root → leaf: the holder's thread frame, then its Python
    /// frames (then [`HANDED_OVER`] when it had not run since it was handed the lock); or one
    /// marker frame.
    pub frames: Vec<u32>,
    /// Time others waited on the lock while its holder was here (µs, estimated).
    pub time_us: u64,
    /// Tick observations behind it.
    pub observations: u64,
}

/// One line of a lock's "held by" column.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HeldBy {
    /// The holder's innermost Python frame, `qualname (file:line)` (or a marker).
    pub line: String,
    /// The holder thread, `name (TID)` (empty for markers).
    pub thread: String,
    /// Waiting time it caused (µs, estimated).
    pub time_us: u64,
    /// Share of the lock's waiting time, 0..1.
    pub share: f64,
}

/// Categories whose waits have a holder.
pub fn is_blamed(c: Category) -> bool {
    matches!(c, Category::Lock | Category::CriticalSection | Category::Pymutex)
}

/// The label of a lock as the root of its blame stacks: `[lock: _thread.lock @ 0x…]`.
pub fn lock_root(p: &Profile, lock: usize) -> String {
    let l = &p.locks[lock];
    format!("[{}: {}]", l.kind.name(), l.description)
}

/// Add the blame stacks and the "held by" lines to `p` (see the module documentation).
pub fn attach(p: &mut Profile, data: &BlameData) {
    p.summary.blame = Some(data.stats);
    // Locks with a holder, by identity address, and the leaf their waiters' stacks end with.
    let mut by_addr: HashMap<u64, usize> = HashMap::new();
    let mut leaf_of: HashMap<String, usize> = HashMap::new();
    for (i, l) in p.locks.iter().enumerate() {
        if let (true, Some(a)) = (is_blamed(l.kind), l.identity.address) {
            by_addr.entry(a).or_insert(i);
            leaf_of.insert(format!("{}: {}", l.kind.name(), l.description), i);
        }
    }
    // Each waiter's off-CPU time on each lock (the profile's estimate, scaled to the kernel's).
    let waited = waited_per_lock(p, &leaf_of);
    // Observation weights per (lock, waiter).
    let mut weight: HashMap<(usize, u32), f64> = HashMap::new();
    for o in &data.observations {
        if let Some(&i) = by_addr.get(&o.lock) {
            *weight.entry((i, o.waiter)).or_default() += o.weight_ns;
        }
    }
    let mut frame_ids: HashMap<Frame, u32> = p.frames.iter().cloned().enumerate().map(|(i, f)| (f, i as u32)).collect();
    let mut intern = |frames: &mut Vec<Frame>, f: Frame| -> u32 {
        *frame_ids.entry(f.clone()).or_insert_with(|| {
            frames.push(f);
            frames.len() as u32 - 1
        })
    };
    let holder_label = |tid: u32| {
        let name = p.threads.iter().find(|t| t.tid == tid).map(|t| t.name.as_str()).unwrap_or("");
        thread_label(name, tid)
    };
    // Wake-ups per (lock, waiter), for the waiting the search found no holder for.
    let mut wakes_of: HashMap<(usize, u32), Vec<&WakeObservation>> = HashMap::new();
    for w in &data.wakes {
        if let Some(&i) = by_addr.get(&w.lock) {
            wakes_of.entry((i, w.waiter)).or_default().push(w);
        }
    }
    let mut unfound: std::collections::BTreeMap<(usize, u32), f64> = Default::default();
    // Per (lock, holder, frames): waiting time (µs) and observations.
    type Agg = HashMap<(usize, Option<u32>, Vec<u32>), (f64, u64)>;
    let mut agg: Agg = HashMap::new();
    let mut frames = std::mem::take(&mut p.frames);
    for o in &data.observations {
        let Some(&i) = by_addr.get(&o.lock) else { continue };
        let Some(&us) = waited.get(&(i, o.waiter)) else { continue };
        let total = weight[&(i, o.waiter)];
        if total <= 0.0 {
            continue;
        }
        let time = us as f64 * o.weight_ns / total;
        if o.holder.is_none() && wakes_of.contains_key(&(i, o.waiter)) {
            *unfound.entry((i, o.waiter)).or_default() += time;
            continue;
        }
        let ids = match o.holder {
            Some(h) => {
                let mut ids = vec![intern(&mut frames, Frame::thread(holder_label(h)))];
                let (py, _) = merge_stacks(&[], false, o.python.as_ref());
                ids.extend(py.into_iter().filter(|f| f.kind == FrameKind::Python).map(|f| intern(&mut frames, f)));
                if o.handed_over {
                    ids.push(intern(&mut frames, Frame::marker(HANDED_OVER)));
                }
                ids
            }
            None => vec![intern(&mut frames, Frame::marker(NOT_FOUND))],
        };
        let e = agg.entry((i, o.holder, ids)).or_default();
        e.0 += time;
        e.1 += o.count;
    }
    for (&(i, waiter), &us) in &waited {
        if !weight.contains_key(&(i, waiter)) {
            if wakes_of.contains_key(&(i, waiter)) {
                *unfound.entry((i, waiter)).or_default() += us as f64;
                continue;
            }
            let ids = vec![intern(&mut frames, Frame::marker(NOT_SAMPLED))];
            agg.entry((i, None, ids)).or_default().0 += us as f64;
        }
    }
    // Waiting with no holder found (or no tick on it) goes to the threads that woke the waiter,
    // in proportion to their wake-ups, at their stacks as they released the lock.
    for ((i, waiter), time) in unfound {
        let ws = &wakes_of[&(i, waiter)];
        let n: u64 = ws.iter().map(|w| w.count).sum();
        for w in ws {
            let mut ids = vec![
                intern(&mut frames, Frame::thread(holder_label(w.waker))),
                intern(&mut frames, Frame::marker(AT_RELEASE)),
            ];
            let (py, _) = merge_stacks(&[], false, w.python.as_ref());
            ids.extend(py.into_iter().filter(|f| f.kind == FrameKind::Python).map(|f| intern(&mut frames, f)));
            let e = agg.entry((i, Some(w.waker), ids)).or_default();
            e.0 += time * w.count as f64 / n.max(1) as f64;
            e.1 += w.count;
        }
    }
    p.frames = frames;
    let mut stacks: Vec<BlameStack> = agg
        .into_iter()
        .map(|((lock, holder, frames), (t, n))| BlameStack {
            lock,
            holder,
            frames,
            time_us: t.round() as u64,
            observations: n,
        })
        .filter(|b| b.time_us > 0)
        .collect();
    stacks.sort_by(|a, b| a.lock.cmp(&b.lock).then(b.time_us.cmp(&a.time_us)).then(a.frames.cmp(&b.frames)));
    set_held_by(p, &stacks);
    p.blame = stacks;
}

/// Held by: per lock, the holder's innermost Python line and thread, from its blame stacks.
fn set_held_by(p: &mut Profile, stacks: &[BlameStack]) {
    let holder_label = |tid: u32| {
        let name = p.threads.iter().find(|t| t.tid == tid).map(|t| t.name.as_str()).unwrap_or("");
        thread_label(name, tid)
    };
    let mut held: HashMap<usize, HashMap<(String, String), u64>> = HashMap::new();
    for b in stacks {
        let labels: Vec<&Frame> = b.frames.iter().map(|&f| &p.frames[f as usize]).collect();
        let line = labels
            .iter()
            .rev()
            .find(|f| matches!(f.kind, FrameKind::Python | FrameKind::Marker))
            .map(|f| f.label())
            .unwrap_or_else(|| "[no Python frame]".into());
        let thread = b.holder.map(holder_label).unwrap_or_default();
        *held.entry(b.lock).or_default().entry((line, thread)).or_default() += b.time_us;
    }
    for (i, lines) in held {
        let total: u64 = lines.values().sum();
        let mut v: Vec<HeldBy> = lines
            .into_iter()
            .map(|((line, thread), time_us)| HeldBy {
                line,
                thread,
                time_us,
                share: time_us as f64 / total.max(1) as f64,
            })
            .collect();
        v.sort_by(|a, b| b.time_us.cmp(&a.time_us).then(a.line.cmp(&b.line)));
        v.truncate(5);
        p.locks[i].held_by = v;
    }
}

/// Each waiter's off-CPU time (µs) on each lock whose waiting stacks end with a leaf of
/// `leaf_of`, by (lock index, waiter).
fn waited_per_lock(p: &Profile, leaf_of: &HashMap<String, usize>) -> HashMap<(usize, u32), u64> {
    let mut waited: HashMap<(usize, u32), u64> = HashMap::new();
    for s in &p.stacks {
        if !is_blamed(s.category) || s.wait_us == 0 {
            continue;
        }
        let Some(leaf) = s.frames.last().map(|&f| &p.frames[f as usize]) else { continue };
        if leaf.kind != FrameKind::Wait {
            continue;
        }
        if let Some(&i) = leaf_of.get(&leaf.name) {
            *waited.entry((i, s.thread)).or_default() += s.wait_us;
        }
    }
    waited
}

/// Folded blame stacks: `[lock: …];holder thread;holder frames… µs`, one line per distinct stack.
pub fn folded_lines(p: &Profile) -> Vec<(Vec<String>, u64)> {
    p.blame
        .iter()
        .map(|b| {
            let mut path = vec![lock_root(p, b.lock)];
            path.extend(b.frames.iter().map(|&f| p.frames[f as usize].label()));
            (path, b.time_us)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{code, input, off, pystack, runtime_stack};
    use crate::profile::{ProfileBuilder, SampleInput, TargetInfo};
    use frames::python::ParkedInfo;

    const APP: &str = "/app/app.py";

    fn lock(obj: u64) -> ParkedInfo {
        ParkedInfo { addr: obj + 0x18, lock_object: Some((obj, "_thread.lock".into())), ..Default::default() }
    }

    /// Waiters 1 (9 ms) and 2 (1 ms) on one lock; thread 3 holds it. Waiter 1 saw the holder
    /// at `slow` three times and at `other` once (equal weights); waiter 2 once at `slow` and
    /// once found no holder. Each waiter's time is split by its own observations.
    fn profile_with_blame() -> Profile {
        let mut b = ProfileBuilder::new(1_000_000);
        b.set_thread(3, 1, "Holder");
        let n = runtime_stack(&["_PyParkingLot_Park", "_PyMutex_LockTimed", "lock_PyThread_acquire_lock", "x"]);
        let waiter_py = pystack(vec![code("waiter", APP, 10)]);
        let l = lock(0x1000);
        b.add(&SampleInput { python: Some(&waiter_py), parked: Some(&l), ..input(1, &n, off(9_000, 3, 5_000)) });
        b.add(&SampleInput { python: Some(&waiter_py), parked: Some(&l), ..input(2, &n, off(1_000, 1, 1_000)) });
        let mut p = b.finish(TargetInfo::default());
        let slow = pystack(vec![code("slow", APP, 5), code("holder", APP, 20)]);
        let other = pystack(vec![code("other", APP, 30), code("holder", APP, 21)]);
        let mut c = BlameCollector::new();
        for _ in 0..3 {
            c.observe(1, 0x1000, Some((3, Some(slow.clone()))), false, 10);
        }
        c.observe(1, 0x1000, Some((3, Some(other))), false, 10);
        c.observe(2, 0x1000, Some((3, Some(slow))), false, 10);
        c.observe(2, 0x1000, None, false, 10);
        // A lock nobody waited on in the profile (e.g. a Condition's waiter lock): ignored.
        c.observe(2, 0x9999, None, false, 10);
        attach(&mut p, &c.finish());
        p
    }

    #[test]
    fn waiting_time_is_split_between_holder_stacks() {
        let p = profile_with_blame();
        let lines: Vec<(String, u64)> = folded_lines(&p).into_iter().map(|(path, us)| (path.join(";"), us)).collect();
        assert_eq!(
            lines,
            vec![
                ("[lock: _thread.lock @ 0x1000];Holder (3);holder (app.py:20);slow (app.py:5)".to_string(), 7_250),
                ("[lock: _thread.lock @ 0x1000];Holder (3);holder (app.py:21);other (app.py:30)".to_string(), 2_250),
                ("[lock: _thread.lock @ 0x1000];[holder not found]".to_string(), 500),
            ]
        );
        let total: u64 = p.blame.iter().map(|b| b.time_us).sum();
        assert_eq!(total, p.locks[0].total_us, "blame adds up to the lock's waiting time");
        assert_eq!(p.summary.blame.unwrap().observations, 7);
        assert_eq!(p.summary.blame.unwrap().holders_found, 5);
    }

    /// With wake-ups recorded in the kernel: waiter 2's observation that found no holder, and
    /// all of waiter 4's time (no tick observed it), go to the threads that woke them (3 times
    /// thread 3 at `release_a`, once thread 5 at `release_b`), under the at-release marker;
    /// waiter 1's time keeps its holder observations; the blame still adds up.
    #[test]
    fn waiting_without_a_holder_found_goes_to_the_wakers() {
        let mut b = ProfileBuilder::new(1_000_000);
        b.set_thread(3, 1, "Holder");
        let n = runtime_stack(&["_PyParkingLot_Park", "_PyMutex_LockTimed", "lock_PyThread_acquire_lock", "x"]);
        let waiter_py = pystack(vec![code("waiter", APP, 10)]);
        let l = lock(0x1000);
        b.add(&SampleInput { python: Some(&waiter_py), parked: Some(&l), ..input(1, &n, off(9_000, 3, 5_000)) });
        b.add(&SampleInput { python: Some(&waiter_py), parked: Some(&l), ..input(2, &n, off(1_000, 1, 1_000)) });
        b.add(&SampleInput { python: Some(&waiter_py), parked: Some(&l), ..input(4, &n, off(4_000, 2, 2_000)) });
        let mut p = b.finish(TargetInfo::default());
        let slow = pystack(vec![code("slow", APP, 5), code("holder", APP, 20)]);
        let release_a = pystack(vec![code("holder", APP, 22)]);
        let release_b = pystack(vec![code("other_holder", APP, 40)]);
        let mut c = BlameCollector::new();
        c.observe(1, 0x1000, Some((3, Some(slow.clone()))), false, 10);
        c.observe(2, 0x1000, Some((3, Some(slow))), false, 10);
        c.observe(2, 0x1000, None, false, 10);
        for w in [2, 4, 4] {
            c.observe_waker(w, 0x1000, 3, Some(release_a.clone()));
        }
        c.observe_waker(4, 0x1000, 5, Some(release_b));
        attach(&mut p, &c.finish());
        let lines: Vec<(String, u64)> = folded_lines(&p).into_iter().map(|(path, us)| (path.join(";"), us)).collect();
        let at = AT_RELEASE;
        assert_eq!(
            lines,
            vec![
                ("[lock: _thread.lock @ 0x1000];Holder (3);holder (app.py:20);slow (app.py:5)".to_string(), 9_500),
                (format!("[lock: _thread.lock @ 0x1000];Holder (3);{at};holder (app.py:22)"), 3_167),
                (format!("[lock: _thread.lock @ 0x1000];thread (5);{at};other_holder (app.py:40)"), 1_333),
            ]
        );
        let total: u64 = p.blame.iter().map(|b| b.time_us).sum();
        assert_eq!(total, p.locks[0].total_us);
        assert_eq!(p.summary.blame.unwrap().wakeups, 4);
        assert_eq!(p.locks[0].held_by[1].line, "holder (app.py:22)");
    }

    #[test]
    fn held_by_names_the_holders_top_lines() {
        let p = profile_with_blame();
        let h: Vec<(&str, &str, u64)> =
            p.locks[0].held_by.iter().map(|h| (h.line.as_str(), h.thread.as_str(), h.time_us)).collect();
        assert_eq!(
            h,
            vec![
                ("slow (app.py:5)", "Holder (3)", 7_250),
                ("other (app.py:30)", "Holder (3)", 2_250),
                ("[holder not found]", "", 500)
            ]
        );
        assert!((p.locks[0].held_by[0].share - 0.725).abs() < 1e-9);
    }

    /// A waiter whose waits no holder observation covered keeps its time, as not sampled.
    #[test]
    fn uncovered_waiting_time_is_not_sampled() {
        let mut b = ProfileBuilder::new(1_000_000);
        let n = runtime_stack(&["_PyParkingLot_Park", "_PyMutex_LockTimed", "lock_PyThread_acquire_lock", "x"]);
        let l = lock(0x1000);
        b.add(&SampleInput { parked: Some(&l), ..input(1, &n, off(4_000, 2, 3_000)) });
        let mut p = b.finish(TargetInfo::default());
        attach(&mut p, &BlameCollector::new().finish());
        let lines: Vec<(String, u64)> = folded_lines(&p).into_iter().map(|(path, us)| (path.join(";"), us)).collect();
        assert_eq!(lines, vec![("[lock: _thread.lock @ 0x1000];[holder not sampled]".to_string(), 4_000)]);
        assert_eq!(p.locks[0].held_by[0].line, NOT_SAMPLED);
    }

    #[test]
    fn identical_observations_are_interned() {
        let mut c = BlameCollector::new();
        let s = pystack(vec![code("slow", APP, 5)]);
        for _ in 0..1000 {
            c.observe(1, 0x1000, Some((3, Some(s.clone()))), false, 10);
        }
        assert_eq!(c.distinct(), 1);
        let d = c.finish();
        assert_eq!((d.observations[0].count, d.observations[0].weight_ns), (1000, 10_000.0));
    }
}
