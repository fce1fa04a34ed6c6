//! Per-version layouts of everything ftprof reads that `_Py_DebugOffsets` does not describe.
//!
//! One typed table per CPython minor version and build (default / free-threaded). Every value
//! was obtained by compiling `offsetof`/`sizeof` expressions against that version's own headers
//! (`Py_BUILD_CORE`, x86-64, GCC): 3.13.5 from the installed headers of the interpreters the
//! project builds (`scripts/provision-python.sh`), 3.14.10 and 3.15.2 from Debian unstable's
//! `libpython3.14-dev` / `libpython3.15-dev` (the free-threaded columns with `Py_GIL_DISABLED`
//! defined over the same headers). The header each field comes from is cited next to it.
//!
//! `runtime_size` (`sizeof(_PyRuntimeState)`) is compared with the value the target's
//! `_Py_DebugOffsets` reports: when they differ (a patched or differently configured build) the
//! table is not trusted for the interpreter-internal mutex names, which are then shown as raw
//! offsets (`PyInterpreterState+0x…`).

/// Facts about one CPython (minor, build) that `_Py_DebugOffsets` does not give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub minor: u8,
    pub free_threaded: bool,
    /// `sizeof(_PyRuntimeState)` (`Include/internal/pycore_runtime_structs.h`; 3.13:
    /// `pycore_runtime.h`), cross-checked against `_Py_DebugOffsets.runtime_state.size`.
    pub runtime_size: u64,
    /// `PyThreadState.state` (`Include/cpython/pystate.h`): 0 detached, 1 attached,
    /// 2 suspended (3.14+: 3 shutting down).
    pub ts_state: u64,
    /// `PyThreadState.holds_gil` (`Include/cpython/pystate.h`, 3.14+).
    pub ts_holds_gil: Option<u64>,
    /// `PyThreadState.critical_section`, a tagged pointer to the innermost active
    /// `PyCriticalSection` (`Include/cpython/pystate.h`; zero in default builds).
    pub ts_critical_section: u64,
    /// `PyCriticalSection._cs_mutex` and `PyCriticalSection2._cs_mutex2`
    /// (`Include/internal/pycore_critical_section.h`, 3.14+: `Include/cpython/critical_section.h`).
    pub cs_mutex: u64,
    pub cs_mutex2: u64,
    /// `PyObject.ob_mutex` in the free-threaded object header (`Include/object.h`).
    pub ob_mutex: Option<u64>,
    /// The `PyMutex` of a `_thread.lock`, in bytes after the object header: `lockobject`
    /// is `{ PyObject_HEAD; PyMutex lock; }` in 3.13–3.15 (`Modules/_threadmodule.c`).
    pub lock_mutex_after_header: u64,
    /// The `PyMutex` of a `_thread.RLock`, after the object header: 3.14+ `rlockobject` is
    /// `{ PyObject_HEAD; _PyRecursiveMutex lock; }` and `_PyRecursiveMutex` starts with its
    /// `PyMutex` (`Include/internal/pycore_lock.h`). 3.13's RLock waits on a private
    /// `PyThread_type_lock` semaphore instead (`None`).
    pub rlock_mutex_after_header: Option<u64>,
    /// The owning thread's `threading.get_ident()`, after the object header: 3.13
    /// `rlockobject.rlock_owner`, 3.14+ `_PyRecursiveMutex.thread` (both one word in).
    pub rlock_owner_after_header: u64,
    /// `sizeof(struct _gil_runtime_state)` (`Include/internal/pycore_gil.h`): a futex inside
    /// `[*interp->ceval.gil, + size)` is a wait for the GIL (its `cond` or `mutex`).
    pub gil_state_size: u64,
    /// `_PyInterpreterFrame.owner` of the entry frame each C-level `_PyEval_EvalFrameDefault`
    /// activation pushes: 3.13 `FRAME_OWNED_BY_CSTACK`, 3.14+ `FRAME_OWNED_BY_INTERPRETER`
    /// (`Include/internal/pycore_frame.h`, 3.14+: `pycore_interpframe_structs.h`); 3 in all.
    pub owner_entry: u8,
    /// `PyCodeObject.co_names` (`Include/cpython/code.h`).
    pub code_co_names: u64,
    /// `PyASCIIObject.state` bit positions (kind shift, compact bit, ascii bit)
    /// (`Include/cpython/unicodeobject.h`: the FT build of 3.14+ makes `interned` a full byte).
    pub unicode_state_bits: (u32, u32, u32),
    /// Interpreter-internal mutexes by offset in `PyInterpreterState` (`pycore_interp_structs.h`;
    /// 3.13: `pycore_interp.h`): (offset, length, name).
    pub interp_mutexes: &'static [(u64, u64, &'static str)],
    /// Runtime-wide mutexes by offset in `_PyRuntimeState`: (offset, length, name).
    pub runtime_mutexes: &'static [(u64, u64, &'static str)],
}

