//! `/proc/PID/maps` parsing and the vDSO image.

use super::Mapping;

/// One line of `/proc/PID/maps`: `start-end perms offset dev inode   path`. This is the one maps
/// parser of ftprof (the native symbolizer and the CPython reader both use it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub pgoff: u64,
    pub inode: u64,
    /// The path as the kernel prints it, spaces included (` (deleted)` kept); empty when
    /// anonymous.
    pub path: String,
}

/// Parse one maps line (`None` for a malformed one).
pub fn parse_map_line(line: &str) -> Option<MapLine> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let pgoff = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start();
    Some(MapLine {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms: perms.to_owned(),
        pgoff: u64::from_str_radix(pgoff, 16).ok()?,
        inode: inode.parse().ok()?,
        path: path.to_owned(),
    })
}

/// Every well-formed line of a maps file's text.
pub fn parse_maps(text: &str) -> Vec<MapLine> {
    text.lines().filter_map(parse_map_line).collect()
}

/// Executable mappings listed in the text of a `/proc/PID/maps` file. Anonymous executable
/// mappings get the path `//anon` (as perf names them).
pub(crate) fn parse_proc_maps(text: &str) -> Vec<Mapping> {
    parse_maps(text).into_iter().filter(|m| m.perms.contains('x')).map(mapping).collect()
}

fn mapping(m: MapLine) -> Mapping {
    let path = if m.path.is_empty() { "//anon".to_owned() } else { m.path };
    Mapping { start: m.start, end: m.end, pgoff: m.pgoff, path }
}

/// The mapping of this process that contains `addr` (any permissions).
pub(crate) fn own_mapping_containing(addr: u64) -> Option<Mapping> {
    let text = std::fs::read_to_string("/proc/self/maps").ok()?;
    parse_maps(&text).into_iter().map(mapping).find(|m| m.start <= addr && addr < m.end)
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
    fn paths_keep_their_spaces_for_every_reader() {
        let line = "7f00-7f80 r-xp 00001000 fd:01 42                         /opt/my  dir/lib x.so";
        let m = parse_map_line(line).unwrap();
        assert_eq!((m.start, m.end, m.perms.as_str(), m.pgoff, m.inode), (0x7f00, 0x7f80, "r-xp", 0x1000, 42));
        assert_eq!(m.path, "/opt/my  dir/lib x.so");
        // The CPython reader and the symbolizer see the same mapping.
        assert_eq!(parse_proc_maps(line)[0].path, m.path);
        assert_eq!(parse_map_line("7f00-7f80 r-xp 00001000 fd:01 0 ").unwrap().path, "");
        assert!(parse_map_line("7f00 r-xp 0 fd:01 0").is_none());
    }

    #[test]
    fn vdso_image_is_elf() {
        let img = own_vdso_image().expect("this process has a vDSO (every x86-64 Linux process does)");
        assert_eq!(&img[..4], b"\x7fELF");
        let elf = super::super::ElfFile::from_bytes(img).unwrap();
        assert!(elf.symbol("__vdso_clock_gettime").is_some());
    }
}
