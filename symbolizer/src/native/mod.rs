//! Native (machine-code) side: ELF parsing, DWARF CFI unwinding of copied user stacks, and
//! inline-aware symbolization with demangling.
//!
//! [`Native`] tracks the executable mappings of each profiled process and keeps one parsed
//! module per file, shared by all processes. Every file is parsed once; symbolization results
//! are cached per (module, address); unwind rules are cached by framehop.

mod dwarf;
mod elf;
mod lineindex;
mod maps;
mod unwind;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use framehop::Unwinder as _;

pub use dwarf::demangle;
pub use elf::{ElfFile, LoadSegment, SectionInfo};
pub use maps::{parse_map_line, parse_maps, MapLine};
pub use unwind::MAX_DEPTH;

use dwarf::ModuleSymbolizer;
use unwind::{CodeKind, ProcessUnwinder, UnwindCache};

/// One file-backed executable mapping of a process (from PERF_RECORD_MMAP2 or /proc/PID/maps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
    pub path: String,
}

/// x86-64 user registers as the collector captured them (the one `Regs` type of ftprof); the
/// unwinder starts from `ip`, `sp` and `bp`.
pub use profiler::Regs;

/// Result of unwinding one sample.
#[derive(Clone, Debug, Default)]
pub struct Unwound {
    /// addrs[0] is the sampled ip; the rest are return addresses, innermost first.
    pub addrs: Vec<u64>,
    /// true when unwinding reached the outermost frame (no caller / return address 0 / _start /
    /// clone3 thread entry), false when it stopped early (stack copy exhausted, missing CFI,
    /// unreadable memory, max depth).
    pub complete: bool,
}

/// Symbolized frames and the module name of unmapped addresses live in the `frames` crate (no
/// ELF/DWARF code there, so analysis and the renderers need not depend on this crate).
pub use frames::native::{NativeFrame, UNKNOWN_MODULE};

/// Symbolization cache entries kept before the cache is reset (bounds memory).
const SYM_CACHE_LIMIT: usize = 1 << 20;

type ModuleId = usize;

/// Identity of a module file: its path plus, when it could be stat'ed, inode and mtime, so a
/// file replaced on disk (rebuild, upgrade) is parsed anew.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ModuleKey {
    path: String,
    dev: u64,
    ino: u64,
    mtime: i64,
}

struct ModuleEntry {
    /// Display name: the mapping path this module was first seen under.
    name: String,
    /// `None` when the file could not be opened or parsed: its frames stay unresolved.
    sym: Option<ModuleSymbolizer>,
    /// The file's symbolized addresses kept between runs (see [`Native::set_persistent_cache`]):
    /// `None` until first needed.
    disk: Option<DiskCache>,
    /// Where its disk caches live, less the DWARF choice (known once it is used); `None` when
    /// it has none (no cache directory, a vDSO, a file that could not be identified).
    disk_file: Option<(PathBuf, u64, u64)>,
    /// Its line index (see [`Native::build_line_index`]): where it lives (the cache directory,
    /// the file's identity less its path, this build's), and once looked for, what was found.
    index_at: Option<(PathBuf, u64, u64)>,
    index: Option<Option<lineindex::LineIndex>>,
}

/// Symbolized addresses of one module file (svma → inline chain), as read from its cache file
/// and added to in this run.
#[derive(Default)]
struct DiskCache {
    frames: HashMap<u64, Vec<NativeFrame>>,
    /// The addresses decoded in this run, to be appended to the file.
    added: Vec<u64>,
}

/// The disk cache file of a module (`dir`, the module file's identity hash, this build's)
/// symbolized with the debug data `debug` ([`ModuleSymbolizer::debug_identity`]).
fn disk_path((dir, module, build): &(PathBuf, u64, u64), debug: u64) -> PathBuf {
    dir.join(format!("{}{build:016x}-{debug:016x}.jsonl", disk_prefix(2, *module)))
}

/// What the names of every disk cache file of one module file start with, in the cache
/// format `version` (1: one JSON array, rewritten whole at each run, removed when the module's
/// version-2 file is created; 2: one JSON line per address, appended to).
fn disk_prefix(version: u32, module: u64) -> String {
    format!("symcache-v{version}-{module:016x}-")
}

