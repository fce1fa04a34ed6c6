//! The streaming engine: what a recording keeps while the target runs.
//!
//! Each CPU sample or off-CPU observation arrives already unwound (native return addresses) with
//! the Python stack read from the target; it is reduced to an interned [`SampleKey`] and a count,
//! so memory grows with the number of *distinct* stacks, never with the number of samples or
//! the duration. Switch records go through the [`OffCpuTracker`]; every completed off-CPU
//! interval is added to the key that explains it, with the weight of
//! [`crate::offcpu::Interval::weight`], or counted as runqueue time (preempted) or as
//! unexplained blocked time (blocked, not observed).
//!
//! [`Collector::finish`] returns a [`Collection`]: one [`Entry`] per distinct key with its CPU
//! samples and off-CPU totals. Per thread, the blocked time and the number of blocked intervals
//! are exact (from the switch records); observed entries are scaled so that they add up to them
//! (a ratio estimate: the split between stacks is estimated, the thread's total is not).
//! Symbolization and classification happen afterwards, once per entry.

use std::collections::HashMap;
use std::sync::Arc;

use frames::python::{ObjectRef, ParkedInfo, PyFrame, PyStack};

use crate::concurrency::{Overlap, Touch};

use crate::offcpu::{Interval, Observed, OffCpuTracker, ThreadState, TrackerStats};

/// Everything that decides how a sample is shown and classified, with addresses unresolved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SampleKey {
    pub pid: u32,
    pub tid: u32,
    /// Native addresses, leaf first: the sampled ip, then return addresses.
    pub native: Vec<u64>,
    /// The native unwinder reached the outermost frame.
    pub native_complete: bool,
    /// Interned Python stack ([`Collector::python_id`]).
    pub python: Option<u32>,
    /// Kernel addresses, leaf first (CPU samples taken in the kernel).
    pub kernel: Vec<u64>,
    /// What a parked thread waited on.
    pub parked: Option<ParkedInfo>,
    /// The system call a blocked thread was in, when read from `/proc`.
    pub syscall: Option<u64>,
    /// A CPU sample (else an off-CPU observation).
    pub on_cpu: bool,
    /// No other thread of the process was alive (nobody else could hold a lock).
    pub alone: bool,
    /// CPU samples: the object the innermost Python frame's instruction names, read from the
    /// target (`symbolizer::python::operand`).
    pub operand: Option<ObjectRef>,
}

/// Off-CPU totals of one entry.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WaitTotals {
    /// Estimated off-CPU time (µs).
    pub time_us: u64,
    /// Estimated number of off-CPU intervals.
    pub waits: u64,
    /// Longest observed interval (µs, exact).
    pub max_us: u64,
    /// Intervals actually observed.
    pub observed: u64,
}

/// What an entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// CPU samples.
    Cpu,
    /// Observed blocked intervals.
    Blocked,
    /// Observed preempted intervals (exact mode: a yield in a spin loop is told apart).
    Preempted,
    /// Preempted intervals without a stack: exact runqueue time.
    Runqueue,
    /// Blocked time of a thread none of whose intervals was observed.
    Unobserved,
}

/// One distinct sample key and what it accumulated.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: EntryKind,
    pub key: SampleKey,
    pub python: Option<PyStack>,
    /// CPU samples (kind `Cpu`).
    pub samples: u64,
    /// Of `samples`, those taken while another thread of the process was on a CPU working on
    /// the same object or function ([`crate::concurrency`]; all of them when samples were
    /// counted without a time).
    pub concurrent: u64,
    pub wait: WaitTotals,
}

/// Counters of the recording's completeness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectStats {
    pub cpu_samples: u64,
    /// Off-CPU intervals seen (exact).
    pub intervals: u64,
    /// Blocked intervals that had an observation.
    pub observed_intervals: u64,
    pub tracker: TrackerStats,
    /// Threads whose blocked/runqueue split came from the ticks rather than the kernel's
    /// run-delay accounting (see [`Collector::finish`]).
    pub sched_corrected: u64,
}

#[derive(Default, Clone, Copy)]
struct WaitAgg {
    time_ns: f64,
    count: f64,
    max_ns: u64,
    observed: u64,
    /// Of `time_ns`, how many whole intervals (switch-out to switch-in, observed at the
    /// switch-out) it holds: each also holds the thread's wait for a CPU after its wake-up.
    whole: f64,
}

/// Exact scheduler totals of one thread over the recording (from the kernel's per-thread
/// accounting, in sampled mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedTotals {
    pub blocked_ns: u64,
    /// Times it blocked (voluntary context switches).
    pub blocked_count: u64,
    pub runqueue_ns: u64,
    /// Times it was preempted or yielded (involuntary context switches).
    pub runqueue_count: u64,
    /// Of `runqueue_ns`, the time after wake-ups (known from the kernel's events only): it
    /// belongs to the waits the thread was woken from, and is shown at their stacks.
    pub woken_runqueue_ns: u64,
    /// The split comes from the kernel's switch and wake-up events (BPF): exact, never
    /// overruled by the ticks (which see a woken thread still in its system call as blocked).
    pub exact: bool,
}

#[derive(Default, Clone, Copy)]
struct ThreadTimes {
    pid: u32,
    exited: bool,
    /// Sampled mode: the wait being observed (key) and how much time it has stood for so far.
    episode: Option<(u32, f64)>,
    /// The kernel's exact totals, when known: they replace what the intervals add up to (an
    /// interval from switch-out to switch-in also holds the wait for a CPU after the wake-up).
    sched: Option<SchedTotals>,
    /// Sampled mode: ticks that saw the thread blocked.
    blocked_ticks: u64,
    blocked_ns: u64,
    blocked_count: u64,
    observed_ns: f64,
    observed_count: f64,
    runqueue_ns: u64,
    runqueue_count: u64,
}

/// An event for the tracker, held until every record up to its time has been drained.
#[derive(Clone, Debug)]
enum Timed {
    Switch { pid: u32, tid: u32, out: bool, preempted: bool },
    Exit { tid: u32 },
    Observe { tid: u32, key: u32, exact: bool, gap_ns: u64 },
    Lost,
}

/// Values stored once and referred to by index.
struct Interner<T> {
    ids: HashMap<Arc<T>, u32>,
    list: Vec<Arc<T>>,
}

impl<T> Clone for Interner<T> {
    fn clone(&self) -> Self {
        Interner { ids: self.ids.clone(), list: self.list.clone() }
    }
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner { ids: HashMap::new(), list: Vec::new() }
    }
}

impl<T: std::hash::Hash + Eq> Interner<T> {
    fn id(&mut self, v: T) -> u32 {
        if let Some(&id) = self.ids.get(&v) {
            return id;
        }
        let v = Arc::new(v);
        let id = self.list.len() as u32;
        self.list.push(v.clone());
        self.ids.insert(v, id);
        id
    }

    fn get(&self, id: u32) -> &T {
        &self.list[id as usize]
    }
}

/// A [`SampleKey`] as kept: the leaf address apart, the callers' addresses, the kernel stack and
/// the parked-on lock interned (CPU samples of one stack differ only in their leaf), so a
/// distinct key costs a few dozen bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct CompactKey {
    pid: u32,
    tid: u32,
    leaf: Option<u64>,
    callers: u32,
    native_complete: bool,
    python: Option<u32>,
    kernel: u32,
    parked: Option<u32>,
    syscall: Option<u64>,
    on_cpu: bool,
    alone: bool,
    operand: Option<u32>,
}

/// Python stacks are interned by the identity of their frames.
type PyKey = (Vec<(usize, u32, u16, bool)>, bool, i32);

fn py_key(s: &PyStack) -> PyKey {
    let frames = s
        .frames
        .iter()
        .map(|f| match f {
            PyFrame::Code { code, lasti, instr, .. } => {
                (Arc::as_ptr(code) as usize, *lasti, instr.unwrap_or(0), instr.is_some())
            }
            PyFrame::Entry => (0, 0, 0, false),
        })
        .collect();
    (frames, s.truncated, s.state)
}

/// Python stacks stored once and referred to by index.
#[derive(Clone, Default)]
pub(crate) struct PyInterner {
    ids: HashMap<PyKey, u32>,
    list: Vec<PyStack>,
}

impl PyInterner {
    pub(crate) fn id(&mut self, stack: PyStack) -> u32 {
        let k = py_key(&stack);
        if let Some(&id) = self.ids.get(&k) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(stack);
        self.ids.insert(k, id);
        id
    }

