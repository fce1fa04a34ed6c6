//! Shared helpers for the end-to-end tests: the real free-threaded CPython, the ftprof binary,
//! workloads, and a reader for the JSON profile.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The free-threaded interpreter (provisioned by the project's script; built once and cached).
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/provision-python.sh"))
            .output()
            .expect("run scripts/provision-python.sh");
        assert!(out.status.success(), "provisioning CPython failed:\n{}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// The default (GIL) build of the same CPython, provisioned the same way.
pub fn python_gil() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/provision-python.sh"))
            .arg("gil")
            .output()
            .expect("run scripts/provision-python.sh gil");
        assert!(out.status.success(), "provisioning the GIL build failed:\n{}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// A CPython older than 3.13, which ftprof must refuse (`scripts/provision-python.sh old`:
/// `$FTPROF_PYTHON_OLD`, else the first one on PATH).
pub fn python_old() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/provision-python.sh"))
            .arg("old")
            .output()
            .expect("run scripts/provision-python.sh old");
        assert!(out.status.success(), "no CPython older than 3.13:\n{}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// `(major, minor)` of a CPython, asked from the interpreter itself.
pub fn python_version(python: &Path) -> (u32, u32) {
    let out = Command::new(python)
        .args(["-c", "import sys; print(*sys.version_info[:2])"])
        .output()
        .expect("run the interpreter");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse().expect("a version number"));
    (it.next().expect("major"), it.next().expect("minor"))
}

/// A workload started in the background, killed on drop; its stdout lines are collected.
pub struct Background {
    pub child: std::process::Child,
    pub lines: Vec<String>,
    reader: std::io::BufReader<std::process::ChildStdout>,
}

impl Background {
    pub fn start(python: &Path, workload_name: &str, args: &[&str]) -> Background {
        let mut child = Command::new(python)
            .arg(workload(workload_name))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start workload");
        let reader = std::io::BufReader::new(child.stdout.take().unwrap());
        Background { child, lines: Vec::new(), reader }
    }

    /// Start `cmd` with its stdout captured.
    pub fn spawn(mut cmd: Command) -> Background {
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().expect("start workload");
        let reader = std::io::BufReader::new(child.stdout.take().unwrap());
        Background { child, lines: Vec::new(), reader }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Read lines until one equals `marker` (panics at EOF).
    pub fn wait_for(&mut self, marker: &str) {
        use std::io::BufRead;
        loop {
            let mut l = String::new();
            assert!(self.reader.read_line(&mut l).unwrap() > 0, "workload ended before printing {marker:?}");
            let l = l.trim().to_string();
            self.lines.push(l.clone());
            if l == marker {
                return;
            }
        }
    }

    /// `KEY VALUE` printed so far.
    pub fn value(&self, key: &str) -> String {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{key} ")).map(str::to_string))
            .unwrap_or_else(|| panic!("no `{key}` line in {:?}", self.lines))
    }

    /// Wait for exit; returns the exit code and the rest of stdout.
    /// Tell the workload to finish (the workloads that run until told stop on SIGUSR1).
    pub fn usr1(&self) {
        // SAFETY: kill(2) on our own child, not yet waited for (a zombie at worst).
        unsafe { libc::kill(self.pid() as i32, libc::SIGUSR1) };
    }

    pub fn finish(mut self) -> (Option<i32>, String) {
        use std::io::Read;
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        (status.code(), rest)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn workload(name: &str) -> PathBuf {
    root().join("tests/workloads").join(name)
}

/// 1-based line of the first line of `file` containing `marker`.
pub fn line_of(file: &Path, marker: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines().position(|l| l.contains(marker)).expect("marker in workload") as u64 + 1
}

pub fn ftprof() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ftprof"))
}

/// Runs `cmd` (and what it starts: ftprof, the target) at real-time round-robin `priority` where
/// permitted (root here; elsewhere it stays as it was). For end-to-end tests whose assertion is a
/// contention's size: on a machine busy with other CPU-bound processes, a woken thread waits for
/// the other process's time slice (nice −10 does not preempt it), threads rarely run at the same
/// moment, and contention shrinks to nothing; at a real-time priority they run when they can, as
/// on an idle machine. (The kernel's real-time throttling still leaves other processes 5 % of
/// each CPU.) What ftprof reports about machine load itself is tested without it
/// (`bounded.rs`).
#[allow(dead_code)]
pub fn realtime(cmd: &mut Command, priority: i32) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: sched_setscheduler(2) is async-signal-safe; its failure (not permitted) is ignored.
    unsafe {
        cmd.pre_exec(move || {
            let param = libc::sched_param { sched_priority: priority };
            libc::sched_setscheduler(0, libc::SCHED_RR, &param);
            Ok(())
        })
    }
}

/// [`realtime`] at priority 2 for ftprof, and `WORKERS_SCHED_RR=1` for the target: workloads
/// that honour it (`numpy_ufunc.py`, `dict_and_lock.py`, `pitfalls.py`) move their workers to priority 1,
/// below ftprof's (two real-time workers busy on both CPUs at ftprof's own priority kept its
/// reader from draining the rings: records were lost).
#[allow(dead_code)]
pub fn realtime_workers(cmd: &mut Command) -> &mut Command {
    realtime(cmd, 2).env("WORKERS_SCHED_RR", "1")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `native ids` printed by workloads as `tid NAME N` lines.
pub fn tids(stdout: &[u8]) -> std::collections::HashMap<String, u64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "tid").then_some(())?;
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// Run `ftprof record --format json` on `python workload args…`. Every such recording also
/// writes a capture, and `ftprof report` of it must give the same bytes as the recording's JSON.
pub fn record_json(workload_name: &str, args: &[&str], extra: &[&str]) -> (Profile, Output) {
    record_json_with(ftprof(), workload_name, args, extra)
}

/// [`record_json`] with `cmd` as the ftprof command (its scheduling, its environment).
pub fn record_json_with(mut cmd: Command, workload_name: &str, args: &[&str], extra: &[&str]) -> (Profile, Output) {
    let dir = tempdir();
    let out_path = dir.path().join("p.json");
    let capture = dir.path().join("p.capture");
    let out = cmd
        .arg("record")
        .args(["--format", "json", "-o"])
        .arg(&out_path)
        .arg("--capture")
        .arg(&capture)
        .args(extra)
        .arg("--")
        .arg(python())
        .arg(workload(workload_name))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ftprof failed: {}", String::from_utf8_lossy(&out.stderr));
    let recorded = std::fs::read(&out_path).unwrap();
    assert_rerenders(&capture, &recorded, "json");
    let v: Value = serde_json::from_slice(&recorded).unwrap();
    (Profile(v), out)
}

/// `ftprof report CAPTURE --format FORMAT` gives exactly `recorded`.
pub fn assert_rerenders(capture: &Path, recorded: &[u8], format: &str) {
    let again = capture.with_extension(format!("again.{format}"));
    let rep = ftprof().arg("report").arg(capture).args(["--format", format, "-o"]).arg(&again).output().unwrap();
    assert!(rep.status.success(), "ftprof report failed: {}", String::from_utf8_lossy(&rep.stderr));
    let rendered = std::fs::read(&again).unwrap();
    assert!(rendered == recorded, "the capture {} re-renders differently as {format}", capture.display());
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: String,
    pub name: String,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub module: Option<String>,
}

pub struct Profile(pub Value);

impl Profile {
    pub fn summary(&self, key: &str) -> f64 {
        self.0["summary"][key].as_f64().unwrap_or_else(|| panic!("summary.{key}"))
    }

    /// (thread tid, frames root→leaf, samples)
    pub fn stacks(&self) -> Vec<(u64, Vec<Frame>, u64)> {
        let frames: Vec<Frame> = self.0["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| Frame {
                kind: f["kind"].as_str().unwrap().to_string(),
                name: f["name"].as_str().unwrap().to_string(),
                file: f["file"].as_str().map(String::from),
                line: f["line"].as_u64(),
                module: f["module"].as_str().map(String::from),
            })
            .collect();
        self.0["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let fr = s["frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| frames[i.as_u64().unwrap() as usize].clone())
                    .collect();
                (s["thread"].as_u64().unwrap(), fr, s["samples"].as_u64().unwrap())
            })
            .collect()
    }

    pub fn thread_samples(&self, tid: u64) -> u64 {
        self.stacks().iter().filter(|s| s.0 == tid).map(|s| s.2).sum()
    }
}