const STW: &str = "stop-the-world mutex";
const STW_EVENT: &str = "stop-the-world event";
const TYPE_LOCK: &str = "type lock (TYPE_LOCK)";
const HEAD_LOCK: &str = "interpreter list lock (HEAD_LOCK)";
const RUNTIME_STW: &str = "global stop-the-world mutex";
/// `interp->imports.lock`, the `_PyRecursiveMutex` of the global import lock (`pycore_import.h`).
const IMPORT_LOCK: &str = "import lock";
/// `interp->ceval.pending.mutex` (`pycore_ceval_state.h`): pending calls.
const PENDING: &str = "pending-calls lock";
/// `interp->code_state.mutex` (`pycore_code.h`): code-object constants and versions.
const CODE_STATE: &str = "code objects lock";
/// `interp->warnings.mutex` (`pycore_warnings.h`).
const WARNINGS: &str = "warnings lock";
/// `_PyRuntime.imports.extensions.mutex` (`pycore_import.h`): the cache of extension modules.
const EXTENSIONS: &str = "extension modules cache lock";
/// `_PyRuntime.unicode_state.ids.mutex` (`pycore_unicodeobject.h`): `_Py_Identifier` table.
const IDS: &str = "identifier table lock";
/// `_PyRuntime.audit_hooks.mutex` (`pycore_runtime.h`).
const AUDIT: &str = "audit hooks lock";
/// `_PyRuntime.allocators.mutex` (`pycore_pymem.h`).
const ALLOCATORS: &str = "memory allocators lock";
/// `_PyRuntime.atexit.mutex` (`pycore_atexit.h`).
const ATEXIT: &str = "atexit lock";
/// `_PyRuntime.ceval.sys_trace_profile_mutex` (`pycore_ceval_state.h`).
const TRACE: &str = "sys.settrace/setprofile lock";
/// `_PyRuntime.ceval.pending_mainthread.mutex` (`pycore_ceval_state.h`).
const PENDING_MAIN: &str = "main-thread pending-calls lock";
/// `_PyRuntime.xi.registry.mutex` (`pycore_crossinterp.h`).
const XI: &str = "cross-interpreter data registry lock";
/// 3.13 runtime-wide mutexes, the same offsets in both builds (`offsetof` against the 3.13.5 and
/// 3.13.5t headers).
const RUNTIME_313: &[(u64, u64, &str)] = &[
    (624, 1, HEAD_LOCK),
    (680, 1, XI),
    (696, 1, ALLOCATORS),
    (2_248, 1, ATEXIT),
    (2_536, 1, EXTENSIONS),
    (2_648, 1, PENDING_MAIN),
    (9_872, 1, TRACE),
    (10_328, 1, RUNTIME_STW),
    (10_416, 1, AUDIT),
    (10_448, 1, IDS),
];

/// 3.13.5 default build (headers installed by `scripts/provision-python.sh gil`).
pub const PY313: Layout = Layout {
    minor: 13,
    free_threaded: false,
    runtime_size: 283_376,
    ts_state: 40,
    ts_holds_gil: None,
    ts_critical_section: 176,
    cs_mutex: 8,
    cs_mutex2: 16,
    ob_mutex: None,
    lock_mutex_after_header: 0,
    rlock_mutex_after_header: None,
    rlock_owner_after_header: 8,
    gil_state_size: 208,
    owner_entry: 3,
    code_co_names: 32,
    unicode_state_bits: (2, 5, 6),
    interp_mutexes: &[
        (10_728, 1, STW),
        (10_732, 1, STW_EVENT),
        (193_064, 1, TYPE_LOCK),
        (40, 1, PENDING),
        (7_704, 1, IMPORT_LOCK),
        (10_680, 1, WARNINGS),
        (82_544, 1, CODE_STATE),
    ],
    runtime_mutexes: RUNTIME_313,
};

