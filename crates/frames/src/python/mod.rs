//! Python frames and stacks as the CPython frame reader (`symbolizer::python`) reads them from a
//! target: code objects, frame chains, what a parked thread waits on, the object an instruction
//! works on, and what an instruction touches in words.

pub mod linetable;

use std::sync::Arc;

/// Static facts about one code object. Serialized (for captures) without the line table and
/// the identity key, which matter only while reading the target.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CodeInfo {
    pub qualname: String,
    pub filename: String,
    pub firstlineno: i32,
    #[serde(skip)]
    lines: linetable::LineRanges,
    /// (filename, qualname, linetable) pointers, to notice a freed-and-reused address.
    #[serde(skip)]
    key: [u64; 3],
    /// `co_localsplusnames`: names of locals, cells and free variables.
    pub locals: Vec<String>,
    /// `co_names`: global, attribute and imported names.
    pub names: Vec<String>,
}

impl CodeInfo {
    /// A code object as read from a live target (the symbolizer's reader builds it): `lines` is
    /// its decoded location table (for [`CodeInfo::line_for`]) and `key` the (filename, qualname,
    /// linetable) pointers that identify it while it lives (see [`CodeInfo::key`]); `locals` is
    /// `co_localsplusnames`, `names` is `co_names`.
    pub fn from_target(
        qualname: String,
        filename: String,
        firstlineno: i32,
        lines: linetable::LineRanges,
        key: [u64; 3],
        locals: Vec<String>,
        names: Vec<String>,
    ) -> CodeInfo {
        CodeInfo { qualname, filename, firstlineno, lines, key, locals, names }
    }

    /// A code object described directly (for tools and tests that do not read a process).
    pub fn synthetic(qualname: &str, filename: &str, firstlineno: i32) -> CodeInfo {
        CodeInfo {
            qualname: qualname.into(),
            filename: filename.into(),
            firstlineno,
            lines: Vec::new(),
            key: [0; 3],
            locals: Vec::new(),
            names: Vec::new(),
        }
    }

    /// The (filename, qualname, linetable) pointers it was read with: a cached code object
    /// whose address now holds other pointers was freed and the address reused. `[0; 3]` for
    /// synthetic and deserialized code objects.
    pub fn key(&self) -> [u64; 3] {
        self.key
    }

    /// Line of the instruction at code unit `lasti` (`None` without a line table).
    pub fn line_for(&self, lasti: u32) -> Option<i32> {
        linetable::line_for(&self.lines, lasti)
    }
}

/// One entry of an interpreter-frame chain.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum PyFrame {
    /// A Python function frame.
    Code {
        code: Arc<CodeInfo>,
        code_addr: u64,
        /// Index (in code units) of the instruction being executed.
        lasti: u32,
        line: Option<i32>,
        /// The instruction being executed, `opcode | oparg << 8` (innermost frame only).
        instr: Option<u16>,
    },
    /// The entry frame of one C-level `_PyEval_EvalFrameDefault` activation.
    Entry,
}

/// A thread's Python stack, innermost frame first.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PyStack {
    pub frames: Vec<PyFrame>,
    /// The walk stopped early (torn read, invalid frame, depth limit).
    pub truncated: bool,
    /// `PyThreadState.state`: 0 detached, 1 attached, 2 suspended (3.14: 3 shutting down).
    pub state: i32,
}

/// What a thread parked in the parking lot waits on (see `symbolizer::python::PyProcess::probe_parked`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ParkedInfo {
    /// The parked-on address (a PyMutex byte, `tstate->state`, a PyEvent…).
    pub addr: u64,
    /// If `addr` is an object's `ob_mutex`: the object and its type (critical sections).
    pub cs_object: Option<(u64, String)>,
    /// If `addr` is the mutex inside a `_thread.lock`/`_thread.RLock`: the object and its type.
    pub lock_object: Option<(u64, String)>,
    /// `addr` is the waiting thread's own `tstate->state`: a stop-the-world pause.
    pub stw_victim: bool,
    /// For runtime-internal mutexes: `_PyRuntime+0x…` or `PyInterpreterState+0x…` with a name
    /// when known.
    pub symbol: Option<String>,
    /// `addr` lies in the interpreter's GIL state (`struct _gil_runtime_state`: its condition
    /// variable or mutex): a wait for the GIL.
    pub gil: bool,
}

/// An object an instruction touched, as read from the target (by
/// `symbolizer::python::OperandReader`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ObjectRef {
    pub addr: u64,
    /// `tp_name` of its type.
    pub type_name: String,
    /// A short rendering for values that have one: `'a string'`, `42`, `_DC.__init__` (a
    /// function's qualified name), `Foo` (a class).
    pub value: Option<String>,
    /// How the instruction reached it: ``global `SHARED` ``, ``constant of `worker` ``,
    /// ``local `x` ``, ``builtin `len` ``, ``closure variable `c` ``.
    pub reached: String,
    /// Its reference count is immortal (never written: no refcount stall on it).
    pub immortal: bool,
    /// Free-threaded: the object is owned by the thread whose instruction named it (`ob_tid` is
    /// that thread's id), whose own increments and decrements are plain, not atomic: an atomic
    /// update under this instruction is on another object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owned: bool,
}