impl DiskCache {
    /// The cache file's entries (one JSON line each: `[address, frames]`); none when it is
    /// missing or unreadable, and a line that does not parse (one a crash cut short) is skipped.
    fn read(file: &Path) -> DiskCache {
        let text = std::fs::read(file).unwrap_or_default();
        let frames = text
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<(u64, Vec<NativeFrame>)>(line).ok())
            .collect();
        DiskCache { frames, added: Vec::new() }
    }

    /// Append this run's entries to `file` in one write (`O_APPEND`: runs that save at the same
    /// time do not overwrite each other's lines), so that a save costs what the run added, not
    /// the whole cache. `fresh` runs before the file is created.
    fn append(&mut self, file: &Path, fresh: impl FnOnce()) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom, Write};
        if self.added.is_empty() {
            return Ok(());
        }
        self.added.sort_unstable();
        self.added.dedup();
        let mut text = Vec::new();
        for svma in self.added.drain(..) {
            if let Some(frames) = self.frames.get(&svma) {
                serde_json::to_writer(&mut text, &(svma, frames)).map_err(std::io::Error::other)?;
                text.push(b'\n');
            }
        }
        if !file.exists() {
            fresh();
        }
        if let Some(d) = file.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut f = std::fs::File::options().create(true).append(true).read(true).open(file)?;
        // A file a crash left without its last line's end: start on a line of our own.
        let len = f.metadata()?.len();
        if len > 0 {
            let mut last = [0u8];
            f.seek(SeekFrom::Start(len - 1))?;
            f.read_exact(&mut last)?;
            if last[0] != b'\n' {
                text.insert(0, b'\n');
            }
        }
        f.write_all(&text)
    }
}

/// Entries a module's disk cache keeps at most (a bound on its file).
const DISK_CACHE_LIMIT: usize = 100_000;

/// Line indexes kept per module file, this build's included (each ~13 MB for an interpreter).
const INDEXES_KEPT: usize = 3;

/// The line index file of a module (see [`ModuleEntry::index_at`]). Only a file's own DWARF
/// is indexed, so no debug file's identity is part of the name.
fn index_path((dir, module, build): &(PathBuf, u64, u64)) -> PathBuf {
    dir.join(format!("{}{build:016x}.bin", index_prefix(*module)))
}

/// What the names of every line index file of one module file start with.
fn index_prefix(module: u64) -> String {
    format!("lineidx-v1-{module:016x}-")
}

impl ModuleEntry {
    /// The inline chain of `svma` from the module's line index, when it has one that covers it
    /// (the index is mapped at the first call).
    fn indexed(&mut self, svma: u64) -> Option<Vec<dwarf::SymFrame>> {
        self.line_index()?.lookup(svma)
    }

    /// The module's line index, mapped at the first call; `None` when it has none.
    fn line_index(&mut self) -> Option<&lineindex::LineIndex> {
        let (at, sym) = (&self.index_at, &self.sym);
        self.index
            .get_or_insert_with(|| {
                sym.as_ref().filter(|s| s.elf().has_dwarf())?;
                lineindex::LineIndex::open(&index_path(at.as_ref()?))
            })
            .as_ref()
    }
}

/// One mapping of a process, resolved to its module.
struct ProcMap {
    mapping: Mapping,
    module: Option<ModuleId>,
    /// Load bias: runtime address = svma + bias.
    bias: u64,
    /// The module has DWARF CFI (`.eh_frame` or `.debug_frame`).
    has_cfi: bool,
}

#[derive(Default)]
struct Process {
    /// Sorted by start, non-overlapping.
    maps: Vec<ProcMap>,
    unwinder: ProcessUnwinder,
}

impl Process {
    fn find(&self, addr: u64) -> Option<&ProcMap> {
        find_map(&self.maps, addr)
    }
}

fn find_map(maps: &[ProcMap], addr: u64) -> Option<&ProcMap> {
    let i = maps.partition_point(|pm| pm.mapping.start <= addr);
    maps.get(i.checked_sub(1)?).filter(|pm| addr < pm.mapping.end)
}