    pub(crate) fn get(&self, id: u32) -> Option<&PyStack> {
        self.list.get(id as usize)
    }
}

/// Objects named on one line: address → (samples, immortal, interned operand).
type LineObjects = HashMap<u64, (u64, bool, u32)>;

/// See the module documentation. `Clone` lets a live view finish a copy while recording goes
/// on (`ftprof top`).
#[derive(Default, Clone)]
pub struct Collector {
    keys: Interner<CompactKey>,
    addrs: Interner<Vec<u64>>,
    parked: Interner<ParkedInfo>,
    operands: Interner<ObjectRef>,
    /// Per CPU key, samples with concurrency evidence (see [`crate::concurrency`]).
    concurrent: HashMap<u32, u64>,
    overlap: Option<Overlap>,
    decided: Vec<(u32, bool)>,
    /// Per thread and innermost Python line (tid, code object, line), the objects its CPU
    /// samples named so far (how often; immortal): a sample there whose instruction names none
    /// works on the most named one. Per thread: two threads on one line of a parallel loop work
    /// on their own objects (each its own `i`) unless they name the same one.
    line_objects: HashMap<(u32, u64, i32), LineObjects>,
    py: PyInterner,
    cpu: HashMap<u32, u64>,
    waits: HashMap<(u32, bool), WaitAgg>,
    /// Sampled mode, with the kernel's events: time the ticks saw threads waiting for a CPU
    /// after a preemption, per key (ns).
    preempted: HashMap<u32, f64>,
    threads: HashMap<u32, ThreadTimes>,
    /// Threads of each process seen and not exited (kept with `threads`: asked per sample).
    live_by_pid: HashMap<u32, usize>,
    tracker: OffCpuTracker<u32>,
    /// Events waiting for [`Collector::release`], with their time and arrival order.
    pending: Vec<(u64, u64, Timed)>,
    seq: u64,
    pub stats: CollectStats,
}

/// The object named most on a line (ties: the lowest address): (address, immortal, operand).
fn most_named(m: &LineObjects) -> Option<(u64, bool, u32)> {
    m.iter().max_by(|a, b| a.1 .0.cmp(&b.1 .0).then_with(|| b.0.cmp(a.0))).map(|(&addr, &(_, im, id))| (addr, im, id))
}

