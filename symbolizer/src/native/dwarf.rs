//! DWARF symbolization (addr2line over gimli) with inline frames, plus the per-module symbolizer
//! that falls back to ELF symbol tables and looks for separate debug files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::elf::{Bytes, ElfFile};

/// gimli reader over the memory-mapped file: no copies of the debug sections are made.
type Reader = gimli::EndianReader<gimli::LittleEndian, Bytes>;

/// One resolved (possibly inlined) function of an address; no module information.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SymFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// An addr2line context over one file's DWARF sections.
struct DwarfContext {
    ctx: addr2line::Context<Reader>,
}

impl DwarfContext {
    fn load(elf: &ElfFile) -> Option<DwarfContext> {
        if !elf.has_dwarf() {
            return None;
        }
        let empty = Reader::new(Bytes::default(), gimli::LittleEndian);
        let dwarf = gimli::Dwarf::load(|id| -> Result<Reader, gimli::Error> {
            Ok(elf
                .section_data(id.name())
                .map(|b| Reader::new(b, gimli::LittleEndian))
                .unwrap_or_else(|| empty.clone()))
        })
        .ok()?;
        addr2line::Context::from_dwarf(dwarf).ok().map(|ctx| DwarfContext { ctx })
    }

    /// Inline chain for `svma`, innermost first. Empty when DWARF does not cover the address.
    fn frames(&self, svma: u64) -> Vec<SymFrame> {
        let mut out = Vec::new();
        let Ok(mut iter) = self.ctx.find_frames(svma).skip_all_loads() else {
            return out;
        };
        // Bounded: corrupt DWARF must not make us loop forever.
        while let Ok(Some(frame)) = iter.next() {
            let function = frame.function.as_ref().and_then(|f| f.demangle().ok()).map(|name| name.into_owned());
            let (file, line) = frame.location.map(|l| (l.file.map(str::to_owned), l.line)).unwrap_or_default();
            out.push(SymFrame { function, file, line });
            if out.len() >= 128 {
                break;
            }
        }
        out
    }

    /// Every line-table row as `[start, end)`, sorted by start. Rows of the same location are
    /// not merged: where one ends, an inlined instance may begin or end.
    fn rows(&self) -> Vec<(u64, u64)> {
        let mut rows: Vec<(u64, u64)> = match self.ctx.find_location_range(0, u64::MAX) {
            Ok(iter) => iter.map(|(start, len, _)| (start, start.saturating_add(len))).collect(),
            Err(_) => Vec::new(),
        };
        rows.sort_unstable();
        rows
    }