/// Per-process address space knowledge + the module cache shared by all processes.
pub struct Native {
    processes: HashMap<u32, Process>,
    modules: Vec<ModuleEntry>,
    module_ids: HashMap<ModuleKey, ModuleId>,
    unwind_cache: UnwindCache,
    /// Used for processes we know no mappings of (frame-pointer unwinding only).
    empty_unwinder: ProcessUnwinder,
    sym_cache: HashMap<(ModuleId, u64), Vec<NativeFrame>>,
    /// Parse DWARF of separate debug files for every module (else only for preloaded ones).
    separate_dwarf: bool,
    /// The directory of the per-module disk caches, and what identifies this build of the
    /// symbolizer in their names.
    persistent: Option<(PathBuf, u64)>,
    /// See [`Native::decoded`].
    decoded: usize,
}

impl Default for Native {
    fn default() -> Self {
        Self::new()
    }
}

// `Native` is moved into a worker thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Native>();
};

impl Native {
    pub fn new() -> Native {
        Native {
            processes: HashMap::new(),
            modules: Vec::new(),
            module_ids: HashMap::new(),
            unwind_cache: UnwindCache::new(),
            empty_unwinder: ProcessUnwinder::new(),
            sym_cache: HashMap::new(),
            separate_dwarf: true,
            persistent: None,
            decoded: 0,
        }
    }

    /// Keep what is symbolized between runs, one file per module in `dir` (created when
    /// needed), named after the module file's identity (path, device, inode, modification
    /// time), whether its separate DWARF is parsed, and this build of ftprof (its own
    /// executable's size and modification time): a changed file, or another ftprof, never reads
    /// another's answers. Modules opened from now on use it; [`Native::save_persistent_cache`]
    /// writes what was added. Symbolizing the same addresses again (the interpreter's start-up
    /// and its hot paths, run after run) then costs no DWARF decoding.
    pub fn set_persistent_cache(&mut self, dir: PathBuf) {
        use std::hash::{Hash, Hasher};
        use std::os::unix::fs::MetadataExt;
        let Ok(md) = std::fs::metadata("/proc/self/exe") else { return };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (md.size(), md.mtime(), md.mtime_nsec(), md.ino()).hash(&mut h);
        self.persistent = Some((dir, h.finish()));
    }

    /// Write the disk caches that gained entries in this run (see
    /// [`Native::set_persistent_cache`]). Failures are ignored: the cache only saves time.
    pub fn save_persistent_cache(&mut self) {
        for entry in &mut self.modules {
            let (Some(disk), Some(sym)) = (entry.disk.as_mut(), entry.sym.as_ref()) else { continue };
            let Some(at) = entry.disk_file.as_ref() else { continue };
            let file = disk_path(at, sym.debug_identity());
            // Another build's or another debug file's answers for this module are stale now.
            let remove_stale = || {
                let prefixes = [disk_prefix(2, at.1), disk_prefix(1, at.1)];
                for old in std::fs::read_dir(&at.0).into_iter().flatten().flatten() {
                    let name = old.file_name();
                    let name = name.to_string_lossy();
                    if prefixes.iter().any(|p| name.starts_with(p.as_str())) && old.path() != file {
                        let _ = std::fs::remove_file(old.path());
                    }
                }
            };
            let _ = disk.append(&file, remove_stale);
        }
    }

