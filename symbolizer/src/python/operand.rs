//! The object an instruction works on, read from the target while the sample is fresh: the
//! value a refcount stall was updating, named by its type, a short safe rendering and how the
//! instruction reached it (`str 'a string' (constant of `worker`)`, `list @ 0x… (global
//! `SHARED`)`, `_thread._local @ 0x… (global `tls`)`).
//!
//! Only the innermost Python frame's current instruction is looked at, and only instructions
//! whose operand names the object without the value stack: `LOAD_CONST` (`co_consts[i]`),
//! `LOAD_GLOBAL` (the module's globals dict, then builtins), the `*_FAST` family (the local's
//! current value) and `LOAD_DEREF` (the cell's contents); `LOAD_ATTR` and `CALL` name theirs
//! through the instructions that pushed their operands (see [`call_source`]). Values are read, never called: a
//! `str` is copied (at most 40 characters shown), an `int` decoded, a function's `__qualname__`
//! read; anything else is shown as `type @ address`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::mem::field_u64;
use super::{CodeInfo, PyFrame, PyProcess, PyStack};

/// `_PyInterpreterFrame.f_globals` and `.f_builtins`: the fourth and fifth words of the frame in
/// 3.13 (`Include/internal/pycore_frame.h`: `f_executable, previous, f_funcobj, f_globals,
/// f_builtins, …`), 3.14 and 3.15 (`Include/internal/pycore_interpframe_structs.h`, same order,
/// `_PyStackRef`s being one word). Checked with `offsetof` against the 3.13.5t headers.
const FRAME_F_GLOBALS: u64 = 24;
const FRAME_F_BUILTINS: u64 = 32;
/// `PyFunctionObject.func_qualname`, after the object header: `_Py_COMMON_FIELDS(func_)` is
/// `globals, builtins, name, qualname, …` (`Include/cpython/funcobject.h`, 3.13–3.15).
const FUNC_QUALNAME_AFTER_HEADER: u64 = 24;
/// `PyCellObject.ob_ref`, right after the object header (`Include/cpython/cellobject.h`).
const CELL_REF_AFTER_HEADER: u64 = 0;
/// `PyTypeObject.tp_flags`, `.tp_dict` and `.tp_mro` relative to `.tp_name` (which
/// `_Py_DebugOffsets` gives): the public struct of `Include/cpython/object.h`, the same after the
/// object header in every build of 3.13–3.15 (`offsetof` against the 3.13.5 and 3.13.5t headers:
/// 184/280/360 and 168/264/344 with `tp_name` at 40 and 24).
const TP_FLAGS_AFTER_TP_NAME: u64 = 144;
const TP_DICT_AFTER_TP_NAME: u64 = 240;
const TP_MRO_AFTER_TP_NAME: u64 = 320;
/// `Py_TPFLAGS_TYPE_SUBCLASS` (`Include/object.h`): the object is a class.
const PY_TPFLAGS_TYPE_SUBCLASS: u64 = 1 << 31;
/// `Py_TPFLAGS_METHOD_DESCRIPTOR` (`Include/object.h`): a method call through an instance binds
/// the instance as `self` (`_PyObject_GetMethod`: Python functions, `method_descriptor`s such as
/// `list.append`, …).
const PY_TPFLAGS_METHOD_DESCRIPTOR: u64 = 1 << 17;
/// A global's value is looked up again after this long (globals are rarely rebound).
const GLOBALS_TTL: Duration = Duration::from_millis(100);
/// Characters of a `str` shown.
const STR_CHARS: usize = 40;

/// The object type lives in the `frames` crate (no ELF/DWARF code there); this reader fills it.
pub use frames::python::ObjectRef;

/// A global's value and whether it came from the builtins.
type Global = (u64, bool);

/// An instruction: where it starts (code units), its opcode and its argument (with any
/// `EXTENDED_ARG` applied).
type Instr = (u32, u8, u32);

/// The frame an instruction runs in: the thread, its innermost code object and its address.
struct Site<'a> {
    tid: u32,
    code: &'a CodeInfo,
    code_addr: u64,
}

/// What a `LOAD_ATTR` loads: the attribute's value, whether a method call binds its owner as
/// `self`, and the owner (read on the way).
struct Attribute {
    value: (u64, String),
    bound: bool,
    owner: (u64, String),
}

