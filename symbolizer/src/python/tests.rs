//! Unit tests of the frame walker, code-object and line-table decoding, and the lock probes, on
//! synthetic memory images of each supported CPython (3.13, 3.14, 3.15; default and
//! free-threaded builds). The `_Py_DebugOffsets` values are those of the real interpreters: read
//! from the `.PyRuntime` section of 3.13.5, 3.13.5t (the project's builds) and Debian's 3.14.10
//! and 3.15.2 binaries; for 3.14t/3.15t, `_Py_DebugOffsets_INIT` compiled against Debian's
//! `libpython3.1x-dev` headers with `Py_GIL_DISABLED`. Fields the reader does not use stay 0.

use super::offsets::{F313, F314, F315};
use super::*;

type Values = &'static [(&'static str, u64)];
/// A `_Py_DebugOffsets` field list (group, fields), as in `offsets.rs`.
type Fields = &'static [(&'static str, &'static [&'static str])];

const V313: Values = &[
    ("runtime_state.size", 283376),
    ("runtime_state.interpreters_head", 632),
    ("interpreter_state.size", 194976),
    ("interpreter_state.next", 7264),
    ("interpreter_state.threads_head", 7344),
    ("interpreter_state.ceval_gil", 16),
    ("interpreter_state.imports_modules", 7656),
    ("thread_state.size", 304),
    ("thread_state.next", 8),
    ("thread_state.current_frame", 72),
    ("thread_state.thread_id", 152),
    ("thread_state.native_thread_id", 160),
    ("interpreter_frame.size", 80),
    ("interpreter_frame.previous", 8),
    ("interpreter_frame.instr_ptr", 56),
    ("interpreter_frame.localsplus", 72),
    ("interpreter_frame.owner", 70),
    ("code_object.size", 208),
    ("code_object.filename", 112),
    ("code_object.name", 120),
    ("code_object.qualname", 128),
    ("code_object.linetable", 136),
    ("code_object.firstlineno", 68),
    ("code_object.localsplusnames", 96),
    ("code_object.co_code_adaptive", 200),
    ("pyobject.size", 16),
    ("pyobject.ob_type", 8),
    ("type_object.size", 416),
    ("type_object.tp_name", 24),
    ("tuple_object.ob_item", 24),
    ("tuple_object.ob_size", 16),
    ("bytes_object.ob_size", 16),
    ("bytes_object.ob_sval", 32),
    ("unicode_object.state", 32),
    ("unicode_object.length", 16),
    ("unicode_object.asciiobject_size", 40),
];

const V313T: Values = &[
    ("runtime_state.size", 328320),
    ("runtime_state.interpreters_head", 632),
    ("interpreter_state.size", 215616),
    ("interpreter_state.next", 7264),
    ("interpreter_state.threads_head", 7344),
    ("interpreter_state.ceval_gil", 16),
    ("interpreter_state.imports_modules", 7664),
    ("thread_state.size", 304),
    ("thread_state.next", 8),
    ("thread_state.current_frame", 72),
    ("thread_state.thread_id", 152),
    ("thread_state.native_thread_id", 160),
    ("interpreter_frame.size", 80),
    ("interpreter_frame.previous", 8),
    ("interpreter_frame.instr_ptr", 56),
    ("interpreter_frame.localsplus", 72),
    ("interpreter_frame.owner", 70),
    ("code_object.size", 224),
    ("code_object.filename", 128),
    ("code_object.name", 136),
    ("code_object.qualname", 144),
    ("code_object.linetable", 152),
    ("code_object.firstlineno", 84),
    ("code_object.localsplusnames", 112),
    ("code_object.co_code_adaptive", 216),
    ("pyobject.size", 32),
    ("pyobject.ob_type", 24),
    ("type_object.size", 432),
    ("type_object.tp_name", 40),
    ("tuple_object.ob_item", 40),
    ("tuple_object.ob_size", 32),
    ("bytes_object.ob_size", 32),
    ("bytes_object.ob_sval", 48),
    ("unicode_object.state", 48),
    ("unicode_object.length", 32),
    ("unicode_object.asciiobject_size", 56),
];

