//! Why a thread was not making progress: classification of samples into categories, and the
//! identity of the lock or object involved.

use frames::native::NativeFrame;
use frames::python::describe_instr;
use frames::python::{ObjectRef, ParkedInfo, PyFrame, PyStack};
use serde::{Deserialize, Serialize};

/// Where a thread's time went. The first five are on-CPU, the rest off-CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Running Python code (the interpreter and the C code it inlines or calls internally).
    Python,
    /// Running native code outside the interpreter (extension modules, libraries).
    Native,
    /// Running the garbage collector outside a stop-the-world pause.
    Gc,
    /// On CPU, updating reference counts of objects shared between threads while another thread
    /// of the process works on the same object (contention).
    Refcount,
    /// On CPU, atomic reference-count updates of objects owned by another thread, with no other
    /// thread working on them at the time: the cost of sharing, not contention.
    AtomicRefcount,
    /// On CPU, spinning in the PyMutex slow path (`sched_yield`) before parking.
    Spin,
    /// Blocked on an object's per-object lock (critical section).
    CriticalSection,
    /// Blocked on a `threading.Lock`/`RLock`/`Semaphore` or a lock inside `queue`.
    Lock,
    /// Blocked on an interpreter-internal PyMutex.
    Pymutex,
    /// Paused by a stop-the-world (GC and others), or the collecting thread's own pause.
    StopTheWorld,
    /// Waiting for the GIL (default builds, or a free-threaded build with the GIL re-enabled).
    Gil,
    /// Waiting in `Thread.join`.
    Join,
    /// `time.sleep` and other sleeps.
    Sleep,
    /// Blocking I/O system calls.
    Io,
    /// Waiting for a notification (`Event.wait`, `Condition.wait`, `Queue.get`, …) or other
    /// blocking with nobody to blame.
    Idle,
    /// Runnable but not running: preempted, waiting for a CPU (more threads than CPUs).
    Runqueue,
}

impl Category {
    pub const ALL: [Category; 16] = [
        Category::Python,
        Category::Native,
        Category::Gc,
        Category::Refcount,
        Category::AtomicRefcount,
        Category::Spin,
        Category::CriticalSection,
        Category::Lock,
        Category::Pymutex,
        Category::StopTheWorld,
        Category::Gil,
        Category::Join,
        Category::Sleep,
        Category::Io,
        Category::Idle,
        Category::Runqueue,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Python => "python",
            Category::Native => "native",
            Category::Gc => "gc",
            Category::Refcount => "refcount",
            Category::AtomicRefcount => "atomic_refcount",
            Category::Spin => "spin",
            Category::CriticalSection => "critical_section",
            Category::Lock => "lock",
            Category::Pymutex => "pymutex",
            Category::StopTheWorld => "stop_the_world",
            Category::Gil => "gil",
            Category::Join => "join",
            Category::Sleep => "sleep",
            Category::Io => "io",
            Category::Idle => "idle",
            Category::Runqueue => "runqueue",
        }
    }

    /// Time lost to threads getting in each other's way.
    pub fn is_contention(self) -> bool {
        matches!(
            self,
            Category::Refcount
                | Category::Spin
                | Category::CriticalSection
                | Category::Lock
                | Category::Pymutex
                | Category::StopTheWorld
                | Category::Gil
        )
    }

    /// Waiting that is nobody's fault (left out of flamegraphs unless `--idle`).
    pub fn is_idle(self) -> bool {
        matches!(self, Category::Join | Category::Sleep | Category::Idle)
    }

    pub fn on_cpu(self) -> bool {
        matches!(
            self,
            Category::Python
                | Category::Native
                | Category::Gc
                | Category::Refcount
                | Category::AtomicRefcount
                | Category::Spin
        )
    }
}

/// What a wait (or a spin, or a refcount hot spot) was about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockIdentity {
    /// Address of the lock (the PyMutex, or the object for critical sections and thread locks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<u64>,
    /// Python type of the object (`list`, `dict`, `_thread.lock`), when it is an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// Where the lock lives when it is not an object (`stop-the-world`, a C function that spins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
}

impl LockIdentity {
    pub fn describe(&self) -> String {
        match (&self.type_name, self.address, &self.symbol) {
            // An object read from the target with its rendering (refcount stalls).
            (Some(_), Some(_), Some(s)) => s.clone(),
            (Some(t), Some(a), None) => format!("{t} @ {a:#x}"),
            (None, Some(a), Some(s)) => format!("{s} @ {a:#x}"),
            (None, Some(a), None) => format!("PyMutex @ {a:#x}"),
            (Some(t), None, _) => t.clone(),
            (None, None, Some(s)) => s.clone(),
            (None, None, None) => "unknown".into(),
        }
    }
}

/// Everything the classifier looks at for one sample.
pub struct Evidence<'a> {
    /// Native frames, innermost first (inline chains flattened).
    pub native: Vec<&'a NativeFrame>,
    /// The inline chain at `ip - 1` of the leaf (the instruction before the sampled one).
    pub leaf_prev: &'a [NativeFrame],
    pub kernel: &'a [String],
    pub python: Option<&'a PyStack>,
    pub parked: Option<&'a ParkedInfo>,
    pub on_cpu: bool,
    pub preempted: bool,
    /// The thread was the only one of its process at that moment.
    pub alone: bool,
    /// Path of the module that holds the CPython runtime (executable or libpython).
    pub runtime_module: Option<&'a str>,
    /// Base opcode names of the target's CPython (index = opcode), to name what the innermost
    /// Python frame's instruction touched.
    pub opnames: &'a [String],
    /// The system call a blocked thread is in (x86-64 number), when known without a kernel stack
    /// (`/proc/PID/task/TID/syscall`).
    pub syscall: Option<u64>,
    /// CPU samples: the object the innermost Python frame's instruction names.
    pub operand: Option<&'a ObjectRef>,
    /// CPU samples: another thread of the process was on a CPU working on the same object (or
    /// function) at that moment (`crate::concurrency`).
    pub concurrent: bool,
}

/// Kernel entry names of the x86-64 system calls the classifier cares about.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    Some(match nr {
        0 => "__x64_sys_read",
        1 => "__x64_sys_write",
        7 => "__x64_sys_poll",
        17 => "__x64_sys_pread64",
        18 => "__x64_sys_pwrite64",
        19 => "__x64_sys_readv",
        20 => "__x64_sys_writev",
        23 => "__x64_sys_select",
        24 => "__x64_sys_sched_yield",
        35 => "__x64_sys_nanosleep",
        42 => "__x64_sys_connect",
        43 => "__x64_sys_accept",
        44 => "__x64_sys_sendto",
        45 => "__x64_sys_recvfrom",
        46 => "__x64_sys_sendmsg",
        47 => "__x64_sys_recvmsg",
        61 => "__x64_sys_wait4",
        74 => "__x64_sys_fsync",
        75 => "__x64_sys_fdatasync",
        202 => "__x64_sys_futex",
        230 => "__x64_sys_clock_nanosleep",
        232 => "__x64_sys_epoll_wait",
        247 => "__x64_sys_waitid",
        257 => "__x64_sys_openat",
        270 => "__x64_sys_pselect6",
        271 => "__x64_sys_ppoll",
        281 => "__x64_sys_epoll_pwait",
        288 => "__x64_sys_accept4",
        441 => "__x64_sys_epoll_pwait2",
        _ => return None,
    })
}

