//! Launching the target held at a gate: the child is forked and waits on a pipe until the
//! parent has opened its perf events, then `exec`s the command (events use `enable_on_exec`).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, getpid, getppid, pipe2, ForkResult, Pid};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("command not found: {0} (check the spelling, or give a full path)")]
    NotFound(String),
    #[error("cannot execute {0}: {1}")]
    Exec(String, io::Error),
    #[error("cannot start the target: {0}")]
    Fork(io::Error),
}

/// What to launch.
#[derive(Clone, Debug, Default)]
pub struct LaunchSpec {
    pub argv: Vec<OsString>,
    /// Extra (or overriding) environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// Redirect the child's stdout / stderr to these descriptors.
    pub stdout: Option<std::os::fd::RawFd>,
    pub stderr: Option<std::os::fd::RawFd>,
}

/// A forked child held before `exec`.
pub struct Launched {
    pub pid: i32,
    /// Write end of the gate: one byte lets the child `exec`; closing it makes the child exit.
    gate_w: Option<OwnedFd>,
    /// Read end of the error pipe: the child writes `errno` there when `exec` fails (it is
    /// close-on-exec, so a successful `exec` closes it with nothing written).
    err_r: Option<OwnedFd>,
    program: String,
}

/// Resolve a command name through `PATH` like `execvp` would.
pub fn resolve_command(cmd: &OsStr) -> Option<PathBuf> {
    let p = Path::new(cmd);
    if cmd.as_bytes().contains(&b'/') {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(&path).map(|d| d.join(cmd)).find(|c| {
        use std::os::unix::fs::PermissionsExt;
        c.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

impl Launched {
    /// Fork a child that will run `argv` once [`Launched::release`] is called.
    pub fn spawn(argv: &[OsString]) -> Result<Launched, LaunchError> {
        Self::spawn_spec(&LaunchSpec { argv: argv.to_vec(), ..Default::default() })
    }

    /// Like [`Launched::spawn`], with extra environment variables and redirected output.
    pub fn spawn_spec(spec: &LaunchSpec) -> Result<Launched, LaunchError> {
        let argv = &spec.argv;
        let program = argv.first().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let resolved = resolve_command(&argv[0]).ok_or_else(|| LaunchError::NotFound(program.clone()))?;
        // Everything the child needs is allocated before fork (only async-signal-safe calls after).
        let path = CString::new(resolved.as_os_str().as_bytes()).map_err(|_| LaunchError::NotFound(program.clone()))?;
        let cargs: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| LaunchError::Exec(program.clone(), io::Error::from(io::ErrorKind::InvalidInput)))?;
        let mut cptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
        cptrs.push(std::ptr::null());
        let mut env: Vec<(OsString, OsString)> =
            std::env::vars_os().filter(|(k, _)| !spec.env.iter().any(|(o, _)| o == k)).collect();
        env.extend(spec.env.iter().cloned());
        let cenv: Vec<CString> = env
            .iter()
            .filter_map(|(k, v)| {
                let mut b = k.as_bytes().to_vec();
                b.push(b'=');
                b.extend_from_slice(v.as_bytes());
                CString::new(b).ok()
            })
            .collect();
        let mut eptrs: Vec<*const libc::c_char> = cenv.iter().map(|c| c.as_ptr()).collect();
        eptrs.push(std::ptr::null());
        let (out_fd, err_fd) = (spec.stdout.unwrap_or(-1), spec.stderr.unwrap_or(-1));
        // With privileges the caller lacks, the launched program (and everything it starts) must
        // stay the caller's own: no set-id or file-capability gain at exec.
        let no_new_privs = crate::access::is_elevated();

        let (gate_r, gate_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| LaunchError::Fork(e.into()))?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| LaunchError::Fork(e.into()))?;
        let parent_pid = getpid();
        // SAFETY: the child only makes async-signal-safe calls (see `exec_when_released`) on
        // memory allocated before the fork, then `exec`s or `_exit`s.
        match unsafe { fork() } {
            Err(e) => Err(LaunchError::Fork(e.into())),
            Ok(ForkResult::Child) => {
                drop((gate_w, err_r));
                exec_when_released(parent_pid, gate_r, err_w, (out_fd, err_fd), no_new_privs, &path, &cptrs, &eptrs)
            }
            Ok(ForkResult::Parent { child }) => {
                drop((gate_r, err_w));
                Ok(Launched { pid: child.as_raw(), gate_w: Some(gate_w), err_r: Some(err_r), program })
            }
        }
    }

    /// Let the child `exec`. Returns an error when `exec` itself failed.
    pub fn release(&mut self) -> Result<(), LaunchError> {
        if let Some(gate) = self.gate_w.take() {
            let _ = nix::unistd::write(&gate, &[1]);
        }
        let mut e = [0u8; 4];
        let n = match self.err_r.take() {
            Some(fd) => nix::unistd::read(&fd, &mut e).unwrap_or(0),
            None => 0,
        };
        if n == 4 {
            let _ = waitpid(Pid::from_raw(self.pid), None);
            return Err(LaunchError::Exec(self.program.clone(), io::Error::from_raw_os_error(i32::from_ne_bytes(e))));
        }
        Ok(())
    }

    /// Kill a child that was never released.
    pub fn abandon(self) {
        // Dropping it closes the gate, which makes the child exit, and reaps it.
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.err_r = None;
        if self.gate_w.take().is_some() {
            // Never released: closing the gate (just done) makes the child exit; reap it.
            let _ = waitpid(Pid::from_raw(self.pid), None);
        }
    }
}

/// The child's side of [`Launched::spawn_spec`], between `fork` and `exec`: die with ftprof,
/// restore SIGINT, wait for the gate, redirect output, set no-new-privs when ftprof is elevated, `exec`; report `errno` on failure.
#[allow(clippy::too_many_arguments)]
fn exec_when_released(
    parent_pid: Pid,
    gate_r: OwnedFd,
    err_w: OwnedFd,
    (out_fd, err_fd): (RawFd, RawFd),
    no_new_privs: bool,
    path: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // Die with ftprof rather than run on unobserved.
    let _ = set_pdeathsig(Signal::SIGKILL);
    // A name no exec can give (an exec names a process after its file, which holds no '/'): while
    // the process still has it, its exec has not decided its dumpability yet.
    let _ = nix::sys::prctl::set_name(HELD_NAME);
    if getppid() != parent_pid {
        exit_now();
    }
    // SAFETY: restoring the default disposition installs no handler.
    let _ = unsafe { signal(Signal::SIGINT, SigHandler::SigDfl) };
    let mut byte = [0u8];
    if nix::unistd::read(&gate_r, &mut byte) != Ok(1) {
        exit_now(); // parent gave up
    }
    if out_fd >= 0 {
        // SAFETY: `out_fd` is the caller's open descriptor, borrowed for this call only.
        let _ = nix::unistd::dup2_stdout(unsafe { BorrowedFd::borrow_raw(out_fd) });
    }
    if err_fd >= 0 {
        // SAFETY: as above.
        let _ = nix::unistd::dup2_stderr(unsafe { BorrowedFd::borrow_raw(err_fd) });
    }
    if no_new_privs && nix::sys::prctl::set_no_new_privs().is_err() {
        let _ = nix::unistd::write(&err_w, &libc::EPERM.to_ne_bytes());
        exit_now();
    }
    // SAFETY: `path`, `argv` and `envp` were built before the fork; both arrays end with a null
    // pointer and point to NUL-terminated strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = nix::errno::Errno::last_raw();
    let _ = nix::unistd::write(&err_w, &e.to_ne_bytes());
    exit_now()
}

/// The name (`comm`) of a launched program held before its `exec`. The kernel names a process
/// after its file at `exec`, after deciding whether it is dumpable (`begin_new_exec`: `set_dumpable`,
/// then the comm record), and a file's name never contains '/': a launched process that no
/// longer has this name has finished deciding.
pub const HELD_NAME: &std::ffi::CStr = c"ftprof/held";

/// `_exit(127)`: leave the forked child without running the parent's exit handlers.
fn exit_now() -> ! {
    // SAFETY: `_exit` is async-signal-safe and has no preconditions.
    unsafe { libc::_exit(127) }
}