/// How many instructions before the current one are kept for the walks back.
const PRECEDING: usize = 8;

/// Reads [`ObjectRef`]s, with caches (constants forever, globals for [`GLOBALS_TTL`], renderings
/// while the object's type is unchanged).
#[derive(Default)]
pub struct OperandReader {
    opnames: Vec<String>,
    /// Inline cache entries after each opcode (index = opcode).
    caches: Vec<u8>,
    /// Per instruction, the ones before it (see [`OperandReader::preceding`]).
    previous: HashMap<(u64, u32), Option<Vec<Instr>>>,
    consts: HashMap<(u64, u32), Option<(u64, String)>>,
    globals: HashMap<(u64, u64), (Instant, Option<Global>)>,
    renders: HashMap<u64, (u64, String, Option<String>)>,
}

impl OperandReader {
    /// `opnames`: base opcode names of the target's CPython (index = opcode); `caches`: the
    /// inline cache entries after each opcode (empty: attributes are not named).
    pub fn new(opnames: Vec<String>, caches: Vec<u8>) -> OperandReader {
        OperandReader { opnames, caches, ..Default::default() }
    }

    /// The object the innermost Python frame of `stack` (just read for thread `tid`) is working
    /// on, when its instruction names one.
    pub fn read(&mut self, p: &mut PyProcess, tid: u32, stack: &PyStack) -> Option<ObjectRef> {
        let (code, code_addr, lasti, instr) = stack.frames.iter().find_map(|f| match f {
            PyFrame::Code { code, code_addr, lasti, instr, .. } => Some((code.clone(), *code_addr, *lasti, *instr)),
            PyFrame::Entry => None,
        })?;
        let instr = instr?;
        let (op, arg) = ((instr & 0xff) as usize, (instr >> 8) as u32);
        let opname = self.opnames.get(op)?.clone();
        let site = Site { tid, code: &code, code_addr };
        let candidates = match opname.as_str() {
            "LOAD_ATTR" => vec![self.attribute(p, &site, lasti, arg)?.value],
            "CALL" => self.call(p, &site, lasti, arg)?,
            _ => vec![self.value_of(p, &site, &opname, arg)?],
        };
        // The first candidate whose count another thread's stall can be on (not immortal, not
        // the sampled thread's own), else the first, which the analysis then sets aside.
        let mut first = None;
        for (obj, reached) in candidates {
            let immortal = is_immortal(p, obj);
            let owned = !immortal && owned_by(p, obj, tid);
            let Some((type_name, value)) = self.render(p, obj) else { continue };
            let o = ObjectRef { addr: obj, type_name, value, reached, immortal, owned };
            if !immortal && !owned {
                return Some(o);
            }
            first.get_or_insert(o);
        }
        first
    }

    /// `CALL nargs`: the call's `self` when it has one (a method of an instance's class: the
    /// callee's frame holds the instance as its first argument and drops it when it returns,
    /// while the caller's frame, current again, still shows the `CALL`), then its callable,
    /// then its arguments, each named as the instruction that pushed it names it (so a stall
    /// here and one on the load land on the same object). None when the arguments are not
    /// simple loads.
    fn call(&mut self, p: &mut PyProcess, site: &Site, lasti: u32, nargs: u32) -> Option<Vec<(u64, String)>> {
        let before = self.preceding(p, site.code_addr, lasti)?;
        let names: Vec<(String, u32)> = before
            .iter()
            .map(|&(_, op, arg)| (self.opnames.get(op as usize).cloned().unwrap_or_default(), arg))
            .collect();
        let ops: Vec<(&str, u32)> = names.iter().map(|(n, a)| (n.as_str(), *a)).collect();
        let source = call_source(&ops, nargs)?;
        let (mut objects, args_end) = match source {
            CallSource::Method(i) => {
                let (at, _, attr_arg) = before[i];
                let Attribute { value, bound, owner } = self.attribute(p, site, at, attr_arg)?;
                (if bound { vec![owner, value] } else { vec![value] }, i)
            }
            CallSource::Global(i) => {
                let (name, arg) = ops[i];
                (vec![self.value_of(p, site, name, arg)?], i)
            }
            CallSource::AfterNull(i) => {
                let (name, arg) = ops[i];
                (vec![self.value_of(p, site, name, arg)?], i - 1)
            }
        };
        // Then the arguments (the callee's frame drops them too): `len(shared)` has an immortal
        // callable and a shared argument.
        for &(name, arg) in &ops[..args_end] {
            objects.extend(self.value_of(p, site, name, arg));
        }
        Some(objects)
    }