fn fname(f: &NativeFrame) -> &str {
    f.function.as_deref().unwrap_or("")
}

fn has(native: &[&NativeFrame], pred: impl Fn(&str) -> bool) -> bool {
    native.iter().any(|f| pred(fname(f)))
}

fn is_named(name: &str, base: &str) -> bool {
    name == base || name.strip_prefix(base).is_some_and(|r| r.starts_with('.'))
}

/// Python frames, innermost first, as (qualname, file).
fn py_frames(py: Option<&PyStack>) -> impl Iterator<Item = (&str, &str)> {
    py.into_iter().flat_map(|s| s.frames.iter()).filter_map(|f| match f {
        PyFrame::Code { code, .. } => Some((code.qualname.as_str(), code.filename.as_str())),
        PyFrame::Entry => None,
    })
}

/// Waits that `threading` builds on a lock: what the innermost threading/queue frame says.
fn threading_wait(py: Option<&PyStack>) -> Option<Category> {
    // Look through all the innermost threading/queue frames: a Semaphore waits inside its own
    // Condition, and the outer frame says what the wait is for.
    let mut found = None;
    for (q, file) in py_frames(py) {
        if !(file.ends_with("threading.py") || file.ends_with("queue.py")) {
            break;
        }
        match q {
            "Thread.join" | "Thread._wait_for_tstate_lock" | "_ThreadHandle.join" => return Some(Category::Join),
            "Semaphore.acquire" | "BoundedSemaphore.acquire" => return Some(Category::Lock),
            "Condition.wait" | "Condition.wait_for" | "Event.wait" | "Barrier.wait" | "Barrier._wait" => {
                found = found.or(Some(Category::Idle))
            }
            _ => {}
        }
    }
    found
}

/// Whether a lock wait with this Python stack is `threading` waiting for a notification or a
/// thread (Condition/Event/Barrier wait, join): not contention, and nobody holds what it waits on.
pub fn is_notification_wait(py: Option<&PyStack>) -> bool {
    matches!(threading_wait(py), Some(Category::Idle | Category::Join))
}

const PARK: &str = "_PyParkingLot_Park";
const LOCK_PATH: [&str; 9] = [
    "_PyMutex_LockTimed",
    "PyMutex_Lock",
    "PyMutex_LockFlags",
    "_PyMutex_LockSlow",
    "_PyCriticalSection_BeginSlow",
    "_PyCriticalSection2_BeginSlow",
    "_PyRawMutex_LockSlow",
    "_PyRecursiveMutex_Lock",
    "_PyRecursiveMutex_LockTimed",
];
/// Functions that are themselves a shared refcount update. Not `_Py_MergeZeroLocalRefcount`
/// (its common path deallocates an object only its owner referred to; the shared path is a CAS,
/// seen as such). `_Py_TryIncrefCompare` is, though its fast path is also the owner's own
/// increment: the stack cannot tell the two apart, and the header loads of a shared object's
/// try-incref (a global looked up by every thread) are where that sharing costs.
const REFCOUNT_FNS: [&str; 6] = [
    "_Py_DecRefShared",
    "_Py_DecRefSharedDebug",
    "_Py_ExplicitMergeRefcount",
    "_Py_brc_queue_object",
    "_Py_brc_merge_refcounts",
    "_Py_TryIncrefCompare",
];
const STW_FNS: [&str; 9] = [
    "stop_the_world",
    "start_the_world",
    "_PyEval_StopTheWorld",
    "_PyEval_StopTheWorldAll",
    "deduce_unreachable_heap",
    "gc_visit_heaps",
    "merge_all_queued_objects",
    "process_delayed_frees",
    "handle_resurrected_objects",
];
const GC_FNS: [&str; 5] = ["gc_collect_main", "_PyGC_Collect", "gc_collect_internal", "PyGC_Collect", "_Py_RunGC"];

/// The first native frame (innermost first) outside the locking machinery: the C function
/// that took the lock (e.g. `list_append`).
fn lock_taker(native: &[&NativeFrame]) -> Option<String> {
    let mut inside = false;
    for f in native {
        let n = fname(f);
        let machinery = LOCK_PATH.iter().any(|b| is_named(n, b))
            || n.starts_with("_PyParkingLot")
            || n.starts_with("_PySemaphore")
            || n.contains("sched_yield")
            || n.starts_with("_Py_yield")
            || n.starts_with("PyMutex_")
            || n.starts_with("_PyMutex")
            || n.starts_with("_PyCriticalSection")
            || n.starts_with("_Py_atomic");
        if machinery {
            inside = true;
        } else if inside && !n.is_empty() {
            return Some(n.to_string());
        }
    }
    None
}

/// Decide the category of one sample and, for waits and spins, what it waited on.
pub fn classify(e: &Evidence) -> (Category, Option<LockIdentity>) {
    let n = &e.native;
    if !e.on_cpu {
        return classify_off_cpu(e);
    }
    let yielding = has(n, |x| x.contains("sched_yield") || x.starts_with("_Py_yield"))
        || e.kernel.iter().any(|k| k.contains("sched_yield"));
    // A thread paused by a stop-the-world, on its way out of or back into the pause.
    if has(n, |x| {
        is_named(x, "_PyThreadState_Attach")
            || is_named(x, "tstate_wait_attach")
            || is_named(x, "_PyThreadState_Suspend")
    }) && (yielding || has(n, |x| x == PARK || x.starts_with("_PySemaphore")))
    {
        return (Category::StopTheWorld, Some(stw_identity("paused thread")));
    }
    // Spinning in the PyMutex slow path: sched_yield while attached, before parking — only
    // when another thread of the process exists to hold the mutex.
    if yielding && !e.alone && has(n, |x| LOCK_PATH.iter().any(|b| is_named(x, b)) || x == PARK) {
        return spin(e);
    }
    // Spinning on the loads before the compare-and-swap of the PyMutex slow path: on a CPU in
    // the slow path (entered only once the fast path's CAS failed), between two yields.
    if !e.alone && in_lock_slow_path(n) {
        return spin(e);
    }
    if let Some(r) = refcount(e) {
        return r;
    }
    if has(n, |x| STW_FNS.iter().any(|b| is_named(x, b))) {
        // A pause that stops no other thread is just the collector's work.
        if e.alone {
            return (Category::Gc, None);
        }
        return (Category::StopTheWorld, Some(stw_identity("collecting thread's pause")));
    }
    if has(n, |x| GC_FNS.iter().any(|b| is_named(x, b))) {
        return (Category::Gc, None);
    }
    // Native when the leaf (outermost of its inline chain) lives outside the interpreter.
    let leaf_module = n.iter().find(|f| !f.inlined).map(|f| f.module.as_str());
    let in_runtime = match (leaf_module, e.runtime_module) {
        (Some(m), Some(rt)) => m == rt,
        _ => true,
    };
    let has_python = e.python.is_some_and(|p| p.frames.iter().any(|f| matches!(f, PyFrame::Code { .. })));
    if has_python && in_runtime {
        (Category::Python, None)
    } else {
        (Category::Native, None)
    }
}