const V314: Values = &[
    ("runtime_state.size", 316616),
    ("runtime_state.interpreters_head", 808),
    ("interpreter_state.size", 225864),
    ("interpreter_state.next", 7272),
    ("interpreter_state.threads_head", 7344),
    ("interpreter_state.ceval_gil", 16),
    ("interpreter_state.imports_modules", 7688),
    ("thread_state.size", 832),
    ("thread_state.next", 8),
    ("thread_state.current_frame", 72),
    ("thread_state.thread_id", 152),
    ("thread_state.native_thread_id", 160),
    ("interpreter_frame.size", 88),
    ("interpreter_frame.previous", 8),
    ("interpreter_frame.instr_ptr", 56),
    ("interpreter_frame.localsplus", 80),
    ("interpreter_frame.owner", 74),
    ("interpreter_frame.stackpointer", 64),
    ("code_object.size", 216),
    ("code_object.filename", 112),
    ("code_object.name", 120),
    ("code_object.qualname", 128),
    ("code_object.linetable", 136),
    ("code_object.firstlineno", 68),
    ("code_object.localsplusnames", 96),
    ("code_object.co_code_adaptive", 208),
    ("pyobject.size", 16),
    ("pyobject.ob_type", 8),
    ("type_object.size", 416),
    ("type_object.tp_name", 24),
    ("tuple_object.ob_item", 32),
    ("tuple_object.ob_size", 16),
    ("bytes_object.ob_size", 16),
    ("bytes_object.ob_sval", 32),
    ("unicode_object.state", 32),
    ("unicode_object.length", 16),
    ("unicode_object.asciiobject_size", 40),
];

const V314T: Values = &[
    ("runtime_state.size", 365624),
    ("runtime_state.interpreters_head", 808),
    ("interpreter_state.size", 249976),
    ("interpreter_state.next", 7272),
    ("interpreter_state.threads_head", 7344),
    ("interpreter_state.ceval_gil", 16),
    ("interpreter_state.imports_modules", 7712),
    ("thread_state.size", 832),
    ("thread_state.next", 8),
    ("thread_state.current_frame", 72),
    ("thread_state.thread_id", 152),
    ("thread_state.native_thread_id", 160),
    ("interpreter_frame.size", 88),
    ("interpreter_frame.previous", 8),
    ("interpreter_frame.instr_ptr", 56),
    ("interpreter_frame.localsplus", 80),
    ("interpreter_frame.owner", 78),
    ("interpreter_frame.stackpointer", 64),
    ("interpreter_frame.tlbc_index", 72),
    ("code_object.size", 240),
    ("code_object.filename", 128),
    ("code_object.name", 136),
    ("code_object.qualname", 144),
    ("code_object.linetable", 152),
    ("code_object.firstlineno", 84),
    ("code_object.localsplusnames", 112),
    ("code_object.co_code_adaptive", 232),
    ("code_object.co_tlbc", 224),
    ("pyobject.size", 32),
    ("pyobject.ob_type", 24),
    ("type_object.size", 432),
    ("type_object.tp_name", 40),
    ("tuple_object.ob_item", 48),
    ("tuple_object.ob_size", 32),
    ("bytes_object.ob_size", 32),
    ("bytes_object.ob_sval", 48),
    ("unicode_object.state", 48),
    ("unicode_object.length", 32),
    ("unicode_object.asciiobject_size", 56),
];

const V315: Values = &[
    ("runtime_state.size", 346568),
    ("runtime_state.interpreters_head", 936),
    ("interpreter_state.size", 226240),
    ("interpreter_state.next", 7264),
    ("interpreter_state.threads_head", 7336),
    ("interpreter_state.ceval_gil", 16),
    ("interpreter_state.imports_modules", 7592),
    ("thread_state.size", 888),
    ("thread_state.next", 8),
    ("thread_state.current_frame", 72),
    ("thread_state.base_frame", 80),
    ("thread_state.thread_id", 176),
    ("thread_state.native_thread_id", 184),
    ("interpreter_frame.size", 88),
    ("interpreter_frame.previous", 8),
    ("interpreter_frame.instr_ptr", 56),
    ("interpreter_frame.localsplus", 80),
    ("interpreter_frame.owner", 74),
    ("interpreter_frame.stackpointer", 64),
    ("code_object.size", 216),
    ("code_object.filename", 112),
    ("code_object.name", 120),
    ("code_object.qualname", 128),
    ("code_object.linetable", 136),
    ("code_object.firstlineno", 68),
    ("code_object.localsplusnames", 96),
    ("code_object.co_code_adaptive", 208),
    ("pyobject.size", 16),
    ("pyobject.ob_type", 8),
    ("type_object.size", 424),
    ("type_object.tp_name", 24),
    ("tuple_object.ob_item", 32),
    ("tuple_object.ob_size", 16),
    ("bytes_object.ob_size", 16),
    ("bytes_object.ob_sval", 32),
    ("unicode_object.state", 32),
    ("unicode_object.length", 16),
    ("unicode_object.asciiobject_size", 40),
];

