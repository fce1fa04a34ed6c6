//! Kernel addresses → function names through `/proc/kallsyms`.

/// Sorted kernel symbol table: the text of a kallsyms-format file and, per function symbol,
/// its address and where its name starts in the text (no per-symbol allocation).
#[derive(Default)]
pub struct Kallsyms {
    text: String,
    syms: Vec<(u64, u32, u16)>,
    /// A cache file ([`Kallsyms::to_cache`]'s layout) mapped as it is: looked up in place,
    /// nothing read until a lookup (the table is ~5 MB; a run looks up a few addresses).
    mapped: Option<(memmap2::Mmap, usize)>,
}

const CACHE_MAGIC: &[u8; 8] = b"FTKSYMS2";

impl Kallsyms {
    /// Load `/proc/kallsyms`; empty when it cannot be read or addresses are hidden
    /// (`kernel.kptr_restrict`), in which case every lookup returns `None`.
    pub fn load() -> Kallsyms {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        Self::parse(&text)
    }

    /// Like [`Kallsyms::load`], through a cache file in `dir` keyed by the boot id and the loaded
    /// modules (reading `/proc/kallsyms` costs tens of milliseconds of kernel formatting; the
    /// table only changes across reboots and module loads).
    pub fn load_cached(dir: &std::path::Path) -> Kallsyms {
        use std::hash::{Hash, Hasher};
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        // Module load addresses are the first fields after name/size/refs; hash the whole list.
        modules.hash(&mut h);
        let file = dir.join(format!("kallsyms-v2-{}-{:016x}", boot.trim(), h.finish()));
        if let Some(k) = Self::map_cache(&file) {
            return k;
        }
        let k = Self::load();
        if !k.syms.is_empty() && !boot.trim().is_empty() {
            let tmp = file.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::create_dir_all(dir).is_ok() && std::fs::write(&tmp, k.to_cache()).is_ok() {
                let _ = std::fs::rename(&tmp, &file);
            }
        }
        k
    }