    /// The value an instruction that names its object (`opname` with `arg`) loads or stores.
    fn value_of(&mut self, p: &mut PyProcess, site: &Site, opname: &str, arg: u32) -> Option<(u64, String)> {
        let Site { tid, code, code_addr } = *site;
        Some(match opname {
            "LOAD_CONST" | "RETURN_CONST" => match self.consts.get(&(code_addr, arg)) {
                Some(c) => c.clone()?,
                None => {
                    let c = self.constant(p, code_addr, arg).map(|o| (o, format!("constant of `{}`", code.qualname)));
                    if self.consts.len() > 100_000 {
                        self.consts.clear();
                    }
                    self.consts.insert((code_addr, arg), c.clone());
                    c?
                }
            },
            "LOAD_GLOBAL" => {
                let idx = (arg >> 1) as usize;
                let name = code.names.get(idx)?.clone();
                let frame = innermost_frame(p, tid, code_addr)?;
                let globals = p.mem.u64(frame.wrapping_add(FRAME_F_GLOBALS)).ok()?;
                let key = (globals, code_addr ^ ((idx as u64) << 48));
                let now = Instant::now();
                let found = match self.globals.get(&key) {
                    Some((at, v)) if now.duration_since(*at) < GLOBALS_TTL => *v,
                    _ => {
                        let v = p.dict_get_str(globals, &name).map(|o| (o, false)).or_else(|| {
                            let builtins = p.mem.u64(frame.wrapping_add(FRAME_F_BUILTINS)).ok()?;
                            p.dict_get_str(builtins, &name).map(|o| (o, true))
                        });
                        if self.globals.len() > 100_000 {
                            self.globals.clear();
                        }
                        self.globals.insert(key, (now, v));
                        v
                    }
                };
                let (obj, builtin) = found?;
                (obj, format!("{} `{name}`", if builtin { "builtin" } else { "global" }))
            }
            "LOAD_FAST" | "LOAD_FAST_CHECK" | "LOAD_FAST_AND_CLEAR" | "LOAD_FAST_BORROW" | "STORE_FAST" => {
                self.local(p, tid, code_addr, &code.locals, arg)?
            }
            "LOAD_FAST_LOAD_FAST"
            | "LOAD_FAST_BORROW_LOAD_FAST_BORROW"
            | "STORE_FAST_LOAD_FAST"
            | "STORE_FAST_STORE_FAST" => self.local(p, tid, code_addr, &code.locals, arg >> 4)?,
            "LOAD_DEREF" => {
                let (cell, _) = self.local(p, tid, code_addr, &code.locals, arg)?;
                let off = p.offsets.pyobject_size + CELL_REF_AFTER_HEADER;
                let v = p.mem.u64(cell.wrapping_add(off)).ok().filter(|&v| v >= 4096)?;
                (v, format!("closure variable `{}`", code.locals.get(arg as usize)?))
            }
            _ => return None,
        })
    }

