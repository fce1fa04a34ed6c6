//! ELF parsing: sections, load segments, symbol tables and raw data reads.
//!
//! An [`ElfFile`] is parsed once (the file is memory-mapped; symbol names are read where they lie
//! in it, and the symbol index is built on first use), so it can be shared (`Arc<ElfFile>`) by
//! the unwinder and the symbolizer.

use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use goblin::container::Ctx;
use goblin::elf::dynamic::{Dynamic, DT_NEEDED};
use goblin::elf::program_header::ProgramHeader;
use goblin::elf::section_header::SectionHeader;
use goblin::elf::{header, note, program_header, section_header, sym, Elf, Symtab};

/// The bytes behind an [`ElfFile`]: a read-only file mapping or an owned copy (e.g. the vDSO).
pub(crate) enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// A cheaply clonable, address-stable sub-slice of an ELF file's bytes.
///
/// Used as section data for framehop and as the `gimli::EndianReader` storage for DWARF.
#[derive(Clone)]
pub(crate) struct Bytes {
    data: Arc<Backing>,
    start: usize,
    end: usize,
}

/// An empty slice (stands in for absent sections).
impl Default for Bytes {
    fn default() -> Bytes {
        Bytes { data: Arc::new(Backing::Owned(Vec::new())), start: 0, end: 0 }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({}..{})", self.start, self.end)
    }
}

// SAFETY: the bytes live behind an `Arc` (a mapping or a heap buffer that is never mutated), so
// moving or cloning a `Bytes` never changes the address its `deref` returns.
unsafe impl gimli::StableDeref for Bytes {}
unsafe impl gimli::CloneStableDeref for Bytes {}

/// Address, file offset and size of one section (`sh_addr`, `sh_offset`, `sh_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub executable: bool,
}

struct Section {
    name: String,
    info: SectionInfo,
    /// `SHT_NOBITS` (e.g. `.bss`, or stripped-out code in a separate debug file).
    nobits: bool,
    /// `SHF_COMPRESSED`: the contents need decompression (zlib is supported).
    compressed: bool,
}

/// One defined symbol; its name is read from the file's string table where it lies.
struct Symbol {
    /// File offset and length of the name (valid UTF-8, checked when collected).
    name_at: usize,
    name_len: u32,
    value: u64,
    size: u64,
    func: bool,
    global: bool,
}

/// Where a symbol table (`.symtab` or `.dynsym`) and its string table lie in the file.
#[derive(Clone, Copy, Debug)]
struct Table {
    offset: usize,
    count: usize,
    /// File offset and size of the linked string table.
    strings: (usize, usize),
}

/// The symbols of a file, indexed on first use (the unwinder, which opens every mapped file,
/// never needs them).
struct SymbolIndex {
    /// All defined, named symbols of `.symtab` and `.dynsym`, sorted by name (then value).
    symbols: Vec<Symbol>,
    /// Indices into `symbols` of function symbols, sorted by address, one per address.
    funcs_by_addr: Vec<u32>,
}

/// See [`ElfFile::peek`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peek {
    pub needed: Vec<String>,
    /// A `.PyRuntime` section or a `_PyRuntime` symbol.
    pub py_runtime: bool,
    /// `Py_Version` (PY_VERSION_HEX), when the file defines it.
    pub py_version: Option<u32>,
    /// The file offset of `_PyInterpreterState_SetRunningMain`, when the file defines it (an
    /// interpreter whose runtime is linked in): its `pymain_run_python` calls it once, after the
    /// start-up and just before the program's own code (the command, module or file); a launch
    /// can be held there. (`Py_RunMain` itself is inlined into `Py_BytesMain` by the usual
    /// optimized builds: never executed.)
    pub main_start: Option<u64>,
}

/// A parsed ELF file. See the module docs.
pub struct ElfFile {
    data: Arc<Backing>,
    is_exec: bool,
    sections: Vec<Section>,
    loads: Vec<LoadSegment>,
    /// `.symtab` and `.dynsym`, and how to read their entries.
    tables: [Option<Table>; 2],
    ctx: Ctx,
    /// The symbols, indexed on first use.
    index: std::sync::OnceLock<SymbolIndex>,
    needed: Vec<String>,
    build_id: Option<Vec<u8>>,
    debuglink: Option<String>,
    /// The file has a full symbol table (`.symtab`), not only the exported `.dynsym`.
    has_symtab: bool,
    /// Unnamed code that belongs to a named function, for files without `.symtab` (built on
    /// first use): see [`ElfFile::split_parts`].
    split_parts: std::sync::OnceLock<Vec<SplitPart>>,
    /// `.eh_frame` FDE ranges, sorted (built on first use).
    fdes: std::sync::OnceLock<Vec<(u64, u64)>>,
}

