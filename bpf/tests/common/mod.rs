//! Shared by the BPF tests: the provisioned free-threaded CPython and a workload driven through
//! its standard input and output.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// `$FTPROF_PYTHON`, else the free-threaded CPython from scripts/provision-python.sh.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FTPROF_PYTHON") {
        return PathBuf::from(p);
    }
    let out =
        Command::new("bash").arg(root().join("scripts/provision-python.sh")).output().expect("run provision-python.sh");
    assert!(out.status.success(), "provisioning CPython failed:\n{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// `$FTPROF_PYTHON_GIL`, else the default (GIL) build from scripts/provision-python.sh gil.
pub fn python_gil() -> PathBuf {
    if let Some(p) = std::env::var_os("FTPROF_PYTHON_GIL") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(root().join("scripts/provision-python.sh"))
        .arg("gil")
        .output()
        .expect("run provision-python.sh gil");
    assert!(out.status.success(), "provisioning the GIL build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The root filesystem with Debian's `python3.14`/`python3.15` (`$FTPROF_PYTHON_314_ROOT`, else
/// scripts/provision-python.sh 3.14), with /proc mounted inside.
pub fn rootfs() -> PathBuf {
    let root = match std::env::var_os("FTPROF_PYTHON_314_ROOT") {
        Some(r) => PathBuf::from(r),
        None => {
            let out = Command::new("bash")
                .arg(root().join("scripts/provision-python.sh"))
                .arg("3.14")
                .output()
                .expect("run provision-python.sh 3.14");
            assert!(out.status.success(), "provisioning 3.14 failed:\n{}", String::from_utf8_lossy(&out.stderr));
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        }
    };
    let proc_dir = root.join("proc");
    if !Command::new("mountpoint").arg("-q").arg(&proc_dir).status().is_ok_and(|s| s.success()) {
        let st = Command::new("mount").args(["-t", "proc", "proc"]).arg(&proc_dir).status().expect("run mount");
        assert!(st.success(), "mounting /proc in {} failed", root.display());
    }
    root
}

/// A workload from bpf/tests/py/, started and waited for until it printed `ready`.
pub struct Workload {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    pub fn start(script: &str, args: &[&str]) -> Workload {
        Workload::start_with(&python(), &["-X", "gil=0"], script, args)
    }

    /// With `/usr/bin/pythonVERSION` of the root filesystem `rootfs`, chrooted (the script is
    /// copied into it).
    pub fn start_in_root(rootfs: &Path, version: &str, script: &str) -> Workload {
        let dir = rootfs.join("tmp/ftprof-bpf-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!("{script}.{}", std::process::id()));
        std::fs::copy(root().join("bpf/tests/py").join(script), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(script)).unwrap();
        let inside = format!("/tmp/ftprof-bpf-tests/{script}");
        let exe = format!("/usr/bin/python{version}");
        Workload::spawn(Command::new("chroot").arg(rootfs).arg(exe).arg(inside))
    }

    /// With another interpreter and its options.
    pub fn start_with(python: &Path, opts: &[&str], script: &str, args: &[&str]) -> Workload {
        Workload::spawn(Command::new(python).args(opts).arg(root().join("bpf/tests/py").join(script)).args(args))
    }

    fn spawn(cmd: &mut Command) -> Workload {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("start the workload");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut w = Workload { child, stdin, stdout };
        assert_eq!(w.line(), "ready", "the workload did not start");
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the workload prints (panics at end of output).
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).expect("read the workload's output");
        assert!(!s.is_empty(), "the workload exited early");
        s.trim().to_owned()
    }

    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").and_then(|_| self.stdin.flush()).expect("write to the workload");
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
