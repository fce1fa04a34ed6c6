//! Native (machine-code) frames, as the symbolizer (`symbolizer::native`) resolves them.

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NativeFrame {
    /// Demangled (Rust and C++) function name; `None` when unknown.
    pub function: Option<String>,
    /// Source file from DWARF line info, when known.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Path of the mapped ELF file (`"[unknown]"` when no mapping holds the address).
    pub module: String,
    /// Address relative to the module: the file's virtual address (svma) of the looked-up
    /// address (`addr - 1` for return addresses). When the file could not be opened, the file
    /// offset instead; with no mapping at all, the absolute address.
    pub module_offset: u64,
    /// True for frames that were inlined into their caller.
    pub inlined: bool,
}

/// Module name used for addresses outside every known mapping.
pub const UNKNOWN_MODULE: &str = "[unknown]";