const V315T: Values = &[
    ("runtime_state.size", 409296),
    ("runtime_state.interpreters_head", 936),
    ("interpreter_state.size", 250328),
    ("interpreter_state.next", 7264),
    ("interpreter_state.threads_head", 7336),
    ("interpreter_state.ceval_gil", 16),
    ("interpreter_state.imports_modules", 7592),
    ("thread_state.size", 888),
    ("thread_state.next", 8),
    ("thread_state.current_frame", 72),
    ("thread_state.base_frame", 80),
    ("thread_state.thread_id", 176),
    ("thread_state.native_thread_id", 184),
    ("interpreter_frame.size", 88),
    ("interpreter_frame.previous", 8),
    ("interpreter_frame.instr_ptr", 56),
    ("interpreter_frame.localsplus", 80),
    ("interpreter_frame.owner", 78),
    ("interpreter_frame.stackpointer", 64),
    ("interpreter_frame.tlbc_index", 72),
    ("code_object.size", 240),
    ("code_object.filename", 128),
    ("code_object.name", 136),
    ("code_object.qualname", 144),
    ("code_object.linetable", 152),
    ("code_object.firstlineno", 84),
    ("code_object.localsplusnames", 112),
    ("code_object.co_code_adaptive", 232),
    ("code_object.co_tlbc", 224),
    ("pyobject.size", 32),
    ("pyobject.ob_type", 24),
    ("type_object.size", 440),
    ("type_object.tp_name", 40),
    ("tuple_object.ob_item", 48),
    ("tuple_object.ob_size", 32),
    ("bytes_object.ob_size", 32),
    ("bytes_object.ob_sval", 48),
    ("unicode_object.state", 48),
    ("unicode_object.length", 32),
    ("unicode_object.asciiobject_size", 56),
];

/// (PY_VERSION_HEX, free-threaded, field list, values) of each version modelled.
const VERSIONS: [(u64, bool, Fields, Values); 6] = [
    (0x030d05f0, false, F313, V313),
    (0x030d05f0, true, F313, V313T),
    (0x030e0af0, false, F314, V314),
    (0x030e0af0, true, F314, V314T),
    (0x030f02f0, false, F315, V315),
    (0x030f02f0, true, F315, V315T),
];

const RUNTIME: u64 = 0x10_0000;
const INTERP: u64 = 0x100_0000;
const TSTATE: u64 = 0x200_0000;
const FRAMES: u64 = 0x300_0000;
const OBJECTS: u64 = 0x400_0000;
const GIL: u64 = 0x500_0000;
const TID: u32 = 4242;

/// A synthetic process image of one CPython version, built field by field.
struct Image {
    mem: FakeMemory,
    values: std::collections::HashMap<&'static str, u64>,
    version: u64,
    ft: bool,
    /// Next free address for objects.
    next: u64,
}

impl Image {
    fn new(version: u64, ft: bool, fields: &[(&str, &[&str])], values: Values) -> Image {
        let map: std::collections::HashMap<&'static str, u64> = values.iter().copied().collect();
        let mut mem = FakeMemory::new();
        let get = |k: &str| map.get(k).copied().unwrap_or(0);
        mem.map(RUNTIME, get("runtime_state.size") as usize);
        let mut raw = b"xdebugpy".to_vec();
        for (group, names) in fields {
            for f in *names {
                let key = if group.is_empty() { f.to_string() } else { format!("{group}.{f}") };
                let v = match key.as_str() {
                    "version" => version,
                    "free_threaded" => ft as u64,
                    k => get(k),
                };
                raw.extend_from_slice(&v.to_le_bytes());
            }
        }
        mem.write(RUNTIME, &raw);
        mem.map(INTERP, get("interpreter_state.size") as usize);
        mem.write_u64(RUNTIME + get("runtime_state.interpreters_head"), INTERP);
        mem.map(TSTATE, 4096);
        mem.write_u64(INTERP + get("interpreter_state.threads_head"), TSTATE);
        mem.write_u64(TSTATE + get("thread_state.native_thread_id"), TID as u64);
        mem.write_u64(TSTATE + get("thread_state.thread_id"), 0x7f00_0000_1000);
        mem.map(GIL, 256);
        mem.write_u64(INTERP + get("interpreter_state.ceval_gil"), GIL);
        mem.map(FRAMES, 0x10000);
        mem.map(OBJECTS, 0x100000);
        Image { mem, values: map, version, ft, next: OBJECTS }
    }

    fn v(&self, k: &str) -> u64 {
        self.values.get(k).copied().unwrap_or(0)
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let a = self.next;
        self.next += (len + 15) & !15;
        a
    }

    /// A type object named `name`.
    fn type_object(&mut self, name: &str) -> u64 {
        let ty = self.alloc(self.v("type_object.size"));
        let s = self.alloc(name.len() as u64 + 1);
        self.mem.write(s, name.as_bytes());
        self.mem.write_u64(ty + self.v("type_object.tp_name"), s);
        ty
    }