    /// The cache file's bytes: `FTKSYMS2`, the count, then per symbol its address, name offset
    /// and length (16 bytes, little-endian), then the names (read back without parsing text).
    fn to_cache(&self) -> Vec<u8> {
        let mut names = String::with_capacity(self.syms.len() * 24);
        let mut out = Vec::with_capacity(16 + self.syms.len() * 16);
        out.extend_from_slice(CACHE_MAGIC);
        out.extend_from_slice(&(self.syms.len() as u64).to_le_bytes());
        for i in 0..self.syms.len() {
            let name = self.name(i);
            out.extend_from_slice(&self.syms[i].0.to_le_bytes());
            out.extend_from_slice(&(names.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            names.push_str(name);
        }
        out.extend_from_slice(names.as_bytes());
        out
    }

    /// The cache file mapped in place, when it has the cache's layout (its entries are checked
    /// at each lookup, never trusted for memory safety).
    fn map_cache(file: &std::path::Path) -> Option<Kallsyms> {
        let f = std::fs::File::open(file).ok()?;
        // SAFETY: the file is ftprof's own cache, replaced only by rename (never written in
        // place); every read of the mapping is bounds-checked.
        let m = unsafe { memmap2::Mmap::map(&f) }.ok()?;
        let n = usize::try_from(u64::from_le_bytes(m.get(8..16)?.try_into().ok()?)).ok()?;
        let names = 16usize.checked_add(n.checked_mul(16)?)?;
        if m.get(..8)? != CACHE_MAGIC || n == 0 || m.len() < names {
            return None;
        }
        // Names are stored in table order: the last one ends the file (a truncated or grown
        // file is not the one written).
        let last = m.get(names - 16..names)?;
        let end = u32::from_le_bytes(last[8..12].try_into().ok()?) as usize
            + u32::from_le_bytes(last[12..16].try_into().ok()?) as usize;
        if names.checked_add(end)? != m.len() {
            return None;
        }
        Some(Kallsyms { mapped: Some((m, n)), ..Default::default() })
    }

    /// Entry `i` of a mapped cache: (address, name).
    fn mapped_entry(m: &[u8], n: usize, i: usize) -> Option<(u64, &str)> {
        let e = m.get(16 + i * 16..16 + i * 16 + 16)?;
        let addr = u64::from_le_bytes(e[..8].try_into().ok()?);
        let at = u32::from_le_bytes(e[8..12].try_into().ok()?) as usize;
        let len = u32::from_le_bytes(e[12..16].try_into().ok()?) as usize;
        let names = 16 + n * 16;
        let name = m.get(names.checked_add(at)?..names.checked_add(at)?.checked_add(len)?)?;
        Some((addr, std::str::from_utf8(name).ok()?))
    }

    /// A table from [`Kallsyms::to_cache`]'s bytes; `None` when they are not one (the layout
    /// [`Kallsyms::map_cache`] reads in place; kept to test the writer against).
    #[cfg(test)]
    fn from_cache(b: &[u8]) -> Option<Kallsyms> {
        let n = usize::try_from(u64::from_le_bytes(b.get(8..16)?.try_into().ok()?)).ok()?;
        if b.get(..8)? != CACHE_MAGIC || n == 0 {
            return None;
        }
        let table = b.get(16..16usize.checked_add(n.checked_mul(16)?)?)?;
        let text = std::str::from_utf8(&b[16 + n * 16..]).ok()?.to_string();
        let mut syms = Vec::with_capacity(n);
        for e in table.chunks_exact(16) {
            let addr = u64::from_le_bytes(e[..8].try_into().ok()?);
            let at = u32::from_le_bytes(e[8..12].try_into().ok()?);
            let len = u32::from_le_bytes(e[12..16].try_into().ok()?).min(u16::MAX as u32);
            if !text.is_char_boundary(at as usize) || !text.is_char_boundary((at + len) as usize) {
                return None;
            }
            syms.push((addr, at, len as u16));
        }
        syms.is_sorted_by_key(|s| s.0).then_some(Kallsyms { text, syms, mapped: None })
    }

    pub fn parse(text: &str) -> Kallsyms {
        let text = text.to_string();
        let mut syms = Vec::with_capacity(text.len() / 40);
        let mut pos = 0usize;
        for line in text.split_inclusive('\n') {
            let start = pos;
            pos += line.len();
            let b = line.as_bytes();
            // "ADDR T name [module]"
            let Some(sp) = b.iter().position(|&c| c == b' ') else { continue };
            let Ok(addr) = u64::from_str_radix(&line[..sp], 16) else { continue };
            let Some(&ty) = b.get(sp + 1) else { continue };
            if addr == 0 || !matches!(ty, b't' | b'T' | b'w' | b'W') {
                continue;
            }
            let name_start = sp + 3;
            let name_len = b[name_start.min(b.len())..].iter().take_while(|c| !c.is_ascii_whitespace()).count();
            syms.push((addr, (start + name_start) as u32, name_len.min(u16::MAX as usize) as u16));
        }
        if !syms.is_sorted_by_key(|s| s.0) {
            syms.sort_unstable_by_key(|s| s.0);
        }
        Kallsyms { text, syms, mapped: None }
    }

    fn name(&self, i: usize) -> &str {
        let (_, at, len) = self.syms[i];
        &self.text[at as usize..at as usize + len as usize]
    }

    /// The function containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        if let Some((m, n)) = &self.mapped {
            // The first entry above `addr` (entries that do not read count as above).
            let (mut lo, mut hi) = (0usize, *n);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match Self::mapped_entry(m, *n, mid) {
                    Some((a, _)) if a <= addr => lo = mid + 1,
                    _ => hi = mid,
                }
            }
            return lo.checked_sub(1).and_then(|i| Self::mapped_entry(m, *n, i)).map(|(_, name)| name);
        }
        let i = self.syms.partition_point(|s| s.0 <= addr);
        (i > 0).then(|| self.name(i - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_gives_back_the_same_table() {
        let k = Kallsyms::parse("ffffffff81000000 T _stext\nffffffff81000100 t do_sched_yield\n");
        let bytes = k.to_cache();
        let back = Kallsyms::from_cache(&bytes).unwrap();
        assert_eq!(back.lookup(0xffffffff81000150), Some("do_sched_yield"));
        assert_eq!(back.lookup(0xffffffff81000010), Some("_stext"));
        for cut in 0..bytes.len() - 1 {
            // Cut short: refused, or (cut inside the names) a table whose names are checked.
            if let Some(k) = Kallsyms::from_cache(&bytes[..cut]) {
                assert!(k.syms.iter().all(|&(_, at, len)| (at as usize + len as usize) <= k.text.len()));
            }
        }
        assert!(Kallsyms::from_cache(b"FTKSYMS1\x01\0\0\0\0\0\0\0").is_none());
    }

    #[test]
    fn nearest_preceding_symbol() {
        let k = Kallsyms::parse("ffffffff81000000 T _stext\nffffffff81000100 t do_sched_yield\nffffffff81000200 D some_data\n0000000000000000 T hidden\n");
        assert_eq!(k.lookup(0xffffffff81000150), Some("do_sched_yield"));
        assert_eq!(k.lookup(0xffffffff81000000), Some("_stext"));
        assert_eq!(k.lookup(0x1000), None);
    }

    #[test]
    fn real_kallsyms_resolves_a_syscall_entry() {
        let k = Kallsyms::load();
        assert!(
            !k.syms.is_empty(),
            "/proc/kallsyms shows no addresses: run the tests as root with kernel.kptr_restrict <= 1 (scripts/test.sh)"
        );
        let i = (0..k.syms.len()).find(|&i| k.name(i) == "__x64_sys_sched_yield" || k.name(i) == "do_sched_yield");
        let addr = k.syms[i.expect("symbol")].0;
        assert!(k.lookup(addr + 1).unwrap().contains("sched_yield"));
    }

    #[test]
    fn cached_table_equals_the_live_one() {
        let dir = std::env::temp_dir().join(format!("ftprof-kallsyms-{}", std::process::id()));
        let live = Kallsyms::load();
        assert!(
            !live.syms.is_empty(),
            "/proc/kallsyms shows no addresses (see real_kallsyms_resolves_a_syscall_entry)"
        );
        let first = Kallsyms::load_cached(&dir);
        let second = Kallsyms::load_cached(&dir); // from the file
        assert!(second.mapped.is_some(), "the second load maps the cache file");
        // Every symbol's address, and one byte past it, resolve alike from the mapped file.
        for &(addr, _, _) in &live.syms {
            for a in [addr, addr + 1, addr - 1] {
                assert_eq!(live.lookup(a), first.lookup(a), "{a:#x}");
                assert_eq!(live.lookup(a), second.lookup(a), "{a:#x}");
            }
        }
        assert_eq!(second.lookup(0x1000), None);
        // A truncated file is not mapped (read afresh instead).
        let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        assert!(Kallsyms::map_cache(&file).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
