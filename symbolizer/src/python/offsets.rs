//! `_Py_DebugOffsets`: the layout description CPython 3.13+ embeds at the start of `_PyRuntime`.

use std::collections::HashMap;

/// Field list of `_Py_DebugOffsets` per minor version (every leaf is a u64, after an 8-byte cookie),
/// transcribed from `Include/internal/pycore_debug_offsets.h` of each version.
///
/// 3.13 (`pycore_debug_offsets.h` @ v3.13.5).
pub(crate) const F313: &[(&str, &[&str])] = &[
    ("", &["version", "free_threaded"]),
    ("runtime_state", &["size", "finalizing", "interpreters_head"]),
    (
        "interpreter_state",
        &[
            "size",
            "id",
            "next",
            "threads_head",
            "gc",
            "imports_modules",
            "sysdict",
            "builtins",
            "ceval_gil",
            "gil_runtime_state",
            "gil_runtime_state_enabled",
            "gil_runtime_state_locked",
            "gil_runtime_state_holder",
        ],
    ),
    (
        "thread_state",
        &[
            "size",
            "prev",
            "next",
            "interp",
            "current_frame",
            "thread_id",
            "native_thread_id",
            "datastack_chunk",
            "status",
        ],
    ),
    ("interpreter_frame", &["size", "previous", "executable", "instr_ptr", "localsplus", "owner"]),
    (
        "code_object",
        &[
            "size",
            "filename",
            "name",
            "qualname",
            "linetable",
            "firstlineno",
            "argcount",
            "localsplusnames",
            "localspluskinds",
            "co_code_adaptive",
        ],
    ),
    ("pyobject", &["size", "ob_type"]),
    ("type_object", &["size", "tp_name", "tp_repr", "tp_flags"]),
    ("tuple_object", &["size", "ob_item", "ob_size"]),
    ("list_object", &["size", "ob_item", "ob_size"]),
    ("dict_object", &["size", "ma_keys", "ma_values"]),
    ("float_object", &["size", "ob_fval"]),
    ("long_object", &["size", "lv_tag", "ob_digit"]),
    ("bytes_object", &["size", "ob_size", "ob_sval"]),
    ("unicode_object", &["size", "state", "length", "asciiobject_size"]),
    ("gc", &["size", "collecting"]),
];

/// 3.14 (`pycore_debug_offsets.h` @ v3.14.10): adds threads_main, code_object_generation,
/// tlbc_generation, frame stackpointer/tlbc_index, co_tlbc and the set, generator, llist and
/// debugger-support groups.
pub(crate) const F314: &[(&str, &[&str])] = &[
    ("", &["version", "free_threaded"]),
    ("runtime_state", &["size", "finalizing", "interpreters_head"]),
    (
        "interpreter_state",
        &[
            "size",
            "id",
            "next",
            "threads_head",
            "threads_main",
            "gc",
            "imports_modules",
            "sysdict",
            "builtins",
            "ceval_gil",
            "gil_runtime_state",
            "gil_runtime_state_enabled",
            "gil_runtime_state_locked",
            "gil_runtime_state_holder",
            "code_object_generation",
            "tlbc_generation",
        ],
    ),
    (
        "thread_state",
        &[
            "size",
            "prev",
            "next",
            "interp",
            "current_frame",
            "thread_id",
            "native_thread_id",
            "datastack_chunk",
            "status",
        ],
    ),
    (
        "interpreter_frame",
        &["size", "previous", "executable", "instr_ptr", "localsplus", "owner", "stackpointer", "tlbc_index"],
    ),
    (
        "code_object",
        &[
            "size",
            "filename",
            "name",
            "qualname",
            "linetable",
            "firstlineno",
            "argcount",
            "localsplusnames",
            "localspluskinds",
            "co_code_adaptive",
            "co_tlbc",
        ],
    ),
    ("pyobject", &["size", "ob_type"]),
    ("type_object", &["size", "tp_name", "tp_repr", "tp_flags"]),
    ("tuple_object", &["size", "ob_item", "ob_size"]),
    ("list_object", &["size", "ob_item", "ob_size"]),
    ("set_object", &["size", "used", "table", "mask"]),
    ("dict_object", &["size", "ma_keys", "ma_values"]),
    ("float_object", &["size", "ob_fval"]),
    ("long_object", &["size", "lv_tag", "ob_digit"]),
    ("bytes_object", &["size", "ob_size", "ob_sval"]),
    ("unicode_object", &["size", "state", "length", "asciiobject_size"]),
    ("gc", &["size", "collecting"]),
    ("gen_object", &["size", "gi_name", "gi_iframe", "gi_frame_state"]),
    ("llist_node", &["next", "prev"]),
    (
        "debugger_support",
        &[
            "eval_breaker",
            "remote_debugger_support",
            "remote_debugging_enabled",
            "debugger_pending_call",
            "debugger_script_path",
            "debugger_script_path_size",
        ],
    ),
];