    /// An object of type `ty` with `extra` bytes after its header.
    fn object(&mut self, ty: u64, extra: u64) -> u64 {
        let o = self.alloc(self.v("pyobject.size") + extra);
        self.mem.write_u64(o + self.v("pyobject.ob_type"), ty);
        o
    }

    /// A compact ASCII `str`.
    fn string(&mut self, s: &str) -> u64 {
        let hdr = self.v("unicode_object.asciiobject_size");
        let o = self.alloc(hdr + s.len() as u64 + 1);
        let layout = Layout::for_version((self.version >> 16) & 0xff, self.ft).unwrap();
        let (kind_shift, compact, ascii) = layout.unicode_state_bits;
        let state: u32 = (1 << kind_shift) | (1 << compact) | (1 << ascii);
        self.mem.write(o + self.v("unicode_object.state"), &state.to_le_bytes());
        self.mem.write_u64(o + self.v("unicode_object.length"), s.len() as u64);
        self.mem.write(o + hdr, s.as_bytes());
        o
    }

    fn bytes(&mut self, b: &[u8]) -> u64 {
        let o = self.alloc(self.v("bytes_object.ob_sval") + b.len() as u64);
        self.mem.write_u64(o + self.v("bytes_object.ob_size"), b.len() as u64);
        self.mem.write(o + self.v("bytes_object.ob_sval"), b);
        o
    }

    fn tuple(&mut self, items: &[u64]) -> u64 {
        let o = self.alloc(self.v("tuple_object.ob_item") + 8 * items.len() as u64);
        self.mem.write_u64(o + self.v("tuple_object.ob_size"), items.len() as u64);
        for (i, it) in items.iter().enumerate() {
            self.mem.write_u64(o + self.v("tuple_object.ob_item") + 8 * i as u64, *it);
        }
        o
    }

    /// A code object `qualname` in `file` starting at `first`, whose instructions 0..4 are on
    /// line `first + 1` and 4..8 on `first + 3` (a `co_linetable` with "no column" entries).
    fn code(&mut self, code_type: u64, qualname: &str, file: &str, first: i32, locals: &[&str]) -> u64 {
        let size = self.v("code_object.size") + 64;
        let c = self.object(code_type, size);
        let q = self.string(qualname);
        let f = self.string(file);
        // PY_CODE_LOCATION_INFO_NO_COLUMNS (13), 4 code units each, line deltas +1 and +2.
        let table = self.bytes(&[0x80 | (13 << 3) | 3, 1 << 1, 0x80 | (13 << 3) | 3, 2 << 1]);
        let names: Vec<u64> = locals.iter().map(|n| self.string(n)).collect();
        let names = self.tuple(&names);
        self.mem.write_u64(c + self.v("code_object.qualname"), q);
        self.mem.write_u64(c + self.v("code_object.name"), q);
        self.mem.write_u64(c + self.v("code_object.filename"), f);
        self.mem.write_u64(c + self.v("code_object.linetable"), table);
        self.mem.write_i32(c + self.v("code_object.firstlineno"), first);
        self.mem.write_u64(c + self.v("code_object.localsplusnames"), names);
        c
    }

    /// An interpreter frame at `at` running `code` at instruction `lasti` (0 for entry frames).
    fn frame(&mut self, at: u64, code: u64, lasti: u64, owner: u8, previous: u64) {
        // Code references are tagged `_PyStackRef`s in 3.14+: set the low bit.
        let tag = if self.v("interpreter_frame.stackpointer") != 0 { 1 } else { 0 };
        self.mem.write_u64(at + self.v("interpreter_frame.executable"), code | tag);
        self.mem.write_u64(at + self.v("interpreter_frame.previous"), previous);
        self.mem.write_u64(
            at + self.v("interpreter_frame.instr_ptr"),
            code + self.v("code_object.co_code_adaptive") + 2 * lasti,
        );
        self.mem.write_u8(at + self.v("interpreter_frame.owner"), owner);
        if let Some(sp) = Some(self.v("interpreter_frame.stackpointer")).filter(|&v| v != 0) {
            self.mem.write_u64(at + sp, at + self.v("interpreter_frame.localsplus"));
        }
    }

    fn process(self) -> PyProcess {
        PyProcess::from_memory(Box::new(self.mem), RUNTIME, 1).unwrap()
    }
}

fn label(version: u64, ft: bool) -> String {
    format!("3.{}{}", (version >> 16) & 0xff, if ft { "t" } else { "" })
}

/// Python frames of a stack as (qualname, line), innermost first; `Entry` as ("<entry>", 0).
fn frames(s: &PyStack) -> Vec<(String, i32)> {
    s.frames
        .iter()
        .map(|f| match f {
            PyFrame::Code { code, line, .. } => (code.qualname.clone(), line.unwrap_or(-1)),
            PyFrame::Entry => ("<entry>".into(), 0),
        })
        .collect()
}

