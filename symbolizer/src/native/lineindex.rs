//! A module's DWARF answers, indexed once and kept on disk: for every line-table row, the inline
//! chain (function, file, line of each frame) that [`ModuleSymbolizer::symbolize`] gives for
//! every address of the row. A later run maps the file and answers an address with one binary
//! search, without parsing any debug data (for an interpreter built with DWARF, that parse cost
//! every run 10–15 ms of CPU, most of ftprof's fixed cost).
//!
//! Rows are split where a function or an inlined instance begins or ends. A row whose chain
//! still differs at its first and last byte is indexed byte by byte (up to 4 KiB); addresses no
//! row covers are left to the debug data, as before.
//!
//! Input: a [`ModuleSymbolizer`] with DWARF. Output: a file ([`build`]) and its reader
//! ([`LineIndex`]).
//!
//! File format (little-endian): the header `MAGIC`, then the counts of ranges, chains, frames and
//! string bytes (u64 each); `starts` (u64 per range: ranges are `[starts[i], starts[i + 1])`);
//! the chain of each range (u32, [`NONE`]: not indexed); per chain, its first frame and frame
//! count (u32 each); per frame its function, file (string offsets) and line (u32 each, [`NONE`]:
//! absent); the strings (a u32 length, then UTF-8 bytes).

use std::collections::HashMap;
use std::path::Path;

use super::dwarf::{ModuleSymbolizer, SymFrame};

const MAGIC: &[u8; 8] = b"FTPLIDX1";
const HEADER: usize = 8 + 4 * 8;
/// An absent value (a string, a line, a chain).
const NONE: u32 = u32::MAX;
/// A row longer than this whose chain differs at its ends is not indexed (shorter ones are
/// indexed byte by byte).
const BYTEWISE_LIMIT: u64 = 4096;

