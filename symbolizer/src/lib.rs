//! # symbolizer — raw addresses and target memory → frames
//!
//! Job: turn what the collector captured into readable frames.
//! * [`native`]: ELF parsing (goblin), DWARF CFI / frame-pointer unwinding of a copied user stack
//!   (framehop), and inline-aware symbolization with demangling (addr2line on gimli).
//!   Input: executable mappings of a process, a register set and a stack copy, or an address.
//!   Output: return-address lists ([`native::Unwound`]) and [`native::NativeFrame`]s. Stripped
//!   binaries: `.dynsym`, split-off function parts and unnamed functions from `.eh_frame`.
//! * [`python`]: the CPython frame reader. Input: a live process id (or any
//!   [`python::ReadMemory`], e.g. a synthetic [`python::FakeMemory`] image in tests). It locates
//!   `_PyRuntime`, validates `_Py_DebugOffsets` (3.13, 3.14, 3.15 — each with its own field list —
//!   GIL and free-threaded; newer minors are refused), takes the rest of each version's layout from
//!   [`python::Layout`], and walks thread states and interpreter frames. Output:
//!   [`python::PyStack`]s of [`python::PyFrame`]s (qualname, file, line) and
//!   [`python::ParkedInfo`] (what a blocked thread waits on, from memory).
//! * [`kernel`]: kernel addresses → names through `/proc/kallsyms`.
//!
//! The frame and stack types it outputs ([`native::NativeFrame`], [`python::PyStack`],
//! [`python::PyFrame`], [`python::CodeInfo`], [`python::ParkedInfo`], [`python::ObjectRef`]) are
//! defined in the `frames` crate, which has no ELF/DWARF code, and re-exported here from their
//! usual paths: analysis and the renderers depend on `frames` alone.
//!
//! Nothing here talks to perf or renders anything; the register set it unwinds from is the
//! collector's own type (`profiler::Regs`), so the two never need converting.

pub mod kernel;
pub mod native;
pub mod python;