#[test]
fn frame_walk_code_objects_and_lines_per_version() {
    for (version, ft, fields, values) in VERSIONS {
        let name = label(version, ft);
        let mut img = Image::new(version, ft, fields, values);
        let layout = *Layout::for_version((version >> 16) & 0xff, ft).unwrap();
        let code_type = img.type_object("code");
        let outer = img.code(code_type, "outer", "/app/main.py", 10, &["x"]);
        let inner = img.code(code_type, "Worker.inner", "/app/work.py", 40, &[]);
        // Chain (innermost first): inner @ 5 → outer @ 1 → entry → [3.15: base frame].
        let (f_inner, f_outer, f_entry, f_base) = (FRAMES, FRAMES + 0x400, FRAMES + 0x800, FRAMES + 0xc00);
        let base_off = img.v("thread_state.base_frame");
        let bottom = if base_off != 0 { f_base } else { 0 };
        img.frame(f_inner, inner, 5, 0, f_outer);
        img.frame(f_outer, outer, 1, 0, f_entry);
        img.frame(f_entry, 0, 0, layout.owner_entry, bottom);
        if base_off != 0 {
            img.frame(f_base, 0, 0, layout.owner_entry, 0);
            img.mem.write_u64(TSTATE + base_off, f_base);
        }
        img.mem.write_u64(TSTATE + img.v("thread_state.current_frame"), f_inner);
        img.mem.write_i32(TSTATE + layout.ts_state, 1);
        let mut p = img.process();
        assert_eq!(p.offsets.version, version, "{name}");
        // Debian's 3.15.2 binary reports a `_PyRuntimeState` 8 bytes larger than its own
        // headers give: the table is then not trusted for interpreter-internal offsets.
        assert_eq!(p.layout_exact, name != "3.15", "{name}: runtime size {}", p.offsets.runtime_size);
        let s = p.stack_for_tid(TID).unwrap().expect("thread state found");
        assert_eq!(
            frames(&s),
            vec![("Worker.inner".to_string(), 43), ("outer".to_string(), 11), ("<entry>".to_string(), 0)],
            "{name}"
        );
        assert!(!s.truncated, "{name}");
        assert_eq!(s.state, 1, "{name}: PyThreadState.state");
        match &s.frames[1] {
            PyFrame::Code { code, lasti, .. } => {
                assert_eq!((code.filename.as_str(), code.firstlineno, *lasti), ("/app/main.py", 10, 1), "{name}");
                assert_eq!(code.locals, vec!["x".to_string()], "{name}");
            }
            f => panic!("{name}: {f:?}"),
        }
        assert!(p.stack_for_tid(TID + 1).unwrap().is_none(), "{name}: no thread state for another tid");
    }
}

/// Immortal objects (local count `_Py_IMMORTAL_REFCNT_LOCAL`) are told apart from mortal ones in
/// every free-threaded layout: their refcount is never written, so no stall is blamed on them.
#[test]
fn immortal_objects_are_recognised_in_free_threaded_builds() {
    for (version, ft, fields, values) in VERSIONS {
        let name = label(version, ft);
        let mut img = Image::new(version, ft, fields, values);
        let ty = img.type_object("str");
        let (mortal, immortal) = (img.object(ty, 16), img.object(ty, 16));
        let ob_ref_local = img.v("pyobject.ob_type").saturating_sub(12);
        if ft {
            img.mem.write(mortal + ob_ref_local, &3u32.to_le_bytes());
            img.mem.write(immortal + ob_ref_local, &u32::MAX.to_le_bytes());
        }
        let p = img.process();
        assert!(!super::operand::is_immortal(&p, mortal), "{name}");
        // Default builds: no shared refcounts, nothing read.
        assert_eq!(super::operand::is_immortal(&p, immortal), ft, "{name}");
    }
}