/// One piece of a function that the compiler moved away from its symbol (GCC's hot/cold
/// splitting, `-freorder-blocks-and-partition`, PGO's `.text.hot`/`.text.unlikely`): an
/// `.eh_frame` FDE range with no symbol of its own, reached by jumps from inside the function.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SplitPart {
    start: u64,
    end: u64,
    /// Index into `symbols` of the function the part belongs to.
    parent: u32,
}

impl fmt::Debug for ElfFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElfFile")
            .field("len", &self.data.len())
            .field("sections", &self.sections.len())
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl ElfFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: &Path) -> anyhow::Result<ElfFile> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        // SAFETY: read-only private mapping. If the file is truncated underneath us, accesses
        // may fault; that is the accepted risk of every mmap-based symbolizer.
        let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mmap {}", path.display()))?;
        Self::from_backing(Backing::Mmap(map)).with_context(|| format!("parse {}", path.display()))
    }

    /// What a check before launch needs of an executable, without indexing its symbols (which
    /// the first symbol lookup of an [`ElfFile`] does, milliseconds for an interpreter with a
    /// symbol table):
    /// its `DT_NEEDED` entries, whether it has a `.PyRuntime` section or a `_PyRuntime`
    /// symbol, and the 4 bytes of its `Py_Version` symbol.
    pub fn peek(path: &Path) -> anyhow::Result<Peek> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        // SAFETY: read-only private mapping, as in `open`.
        let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mmap {}", path.display()))?;
        let bytes: &[u8] = &map;
        let layout = Layout::parse(bytes)?;
        let find = |name: &str| {
            let [symtab, dynsym] = layout.tables();
            let named = |t: &Table, s: &goblin::elf::Sym| cstr(bytes, t.strings, s.st_name) == Some(name);
            let dynamic = dynsym.and_then(|t| layout.symtab(t)?.iter().find(|s| named(&t, s)));
            dynamic.or_else(|| symtab.and_then(|t| layout.symtab(t)?.iter().find(|s| named(&t, s) && s.st_value != 0)))
        };
        let offset = |vaddr: u64, len: u64| {
            let ph = layout.phdrs.iter().find(|ph| {
                ph.p_type == program_header::PT_LOAD && vaddr >= ph.p_vaddr && vaddr + len <= ph.p_vaddr + ph.p_filesz
            })?;
            usize::try_from(ph.p_offset + (vaddr - ph.p_vaddr)).ok()
        };
        let read = |vaddr: u64, len: u64| {
            let start = offset(vaddr, len)?;
            bytes.get(start..start + len as usize).map(<[u8]>::to_vec)
        };
        let has_section = layout.shdrs.iter().any(|sh| layout.section_name(sh) == ".PyRuntime");
        Ok(Peek {
            needed: layout.needed(),
            py_runtime: has_section || find("_PyRuntime").is_some(),
            py_version: find("Py_Version")
                .filter(|s| s.st_value != 0)
                .and_then(|s| read(s.st_value, 4))
                .and_then(|b| Some(u32::from_le_bytes(b.try_into().ok()?))),
            main_start: find("_PyInterpreterState_SetRunningMain")
                .filter(|s| s.st_value != 0 && s.st_type() == goblin::elf::sym::STT_FUNC)
                .and_then(|s| offset(s.st_value, 1))
                .map(|o| o as u64),
        })
    }

    /// [`ElfFile::open`] through a process-wide cache keyed by path, device, inode and mtime,
    /// so the interpreter check, the Python runtime locator and the symbolizer parse each file
    /// once.
    pub fn open_shared(path: &Path) -> anyhow::Result<Arc<ElfFile>> {
        use std::os::unix::fs::MetadataExt;
        type Cache = std::collections::HashMap<(std::path::PathBuf, u64, u64, i64), Arc<ElfFile>>;
        static CACHE: std::sync::OnceLock<std::sync::Mutex<Cache>> = std::sync::OnceLock::new();
        let md = std::fs::metadata(path).with_context(|| format!("open {}", path.display()))?;
        let key = (path.to_path_buf(), md.dev(), md.ino(), md.mtime());
        let cache = CACHE.get_or_init(Default::default);
        if let Some(elf) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(elf.clone());
        }
        let elf = Arc::new(ElfFile::open(path)?);
        cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, elf.clone());
        Ok(elf)
    }

    /// Parses an ELF image held in memory (e.g. a copy of the vDSO).
    pub fn from_bytes(bytes: Vec<u8>) -> anyhow::Result<ElfFile> {
        Self::from_backing(Backing::Owned(bytes))
    }

    fn from_backing(backing: Backing) -> anyhow::Result<ElfFile> {
        let data = Arc::new(backing);
        let bytes: &[u8] = &data;
        let layout = Layout::parse(bytes)?;

        let sections = layout
            .shdrs
            .iter()
            .map(|sh| Section {
                name: layout.section_name(sh).to_owned(),
                info: SectionInfo { addr: sh.sh_addr, offset: sh.sh_offset, size: sh.sh_size },
                nobits: sh.sh_type == section_header::SHT_NOBITS,
                compressed: sh.sh_flags & u64::from(section_header::SHF_COMPRESSED) != 0,
            })
            .collect();

        let loads = layout
            .phdrs
            .iter()
            .filter(|ph| ph.p_type == program_header::PT_LOAD)
            .map(|ph| LoadSegment {
                vaddr: ph.p_vaddr,
                memsz: ph.p_memsz,
                offset: ph.p_offset,
                filesz: ph.p_filesz,
                executable: ph.p_flags & program_header::PF_X != 0,
            })
            .collect();

        let tables = layout.tables();
        let has_symtab =
            tables[0].and_then(|t| layout.symtab(t)).is_some_and(|t| t.iter().any(|s| s.st_type() == sym::STT_FUNC));
        let mut file = ElfFile {
            is_exec: layout.header.e_type == header::ET_EXEC,
            needed: layout.needed(),
            build_id: layout.build_id(),
            data: data.clone(),
            sections,
            loads,
            tables,
            ctx: layout.ctx,
            index: std::sync::OnceLock::new(),
            debuglink: None,
            has_symtab,
            split_parts: std::sync::OnceLock::new(),
            fdes: std::sync::OnceLock::new(),
        };
        file.debuglink = file.section_data(".gnu_debuglink").and_then(|d| {
            let name = d.split(|&b| b == 0).next()?;
            (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
        });
        Ok(file)
    }

    /// The section header named `name` (the first one, if there are several).
    pub fn section(&self, name: &str) -> Option<SectionInfo> {
        self.find_section(name).map(|s| s.info)
    }

    /// `(st_value, st_size)` of the symbol `name` from `.symtab` or `.dynsym`; a global definition
    /// is preferred over local ones of the same name.
    pub fn symbol(&self, name: &str) -> Option<(u64, u64)> {
        let symbols = &self.index().symbols;
        let lo = symbols.partition_point(|s| self.name_bytes(s) < name.as_bytes());
        let same = symbols[lo..].iter().take_while(|s| self.name_bytes(s) == name.as_bytes());
        let mut best = None;
        for s in same {
            if s.global {
                return Some((s.value, s.size));
            }
            best.get_or_insert((s.value, s.size));
        }
        best
    }

    /// File bytes backing the virtual address range `[vaddr, vaddr + len)`, when it lies inside
    /// the file-backed part of one `PT_LOAD` segment.
    pub fn read_vaddr(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let end = vaddr.checked_add(len as u64)?;
        let seg = self.loads.iter().find(|s| vaddr >= s.vaddr && end <= s.vaddr.saturating_add(s.filesz))?;
        let start = usize::try_from(seg.offset.checked_add(vaddr - seg.vaddr)?).ok()?;
        self.data.get(start..start.checked_add(len)?)
    }

    /// `DT_NEEDED` entries (shared libraries this file links against).
    pub fn needed(&self) -> Vec<String> {
        self.needed.clone()
    }

    /// The GNU build id (`NT_GNU_BUILD_ID` note), if present.
    pub fn build_id(&self) -> Option<Vec<u8>> {
        self.build_id.clone()
    }

    /// Load bias for a mapping of this file that starts at `map_start` with file offset `pgoff`:
    /// `runtime address = svma + bias` (wrapping arithmetic).
    pub fn bias_for_mapping(&self, map_start: u64, pgoff: u64) -> u64 {
        // The segment whose file range contains `pgoff` (segment offsets need not be page
        // aligned, so compare against the page-aligned start). Prefer executable segments.
        let covers = |s: &&LoadSegment| pgoff >= s.offset & !0xfff && pgoff < s.offset.saturating_add(s.filesz.max(1));
        let seg = self.loads.iter().filter(covers).find(|s| s.executable).or_else(|| self.loads.iter().find(covers));
        match seg {
            // The svma that corresponds to file offset `pgoff`, i.e. to `map_start`.
            Some(s) => map_start.wrapping_sub(s.vaddr.wrapping_add(pgoff).wrapping_sub(s.offset)),
            None if self.is_exec => 0,
            None => map_start.wrapping_sub(pgoff),
        }
    }

    /// All `PT_LOAD` segments.
    pub fn load_segments(&self) -> &[LoadSegment] {
        &self.loads
    }

    /// The function symbol covering `svma`: the nearest preceding `STT_FUNC`/`STT_GNU_IFUNC`
    /// symbol, rejected when it has a size and `svma` lies past its end. Returns `(name, start)`;
    /// the name is raw (not demangled).
    ///
    /// In a file without `.symtab` (a stripped distribution binary) an address in a split-off
    /// part of an exported function (see [`ElfFile::split_parts`]) is named after that function,
    /// with the part's start as `start`.
    pub fn function_at(&self, svma: u64) -> Option<(&str, u64)> {
        let SymbolIndex { symbols, funcs_by_addr } = self.index();
        let covering = funcs_by_addr.partition_point(|&i| symbols[i as usize].value <= svma);
        if let Some(&i) = covering.checked_sub(1).and_then(|c| funcs_by_addr.get(c)) {
            let s = &symbols[i as usize];
            if s.size == 0 || svma < s.value.saturating_add(s.size) {
                return Some((self.name(s), s.value));
            }
        }
        if self.has_symtab {
            return None;
        }
        let parts = self.split_parts();
        let i = parts.partition_point(|p| p.start <= svma);
        let p = parts.get(i.checked_sub(1)?).filter(|p| svma < p.end)?;
        Some((self.name(&symbols[p.parent as usize]), p.start))
    }

    /// Split-off parts of exported functions, sorted by start. A part is an `.eh_frame` FDE
    /// that holds no function symbol, entered by direct `jmp`/`jcc`s from the function (or from
    /// one of its parts) and corroborated either by two such jumps past its first byte or by a
    /// jump back into the function (a tail call to another function has neither). On Debian's
    /// PGO builds of CPython the hot loop of `_PyEval_EvalFrameDefault` is such a part: the
    /// exported symbol covers only its entry and exception paths; GCC's `.cold` parts are others.
    fn split_parts(&self) -> &[SplitPart] {
        self.split_parts.get_or_init(|| {
            let SymbolIndex { symbols, funcs_by_addr } = self.index();
            let unnamed: Vec<(u64, u64)> = self
                .fde_ranges()
                .iter()
                .copied()
                .filter(|&(start, end)| {
                    let i = funcs_by_addr.partition_point(|&i| symbols[i as usize].value < start);
                    funcs_by_addr.get(i).is_none_or(|&f| symbols[f as usize].value >= end)
                })
                .collect();
            let fde_of = |target: u64| {
                let k = unnamed.partition_point(|r| r.0 <= target);
                k.checked_sub(1).filter(|&k| target < unnamed[k].1)
            };
            let mut owner: std::collections::HashMap<usize, u32> = std::collections::HashMap::new();
            for &fi in funcs_by_addr {
                let f = &symbols[fi as usize];
                if f.size == 0 || f.size > 1 << 20 {
                    continue;
                }
                // The function's pieces so far, and the pieces still to scan.
                let mut pieces: Vec<(u64, u64)> = vec![(f.value, f.value + f.size)];
                let mut next = 0;
                while next < pieces.len() && pieces.len() <= 16 {
                    let (lo, hi) = pieces[next];
                    next += 1;
                    let Some(code) = self.read_vaddr(lo, (hi - lo) as usize) else { continue };
                    // Jumps from this piece into unnamed FDEs: (fde, target).
                    let mut hits: Vec<(usize, u64)> = branch_targets(code, lo)
                        .filter(|&(_, t)| !pieces.iter().any(|&(a, b)| t >= a && t < b))
                        .filter_map(|(_, t)| Some((fde_of(t)?, t)))
                        .collect();
                    hits.sort_unstable();
                    hits.dedup();
                    for group in hits.chunk_by(|a, b| a.0 == b.0) {
                        let k = group[0].0;
                        if owner.contains_key(&k) {
                            continue;
                        }
                        let (start, end) = unnamed[k];
                        let interior = group.iter().filter(|(_, t)| *t > start).count();
                        let jumps_back = || {
                            self.read_vaddr(start, (end - start) as usize).is_some_and(|c| {
                                branch_targets(c, start).any(|(_, t)| pieces.iter().any(|&(a, b)| t > a && t < b))
                            })
                        };
                        if interior >= 2 || jumps_back() {
                            owner.insert(k, fi);
                            pieces.push((start, end));
                        }
                    }
                }
            }
            let mut parts: Vec<SplitPart> = owner
                .into_iter()
                .map(|(k, parent)| SplitPart { start: unnamed[k].0, end: unnamed[k].1, parent })
                .collect();
            parts.sort_by_key(|p| p.start);
            parts
        })
    }

    /// `[start, end)` of every FDE in `.eh_frame`, sorted.
    pub fn fde_ranges(&self) -> &[(u64, u64)] {
        self.fdes.get_or_init(|| self.parse_fde_ranges())
    }

    /// Whether the file has a full symbol table (`.symtab`).
    pub fn has_symtab(&self) -> bool {
        self.has_symtab
    }

    /// Start of the code that `.eh_frame` describes as one function around `svma` — how an
    /// unnamed (static, stripped) function is identified.
    pub fn fde_start(&self, svma: u64) -> Option<u64> {
        let fdes = self.fde_ranges();
        let i = fdes.partition_point(|r| r.0 <= svma);
        fdes.get(i.checked_sub(1)?).filter(|r| svma < r.1).map(|r| r.0)
    }

    fn parse_fde_ranges(&self) -> Vec<(u64, u64)> {
        use gimli::UnwindSection;
        let (Some(data), Some(info)) = (self.section_data(".eh_frame"), self.section(".eh_frame")) else {
            return Vec::new();
        };
        let eh = gimli::EhFrame::new(&data, gimli::LittleEndian);
        let mut bases = gimli::BaseAddresses::default().set_eh_frame(info.addr);
        if let Some(text) = self.section(".text") {
            bases = bases.set_text(text.addr);
        }
        let mut out = Vec::new();
        let mut entries = eh.entries(&bases);
        while let Ok(Some(entry)) = entries.next() {
            if let gimli::CieOrFde::Fde(partial) = entry {
                if let Ok(fde) = partial.parse(|_, b, o| eh.cie_from_offset(b, o)) {
                    let start = fde.initial_address();
                    if fde.len() > 0 {
                        out.push((start, start.saturating_add(fde.len())));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The `.gnu_debuglink` file name, if any.
    pub fn debuglink(&self) -> Option<&str> {
        self.debuglink.as_deref()
    }

    /// Whether this file carries DWARF debug info ftprof can read (uncompressed, or zlib),
    /// told from the section headers: nothing is decompressed here.
    pub fn has_dwarf(&self) -> bool {
        let Some(s) = self.find_section(".debug_info") else { return false };
        let start = usize::try_from(s.info.offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(s.info.size).unwrap_or(usize::MAX));
        if s.nobits || s.info.size == 0 || end > self.data.len() {
            return false;
        }
        // Elf64_Chdr.ch_type: 1 = ELFCOMPRESS_ZLIB.
        !s.compressed || self.data.get(start..start + 4) == Some(&1u32.to_le_bytes()[..])
    }

    /// Whether the file has any function symbols.
    pub fn has_function_symbols(&self) -> bool {
        !self.index().funcs_by_addr.is_empty()
    }

    /// The symbol index, collected on first use. Never waits for another thread collecting it
    /// (the preload thread runs at idle priority; the recorder's thread must not wait for it):
    /// both collect, the first to finish is kept.
    fn index(&self) -> &SymbolIndex {
        if let Some(index) = self.index.get() {
            return index;
        }
        let _ = self.index.set(collect_symbols(&self.data, self.ctx, &self.tables));
        self.index.get().expect("set above or by another thread")
    }

    fn name_bytes(&self, s: &Symbol) -> &[u8] {
        &self.data[s.name_at..s.name_at + s.name_len as usize]
    }

    /// A symbol's name (checked to be UTF-8 when collected).
    fn name(&self, s: &Symbol) -> &str {
        std::str::from_utf8(self.name_bytes(s)).unwrap_or("")
    }

    fn find_section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Contents of section `name`, decompressed when it is `SHF_COMPRESSED` with zlib
    /// (`gcc -gz`, `objcopy --compress-debug-sections`); `None` when absent, `SHT_NOBITS`, out of
    /// range, or compressed in another format (zstd).
    pub(crate) fn section_data(&self, name: &str) -> Option<Bytes> {
        let s = self.find_section(name)?;
        if s.nobits {
            return None;
        }
        let start = usize::try_from(s.info.offset).ok()?;
        let end = start.checked_add(usize::try_from(s.info.size).ok()?)?;
        if end > self.data.len() {
            return None;
        }
        if !s.compressed {
            return Some(Bytes { data: self.data.clone(), start, end });
        }
        // Elf64_Chdr: ch_type (1 = ELFCOMPRESS_ZLIB), ch_reserved, ch_size, ch_addralign.
        let raw = &self.data[start..end];
        let ch_type = u32::from_le_bytes(raw.get(0..4)?.try_into().ok()?);
        let ch_size = u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
        if ch_type != 1 || ch_size > 1 << 32 {
            return None;
        }
        let out = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(raw.get(24..)?, ch_size as usize).ok()?;
        let len = out.len();
        Some(Bytes { data: Arc::new(Backing::Owned(out)), start: 0, end: len })
    }

    /// The MiniDebugInfo of this file (Fedora and others): the xz-compressed ELF in
    /// `.gnu_debugdata`, whose `.symtab` names the functions `.dynsym` leaves out.
    pub fn mini_debuginfo(&self) -> Option<ElfFile> {
        let data = self.section_data(".gnu_debugdata")?;
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut std::io::Cursor::new(&data[..]), &mut out).ok()?;
        ElfFile::from_bytes(out).ok()
    }

    /// `sh_addr` range of section `name`.
    pub(crate) fn section_range(&self, name: &str) -> Option<std::ops::Range<u64>> {
        let s = self.find_section(name)?;
        Some(s.info.addr..s.info.addr.saturating_add(s.info.size))
    }
}

/// Targets of the direct near jumps (`e9 rel32`, `0f 80..8f rel32`)
/// found by scanning `code` (loaded at `addr`) byte by byte, with the
/// offset of each. A byte scan also sees patterns inside other instructions; callers require
/// corroboration (several jumps to one place) before trusting a target.
fn branch_targets(code: &[u8], addr: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
    (0..code.len()).filter_map(move |i| {
        let rel32 = |at: usize| code.get(at..at + 4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64);
        let (len, rel) = match code[i] {
            0xe9 => (5, rel32(i + 1)?),
            0x0f if code.get(i + 1).is_some_and(|b| (0x80..=0x8f).contains(b)) => (6, rel32(i + 2)?),
            _ => return None,
        };
        Some((i, (addr + i as u64 + len).wrapping_add(rel as u64)))
    })
}

/// The first parse of an ELF file: its header, program and section headers, read without
/// indexing its symbols or its string tables (goblin's `Elf::parse` splits every string table
/// into a vector: milliseconds for an interpreter's `.strtab`).
struct Layout<'a> {
    bytes: &'a [u8],
    header: goblin::elf::Header,
    ctx: Ctx,
    phdrs: Vec<ProgramHeader>,
    shdrs: Vec<SectionHeader>,
    /// File offset and size of the section names (`.shstrtab`).
    shstr: (usize, usize),
}

impl<'a> Layout<'a> {
    fn parse(bytes: &'a [u8]) -> anyhow::Result<Layout<'a>> {
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            bail!("not an ELF file");
        }
        let header = Elf::parse_header(bytes).context("malformed ELF header")?;
        if header.e_ident[header::EI_DATA] != header::ELFDATA2LSB {
            bail!("big-endian ELF is not supported");
        }
        let ctx = Ctx::new(header.container().context("malformed ELF")?, header.endianness().context("malformed ELF")?);
        let phdrs = ProgramHeader::parse(bytes, header.e_phoff as usize, header.e_phnum as usize, ctx)
            .context("malformed ELF program headers")?;
        // A file without section headers (or with unreadable ones) still has its segments.
        let shdrs = if header.e_shoff == 0 {
            Vec::new()
        } else {
            SectionHeader::parse(bytes, header.e_shoff as usize, header.e_shnum as usize, ctx).unwrap_or_default()
        };
        let shstr =
            shdrs.get(header.e_shstrndx as usize).map_or((0, 0), |sh| (sh.sh_offset as usize, sh.sh_size as usize));
        Ok(Layout { bytes, header, ctx, phdrs, shdrs, shstr })
    }

    fn section_name(&self, sh: &SectionHeader) -> &'a str {
        cstr(self.bytes, self.shstr, sh.sh_name).unwrap_or("")
    }

    /// `.symtab` (the last one, as readers do) and `.dynsym`, from the section headers.
    fn tables(&self) -> [Option<Table>; 2] {
        let table = |kind: u32| {
            let sh = self.shdrs.iter().rfind(|sh| sh.sh_type == kind)?;
            let strings = self.shdrs.get(sh.sh_link as usize)?;
            Some(Table {
                offset: usize::try_from(sh.sh_offset).ok()?,
                count: usize::try_from(sh.sh_size.checked_div(sh.sh_entsize)?).ok()?,
                strings: (usize::try_from(strings.sh_offset).ok()?, usize::try_from(strings.sh_size).ok()?),
            })
        };
        [table(section_header::SHT_SYMTAB), table(section_header::SHT_DYNSYM)]
    }

    fn symtab(&self, t: Table) -> Option<Symtab<'a>> {
        Symtab::parse(self.bytes, t.offset, t.count, self.ctx).ok()
    }

    /// `DT_NEEDED` entries.
    fn needed(&self) -> Vec<String> {
        let Ok(Some(dynamic)) = Dynamic::parse(self.bytes, &self.phdrs, self.ctx) else { return Vec::new() };
        let strings = (dynamic.info.strtab, dynamic.info.strsz);
        dynamic
            .dyns
            .iter()
            .filter(|d| d.d_tag == DT_NEEDED)
            .filter_map(|d| cstr(self.bytes, strings, usize::try_from(d.d_val).ok()?))
            .map(str::to_owned)
            .collect()
    }

    /// The GNU build id, from a `PT_NOTE` segment or an `SHT_NOTE` section.
    fn build_id(&self) -> Option<Vec<u8>> {
        let mut elf = Elf::lazy_parse(self.header).ok()?;
        elf.program_headers = self.phdrs.clone();
        elf.section_headers = self.shdrs.clone();
        elf.iter_note_headers(self.bytes)
            .into_iter()
            .flatten()
            .chain(elf.iter_note_sections(self.bytes, None).into_iter().flatten())
            .flatten()
            .find(|n| n.n_type == note::NT_GNU_BUILD_ID && n.name == "GNU")
            .map(|n| n.desc.to_vec())
    }
}

/// The NUL-terminated UTF-8 string at index `at` of the string table at `(offset, size)`.
fn cstr(bytes: &[u8], (offset, size): (usize, usize), at: usize) -> Option<&str> {
    let table = bytes.get(offset..offset.checked_add(size)?)?;
    let rest = table.get(at..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&rest[..len]).ok()
}

/// Collects defined symbols from `.symtab` and `.dynsym`, sorted by name, and the by-address
/// index of function symbols. Names stay in the file: a symbol holds its name's offset.
fn collect_symbols(bytes: &[u8], ctx: Ctx, tables: &[Option<Table>; 2]) -> SymbolIndex {
    let mut symbols = Vec::with_capacity(tables.iter().flatten().map(|t| t.count).sum());
    for t in tables.iter().flatten() {
        let Ok(table) = Symtab::parse(bytes, t.offset, t.count, ctx) else { continue };
        for s in table.iter() {
            let kind = s.st_type();
            if s.st_shndx == section_header::SHN_UNDEF as usize || matches!(kind, sym::STT_SECTION | sym::STT_FILE) {
                continue;
            }
            let Some(name) = cstr(bytes, t.strings, s.st_name).filter(|n| !n.is_empty()) else {
                continue;
            };
            let bind = s.st_bind();
            symbols.push(Symbol {
                name_at: name.as_ptr() as usize - bytes.as_ptr() as usize,
                name_len: u32::try_from(name.len()).unwrap_or(0),
                value: s.st_value,
                size: s.st_size,
                func: matches!(kind, sym::STT_FUNC | sym::STT_GNU_IFUNC),
                global: matches!(bind, sym::STB_GLOBAL | sym::STB_WEAK | sym::STB_GNU_UNIQUE),
            });
        }
    }
    let name = |s: &Symbol| &bytes[s.name_at..s.name_at + s.name_len as usize];
    // Sort by name and value; merge duplicates (the same symbol in both tables).
    symbols.sort_unstable_by(|a, b| (name(a), a.value).cmp(&(name(b), b.value)));
    symbols.dedup_by(|later, kept| {
        let same = name(later) == name(kept) && later.value == kept.value;
        if same {
            kept.size = kept.size.max(later.size);
            kept.global |= later.global;
            kept.func |= later.func;
        }
        same
    });

    // One function symbol per address: prefer sized, then global ones.
    let mut funcs: Vec<u32> = (0..symbols.len() as u32).filter(|&i| symbols[i as usize].func).collect();
    funcs.sort_by_key(|&i| {
        let s = &symbols[i as usize];
        (s.value, s.size == 0, !s.global)
    });
    funcs.dedup_by_key(|i| symbols[*i as usize].value);
    SymbolIndex { symbols, funcs_by_addr: funcs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{compile_c, python_binary};

    const RUNTIME_C: &str = r#"
#include <stdio.h>
__attribute__((used, section(".PyRuntime"))) char runtime_blob[64] = "xdebugpy";
const unsigned long Py_Version = 0x030d05f0;
__attribute__((noinline)) int work(int x) { return x * 3 + (int)Py_Version; }
int main(int argc, char **argv) { printf("%d %s\n", work(argc), runtime_blob); return 0; }
"#;

    #[test]
    fn gcc_binary_sections_symbols_and_reads() {
        let dir = compile_c("elfbasic", RUNTIME_C, &["-O2", "-g"], "prog");
        let elf = ElfFile::open(&dir.join("prog")).unwrap();

        let rt = elf.section(".PyRuntime").expect(".PyRuntime section");
        assert_eq!(rt.size, 64);
        assert_eq!(elf.read_vaddr(rt.addr, 8), Some(&b"xdebugpy"[..]));

        let (ver_addr, ver_size) = elf.symbol("Py_Version").expect("Py_Version");
        assert_eq!(ver_size, 8);
        let ver = elf.read_vaddr(ver_addr, 8).unwrap();
        assert_eq!(u64::from_le_bytes(ver.try_into().unwrap()), 0x030d05f0);

        assert!(elf.needed().iter().any(|n| n.starts_with("libc.so")), "{:?}", elf.needed());
        assert_eq!(elf.build_id().map(|b| b.len()), Some(20));
        assert!(elf.has_dwarf());
        assert!(elf.symbol("no_such_symbol_anywhere").is_none());

        // Function lookup by address, inside and past the end of `work`.
        let (work, size) = elf.symbol("work").unwrap();
        assert!(size > 0);
        assert_eq!(elf.function_at(work), Some(("work", work)));
        assert_eq!(elf.function_at(work + size - 1), Some(("work", work)));
        assert_ne!(elf.function_at(work + size).map(|f| f.0), Some("work"));

        // A read past the end of the file-backed part of every segment fails.
        assert!(elf.read_vaddr(u64::MAX - 4, 8).is_none());
    }

    #[test]
    fn bias_for_pie_and_exec() {
        let dir = compile_c("elfbias", RUNTIME_C, &["-O2", "-fPIE", "-pie"], "pie");
        let elf = ElfFile::open(&dir.join("pie")).unwrap();
        let text = elf.load_segments().iter().find(|s| s.executable).copied().unwrap();
        let base = 0x5555_5555_0000u64;
        // ld.so maps the executable segment at base + page-aligned vaddr.
        let start = base + (text.vaddr & !0xfff);
        let bias = elf.bias_for_mapping(start, text.offset & !0xfff);
        assert_eq!(bias, base);

        let dir = compile_c("elfexec", RUNTIME_C, &["-O2", "-no-pie"], "exec");
        let elf = ElfFile::open(&dir.join("exec")).unwrap();
        let text = elf.load_segments().iter().find(|s| s.executable).copied().unwrap();
        assert_eq!(elf.bias_for_mapping(text.vaddr & !0xfff, text.offset & !0xfff), 0);
    }

    const SPLIT_C: &str = r#"
#include <stdio.h>
__attribute__((cold, noinline)) void fail(int x) { fprintf(stderr, "x %d\n", x); }
static __attribute__((noinline)) int helper(int x) { return x * 7 + 1; }
__attribute__((noinline)) int exported(int *p, int n) {
    int s = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < 0) { fail(p[i]); fail(p[i] + 1); s -= p[i] * 3; continue; }
        s += helper(p[i]);
    }
    return s;
}
int main(int argc, char **argv) { int a[4] = {argc, 2, 3, 4}; return exported(a, 4) & 1; }
"#;

    #[test]
    fn stripped_binary_names_split_parts_and_labels_static_functions() {
        // -rdynamic exports `exported` in .dynsym; --strip-all removes .symtab.
        let dir = compile_c("elfsplit", SPLIT_C, &["-O2", "-rdynamic"], "full");
        let st = std::process::Command::new("objcopy")
            .arg("--strip-all")
            .arg(dir.join("full"))
            .arg(dir.join("stripped"))
            .status()
            .unwrap();
        assert!(st.success());
        let full = ElfFile::open(&dir.join("full")).unwrap();
        let stripped = ElfFile::open(&dir.join("stripped")).unwrap();
        assert!(full.has_symtab() && !stripped.has_symtab());
        // GCC's cold part of `exported`, named from the full symbol table.
        let (cold, _) = full.symbol("exported.cold").expect("gcc split a .cold part");
        assert_eq!(stripped.function_at(cold + 1).map(|f| f.0), Some("exported"));
        // `helper` is static and only called (not jumped into): no name, but a start address
        // from .eh_frame.
        let (helper, _) = full.symbol("helper").expect("helper in .symtab");
        assert_eq!(stripped.function_at(helper + 1), None);
        assert_eq!(stripped.fde_start(helper + 1), Some(helper));
        assert_eq!(
            crate::native::dwarf::anonymous_function(&stripped, &dir.join("stripped"), helper + 1),
            Some(format!("[stripped+{helper:#x}]"))
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(ElfFile::from_bytes(vec![]).is_err());
        assert!(ElfFile::from_bytes(b"\x7fELF\x02\x01\x01garbage".to_vec()).is_err());
        assert!(ElfFile::open(Path::new("/nonexistent/file")).is_err());
        // Truncated copies of a real ELF must not panic.
        let dir = compile_c("elftrunc", RUNTIME_C, &["-O2"], "prog");
        let bytes = std::fs::read(dir.join("prog")).unwrap();
        for len in [64, 200, 1000, bytes.len() / 2] {
            let _ = ElfFile::from_bytes(bytes[..len].to_vec());
        }
    }

    #[test]
    fn python_runtime_section() {
        let python = python_binary();
        let elf = ElfFile::open(&python).unwrap();
        let rt = elf.section(".PyRuntime").expect(".PyRuntime in python3.13t");
        assert_eq!(elf.read_vaddr(rt.addr, 8), Some(&b"xdebugpy"[..]));
        assert!(elf.symbol("Py_Version").is_some());
        let (runtime, _) = elf.symbol("_PyRuntime").expect("_PyRuntime");
        assert_eq!(runtime, rt.addr);
        assert!(elf.has_dwarf());
        // The check before launch peeks at the same facts without indexing the symbols.
        let peek = ElfFile::peek(&python).unwrap();
        let version =
            u32::from_le_bytes(elf.read_vaddr(elf.symbol("Py_Version").unwrap().0, 4).unwrap().try_into().unwrap());
        let (start, _) = elf.symbol("_PyInterpreterState_SetRunningMain").expect("_PyInterpreterState_SetRunningMain");
        let seg = elf.load_segments().iter().find(|s| (s.vaddr..s.vaddr + s.filesz).contains(&start)).unwrap();
        let main_start = Some(seg.offset + (start - seg.vaddr));
        assert_eq!(peek, Peek { needed: elf.needed(), py_runtime: true, py_version: Some(version), main_start });
        assert_eq!(version >> 16, 0x030d, "{version:#x}");
        // A C program: no runtime, no version.
        let gcc = ElfFile::peek(Path::new("/bin/ls")).unwrap();
        assert!(
            !gcc.py_runtime && gcc.py_version.is_none() && gcc.needed.iter().any(|n| n.starts_with("libc.so")),
            "{gcc:?}"
        );
        let text = std::env::temp_dir().join(format!("ftprof-peek-{}.txt", std::process::id()));
        std::fs::write(&text, "#!/bin/sh\necho not an ELF file\n").unwrap();
        assert!(ElfFile::peek(&text).is_err());
        let _ = std::fs::remove_file(&text);
    }
}
