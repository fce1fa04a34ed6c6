//! Checks made before launching anything: is the command a CPython ≥ 3.13 interpreter, and can
//! the output be written.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use profiler::launch::resolve_command;
use symbolizer::native::ElfFile;
use symbolizer::python::static_version;

/// What the command turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interpreter {
    /// CPython with this PY_VERSION_HEX (when it could be read from the file).
    /// `main_start`: where a launch of `path` may be held (see `symbolizer`'s `Peek::main_start`).
    CPython { path: PathBuf, version: Option<(u64, u64)>, main_start: Option<u64> },
}

fn version_from_name(name: &str) -> Option<(u64, u64)> {
    // python3.11, libpython3.13t.so.1.0, python3.14t
    let i = name.find("python")? + 6;
    let rest = &name[i..];
    let mut it = rest.splitn(2, '.');
    let major: u64 = it.next()?.parse().ok()?;
    let minor: u64 = it.next()?.chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().ok()?;
    Some((major, minor))
}

/// Follow `#!` lines (and `env`) to the ELF that will actually run.
fn real_program(argv: &[OsString]) -> Result<(PathBuf, Vec<String>)> {
    let mut path = resolve_command(&argv[0]).ok_or_else(|| {
        anyhow::anyhow!("command not found: {} (check the spelling, or give a full path)", argv[0].to_string_lossy())
    })?;
    let mut chain = Vec::new();
    for _ in 0..4 {
        let mut head = [0u8; 256];
        let n = File::open(&path).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
        if n >= 2 && &head[..2] == b"#!" {
            let line = String::from_utf8_lossy(&head[2..n]).lines().next().unwrap_or("").trim().to_string();
            chain.push(format!("a script run by {line}"));
            let mut parts = line.split_whitespace();
            let interp = parts.next().unwrap_or("");
            let next = if Path::new(interp).file_name().is_some_and(|n| n == "env") {
                parts.find(|p| !p.starts_with('-')).unwrap_or("").to_string()
            } else {
                interp.to_string()
            };
            path = resolve_command(next.as_ref())
                .ok_or_else(|| anyhow::anyhow!("the script's interpreter {next} was not found"))?;
            continue;
        }
        if Path::new(&path).file_name().is_some_and(|n| n == "env") && argv.len() > 1 {
            if let Some(next) =
                argv[1..].iter().find(|a| !a.to_string_lossy().starts_with('-') && !a.to_string_lossy().contains('='))
            {
                path = resolve_command(next)
                    .ok_or_else(|| anyhow::anyhow!("command not found: {}", next.to_string_lossy()))?;
                continue;
            }
        }
        break;
    }
    Ok((path, chain))
}

/// Make sure `argv` starts a CPython 3.13+ interpreter; explain what it is otherwise.
pub fn check_interpreter(argv: &[OsString]) -> Result<Interpreter> {
    let (path, chain) = real_program(argv)?;
    let shown = match chain.first() {
        // A wrapper script (pyenv shim, launcher): name the command and what really runs.
        Some(first) => format!("{} ({first}, which runs {})", argv[0].to_string_lossy(), path.display()),
        None => path.display().to_string(),
    };
    // Peeked, not indexed: the symbol index is built off the critical path (the preload).
    let elf = match ElfFile::peek(&path) {
        Ok(e) => e,
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)) => bail!(
            "cannot read {shown} ({}), so ftprof cannot check that it is CPython; make it readable by you (chmod a+r) or run ftprof as root with sudo",
            e.root_cause()
        ),
        Err(_) => bail!("{shown} is not a CPython interpreter (not an ELF executable); run ftprof record -- python3.13t your_script.py"),
    };
    let too_old = |v: (u64, u64)| -> Result<()> {
        if v < (3, 13) {
            bail!(
                "{shown} is CPython {}.{}; ftprof needs CPython 3.13 or newer (a free-threaded 3.13t/3.14t build for lock analysis)",
                v.0,
                v.1
            );
        }
        Ok(())
    };
    let too_new = |v: (u64, u64)| -> Result<()> {
        if v.0 == 3 && v.1 > symbolizer::python::offsets::NEWEST_MINOR {
            bail!(
                "{shown} is CPython {}.{}, which ftprof does not support yet: the newest version it can read is 3.{} (upgrade ftprof, or run the script with python3.{})",
                v.0,
                v.1,
                symbolizer::python::offsets::NEWEST_MINOR,
                symbolizer::python::offsets::NEWEST_MINOR
            );
        }
        Ok(())
    };
    if let Some(v) = elf.py_version {
        let v = ((v >> 24) as u64, ((v >> 16) & 0xff) as u64);
        too_old(v)?;
        too_new(v)?;
        return Ok(Interpreter::CPython { path, version: Some(v), main_start: elf.main_start });
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some(lib) = elf.needed.iter().find(|n| n.starts_with("libpython")) {
        let v = version_from_name(lib);
        if let Some(v) = v {
            too_old(v)?;
        }
        return Ok(Interpreter::CPython { path, version: v, main_start: elf.main_start });
    }
    if elf.py_runtime {
        return Ok(Interpreter::CPython { path, version: None, main_start: elf.main_start });
    }
    if let Some(v) = version_from_name(&name) {
        too_old(v)?;
    }
    bail!(
        "{shown} is not a CPython interpreter (an ELF executable without a CPython runtime); give the interpreter itself, e.g. ftprof record -- python3.13t your_script.py"
    )
}

/// Open the output for writing before anything starts, so a bad path fails early.
pub struct OutputFile {
    pub path: PathBuf,
    file: Option<File>,
    created: bool,
}