/// The functions of the refcount machinery: the inline chain of `Py_INCREF`/`Py_DECREF` and
/// their variants, the try-incref family of the free-threaded build, and the shared-refcount
/// slow paths (3.13–3.15). The `ob_ref_local`/`ob_ref_shared` loads and atomics are inlined
/// into these, so a sample on any of their instructions has one of these in its chain.
const REFCOUNT_MACHINERY: [&str; 25] = [
    "Py_INCREF",
    "Py_DECREF",
    "Py_XINCREF",
    "Py_XDECREF",
    "_Py_NewRef",
    "_Py_XNewRef",
    "Py_NewRef",
    "Py_XNewRef",
    "Py_INCREF_MORTAL",
    "Py_DECREF_MORTAL",
    "_Py_INCREF_MORTAL",
    "_Py_DECREF_MORTAL",
    "_Py_DECREF_NO_DEALLOC",
    "_Py_DECREF_SPECIALIZED",
    "_Py_TryIncrefFast",
    "_Py_TryIncRefShared",
    "_Py_TryIncrefCompare",
    "_Py_TryIncrefCompareStackRef",
    "_Py_TryXGetRef",
    "_Py_TryXGetStackRef",
    "_Py_IncRefShared",
    "_Py_DecRefShared",
    "_Py_DecRefSharedDebug",
    "_Py_MergeZeroLocalRefcount",
    "_Py_IsOwnedByCurrentThread",
];

/// The try-incref family by prefix (`_Py_TryIncref`, `_Py_TryIncrefFast`, `_Py_TryIncRefShared`,
/// `_Py_TryXGetRef`, … differ between versions).
const TRY_INCREF_PREFIXES: [&str; 3] = ["_Py_TryIncref", "_Py_TryIncRef", "_Py_TryXGet"];

/// The atomic instructions of a shared refcount update (the sampled instruction, or the one
/// before it when the cost skids onto the next).
fn is_refcount_atomic(x: &str) -> bool {
    x == "_Py_atomic_add_ssize" || x == "_Py_atomic_add_uint32" || x.starts_with("_Py_atomic_compare_exchange_ssize")
}

/// The leaf's inline chain: the innermost frames up to and including the first real function.
fn leaf_chain<'a>(n: &'a [&'a NativeFrame]) -> impl Iterator<Item = &'a NativeFrame> + 'a {
    let len = n.iter().take_while(|f| f.inlined).count() + 1;
    n.iter().take(len).copied()
}

/// A refcount stall: a CPU sample whose instruction (or the one before it) is inside the
/// refcount machinery, in a process with other threads.
///
/// - Another thread on the same object in the same window (`e.concurrent`) and the object is
///   known and mortal: contention ([`Category::Refcount`]), wherever in the machinery the sample
///   landed (the header load, the ownership check, the atomic).
/// - Otherwise only the atomic update itself is evidence: a shared refcount update with no
///   other thread on the object ([`Category::AtomicRefcount`]), or contention when concurrent
///   but the object is unknown. Loads and branches of an uncontended incref are ordinary work.
/// - An immortal object's refcount is never written: when the instruction names one, the object
///   of the stall is unknown (only the atomic update itself is then evidence).
fn refcount(e: &Evidence) -> Option<(Category, Option<LockIdentity>)> {
    if e.alone {
        return None;
    }
    let n = &e.native;
    // Freeing an object whose last reference went away is the program's own work, whatever
    // inline frames the deallocation sits under.
    if n.first().is_some_and(|f| is_named(fname(f), "_Py_Dealloc")) {
        return None;
    }
    let chain = || e.leaf_prev.iter().chain(leaf_chain(n));
    let in_machinery = chain().any(|f| {
        let x = fname(f);
        REFCOUNT_MACHINERY.iter().any(|b| is_named(x, b)) || TRY_INCREF_PREFIXES.iter().any(|p| x.starts_with(p))
    }) || leaf_chain(n).any(|f| REFCOUNT_FNS.iter().any(|b| is_named(fname(f), b)));
    if !in_machinery {
        return None;
    }
    let atomic = chain().any(|f| is_refcount_atomic(fname(f)))
        || leaf_chain(n).any(|f| REFCOUNT_FNS.iter().any(|b| is_named(fname(f), b)));
    // An immortal object's count is never written, and the owning thread's own updates are not
    // atomic: the instruction's operand is not what the stall was on (another object of the
    // same instruction, e.g. a method's `self`).
    let operand = e.operand.filter(|o| !o.immortal && !o.owned);
    let cat = match operand {
        Some(_) if e.concurrent => Category::Refcount,
        _ if !atomic => return None,
        _ if e.concurrent => Category::Refcount,
        _ => Category::AtomicRefcount,
    };
    if let Some(o) = operand {
        let id =
            LockIdentity { address: Some(o.addr), type_name: Some(o.type_name.clone()), symbol: Some(o.describe()) };
        return Some((cat, Some(id)));
    }
    // The instruction's own object, when the thread owns it, is not what the stall was on.
    let what = e.python.filter(|_| !e.operand.is_some_and(|o| o.owned)).and_then(|p| {
        p.frames.iter().find_map(|f| match f {
            PyFrame::Code { code, instr: Some(i), .. } => describe_instr(*i, code, e.opnames),
            _ => None,
        })
    });
    let symbol = match what {
        Some(w) => format!("shared refcount of {w}"),
        None => "shared reference count".into(),
    };
    Some((cat, Some(LockIdentity { address: None, type_name: None, symbol: Some(symbol) })))
}

/// The slow paths of the PyMutex, entered only after the fast path's compare-and-swap failed:
/// the lock was held. `_PyMutex_LockTimed` counts only when a slow entry (or the inline fast
/// path that falls into it) called it: `threading.Lock.acquire` calls it directly, and its
/// first CAS is the uncontended fast path.
const SLOW_ENTRIES: [&str; 5] = [
    "_PyMutex_LockSlow",
    "_PyCriticalSection_BeginSlow",
    "_PyCriticalSection2_BeginSlow",
    "_PyRawMutex_LockSlow",
    "_PyRecursiveMutex_Lock",
];
const FAST_PATHS: [&str; 6] = [
    "PyMutex_Lock",
    "_PyMutex_Lock",
    "PyMutex_LockFast",
    "_PyCriticalSection_Begin",
    "_PyCriticalSection2_Begin",
    "PyMutex_LockFlags",
];