#[test]
fn thread_local_bytecode_copies_are_followed_in_free_threaded_314_and_315() {
    for (version, ft, fields, values) in VERSIONS.into_iter().filter(|v| v.1 && v.0 >= 0x030e0000) {
        let name = label(version, ft);
        let mut img = Image::new(version, ft, fields, values);
        let code_type = img.type_object("code");
        let code = img.code(code_type, "f", "/app/t.py", 1, &[]);
        // co_tlbc → _PyCodeArray { size, entries[] }; copy 1 lives elsewhere.
        let copy = img.alloc(64);
        let arr = img.alloc(32);
        img.mem.write_u64(arr, 2);
        img.mem.write_u64(arr + 8, code + img.v("code_object.co_code_adaptive"));
        img.mem.write_u64(arr + 16, copy);
        img.mem.write_u64(code + img.v("code_object.co_tlbc"), arr);
        img.frame(FRAMES, code, 0, 0, 0);
        img.mem.write_u64(FRAMES + img.v("interpreter_frame.instr_ptr"), copy + 2 * 6);
        img.mem.write_i32(FRAMES + img.v("interpreter_frame.tlbc_index"), 1);
        img.mem.write_u64(TSTATE + img.v("thread_state.current_frame"), FRAMES);
        let mut p = img.process();
        let s = p.stack_for_tid(TID).unwrap().unwrap();
        match &s.frames[0] {
            PyFrame::Code { lasti, line, .. } => assert_eq!((*lasti, *line), (6, Some(4)), "{name}"),
            f => panic!("{name}: {f:?}"),
        }
    }
}

#[test]
fn lock_kinds_are_recognised_from_memory_per_version() {
    for (version, ft, fields, values) in VERSIONS {
        let name = label(version, ft);
        let mut img = Image::new(version, ft, fields, values);
        let layout = *Layout::for_version((version >> 16) & 0xff, ft).unwrap();
        let hdr = img.v("pyobject.size");
        let lock_type = img.type_object("_thread.lock");
        let rlock_type = img.type_object("_thread.RLock");
        let list_type = img.type_object("list");
        let lock = img.object(lock_type, 16);
        let rlock = img.object(rlock_type, 32);
        let list = img.object(list_type, 32);
        img.mem.write_u64(rlock + hdr + layout.rlock_owner_after_header, 0x7f00_0000_1000);
        let mut p = img.process();

        // threading.Lock: its PyMutex right after the header.
        let info = p.probe_parked(TID, lock + hdr + layout.lock_mutex_after_header);
        assert_eq!(info.lock_object, Some((lock, "_thread.lock".to_string())), "{name}");
        assert!(info.cs_object.is_none() && !info.gil, "{name}: {info:?}");

        // threading.RLock: 3.14+ parks on the _PyRecursiveMutex's PyMutex; the owner is read.
        if let Some(off) = layout.rlock_mutex_after_header {
            let info = p.probe_parked(TID, rlock + hdr + off);
            assert_eq!(info.lock_object, Some((rlock, "_thread.RLock".to_string())), "{name}");
        }
        assert_eq!(p.rlock_owner(rlock), Some(0x7f00_0000_1000), "{name}");

        // Critical sections (free-threaded only): ob_mutex in the object header.
        let info = p.probe_parked(TID, list + 10);
        if ft {
            assert_eq!(info.cs_object, Some((list, "list".to_string())), "{name}");
        } else {
            assert!(info.cs_object.is_none(), "{name}: {info:?}");
        }

        // The GIL's condition variable / mutex.
        let info = p.probe_parked(TID, GIL + 40);
        assert!(info.gil, "{name}: {info:?}");
        assert!(!p.probe_parked(TID, GIL + layout.gil_state_size).gil, "{name}: past the GIL state");

        // A stop-the-world pause parks on the thread's own PyThreadState.state.
        p.stack_for_tid(TID).unwrap();
        assert!(p.probe_parked(TID, TSTATE + layout.ts_state).stw_victim, "{name}");

        // Interpreter-internal mutexes are named from the version's table (when it applies to
        // this build; raw offsets otherwise).
        let exact = p.layout_exact;
        let named = |what: &str, off: u64, base: &str| match exact {
            true => Some(format!("{what}, {base}+{off:#x}")),
            false => Some(format!("{base}+{off:#x}")),
        };
        let (off, _, what) = layout.interp_mutexes[0];
        let want = named(what, off, "PyInterpreterState");
        assert_eq!(p.probe_parked(TID, INTERP + off).symbol, want, "{name}");
        let (off, _, what) = layout.runtime_mutexes[0];
        let want = named(what, off, "_PyRuntime");
        assert_eq!(p.probe_parked(TID, RUNTIME + off).symbol, want, "{name}");
    }
}

#[test]
fn critical_sections_held_are_read_from_the_thread_state() {
    for (version, ft, fields, values) in VERSIONS.into_iter().filter(|v| v.1) {
        let name = label(version, ft);
        let mut img = Image::new(version, ft, fields, values);
        let layout = *Layout::for_version((version >> 16) & 0xff, ft).unwrap();
        // A two-mutex section (tag 2) on top of a one-mutex section.
        let (cs1, cs2) = (img.alloc(32), img.alloc(32));
        img.mem.write_u64(cs1 + layout.cs_mutex, 0xaaa0);
        img.mem.write_u64(cs2, cs1);
        img.mem.write_u64(cs2 + layout.cs_mutex, 0xbbb0);
        img.mem.write_u64(cs2 + layout.cs_mutex2, 0xccc0);
        img.mem.write_u64(TSTATE + layout.ts_critical_section, cs2 | 2);
        let mut p = img.process();
        assert_eq!(p.critical_sections_held(TID), vec![0xbbb0, 0xccc0, 0xaaa0], "{name}");
        assert!(!p.critical_section_pending(TID), "{name}: the innermost section has its mutexes");
    }
}