impl OutputFile {
    pub fn open(path: &Path) -> Result<OutputFile> {
        let existed = path.exists();
        if path.is_dir() {
            bail!("cannot write the output {}: it is a directory; pass a file name with -o", path.display());
        }
        let file = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(|e| {
            anyhow::anyhow!("cannot write the output {}: {e}; choose another path with -o", path.display())
        })?;
        Ok(OutputFile { path: path.to_path_buf(), file: Some(file), created: !existed })
    }

    /// Replace the file's contents with `bytes`.
    pub fn write_all(mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let mut f = self.file.take().expect("written once");
        // Pipes and devices (-o /dev/stdout) cannot be truncated; regular files must be.
        if f.metadata().map(|m| m.is_file()).unwrap_or(false) {
            f.set_len(0)?;
        }
        f.write_all(bytes)?;
        self.created = false;
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What `--pid` points at, once checked.
pub struct AttachTarget {
    pub pid: u32,
    /// The ELF holding the CPython runtime (the executable or libpython).
    pub runtime_module: String,
    pub command: Vec<String>,
}

fn permission_hint(pid: u32, what: &str) -> anyhow::Error {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into());
    anyhow::anyhow!(
        "permission denied {what} process {pid}: attaching needs ptrace access (same user and kernel.yama.ptrace_scope \
         = 0, or root/CAP_SYS_PTRACE; ptrace_scope is {}) and perf events (CAP_PERFMON or \
         kernel.perf_event_paranoid <= 1; it is {}); run ftprof with sudo, or sudo sysctl kernel.yama.ptrace_scope=0",
        read("/proc/sys/kernel/yama/ptrace_scope"),
        read("/proc/sys/kernel/perf_event_paranoid")
    )
}

/// The CPython version a process runs, from `Py_Version` in its executable or libpython.
fn process_python_version(pid: u32) -> Option<(u64, u64)> {
    let maps = symbolizer::python::read_maps(pid).ok()?;
    let mut seen = Vec::new();
    for m in maps.iter().filter(|m| m.path.starts_with('/')) {
        let name = Path::new(&m.path).file_name()?.to_string_lossy().into_owned();
        if seen.contains(&m.path) || !(name.starts_with("python") || name.starts_with("libpython")) {
            continue;
        }
        seen.push(m.path.clone());
        let file = symbolizer::python::target_file(pid, &m.path);
        if let Some(v) = ElfFile::open_shared(&file).ok().as_deref().and_then(static_version) {
            return Some((v >> 24, (v >> 16) & 0xff));
        }
        if let Some(v) = version_from_name(&name) {
            return Some(v);
        }
    }
    None
}

/// Make sure `pid` is a live CPython ≥ 3.13 process we may read; explain otherwise.
pub fn check_process(pid: u32) -> Result<AttachTarget> {
    use symbolizer::python::{OffsetsError, PyError, PyProcess};
    if !Path::new(&format!("/proc/{pid}")).exists() {
        bail!("no such process: {pid} (check the PID with ps or pgrep)");
    }
    // Before anything of the target is read: with capabilities its caller lacks, ftprof only
    // observes what the caller could trace itself.
    profiler::access::check(pid)?;
    if let Some(stat) = profiler::threads::read_stat(pid, None).filter(|s| s.state == 'Z') {
        let ppid = stat.ppid;
        bail!("process {pid} is a zombie: it has exited and waits for its parent ({ppid}) to reap it; there is nothing left to profile");
    }
    let exe = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(permission_hint(pid, "reading")),
        Err(_) => bail!("process {pid} has no executable (a kernel thread?); give the PID of a Python process"),
    };
    let comm = engine::procfs::thread_name(pid, pid);
    let command = engine::procfs::cmdline(pid);
    let too_old = |v: (u64, u64)| {
        anyhow::anyhow!(
            "process {pid} ({exe}) runs CPython {}.{}, which is not supported: ftprof needs CPython 3.13 or newer",
            v.0,
            v.1
        )
    };
    match PyProcess::locate(pid) {
        Ok(p) => Ok(AttachTarget { pid, runtime_module: p.module, command }),
        Err(PyError::Read(e)) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            Err(permission_hint(pid, "reading the memory of"))
        }
        Err(PyError::Offsets(e @ OffsetsError::TooNew(_))) => bail!("process {pid} ({exe}): {e}"),
        Err(PyError::Denied(e)) => Err(e.into()),
        Err(PyError::Unreadable { path, error }) => bail!(
            "process {pid} ({exe}): cannot read its interpreter file {path} ({error}), so ftprof cannot find the CPython runtime in it; make the file readable by you (chmod a+r), or run ftprof as root with sudo"
        ),
        Err(PyError::Offsets(OffsetsError::TooOld(_))) | Err(PyError::Offsets(OffsetsError::BadCookie)) => {
            match process_python_version(pid) {
                Some(v) if v < (3, 13) => Err(too_old(v)),
                _ => bail!("process {pid} ({exe}) has an unreadable CPython runtime (no valid _Py_DebugOffsets)"),
            }
        }
        Err(_) => match process_python_version(pid) {
            Some(v) if v < (3, 13) => Err(too_old(v)),
            _ => bail!(
                "process {pid} ({comm}, {exe}) is not a CPython process (no CPython runtime in its executable or a libpython); give the PID of a python3.13t process"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_names() {
        assert_eq!(version_from_name("python3.11"), Some((3, 11)));
        assert_eq!(version_from_name("libpython3.13t.so.1.0"), Some((3, 13)));
        assert_eq!(version_from_name("python3"), None);
        assert_eq!(version_from_name("ls"), None);
    }
}