    /// `LOAD_ATTR`: the attribute's value, when the instruction before it loaded the owner in a
    /// way [`OperandReader::value_of`] can read (the owner is then on top of the value stack,
    /// which 3.13 does not keep in the frame). Looked up like Python does for plain cases: a
    /// module's dict; a class's dict and then its MRO; an instance's inline values, then its
    /// class's MRO (methods). Also whether a method call binds the owner as `self`: a method
    /// descriptor (a function, `list.append`) found on an instance's class.
    fn attribute(&mut self, p: &mut PyProcess, site: &Site, lasti: u32, arg: u32) -> Option<Attribute> {
        let name = site.code.names.get((arg >> 1) as usize)?.clone();
        let &(_, prev_op, prev_arg) = self.preceding(p, site.code_addr, lasti)?.first()?;
        let prev_name = self.opnames.get(prev_op as usize)?.clone();
        let (owner, owner_reached) = self.value_of(p, site, &prev_name, prev_arg)?;
        let attr =
            |value: (u64, String), bound: bool| Attribute { value, bound, owner: (owner, owner_reached.clone()) };
        let o = p.offsets.clone();
        let owner_type = p.mem.u64(owner.wrapping_add(o.ob_type)).ok()?;
        let owner_type_name = p.type_name(owner_type).ok()?;
        let flags = p.mem.u64(owner_type.wrapping_add(o.tp_name + TP_FLAGS_AFTER_TP_NAME)).ok()?;
        if owner_type_name == "module" {
            let dict = p.mem.u64(owner.wrapping_add(o.pyobject_size)).ok()?;
            let v = p.dict_get_str(dict, &name)?;
            return Some(attr((v, format!("attribute `.{name}` of module {owner_reached}")), false));
        }
        if flags & PY_TPFLAGS_TYPE_SUBCLASS != 0 {
            // The owner is a class.
            let (v, cls) = self.class_attribute(p, owner, &name)?;
            return Some(attr((v, format!("in `{cls}.__dict__`, attribute `.{name}` of {owner_reached}")), false));
        }
        if let Some(v) = p.inline_attr(owner, &name) {
            return Some(attr((v, format!("attribute `.{name}` of {owner_reached}")), false));
        }
        let (v, cls) = self.class_attribute(p, owner_type, &name)?;
        let bound = p
            .mem
            .u64(v.wrapping_add(o.ob_type))
            .and_then(|t| p.mem.u64(t.wrapping_add(o.tp_name + TP_FLAGS_AFTER_TP_NAME)))
            .is_ok_and(|f| f & PY_TPFLAGS_METHOD_DESCRIPTOR != 0);
        Some(attr((v, format!("in `{cls}.__dict__`, attribute `.{name}` of {owner_reached}")), bound))
    }

    /// `name` in the dicts of class `cls` and its MRO: the value and the class that has it.
    fn class_attribute(&self, p: &PyProcess, cls: u64, name: &str) -> Option<(u64, String)> {
        let o = &p.offsets;
        let mro = p.mem.u64(cls.wrapping_add(o.tp_name + TP_MRO_AFTER_TP_NAME)).ok()?;
        let n = p.mem.u64(mro.wrapping_add(o.tuple_ob_size)).ok()?.min(64);
        let items = p.mem.read_vec(mro.wrapping_add(o.tuple_ob_item), n as usize * 8).ok()?;
        items.chunks_exact(8).map(|c| field_u64(c, 0)).find_map(|k| {
            let dict = p.mem.u64(k.wrapping_add(o.tp_name + TP_DICT_AFTER_TP_NAME)).ok().filter(|&d| d != 0)?;
            let v = p.dict_get_str(dict, name)?;
            Some((v, p.type_name(k).ok()?))
        })
    }

    /// The instructions before the one at `lasti` (code units) of the code object at `code`,
    /// nearest first (at most [`PRECEDING`]), decoded from the start with each instruction's
    /// inline cache entries skipped (cached per instruction).
    fn preceding(&mut self, p: &PyProcess, code: u64, lasti: u32) -> Option<Vec<Instr>> {
        if let Some(v) = self.previous.get(&(code, lasti)) {
            return v.clone();
        }
        let v = self.decode_preceding(p, code, lasti);
        if self.previous.len() > 100_000 {
            self.previous.clear();
        }
        self.previous.insert((code, lasti), v.clone());
        v
    }

    fn decode_preceding(&self, p: &PyProcess, code: u64, lasti: u32) -> Option<Vec<Instr>> {
        if self.caches.is_empty() || lasti == 0 || lasti > 1 << 16 {
            return None;
        }
        let units = p.mem.read_vec(code.wrapping_add(p.offsets.code_co_code_adaptive), lasti as usize * 2).ok()?;
        let (mut i, mut ext, mut start) = (0usize, 0u32, 0usize);
        let mut seen: std::collections::VecDeque<Instr> = std::collections::VecDeque::with_capacity(PRECEDING + 1);
        while i < lasti as usize {
            let (op, a) = (units[2 * i], units[2 * i + 1] as u32);
            let arg = (ext << 8) | a;
            let name = self.opnames.get(op as usize).map(String::as_str);
            if name == Some("EXTENDED_ARG") {
                ext = arg;
            } else {
                ext = 0;
                seen.push_front((start as u32, op, arg));
                seen.truncate(PRECEDING);
            }
            i += 1 + *self.caches.get(op as usize)? as usize;
            if name != Some("EXTENDED_ARG") {
                start = i;
            }
        }
        (i == lasti as usize && !seen.is_empty()).then(|| seen.into())
    }