    /// Where a function or an inlined instance of one begins or ends (the inline chain can
    /// change only there, or where a line-table row does), sorted.
    fn inline_boundaries(elf: &ElfFile) -> Vec<u64> {
        let mut out = Vec::new();
        let empty = Reader::new(Bytes::default(), gimli::LittleEndian);
        let Ok(dwarf) = gimli::Dwarf::load(|id| -> Result<Reader, gimli::Error> {
            Ok(elf
                .section_data(id.name())
                .map(|b| Reader::new(b, gimli::LittleEndian))
                .unwrap_or_else(|| empty.clone()))
        }) else {
            return out;
        };
        let mut units = dwarf.units();
        while let Ok(Some(header)) = units.next() {
            let Ok(unit) = dwarf.unit(header) else { continue };
            let mut entries = unit.entries();
            while let Ok(Some(entry)) = entries.next_dfs() {
                if !matches!(entry.tag(), gimli::DW_TAG_inlined_subroutine | gimli::DW_TAG_subprogram) {
                    continue;
                }
                if let Ok(mut ranges) = dwarf.die_ranges(&unit, entry) {
                    while let Ok(Some(r)) = ranges.next() {
                        out.extend([r.begin, r.end]);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn location(&self, svma: u64) -> (Option<String>, Option<u32>) {
        match self.ctx.find_location(svma) {
            Ok(Some(l)) => (l.file.map(str::to_owned), l.line),
            _ => (None, None),
        }
    }
}

/// Symbolizer for one ELF module: DWARF (own or from a separate debug file) first, then the
/// symbol tables. The DWARF context is built lazily on the first lookup.
pub(crate) struct ModuleSymbolizer {
    elf: Arc<ElfFile>,
    path: PathBuf,
    debug: Option<DebugData>,
    /// See [`ModuleSymbolizer::set_separate_dwarf`].
    separate_dwarf: bool,
}

struct DebugData {
    dwarf: Option<DwarfContext>,
    /// Separate debug file (`/usr/lib/debug/...`), used for DWARF and for its `.symtab`; or the
    /// ELF inside `.gnu_debugdata` (MiniDebugInfo, symbols only).
    debug_file: Option<ElfFile>,
}

impl ModuleSymbolizer {
    pub fn new(elf: Arc<ElfFile>, path: PathBuf) -> Self {
        ModuleSymbolizer { elf, path, debug: None, separate_dwarf: true }
    }

    /// Whether DWARF from a separate debug file is parsed (inline chains and source lines) or
    /// only its symbol table (names). Parsing a large, often compressed, debug file (a libc's)
    /// costs tens of MB and ~100 ms; names are what most libraries' frames need.
    pub fn set_separate_dwarf(&mut self, on: bool) {
        self.separate_dwarf = on;
    }

    /// What symbolizing this module depends on besides the file itself: whether a separate
    /// debug file's DWARF is parsed, and which debug files exist now (path, inode, modification
    /// time; a few `stat`s, nothing parsed). Installing a `-dbg` package changes it.
    pub fn debug_identity(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        use std::os::unix::fs::MetadataExt;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.separate_dwarf.hash(&mut h);
        if !self.elf.has_dwarf() {
            for c in debug_candidates(&self.elf, &self.path) {
                let md = std::fs::metadata(&c).ok();
                (c, md.as_ref().map(|m| (m.ino(), m.mtime(), m.size()))).hash(&mut h);
            }
        }
        h.finish()
    }

    pub fn elf(&self) -> &Arc<ElfFile> {
        &self.elf
    }

    /// Load the debug data now (it is otherwise loaded on the first lookup).
    pub fn warm(&mut self) {
        self.debug_data();
    }

    fn debug_data(&mut self) -> &mut DebugData {
        let elf = &self.elf;
        let path = &self.path;
        let separate = self.separate_dwarf;
        self.debug.get_or_insert_with(|| {
            // A separate debug file when there is one; else the MiniDebugInfo symbol table.
            let debug_file =
                if elf.has_dwarf() { None } else { find_debug_file(elf, path).or_else(|| elf.mini_debuginfo()) };
            let dwarf = match &debug_file {
                Some(d) if separate => DwarfContext::load(d),
                Some(_) => None,
                None => DwarfContext::load(elf),
            };
            DebugData { dwarf, debug_file }
        })
    }

    /// The line-table rows of the module's own DWARF (see [`DwarfContext::rows`]); `None`
    /// when it has none (a separate debug file's is not indexed).
    pub fn line_rows(&mut self) -> Option<Vec<(u64, u64)>> {
        let debug = self.debug_data();
        if debug.debug_file.is_some() {
            return None;
        }
        let rows = debug.dwarf.as_ref().map(DwarfContext::rows)?;
        // Split where an inlined instance (or a function) begins or ends inside a row.
        let bounds = DwarfContext::inline_boundaries(&self.elf);
        let mut out = Vec::with_capacity(rows.len());
        for (start, end) in rows {
            let mut from = start;
            let first = bounds.partition_point(|&b| b <= start);
            for &b in bounds[first..].iter().take_while(|&&b| b < end) {
                out.push((from, b));
                from = b;
            }
            out.push((from, end));
        }
        Some(out)
    }

    /// Inline chain for `svma`, innermost first; never empty (one unnamed frame when unknown).
    pub fn symbolize(&mut self, svma: u64) -> Vec<SymFrame> {
        let elf = self.elf.clone();
        let debug = self.debug_data();

        let mut frames = debug.dwarf.as_ref().map(|d| d.frames(svma)).unwrap_or_default();
        if frames.is_empty() {
            let (file, line) = debug.dwarf.as_ref().map(|d| d.location(svma)).unwrap_or_default();
            frames.push(SymFrame { function: None, file, line });
        }
        // The outer (non-inlined) function: fill a missing name from the symbol tables.
        let outer = frames.last_mut().expect("non-empty");
        if outer.function.is_none() {
            outer.function = debug
                .debug_file
                .as_ref()
                .and_then(|d| d.function_at(svma))
                .or_else(|| elf.function_at(svma))
                .map(|(name, _)| demangle(name))
                .or_else(|| anonymous_function(&elf, &self.path, svma));
        }
        frames
    }
}

/// The label of a function that no symbol names (a static function of a stripped binary, with
/// no debug file): its module and start address from `.eh_frame`, e.g. `[python3.14+0x6dfc30]`.
/// Samples in one such function share the label, so flamegraphs still group them.
pub fn anonymous_function(elf: &ElfFile, path: &Path, svma: u64) -> Option<String> {
    let start = elf.fde_start(svma)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // `/proc/PID/map_files/…` names say nothing: fall back to the address alone.
    let name = if name.contains('-') && name.chars().all(|c| c.is_ascii_hexdigit() || c == '-') { "" } else { &name };
    Some(format!("[{name}+{start:#x}]"))
}

/// Demangles Rust (legacy and v0) and C++ symbol names; other names are returned unchanged,
/// including GCC clone suffixes such as `foo.cold` or `foo.constprop.0`.
pub fn demangle(name: &str) -> String {
    addr2line::demangle_auto(name.into(), None).into_owned()
}

/// Finds a separate debug file for `elf` (by build id, then by `.gnu_debuglink`), following
/// the GDB conventions under `/usr/lib/debug`.
///
/// For a file opened through another process's root (`/proc/PID/root/usr/bin/python3`), the
/// debug directory of that root is searched first (a container's own debug packages), then ours
/// (by build id only: a build id names the exact file).
fn find_debug_file(elf: &ElfFile, path: &Path) -> Option<ElfFile> {
    let build_id = elf.build_id();
    debug_candidates(elf, path).into_iter().filter_map(|c| ElfFile::open(&c).ok()).find(|d| {
        (d.has_dwarf() || d.has_function_symbols())
            && (build_id.is_none() || d.build_id().is_none() || d.build_id() == build_id)
    })
}

/// The files that may hold `elf`'s separate debug data (by build id, then by debug link), in
/// the order they are tried; only those that exist.
fn debug_candidates(elf: &ElfFile, path: &Path) -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    let build_id = elf.build_id();
    // `/proc/PID/root` prefix, when the file lives in a target's root.
    let (root, inner) = split_proc_root(path);
    let debug_dirs: Vec<PathBuf> = match &root {
        Some(r) => vec![r.join("usr/lib/debug"), PathBuf::from("/usr/lib/debug")],
        None => vec![PathBuf::from("/usr/lib/debug")],
    };
    if let Some(id) = build_id.as_deref().filter(|id| id.len() > 1) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        for d in &debug_dirs {
            candidates.push(d.join(format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..])));
        }
    }
    if let (Some(link), Some(dir)) = (elf.debuglink(), path.parent()) {
        candidates.push(dir.join(link));
        candidates.push(dir.join(".debug").join(link));
        let inner_dir = inner.parent().unwrap_or(Path::new("/"));
        let rel = inner_dir.strip_prefix("/").unwrap_or(inner_dir);
        candidates.push(debug_dirs[0].join(rel).join(link));
    }
    candidates.into_iter().filter(|c| c != path && c.is_file()).collect()
}

/// `/proc/PID/root/usr/bin/x` → (`Some(/proc/PID/root)`, `/usr/bin/x`); other paths unchanged.
fn split_proc_root(path: &Path) -> (Option<PathBuf>, PathBuf) {
    let s = path.to_string_lossy();
    if let Some(rest) = s.strip_prefix("/proc/") {
        if let Some((pid, tail)) = rest.split_once('/') {
            if pid.chars().all(|c| c.is_ascii_digit()) {
                if let Some(inner) = tail.strip_prefix("root/") {
                    return (Some(PathBuf::from(format!("/proc/{pid}/root"))), PathBuf::from(format!("/{inner}")));
                }
            }
        }
    }
    (None, path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_rust_cpp_and_keeps_c_names() {
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"), "core::ptr::drop_in_place");
        assert_eq!(demangle("_PyEval_EvalFrameDefault"), "_PyEval_EvalFrameDefault");
        assert_eq!(demangle("foo.cold"), "foo.cold");
        assert_eq!(demangle("foo.constprop.0"), "foo.constprop.0");
        assert_eq!(demangle("_Zgarbage"), "_Zgarbage");
    }

    const C: &str = r#"
#include <stdio.h>
static __attribute__((noinline)) int helper(int x) {
    return x * 7 + 1;
}
int main(int argc, char **argv) { printf("%d\n", helper(argc)); return 0; }
"#;

    fn run(cmd: &mut std::process::Command) {
        let st = cmd.status().unwrap();
        assert!(st.success(), "{cmd:?}");
    }

    #[test]
    fn compressed_debug_sections_are_read() {
        let dir = crate::native::test_support::compile_c("gz", C, &["-O1", "-g", "-gz=zlib"], "prog");
        let path = dir.join("prog");
        let elf = Arc::new(ElfFile::open(&path).unwrap());
        assert!(elf.has_dwarf(), "zlib-compressed .debug_info is decompressed");
        let (helper, _) = elf.symbol("helper").unwrap();
        let mut sym = ModuleSymbolizer::new(elf, path);
        let f = sym.symbolize(helper + 1);
        let last = f.last().unwrap();
        assert_eq!(last.function.as_deref(), Some("helper"));
        assert!(last.file.as_deref().is_some_and(|f| f.ends_with("gz.c")), "{f:?}");
        assert_eq!(last.line, Some(4), "{f:?}");
    }

    #[test]
    fn mini_debuginfo_names_static_functions_of_a_stripped_binary() {
        let dir = crate::native::test_support::compile_c("mini", C, &["-O2"], "full");
        let full = ElfFile::open(&dir.join("full")).unwrap();
        let (helper, _) = full.symbol("helper").unwrap();
        // As distributions make it: the symbol table, xz-compressed, in `.gnu_debugdata` of the
        // stripped binary.
        run(std::process::Command::new("objcopy").arg("--strip-debug").arg(dir.join("full")).arg(dir.join("syms")));
        run(std::process::Command::new("xz").arg("-k").arg(dir.join("syms")));
        let mut section = std::ffi::OsString::from(".gnu_debugdata=");
        section.push(dir.join("syms.xz"));
        run(std::process::Command::new("objcopy")
            .arg("--strip-all")
            .arg("--add-section")
            .arg(section)
            .arg(dir.join("full"))
            .arg(dir.join("stripped")));
        let stripped = Arc::new(ElfFile::open(&dir.join("stripped")).unwrap());
        assert!(!stripped.has_symtab() && stripped.function_at(helper + 1).is_none());
        assert!(stripped.mini_debuginfo().is_some_and(|m| m.symbol("helper").is_some()));
        let mut sym = ModuleSymbolizer::new(stripped, dir.join("stripped"));
        assert_eq!(sym.symbolize(helper + 1).last().unwrap().function.as_deref(), Some("helper"));
    }

    #[test]
    fn proc_root_paths() {
        let (root, inner) = split_proc_root(Path::new("/proc/42/root/usr/bin/python3.14"));
        assert_eq!(root.as_deref(), Some(Path::new("/proc/42/root")));
        assert_eq!(inner, Path::new("/usr/bin/python3.14"));
        assert_eq!(split_proc_root(Path::new("/usr/bin/python3")).0, None);
    }
}