impl Collector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Intern a Python stack.
    pub fn python_id(&mut self, stack: PyStack) -> u32 {
        self.py.id(stack)
    }

    /// Intern a sample key.
    pub fn key_id(&mut self, key: SampleKey) -> u32 {
        let SampleKey {
            pid,
            tid,
            mut native,
            native_complete,
            python,
            kernel,
            parked,
            syscall,
            on_cpu,
            alone,
            operand,
        } = key;
        let leaf = (!native.is_empty()).then(|| native.remove(0));
        let compact = CompactKey {
            pid,
            tid,
            leaf,
            callers: self.addrs.id(native),
            native_complete,
            python,
            kernel: self.addrs.id(kernel),
            parked: parked.map(|p| self.parked.id(p)),
            syscall,
            on_cpu,
            alone,
            operand: operand.map(|o| self.operands.id(o)),
        };
        self.keys.id(compact)
    }

    /// How many distinct keys are interned (ids are `0..key_count()`, in order of interning).
    pub fn key_count(&self) -> usize {
        self.keys.list.len()
    }

    /// The native stack of key `id`, leaf first.
    pub fn native_of(&self, id: u32) -> impl Iterator<Item = u64> + '_ {
        let k = self.keys.get(id);
        k.leaf.into_iter().chain(self.addrs.get(k.callers).iter().copied())
    }

    /// The full key of an id.
    fn key(&self, id: u32) -> SampleKey {
        let k = *self.keys.get(id);
        let mut native = Vec::with_capacity(self.addrs.get(k.callers).len() + 1);
        native.extend(k.leaf);
        native.extend_from_slice(self.addrs.get(k.callers));
        SampleKey {
            pid: k.pid,
            tid: k.tid,
            native,
            native_complete: k.native_complete,
            python: k.python,
            kernel: self.addrs.get(k.kernel).clone(),
            parked: k.parked.map(|p| self.parked.get(p).clone()),
            syscall: k.syscall,
            on_cpu: k.on_cpu,
            alone: k.alone,
            operand: k.operand.map(|o| self.operand_of(&k, o)),
        }
    }

    /// The object of key `k`'s instruction (interned `id`); when its thread owns it (its own
    /// increments are not atomic, so a refcount stall there is on another object), the object
    /// the thread's samples on the same line named most, if any (`acc += x * two` in a loop over
    /// a shared list: not the thread's own `acc`, the list's `x`).
    fn operand_of(&self, k: &CompactKey, id: u32) -> ObjectRef {
        let o = self.operands.get(id);
        if !o.owned {
            return o.clone();
        }
        self.line_of(k)
            .and_then(|at| self.line_objects.get(&at))
            .and_then(most_named)
            .map(|(_, _, other)| self.operands.get(other).clone())
            .unwrap_or_else(|| o.clone())
    }

    /// (tid, code object, line) of a key's innermost Python frame.
    fn line_of(&self, k: &CompactKey) -> Option<(u32, u64, i32)> {
        self.py.list[k.python? as usize].frames.iter().find_map(|f| match f {
            PyFrame::Code { code_addr, line, .. } => line.map(|l| (k.tid, *code_addr, l)),
            PyFrame::Entry => None,
        })
    }

    /// What the thread of key `id` was parked on, if anything.
    pub fn parked_of(&self, id: u32) -> Option<&ParkedInfo> {
        self.keys.list.get(id as usize).and_then(|k| k.parked).map(|p| self.parked.get(p))
    }

    /// The Python stack of key `id`, if it has one.
    pub fn python_of(&self, id: u32) -> Option<&PyStack> {
        self.keys.list.get(id as usize).and_then(|k| k.python).and_then(|p| self.py.get(p))
    }

    /// Distinct keys and Python stacks kept so far.
    pub fn distinct(&self) -> (usize, usize) {
        (self.keys.list.len(), self.py.list.len())
    }

    /// A CPU sample counted without its time: it counts as concurrent (see
    /// [`Collector::cpu_sample_at`]).
    pub fn cpu_sample(&mut self, key: u32) {
        *self.cpu.entry(key).or_default() += 1;
        *self.concurrent.entry(key).or_default() += 1;
        self.stats.cpu_samples += 1;
    }

    /// Decide concurrency of timed CPU samples: two samples of different threads of a process
    /// within `window_ns` of each other, on the same object or function ([`crate::concurrency`]).
    pub fn set_overlap_window(&mut self, window_ns: u64) {
        self.overlap = Some(Overlap::new(window_ns));
    }

    /// A CPU sample taken at `time` (CLOCK_MONOTONIC ns); without
    /// [`Collector::set_overlap_window`] it is counted as by [`Collector::cpu_sample`].
    pub fn cpu_sample_at(&mut self, key: u32, time: u64) {
        if self.overlap.is_none() {
            return self.cpu_sample(key);
        }
        let touch = self.touch_settled(key);
        let overlap = self.overlap.as_mut().expect("checked");
        *self.cpu.entry(key).or_default() += 1;
        self.stats.cpu_samples += 1;
        overlap.push(time, key, touch, &mut self.decided);
        self.count_decided();
    }

    fn count_decided(&mut self) {
        for (key, concurrent) in self.decided.drain(..) {
            if concurrent {
                *self.concurrent.entry(key).or_default() += 1;
            }
        }
    }

    /// What the sample of `key` was working on: the object its instruction names, else the one
    /// its thread's samples on the same line named most so far.
    fn touch_settled(&mut self, key: u32) -> Touch {
        let k = *self.keys.get(key);
        let (code, line) = k
            .python
            .and_then(|i| {
                self.py.list[i as usize].frames.iter().find_map(|f| match f {
                    PyFrame::Code { code_addr, line, .. } => Some((*code_addr, *line)),
                    PyFrame::Entry => None,
                })
            })
            .unwrap_or((0, None));
        // An object the thread owns is not what a refcount stall of its was on (see
        // `operand_of`): as if the instruction named none.
        let named = k
            .operand
            .map(|id| (self.operands.get(id), id))
            .filter(|(o, _)| !o.owned)
            .map(|(o, id)| (o.addr, o.immortal, id));
        let at = line.map(|l| (k.tid, code, l));
        let object = match (named, at) {
            (Some((addr, immortal, id)), Some(at)) => {
                self.line_objects.entry(at).or_default().entry(addr).or_insert((0, immortal, id)).0 += 1;
                Some((addr, immortal))
            }
            (named, None) => named.map(|(addr, immortal, _)| (addr, immortal)),
            (None, Some(at)) => self.line_objects.get(&at).and_then(most_named).map(|(addr, im, _)| (addr, im)),
        };
        // An immortal object is nobody's contention (its count is never written): unknown.
        let object = object.filter(|&(_, immortal)| !immortal).map_or(0, |(addr, _)| addr);
        Touch { pid: k.pid, tid: k.tid, object, code }
    }

    fn thread(&mut self, tid: u32, pid: u32) -> &mut ThreadTimes {
        let t = self.threads.entry(tid).or_default();
        if pid != 0 && t.pid != pid {
            if !t.exited {
                if let Some(n) = self.live_by_pid.get_mut(&t.pid) {
                    *n -= 1;
                }
                *self.live_by_pid.entry(pid).or_default() += 1;
            }
            t.pid = pid;
        }
        t
    }

    /// Queue a switch record (records of different CPUs arrive out of order: they are applied
    /// in time order by [`Collector::release`]).
    pub fn push_switch(&mut self, pid: u32, tid: u32, time: u64, out: bool, preempted: bool) {
        self.push(time, Timed::Switch { pid, tid, out, preempted });
    }

    /// Queue an observation (see [`Collector::observe`]).
    pub fn push_observe(&mut self, tid: u32, time: u64, key: u32, exact: bool, gap_ns: u64) {
        self.push(time, Timed::Observe { tid, key, exact, gap_ns });
    }

    /// Queue a thread exit.
    pub fn push_exit(&mut self, tid: u32, time: u64) {
        self.push(time, Timed::Exit { tid });
    }

    /// Queue a loss of switch records, noticed at `time`.
    pub fn push_lost(&mut self, time: u64) {
        self.push(time, Timed::Lost);
    }

    fn push(&mut self, time: u64, ev: Timed) {
        self.seq += 1;
        self.pending.push((time, self.seq, ev));
    }

    /// Apply, in time order, every queued event stamped at or before `upto` (everything up to
    /// there has been drained from every ring).
    pub fn release(&mut self, upto: u64) {
        if let Some(o) = self.overlap.as_mut() {
            o.release(upto, &mut self.decided);
            self.count_decided();
        }
        if self.pending.is_empty() {
            return;
        }
        self.pending.sort_unstable_by_key(|(t, s, _)| (*t, *s));
        let n = self.pending.partition_point(|(t, _, _)| *t <= upto);
        let ready: Vec<(u64, u64, Timed)> = self.pending.drain(..n).collect();
        for (time, _, ev) in ready {
            match ev {
                Timed::Switch { pid, tid, out, preempted } => self.switch(pid, tid, time, out, preempted),
                Timed::Exit { tid } => self.exit(tid, time),
                Timed::Observe { tid, key, exact, gap_ns } => self.observe(tid, time, key, exact, gap_ns),
                Timed::Lost => self.lost_switches(),
            }
        }
    }

    /// `(pid, tid)` of the threads alive now.
    pub fn live_thread_list(&self) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> =
            self.threads.iter().filter(|(_, t)| !t.exited && t.pid != 0).map(|(&tid, t)| (t.pid, tid)).collect();
        v.sort_unstable();
        v
    }

    /// Threads of `pid` alive now.
    pub fn live_threads_of(&self, pid: u32) -> usize {
        self.live_by_pid.get(&pid).copied().unwrap_or(0)
    }

    /// Threads alive now (seen and not exited).
    pub fn live_threads(&self) -> usize {
        self.threads.values().filter(|t| !t.exited).count()
    }

    /// A thread of `pid` exists (e.g. created, or found at attach) even if it has not been
    /// scheduled yet.
    pub fn thread_seen(&mut self, pid: u32, tid: u32) {
        self.thread(tid, pid);
    }

    /// A switch record of thread `tid` of process `pid`, applied now.
    pub fn switch(&mut self, pid: u32, tid: u32, time: u64, out: bool, preempted: bool) {
        self.thread(tid, pid);
        if out {
            self.tracker.switch_out(tid, time, preempted);
        } else {
            self.tracker.switch_in(tid, time);
        }
        self.absorb();
    }

    /// An observation of a thread off CPU: `exact` for a sample at the switch-out itself,
    /// else a tick's snapshot with `gap_ns` since the previous tick.
    pub fn observe(&mut self, tid: u32, time: u64, key: u32, exact: bool, gap_ns: u64) {
        self.tracker.observe(tid, Observed { time, payload: key, exact, gap_ns });
    }

    /// Sampled mode, with the kernel's events: thread `tid` was seen waiting for a CPU after a
    /// preemption (or a yield) by a tick that stands for `gap_ns`. Its runqueue time after
    /// preemptions is split between such keys (see [`Collector::finish`]).
    pub fn observe_preempted(&mut self, pid: u32, tid: u32, key: u32, gap_ns: u64) {
        self.thread(tid, pid);
        *self.preempted.entry(key).or_default() += gap_ns as f64;
    }

    /// Sampled mode: thread `tid` was seen blocked by a tick that stands for `gap_ns`;
    /// `continued`: it has not run since its previous observation (still the same wait).
    pub fn observe_blocked(&mut self, pid: u32, tid: u32, key: u32, gap_ns: u64, continued: bool) {
        let t = self.thread(tid, pid);
        let same = continued && t.episode.is_some_and(|(k, _)| k == key);
        let ended = if same { None } else { t.episode.replace((key, 0.0)) };
        if let Some((_, acc)) = t.episode.as_mut() {
            *acc += gap_ns as f64;
        }
        t.observed_ns += gap_ns as f64;
        t.blocked_ticks += 1;
        if !same {
            t.observed_count += 1.0;
        }
        if let Some((k, acc)) = ended {
            let a = self.waits.entry((k, false)).or_default();
            a.max_ns = a.max_ns.max(acc as u64);
        }
        let a = self.waits.entry((key, false)).or_default();
        a.time_ns += gap_ns as f64;
        if !same {
            a.count += 1.0;
            a.observed += 1;
            self.stats.observed_intervals += 1;
        }
    }

    /// The kernel's exact scheduler totals of thread `tid` so far (replacing earlier ones). They
    /// take precedence over the switch records: blocked time is split between the observed
    /// stacks in proportion to what they observed, and runqueue time (waiting for a CPU, also
    /// after a wake-up) is reported as such.
    pub fn set_sched(&mut self, pid: u32, tid: u32, totals: SchedTotals) {
        self.thread(tid, pid).sched = Some(totals);
    }

    /// A thread blocked since before the recording began (attach): its interval starts at
    /// `since`.
    pub fn assume_blocked(&mut self, pid: u32, tid: u32, since: u64) {
        self.thread(tid, pid);
        self.tracker.assume_blocked(tid, since);
    }

    pub fn exit(&mut self, tid: u32, time: u64) {
        self.tracker.exit(tid, time);
        if let Some(t) = self.threads.get_mut(&tid) {
            if !t.exited {
                if let Some(n) = self.live_by_pid.get_mut(&t.pid) {
                    *n -= 1;
                }
            }
            t.exited = true;
        }
        self.absorb();
    }

    /// Switch records were lost.
    pub fn lost_switches(&mut self) {
        self.tracker.lost();
    }

    pub fn thread_state(&self, tid: u32) -> ThreadState {
        self.tracker.state(tid)
    }

    fn absorb(&mut self) {
        for iv in self.tracker.take_intervals() {
            self.add_interval(iv);
        }
    }

    fn add_interval(&mut self, iv: Interval<u32>) {
        let d = iv.duration_ns();
        let w = iv.weight();
        self.stats.intervals += 1;
        let t = self.threads.entry(iv.tid).or_default();
        match (&iv.observed, iv.preempted) {
            (None, true) => {
                t.runqueue_ns += d;
                t.runqueue_count += 1;
            }
            (Some(o), preempted) => {
                // Exact observations only (`--exact-waits`): a tick's weight stands for the
                // time it saw the thread blocked.
                let whole = if o.exact && w.time_ns == d as f64 { 1.0 } else { 0.0 };
                if !preempted {
                    t.blocked_ns += d;
                    t.blocked_count += 1;
                    t.observed_ns += w.time_ns;
                    t.observed_count += w.count;
                }
                self.stats.observed_intervals += 1;
                let a = self.waits.entry((o.payload, preempted)).or_default();
                a.whole += whole;
                a.time_ns += w.time_ns;
                a.count += w.count;
                a.max_ns = a.max_ns.max(d);
                a.observed += 1;
            }
            (None, false) => {
                t.blocked_ns += d;
                t.blocked_count += 1;
            }
        }
    }

    /// Per thread, the kernel's exact totals replace what the switch records added up to.
    fn apply_sched(&mut self) {
        for t in self.threads.values_mut() {
            if let Some(k) = t.sched {
                t.blocked_ns = k.blocked_ns;
                t.blocked_count = k.blocked_count;
                t.runqueue_ns = k.runqueue_ns;
                t.runqueue_count = k.runqueue_count;
                // The kernel's run-delay accounting can count time a thread spent blocked as
                // time spent waiting for a CPU (seen on 6.1x kernels whose scheduler keeps a
                // blocking task queued for a while). Time off CPU in total is exact either way;
                // when the ticks saw the thread blocked for clearly longer (beyond twice their
                // sampling error) than the kernel says, their split is used.
                let n = t.blocked_ticks as f64;
                if n >= 4.0 && !k.exact {
                    let sampled = t.observed_ns;
                    let lower = sampled * (1.0 - 2.0 / n.sqrt());
                    if (t.blocked_ns as f64) < lower {
                        let off = t.blocked_ns + t.runqueue_ns;
                        t.blocked_ns = (sampled as u64).min(off);
                        t.runqueue_ns = off - t.blocked_ns;
                        self.stats.sched_corrected += 1;
                    }
                }
            }
        }
    }

    /// Close open intervals at `end` and return everything aggregated.
    pub fn finish(mut self, end: u64) -> Collection {
        self.settle(end);
        let woken_delay = self.woken_delay();
        let scale = self.blocked_scaling(&woken_delay);
        let has_sched: std::collections::HashSet<u32> =
            self.threads.iter().filter(|(_, t)| t.sched.is_some()).map(|(&tid, _)| tid).collect();
        let mut entries = Vec::new();
        // Per thread, the stacks its runqueue time is split between: blocked entries (weighted
        // by their number of waits) for the time after wake-ups; for the time after
        // preemptions, the stacks the ticks saw it preempted at (by time), else its CPU
        // samples' stacks.
        let mut woke_from: Split = HashMap::new();
        let mut preempted_at: Split = HashMap::new();
        self.cpu_entries(&mut entries, &mut preempted_at);
        let mut waits: Vec<((u32, bool), WaitAgg)> = std::mem::take(&mut self.waits).into_iter().collect();
        waits.sort_unstable_by_key(|(k, _)| *k);
        for ((id, preempted), a) in waits {
            let key = self.key(id);
            if preempted && has_sched.contains(&key.tid) {
                continue; // its runqueue time comes from the kernel's total
            }
            let (ts, cs) = if preempted { (1.0, 1.0) } else { scale.get(&key.tid).copied().unwrap_or((1.0, 1.0)) };
            let observed = if preempted { a.time_ns } else { self.blocked_part(&woken_delay, id, &a) };
            let python = self.py_of(&key);
            if !preempted {
                woke_from.entry(key.tid).or_default().push((key.clone(), python.clone(), a.count * cs));
            }
            entries.push(Entry {
                kind: if preempted { EntryKind::Preempted } else { EntryKind::Blocked },
                python,
                key,
                samples: 0,
                concurrent: 0,
                wait: WaitTotals {
                    time_us: (observed * ts / 1000.0).round() as u64,
                    waits: (a.count * cs).round().max(1.0) as u64,
                    max_us: a.max_ns / 1000,
                    observed: a.observed,
                },
            });
        }
        let mut threads: Vec<(u32, ThreadTimes)> = std::mem::take(&mut self.threads).into_iter().collect();
        threads.sort_unstable_by_key(|(tid, _)| *tid);
        let unobserved_us = thread_entries(&threads, &woke_from, &preempted_at, &mut entries);
        let blocked_us = threads.iter().map(|(_, t)| t.blocked_ns / 1000).sum();
        let runqueue_us = threads.iter().map(|(_, t)| t.runqueue_ns / 1000).sum();
        Collection {
            entries,
            stats: std::mem::take(&mut self.stats),
            distinct_keys: self.keys.list.len(),
            blocked_us,
            runqueue_us,
            unobserved_us,
        }
    }

    /// Everything still queued or open, applied: the overlap's last decisions, the pending
    /// events, the tracker's open intervals, the episodes' longest waits, the kernel's totals.
    fn settle(&mut self, end: u64) {
        if let Some(mut o) = self.overlap.take() {
            o.flush(&mut self.decided);
            self.count_decided();
        }
        self.release(u64::MAX);
        self.tracker.finish(end);
        self.absorb();
        self.stats.tracker = self.tracker.stats;
        for t in self.threads.values_mut() {
            if let Some((k, acc)) = t.episode.take() {
                let a = self.waits.entry((k, false)).or_default();
                a.max_ns = a.max_ns.max(acc as u64);
            }
        }
        self.apply_sched();
        // Off-CPU intervals: the kernel's counts where known, else the switch records'.
        self.stats.intervals = self.threads.values().map(|t| t.blocked_count + t.runqueue_count).sum();
    }

    /// Per thread, the wait for a CPU after each wake-up, on average, when the kernel's events
    /// measured it: a whole interval observed holds one, whatever it waited on, so it is taken
    /// off each (not in proportion: a short lock hand-off waits as long for a CPU as a long
    /// sleep does, and a proportional share would book it as blocked time).
    fn woken_delay(&self) -> HashMap<u32, f64> {
        self.threads
            .iter()
            .filter_map(|(&tid, t)| {
                let k = t.sched.filter(|k| k.exact && k.blocked_count > 0)?;
                Some((tid, k.woken_runqueue_ns.min(k.runqueue_ns) as f64 / k.blocked_count as f64))
            })
            .collect()
    }

    /// The blocked part of a wait entry's observed time (see [`Collector::woken_delay`]).
    fn blocked_part(&self, woken_delay: &HashMap<u32, f64>, id: u32, a: &WaitAgg) -> f64 {
        match woken_delay.get(&self.keys.get(id).tid) {
            // Never below a tenth of what was observed: the delay is an average.
            Some(m) => (a.time_ns - a.whole * m).max(0.1 * a.time_ns),
            None => a.time_ns,
        }
    }

    /// Per thread, the ratios scaling its observed blocked time (less its waits' time for a
    /// CPU after their wake-ups) and its observed waits to the exact totals.
    fn blocked_scaling(&self, woken_delay: &HashMap<u32, f64>) -> HashMap<u32, (f64, f64)> {
        let mut taken_off: HashMap<u32, f64> = HashMap::new();
        // Summed in a fixed order (not a hash map's): the same inputs give the same bits.
        let mut in_order: Vec<(&(u32, bool), &WaitAgg)> = self.waits.iter().collect();
        in_order.sort_unstable_by_key(|(k, _)| **k);
        for (&(id, preempted), a) in in_order {
            if !preempted {
                *taken_off.entry(self.keys.get(id).tid).or_default() +=
                    a.time_ns - self.blocked_part(woken_delay, id, a);
            }
        }
        self.threads
            .iter()
            .filter(|(_, t)| t.observed_ns > 0.0)
            .map(|(&tid, t)| {
                let observed = (t.observed_ns - taken_off.get(&tid).copied().unwrap_or(0.0)).max(1.0);
                (tid, (t.blocked_ns as f64 / observed, t.blocked_count as f64 / t.observed_count.max(1e-9)))
            })
            .collect()
    }

    fn py_of(&self, k: &SampleKey) -> Option<PyStack> {
        k.python.map(|i| self.py.list[i as usize].clone())
    }

    /// The CPU samples' entries; the stacks the ticks saw threads preempted at (else their CPU
    /// samples') for their runqueue time after preemptions.
    fn cpu_entries(&mut self, entries: &mut Vec<Entry>, preempted_at: &mut Split) {
        let mut cpu: Vec<(u32, u64)> = std::mem::take(&mut self.cpu).into_iter().collect();
        cpu.sort_unstable();
        let mut seen_preempted: Vec<(u32, f64)> = std::mem::take(&mut self.preempted).into_iter().collect();
        seen_preempted.sort_unstable_by_key(|&(id, _)| id);
        for (id, ns) in seen_preempted {
            let key = self.key(id);
            let python = self.py_of(&key);
            preempted_at.entry(key.tid).or_default().push((key, python, ns));
        }
        let observed_preempted: std::collections::HashSet<u32> = preempted_at.keys().copied().collect();
        for (id, n) in cpu {
            let key = self.key(id);
            let python = self.py_of(&key);
            if !observed_preempted.contains(&key.tid) {
                preempted_at.entry(key.tid).or_default().push((key.clone(), python.clone(), n as f64));
            }
            entries.push(Entry {
                kind: EntryKind::Cpu,
                python,
                key,
                samples: n,
                concurrent: self.concurrent.get(&id).copied().unwrap_or(0).min(n),
                wait: WaitTotals::default(),
            });
        }
    }
}

