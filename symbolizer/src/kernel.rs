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
        let (addr, _) = k.syms.iter().find(|s| s.1 == "__x64_sys_sched_yield" || s.1 == "do_sched_yield").expect("symbol");
        assert!(k.lookup(addr + 1).unwrap().contains("sched_yield"));
    }
}