/// A module's index file, mapped.
pub(crate) struct LineIndex {
    map: memmap2::Mmap,
    ranges: usize,
    /// Byte offsets of the sections.
    chains_at: usize,
    chain_table_at: usize,
    frames_at: usize,
    strings_at: usize,
    strings_len: usize,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl LineIndex {
    /// Map `file`; `None` when it is missing, truncated or not an index.
    pub(crate) fn open(file: &Path) -> Option<LineIndex> {
        let f = std::fs::File::open(file).ok()?;
        // SAFETY: a read-only private mapping of a file that is only ever replaced (renamed
        // over), never written in place.
        let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
        if map.get(..8)? != MAGIC {
            return None;
        }
        let count = |i: usize| u64_at(&map, 8 + 8 * i).and_then(|v| usize::try_from(v).ok());
        let (ranges, chains, frames, strings_len) = (count(0)?, count(1)?, count(2)?, count(3)?);
        let chains_at = HEADER.checked_add(ranges.checked_mul(8)?)?;
        let chain_table_at = chains_at.checked_add(ranges.checked_mul(4)?)?;
        let frames_at = chain_table_at.checked_add(chains.checked_mul(8)?)?;
        let strings_at = frames_at.checked_add(frames.checked_mul(12)?)?;
        if strings_at.checked_add(strings_len)? != map.len() {
            return None;
        }
        Some(LineIndex { map, ranges, chains_at, chain_table_at, frames_at, strings_at, strings_len })
    }

    /// The inline chain of `svma` (innermost first), when an indexed row covers it.
    pub(crate) fn lookup(&self, svma: u64) -> Option<Vec<SymFrame>> {
        let b = &self.map[..];
        let start = |i: usize| u64_at(b, HEADER + 8 * i).unwrap_or(u64::MAX);
        // The last range starting at or before `svma`.
        let (mut lo, mut hi) = (0, self.ranges);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if start(mid) <= svma {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        let chain = u32_at(b, self.chains_at + 4 * i)?;
        if chain == NONE {
            return None;
        }
        let at = self.chain_table_at + 8 * chain as usize;
        let (first, count) = (u32_at(b, at)? as usize, u32_at(b, at + 4)? as usize);
        (first..first + count)
            .map(|f| {
                let at = self.frames_at + 12 * f;
                Some(SymFrame {
                    function: self.string(u32_at(b, at)?),
                    file: self.string(u32_at(b, at + 4)?),
                    line: Some(u32_at(b, at + 8)?).filter(|&l| l != NONE),
                })
            })
            .collect()
    }

    fn string(&self, off: u32) -> Option<String> {
        if off == NONE || off as usize >= self.strings_len {
            return None;
        }
        let at = self.strings_at + off as usize;
        let len = u32_at(&self.map, at)? as usize;
        std::str::from_utf8(self.map.get(at + 4..at + 4 + len)?).ok().map(str::to_owned)
    }
}

/// What [`build`] writes, before it is laid out.
#[derive(Default)]
struct Builder {
    starts: Vec<u64>,
    chain_of: Vec<u32>,
    chains: Vec<(u32, u32)>,
    chain_ids: HashMap<Vec<(u32, u32, u32)>, u32>,
    frames: Vec<(u32, u32, u32)>,
    strings: Vec<u8>,
    string_ids: HashMap<String, u32>,
}

impl Builder {
    fn string(&mut self, s: &Option<String>) -> u32 {
        let Some(s) = s else { return NONE };
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.strings.extend_from_slice(s.as_bytes());
        self.string_ids.insert(s.clone(), id);
        id
    }

    fn chain(&mut self, frames: &[SymFrame]) -> u32 {
        let key: Vec<(u32, u32, u32)> =
            frames.iter().map(|f| (self.string(&f.function), self.string(&f.file), f.line.unwrap_or(NONE))).collect();
        if let Some(&id) = self.chain_ids.get(&key) {
            return id;
        }
        let id = self.chains.len() as u32;
        self.chains.push((self.frames.len() as u32, key.len() as u32));
        self.frames.extend_from_slice(&key);
        self.chain_ids.insert(key, id);
        id
    }

    fn push(&mut self, start: u64, chain: u32) {
        if self.starts.last() == Some(&start) {
            // A range of length zero before: the later one wins.
            *self.chain_of.last_mut().expect("same length") = chain;
        } else if self.chain_of.last() != Some(&chain) {
            self.starts.push(start);
            self.chain_of.push(chain);
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER + self.starts.len() * 12 + self.chains.len() * 8 + self.frames.len() * 12 + self.strings.len(),
        );
        out.extend_from_slice(MAGIC);
        for n in [self.starts.len(), self.chains.len(), self.frames.len(), self.strings.len()] {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        self.starts.iter().for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
        self.chain_of.iter().for_each(|c| out.extend_from_slice(&c.to_le_bytes()));
        for (first, count) in &self.chains {
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        for (function, file, line) in &self.frames {
            for v in [function, file, line] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.strings);
        out
    }
}

/// Index `sym`'s DWARF into `file` (written beside it, then renamed over it: readers see a
/// whole file or none). Returns the number of rows indexed; `None` when the module has no DWARF
/// of its own, or the file could not be written.
pub(crate) fn build(sym: &mut ModuleSymbolizer, file: &Path) -> Option<usize> {
    let rows = sym.line_rows()?;
    let mut b = Builder::default();
    let mut indexed = 0;
    for (i, &(start, end)) in rows.iter().enumerate() {
        // Empty, or overlapping the row before (two units claiming the same code): skipped.
        if end <= start || b.starts.last().is_some_and(|&last| start < last) {
            continue;
        }
        let first = sym.symbolize(start);
        indexed += 1;
        if end - start == 1 || sym.symbolize(end - 1) == first {
            let chain = b.chain(&first);
            b.push(start, chain);
        } else if end - start <= BYTEWISE_LIMIT {
            // The chain changes inside the row (a boundary the units did not give): byte by byte.
            let mut last = first;
            let chain = b.chain(&last);
            b.push(start, chain);
            for at in start + 1..end {
                let here = sym.symbolize(at);
                if here != last {
                    let chain = b.chain(&here);
                    b.push(at, chain);
                    last = here;
                }
            }
        } else {
            indexed -= 1;
            b.push(start, NONE);
        }
        // A gap before the next row (or after the last): not covered.
        if rows.get(i + 1).is_none_or(|&(next, _)| next > end) {
            b.push(end, NONE);
        }
    }
    let bytes = b.bytes();
    let dir = file.parent()?;
    std::fs::create_dir_all(dir).ok()?;
    let tmp = dir.join(format!(".{}.{}", file.file_name()?.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, &bytes).ok()?;
    std::fs::rename(&tmp, file).ok().or_else(|| {
        let _ = std::fs::remove_file(&tmp);
        None
    })?;
    Some(indexed)
}