/// Innermost Python frame of a stack.
pub fn innermost_python(frames: &[Frame]) -> Option<&Frame> {
    frames.iter().rev().find(|f| f.kind == "python")
}

/// Assert a failed run printed exactly one `ftprof: error:` line containing `needle`, without a
/// panic; returns that line.
pub fn assert_one_line_error(out: &Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "expected failure, got {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected:\n{stderr}");
    assert!(stderr.starts_with("ftprof: error:"), "{stderr}");
    assert!(stderr.contains(needle), "{stderr:?} lacks {needle:?}");
    stderr
}

/// `0x…` → number.
pub fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// The value of a `KEY VALUE` line a workload printed.
pub fn printed(stdout: &[u8], key: &str) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")).map(str::to_string))
        .unwrap_or_else(|| panic!("workload printed no `{key}` line"))
}

/// A CPython the version-sensitive tests run against, and where it lives.
#[derive(Clone, Debug)]
pub struct Interp {
    /// `3.13t`, `3.13`, `3.14`, `3.15`.
    pub label: &'static str,
    /// The root filesystem it runs in (Debian unstable's binaries, provisioned by
    /// `scripts/provision-python.sh 3.14|3.15`); `None` for the project's own 3.13 builds.
    pub root: Option<PathBuf>,
    /// The interpreter as the target sees it (inside `root` when there is one).
    pub exe: PathBuf,
    /// Extra environment for the target (`PYTHON_GIL=1` to run the free-threaded build with
    /// the GIL).
    pub env: Vec<(String, String)>,
}