/// A thread inside `_PyCriticalSection_BeginSlow` has pushed its section (suspended while it
/// parks: tag 1) before its mutex is set: pending, and holding nothing.
#[test]
fn a_critical_section_being_entered_is_pending() {
    for (version, ft, fields, values) in VERSIONS.into_iter().filter(|v| v.1) {
        let name = label(version, ft);
        let mut img = Image::new(version, ft, fields, values);
        let layout = *Layout::for_version((version >> 16) & 0xff, ft).unwrap();
        let (held, entering) = (img.alloc(32), img.alloc(32));
        img.mem.write_u64(held + layout.cs_mutex, 0xaaa0);
        // `_PyCriticalSection_SuspendAll` tags every section it suspends as inactive.
        img.mem.write_u64(entering, held | 1);
        img.mem.write_u64(TSTATE + layout.ts_critical_section, entering | 1);
        let mut p = img.process();
        assert!(p.critical_section_pending(TID), "{name}");
        assert_eq!(p.critical_sections_held(TID), Vec::<u64>::new(), "{name}: suspended while it parks");
    }
}

#[test]
fn a_frame_chain_that_loops_ends_truncated() {
    // Found by the property test below: frames owned by neither Python nor an entry (owner above
    // `owner_entry`) that link to each other made the walk loop forever.
    for (version, ft, fields, values) in VERSIONS {
        let name = label(version, ft);
        let mut img = Image::new(version, ft, fields, values);
        let layout = *Layout::for_version((version >> 16) & 0xff, ft).unwrap();
        let (a, b) = (FRAMES, FRAMES + 0x400);
        img.frame(a, 0, 0, layout.owner_entry + 1, b);
        img.frame(b, 0, 0, layout.owner_entry + 1, a);
        img.mem.write_u64(TSTATE + img.v("thread_state.current_frame"), a);
        let mut p = img.process();
        let s = p.stack_for_tid(TID).unwrap().expect("thread state found");
        assert!(s.truncated, "{name}");
        assert!(s.frames.is_empty(), "{name}");
    }
}

#[test]
fn unknown_future_versions_are_refused() {
    let (_, ft, fields, values) = VERSIONS[4];
    let img = Image::new(0x031000f0, ft, fields, values);
    let err = PyProcess::from_memory(Box::new(img.mem), RUNTIME, 1).err().expect("3.16 refused");
    let msg = err.to_string();
    assert!(msg.contains("3.16") && msg.contains("3.15"), "{msg}");
}

/// Property tests: the readers of target memory (frame walk, code objects and their line
/// tables, dicts, ints, strings, instance attributes, lock probes, critical sections) must
/// never panic whatever the bytes they find. `FTPROF_FUZZ_CASES` sets the inputs per parser
/// (default 100 000).
mod props {
    use std::cell::RefCell;
    use std::sync::{Arc, RwLock};

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;

    fn runner() -> TestRunner {
        let cases = std::env::var("FTPROF_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
    }

    /// Memory shared between the test (which rewrites the noise region) and the process reader.
    #[derive(Clone)]
    struct Shared(Arc<RwLock<FakeMemory>>);

    impl ReadMemory for Shared {
        fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.0.read().unwrap().read(addr, buf)
        }
    }

    /// Where the random bytes go.
    const NOISE: u64 = 0x600_0000;
    const NOISE_LEN: u64 = 4096;

    /// One process image per version with a real code type, code object and strings, whose
    /// thread state points into the noise region.
    struct Target {
        p: PyProcess,
        mem: Shared,
        /// Addresses worth pointing at: real objects of the image.
        anchors: Vec<u64>,
        current_frame: u64,
        critical_section: u64,
    }

    fn targets() -> Vec<Target> {
        VERSIONS
            .into_iter()
            .map(|(version, ft, fields, values)| {
                let mut img = Image::new(version, ft, fields, values);
                let layout = *Layout::for_version((version >> 16) & 0xff, ft).unwrap();
                let code_type = img.type_object("code");
                let code = img.code(code_type, "f", "/app/x.py", 3, &["a", "b"]);
                let s = img.string("_name");
                let lock_type = img.type_object("_thread.lock");
                let anchors = vec![code_type, code, s, lock_type, TSTATE, INTERP, RUNTIME, GIL];
                img.mem.map(NOISE, NOISE_LEN as usize);
                let current_frame = TSTATE + img.v("thread_state.current_frame");
                let critical_section = TSTATE + layout.ts_critical_section;
                let mem = Shared(Arc::new(RwLock::new(img.mem)));
                let p = PyProcess::from_memory(Box::new(mem.clone()), RUNTIME, 1).unwrap();
                Target { p, mem, anchors, current_frame, critical_section }
            })
            .collect()
    }