/// Per thread, stacks with weights (see [`Collector::finish`]).
type Split = HashMap<u32, Vec<(SampleKey, Option<PyStack>, f64)>>;

/// Each thread's runqueue entries and its blocked time no sample saw; returns the latter (µs).
fn thread_entries(
    threads: &[(u32, ThreadTimes)],
    woke_from: &Split,
    preempted_at: &Split,
    entries: &mut Vec<Entry>,
) -> u64 {
    let mut unobserved_us = 0;
    for (tid, t) in threads {
        let base = SampleKey { pid: t.pid, tid: *tid, ..Default::default() };
        runqueue_entries(*tid, t, woke_from.get(tid), preempted_at.get(tid), entries);
        if t.observed_ns == 0.0 && t.blocked_ns > 0 {
            unobserved_us += t.blocked_ns / 1000;
            entries.push(Entry {
                kind: EntryKind::Unobserved,
                key: base,
                python: None,
                samples: 0,
                concurrent: 0,
                wait: WaitTotals { time_us: t.blocked_ns / 1000, waits: t.blocked_count, max_us: 0, observed: 0 },
            });
        }
    }
    unobserved_us
}

/// Where thread `tid`'s runqueue time goes (see [`Collector::finish`]): `woke_from`, its blocked
/// entries with their weights; `preempted_at`, where it was seen preempted (or its CPU stacks).
fn runqueue_entries(
    tid: u32,
    t: &ThreadTimes,
    woke_from: Option<&Vec<(SampleKey, Option<PyStack>, f64)>>,
    preempted_at: Option<&Vec<(SampleKey, Option<PyStack>, f64)>>,
    entries: &mut Vec<Entry>,
) {
    // Waiting for a CPU, at the stacks it happened at when the kernel's events told the
    // time after wake-ups apart (else one `[runqueue]` entry per thread): after a wake-up
    // the thread is still in the wait it was woken from (a lock's acquire line); after a
    // preemption it is where the ticks saw it waiting (else where its CPU samples were).
    // What has no stack to go to stays one `[runqueue]` entry.
    let mut left = (t.runqueue_ns / 1000, t.runqueue_count);
    let exact = t.sched.filter(|k| k.exact);
    let woken = exact.map_or(0, |k| k.woken_runqueue_ns.min(t.runqueue_ns)) / 1000;
    let woken_count = t.blocked_count.min(t.runqueue_count);
    let parts = if exact.is_none() {
        [(0, 0, None), (0, 0, None)]
    } else {
        [(woken, woken_count, woke_from), (left.0 - woken, t.runqueue_count - woken_count, preempted_at)]
    };
    for (time_us, count, at) in parts {
        let Some(at) = at.filter(|_| time_us > 0) else { continue };
        let weights: Vec<(usize, f64)> = at.iter().enumerate().map(|(i, (_, _, w))| (i, *w)).collect();
        for (i, (time, n)) in split(time_us, count, &weights) {
            left.0 -= time;
            left.1 = left.1.saturating_sub(n);
            let n = n.max(1);
            let (key, python, _) = &at[i];
            entries.push(Entry {
                kind: EntryKind::Runqueue,
                key: key.clone(),
                python: python.clone(),
                samples: 0,
                concurrent: 0,
                wait: WaitTotals { time_us: time, waits: n, max_us: 0, observed: 0 },
            });
        }
    }
    if left.0 > 0 {
        entries.push(Entry {
            kind: EntryKind::Runqueue,
            key: SampleKey { pid: t.pid, tid, ..Default::default() },
            python: None,
            samples: 0,
            concurrent: 0,
            wait: WaitTotals { time_us: left.0, waits: left.1, max_us: 0, observed: 0 },
        });
    }
}