/// The root filesystem holding Debian's `python3.14`/`python3.15`: `$FTPROF_PYTHON_314_ROOT`
/// (`…_315_…`) as exported by `scripts/test.sh`, else what the provisioning script prints
/// (it makes the root filesystem when missing). Fails the test with the reason otherwise.
pub fn rootfs(version: &str) -> PathBuf {
    static ROOTS: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let mut roots = ROOTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = roots.get(version) {
        return r.clone();
    }
    let var = format!("FTPROF_PYTHON_{}_ROOT", version.replace('.', ""));
    let root = match std::env::var_os(&var) {
        Some(r) => PathBuf::from(r),
        None => {
            let out = Command::new("bash")
                .arg(root().join("scripts/provision-python.sh"))
                .arg(version)
                .output()
                .expect("run scripts/provision-python.sh");
            assert!(
                out.status.success(),
                "CPython {version} is not provisioned ({var} unset) and `scripts/provision-python.sh {version}` failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        }
    };
    let exe = root.join(format!("usr/bin/python{version}"));
    assert!(
        exe.exists(),
        "{var}={}: no usr/bin/python{version} there; run scripts/provision-python.sh {version}",
        root.display()
    );
    // The chrooted interpreter and ftprof need /proc inside the root.
    let proc_dir = root.join("proc");
    let mounted = Command::new("mountpoint").arg("-q").arg(&proc_dir).status().is_ok_and(|s| s.success());
    if !mounted {
        let st = Command::new("mount").args(["-t", "proc", "proc"]).arg(&proc_dir).status().expect("run mount");
        assert!(st.success(), "mounting /proc in {} failed (the tests need root)", root.display());
    }
    roots.insert(version.to_string(), root.clone());
    root
}

/// Directory (as seen inside `root`) holding a copy of this build's ftprof and the workloads,
/// refreshed once per test process (each file written under a temporary name, then renamed, so
/// concurrent test processes never see a half-written file).
pub fn staged(root: &Path) -> PathBuf {
    static DONE: OnceLock<std::sync::Mutex<std::collections::HashSet<PathBuf>>> = OnceLock::new();
    let inside = PathBuf::from("/tmp/ftprof-tests");
    let mut done = DONE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if done.insert(root.to_path_buf()) {
        let dir = root.join(inside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dir.join("workloads")).unwrap();
        let put = |from: &Path, to: PathBuf| {
            let tmp = to.with_extension(format!("tmp{}", std::process::id()));
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, &to).unwrap();
        };
        put(Path::new(env!("CARGO_BIN_EXE_ftprof")), dir.join("ftprof"));
        // Files only (a `__pycache__` left by running a workload is not copied).
        for e in std::fs::read_dir(root_dir().join("tests/workloads")).unwrap().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            put(&e.path(), dir.join("workloads").join(e.file_name()));
        }
    }
    inside
}