/// 3.13.5t (headers installed by `scripts/provision-python.sh`; also checked against DWARF).
pub const PY313T: Layout = Layout {
    minor: 13,
    free_threaded: true,
    runtime_size: 328_320,
    ts_state: 40,
    ts_holds_gil: None,
    ts_critical_section: 176,
    cs_mutex: 8,
    cs_mutex2: 16,
    ob_mutex: Some(10),
    lock_mutex_after_header: 0,
    rlock_mutex_after_header: None,
    rlock_owner_after_header: 8,
    gil_state_size: 216,
    owner_entry: 3,
    code_co_names: 48,
    unicode_state_bits: (2, 5, 6),
    interp_mutexes: &[
        (10_744, 1, STW),
        (10_748, 1, STW_EVENT),
        // `interp->qsbr.mutex` (`pycore_qsbr.h`: `struct _qsbr_shared` at 10_768, its `mutex`
        // after `wr_seq, rd_seq, array, size`).
        (10_800, 1, "QSBR mutex"),
        (17_304, 127, "weakref lock"),
        (196_152, 1, TYPE_LOCK),
        (40, 1, PENDING),
        (7_712, 1, IMPORT_LOCK),
        (8_000, 1, "codec search-path lock"),
        (10_696, 1, WARNINGS),
        // `interp->brc.table`: 257 `_brc_bucket`s, each starting with its mutex (`pycore_brc.h`).
        (11_136, 6_168, "biased-refcount queue lock"),
        (20_088, 1, "function versions lock"),
        (85_632, 1, CODE_STATE),
        (85_748, 1, "MemoryError free-list lock"),
        (85_764, 1, "delayed-free queue lock"),
    ],
    runtime_mutexes: RUNTIME_313,
};

/// 3.14.10 default build (Debian `libpython3.14-dev` 3.14.10-1).
pub const PY314: Layout = Layout {
    minor: 14,
    free_threaded: false,
    runtime_size: 316_616,
    ts_state: 44,
    ts_holds_gil: Some(36),
    ts_critical_section: 176,
    cs_mutex: 8,
    cs_mutex2: 16,
    ob_mutex: None,
    lock_mutex_after_header: 0,
    rlock_mutex_after_header: Some(0),
    rlock_owner_after_header: 8,
    gil_state_size: 208,
    owner_entry: 3,
    code_co_names: 32,
    unicode_state_bits: (2, 5, 6),
    interp_mutexes: &[(10_800, 1, STW), (10_804, 1, STW_EVENT), (190_336, 1, TYPE_LOCK)],
    runtime_mutexes: &[(800, 1, HEAD_LOCK), (10_544, 1, RUNTIME_STW)],
};

/// 3.14.10t (Debian `libpython3.14-dev` 3.14.10-1 headers with `Py_GIL_DISABLED`; not run).
pub const PY314T: Layout = Layout {
    minor: 14,
    free_threaded: true,
    runtime_size: 365_624,
    ts_state: 44,
    ts_holds_gil: Some(36),
    ts_critical_section: 176,
    cs_mutex: 8,
    cs_mutex2: 16,
    ob_mutex: Some(10),
    lock_mutex_after_header: 0,
    rlock_mutex_after_header: Some(0),
    rlock_owner_after_header: 8,
    gil_state_size: 216,
    owner_entry: 3,
    code_co_names: 48,
    unicode_state_bits: (8, 11, 12),
    interp_mutexes: &[
        (10_848, 1, STW),
        (10_852, 1, STW_EVENT),
        (10_872, 1, "QSBR mutex"),
        (17_136, 127, "weakref lock"),
        (196_128, 1, TYPE_LOCK),
    ],
    runtime_mutexes: &[(800, 1, HEAD_LOCK), (10_544, 1, RUNTIME_STW)],
};