    /// Splitmix64: expands one generated seed into the noise (generating 512 words through
    /// proptest costs more than running the readers; shrinking them would not help either).
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// 512 words of noise: pointers into the noise or at a real object of the image, small
    /// numbers, edge values, or anything.
    fn noise_bytes(seed: u64, anchors: &[u64]) -> Vec<u8> {
        let mut st = seed;
        let mut out = Vec::with_capacity(NOISE_LEN as usize);
        for _ in 0..NOISE_LEN / 8 {
            let r = next(&mut st);
            let w = match r % 16 {
                0..=5 => NOISE + 8 * ((r >> 8) % (NOISE_LEN / 8)),
                6 | 7 => anchors[(r >> 8) as usize % anchors.len()],
                8 | 9 => (r >> 8) % 16,
                10 | 11 => (r >> 8) % 4096,
                12 => u64::MAX - (r >> 8) % 16,
                13 => (1 << 63) | ((r >> 8) % 16),
                _ => next(&mut st),
            };
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    #[test]
    fn memory_readers_never_panic_on_random_memory() {
        let targets = RefCell::new(targets());
        let strategy = (0..VERSIONS.len(), any::<u64>(), [0..NOISE_LEN / 8, 0..NOISE_LEN / 8, 0..NOISE_LEN]);
        runner()
            .run(&strategy, |(v, seed, [a, b, c])| {
                let mut targets = targets.borrow_mut();
                let t = &mut targets[v];
                let bytes = noise_bytes(seed, &t.anchors);
                let (obj, other, raw) = (NOISE + 8 * a, NOISE + 8 * b, NOISE + c);
                {
                    let mut m = t.mem.0.write().unwrap();
                    m.write(NOISE, &bytes);
                    m.write_u64(t.current_frame, obj);
                    m.write_u64(t.critical_section, other | (c & 3));
                }
                let p = &mut t.p;
                let _ = p.stack_for_tid(TID);
                let _ = p.critical_sections_held(TID);
                let _ = p.critical_section_pending(TID);
                let _ = p.probe_parked(TID, raw);
                let _ = p.with_block_objects(TID);
                let _ = p.rlock_being_acquired(TID);
                let _ = p.dict_items(obj);
                let _ = p.dict_get_str(other, "_name");
                let _ = p.long_value(obj);
                let _ = p.inline_attr(obj, "_name");
                let _ = p.unicode(raw);
                let _ = p.bytes(other);
                let _ = p.object_type_name(obj);
                let _ = p.rlock_owner(raw);
                let _ = p.code(obj);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn maps_lines_never_panic_and_keep_their_path() {
        let line = (
            "[0-9a-f]{1,16}",
            "[0-9a-f]{1,16}",
            "[-rwxps]{4}",
            "[0-9a-f]{1,9}",
            "[0-9]{1,20}",
            " {0,30}",
            "[ -~]{0,40}",
        );
        runner()
            .run(
                &prop_oneof![
                    line.prop_map(|(a, b, p, o, i, pad, path)| format!("{a}-{b} {p} {o} fd:01 {i} {pad}{path}")),
                    any::<String>()
                ],
                |l| {
                    if let Some(m) = crate::native::parse_map_line(&l) {
                        // Whatever the padding, the path is the rest of the line.
                        prop_assert!(l.ends_with(&m.path));
                    }
                    let _ = crate::native::parse_maps(&l);
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn line_tables_never_panic() {
        let table = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            // Well-formed entry headers (high bit set) with random payloads and varints.
            prop::collection::vec(prop_oneof![(0x80u8..=0xff), any::<u8>(), Just(0x7f), Just(0x40)], 0..64),
        ];
        runner()
            .run(&(table, any::<i32>(), any::<u32>()), |(table, first, lasti)| {
                let ranges = linetable::decode(&table, first);
                // Ranges are contiguous and ascending from 0: line_for's binary search relies on it.
                let mut at = 0;
                for &(start, end, _) in &ranges {
                    prop_assert_eq!(start, at);
                    prop_assert!(end > start);
                    at = end;
                }
                let _ = linetable::line_for(&ranges, lasti);
                let _ = linetable::line_for(&ranges, lasti % (at + 1));
                Ok(())
            })
            .unwrap();
    }
}
