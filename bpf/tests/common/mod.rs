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

    /// With another interpreter and its options.
    pub fn start_with(python: &Path, opts: &[&str], script: &str, args: &[&str]) -> Workload {
        let mut child = Command::new(python)
            .args(opts)
            .arg(root().join("bpf/tests/py").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the workload");
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