/// 3.15 (`Include/internal/pycore_debug_offsets.h` @ v3.15.2): `thread_state` gains base_frame,
/// last_profiled_frame(_seq), holds_gil, gil_requested, current_exception and exc_state; a new
/// `err_stackitem` group; `type_object` gains tp_basicsize/tp_dictoffset; a new
/// `heap_type_object` group; `unicode_object` gains compactunicodeobject_size; `gc` gains frame and
/// generation_stats.
pub(crate) const F315: &[(&str, &[&str])] = &[
    ("", &["version", "free_threaded"]),
    ("runtime_state", &["size", "finalizing", "interpreters_head"]),
    (
        "interpreter_state",
        &[
            "size",
            "id",
            "next",
            "threads_head",
            "threads_main",
            "gc",
            "imports_modules",
            "sysdict",
            "builtins",
            "ceval_gil",
            "gil_runtime_state",
            "gil_runtime_state_enabled",
            "gil_runtime_state_locked",
            "gil_runtime_state_holder",
            "code_object_generation",
            "tlbc_generation",
        ],
    ),
    (
        "thread_state",
        &[
            "size",
            "prev",
            "next",
            "interp",
            "current_frame",
            "base_frame",
            "last_profiled_frame",
            "last_profiled_frame_seq",
            "thread_id",
            "native_thread_id",
            "datastack_chunk",
            "status",
            "holds_gil",
            "gil_requested",
            "current_exception",
            "exc_state",
        ],
    ),
    ("err_stackitem", &["exc_value"]),
    (
        "interpreter_frame",
        &["size", "previous", "executable", "instr_ptr", "localsplus", "owner", "stackpointer", "tlbc_index"],
    ),
    (
        "code_object",
        &[
            "size",
            "filename",
            "name",
            "qualname",
            "linetable",
            "firstlineno",
            "argcount",
            "localsplusnames",
            "localspluskinds",
            "co_code_adaptive",
            "co_tlbc",
        ],
    ),
    ("pyobject", &["size", "ob_type"]),
    ("type_object", &["size", "tp_name", "tp_repr", "tp_flags", "tp_basicsize", "tp_dictoffset"]),
    ("heap_type_object", &["size", "ht_cached_keys"]),
    ("tuple_object", &["size", "ob_item", "ob_size"]),
    ("list_object", &["size", "ob_item", "ob_size"]),
    ("set_object", &["size", "used", "table", "mask"]),
    ("dict_object", &["size", "ma_keys", "ma_values"]),
    ("float_object", &["size", "ob_fval"]),
    ("long_object", &["size", "lv_tag", "ob_digit"]),
    ("bytes_object", &["size", "ob_size", "ob_sval"]),
    ("unicode_object", &["size", "state", "length", "asciiobject_size", "compactunicodeobject_size"]),
    ("gc", &["size", "collecting", "frame", "generation_stats_size", "generation_stats"]),
    ("gen_object", &["size", "gi_name", "gi_iframe", "gi_frame_state"]),
    ("llist_node", &["next", "prev"]),
    (
        "debugger_support",
        &[
            "eval_breaker",
            "remote_debugger_support",
            "remote_debugging_enabled",
            "debugger_pending_call",
            "debugger_script_path",
            "debugger_script_path_size",
        ],
    ),
];

/// The newest CPython minor version whose layouts ftprof knows.
pub const NEWEST_MINOR: u64 = 15;