/// `time_us` and `count` split between entries in proportion to their weights (largest
/// remainders, so the parts add up exactly); parts with no time are left out.
fn split(time_us: u64, count: u64, at: &[(usize, f64)]) -> Vec<(usize, (u64, u64))> {
    let total: f64 = at.iter().map(|&(_, w)| w).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let weights: Vec<f64> = at.iter().map(|&(_, w)| w).collect();
    let share = |amount: u64| apportion(amount, &weights);
    let (times, counts) = (share(time_us), share(count));
    at.iter().zip(times.into_iter().zip(counts)).filter(|(_, (t, _))| *t > 0).map(|(&(i, _), tc)| (i, tc)).collect()
}

/// `amount` split in proportion to `weights` (positive total) by largest remainders: the parts
/// add up to `amount` exactly; ties go to the earlier weight.
pub(crate) fn apportion(amount: u64, weights: &[f64]) -> Vec<u64> {
    let total: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|&w| amount as f64 * w / total).collect();
    let mut out: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let mut rest = amount - out.iter().sum::<u64>().min(amount);
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for i in order {
        if rest == 0 {
            break;
        }
        out[i] += 1;
        rest -= 1;
    }
    out
}

/// The result of a recording, before symbolization.
#[derive(Clone, Debug, Default)]
pub struct Collection {
    pub entries: Vec<Entry>,
    pub stats: CollectStats,
    pub distinct_keys: usize,
    /// Exact blocked time of all threads (µs).
    pub blocked_us: u64,
    /// Exact runqueue time of all threads (µs).
    pub runqueue_us: u64,
    /// Blocked time of threads that had no observed interval (µs), shown as unobserved.
    pub unobserved_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_threads_per_process_follow_creation_and_exit() {
        let mut c = Collector::new();
        c.thread_seen(1, 10);
        c.thread_seen(1, 11);
        c.thread_seen(2, 20);
        c.thread_seen(1, 10); // seen again: counted once
        assert_eq!((c.live_threads_of(1), c.live_threads_of(2), c.live_threads_of(3)), (2, 1, 0));
        c.exit(11, 5);
        c.exit(11, 6); // a second exit record changes nothing
        c.exit(99, 7); // never seen
        assert_eq!((c.live_threads_of(1), c.live_threads_of(2)), (1, 1));
        assert_eq!(c.live_threads(), 2);
    }

    fn key(c: &mut Collector, tid: u32, leaf: u64, on_cpu: bool) -> u32 {
        c.key_id(SampleKey { pid: 1, tid, native: vec![leaf], on_cpu, ..Default::default() })
    }