    /// Index the DWARF of the file `path` (opened here if need be) into the cache directory
    /// (see [`Native::set_persistent_cache`]), unless done before: later runs answer its
    /// addresses without parsing debug data. Returns the rows indexed and the time it took;
    /// `None` when there was nothing to do (indexed already, no DWARF of its own, no cache).
    /// Of the same file's indexes by other ftprof builds, the newest two are kept.
    pub fn build_line_index(&mut self, path: &str) -> Option<(usize, std::time::Duration)> {
        let t = std::time::Instant::now();
        let m = Mapping { start: 0, end: 1, pgoff: 0, path: path.to_string() };
        let id = self.resolve_module(0, &m)?;
        let entry = &mut self.modules[id];
        if entry.line_index().is_some() {
            return None;
        }
        let at = entry.index_at.clone()?;
        let sym = entry.sym.as_mut()?;
        if !sym.elf().has_dwarf() {
            return None;
        }
        let file = index_path(&at);
        let rows = lineindex::build(sym, &file)?;
        // Other builds' indexes of the same file are kept (two ftprof builds used in turn must
        // not rebuild each other's), the newest few only.
        let prefix = index_prefix(at.1);
        let mut others: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&at.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix) && e.path() != file)
            .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH), e.path()))
            .collect();
        others.sort_unstable_by(|a, b| b.cmp(a));
        for (_, old) in others.into_iter().skip(INDEXES_KEPT - 1) {
            let _ = std::fs::remove_file(old);
        }
        entry.index = None;
        Some((rows, t.elapsed()))
    }

    /// With `false`, modules opened from now on take only names (the symbol table) from a
    /// separate debug file, not its DWARF, unless they are preloaded with `full_debug`: the
    /// inline chains of a distribution's libc are rarely worth its tens of MB of DWARF.
    pub fn set_separate_dwarf(&mut self, on: bool) {
        self.separate_dwarf = on;
    }

    /// Record an executable mapping of process `pid`. Non-file paths (`[vdso]`, `//anon`, `""`)
    /// are kept as modules without symbols (except `[vdso]`, which is resolved from this
    /// process's own vDSO image). A later mapping that overlaps earlier ones replaces them.
    pub fn add_mapping(&mut self, pid: u32, m: Mapping) {
        if m.end <= m.start || self.mapping_for(pid, m.start) == Some(&m) {
            return;
        }
        let module = self.resolve_module(pid, &m);
        let elf = module.and_then(|id| self.modules[id].sym.as_ref()).map(|s| s.elf().clone());
        let bias = elf.as_ref().map_or(0, |e| e.bias_for_mapping(m.start, m.pgoff));

        let Process { maps, unwinder } = self.processes.entry(pid).or_default();
        maps.retain(|pm| {
            let overlaps = pm.mapping.start < m.end && m.start < pm.mapping.end;
            if overlaps {
                unwinder.remove_module(pm.mapping.start);
            }
            !overlaps
        });
        let mut has_cfi = false;
        if let Some(elf) = &elf {
            let (module, cfi) = unwind::framehop_module(elf, &m.path, m.start..m.end, bias);
            unwinder.add_module(module);
            has_cfi = cfi;
        }
        let at = maps.partition_point(|pm| pm.mapping.start < m.start);
        maps.insert(at, ProcMap { mapping: m, module, bias, has_cfi });
    }

    /// Load all executable mappings of a live process from /proc/PID/maps (for attach and as a
    /// fallback).
    pub fn load_proc_maps(&mut self, pid: u32) -> std::io::Result<()> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
        for m in maps::parse_proc_maps(&text) {
            self.add_mapping(pid, m);
        }
        Ok(())
    }

    /// Which mapping (and module path) holds `addr` in `pid`.
    pub fn mapping_for(&self, pid: u32, addr: u64) -> Option<&Mapping> {
        self.processes.get(&pid)?.find(addr).map(|pm| &pm.mapping)
    }

    /// The parsed ELF file mapped at `addr` in `pid`, with its load bias
    /// (runtime address = svma + bias).
    pub fn elf_for(&self, pid: u32, addr: u64) -> Option<(Arc<ElfFile>, u64)> {
        let pm = self.processes.get(&pid)?.find(addr)?;
        let sym = self.modules[pm.module?].sym.as_ref()?;
        Some((sym.elf().clone(), pm.bias))
    }

    /// Unwind one sample. `stack` is the copy of user memory starting at `regs.sp`. Uses DWARF
    /// CFI (eh_frame, eh_frame_hdr, debug_frame) with frame-pointer fallback; never panics on
    /// garbage input; at most [`MAX_DEPTH`] frames. A return address outside every known
    /// executable mapping ends the walk (incomplete); `complete` requires that the last frame
    /// was in a module with CFI.
    pub fn unwind(&mut self, pid: u32, regs: Regs, stack: &[u8]) -> Unwound {
        let (unwinder, maps) = match self.processes.get(&pid) {
            Some(p) => (&p.unwinder, &p.maps[..]),
            None => (&self.empty_unwinder, &[][..]),
        };
        let classify = |addr| match find_map(maps, addr) {
            Some(pm) if pm.has_cfi => CodeKind::Cfi,
            Some(_) => CodeKind::NoCfi,
            // Without any known mapping, frame-pointer unwinding is all we can do.
            None if maps.is_empty() => CodeKind::NoCfi,
            None => CodeKind::Unknown,
        };
        unwind::unwind(unwinder, &mut self.unwind_cache, regs, stack, classify)
    }

    /// Symbolize one address of `pid`. For return addresses `addr - 1` is looked up so the call
    /// site is found. Returns the inline chain innermost first; the last element is the outer,
    /// non-inlined function. Never empty. Cached per (module, offset).
    pub fn symbolize(&mut self, pid: u32, addr: u64, is_return_address: bool) -> Vec<NativeFrame> {
        let lookup = if is_return_address { addr.saturating_sub(1) } else { addr };
        let unresolved = |module: &str, module_offset| NativeFrame {
            function: None,
            file: None,
            line: None,
            module: module.to_owned(),
            module_offset,
            inlined: false,
        };
        let Some(pm) = self.processes.get(&pid).and_then(|p| p.find(lookup)) else {
            return vec![unresolved(UNKNOWN_MODULE, lookup)];
        };
        let Some(id) = pm.module.filter(|&id| self.modules[id].sym.is_some()) else {
            let offset = (lookup - pm.mapping.start).wrapping_add(pm.mapping.pgoff);
            return vec![unresolved(&pm.mapping.path, offset)];
        };
        let svma = lookup.wrapping_sub(pm.bias);
        self.frames_of(id, svma)
    }

    /// Where address `addr` of process `pid` lies: the path of its file as mapped and its svma
    /// there (what [`Native::warm_address`] takes). `None` outside a file with symbols.
    pub fn module_address(&self, pid: u32, addr: u64, is_return_address: bool) -> Option<(String, u64)> {
        let lookup = if is_return_address { addr.saturating_sub(1) } else { addr };
        let pm = self.processes.get(&pid)?.find(lookup)?;
        pm.module.filter(|&id| self.modules[id].sym.is_some())?;
        Some((pm.mapping.path.clone(), lookup.wrapping_sub(pm.bias)))
    }

    /// Symbolize `svma` of the file opened earlier under `path` (by [`Native::preload_with`])
    /// ahead of its lookup: [`Native::symbolize`] then finds it in the cache. A file not opened
    /// yet is left alone (nothing is opened here).
    pub fn warm_address(&mut self, path: &str, svma: u64) {
        let Some(id) = self.module_ids.iter().find(|(k, _)| k.path == path).map(|(_, &id)| id) else { return };
        if self.modules[id].sym.is_some() {
            self.frames_of(id, svma);
        }
    }

    /// The inline chain of `svma` in module `id`: from this run's cache, the module's disk
    /// cache, its line index, or its debug data (then cached in both caches).
    fn frames_of(&mut self, id: ModuleId, svma: u64) -> Vec<NativeFrame> {
        if let Some(frames) = self.sym_cache.get(&(id, svma)) {
            return frames.clone();
        }

        let entry = &mut self.modules[id];
        if let (Some(file), Some(sym)) = (&entry.disk_file, &entry.sym) {
            let disk = entry.disk.get_or_insert_with(|| DiskCache::read(&disk_path(file, sym.debug_identity())));
            if let Some(frames) = disk.frames.get(&svma).filter(|f| !f.is_empty()) {
                let frames = frames.clone();
                self.sym_cache.insert((id, svma), frames.clone());
                return frames;
            }
        }
        let indexed = entry.indexed(svma);
        let from_index = indexed.is_some();
        let raw = match indexed {
            Some(raw) => raw,
            None => {
                self.decoded += 1;
                entry.sym.as_mut().map(|s| s.symbolize(svma)).unwrap_or_default()
            }
        };
        let n = raw.len();
        let frames: Vec<NativeFrame> = raw
            .into_iter()
            .enumerate()
            .map(|(i, f)| NativeFrame {
                function: f.function,
                file: f.file,
                line: f.line,
                module: entry.name.clone(),
                module_offset: svma,
                inlined: i + 1 < n,
            })
            .collect();
        if self.sym_cache.len() >= SYM_CACHE_LIMIT {
            self.sym_cache.clear();
        }
        // The index answers again next time: only what the debug data decoded is kept.
        if let Some(disk) = entry.disk.as_mut().filter(|d| !from_index && d.frames.len() < DISK_CACHE_LIMIT) {
            disk.frames.insert(svma, frames.clone());
            disk.added.push(svma);
        }
        self.sym_cache.insert((id, svma), frames.clone());
        frames
    }

    /// Like [`Native::symbolize`], but from the ELF symbol tables only: one frame (the enclosing
    /// function, no inlining, no source lines) and no DWARF parsing — for quick looks such as
    /// `ftprof dump` that need function names, not source positions.
    pub fn symbolize_quick(&mut self, pid: u32, addr: u64, is_return_address: bool) -> NativeFrame {
        let lookup = if is_return_address { addr.saturating_sub(1) } else { addr };
        let mut frame = NativeFrame {
            function: None,
            file: None,
            line: None,
            module: UNKNOWN_MODULE.to_owned(),
            module_offset: lookup,
            inlined: false,
        };
        let Some(pm) = self.processes.get(&pid).and_then(|p| p.find(lookup)) else { return frame };
        frame.module = pm.mapping.path.clone();
        frame.module_offset = (lookup - pm.mapping.start).wrapping_add(pm.mapping.pgoff);
        let Some(sym) = pm.module.and_then(|id| self.modules[id].sym.as_ref()) else { return frame };
        let svma = lookup.wrapping_sub(pm.bias);
        frame.module_offset = svma;
        frame.function = sym
            .elf()
            .function_at(svma)
            .map(|(name, _)| demangle(name))
            .or_else(|| dwarf::anonymous_function(sym.elf(), std::path::Path::new(&pm.mapping.path), svma));
        frame
    }

    /// How many addresses were looked up in debug data (found in no cache) since this was
    /// created: what symbolizing cost beyond cache reads.
    pub fn decoded(&self) -> usize {
        self.decoded
    }

    /// Forget a process (when it exits). Parsed modules stay cached for other processes.
    pub fn remove_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Parse `path` and its debug data ahead of time (e.g. in a background thread while the
    /// target runs), and symbolize `warm_symbols` so the compilation units that most samples
    /// land in are decoded. Later mappings of the same file reuse all of it.
    pub fn preload(&mut self, path: &str, warm_symbols: &[&str]) {
        self.preload_with(path, warm_symbols, true)
    }

    /// [`Native::preload`], choosing whether a separate debug file's DWARF is parsed (see
    /// [`Native::set_separate_dwarf`]).
    pub fn preload_with(&mut self, path: &str, warm_symbols: &[&str], full_debug: bool) {
        let m = Mapping { start: 0, end: 1, pgoff: 0, path: path.to_string() };
        let Some(id) = self.resolve_module(0, &m) else {
            return;
        };
        let entry = &mut self.modules[id];
        let Some(sym) = entry.sym.as_mut() else {
            return;
        };
        if full_debug {
            sym.set_separate_dwarf(true);
        }
        if let Some(file) = &entry.disk_file {
            // What earlier runs symbolized (read here, in the background, rather than at the
            // first lookup).
            entry.disk = Some(DiskCache::read(&disk_path(file, sym.debug_identity())));
        }
        // Indexed: no debug data to parse (an address the index does not cover parses it then).
        if entry.line_index().is_some() {
            return;
        }
        let Some(sym) = entry.sym.as_mut() else { return };
        sym.warm();
        for name in warm_symbols {
            if let Some((addr, _)) = sym.elf().symbol(name) {
                sym.symbolize(addr);
            }
        }
    }

    /// Finds or opens the module for mapping `m` of `pid`. `None` for non-file mappings.
    fn resolve_module(&mut self, pid: u32, m: &Mapping) -> Option<ModuleId> {
        if m.path == "[vdso]" {
            let key = ModuleKey { path: m.path.clone(), dev: 0, ino: 0, mtime: 0 };
            return Some(self.module_id(key, &m.path, || {
                let elf = ElfFile::from_bytes(maps::own_vdso_image()?).ok()?;
                Some((Arc::new(elf), PathBuf::from("[vdso]")))
            }));
        }
        if m.path.is_empty() || m.path.starts_with('[') || m.path.starts_with("//") {
            return None;
        }
        // The file as this process sees it, then through the target's mount namespace, then
        // (for deleted or replaced files) the kernel's handle on the mapping itself.
        let clean = m.path.strip_suffix(" (deleted)").unwrap_or(&m.path);
        // A target in another mount namespace or chroot (a container) sees other files under
        // the same paths: `target_file` finds the one it maps.
        let candidates = [
            crate::python::target_file(pid, clean),
            PathBuf::from(clean),
            PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)),
        ];
        for candidate in candidates {
            let Ok(md) = std::fs::metadata(&candidate) else {
                continue;
            };
            let key = ModuleKey { path: m.path.clone(), dev: md.dev(), ino: md.ino(), mtime: md.mtime() };
            return Some(self.module_id(key, &m.path, || {
                let elf = ElfFile::open_shared(&candidate).ok()?;
                Some((elf, candidate.clone()))
            }));
        }
        let key = ModuleKey { path: m.path.clone(), dev: 0, ino: 0, mtime: 0 };
        Some(self.module_id(key, &m.path, || None))
    }

    /// The id for `key`, opening the module with `open` on first sight (a failed open is
    /// remembered as a module without symbols).
    fn module_id(
        &mut self,
        key: ModuleKey,
        name: &str,
        open: impl FnOnce() -> Option<(Arc<ElfFile>, PathBuf)>,
    ) -> ModuleId {
        if let Some(&id) = self.module_ids.get(&key) {
            return id;
        }
        let separate_dwarf = self.separate_dwarf;
        let sym = open().map(|(elf, path)| {
            let mut s = ModuleSymbolizer::new(elf, path);
            s.set_separate_dwarf(separate_dwarf);
            s
        });
        let disk_file = match &self.persistent {
            Some((dir, build)) if key.ino != 0 && sym.is_some() => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (&key.path, key.dev, key.ino, key.mtime).hash(&mut h);
                Some((dir.clone(), h.finish(), *build))
            }
            _ => None,
        };
        let index_at = disk_file.as_ref().map(|(dir, _, build)| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (key.dev, key.ino, key.mtime).hash(&mut h);
            (dir.clone(), h.finish(), *build)
        });
        let id = self.modules.len();
        self.modules.push(ModuleEntry { name: name.to_owned(), sym, disk: None, disk_file, index_at, index: None });
        self.module_ids.insert(key, id);
        id
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers shared by the tests of this module.

    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A scratch directory, removed on drop.
    pub struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Compiles C `source` with gcc and `flags` into `<tempdir>/<output>`; returns the dir.
    pub fn compile_c(tag: &str, source: &str, flags: &[&str], output: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ftprof-native-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        let src = dir.join(format!("{tag}.c"));
        std::fs::write(&src, source).unwrap();
        let out = Command::new("gcc").args(flags).arg("-o").arg(dir.join(output)).arg(&src).output().expect("run gcc");
        assert!(out.status.success(), "gcc failed: {}", String::from_utf8_lossy(&out.stderr));
        dir
    }

    /// The free-threaded CPython: `$FTPROF_PYTHON` (set by `scripts/test.sh`), else what
    /// `scripts/provision-python.sh` provisions (it builds and caches one when needed); a test
    /// that needs it fails, with the reason, when neither works.
    pub fn python_binary() -> PathBuf {
        if let Some(p) = std::env::var_os("FTPROF_PYTHON") {
            let p = PathBuf::from(p);
            assert!(p.exists(), "FTPROF_PYTHON={} does not exist", p.display());
            return p;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/provision-python.sh");
        let out = Command::new("bash").arg(&script).output().expect("run scripts/provision-python.sh");
        assert!(
            out.status.success(),
            "no free-threaded CPython: scripts/provision-python.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }
}
