//! # symbolizer — raw addresses and target memory → frames
//!
//! Job: turn what the collector captured into readable frames.
//! * [`native`]: ELF parsing (goblin), DWARF CFI / frame-pointer unwinding of a copied user stack
//!   (framehop), and inline-aware symbolization with demangling (addr2line on gimli).
//!   Input: executable mappings of a process, a register set and a stack copy, or an address.
//!   Output: return-address lists ([`native::Unwound`]) and [`native::NativeFrame`]s.
//! * [`python`]: the CPython frame reader. Input: a live process id. It locates `_PyRuntime`,
//!   validates `_Py_DebugOffsets` (3.13+/3.14+, GIL and free-threaded) and walks thread states and
//!   interpreter frames. Output: [`python::PyStack`]s of [`python::PyFrame`]s (qualname, file, line).
//! * [`kernel`]: kernel addresses → names through `/proc/kallsyms`.
//!
//! Nothing here talks to perf or renders anything.

pub mod kernel;
pub mod native;
pub mod python;
