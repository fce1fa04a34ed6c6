//! Launching the target held at a gate: the child is forked and waits on a pipe until the
//! parent has opened its perf events, then `exec`s the command (events use `enable_on_exec`).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
    gate_w: libc::c_int,
    err_r: libc::c_int,
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

        let mut gate = [0; 2];
        let mut err = [0; 2];
        let close_all = |fds: &[libc::c_int]| {
            for &fd in fds.iter().filter(|&&fd| fd >= 0) {
                unsafe { libc::close(fd) };
            }
        };
        if unsafe { libc::pipe2(gate.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(LaunchError::Fork(io::Error::last_os_error()));
        }
        if unsafe { libc::pipe2(err.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            let e = io::Error::last_os_error();
            close_all(&gate);
            return Err(LaunchError::Fork(e));
        }
        let parent_pid = unsafe { libc::getpid() };
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = io::Error::last_os_error();
            close_all(&gate);
            close_all(&err);
            return Err(LaunchError::Fork(e));
        }
        if pid == 0 {
            unsafe {
                libc::close(gate[1]);
                libc::close(err[0]);
                // Die with ftprof rather than run on unobserved.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent_pid {
                    libc::_exit(127);
                }
                // Default signal dispositions for the target.
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                let mut byte = 0u8;
                let n = libc::read(gate[0], &mut byte as *mut u8 as *mut libc::c_void, 1);
                if n != 1 {
                    libc::_exit(127); // parent gave up
                }
                if out_fd >= 0 {
                    libc::dup2(out_fd, 1);
                }
                if err_fd >= 0 {
                    libc::dup2(err_fd, 2);
                }
                libc::execve(path.as_ptr(), cptrs.as_ptr(), eptrs.as_ptr());
                let e = *libc::__errno_location();
                libc::write(err[1], &e as *const i32 as *const libc::c_void, 4);
                libc::_exit(127);
            }
        }
        unsafe {
            libc::close(gate[0]);
            libc::close(err[1]);
        }
        Ok(Launched { pid, gate_w: gate[1], err_r: err[0], program })
    }

    /// Let the child `exec`. Returns an error when `exec` itself failed.
    pub fn release(&mut self) -> Result<(), LaunchError> {
        let byte = 1u8;
        unsafe {
            libc::write(self.gate_w, &byte as *const u8 as *const libc::c_void, 1);
            libc::close(self.gate_w);
        }
        self.gate_w = -1;
        let mut e = 0i32;
        let n = unsafe { libc::read(self.err_r, &mut e as *mut i32 as *mut libc::c_void, 4) };
        unsafe { libc::close(self.err_r) };
        self.err_r = -1;
        if n == 4 {
            let mut status = 0;
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
            return Err(LaunchError::Exec(self.program.clone(), io::Error::from_raw_os_error(e)));
        }
        Ok(())
    }

    /// Kill a child that was never released.
    pub fn abandon(mut self) {
        unsafe {
            libc::close(self.gate_w);
            libc::close(self.err_r);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
        self.gate_w = -1;
        self.err_r = -1;
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        unsafe {
            if self.err_r >= 0 {
                libc::close(self.err_r);
            }
            if self.gate_w >= 0 {
                // Never released: closing the gate makes the child exit; reap it.
                libc::close(self.gate_w);
                let mut status = 0;
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
    }
}