fn root_dir() -> PathBuf {
    root()
}

pub fn interp(label: &'static str) -> Interp {
    match label {
        "3.13t" => Interp { label, root: None, exe: python(), env: Vec::new() },
        "3.13" => Interp { label, root: None, exe: python_gil(), env: Vec::new() },
        "3.14" | "3.15" => {
            let root = rootfs(label);
            Interp { label, exe: PathBuf::from(format!("/usr/bin/python{label}")), root: Some(root), env: Vec::new() }
        }
        _ => panic!("unknown interpreter {label}"),
    }
}

impl Interp {
    /// The same interpreter with extra environment for the target.
    pub fn with_env(mut self, k: &str, v: &str) -> Interp {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Path of workload `name` as the target sees it.
    pub fn workload(&self, name: &str) -> PathBuf {
        match &self.root {
            Some(r) => staged(r).join("workloads").join(name),
            None => workload(name),
        }
    }

    /// A command run where the interpreter lives (`chroot ROOT …` for a root filesystem).
    pub fn command(&self, program: &Path) -> Command {
        let mut c = match &self.root {
            Some(r) => {
                let mut c = Command::new("chroot");
                c.arg(r).arg(program);
                c
            }
            None => Command::new(program),
        };
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// `python workload args…`, where the interpreter lives.
    pub fn python(&self, workload_name: &str, args: &[&str]) -> Command {
        let mut c = self.command(&self.exe);
        c.arg(self.workload(workload_name)).args(args);
        c
    }

    /// ftprof launched next to the interpreter: inside its root filesystem (a copy of this
    /// build's binary), or the test binary itself.
    pub fn ftprof_inside(&self) -> Command {
        match &self.root {
            Some(r) => self.command(&staged(r).join("ftprof")),
            None => {
                let mut c = ftprof();
                for (k, v) in &self.env {
                    c.env(k, v);
                }
                c
            }
        }
    }

    /// A path ftprof launched inside can write, and the same file as the test sees it.
    pub fn scratch(&self, name: &str) -> (PathBuf, PathBuf, Option<tempfile::TempDir>) {
        match &self.root {
            Some(r) => {
                let inside = staged(r).join(name);
                let outside = r.join(inside.strip_prefix("/").unwrap());
                let _ = std::fs::remove_file(&outside);
                (inside, outside, None)
            }
            None => {
                let d = tempdir();
                let p = d.path().join(name);
                (p.clone(), p, Some(d))
            }
        }
    }

    /// Start a workload in the background (in the root filesystem when there is one; `chroot`
    /// execs the interpreter in place, so the child's PID is the interpreter's).
    pub fn background(&self, workload_name: &str, args: &[&str]) -> Background {
        let mut cmd = self.python(workload_name, args);
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().expect("start workload");
        let reader = std::io::BufReader::new(child.stdout.take().unwrap());
        Background { child, lines: Vec::new(), reader }
    }
}

/// Build a one-function extension module `name` for `python` in `dir`; with `declares_no_gil` it
/// declares `Py_mod_gil = Py_MOD_GIL_NOT_USED`.
pub fn build_extension(python: &Path, dir: &Path, name: &str, declares_no_gil: bool) -> PathBuf {
    let out = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['include']); print(sysconfig.get_config_var('EXT_SUFFIX'))",
        ])
        .output()
        .expect("run the interpreter");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let (include, suffix) = (lines.next().unwrap(), lines.next().unwrap());
    let slot = if declares_no_gil { "{Py_mod_gil, Py_MOD_GIL_NOT_USED}," } else { "" };
    let src = dir.join(format!("{name}.c"));
    std::fs::write(
        &src,
        format!(
            "#include <Python.h>\n\
             static PyModuleDef_Slot slots[] = {{ {slot} {{0, NULL}} }};\n\
             static struct PyModuleDef def = {{ PyModuleDef_HEAD_INIT, .m_name = \"{name}\", .m_slots = slots }};\n\
             PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModuleDef_Init(&def); }}\n"
        ),
    )
    .unwrap();
    let so = dir.join(format!("{name}{suffix}"));
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O1", "-Werror", "-I", include, "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .expect("run gcc (needed to build the test extension)");
    assert!(out.status.success(), "gcc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    so
}