    /// `co_consts[i]` of the code object at `code`.
    fn constant(&self, p: &PyProcess, code: u64, i: u32) -> Option<u64> {
        // `co_consts` is the word before `co_names` (`Include/cpython/code.h`, 3.13–3.15:
        // `PyObject_VAR_HEAD; PyObject *co_consts; PyObject *co_names; …`).
        let consts = p.mem.u64(code.wrapping_add(p.layout.code_co_names - 8)).ok()?;
        let o = &p.offsets;
        let n = p.mem.u64(consts.wrapping_add(o.tuple_ob_size)).ok()?;
        if i as u64 >= n.min(1 << 20) {
            return None;
        }
        p.mem.u64(consts.wrapping_add(o.tuple_ob_item).wrapping_add(8 * i as u64)).ok().filter(|&v| v >= 4096)
    }

    /// The current value of local `i` (tag bits of 3.14+ stack references stripped).
    fn local(&self, p: &mut PyProcess, tid: u32, code: u64, names: &[String], i: u32) -> Option<(u64, String)> {
        let name = names.get(i as usize)?;
        let frame = innermost_frame(p, tid, code)?;
        let slot = frame.wrapping_add(p.offsets.frame_localsplus).wrapping_add(8 * i as u64);
        let v = p.mem.u64(slot).ok()? & !3;
        (v >= 4096).then(|| (v, format!("local `{name}`")))
    }

    /// Type name and rendering of `obj`.
    fn render(&mut self, p: &mut PyProcess, obj: u64) -> Option<(String, Option<String>)> {
        let ty = p.mem.u64(obj.wrapping_add(p.offsets.ob_type)).ok()?;
        if let Some((t, name, value)) = self.renders.get(&obj) {
            if *t == ty {
                return Some((name.clone(), value.clone()));
            }
        }
        let (_, name) = p.object_with_type(obj)?;
        let value = render_value(p, obj, &name);
        if self.renders.len() > 100_000 {
            self.renders.clear();
        }
        self.renders.insert(obj, (ty, name.clone(), value.clone()));
        Some((name, value))
    }
}

/// Where a `CALL`'s callable came from (an index into the instructions before it, nearest
/// first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallSource {
    /// `LOAD_ATTR` with its method bit: it pushed the attribute and, for a method of an
    /// instance's class, the instance as `self`; the owner came from the instruction after it
    /// in the list (the one before it in the code).
    Method(usize),
    /// `LOAD_GLOBAL` with its NULL bit: the callable and no `self`.
    Global(usize),
    /// A load followed by `PUSH_NULL`: the callable and no `self`.
    AfterNull(usize),
}

/// Loads that push one value and pop none (the arguments a walk back can step over).
const PUSH_ONE: [&str; 8] = [
    "LOAD_FAST",
    "LOAD_FAST_CHECK",
    "LOAD_FAST_BORROW",
    "LOAD_CONST",
    "LOAD_SMALL_INT",
    "LOAD_DEREF",
    "LOAD_COMMON_CONSTANT",
    "LOAD_NAME",
];
/// Loads that push two values.
const PUSH_TWO: [&str; 2] = ["LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW_LOAD_FAST_BORROW"];

