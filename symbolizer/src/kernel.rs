//! Kernel addresses → function names through `/proc/kallsyms`.

/// Sorted kernel symbol table: the text of a kallsyms-format file and, per function symbol,
/// its address and where its name starts in the text (no per-symbol allocation).
#[derive(Default)]
pub struct Kallsyms {
    text: String,
    syms: Vec<(u64, u32, u16)>,
}

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
        let file = dir.join(format!("kallsyms-{}-{:016x}", boot.trim(), h.finish()));
        if let Ok(text) = std::fs::read_to_string(&file) {
            let k = Self::parse(&text);
            if !k.syms.is_empty() {
                return k;
            }
        }
        let k = Self::load();
        if !k.syms.is_empty() && !boot.trim().is_empty() {
            let mut text = String::with_capacity(k.syms.len() * 40);
            for i in 0..k.syms.len() {
                text.push_str(&format!("{:x} t {}\n", k.syms[i].0, k.name(i)));
            }
            let tmp = file.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::create_dir_all(dir).is_ok() && std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, &file);
            }
        }
        k
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
        Kallsyms { text, syms }
    }

    fn name(&self, i: usize) -> &str {
        let (_, at, len) = self.syms[i];
        &self.text[at as usize..at as usize + len as usize]
    }

    /// The function containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.0 <= addr);
        (i > 0).then(|| self.name(i - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let names = |k: &Kallsyms| (0..k.syms.len()).map(|i| (k.syms[i].0, k.name(i).to_string())).collect::<Vec<_>>();
        assert_eq!(names(&live), names(&first));
        assert_eq!(names(&live), names(&second));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