/// A CPU sample in the PyMutex slow path's loop (loads, CAS), outside a yield.
fn in_lock_slow_path(n: &[&NativeFrame]) -> bool {
    let chain: Vec<&NativeFrame> = leaf_chain(n).collect();
    let leaf_fn = chain.last().map(|f| fname(f)).unwrap_or("");
    if SLOW_ENTRIES.iter().any(|b| is_named(leaf_fn, b)) {
        return true;
    }
    if !is_named(leaf_fn, "_PyMutex_LockTimed") {
        return false;
    }
    // The callers of `_PyMutex_LockTimed`: its caller's inline chain and the real function.
    let callers = &n[chain.len().min(n.len())..];
    let caller_chain = callers.iter().take(callers.iter().take_while(|f| f.inlined).count() + 1);
    caller_chain.into_iter().any(|f| SLOW_ENTRIES.iter().chain(FAST_PATHS.iter()).any(|b| is_named(fname(f), b)))
}

/// A thread yielding in the PyMutex slow path: spinning, unless it is re-taking a Condition's or
/// Event's internal lock after a notification (idle bookkeeping, not contention).
fn spin(e: &Evidence) -> (Category, Option<LockIdentity>) {
    if let Some(cat @ (Category::Idle | Category::Join)) = threading_wait(e.python) {
        return (cat, None);
    }
    let who = lock_taker(&e.native).unwrap_or_else(|| "PyMutex".into());
    (Category::Spin, Some(LockIdentity { address: None, type_name: None, symbol: Some(who) }))
}

fn stw_identity(what: &str) -> LockIdentity {
    LockIdentity { address: None, type_name: None, symbol: Some(format!("stop-the-world ({what})")) }
}