/// `CALL nargs`: which instruction pushed its callable, from the instructions before it
/// (`(base opname, oparg)`, nearest first). The value stack under a `CALL` is `callable,
/// self_or_null, args…` (3.13–3.15, `Python/bytecodes.c`); the walk steps back over the
/// arguments while each is one simple load, then expects the pair's producer. None for
/// anything else (a nested call, an expression as an argument).
fn call_source(before: &[(&str, u32)], nargs: u32) -> Option<CallSource> {
    let mut need = nargs;
    for (i, &(name, arg)) in before.iter().enumerate() {
        let push = if PUSH_ONE.contains(&name) || (name == "LOAD_GLOBAL" && arg & 1 == 0) {
            1
        } else if PUSH_TWO.contains(&name) {
            2
        } else {
            0
        };
        if need > 0 {
            if push == 0 || push > need {
                return None;
            }
            need -= push;
            continue;
        }
        return match name {
            "LOAD_ATTR" if arg & 1 == 1 => Some(CallSource::Method(i)),
            "LOAD_GLOBAL" if arg & 1 == 1 => Some(CallSource::Global(i)),
            "PUSH_NULL" => {
                let &(callable, arg) = before.get(i + 1)?;
                let simple = PUSH_ONE.contains(&callable)
                    || (callable == "LOAD_GLOBAL" && arg & 1 == 0)
                    || callable == "STORE_FAST_LOAD_FAST";
                simple.then_some(CallSource::AfterNull(i + 1))
            }
            _ => None,
        };
    }
    None
}

/// `ob_ref_local` of the free-threaded object header, relative to `ob_type`: the header is
/// `ob_tid` (8), padding (2), `ob_mutex` (1), `ob_gc_bits` (1), `ob_ref_local` (4),
/// `ob_ref_shared` (8), `ob_type` (`Include/object.h`, 3.13–3.15 with `Py_GIL_DISABLED`).
const OB_REF_LOCAL_BEFORE_OB_TYPE: u64 = 12;
/// `_Py_IMMORTAL_REFCNT_LOCAL`: the local count of an immortal object (3.13–3.15).
const IMMORTAL_REFCNT_LOCAL: u32 = u32::MAX;

/// Whether a free-threaded object is immortal (its local count is `_Py_IMMORTAL_REFCNT_LOCAL`).
pub(crate) fn is_immortal(p: &PyProcess, obj: u64) -> bool {
    if !p.offsets.free_threaded || p.offsets.ob_type < OB_REF_LOCAL_BEFORE_OB_TYPE {
        return false;
    }
    let at = obj.wrapping_add(p.offsets.ob_type - OB_REF_LOCAL_BEFORE_OB_TYPE);
    let mut b = [0u8; 4];
    p.mem.read(at, &mut b).is_ok() && u32::from_le_bytes(b) == IMMORTAL_REFCNT_LOCAL
}

/// `ob_tid` of the free-threaded object header, relative to `ob_type` (see above).
const OB_TID_BEFORE_OB_TYPE: u64 = 24;

/// Whether free-threaded object `obj` is owned by thread `tid`: its `ob_tid` is the thread's
/// `_Py_ThreadId()`. On x86-64 that is the thread pointer (`%fs:0`), which glibc and musl also
/// return from `pthread_self()`, the thread state's `thread_id`; elsewhere the two differ and
/// ownership is not told (false).
pub(crate) fn owned_by(p: &mut PyProcess, obj: u64, tid: u32) -> bool {
    if !cfg!(target_arch = "x86_64") || !p.offsets.free_threaded || p.offsets.ob_type < OB_TID_BEFORE_OB_TYPE {
        return false;
    }
    let Some(ident) = p.thread_ident(tid) else { return false };
    p.mem.u64(obj.wrapping_add(p.offsets.ob_type - OB_TID_BEFORE_OB_TYPE)).is_ok_and(|t| t != 0 && t == ident)
}

/// A short, safe rendering of values that have one.
fn render_value(p: &PyProcess, obj: u64, type_name: &str) -> Option<String> {
    match type_name {
        "str" => p.unicode(obj).ok().map(|s| quote(&s)),
        "int" => p.long_value(obj).map(|v| v.to_string()),
        "function" => {
            let q = p.mem.u64(obj.wrapping_add(p.offsets.pyobject_size + FUNC_QUALNAME_AFTER_HEADER)).ok()?;
            p.unicode(q).ok()
        }
        "type" => p.type_name(obj).ok(),
        _ => None,
    }
}