    /// Concurrency is decided on the object a sample's line works on when its own instruction
    /// names none (a stall in the refcount machinery under a `CALL`): the object its thread's
    /// samples on that line named most so far. Two threads, 1 ms apart, on one line:
    ///
    /// ```text
    ///   thread 10   O . . . O . . .      (O: instruction names the shared object; .: none)
    ///   thread 11   . O . . . O . .
    ///   line 2 of another function, thread 12: never names anything -> not concurrent
    /// ```
    #[test]
    fn an_object_the_thread_owns_gives_way_to_its_lines_shared_object() {
        // `for x in shared: acc += x * two`: the samples name the thread's own `acc` (its
        // updates are not atomic) or the shared list's `x`: those on `acc` are put on `x`, for
        // the evidence and for the overlap; a line with only owned objects keeps its own.
        use frames::python::{CodeInfo, PyFrame, PyStack};
        let ms = 1_000_000;
        let mut c = Collector::new();
        c.set_overlap_window(ms);
        let code = std::sync::Arc::new(CodeInfo::synthetic("step", "w.py", 1));
        let at = |c: &mut Collector, code_addr: u64, line: i32| {
            c.python_id(PyStack {
                frames: vec![PyFrame::Code {
                    code: code.clone(),
                    code_addr,
                    lasti: line as u32 * 2,
                    line: Some(line),
                    instr: None,
                }],
                ..Default::default()
            })
        };
        let (loop_line, other_line) = (at(&mut c, 0xc0de, 7), at(&mut c, 0xc0de, 9));
        let obj = |addr: u64, reached: &str, owned: bool| ObjectRef {
            addr,
            type_name: "float".into(),
            reached: reached.into(),
            owned,
            ..Default::default()
        };
        let key = |c: &mut Collector, tid: u32, leaf: u64, py: u32, o: ObjectRef| {
            c.key_id(SampleKey {
                pid: 1,
                tid,
                native: vec![leaf],
                on_cpu: true,
                python: Some(py),
                operand: Some(o),
                ..Default::default()
            })
        };
        let mut keys = Vec::new();
        for tid in [10u32, 11] {
            let acc = key(&mut c, tid, 0x10, loop_line, obj(0x7000 + tid as u64, "local `acc`", true));
            let x = key(&mut c, tid, 0x20, loop_line, obj(0x5000, "local `x`", false));
            let alone = key(&mut c, tid, 0x30, other_line, obj(0x8000 + tid as u64, "local `y`", true));
            keys.push((acc, x, alone));
        }
        for i in 0..20u64 {
            for (t, &(acc, x, alone)) in keys.iter().enumerate() {
                let t0 = i * 4 * ms + t as u64 * ms / 4;
                c.cpu_sample_at(x, t0);
                c.cpu_sample_at(acc, t0 + ms / 8);
                c.cpu_sample_at(alone, t0 + 2 * ms);
            }
        }
        c.release(u64::MAX);
        let col = c.finish(100 * ms);
        let entry =
            |leaf: u64, tid: u32| col.entries.iter().find(|e| e.key.native == [leaf] && e.key.tid == tid).unwrap();
        for tid in [10, 11] {
            let acc = entry(0x10, tid);
            assert_eq!(acc.key.operand.as_ref().map(|o| (o.addr, o.reached.as_str())), Some((0x5000, "local `x`")));
            // On the shared `x`, with the other thread there at the same time.
            assert!(acc.concurrent >= 18, "{} of {}", acc.concurrent, acc.samples);
            let alone = entry(0x30, tid);
            assert_eq!(alone.key.operand.as_ref().map(|o| o.addr), Some(0x8000 + tid as u64));
            assert!(alone.key.operand.as_ref().unwrap().owned);
        }
    }

    #[test]
    fn samples_that_name_no_object_work_on_their_lines_object() {
        use frames::python::{CodeInfo, PyFrame, PyStack};
        let ms = 1_000_000;
        let mut c = Collector::new();
        c.set_overlap_window(ms);
        let stack = |c: &mut Collector, code_addr: u64, line: i32| {
            let code = std::sync::Arc::new(CodeInfo::synthetic("f", "w.py", 1));
            let lasti = line as u32 * 2;
            c.python_id(PyStack {
                frames: vec![PyFrame::Code { code, code_addr, lasti, line: Some(line), instr: None }],
                ..Default::default()
            })
        };
        let shared = ObjectRef { addr: 0x5000, type_name: "function".into(), ..Default::default() };
        let mut keys = Vec::new();
        let py = stack(&mut c, 0xc0de, 7);
        for tid in [10, 11] {
            let named = c.key_id(SampleKey {
                pid: 1,
                tid,
                native: vec![0x10],
                on_cpu: true,
                python: Some(py),
                operand: Some(shared.clone()),
                ..Default::default()
            });
            let unnamed = c.key_id(SampleKey {
                pid: 1,
                tid,
                native: vec![0x20],
                on_cpu: true,
                python: Some(py),
                ..Default::default()
            });
            keys.push((named, unnamed));
        }
        let py = stack(&mut c, 0xc1de, 2);
        let other = c.key_id(SampleKey {
            pid: 1,
            tid: 12,
            native: vec![0x30],
            on_cpu: true,
            python: Some(py),
            ..Default::default()
        });
        for i in 0..40u64 {
            for (t, &(named, unnamed)) in keys.iter().enumerate() {
                let k = if (i + t as u64) % 4 == 0 { named } else { unnamed };
                c.cpu_sample_at(k, i * ms + t as u64 * ms / 2);
            }
            c.cpu_sample_at(other, i * ms + ms / 4);
        }
        c.release(u64::MAX);
        let col = c.finish(50 * ms);
        let conc = |leaf: u64, tid: u32| {
            col.entries.iter().find(|e| e.key.native == [leaf] && e.key.tid == tid).map(|e| (e.concurrent, e.samples))
        };
        // The unnamed samples of the first moments (before the line named anything) are not.
        let (c10, n10) = conc(0x20, 10).unwrap();
        assert!(n10 == 30 && c10 >= 28, "{c10} of {n10}");
        assert_eq!(conc(0x10, 10), Some((10, 10)));
        assert_eq!(conc(0x30, 12), Some((0, 40)));

        // Each thread names its own object on the line (its own `i`): not concurrent.
        let mut c = Collector::new();
        c.set_overlap_window(ms);
        let py = stack(&mut c, 0xc0de, 7);
        let mut keys = Vec::new();
        for tid in [10u32, 11] {
            let own = ObjectRef { addr: 0x6000 + tid as u64, type_name: "int".into(), ..Default::default() };
            let sample = |c: &mut Collector, leaf: u64, operand: Option<ObjectRef>| {
                c.key_id(SampleKey {
                    pid: 1,
                    tid,
                    native: vec![leaf],
                    on_cpu: true,
                    python: Some(py),
                    operand,
                    ..Default::default()
                })
            };
            keys.push((sample(&mut c, 0x10, Some(own)), sample(&mut c, 0x20, None)));
        }
        for i in 0..40u64 {
            for (t, &(named, unnamed)) in keys.iter().enumerate() {
                let k = if (i + t as u64) % 4 == 0 { named } else { unnamed };
                c.cpu_sample_at(k, i * ms + t as u64 * ms / 2);
            }
        }
        c.release(u64::MAX);
        let col = c.finish(50 * ms);
        assert!(
            col.entries.iter().all(|e| e.concurrent == 0),
            "{:?}",
            col.entries.iter().map(|e| e.concurrent).collect::<Vec<_>>()
        );
    }

    /// A live view finishes copies while recording goes on: a copy sees everything so far, and
    /// the recording ends as if no copy had been taken.
    #[test]
    fn finishing_a_copy_leaves_the_collector_unchanged() {
        let feed = |c: &mut Collector, from: u64, to: u64| {
            for i in from..to {
                let k = key(c, 10, 0x1000 + (i % 3), true);
                c.cpu_sample(k);
                c.push_switch(1, 10, i * 1_000_000, true, false);
                c.push_switch(1, 10, i * 1_000_000 + 400_000, false, false);
            }
            c.release(to * 1_000_000);
        };
        let (mut copied, mut plain) = (Collector::new(), Collector::new());
        feed(&mut copied, 0, 50);
        feed(&mut plain, 0, 50);
        let mid = copied.clone().finish(50_000_000);
        assert_eq!(mid.stats.cpu_samples, 50);
        assert_eq!(mid.entries.iter().map(|e| e.samples).sum::<u64>(), 50);
        assert_eq!(mid.blocked_us, 50 * 400);
        feed(&mut copied, 50, 100);
        feed(&mut plain, 50, 100);
        let (a, b) = (copied.finish(100_000_000), plain.finish(100_000_000));
        assert_eq!(a.stats, b.stats);
        assert_eq!((a.blocked_us, a.runqueue_us, a.unobserved_us), (b.blocked_us, b.runqueue_us, b.unobserved_us));
        let sum = |c: &Collection| c.entries.iter().map(|e| (e.samples, e.wait.time_us)).collect::<Vec<_>>();
        assert_eq!(sum(&a), sum(&b));
        assert_eq!(a.stats.cpu_samples, 100);
    }

    #[test]
    fn identical_samples_share_one_entry() {
        let mut c = Collector::new();
        for _ in 0..1000 {
            let k = key(&mut c, 10, 0x1000, true);
            c.cpu_sample(k);
        }
        let k = key(&mut c, 10, 0x2000, true);
        c.cpu_sample(k);
        assert_eq!(c.distinct(), (2, 0));
        let col = c.finish(0);
        let samples: Vec<u64> = col.entries.iter().map(|e| e.samples).collect();
        assert_eq!(samples, vec![1000, 1]);
    }