/// Bytes to read at `_PyRuntime` to cover the largest known layout.
pub const MAX_SIZE: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OffsetsError {
    #[error("no _Py_DebugOffsets cookie (\"xdebugpy\") at _PyRuntime")]
    BadCookie,
    #[error("CPython {0} is not supported: ftprof needs CPython 3.13 or newer")]
    TooOld(String),
    #[error("CPython {0} is not supported yet: the newest version ftprof can read is 3.{newest} (its memory layout may have changed; upgrade ftprof)", newest = NEWEST_MINOR)]
    TooNew(String),
    #[error("truncated _Py_DebugOffsets")]
    Truncated,
    #[error("implausible _Py_DebugOffsets ({0} = {1}): an unknown layout")]
    Implausible(&'static str, u64),
}

/// Typed view of the offsets ftprof uses (all byte offsets unless noted).
#[derive(Clone, Debug, Default)]
pub struct DebugOffsets {
    /// PY_VERSION_HEX.
    pub version: u64,
    pub free_threaded: bool,
    pub runtime_size: u64,
    pub interp_size: u64,
    pub pyobject_size: u64,
    pub runtime_interpreters_head: u64,
    pub runtime_finalizing: u64,
    pub interp_id: u64,
    pub interp_next: u64,
    pub interp_threads_head: u64,
    pub interp_gc: u64,
    pub interp_ceval_gil: u64,
    pub gil_enabled: u64,
    pub gil_locked: u64,
    pub gil_holder: u64,
    pub ts_size: u64,
    pub ts_next: u64,
    pub ts_current_frame: u64,
    pub ts_thread_id: u64,
    pub ts_native_thread_id: u64,
    pub ts_status: u64,
    /// 3.15+: `PyThreadState.base_frame`, the bottommost sentinel frame (not a Python frame).
    pub ts_base_frame: Option<u64>,
    pub frame_size: u64,
    pub frame_previous: u64,
    pub frame_executable: u64,
    pub frame_instr_ptr: u64,
    pub frame_owner: u64,
    pub frame_localsplus: u64,
    /// 3.14+: `stackpointer` (a pointer); 3.13 keeps an int `stacktop` just before `localsplus`.
    pub frame_stackpointer: Option<u64>,
    pub frame_tlbc_index: Option<u64>,
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: u64,
    pub code_linetable: u64,
    pub code_firstlineno: u64,
    pub code_localsplusnames: u64,
    pub code_co_code_adaptive: u64,
    pub code_co_tlbc: Option<u64>,
    pub ob_type: u64,
    pub tp_name: u64,
    pub type_size: u64,
    pub interp_imports_modules: u64,
    pub dict_ma_keys: u64,
    pub dict_ma_values: u64,
    pub long_lv_tag: u64,
    pub long_ob_digit: u64,
    pub tuple_ob_item: u64,
    pub tuple_ob_size: u64,
    pub bytes_ob_size: u64,
    pub bytes_ob_sval: u64,
    pub unicode_state: u64,
    pub unicode_length: u64,
    pub asciiobject_size: u64,
    pub gc_collecting: u64,
}

impl DebugOffsets {
    pub fn major(&self) -> u64 {
        self.version >> 24
    }
    pub fn minor(&self) -> u64 {
        (self.version >> 16) & 0xff
    }
    /// "3.13.5" and so on.
    pub fn version_string(&self) -> String {
        format!("{}.{}.{}", self.major(), self.minor(), (self.version >> 8) & 0xff)
    }

    /// Parse the raw bytes found at `_PyRuntime`.
    pub fn parse(raw: &[u8]) -> Result<DebugOffsets, OffsetsError> {
        if raw.len() < 24 || &raw[..8] != b"xdebugpy" {
            return Err(OffsetsError::BadCookie);
        }
        let version = u64::from_le_bytes(raw[8..16].try_into().unwrap());
        let (major, minor) = (version >> 24, (version >> 16) & 0xff);
        if major != 3 || minor < 13 {
            return Err(OffsetsError::TooOld(format!("{major}.{minor}")));
        }
        // An unknown future minor is refused rather than read with a guessed layout.
        let layout = match minor {
            13 => F313,
            14 => F314,
            15 => F315,
            _ => return Err(OffsetsError::TooNew(format!("{major}.{minor}"))),
        };
        let mut map = HashMap::new();
        let mut pos = 8;
        for (group, fields) in layout {
            for f in *fields {
                let v = raw.get(pos..pos + 8).ok_or(OffsetsError::Truncated)?;
                let key = if group.is_empty() { f.to_string() } else { format!("{group}.{f}") };
                map.insert(key, u64::from_le_bytes(v.try_into().unwrap()));
                pos += 8;
            }
        }
        let g = |k: &str| map.get(k).copied().unwrap_or(0);
        let opt = |k: &str| map.get(k).copied();
        let o = DebugOffsets {
            version,
            free_threaded: g("free_threaded") != 0,
            runtime_size: g("runtime_state.size"),
            interp_size: g("interpreter_state.size"),
            pyobject_size: g("pyobject.size"),
            runtime_interpreters_head: g("runtime_state.interpreters_head"),
            runtime_finalizing: g("runtime_state.finalizing"),
            interp_id: g("interpreter_state.id"),
            interp_next: g("interpreter_state.next"),
            interp_threads_head: g("interpreter_state.threads_head"),
            interp_gc: g("interpreter_state.gc"),
            interp_ceval_gil: g("interpreter_state.ceval_gil"),
            gil_enabled: g("interpreter_state.gil_runtime_state_enabled"),
            gil_locked: g("interpreter_state.gil_runtime_state_locked"),
            gil_holder: g("interpreter_state.gil_runtime_state_holder"),
            ts_size: g("thread_state.size"),
            ts_next: g("thread_state.next"),
            ts_current_frame: g("thread_state.current_frame"),
            ts_thread_id: g("thread_state.thread_id"),
            ts_native_thread_id: g("thread_state.native_thread_id"),
            ts_status: g("thread_state.status"),
            ts_base_frame: opt("thread_state.base_frame").filter(|&v| v != 0),
            frame_size: g("interpreter_frame.size"),
            frame_previous: g("interpreter_frame.previous"),
            frame_executable: g("interpreter_frame.executable"),
            frame_instr_ptr: g("interpreter_frame.instr_ptr"),
            frame_owner: g("interpreter_frame.owner"),
            frame_localsplus: g("interpreter_frame.localsplus"),
            frame_stackpointer: opt("interpreter_frame.stackpointer").filter(|&v| v != 0),
            frame_tlbc_index: opt("interpreter_frame.tlbc_index").filter(|&v| v != 0),
            code_filename: g("code_object.filename"),
            code_name: g("code_object.name"),
            code_qualname: g("code_object.qualname"),
            code_linetable: g("code_object.linetable"),
            code_firstlineno: g("code_object.firstlineno"),
            code_localsplusnames: g("code_object.localsplusnames"),
            code_co_code_adaptive: g("code_object.co_code_adaptive"),
            code_co_tlbc: opt("code_object.co_tlbc").filter(|&v| v != 0),
            ob_type: g("pyobject.ob_type"),
            tp_name: g("type_object.tp_name"),
            type_size: g("type_object.size"),
            interp_imports_modules: g("interpreter_state.imports_modules"),
            dict_ma_keys: g("dict_object.ma_keys"),
            dict_ma_values: g("dict_object.ma_values"),
            long_lv_tag: g("long_object.lv_tag"),
            long_ob_digit: g("long_object.ob_digit"),
            tuple_ob_item: g("tuple_object.ob_item"),
            tuple_ob_size: g("tuple_object.ob_size"),
            bytes_ob_size: g("bytes_object.ob_size"),
            bytes_ob_sval: g("bytes_object.ob_sval"),
            unicode_state: g("unicode_object.state"),
            unicode_length: g("unicode_object.length"),
            asciiobject_size: g("unicode_object.asciiobject_size"),
            gc_collecting: g("gc.collecting"),
        };
        // A layout we do not know (a future version read with the 3.14 field list, or garbage)
        // shows up as absurd offsets: refuse it rather than read nonsense.
        let small = [
            ("interpreter_frame.size", o.frame_size),
            ("interpreter_frame.owner", o.frame_owner),
            ("unicode_object.asciiobject_size", o.asciiobject_size),
            ("thread_state.native_thread_id", o.ts_native_thread_id),
            ("code_object.qualname", o.code_qualname),
            ("pyobject.ob_type", o.ob_type),
            ("type_object.size", o.type_size),
        ];
        for (name, v) in small {
            if v == 0 && name != "pyobject.ob_type" || v > 4096 {
                return Err(OffsetsError::Implausible(name, v));
            }
        }
        for (name, v) in [("runtime_state.size", o.runtime_size), ("interpreter_state.size", o.interp_size)] {
            if v > 1 << 24 {
                return Err(OffsetsError::Implausible(name, v));
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(version: u64, ft: u64, n: usize) -> Vec<u8> {
        let mut v = b"xdebugpy".to_vec();
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(&ft.to_le_bytes());
        for i in 0..n {
            v.extend_from_slice(&(1000 + i as u64).to_le_bytes());
        }
        v
    }

    #[test]
    fn rejects_bad_cookie_and_old_versions() {
        assert_eq!(DebugOffsets::parse(b"notpython_______________").unwrap_err(), OffsetsError::BadCookie);
        let old = raw(0x030c05f0, 0, 100);
        assert_eq!(DebugOffsets::parse(&old).unwrap_err(), OffsetsError::TooOld("3.12".into()));
        assert_eq!(DebugOffsets::parse(&raw(0x030d05f0, 1, 3)).unwrap_err(), OffsetsError::Truncated);
    }

    #[test]
    fn layouts_follow_the_field_order() {
        // 3.13: runtime_state.size is the first field after version/free_threaded (index 0 → 1000).
        let o = DebugOffsets::parse(&raw(0x030d05f0, 1, 120)).unwrap();
        assert!(o.free_threaded);
        assert_eq!(o.version_string(), "3.13.5");
        assert_eq!(o.runtime_interpreters_head, 1002);
        assert_eq!(o.interp_threads_head, 1006); // size,id,next,threads_head after 3 runtime fields
                                                 // 3.14 inserts threads_main before gc.
        let o = DebugOffsets::parse(&raw(0x030e0af0, 0, 160)).unwrap();
        assert_eq!(o.interp_gc, 1008);
    }
}