/// `'text'`, escaped like `repr` and cut at [`STR_CHARS`] characters.
pub fn quote(s: &str) -> String {
    let mut out = String::from("'");
    for (i, c) in s.chars().enumerate() {
        if i == STR_CHARS {
            out.push('…');
            break;
        }
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Address of thread `tid`'s innermost Python frame, if it still runs the code object `code`.
fn innermost_frame(p: &mut PyProcess, tid: u32, code: u64) -> Option<u64> {
    if !p.load_tstate(tid).ok()? {
        return None;
    }
    let o = p.offsets.clone();
    let mut frame = field_u64(&p.ts_buf, o.ts_current_frame);
    for _ in 0..8 {
        if frame == 0 {
            return None;
        }
        let owner = p.mem.read_vec(frame.wrapping_add(o.frame_owner), 1).ok()?[0];
        if owner < p.layout.owner_entry {
            let exe = p.mem.u64(frame.wrapping_add(o.frame_executable)).ok()? & !3;
            return (exe == code).then_some(frame);
        }
        frame = p.mem.u64(frame.wrapping_add(o.frame_previous)).ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_escaped_and_cut() {
        assert_eq!(quote("a string"), "'a string'");
        assert_eq!(quote("it's"), "'it\\'s'");
        assert_eq!(quote("a\nb"), "'a\\nb'");
        assert_eq!(quote(&"x".repeat(50)), format!("'{}…'", "x".repeat(40)));
    }

    /// The bytecode of common calls, as `dis` shows it on 3.13t and 3.14 (nearest first).
    #[test]
    fn a_call_finds_the_instruction_that_pushed_its_callable() {
        use CallSource::*;
        /// What the case is, the instructions before the call (nearest first), its argument
        /// count, the answer.
        type Case<'a> = (&'a str, &'a [(&'a str, u32)], u32, Option<CallSource>);
        let cases: &[Case] = &[
            ("obj.bump() (3.13)", &[("LOAD_ATTR", 1), ("LOAD_FAST", 0)], 0, Some(Method(0))),
            ("obj.bump() (3.14)", &[("LOAD_ATTR", 1), ("LOAD_FAST_BORROW", 0)], 0, Some(Method(0))),
            (
                "Shared.add(1, 2)",
                &[("LOAD_CONST", 2), ("LOAD_CONST", 1), ("LOAD_ATTR", 5), ("LOAD_GLOBAL", 2)],
                2,
                Some(Method(2)),
            ),
            ("log.debug('x')", &[("LOAD_CONST", 3), ("LOAD_ATTR", 7), ("LOAD_FAST", 1)], 1, Some(Method(1))),
            ("len(obj)", &[("LOAD_FAST", 0), ("LOAD_GLOBAL", 9)], 1, Some(Global(1))),
            ("g(obj) (3.13)", &[("LOAD_FAST", 0), ("PUSH_NULL", 0), ("LOAD_FAST", 2)], 1, Some(AfterNull(2))),
            (
                "g(obj) (3.14)",
                &[("LOAD_FAST_BORROW", 0), ("PUSH_NULL", 0), ("STORE_FAST_LOAD_FAST", 17)],
                1,
                Some(AfterNull(2)),
            ),
            ("f(a, b) with both loaded at once", &[("LOAD_FAST_LOAD_FAST", 1), ("LOAD_GLOBAL", 1)], 2, Some(Global(1))),
            // An expression as an argument (`f(a + 1)`), a nested call, too few instructions:
            // nothing is guessed.
            ("f(a + 1)", &[("BINARY_OP", 0), ("LOAD_CONST", 1), ("LOAD_FAST", 0), ("LOAD_GLOBAL", 1)], 1, None),
            ("f(g())", &[("CALL", 0), ("LOAD_GLOBAL", 3), ("LOAD_GLOBAL", 1)], 1, None),
            ("cut short", &[("LOAD_CONST", 1)], 1, None),
            // A two-value load cannot stand for one argument.
            ("one argument, two values", &[("LOAD_FAST_LOAD_FAST", 1), ("LOAD_GLOBAL", 1)], 1, None),
            // `LOAD_ATTR` without the method bit is the callable's owner's attribute loaded
            // as a value (`f = obj.attr; f()`-like): not a call's pair.
            ("attribute as a value", &[("LOAD_ATTR", 4), ("LOAD_FAST", 0)], 0, None),
            // `PUSH_NULL` after something the walk cannot read.
            ("(a or b)()", &[("PUSH_NULL", 0), ("COPY", 1)], 0, None),
        ];
        for (name, before, nargs, want) in cases {
            assert_eq!(call_source(before, *nargs), *want, "{name}");
        }
    }
}