    #[test]
    fn keys_come_back_whole() {
        let mut c = Collector::new();
        let parked =
            ParkedInfo { addr: 0x1000, lock_object: Some((0xff0, "_thread.lock".into())), ..Default::default() };
        let full = SampleKey {
            pid: 3,
            tid: 4,
            native: vec![0x10, 0x20, 0x30],
            native_complete: true,
            python: None,
            kernel: vec![0xffff_0001],
            parked: Some(parked),
            syscall: Some(202),
            on_cpu: true,
            alone: false,
            operand: None,
        };
        let empty = SampleKey { pid: 3, tid: 4, on_cpu: true, ..Default::default() };
        let sibling = SampleKey { native: vec![0x11, 0x20, 0x30], ..full.clone() };
        for k in [full.clone(), empty.clone(), sibling.clone()] {
            let id = c.key_id(k);
            c.cpu_sample(id);
        }
        assert_eq!(c.distinct().0, 3);
        assert_eq!(c.addrs.list.len(), 3, "callers [0x20, 0x30] shared; [] and the kernel stack");
        let got: Vec<SampleKey> = c.finish(0).entries.into_iter().map(|e| e.key).collect();
        assert_eq!(got, vec![full, empty, sibling]);
    }

    #[test]
    fn python_stacks_are_interned() {
        let mut c = Collector::new();
        let a = c.python_id(PyStack { frames: vec![PyFrame::Entry], truncated: false, state: 1 });
        let b = c.python_id(PyStack { frames: vec![PyFrame::Entry], truncated: false, state: 1 });
        let d = c.python_id(PyStack { frames: vec![PyFrame::Entry], truncated: true, state: 1 });
        assert_eq!(a, b);
        assert_ne!(a, d);
    }

    /// Thread 5: blocked 3 times (100, 200, 300 µs); only the first two observed (sampled, tick
    /// 50 µs, so weights are the durations). Its total blocked time is exact (600 µs); the two
    /// observed stacks share it 1:2. Thread 6: preempted 40 µs, exact runqueue. Thread 7: blocked
    /// 80 µs and never observed.
    #[test]
    fn totals_are_exact_per_thread_and_split_by_observations() {
        let mut c = Collector::new();
        let lock = key(&mut c, 5, 0xa, false);
        let sleep = key(&mut c, 5, 0xb, false);
        let us = 1000;
        for tid in [5, 6, 7] {
            c.switch(1, tid, 0, false, false);
        }
        c.switch(1, 5, 100 * us, true, false);
        c.observe(5, 150 * us, lock, false, 50 * us);
        c.switch(1, 5, 200 * us, false, false);
        c.switch(1, 5, 300 * us, true, false);
        c.observe(5, 310 * us, sleep, false, 50 * us);
        c.switch(1, 5, 500 * us, false, false);
        c.switch(1, 5, 600 * us, true, false);
        c.switch(1, 5, 900 * us, false, false);
        c.switch(1, 6, 10 * us, true, true);
        c.switch(1, 6, 50 * us, false, false);
        c.switch(1, 7, 10 * us, true, false);
        c.switch(1, 7, 90 * us, false, false);
        let col = c.finish(1000 * us);
        let find = |kind, tid| col.entries.iter().filter(move |e| e.kind == kind && e.key.tid == tid);
        let blocked: Vec<(u64, u64)> = find(EntryKind::Blocked, 5).map(|e| (e.key.native[0], e.wait.time_us)).collect();
        assert_eq!(blocked, vec![(0xa, 200), (0xb, 400)]);
        // 3 blocked intervals shared 1:1 between two observed ones (1.5 each, rounded).
        let waits: u64 = find(EntryKind::Blocked, 5).map(|e| e.wait.waits).sum();
        assert!((3..=4).contains(&waits), "{waits}");
        assert_eq!(find(EntryKind::Runqueue, 6).map(|e| e.wait.time_us).collect::<Vec<_>>(), vec![40]);
        assert_eq!(find(EntryKind::Unobserved, 7).map(|e| e.wait.time_us).collect::<Vec<_>>(), vec![80]);
        assert_eq!(col.blocked_us, 600 + 80);
        assert_eq!(col.runqueue_us, 40);
        assert_eq!(col.unobserved_us, 80);
        assert_eq!(col.stats.intervals, 5);
        assert_eq!(col.stats.observed_intervals, 2);
    }

