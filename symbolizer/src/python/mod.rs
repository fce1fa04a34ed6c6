//! Out-of-process CPython frame reader driven by `_Py_DebugOffsets`.
//!
//! [`PyProcess::locate`] finds `_PyRuntime` in a live process (the `.PyRuntime` section or the
//! `_PyRuntime` symbol of the executable or `libpython*.so`), validates the cookie, version and
//! build kind, and then [`PyProcess::stack_for_tid`] walks the thread state of one OS thread:
//! its interpreter-frame chain, code objects (cached) and line numbers.

pub mod layout;
pub mod linetable;
pub mod mem;
mod objects;
pub mod offsets;
pub mod opcodes;
pub mod operand;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The frame and stack types live in the `frames` crate (no ELF/DWARF code there, so analysis and
/// the renderers need not depend on this crate); this reader builds them.
pub use frames::python::{CodeInfo, ParkedInfo, PyFrame, PyStack};
pub use layout::Layout;
pub use mem::{FakeMemory, Mem, ReadMemory};
pub use offsets::{DebugOffsets, OffsetsError};
pub use operand::{ObjectRef, OperandReader};

use crate::native::ElfFile;
use mem::{field_i32, field_u64, field_u8};

const MAX_FRAMES: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum PyError {
    #[error("process {0} not found")]
    NoProcess(u32),
    #[error("{0}")]
    NotPython(String),
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
    #[error("reading the target's memory failed: {0}")]
    Read(#[from] std::io::Error),
    /// The executable (or libpython) could not be read: a permission problem, not "not Python".
    #[error("cannot read {path}: {error}")]
    Unreadable { path: String, error: String },
    /// ftprof runs with privileges its caller lacks and the caller may not trace this process.
    #[error(transparent)]
    Denied(#[from] profiler::access::AccessError),
}

/// One thread state of the target.
#[derive(Clone, Debug)]
pub struct PyThread {
    pub tstate: u64,
    pub native_tid: u32,
    pub thread_id: u64,
}

/// A CPython process whose runtime has been located.
pub struct PyProcess {
    pub pid: u32,
    pub mem: Box<dyn ReadMemory>,
    pub offsets: DebugOffsets,
    /// What `_Py_DebugOffsets` does not give, for this version and build.
    pub layout: &'static Layout,
    /// `layout.runtime_size` matches the target's `sizeof(_PyRuntimeState)`: the table's
    /// interpreter-internal offsets (mutex names) apply to this build.
    pub layout_exact: bool,
    /// The target's PID namespace differs from ours: its `native_thread_id`s are translated.
    tid_map: Option<HashMap<u32, u32>>,
    /// Address of `_PyRuntime`.
    pub runtime: u64,
    /// The ELF file that holds `_PyRuntime`.
    pub module: String,
    code_type: Option<u64>,
    codes: HashMap<u64, Arc<CodeInfo>>,
    tstates: HashMap<u32, u64>,
    /// Per thread: its thread state and that state's `thread_id` (see [`PyProcess::thread_ident`]).
    idents: HashMap<u32, (u64, u64)>,
    type_names: HashMap<u64, String>,
    /// `threading._active` once found.
    threading_active: Option<u64>,
    ts_buf: Vec<u8>,
    frame_buf: Vec<u8>,
    code_hdr_len: usize,
}

/// What `/proc/PID/maps` says about one mapping (the one maps parser lives in `native`).
pub use crate::native::MapLine;

/// The mappings of process `pid`.
pub fn read_maps(pid: u32) -> std::io::Result<Vec<MapLine>> {
    Ok(crate::native::parse_maps(&std::fs::read_to_string(format!("/proc/{pid}/maps"))?))
}

/// Where `_PyRuntime` lives in an ELF file: its virtual address, if the file has one.
pub fn runtime_vaddr(elf: &ElfFile) -> Option<u64> {
    elf.section(".PyRuntime").map(|s| s.addr).or_else(|| elf.symbol("_PyRuntime").map(|s| s.0))
}

/// `Py_Version` (PY_VERSION_HEX) stored in an ELF file, for version checks before launch.
pub fn static_version(elf: &ElfFile) -> Option<u64> {
    let (addr, _) = elf.symbol("Py_Version")?;
    let b = elf.read_vaddr(addr, 4)?;
    Some(u32::from_le_bytes(b.try_into().ok()?) as u64)
}

impl PyProcess {
    /// Find and validate `_PyRuntime` in process `pid`.
    pub fn locate(pid: u32) -> Result<PyProcess, PyError> {
        profiler::access::check(pid)?;
        let maps = read_maps(pid).map_err(|_| PyError::NoProcess(pid))?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut seen = Vec::new();
        let mut unreadable = None;
        let candidates = maps.iter().filter(|m| {
            let name = Path::new(&m.path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (m.path == exe || name.starts_with("libpython")) && m.path.starts_with('/')
        });
        for m in candidates {
            if seen.contains(&m.path) {
                continue;
            }
            seen.push(m.path.clone());
            let elf = match ElfFile::open_shared(&target_file(pid, &m.path)) {
                Ok(elf) => elf,
                Err(e) => {
                    let denied = e.chain().any(|c| {
                        c.downcast_ref::<std::io::Error>()
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
                    });
                    if denied && unreadable.is_none() {
                        unreadable =
                            Some(PyError::Unreadable { path: m.path.clone(), error: e.root_cause().to_string() });
                    }
                    continue;
                }
            };
            let Some(vaddr) = runtime_vaddr(&elf) else {
                continue;
            };
            // The lowest mapping of this file gives the load bias.
            let first = maps.iter().filter(|x| x.path == m.path).min_by_key(|x| x.pgoff).unwrap_or(m);
            let runtime = vaddr.wrapping_add(elf.bias_for_mapping(first.start, first.pgoff));
            let mut p = PyProcess::from_memory(Box::new(Mem::for_process(pid)?), runtime, pid)?;
            p.module = m.path.clone();
            p.tid_map = namespace_tid_map(pid);
            return Ok(p);
        }
        if let Some(e) = unreadable {
            return Err(e);
        }
        Err(PyError::NotPython(format!(
            "process {pid} ({}) has no CPython runtime (_PyRuntime) in its executable or a libpython",
            if exe.is_empty() { "unknown executable".into() } else { exe }
        )))
    }

    /// A runtime at `runtime` in the address space `mem` (a live process's, or a synthetic one
    /// in tests): reads and validates `_Py_DebugOffsets` there.
    pub fn from_memory(mem: Box<dyn ReadMemory>, runtime: u64, pid: u32) -> Result<PyProcess, PyError> {
        let raw = mem.read_vec(runtime, offsets::MAX_SIZE)?;
        let offsets = DebugOffsets::parse(&raw)?;
        let layout = Layout::for_version(offsets.minor(), offsets.free_threaded)
            .ok_or_else(|| OffsetsError::TooNew(offsets.version_string()))?;
        Ok(PyProcess::new(pid, mem, offsets, layout, runtime, String::new()))
    }

    fn new(
        pid: u32,
        mem: Box<dyn ReadMemory>,
        offsets: DebugOffsets,
        layout: &'static Layout,
        runtime: u64,
        module: String,
    ) -> PyProcess {
        let o = &offsets;
        let ts_len = [
            o.ts_next,
            o.ts_current_frame,
            o.ts_thread_id,
            o.ts_native_thread_id,
            layout.ts_state,
            o.ts_status,
            layout.ts_holds_gil.unwrap_or(0),
            o.ts_base_frame.unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap() as usize
            + 8;
        let code_hdr_len = [o.code_filename, o.code_qualname, o.code_linetable, o.code_firstlineno, o.ob_type]
            .into_iter()
            .max()
            .unwrap() as usize
            + 8;
        PyProcess {
            pid,
            mem,
            frame_buf: vec![0; o.frame_size.max(o.frame_owner + 1) as usize],
            ts_buf: vec![0; ts_len],
            code_hdr_len,
            layout_exact: layout.runtime_size == offsets.runtime_size,
            layout,
            tid_map: None,
            offsets,
            runtime,
            module,
            code_type: None,
            codes: HashMap::new(),
            tstates: HashMap::new(),
            idents: HashMap::new(),
            type_names: HashMap::new(),
            threading_active: None,
        }
    }

    /// All thread states of all interpreters.
    pub fn threads(&self) -> Result<Vec<PyThread>, PyError> {
        let o = &self.offsets;
        let mut out = Vec::new();
        let mut interp = self.mem.u64(self.runtime.wrapping_add(o.runtime_interpreters_head))?;
        let mut ninterp = 0;
        while interp != 0 && ninterp < 64 {
            let mut ts = self.mem.u64(interp.wrapping_add(o.interp_threads_head))?;
            let mut n = 0;
            while ts != 0 && n < 100_000 {
                let mut native_tid = self.mem.u64(ts.wrapping_add(o.ts_native_thread_id))? as u32;
                if let Some(map) = &self.tid_map {
                    native_tid = map.get(&native_tid).copied().unwrap_or(native_tid);
                }
                let thread_id = self.mem.u64(ts.wrapping_add(o.ts_thread_id))?;
                out.push(PyThread { tstate: ts, native_tid, thread_id });
                ts = self.mem.u64(ts.wrapping_add(o.ts_next))?;
                n += 1;
            }
            interp = self.mem.u64(interp.wrapping_add(o.interp_next))?;
            ninterp += 1;
        }
        Ok(out)
    }

    /// Whether the GIL of the main interpreter is enabled now (always true for GIL builds).
    pub fn gil_enabled(&self) -> Result<bool, PyError> {
        let o = &self.offsets;
        if !o.free_threaded {
            return Ok(true);
        }
        let interp = self.mem.u64(self.runtime.wrapping_add(o.runtime_interpreters_head))?;
        let gil = self.mem.u64(interp.wrapping_add(o.interp_ceval_gil))?;
        Ok(self.mem.i32(gil.wrapping_add(o.gil_enabled))? != 0)
    }

    /// Read the thread state of `tid` into `ts_buf`; `false` when `tid` has none.
    fn load_tstate(&mut self, tid: u32) -> Result<bool, PyError> {
        let nt = self.offsets.ts_native_thread_id;
        // The thread id as the target's own PID namespace sees it.
        let own = match &self.tid_map {
            Some(map) => map.iter().find(|(_, &host)| host == tid).map(|(&ns, _)| ns).unwrap_or(tid),
            None => tid,
        };
        if let Some(&ts) = self.tstates.get(&tid) {
            if self.mem.read(ts, &mut self.ts_buf).is_ok() && field_u64(&self.ts_buf, nt) as u32 == own {
                return Ok(true);
            }
        }
        if self.tid_map.is_some() {
            self.tid_map = namespace_tid_map(self.pid);
        }
        self.tstates = self.threads()?.into_iter().map(|t| (t.native_tid, t.tstate)).collect();
        match self.tstates.get(&tid) {
            Some(&ts) => {
                self.mem.read(ts, &mut self.ts_buf)?;
                let now = field_u64(&self.ts_buf, nt) as u32;
                Ok(now == own || self.tid_map.as_ref().is_some_and(|m| m.get(&now) == Some(&tid)))
            }
            None => Ok(false),
        }
    }

    /// The Python stack of OS thread `tid`, or `None` when it has no thread state (not a
    /// Python thread, or the runtime is not initialised yet).
    pub fn stack_for_tid(&mut self, tid: u32) -> Result<Option<PyStack>, PyError> {
        if !self.load_tstate(tid)? {
            return Ok(None);
        }
        let o = self.offsets.clone();
        let state = field_i32(&self.ts_buf, self.layout.ts_state);
        let mut frame = field_u64(&self.ts_buf, o.ts_current_frame);
        // 3.15+: the walk ends at the thread's sentinel base frame.
        let base = o.ts_base_frame.map(|off| field_u64(&self.ts_buf, off)).unwrap_or(0);
        let mut stack = PyStack { frames: Vec::new(), truncated: false, state };
        // Frames are counted whether or not they are shown: a chain read from memory that is
        // changing (or corrupt) may loop through frames of other owners.
        let mut visited = 0;
        while frame != 0 && frame != base {
            visited += 1;
            if visited > MAX_FRAMES || self.mem.read(frame, &mut self.frame_buf).is_err() {
                stack.truncated = true;
                break;
            }
            let owner = field_u8(&self.frame_buf, o.frame_owner);
            let executable = field_u64(&self.frame_buf, o.frame_executable) & !3;
            let instr_ptr = field_u64(&self.frame_buf, o.frame_instr_ptr);
            let tlbc_index = o.frame_tlbc_index.map(|off| field_i32(&self.frame_buf, off));
            let previous = field_u64(&self.frame_buf, o.frame_previous);
            if owner == self.layout.owner_entry {
                stack.frames.push(PyFrame::Entry);
            } else if owner < self.layout.owner_entry {
                match self.code(executable) {
                    Ok(Some(code)) => {
                        let lasti = self.lasti(executable, instr_ptr, tlbc_index);
                        let line = code.line_for(lasti);
                        // The innermost frame's instruction says what it was touching.
                        let innermost = !stack.frames.iter().any(|f| matches!(f, PyFrame::Code { .. }));
                        let instr = if innermost {
                            let mut b = [0u8; 2];
                            self.mem.read(instr_ptr, &mut b).ok().map(|_| u16::from_le_bytes(b))
                        } else {
                            None
                        };
                        stack.frames.push(PyFrame::Code { code, code_addr: executable, lasti, line, instr });
                    }
                    _ => {
                        stack.truncated = true;
                        break;
                    }
                }
            }
            frame = previous;
        }
        Ok(Some(stack))
    }

    /// Index (in code units) of the instruction at `instr_ptr` in code object `code` (3.14t: in
    /// its thread-local copy `tlbc_index`).
    fn lasti(&self, code: u64, instr_ptr: u64, tlbc_index: Option<i32>) -> u32 {
        let o = &self.offsets;
        let base = match (o.code_co_tlbc, tlbc_index) {
            (Some(co_tlbc), Some(idx)) if idx > 0 => self.tlbc_base(code, co_tlbc, idx),
            _ => code.wrapping_add(o.code_co_code_adaptive),
        };
        (instr_ptr.wrapping_sub(base) / 2) as u32
    }

    /// One frame whose fields were read elsewhere (by the BPF program at the sample instant):
    /// `Ok(Some(frame))` for a Python frame or an entry frame, `Ok(None)` for a frame the walk
    /// does not show (3.14+ C-stack frames), `Err` when `executable` is not a code object (the
    /// chain is not to be trusted past it). Code objects are cached by address and checked, as
    /// in [`PyProcess::stack_for_tid`], so a freed and reused address is not misnamed.
    pub fn frame_from_raw(
        &mut self,
        executable: u64,
        instr_ptr: u64,
        tlbc_index: i32,
        owner: u8,
    ) -> Result<Option<PyFrame>, PyError> {
        if owner == self.layout.owner_entry {
            return Ok(Some(PyFrame::Entry));
        }
        if owner > self.layout.owner_entry {
            return Ok(None);
        }
        let executable = executable & !3;
        let Some(code) = self.code(executable)? else {
            return Err(PyError::NotPython(format!("{executable:#x} is not a code object")));
        };
        let tlbc = self.offsets.frame_tlbc_index.map(|_| tlbc_index);
        let lasti = self.lasti(executable, instr_ptr, tlbc);
        let line = code.line_for(lasti);
        Ok(Some(PyFrame::Code { code, code_addr: executable, lasti, line, instr: None }))
    }

    /// The code unit (opcode and argument) at `instr_ptr`, read now: what the innermost frame's
    /// instruction touches (the operand reader needs it; a stack read in the kernel carries the
    /// instruction pointer only).
    pub fn code_unit(&self, instr_ptr: u64) -> Option<u16> {
        let mut b = [0u8; 2];
        self.mem.read(instr_ptr, &mut b).ok().map(|_| u16::from_le_bytes(b))
    }

    /// 3.14t thread-local bytecode: start of copy `idx` of the code's bytecode.
    fn tlbc_base(&self, code: u64, co_tlbc: u64, idx: i32) -> u64 {
        let fallback = code.wrapping_add(self.offsets.code_co_code_adaptive);
        let Ok(arr) = self.mem.u64(code.wrapping_add(co_tlbc)) else {
            return fallback;
        };
        self.mem.u64(arr.wrapping_add(8).wrapping_add((idx as u64).wrapping_mul(8))).unwrap_or(fallback)
    }

    /// Code object at `addr` (cached; `None` if it is not a code object).
    fn code(&mut self, addr: u64) -> Result<Option<Arc<CodeInfo>>, PyError> {
        let o = &self.offsets;
        let hdr = self.mem.read_vec(addr, self.code_hdr_len)?;
        let key =
            [field_u64(&hdr, o.code_filename), field_u64(&hdr, o.code_qualname), field_u64(&hdr, o.code_linetable)];
        if let Some(c) = self.codes.get(&addr) {
            if c.key() == key {
                return Ok(Some(c.clone()));
            }
        }
        let ty = field_u64(&hdr, o.ob_type);
        match self.code_type {
            Some(t) if t != ty => return Ok(None),
            Some(_) => {}
            None => {
                if self.type_name(ty)? != "code" {
                    return Ok(None);
                }
                self.code_type = Some(ty);
            }
        }
        let qualname = self.unicode(key[1])?;
        let filename = self.unicode(key[0])?;
        let firstlineno = field_i32(&hdr, o.code_firstlineno);
        let table = self.bytes(key[2])?;
        let locals = self.str_tuple(field_u64(&hdr, o.code_localsplusnames));
        let co_names = self.mem.u64(addr.wrapping_add(self.layout.code_co_names)).unwrap_or(0);
        let names = self.str_tuple(co_names);
        let lines = linetable::decode(&table, firstlineno);
        let info = Arc::new(CodeInfo::from_target(qualname, filename, firstlineno, lines, key, locals, names));
        if self.codes.len() > 200_000 {
            self.codes.clear();
        }
        self.codes.insert(addr, info.clone());
        Ok(Some(info))
    }

    /// Identify the address a thread parked on (or, outside the parking lot, the futex word it
    /// sleeps on). `tid` is the waiting thread. All evidence comes from the target's memory, so
    /// it works on stripped binaries whose static functions have no names.
    pub fn probe_parked(&mut self, tid: u32, addr: u64) -> ParkedInfo {
        let o = self.offsets.clone();
        let l = self.layout;
        let mut info = ParkedInfo { addr, ..Default::default() };
        if self.tstates.get(&tid).is_some_and(|ts| ts.wrapping_add(l.ts_state) == addr) {
            info.stw_victim = true;
            return info;
        }
        if self.gil_state_range().is_some_and(|r| r.contains(&addr)) {
            info.gil = true;
            info.symbol = Some("GIL".into());
            return info;
        }
        // A per-object mutex (critical sections) sits in the FT object header; a thread lock's
        // PyMutex right after the object header.
        if let Some(ob_mutex) = l.ob_mutex {
            info.cs_object = self.object_with_type(addr.wrapping_sub(ob_mutex));
        }
        let lock_obj = addr.wrapping_sub(o.pyobject_size).wrapping_sub(l.lock_mutex_after_header);
        info.lock_object = self.object_with_type(lock_obj).filter(|(_, t)| is_lock_type(t));
        if info.lock_object.is_none() {
            if let Some(off) = l.rlock_mutex_after_header.filter(|&off| off != l.lock_mutex_after_header) {
                let obj = addr.wrapping_sub(o.pyobject_size).wrapping_sub(off);
                info.lock_object = self.object_with_type(obj).filter(|(_, t)| is_lock_type(t));
            }
        }
        if info.lock_object.is_some() {
            info.cs_object = None;
        }
        if info.cs_object.is_none() && info.lock_object.is_none() {
            info.symbol = self.runtime_symbol(addr);
        }
        info
    }

    /// `[start, end)` of the GIL state (`*interp->ceval.gil`) of the main interpreter.
    pub fn gil_state_range(&self) -> Option<std::ops::Range<u64>> {
        let o = &self.offsets;
        let interp = self.mem.u64(self.runtime.wrapping_add(o.runtime_interpreters_head)).ok()?;
        let gil = self.mem.u64(interp.wrapping_add(o.interp_ceval_gil)).ok().filter(|&g| g > 4096)?;
        Some(gil..gil.wrapping_add(self.layout.gil_state_size))
    }

    /// Whether thread `tid` holds the GIL now (`PyThreadState.holds_gil`, 3.14+).
    pub fn holds_gil(&mut self, tid: u32) -> Option<bool> {
        let off = self.layout.ts_holds_gil?;
        let Ok(true) = self.load_tstate(tid) else { return None };
        Some(field_i32(&self.ts_buf, off) != 0)
    }

    /// `(obj, type name)` when `obj` looks like a live object with a sensible type name.
    fn object_with_type(&mut self, obj: u64) -> Option<(u64, String)> {
        let ty = self.mem.u64(obj.wrapping_add(self.offsets.ob_type)).ok()?;
        Some((obj, self.type_name_cached(ty)?))
    }

    /// The name of the type at `ty`, when plausible (cached per type address).
    fn type_name_cached(&mut self, ty: u64) -> Option<String> {
        if ty < 4096 {
            return None;
        }
        if let Some(n) = self.type_names.get(&ty) {
            return Some(n.clone());
        }
        let n = self.type_name(ty).ok()?;
        let plausible =
            !n.is_empty() && n.len() < 100 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !plausible {
            return None;
        }
        self.type_names.insert(ty, n.clone());
        Some(n)
    }

    /// Name a runtime-internal address: inside `_PyRuntime` or an interpreter state.
    fn runtime_symbol(&self, addr: u64) -> Option<String> {
        let o = &self.offsets;
        let l = self.layout;
        let interp = self.mem.u64(self.runtime.wrapping_add(o.runtime_interpreters_head)).ok()?;
        if interp != 0 && addr >= interp && addr < interp.wrapping_add(o.interp_size) {
            let off = addr - interp;
            return Some(match l.interp_mutex(off).filter(|_| self.layout_exact) {
                Some(k) => format!("{k}, PyInterpreterState+{off:#x}"),
                None => format!("PyInterpreterState+{off:#x}"),
            });
        }
        if addr >= self.runtime && addr < self.runtime.wrapping_add(o.runtime_size) {
            let off = addr - self.runtime;
            return Some(match l.runtime_mutex(off).filter(|_| self.layout_exact) {
                Some(k) => format!("{k}, _PyRuntime+{off:#x}"),
                None => format!("_PyRuntime+{off:#x}"),
            });
        }
        None
    }

    /// The values in the locals and value stacks of thread `tid`'s innermost `max_frames` Python
    /// frames (tag bits stripped).
    ///
    /// With `stack_only` (3.14+), the locals (the first `len(co_localsplusnames)` slots) are left
    /// out: only what the frame's value stack holds.
    fn frame_slots(&mut self, tid: u32, max_frames: usize, stack_only: bool) -> Vec<u64> {
        let o = self.offsets.clone();
        // 3.13 keeps no reliable stack pointer in the frame during calls: all slots are read.
        let stack_only = stack_only && o.frame_stackpointer.is_some();
        let mut out = Vec::new();
        let Ok(true) = self.load_tstate(tid) else { return out };
        let mut frame = field_u64(&self.ts_buf, o.ts_current_frame);
        let base = o.ts_base_frame.map(|off| field_u64(&self.ts_buf, off)).unwrap_or(0);
        let (mut n, mut python_frames) = (0, 0);
        while frame != 0 && frame != base && n < 256 && python_frames < max_frames {
            n += 1;
            if self.mem.read(frame, &mut self.frame_buf).is_err() {
                break;
            }
            let owner = field_u8(&self.frame_buf, o.frame_owner);
            let previous = field_u64(&self.frame_buf, o.frame_previous);
            if owner < self.layout.owner_entry {
                python_frames += 1;
                let executable = field_u64(&self.frame_buf, o.frame_executable) & !3;
                let skip = if stack_only {
                    match self.code(executable) {
                        Ok(Some(c)) => c.locals.len(),
                        _ => 0,
                    }
                } else {
                    0
                };
                let base = frame.wrapping_add(o.frame_localsplus);
                let used = match o.frame_stackpointer {
                    Some(off) => (field_u64(&self.frame_buf, off).wrapping_sub(base) / 8) as i64,
                    None => self.mem.i32(base.wrapping_sub(8)).unwrap_or(0) as i64,
                };
                if stack_only && !(1..=512).contains(&used) {
                    frame = previous;
                    continue;
                }
                let slots = if (1..=512).contains(&used) { used as usize } else { 64 };
                if let Ok(raw) = self.mem.read_vec(base, slots * 8) {
                    out.extend(raw.chunks_exact(8).skip(skip).map(|c| field_u64(c, 0) & !3).filter(|&v| v >= 4096));
                }
            }
            frame = previous;
        }
        out
    }

    /// Objects that thread `tid` keeps on the value stack of one of its Python frames as a `with`
    /// block's context manager: 3.13 leaves the bound `obj.__exit__` there while the block runs,
    /// 3.14+ the pair (`__exit__`, `obj`). Locals are not looked at (any thread may have a lock
    /// in a variable). Used to find which thread holds a `threading.Lock`.
    pub fn with_block_objects(&mut self, tid: u32) -> Vec<u64> {
        // One gathered read for the slots' types, one for the bound methods' `self`: a deep
        // stack holds hundreds of slots, and one read each made the holder search slow.
        let slots = self.frame_slots(tid, 256, true);
        let ob_type = self.offsets.ob_type;
        let types = self.mem.u64_many(&slots.iter().map(|v| v.wrapping_add(ob_type)).collect::<Vec<_>>());
        let exact_stack = self.offsets.frame_stackpointer.is_some();
        let self_at = self.offsets.pyobject_size.wrapping_add(8);
        let mut out = Vec::new();
        let mut methods = Vec::new();
        for (&v, ty) in slots.iter().zip(types) {
            let Some(name) = ty.and_then(|t| self.type_name_cached(t)) else { continue };
            // 3.14+ saves the stack pointer before every call out of the eval loop, so the
            // value stack read is exact: a lock object there is a `with` block's manager.
            // (3.13's `stacktop` may be stale: only bound methods count there.)
            if is_lock_type(&name) && exact_stack {
                out.push(v);
            } else if name == "builtin_function_or_method" || name == "method" {
                methods.push(v.wrapping_add(self_at));
            }
        }
        out.extend(self.mem.u64_many(&methods).into_iter().flatten());
        out
    }

    /// The `_thread.RLock` thread `tid` is acquiring, found on its innermost Python frame (3.13
    /// RLocks wait on a private semaphore, so the parking lot does not name them).
    pub fn rlock_being_acquired(&mut self, tid: u32) -> Option<u64> {
        self.frame_slots(tid, 1, false)
            .into_iter()
            .find(|&v| self.object_with_type(v).is_some_and(|(_, t)| t == "_thread.RLock"))
    }

    /// The owner (`threading.get_ident()` of the holding thread, 0 when free) of a
    /// `_thread.RLock`: `rlock_owner` (3.13) and `_PyRecursiveMutex.thread` (3.14) both sit one
    /// word after the object header.
    pub fn rlock_owner(&self, rlock: u64) -> Option<u64> {
        let off = self.offsets.pyobject_size + self.layout.rlock_owner_after_header;
        self.mem.u64(rlock.wrapping_add(off)).ok().filter(|&t| t != 0)
    }

    /// Mutexes held through the critical sections of thread `tid` (active sections only).
    pub fn critical_sections_held(&mut self, tid: u32) -> Vec<u64> {
        let l = self.layout;
        let mut out = Vec::new();
        if !self.offsets.free_threaded {
            return out;
        }
        let Ok(true) = self.load_tstate(tid) else { return out };
        let Some(&ts) = self.tstates.get(&tid) else { return out };
        let mut tagged = self.mem.u64(ts.wrapping_add(l.ts_critical_section)).unwrap_or(0);
        for _ in 0..64 {
            let c = tagged & !3;
            if c == 0 {
                break;
            }
            let Ok(raw) = self.mem.read_vec(c, l.cs_mutex2 as usize + 8) else { break };
            let prev = field_u64(&raw, 0);
            if tagged & 1 == 0 {
                out.extend([field_u64(&raw, l.cs_mutex)].into_iter().filter(|&m| m != 0));
                if tagged & 2 != 0 {
                    out.extend([field_u64(&raw, l.cs_mutex2)].into_iter().filter(|&m| m != 0));
                }
            }
            tagged = prev;
        }
        out
    }

    /// Whether thread `tid` is entering a critical section: its innermost section is pushed but
    /// its mutex not set yet (`_PyCriticalSection_BeginSlow` sets it once `PyMutex_Lock` returns).
    /// Such a thread waits for the mutex or, if it is no longer asleep, has just been handed it.
    pub fn critical_section_pending(&mut self, tid: u32) -> bool {
        let l = self.layout;
        if !self.offsets.free_threaded {
            return false;
        }
        let Ok(true) = self.load_tstate(tid) else { return false };
        let Some(&ts) = self.tstates.get(&tid) else { return false };
        let c = self.mem.u64(ts.wrapping_add(l.ts_critical_section)).unwrap_or(0) & !3;
        c != 0 && self.mem.u64(c.wrapping_add(l.cs_mutex)).is_ok_and(|m| m == 0)
    }

    /// The thread state's `thread_id` of `tid` (`pthread_self()` of that thread), read once per
    /// thread state.
    pub fn thread_ident(&mut self, tid: u32) -> Option<u64> {
        let ts = *self.tstates.get(&tid)?;
        if let Some(&(at, ident)) = self.idents.get(&tid) {
            if at == ts {
                return Some(ident);
            }
        }
        let ident = self.mem.u64(ts.wrapping_add(self.offsets.ts_thread_id)).ok().filter(|&v| v != 0)?;
        if self.idents.len() > 100_000 {
            self.idents.clear();
        }
        self.idents.insert(tid, (ts, ident));
        Some(ident)
    }

    /// The thread state of `tid`, if it has been seen.
    pub fn tstate_of(&self, tid: u32) -> Option<u64> {
        self.tstates.get(&tid).copied()
    }

    /// The strings of a tuple of `str` (at most 256; non-strings become "?").
    fn str_tuple(&self, tuple: u64) -> Vec<String> {
        let o = &self.offsets;
        let Ok(n) = self.mem.u64(tuple.wrapping_add(o.tuple_ob_size)) else { return Vec::new() };
        let n = (n as usize).min(256);
        let Ok(items) = self.mem.read_vec(tuple.wrapping_add(o.tuple_ob_item), n * 8) else { return Vec::new() };
        items
            .chunks_exact(8)
            .map(|c| self.unicode(u64::from_le_bytes(c.try_into().unwrap())).unwrap_or_else(|_| "?".into()))
            .collect()
    }

    /// `tp_name` of a type object.
    pub fn type_name(&self, ty: u64) -> Result<String, PyError> {
        let p = self.mem.u64(ty.wrapping_add(self.offsets.tp_name))?;
        Ok(self.mem.cstr(p, 256)?)
    }

    /// Type name of the object at `obj`.
    pub fn object_type_name(&self, obj: u64) -> Result<String, PyError> {
        let ty = self.mem.u64(obj.wrapping_add(self.offsets.ob_type))?;
        self.type_name(ty)
    }

    /// Contents of a `str` object.
    pub fn unicode(&self, obj: u64) -> Result<String, PyError> {
        let o = &self.offsets;
        let mut hdr = vec![0u8; o.asciiobject_size as usize];
        self.mem.read(obj, &mut hdr)?;
        let state = field_u64(&hdr, o.unicode_state) as u32;
        let len = (field_u64(&hdr, o.unicode_length) as usize).min(4096);
        let (kind_shift, compact_bit, ascii_bit) = self.layout.unicode_state_bits;
        let kind = ((state >> kind_shift) & 7) as usize;
        if (state >> compact_bit) & 1 == 0 || !matches!(kind, 1 | 2 | 4) {
            return Ok("<?>".into());
        }
        let ascii = (state >> ascii_bit) & 1 == 1;
        let data = obj.wrapping_add(o.asciiobject_size).wrapping_add(if ascii { 0 } else { 16 });
        let raw = self.mem.read_vec(data, len * kind)?;
        Ok(match kind {
            1 => raw.iter().map(|&c| c as char).collect(),
            2 => String::from_utf16_lossy(
                &raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>(),
            ),
            _ => raw
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('?'))
                .collect(),
        })
    }

    /// Contents of a `bytes` object (capped at 1 MiB).
    pub fn bytes(&self, obj: u64) -> Result<Vec<u8>, PyError> {
        let o = &self.offsets;
        let n = (self.mem.u64(obj.wrapping_add(o.bytes_ob_size))? as usize).min(1 << 20);
        Ok(self.mem.read_vec(obj.wrapping_add(o.bytes_ob_sval), n)?)
    }
}

/// A `_thread` lock type name (`_thread.lock`, `_thread.RLock`) or another plausible lock type.
fn is_lock_type(t: &str) -> bool {
    t.starts_with("_thread.") || t.contains("lock") || t.contains("Lock")
}

/// The file that process `pid` maps under `path`, as we can open it. `path` may be as we see it
/// (from `/proc/PID/maps`: for a chrooted target, a path under its root) or as the target sees
/// it (perf's mmap records; inside a container's mount namespace). Candidates are `path`
/// itself and `/proc/PID/root/path`; the one whose inode matches the mapping wins. When the
/// process is gone (or nothing matches) the first candidate that exists is used.
pub fn target_file(pid: u32, path: &str) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let plain = std::path::PathBuf::from(path);
    if pid == 0 {
        return plain;
    }
    let rooted = std::path::PathBuf::from(format!("/proc/{pid}/root{path}"));
    let inodes: Vec<u64> = read_maps(pid)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.inode != 0 && (m.path == path || m.path.ends_with(path)))
        .map(|m| m.inode)
        .collect();
    let candidates = [plain, rooted];
    if !inodes.is_empty() {
        if let Some(c) = candidates.iter().find(|c| std::fs::metadata(c).is_ok_and(|md| inodes.contains(&md.ino()))) {
            return c.clone();
        }
    }
    let [plain, rooted] = candidates;
    if target_root(pid).is_some() && rooted.exists() || !plain.exists() {
        rooted
    } else {
        plain
    }
}

/// The root directory of `pid` as we can open it: `/proc/PID/root` when the target lives in
/// another mount namespace or chroot, `None` when it shares ours.
pub fn target_root(pid: u32) -> Option<std::path::PathBuf> {
    let theirs = Some(std::fs::read_link(format!("/proc/{pid}/root")).ok()?);
    let ours = std::fs::read_link("/proc/self/root").ok();
    let same_ns =
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == std::fs::read_link("/proc/self/ns/mnt").ok();
    if same_ns && theirs.is_some() && theirs == ours {
        return None;
    }
    Some(std::path::PathBuf::from(format!("/proc/{pid}/root")))
}

/// `path` (as the target sees it) opened through its root.
pub fn in_root(root: &Option<std::path::PathBuf>, path: &str) -> std::path::PathBuf {
    match root {
        Some(r) => r.join(path.trim_start_matches('/')),
        None => std::path::PathBuf::from(path),
    }
}

/// Thread ids of `pid` as its own PID namespace numbers them → as ours does, when the two
/// namespaces differ (`NSpid:` lines of `/proc/PID/task/TID/status`); `None` when they are the same.
pub fn namespace_tid_map(pid: u32) -> Option<HashMap<u32, u32>> {
    if std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()? == std::fs::read_link("/proc/self/ns/pid").ok()? {
        return None;
    }
    let mut map = HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let Some(line) = status.lines().find(|l| l.starts_with("NSpid:")) else { continue };
        let ids: Vec<u32> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        if let (Some(&host), Some(&inner)) = (ids.first(), ids.last()) {
            map.insert(inner, host);
        }
    }
    Some(map)
}
