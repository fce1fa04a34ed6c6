//! `/proc/PID/maps` parsing and the vDSO image.

use super::Mapping;

/// Executable mappings listed in the text of a `/proc/PID/maps` file. Anonymous executable
/// mappings get the path `//anon` (as perf names them).
pub(crate) fn parse_proc_maps(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_line).filter(|(perms, _)| perms.contains('x')).map(|(_, m)| m).collect()
}

/// One maps line: `start-end perms offset dev inode   path`.
fn parse_line(line: &str) -> Option<(&str, Mapping)> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let pgoff = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start();
    let mapping = Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        pgoff: u64::from_str_radix(pgoff, 16).ok()?,
        path: if path.is_empty() { "//anon".to_owned() } else { path.to_owned() },
    };
    Some((perms, mapping))
}

/// The mapping of this process that contains `addr` (any permissions).
pub(crate) fn own_mapping_containing(addr: u64) -> Option<Mapping> {
    let text = std::fs::read_to_string("/proc/self/maps").ok()?;
    text.lines().filter_map(parse_line).map(|(_, m)| m).find(|m| m.start <= addr && addr < m.end)
}

/// A copy of this process's vDSO image. Every process on this kernel maps the same image, so it
/// serves to unwind and symbolize `[vdso]` frames of the target.
pub(crate) fn own_vdso_image() -> Option<Vec<u8>> {
    // SAFETY: getauxval has no preconditions.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    if base == 0 {
        return None;
    }
    let m = own_mapping_containing(base)?;
    if m.path != "[vdso]" || m.start != base {
        return None;
    }
    let len = usize::try_from(m.end - m.start).ok()?;
    // SAFETY: the vDSO is mapped readable for the lifetime of the process.
    Some(unsafe { std::slice::from_raw_parts(base as *const u8, len) }.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let text = "\
55d0c8a00000-55d0c8a02000 r--p 00000000 fd:01 1234                       /usr/bin/my prog
55d0c8a02000-55d0c8a07000 r-xp 00002000 fd:01 1234                       /usr/bin/my prog
7f0000000000-7f0000001000 rwxp 00000000 00:00 0 
7f36b33ec000-7f36b33ee000 r-xp 00000000 00:00 0                          [vdso]
7f36b33f0000-7f36b33f1000 r-xp 00001000 fd:01 99                         /tmp/x.so (deleted)
garbage line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";
        let maps = parse_proc_maps(text);
        assert_eq!(maps.len(), 5);
        assert_eq!(
            maps[0],
            Mapping { start: 0x55d0c8a02000, end: 0x55d0c8a07000, pgoff: 0x2000, path: "/usr/bin/my prog".into() }
        );
        assert_eq!(maps[1].path, "//anon");
        assert_eq!(maps[2].path, "[vdso]");
        assert_eq!(maps[3].path, "/tmp/x.so (deleted)");
        assert_eq!(maps[4].start, 0xffffffffff600000);
    }

    #[test]
    fn vdso_image_is_elf() {
        let img = own_vdso_image().expect("this process has a vDSO (every x86-64 Linux process does)");
        assert_eq!(&img[..4], b"\x7fELF");
        let elf = super::super::ElfFile::from_bytes(img).unwrap();
        assert!(elf.symbol("__vdso_clock_gettime").is_some());
    }
}
