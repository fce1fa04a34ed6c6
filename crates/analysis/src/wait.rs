//! Why a thread was not making progress: classification of samples into categories, and the
//! identity of the lock or object involved.

use serde::Serialize;
use symbolizer::native::NativeFrame;
use symbolizer::python::opcodes::describe_instr;
use symbolizer::python::{ParkedInfo, PyFrame, PyStack};

/// Where a thread's time went. The first five are on-CPU, the rest off-CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Running Python code (the interpreter and the C code it inlines or calls internally).
    Python,
    /// Running native code outside the interpreter (extension modules, libraries).
    Native,
    /// Running the garbage collector outside a stop-the-world pause.
    Gc,
    /// On CPU, updating reference counts of objects shared between threads.
    Refcount,
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
    pub const ALL: [Category; 15] = [
        Category::Python,
        Category::Native,
        Category::Gc,
        Category::Refcount,
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
        matches!(self, Category::Python | Category::Native | Category::Gc | Category::Refcount | Category::Spin)
    }
}

/// What a wait (or a spin, or a refcount hot spot) was about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
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
            (Some(t), Some(a), _) => format!("{t} @ {a:#x}"),
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
const REFCOUNT_FNS: [&str; 7] = [
    "_Py_DecRefShared",
    "_Py_DecRefSharedDebug",
    "_Py_MergeZeroLocalRefcount",
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
    let refcount_leaf = e.leaf_prev.iter().chain(n.iter().take(4).copied()).any(|f| {
        let x = fname(f);
        x == "_Py_atomic_add_ssize"
            || x == "_Py_atomic_add_uint32"
            || x.starts_with("_Py_atomic_compare_exchange_ssize")
    }) && e.leaf_prev.iter().chain(n.iter().take(6).copied()).any(|f| {
        let x = fname(f);
        x == "Py_INCREF"
            || x == "Py_DECREF"
            || x == "Py_XINCREF"
            || x == "Py_XDECREF"
            || x == "_Py_NewRef"
            || x == "_Py_XNewRef"
    });
    // The refcount slow paths, when the sample is in them (not in a deallocation they started).
    let leaf_chain = n.iter().take_while(|f| f.inlined).count() + 1;
    let in_refcount_fn = n.iter().take(leaf_chain).any(|f| REFCOUNT_FNS.iter().any(|b| is_named(fname(f), b)));
    // Alone in its process, a thread's atomic refcount updates contend with nobody.
    if (refcount_leaf || in_refcount_fn) && !e.alone {
        let what = e.python.and_then(|p| {
            p.frames.iter().find_map(|f| match f {
                PyFrame::Code { code, instr: Some(i), .. } => describe_instr(*i, code, e.opnames),
                _ => None,
            })
        });
        let symbol = match what {
            Some(w) => format!("shared refcount of {w}"),
            None => "shared reference count".into(),
        };
        return (Category::Refcount, Some(LockIdentity { address: None, type_name: None, symbol: Some(symbol) }));
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
            .map(|n| NativeFrame {
                function: Some(n.to_string()),
                file: None,
                line: None,
                module: "/usr/bin/python3.14".into(),
                module_offset: 0,
                inlined: false,
            })
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
        })
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