impl ObjectRef {
    /// `str 'a string' (constant of `worker`)`, `list @ 0x7f… (global `SHARED`)`.
    pub fn describe(&self) -> String {
        let what = match &self.value {
            Some(v) => format!("{} {v}", self.type_name),
            None => format!("{} @ {:#x}", self.type_name, self.addr),
        };
        if self.reached.is_empty() {
            what
        } else {
            format!("{what} ({})", self.reached)
        }
    }
}

/// What the instruction `instr` (`opcode | oparg << 8`) of a frame running `code` touches,
/// in words: "local `obj`", "attribute `.bump`", "global `cache`", …
///
/// `opnames`: base opcode names of the target's CPython, index = opcode (the symbolizer asks
/// the interpreter for them: `symbolizer::python::opcodes::base_opnames`).
pub fn describe_instr(instr: u16, code: &CodeInfo, opnames: &[String]) -> Option<String> {
    let (op, arg) = ((instr & 0xff) as usize, (instr >> 8) as usize);
    let name = opnames.get(op)?.as_str();
    let local = |i: usize| code.locals.get(i).map(|n| format!("`{n}`"));
    let global = |i: usize| code.names.get(i).map(|n| format!("`{n}`"));
    Some(match name {
        "LOAD_FAST" | "LOAD_FAST_CHECK" | "LOAD_FAST_AND_CLEAR" | "STORE_FAST" | "DELETE_FAST" => {
            format!("local {}", local(arg)?)
        }
        "LOAD_FAST_LOAD_FAST" | "STORE_FAST_LOAD_FAST" | "STORE_FAST_STORE_FAST" => {
            format!("locals {} and {}", local(arg >> 4)?, local(arg & 15)?)
        }
        "LOAD_DEREF" | "STORE_DEREF" | "LOAD_FROM_DICT_OR_DEREF" => format!("closure variable {}", local(arg)?),
        "LOAD_ATTR" => format!("attribute {}", global(arg >> 1)?.replacen('`', "`.", 1)),
        "STORE_ATTR" | "DELETE_ATTR" => format!("attribute {}", global(arg)?.replacen('`', "`.", 1)),
        "LOAD_SUPER_ATTR" => format!("attribute {}", global(arg >> 2)?.replacen('`', "`.", 1)),
        "LOAD_GLOBAL" => format!("global {}", global(arg >> 1)?),
        "LOAD_NAME" | "STORE_NAME" | "STORE_GLOBAL" | "DELETE_NAME" | "DELETE_GLOBAL" => {
            format!("name {}", global(arg)?)
        }
        "LOAD_CONST" | "RETURN_CONST" => "a constant".into(),
        n if n.starts_with("CALL") => "objects of a call (callable, self, arguments)".into(),
        n if n.starts_with("BINARY_SUBSCR") || n.starts_with("STORE_SUBSCR") => "a container and its items".into(),
        n => format!("objects used by {n}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_name_type_value_and_path() {
        let s = ObjectRef {
            addr: 0x10,
            type_name: "str".into(),
            value: Some("'a string'".into()),
            reached: "constant of `worker`".into(),
            immortal: false,
            owned: false,
        };
        assert_eq!(s.describe(), "str 'a string' (constant of `worker`)");
        let l = ObjectRef {
            addr: 0x7f00,
            type_name: "list".into(),
            value: None,
            reached: "global `SHARED`".into(),
            immortal: false,
            owned: false,
        };
        assert_eq!(l.describe(), "list @ 0x7f00 (global `SHARED`)");
    }

    #[test]
    fn instructions_name_what_they_touch() {
        let mut names = vec![String::new(); 4];
        names[1] = "LOAD_FAST".into();
        names[2] = "LOAD_ATTR".into();
        names[3] = "CALL".into();
        let code = CodeInfo::from_target(
            "f".into(),
            "f.py".into(),
            1,
            Vec::new(),
            [1, 2, 3],
            vec!["obj".into()],
            vec!["cache".into(), "bump".into()],
        );
        assert_eq!(code.key(), [1, 2, 3]);
        assert_eq!(describe_instr(1, &code, &names).as_deref(), Some("local `obj`"));
        // LOAD_ATTR's oparg is the name index shifted left by one.
        assert_eq!(describe_instr(2 | ((1 << 1) << 8), &code, &names).as_deref(), Some("attribute `.bump`"));
        assert_eq!(describe_instr(3, &code, &names).as_deref(), Some("objects of a call (callable, self, arguments)"));
        // An index past the names, or an opcode without a name: nothing to say.
        assert_eq!(describe_instr(1 | (5 << 8), &code, &names), None);
        assert_eq!(describe_instr(9, &code, &names), None);
    }
}