fn classify_off_cpu(e: &Evidence) -> (Category, Option<LockIdentity>) {
    let n = &e.native;
    if e.preempted {
        // Runnable but not running: waiting for a CPU. A spinning thread's `sched_yield` that
        // let another thread run is this too (time in the runqueue, not in the spin loop, and
        // on a loaded machine most of it goes to other processes).
        return (Category::Runqueue, None);
    }
    let parked = e.parked;
    // Evidence from the target's memory comes first: it does not need symbols, which stripped
    // distribution binaries lack for static functions (`take_gil`, `lock_PyThread_acquire_lock`).
    if has(n, |x| is_named(x, "take_gil")) || parked.is_some_and(|p| p.gil) {
        return (Category::Gil, Some(LockIdentity { address: None, type_name: None, symbol: Some("GIL".into()) }));
    }
    if let Some((a, t)) = parked.and_then(|p| p.lock_object.clone()) {
        // A `_thread.lock`/`RLock` mutex: `threading` may say it is a Condition/Event wait.
        let cat = threading_wait(e.python).unwrap_or(Category::Lock);
        return (cat, Some(LockIdentity { address: Some(a), type_name: Some(t), symbol: None }));
    }
    if has(n, |x| x == PARK || x.starts_with("_PySemaphore_Wait")) || parked.is_some_and(|p| p.cs_object.is_some()) {
        let addr = parked.map(|p| p.addr);
        if parked.is_some_and(|p| p.stw_victim) {
            return (Category::StopTheWorld, Some(stw_identity("paused thread")));
        }
        if has(n, |x| is_named(x, "stop_the_world") || x.starts_with("_PyEval_StopTheWorld")) {
            return (Category::StopTheWorld, Some(stw_identity("requesting thread")));
        }
        if has(n, |x| x.starts_with("_PyCriticalSection")) || parked.is_some_and(|p| p.cs_object.is_some()) {
            let (address, type_name) = match parked.and_then(|p| p.cs_object.clone()) {
                Some((a, t)) => (Some(a), Some(t)),
                None => (addr, None),
            };
            return (Category::CriticalSection, Some(LockIdentity { address, type_name, symbol: None }));
        }
        if has(n, |x| is_named(x, "lock_PyThread_acquire_lock") || is_named(x, "rlock_acquire")) {
            let cat = threading_wait(e.python).unwrap_or(Category::Lock);
            let (address, type_name) = match parked.and_then(|p| p.lock_object.clone()) {
                Some((a, t)) => (Some(a), Some(t)),
                None => (addr, Some("_thread.lock".into())),
            };
            return (cat, Some(LockIdentity { address, type_name, symbol: None }));
        }
        if let Some(cat) = threading_wait(e.python) {
            return (cat, None);
        }
        if has(n, |x| is_named(x, "ThreadHandle_join") || x.contains("_PyThread_join")) {
            return (Category::Join, None);
        }
        let symbol = parked.and_then(|p| p.symbol.clone()).or_else(|| lock_taker(n));
        return (Category::Pymutex, Some(LockIdentity { address: addr, type_name: None, symbol }));
    }
    if let Some(cat) = threading_wait(e.python) {
        return (cat, None);
    }
    if has(n, |x| is_named(x, "ThreadHandle_join") || is_named(x, "PyThread_join_thread")) {
        return (Category::Join, None);
    }
    // RLock in 3.13 and other PyThread_type_lock users wait on their own semaphore.
    if has(n, |x| is_named(x, "PyThread_acquire_lock_timed") || is_named(x, "rlock_acquire")) {
        let is_rlock = has(n, |x| is_named(x, "rlock_acquire"));
        return (
            Category::Lock,
            Some(LockIdentity {
                address: None,
                type_name: Some(if is_rlock { "_thread.RLock" } else { "PyThread lock" }.into()),
                symbol: None,
            }),
        );
    }
    let syscall = e.syscall.and_then(syscall_name);
    let k = |pred: &dyn Fn(&str) -> bool| {
        e.kernel.iter().any(|x| pred(x)) || syscall.is_some_and(pred) || has(n, |x| pred(x))
    };
    if k(&|x| x.contains("nanosleep") || is_named(x, "pysleep") || is_named(x, "time_sleep")) {
        return (Category::Sleep, None);
    }
    let io = [
        "sys_read",
        "sys_write",
        "sys_pread",
        "sys_pwrite",
        "sys_readv",
        "sys_writev",
        "sys_recv",
        "sys_send",
        "sys_accept",
        "sys_connect",
        "sys_poll",
        "sys_ppoll",
        "sys_select",
        "sys_pselect",
        "epoll_wait",
        "sys_openat",
        "sys_fsync",
        "sys_fdatasync",
        "sys_wait4",
        "sys_waitid",
        "do_epoll_wait",
    ];
    if e.kernel.iter().map(String::as_str).chain(syscall).any(|x| io.iter().any(|i| x.contains(i))) {
        return (Category::Io, None);
    }
    (Category::Idle, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Native frames of a stripped binary: only exported functions have names.
    fn stripped_stack() -> Vec<NativeFrame> {
        ["__futex_abstimed_wait_common", "[python3.14+0x74cb36]", "_PyParkingLot_Park", "[python3.14+0x5c497f]"]
            .iter()
            .map(|n| NativeFrame { module_offset: 0, ..nf(n, "/usr/bin/python3.14") })
            .collect()
    }

    fn off_cpu(native: &[NativeFrame], parked: Option<&ParkedInfo>) -> (Category, Option<LockIdentity>) {
        classify(&Evidence {
            native: native.iter().collect(),
            leaf_prev: &[],
            kernel: &[],
            python: None,
            parked,
            on_cpu: false,
            preempted: false,
            alone: false,
            runtime_module: Some("/usr/bin/python3.14"),
            opnames: &[],
            syscall: Some(202),
            operand: None,
            concurrent: true,
        })
    }

    use std::sync::Arc;

    use frames::python::{CodeInfo, ObjectRef};

    use crate::fixture::{code, nf, EXT, LIBC, RUNTIME};

    /// One row of the classifier table: the evidence of a sample and the expected outcome.
    struct Case {
        name: &'static str,
        /// Native frames, innermost first, in the runtime unless listed in `libc`/`ext`.
        native: &'static [&'static str],
        /// Native frames (by name) that live in libc or an extension module.
        libc: &'static [&'static str],
        ext: &'static [&'static str],
        /// Python frames, innermost first: (qualname, file).
        python: &'static [(&'static str, &'static str)],
        kernel: &'static [&'static str],
        leaf_prev: &'static [&'static str],
        parked: Option<ParkedInfo>,
        on_cpu: bool,
        preempted: bool,
        alone: bool,
        syscall: Option<u64>,
        /// No other thread worked on the same object at the time.
        uncontended: bool,
        /// The innermost `inlined` native frames are inlined into the next one.
        inlined: usize,
        /// The operand object `list @ 0xa0 (global `SHARED`)`: Some(immortal).
        object: Option<bool>,
        /// The operand is owned by the sampled thread.
        owned: bool,
        /// Expected category and `LockIdentity::describe` of the identity (None: no identity).
        expect: (Category, Option<&'static str>),
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                name: "",
                native: &[],
                libc: &[],
                ext: &[],
                python: &[],
                kernel: &[],
                leaf_prev: &[],
                parked: None,
                on_cpu: true,
                preempted: false,
                alone: false,
                syscall: None,
                uncontended: false,
                inlined: 0,
                object: None,
                owned: false,
                expect: (Category::Idle, None),
            }
        }
    }

    const EVAL: &str = "_PyEval_EvalFrameDefault";
    const APP: &str = "/app/app.py";
    const THREADING: &str = "/usr/lib/python3.13t/threading.py";

    fn run_case(c: &Case) -> (Category, Option<LockIdentity>) {
        let module = |n: &str| {
            if c.libc.contains(&n) {
                LIBC
            } else if c.ext.contains(&n) {
                EXT
            } else {
                RUNTIME
            }
        };
        let native: Vec<NativeFrame> = c
            .native
            .iter()
            .enumerate()
            .map(|(i, n)| NativeFrame { inlined: i < c.inlined, ..nf(n, module(n)) })
            .collect();
        let operand = c.object.map(|immortal| ObjectRef {
            addr: 0xa0,
            type_name: "list".into(),
            value: None,
            reached: "global `SHARED`".into(),
            immortal,
            owned: c.owned,
        });
        let leaf_prev: Vec<NativeFrame> =
            c.leaf_prev.iter().map(|n| NativeFrame { inlined: true, ..nf(n, RUNTIME) }).collect();
        let kernel: Vec<String> = c.kernel.iter().map(|k| k.to_string()).collect();
        let py = PyStack {
            frames: c.python.iter().map(|(q, f)| code(q, f, 1)).chain([PyFrame::Entry]).collect(),
            truncated: false,
            state: 1,
        };
        classify(&Evidence {
            native: native.iter().collect(),
            leaf_prev: &leaf_prev,
            kernel: &kernel,
            python: (!c.python.is_empty()).then_some(&py),
            parked: c.parked.as_ref(),
            on_cpu: c.on_cpu,
            preempted: c.preempted,
            alone: c.alone,
            runtime_module: Some(RUNTIME),
            opnames: &[],
            syscall: c.syscall,
            operand: operand.as_ref(),
            concurrent: !c.uncontended,
        })
    }

    fn lock_at(obj: u64, ty: &str) -> Option<ParkedInfo> {
        Some(ParkedInfo { addr: obj + 0x18, lock_object: Some((obj, ty.into())), ..Default::default() })
    }

    #[rustfmt::skip]
    fn cases() -> Vec<Case> {
        use Category::*;
        const PY: &[(&str, &str)] = &[("work", APP)];
        const SHARED: &str = "list @ 0xa0 (global `SHARED`)";
        const PARKED: &[&str] = &["__futex_abstimed_wait_common", "_PyParkingLot_Park", "_PyMutex_LockTimed"];
        vec![
            // On CPU.
            Case { name: "interpreter running Python", native: &[EVAL, "main"], python: PY, expect: (Python, None), ..Default::default() },
            Case { name: "leaf in an extension module", native: &["crc32", EVAL], ext: &["crc32"], python: PY, expect: (Native, None), ..Default::default() },
            Case { name: "no Python frames", native: &["worker_loop", "start_thread"], expect: (Native, None), ..Default::default() },
            Case { name: "garbage collector", native: &["gc_collect_main", "_PyGC_Collect", EVAL], python: PY, expect: (Gc, None), ..Default::default() },
            Case { name: "refcount at the instruction before the leaf", native: &[EVAL], leaf_prev: &["_Py_atomic_add_ssize", "Py_INCREF"], python: PY, expect: (Refcount, Some("shared reference count")), ..Default::default() },
            Case { name: "refcount slow path", native: &["_Py_DecRefShared", EVAL], python: PY, expect: (Refcount, Some("shared reference count")), ..Default::default() },
            Case { name: "refcount with nobody else on the object", native: &["_Py_DecRefShared", EVAL], python: PY, uncontended: true, expect: (AtomicRefcount, Some("shared reference count")), ..Default::default() },
            Case { name: "refcount alone in the process", native: &["_Py_DecRefShared", EVAL], python: PY, alone: true, expect: (Python, None), ..Default::default() },
            // Refcount stalls wherever the sample lands in the machinery (skid): the header load,
            // the ownership check, the try-incref family, the atomic.
            Case { name: "refcount contention on the ob_ref_local load of Py_INCREF", native: &["_Py_atomic_load_uint32_relaxed", "Py_INCREF", EVAL], inlined: 2, python: PY, object: Some(false), expect: (Refcount, Some(SHARED)), ..Default::default() },
            Case { name: "refcount contention on the atomic add of Py_INCREF", native: &["_Py_atomic_add_ssize", "Py_INCREF", EVAL], inlined: 2, python: PY, object: Some(false), expect: (Refcount, Some(SHARED)), ..Default::default() },
            Case { name: "refcount contention on the ownership check", native: &["_Py_ThreadId", "_Py_IsOwnedByCurrentThread", "Py_DECREF", EVAL], inlined: 3, python: PY, object: Some(false), expect: (Refcount, Some(SHARED)), ..Default::default() },
            Case { name: "refcount contention on the ob_ref_shared load of _Py_TryIncrefFast", native: &["_Py_atomic_load_uint32_relaxed", "_Py_TryIncrefFast", "_Py_TryIncrefCompare", EVAL], inlined: 3, python: PY, object: Some(false), expect: (Refcount, Some(SHARED)), ..Default::default() },
            Case { name: "refcount contention in _Py_TryIncref (3.13's type lookup)", native: &["_Py_TryIncrefFast", "_Py_TryIncref", "_PyType_LookupRef", EVAL], inlined: 2, python: PY, object: Some(false), expect: (Refcount, Some(SHARED)), ..Default::default() },
            Case { name: "refcount contention in _Py_TryIncRefShared's CAS", native: &["_Py_atomic_compare_exchange_ssize", "_Py_TryIncRefShared", EVAL], inlined: 2, python: PY, object: Some(false), expect: (Refcount, Some(SHARED)), ..Default::default() },
            Case { name: "refcount contention skidded past the load", native: &[EVAL], leaf_prev: &["_Py_atomic_load_ssize_relaxed", "_Py_TryIncRefShared"], python: PY, object: Some(false), expect: (Refcount, Some(SHARED)), ..Default::default() },
            Case { name: "refcount contention in _Py_DecRefShared (a real function)", native: &["_Py_atomic_load_ssize_relaxed", "_Py_DecRefShared", EVAL], inlined: 1, python: PY, object: Some(false), expect: (Refcount, Some(SHARED)), ..Default::default() },
            Case { name: "uncontended header load is ordinary work", native: &["_Py_atomic_load_uint32_relaxed", "Py_INCREF", EVAL], inlined: 2, python: PY, object: Some(false), uncontended: true, expect: (Python, None), ..Default::default() },
            Case { name: "uncontended atomic add is the cost of sharing", native: &["_Py_atomic_add_ssize", "Py_INCREF", EVAL], inlined: 2, python: PY, object: Some(false), uncontended: true, expect: (AtomicRefcount, Some(SHARED)), ..Default::default() },
            Case { name: "an immortal object's refcount is never written", native: &["_Py_atomic_load_uint32_relaxed", "Py_INCREF", EVAL], inlined: 2, python: PY, object: Some(true), expect: (Python, None), ..Default::default() },
            Case { name: "an atomic add under an operand the thread owns is on another object (its own updates are plain)", native: &["_Py_atomic_add_ssize", "Py_INCREF", EVAL], inlined: 2, python: PY, object: Some(false), owned: true, uncontended: true, expect: (AtomicRefcount, Some("shared reference count")), ..Default::default() },
            Case { name: "contention under an operand the thread owns is on another object too", native: &["_Py_atomic_add_ssize", "Py_INCREF", EVAL], inlined: 2, python: PY, object: Some(false), owned: true, expect: (Refcount, Some("shared reference count")), ..Default::default() },
            Case { name: "an atomic add under an immortal operand is on another object", native: &["_Py_atomic_add_ssize", "Py_INCREF", EVAL], inlined: 2, python: PY, object: Some(true), uncontended: true, expect: (AtomicRefcount, Some("shared reference count")), ..Default::default() },
            Case { name: "header load with the object unknown is no evidence", native: &["_Py_atomic_load_uint32_relaxed", "Py_INCREF", EVAL], inlined: 2, python: PY, expect: (Python, None), ..Default::default() },
            Case { name: "the last local reference going away deallocates: no refcount stall", native: &["_Py_Dealloc", "_Py_DecRefSharedDebug", "_Py_MergeZeroLocalRefcount", EVAL], inlined: 2, python: PY, object: Some(false), uncontended: true, expect: (Python, None), ..Default::default() },
            Case { name: "merging a zero local count with no shared one is no shared update", native: &["_Py_MergeZeroLocalRefcount", "Py_DECREF", EVAL], inlined: 0, python: PY, object: Some(false), uncontended: true, expect: (Python, None), ..Default::default() },
            Case { name: "merging a zero local count into a shared one is (its CAS)", native: &["_Py_atomic_compare_exchange_ssize", "_Py_MergeZeroLocalRefcount", EVAL], inlined: 1, python: PY, object: Some(false), uncontended: true, expect: (AtomicRefcount, Some(SHARED)), ..Default::default() },
            Case { name: "a try-incref's header load is the cost of sharing (owner or not cannot be told)", native: &["_Py_TryIncrefFast", "_Py_TryIncrefCompare", "_Py_TryXGetRef", "_Py_dict_lookup_threadsafe", EVAL], inlined: 1, python: PY, object: Some(false), uncontended: true, expect: (AtomicRefcount, Some(SHARED)), ..Default::default() },
            Case { name: "Py_DECREF's caller frame is not the machinery", native: &["list_dealloc", "_Py_Dealloc", EVAL], inlined: 0, python: PY, object: Some(false), expect: (Python, None), ..Default::default() },
            // Spinning: the loads and CAS of the slow path between yields, as well as the yield.
            Case { name: "spinning on the load before the CAS", native: &["_Py_atomic_load_uint8_relaxed", "_PyMutex_LockTimed", "PyMutex_Lock", "list_append", EVAL], inlined: 1, python: PY, expect: (Spin, Some("list_append")), ..Default::default() },
            Case { name: "spinning on the CAS of a critical section's slow path", native: &["_Py_atomic_compare_exchange_uint8", "_PyMutex_LockTimed", "_PyCriticalSection_BeginSlow", "dict_setitem", EVAL], inlined: 1, python: PY, expect: (Spin, Some("dict_setitem")), ..Default::default() },
            Case { name: "spinning in the critical section's slow entry", native: &["_PyCriticalSection_BeginSlow", "_PyCriticalSection_Begin", "list_append", EVAL], inlined: 0, python: PY, expect: (Spin, Some("list_append")), ..Default::default() },
            Case { name: "threading.Lock's fast path is no spin", native: &["_Py_atomic_compare_exchange_uint8", "_PyMutex_LockTimed", "lock_PyThread_acquire_lock", EVAL], inlined: 1, python: PY, expect: (Python, None), ..Default::default() },
            Case { name: "slow path alone in the process is no spin", native: &["_Py_atomic_load_uint8_relaxed", "_PyMutex_LockTimed", "PyMutex_Lock", "list_append", EVAL], inlined: 1, python: PY, alone: true, expect: (Python, None), ..Default::default() },
            Case { name: "spinning for a PyMutex", native: &["sched_yield", "_PyMutex_LockSlow", "list_append", EVAL], libc: &["sched_yield"], python: PY, expect: (Spin, Some("list_append")), ..Default::default() },
            Case { name: "spinning seen in the kernel", native: &["_PyMutex_LockTimed", "dict_setitem", EVAL], kernel: &["__x64_sys_sched_yield"], python: PY, expect: (Spin, Some("dict_setitem")), ..Default::default() },
            Case { name: "spinning with no taker found", native: &["_Py_yield", "_PyParkingLot_Park"], expect: (Spin, Some("PyMutex")), ..Default::default() },
            Case { name: "yielding alone in the process is no spin", native: &["sched_yield", "_PyMutex_LockSlow", EVAL], libc: &["sched_yield"], python: PY, alone: true, expect: (Native, None), ..Default::default() },
            Case { name: "re-taking a Condition's lock after notify", native: &["sched_yield", "_PyMutex_LockSlow", "lock_PyThread_acquire_lock", EVAL], libc: &["sched_yield"], python: &[("Condition.wait", THREADING), ("consume", APP)], expect: (Idle, None), ..Default::default() },
            Case { name: "yielding inside Thread.join", native: &["sched_yield", "_PyMutex_LockSlow", EVAL], libc: &["sched_yield"], python: &[("Thread.join", THREADING)], expect: (Join, None), ..Default::default() },
            Case { name: "paused thread re-attaching", native: &["sched_yield", "tstate_wait_attach", "_PyThreadState_Attach", EVAL], libc: &["sched_yield"], python: PY, expect: (StopTheWorld, Some("stop-the-world (paused thread)")), ..Default::default() },
            Case { name: "collector's pause", native: &["gc_visit_heaps", "gc_collect_main", EVAL], python: PY, expect: (StopTheWorld, Some("stop-the-world (collecting thread's pause)")), ..Default::default() },
            Case { name: "collector's pause alone in the process", native: &["gc_visit_heaps", "gc_collect_main", EVAL], python: PY, alone: true, expect: (Gc, None), ..Default::default() },
            // Off CPU.
            Case { name: "preempted", native: &[EVAL], python: PY, on_cpu: false, preempted: true, expect: (Runqueue, None), ..Default::default() },
            Case { name: "GIL by name", native: &["pthread_cond_timedwait", "take_gil", EVAL], on_cpu: false, expect: (Gil, Some("GIL")), ..Default::default() },
            Case { name: "GIL from the futex address", native: &["pthread_cond_timedwait", EVAL], on_cpu: false, parked: Some(ParkedInfo { addr: 0x5000, gil: true, ..Default::default() }), expect: (Gil, Some("GIL")), ..Default::default() },
            Case { name: "threading.Lock from memory", native: PARKED, python: PY, on_cpu: false, parked: lock_at(0x7f00_1000, "_thread.lock"), expect: (Lock, Some("_thread.lock @ 0x7f001000")), ..Default::default() },
            Case { name: "RLock from memory", native: PARKED, python: PY, on_cpu: false, parked: lock_at(0x7f00_2000, "_thread.RLock"), expect: (Lock, Some("_thread.RLock @ 0x7f002000")), ..Default::default() },
            Case { name: "Event.wait on its lock", native: PARKED, python: &[("Event.wait", THREADING), ("Condition.wait", THREADING), ("consume", APP)], on_cpu: false, parked: lock_at(0x7f00_3000, "_thread.lock"), expect: (Idle, Some("_thread.lock @ 0x7f003000")), ..Default::default() },
            Case { name: "Semaphore.acquire inside its Condition", native: PARKED, python: &[("Condition.wait", THREADING), ("Semaphore.acquire", THREADING), ("take", APP)], on_cpu: false, parked: lock_at(0x7f00_4000, "_thread.lock"), expect: (Lock, Some("_thread.lock @ 0x7f004000")), ..Default::default() },
            Case { name: "join on the thread's lock", native: PARKED, python: &[("Thread._wait_for_tstate_lock", THREADING), ("Thread.join", THREADING)], on_cpu: false, parked: lock_at(0x7f00_5000, "_thread.lock"), expect: (Join, Some("_thread.lock @ 0x7f005000")), ..Default::default() },
            Case { name: "stop-the-world victim", native: PARKED, on_cpu: false, parked: Some(ParkedInfo { addr: 0x2000_002c, stw_victim: true, ..Default::default() }), expect: (StopTheWorld, Some("stop-the-world (paused thread)")), ..Default::default() },
            Case { name: "thread requesting a stop-the-world", native: &["_PyParkingLot_Park", "_PyEvent_Wait", "stop_the_world"], on_cpu: false, expect: (StopTheWorld, Some("stop-the-world (requesting thread)")), ..Default::default() },
            Case { name: "critical section from memory", native: PARKED, python: PY, on_cpu: false, parked: Some(ParkedInfo { addr: 0x7f00_6008, cs_object: Some((0x7f00_6000, "dict".into())), ..Default::default() }), expect: (CriticalSection, Some("dict @ 0x7f006000")), ..Default::default() },
            Case { name: "critical section by name, object unknown", native: &["_PyParkingLot_Park", "_PyMutex_LockTimed", "_PyCriticalSection_BeginSlow", "list_append"], on_cpu: false, parked: Some(ParkedInfo { addr: 0x7f00_7008, ..Default::default() }), expect: (CriticalSection, Some("PyMutex @ 0x7f007008")), ..Default::default() },
            Case { name: "thread lock by name, object unknown", native: &["_PyParkingLot_Park", "_PyMutex_LockTimed", "lock_PyThread_acquire_lock", EVAL], python: PY, on_cpu: false, parked: Some(ParkedInfo { addr: 0x7f00_8018, ..Default::default() }), expect: (Lock, Some("_thread.lock @ 0x7f008018")), ..Default::default() },
            Case { name: "parked under Event.wait, lock unknown", native: &["_PyParkingLot_Park", "_PyMutex_LockTimed", EVAL], python: &[("Event.wait", THREADING), ("consume", APP)], on_cpu: false, expect: (Idle, None), ..Default::default() },
            Case { name: "parked in a thread-handle join", native: &["_PyParkingLot_Park", "_PyEvent_WaitTimed", "ThreadHandle_join"], on_cpu: false, expect: (Join, None), ..Default::default() },
            Case { name: "internal mutex named from memory", native: PARKED, on_cpu: false, parked: Some(ParkedInfo { addr: 0x1000_0320, symbol: Some("HEAD_LOCK".into()), ..Default::default() }), expect: (Pymutex, Some("HEAD_LOCK @ 0x10000320")), ..Default::default() },
            Case { name: "internal mutex named by its taker", native: &["_PyParkingLot_Park", "_PyMutex_LockTimed", "_PyMutex_LockSlow", "_PyImport_AcquireLock"], on_cpu: false, expect: (Pymutex, Some("_PyImport_AcquireLock")), ..Default::default() },
            Case { name: "PyThread lock semaphore", native: &["sem_clockwait", "PyThread_acquire_lock_timed", "acquire_timed"], on_cpu: false, expect: (Lock, Some("PyThread lock")), ..Default::default() },
            Case { name: "3.13 RLock", native: &["sem_clockwait", "PyThread_acquire_lock_timed", "rlock_acquire"], on_cpu: false, expect: (Lock, Some("_thread.RLock")), ..Default::default() },
            Case { name: "thread join without parking", native: &["pthread_join", "PyThread_join_thread"], on_cpu: false, expect: (Join, None), ..Default::default() },
            Case { name: "sleep from the kernel stack", native: &["clock_nanosleep"], libc: &["clock_nanosleep"], kernel: &["hrtimer_nanosleep", "__x64_sys_clock_nanosleep"], on_cpu: false, expect: (Sleep, None), ..Default::default() },
            Case { name: "sleep from /proc syscall", native: &["__GI___clock_nanosleep"], libc: &["__GI___clock_nanosleep"], syscall: Some(230), on_cpu: false, expect: (Sleep, None), ..Default::default() },
            Case { name: "sleep from time.sleep", native: &["pysleep", "time_sleep"], on_cpu: false, expect: (Sleep, None), ..Default::default() },
            Case { name: "read from the kernel stack", native: &["read"], libc: &["read"], kernel: &["pipe_read", "ksys_read", "__x64_sys_read"], on_cpu: false, expect: (Io, None), ..Default::default() },
            Case { name: "poll from /proc syscall", native: &["poll"], libc: &["poll"], syscall: Some(7), on_cpu: false, expect: (Io, None), ..Default::default() },
            Case { name: "epoll_wait from /proc syscall", native: &["epoll_wait"], libc: &["epoll_wait"], syscall: Some(232), on_cpu: false, expect: (Io, None), ..Default::default() },
            Case { name: "a futex with nothing to blame", native: &["__futex_abstimed_wait_common", "pthread_cond_wait"], libc: &["__futex_abstimed_wait_common", "pthread_cond_wait"], syscall: Some(202), on_cpu: false, expect: (Idle, None), ..Default::default() },
            Case { name: "no evidence at all", on_cpu: false, expect: (Idle, None), ..Default::default() },
        ]
    }

    #[test]
    fn classifier_table() {
        let mut failures = Vec::new();
        let cases = cases();
        for c in &cases {
            let (cat, id) = run_case(c);
            let got = (cat, id.as_ref().map(LockIdentity::describe));
            let want = (c.expect.0, c.expect.1.map(str::to_string));
            if got != want {
                failures.push(format!("{}: expected {want:?}, got {got:?}", c.name));
            }
        }
        assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    }

    #[test]
    fn the_table_covers_every_category() {
        let cases = cases();
        for cat in Category::ALL {
            assert!(cases.iter().any(|c| c.expect.0 == cat), "no row expects {}", cat.name());
        }
    }

    #[test]
    fn refcount_names_what_the_instruction_touched() {
        let mut info = CodeInfo::synthetic("work", APP, 1);
        info.locals = vec!["shared".into()];
        let opnames: Vec<String> =
            (0..256).map(|i| if i == 85 { "LOAD_FAST".into() } else { format!("OP{i}") }).collect();
        let py = PyStack {
            frames: vec![
                PyFrame::Code { code: Arc::new(info), code_addr: 0, lasti: 0, line: Some(3), instr: Some(85) },
                PyFrame::Entry,
            ],
            truncated: false,
            state: 1,
        };
        let native = [nf(EVAL, RUNTIME)];
        let prev = [nf("_Py_atomic_add_ssize", RUNTIME), nf("Py_INCREF", RUNTIME)];
        let (c, id) = classify(&Evidence {
            native: native.iter().collect(),
            leaf_prev: &prev,
            kernel: &[],
            python: Some(&py),
            parked: None,
            on_cpu: true,
            preempted: false,
            alone: false,
            runtime_module: Some(RUNTIME),
            opnames: &opnames,
            syscall: None,
            operand: None,
            concurrent: true,
        });
        assert_eq!(c, Category::Refcount);
        assert_eq!(id.unwrap().describe(), "shared refcount of local `shared`");
    }

    #[test]
    fn identities_describe_themselves() {
        let id = |address, type_name: Option<&str>, symbol: Option<&str>| LockIdentity {
            address,
            type_name: type_name.map(Into::into),
            symbol: symbol.map(Into::into),
        };
        // An object read from the target carries its full rendering (refcount stalls).
        assert_eq!(
            id(Some(0x10), Some("list"), Some("list @ 0x10 (global `x`)")).describe(),
            "list @ 0x10 (global `x`)"
        );
        assert_eq!(id(Some(0x10), Some("list"), None).describe(), "list @ 0x10");
        assert_eq!(id(Some(0x10), None, Some("HEAD_LOCK")).describe(), "HEAD_LOCK @ 0x10");
        assert_eq!(id(Some(0x10), None, None).describe(), "PyMutex @ 0x10");
        assert_eq!(id(None, Some("PyThread lock"), None).describe(), "PyThread lock");
        assert_eq!(id(None, None, Some("GIL")).describe(), "GIL");
        assert_eq!(id(None, None, None).describe(), "unknown");
    }

    #[test]
    fn lock_waits_are_recognised_from_memory_without_symbols() {
        let n = stripped_stack();
        let lock = ParkedInfo {
            addr: 0x7f00_0010,
            lock_object: Some((0x7f00_0000, "_thread.lock".into())),
            ..Default::default()
        };
        let (c, id) = off_cpu(&n, Some(&lock));
        assert_eq!(c, Category::Lock);
        assert_eq!(id.unwrap().describe(), "_thread.lock @ 0x7f000000");
        let rlock = ParkedInfo { lock_object: Some((0x7f00_0100, "_thread.RLock".into())), ..lock.clone() };
        assert_eq!(off_cpu(&n, Some(&rlock)).1.unwrap().type_name.as_deref(), Some("_thread.RLock"));
    }

    #[test]
    fn gil_waits_are_recognised_from_the_futex_address() {
        // A GIL wait sleeps in pthread_cond_timedwait: no parking-lot frame, no `take_gil` name.
        let n: Vec<NativeFrame> =
            stripped_stack().into_iter().filter(|f| f.function.as_deref() != Some(PARK)).collect();
        let gil = ParkedInfo { addr: 0x5000_0020, gil: true, symbol: Some("GIL".into()), ..Default::default() };
        assert_eq!(off_cpu(&n, Some(&gil)).0, Category::Gil);
        // The same stack without that evidence is idle, not a GIL wait.
        assert_eq!(off_cpu(&n, None).0, Category::Idle);
    }

    #[test]
    fn critical_sections_and_internal_mutexes_from_memory() {
        let n = stripped_stack();
        let cs = ParkedInfo { addr: 0x7f00_000a, cs_object: Some((0x7f00_0000, "list".into())), ..Default::default() };
        let (c, id) = off_cpu(&n, Some(&cs));
        assert_eq!(c, Category::CriticalSection);
        assert_eq!(id.unwrap().describe(), "list @ 0x7f000000");
        let internal = ParkedInfo {
            addr: 0x1000_0320,
            symbol: Some("interpreter list lock (HEAD_LOCK), _PyRuntime+0x320".into()),
            ..Default::default()
        };
        let (c, id) = off_cpu(&n, Some(&internal));
        assert_eq!(c, Category::Pymutex);
        assert!(id.unwrap().describe().starts_with("interpreter list lock"));
        let stw = ParkedInfo { addr: 0x2000_002c, stw_victim: true, ..Default::default() };
        assert_eq!(off_cpu(&n, Some(&stw)).0, Category::StopTheWorld);
    }
}
