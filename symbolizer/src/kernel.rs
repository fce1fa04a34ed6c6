//! Kernel addresses → function names through `/proc/kallsyms`.

/// Sorted kernel symbol table.
#[derive(Default)]
pub struct Kallsyms {
    syms: Vec<(u64, String)>,
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
            for (addr, name) in &k.syms {
                text.push_str(&format!("{addr:x} t {name}\n"));
            }
            let tmp = file.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::create_dir_all(dir).is_ok() && std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, &file);
            }
        }
        k
    }

    pub fn parse(text: &str) -> Kallsyms {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let ty = it.next()?;
                let name = it.next()?;
                (addr != 0 && matches!(ty, "t" | "T" | "w" | "W")).then(|| (addr, name.to_string()))
            })
            .collect();
        syms.sort_unstable();
        Kallsyms { syms }
    }

    /// The function containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.0 <= addr);
        (i > 0).then(|| self.syms[i - 1].1.as_str())
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
        if k.syms.is_empty() {
            eprintln!("skipped: /proc/kallsyms hides addresses here");
            return;
        }
        let (addr, _) =
            k.syms.iter().find(|s| s.1 == "__x64_sys_sched_yield" || s.1 == "do_sched_yield").expect("symbol");
        assert!(k.lookup(addr + 1).unwrap().contains("sched_yield"));
    }

    #[test]
    fn cached_table_equals_the_live_one() {
        let dir = std::env::temp_dir().join(format!("ftprof-kallsyms-{}", std::process::id()));
        let live = Kallsyms::load();
        let first = Kallsyms::load_cached(&dir);
        let second = Kallsyms::load_cached(&dir); // from the file
        assert_eq!(live.syms, first.syms);
        assert_eq!(live.syms, second.syms);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