/// 3.15.2 default build (Debian `libpython3.15-dev` 3.15.2-1).
pub const PY315: Layout = Layout {
    minor: 15,
    free_threaded: false,
    runtime_size: 346_560,
    ts_state: 48,
    ts_holds_gil: Some(36),
    ts_critical_section: 200,
    cs_mutex: 8,
    cs_mutex2: 16,
    ob_mutex: None,
    lock_mutex_after_header: 0,
    rlock_mutex_after_header: Some(0),
    rlock_owner_after_header: 8,
    gil_state_size: 208,
    owner_entry: 3,
    code_co_names: 32,
    unicode_state_bits: (2, 5, 6),
    interp_mutexes: &[(10_776, 1, STW), (10_780, 1, STW_EVENT), (190_504, 1, TYPE_LOCK)],
    runtime_mutexes: &[(928, 1, HEAD_LOCK), (10_664, 1, RUNTIME_STW)],
};

/// 3.15.2t (Debian `libpython3.15-dev` 3.15.2-1 headers with `Py_GIL_DISABLED`; not run).
pub const PY315T: Layout = Layout {
    minor: 15,
    free_threaded: true,
    runtime_size: 409_296,
    ts_state: 48,
    ts_holds_gil: Some(36),
    ts_critical_section: 200,
    cs_mutex: 8,
    cs_mutex2: 16,
    ob_mutex: Some(10),
    lock_mutex_after_header: 0,
    rlock_mutex_after_header: Some(0),
    rlock_owner_after_header: 8,
    gil_state_size: 216,
    owner_entry: 3,
    code_co_names: 48,
    unicode_state_bits: (8, 11, 12),
    interp_mutexes: &[
        (10_800, 1, STW),
        (10_804, 1, STW_EVENT),
        (10_824, 1, "QSBR mutex"),
        (17_088, 127, "weakref lock"),
        (196_240, 1, TYPE_LOCK),
    ],
    runtime_mutexes: &[(928, 1, HEAD_LOCK), (10_664, 1, RUNTIME_STW)],
};

/// Every known layout.
pub const ALL: [Layout; 6] = [PY313, PY313T, PY314, PY314T, PY315, PY315T];

impl Layout {
    /// The table of CPython 3.`minor` (default or free-threaded build), if known.
    pub fn for_version(minor: u64, free_threaded: bool) -> Option<&'static Layout> {
        ALL.iter().find(|l| u64::from(l.minor) == minor && l.free_threaded == free_threaded)
    }

    /// Name of the interpreter-internal mutex at `off` in `PyInterpreterState`.
    pub fn interp_mutex(&self, off: u64) -> Option<&'static str> {
        self.interp_mutexes.iter().find(|(o, n, _)| off >= *o && off < o + n).map(|m| m.2)
    }

    /// Name of the runtime-wide mutex at `off` in `_PyRuntimeState`.
    pub fn runtime_mutex(&self, off: u64) -> Option<&'static str> {
        self.runtime_mutexes.iter().find(|(o, n, _)| off >= *o && off < o + n).map(|m| m.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_per_version_and_build() {
        for minor in 13..=15 {
            for ft in [false, true] {
                let l = Layout::for_version(minor, ft).unwrap();
                assert_eq!((u64::from(l.minor), l.free_threaded), (minor, ft));
                assert_eq!(l.ob_mutex.is_some(), ft);
                // The GIL state is 8 bytes larger in FT builds (its `enabled` field).
                assert_eq!(l.gil_state_size, if ft { 216 } else { 208 });
            }
        }
        assert!(Layout::for_version(16, false).is_none());
        assert!(Layout::for_version(12, true).is_none());
    }

    #[test]
    fn mutex_names() {
        assert_eq!(PY313T.interp_mutex(196_152), Some("type lock (TYPE_LOCK)"));
        assert_eq!(PY313T.interp_mutex(17_304 + 5), Some("weakref lock"));
        assert_eq!(PY315.runtime_mutex(928), Some("interpreter list lock (HEAD_LOCK)"));
        assert_eq!(PY314.interp_mutex(12), None);
    }
}