    /// `--exact-waits` on a loaded machine: every switch-out observed, so each interval holds its
    /// wait for a CPU after the wake-up too. The kernel's events say how long those were (4 ms
    /// each); they are taken off each interval, not shared in proportion:
    ///
    /// ```text
    ///   thread 5   lock  |-1 ms blocked-|-4 ms runqueue-|      (observed at switch-out, 5 ms)
    ///              sleep |------- 100 ms blocked -------|-4 ms runqueue-|  (104 ms)
    ///   kernel     blocked 101 ms in 2; woken runqueue 8 ms
    ///   shown      lock 1 ms, sleep 100 ms (in proportion: 4.7 ms and 96.3 ms)
    /// ```
    #[test]
    fn exact_intervals_lose_the_wait_for_a_cpu_after_their_wake_up() {
        let mut c = Collector::new();
        let lock = key(&mut c, 5, 0xa, false);
        let sleep = key(&mut c, 5, 0xb, false);
        let ms = 1_000_000;
        c.switch(1, 5, 0, false, false);
        c.observe(5, 10 * ms, lock, true, 0);
        c.switch(1, 5, 10 * ms, true, false);
        c.switch(1, 5, 15 * ms, false, false);
        c.observe(5, 20 * ms, sleep, true, 0);
        c.switch(1, 5, 20 * ms, true, false);
        c.switch(1, 5, 124 * ms, false, false);
        c.set_sched(
            1,
            5,
            SchedTotals {
                blocked_ns: 101 * ms,
                blocked_count: 2,
                runqueue_ns: 8 * ms,
                runqueue_count: 2,
                woken_runqueue_ns: 8 * ms,
                exact: true,
            },
        );
        let col = c.finish(130 * ms);
        let blocked: Vec<(u64, u64)> = col
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Blocked)
            .map(|e| (e.key.native[0], e.wait.time_us))
            .collect();
        assert_eq!(blocked, vec![(0xa, 1_000), (0xb, 100_000)]);
        let runqueue: u64 = col.entries.iter().filter(|e| e.kind == EntryKind::Runqueue).map(|e| e.wait.time_us).sum();
        assert_eq!(runqueue, 8_000);
    }

    /// Records of two CPUs drained ring by ring: thread 1 switched out on CPU 0 at 100 and in on
    /// CPU 1 at 150, but CPU 1's ring is drained first. Held until released, they pair.
    #[test]
    fn release_orders_records_across_cpus() {
        let mut c = Collector::new();
        let k = key(&mut c, 1, 0x1, false);
        c.switch(4, 1, 0, false, false);
        c.push_switch(4, 1, 150, false, false); // CPU 1's ring
        c.push_observe(1, 120, k, false, 10); // a tick's snapshot
        c.push_switch(4, 1, 100, true, false); // CPU 0's ring
        c.release(160);
        let col = c.finish(1000);
        let e: Vec<_> = col.entries.iter().filter(|e| e.kind == EntryKind::Blocked).collect();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].wait.max_us, 0);
        assert_eq!(col.stats.intervals, 1);
        assert_eq!(col.stats.observed_intervals, 1);
    }

    #[test]
    fn release_holds_events_after_the_watermark() {
        let mut c = Collector::new();
        c.switch(4, 1, 0, false, false);
        c.push_switch(4, 1, 100, true, false);
        c.push_switch(4, 1, 300, false, false);
        c.release(200);
        assert!(matches!(c.thread_state(1), ThreadState::Off { since: 100, .. }));
        c.release(400);
        assert!(matches!(c.thread_state(1), ThreadState::On { since: 300 }));
    }

    /// Sampled mode: thread 5 is seen blocked at 4 ticks of 10 ms: twice in one wait on `lock`
    /// (it did not run in between), then once on `lock` again and once on `sleep`. The kernel says
    /// it blocked 80 ms in 6 waits: the 40 ms observed are scaled to 80, the 3 observed waits to 6.
    #[test]
    fn sampled_observations_scale_to_the_kernel_totals() {
        let mut c = Collector::new();
        let lock = key(&mut c, 5, 0xa, false);
        let sleep = key(&mut c, 5, 0xb, false);
        let ms = 1_000_000;
        c.observe_blocked(1, 5, lock, 10 * ms, false);
        c.observe_blocked(1, 5, lock, 10 * ms, true);
        c.observe_blocked(1, 5, lock, 10 * ms, false);
        c.observe_blocked(1, 5, sleep, 10 * ms, false);
        c.set_sched(
            1,
            5,
            SchedTotals {
                blocked_ns: 80 * ms,
                blocked_count: 6,
                runqueue_ns: 3 * ms,
                runqueue_count: 2,
                woken_runqueue_ns: 0,
                exact: false,
            },
        );
        let col = c.finish(0);
        let got: Vec<(EntryKind, u64, u64, u64, u64)> = col
            .entries
            .iter()
            .map(|e| (e.kind, e.key.native.first().copied().unwrap_or(0), e.wait.time_us, e.wait.waits, e.wait.max_us))
            .collect();
        assert_eq!(
            got,
            vec![
                (EntryKind::Blocked, 0xa, 60_000, 4, 20_000),
                (EntryKind::Blocked, 0xb, 20_000, 2, 10_000),
                (EntryKind::Runqueue, 0, 3_000, 2, 0),
            ]
        );
        assert_eq!(col.stats.intervals, 8);
        assert_eq!(col.stats.observed_intervals, 3);
    }

    /// Exhaustive mode with the kernel's totals: two observed intervals of 300 and 100 µs (their
    /// ends include the wait for a CPU after the wake-up); the kernel says 200 µs blocked and
    /// 200 µs runnable. The observed stacks share the 200 µs 3:1; runqueue is the kernel's.
    #[test]
    fn kernel_totals_take_precedence_over_switch_intervals() {
        let mut c = Collector::new();
        let a = key(&mut c, 5, 0xa, false);
        let b = key(&mut c, 5, 0xb, false);
        let pre = key(&mut c, 5, 0xc, false);
        let us = 1000;
        c.switch(1, 5, 0, false, false);
        c.switch(1, 5, 100 * us, true, false);
        c.observe(5, 100 * us, a, true, 0);
        c.switch(1, 5, 400 * us, false, false);
        c.switch(1, 5, 500 * us, true, false);
        c.observe(5, 500 * us, b, true, 0);
        c.switch(1, 5, 600 * us, false, false);
        c.switch(1, 5, 700 * us, true, true);
        c.observe(5, 700 * us, pre, true, 0);
        c.switch(1, 5, 710 * us, false, false);
        c.set_sched(
            1,
            5,
            SchedTotals {
                blocked_ns: 200 * us,
                blocked_count: 2,
                runqueue_ns: 200 * us,
                runqueue_count: 3,
                woken_runqueue_ns: 0,
                exact: false,
            },
        );
        let col = c.finish(800 * us);
        let got: Vec<(EntryKind, u64, u64)> =
            col.entries.iter().map(|e| (e.kind, e.key.native.first().copied().unwrap_or(0), e.wait.time_us)).collect();
        assert_eq!(
            got,
            vec![(EntryKind::Blocked, 0xa, 150), (EntryKind::Blocked, 0xb, 50), (EntryKind::Runqueue, 0, 200)]
        );
    }

    /// The kernel counted a blocked thread's 90 ms as runqueue time; 10 ticks of 10 ms saw it
    /// blocked the whole time. Off-CPU time in total (100 ms) is kept; the split follows the
    /// ticks.
    #[test]
    fn ticks_overrule_a_kernel_split_that_counts_blocking_as_runqueue() {
        let mut c = Collector::new();
        let k = key(&mut c, 5, 0xa, false);
        let ms = 1_000_000;
        for i in 0..10 {
            c.observe_blocked(1, 5, k, 10 * ms, i > 0);
        }
        c.set_sched(
            1,
            5,
            SchedTotals {
                blocked_ns: 10 * ms,
                blocked_count: 1,
                runqueue_ns: 90 * ms,
                runqueue_count: 1,
                woken_runqueue_ns: 0,
                exact: false,
            },
        );
        let col = c.finish(0);
        let t: Vec<(EntryKind, u64)> = col.entries.iter().map(|e| (e.kind, e.wait.time_us)).collect();
        assert_eq!(t, vec![(EntryKind::Blocked, 100_000)]);
        assert_eq!(col.stats.sched_corrected, 1);
        // Agreement within the sampling error leaves the kernel's split alone.
        let mut c = Collector::new();
        let k = key(&mut c, 5, 0xa, false);
        for i in 0..10 {
            c.observe_blocked(1, 5, k, 10 * ms, i > 0);
        }
        c.set_sched(
            1,
            5,
            SchedTotals {
                blocked_ns: 80 * ms,
                blocked_count: 1,
                runqueue_ns: 20 * ms,
                runqueue_count: 1,
                woken_runqueue_ns: 0,
                exact: false,
            },
        );
        let col = c.finish(0);
        let t: Vec<(EntryKind, u64)> = col.entries.iter().map(|e| (e.kind, e.wait.time_us)).collect();
        assert_eq!(t, vec![(EntryKind::Blocked, 80_000), (EntryKind::Runqueue, 20_000)]);
        assert_eq!(col.stats.sched_corrected, 0);
        // A split timed from the kernel's events (BPF) is exact: the ticks do not overrule it.
        let mut c = Collector::new();
        let k = key(&mut c, 5, 0xa, false);
        for i in 0..10 {
            c.observe_blocked(1, 5, k, 10 * ms, i > 0);
        }
        c.set_sched(
            1,
            5,
            SchedTotals {
                blocked_ns: 10 * ms,
                blocked_count: 1,
                runqueue_ns: 90 * ms,
                runqueue_count: 1,
                woken_runqueue_ns: 0,
                exact: true,
            },
        );
        let col = c.finish(0);
        let t: Vec<(EntryKind, u64)> = col.entries.iter().map(|e| (e.kind, e.wait.time_us)).collect();
        assert_eq!(t, vec![(EntryKind::Blocked, 10_000), (EntryKind::Runqueue, 90_000)]);
        assert_eq!(col.stats.sched_corrected, 0);
    }

    /// Runqueue time at the stacks it happened at, when the kernel's events split it:
    ///
    /// ```text
    ///   thread 5   blocked at a (3 waits), at b (1 wait); on CPU at c (3 samples), at d (1)
    ///   kernel     blocked 40 ms; runnable 10 ms in 6 periods: 8 ms after the 4 wake-ups
    ///   shown      runqueue 6 ms at a, 2 ms at b (by waits); 1.5 ms at c, 0.5 ms at d (by samples)
    /// ```
    /// Without the kernel's events (schedstat) it stays one `[runqueue]` entry.
    #[test]
    fn runqueue_time_goes_to_the_waits_woken_from_and_the_stacks_preempted_at() {
        let ms = 1_000_000;
        let run = |exact: bool| {
            let mut c = Collector::new();
            let (a, b) = (key(&mut c, 5, 0xa, false), key(&mut c, 5, 0xb, false));
            let (cc, d) = (key(&mut c, 5, 0xc, true), key(&mut c, 5, 0xd, true));
            for k in [a, a, a, b] {
                c.observe_blocked(1, 5, k, 10 * ms, false);
            }
            for k in [cc, cc, cc, d] {
                c.cpu_sample(k);
            }
            c.set_sched(
                1,
                5,
                SchedTotals {
                    blocked_ns: 40 * ms,
                    blocked_count: 4,
                    runqueue_ns: 10 * ms,
                    runqueue_count: 6,
                    woken_runqueue_ns: 8 * ms,
                    exact,
                },
            );
            let col = c.finish(0);
            assert_eq!(col.runqueue_us, 10_000);
            let mut got: Vec<(u64, u64, u64)> = col
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::Runqueue)
                .map(|e| (e.key.native.first().copied().unwrap_or(0), e.wait.time_us, e.wait.waits))
                .collect();
            got.sort_unstable();
            got
        };
        assert_eq!(run(true), vec![(0xa, 6_000, 3), (0xb, 2_000, 1), (0xc, 1_500, 2), (0xd, 500, 1)]);
        assert_eq!(run(false), vec![(0, 10_000, 6)]);
    }

    #[test]
    fn splits_add_up_exactly() {
        let at = [(7, 1.0), (8, 1.0), (9, 1.0)];
        let parts = split(100, 2, &at);
        assert_eq!(parts.iter().map(|(_, (t, _))| t).sum::<u64>(), 100);
        assert_eq!(parts.iter().map(|(_, (_, n))| n).sum::<u64>(), 2);
        assert_eq!(parts, vec![(7, (34, 1)), (8, (33, 1)), (9, (33, 0))]);
        assert!(split(5, 1, &[(1, 0.0)]).is_empty());
        assert_eq!(split(1, 0, &at), vec![(7, (1, 0))]);
    }
}
