//! End-to-end tests of the privilege boundary (`profiler::access`): a copy of ftprof with the
//! README's file capabilities (`cap_perfmon,cap_sys_ptrace+ep`), run by an unprivileged user,
//! observes only what that user could trace — its own processes and the programs it launches —
//! and refuses root's and another user's processes for `dump`, `record --pid`, `top --pid` and
//! `--subprocesses`, before reading anything of them. Under real root everything still works.
//!
//! The tests run as root (like the rest of the suite): they create two system users
//! (`ftprof-test-a`, `ftprof-test-b`), a world-readable copy of the free-threaded CPython (the
//! provisioned one lives under root's home), and run commands as those users with `setpriv`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::*;

struct User {
    name: &'static str,
    uid: u32,
}

/// A system user for the tests (created when missing).
fn user(name: &'static str) -> User {
    let id = |flag: &str| Command::new("id").arg(flag).arg(name).output().expect("run id");
    if !id("-u").status.success() {
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .output()
            .expect("run useradd (the passwd package)");
        assert!(
            out.status.success(),
            "useradd {name} failed (the tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let uid = String::from_utf8(id("-u").stdout).unwrap().trim().parse().unwrap();
    User { name, uid }
}

/// `program` run as `user` (real, effective and saved ids; no supplementary groups), through a
/// shell as a user's terminal would: a capability binary exec'd by a shell is not dumpable, and
/// neither are the children it forks until they exec (`setpriv` exec'ing it directly would not
/// show that).
fn as_user(user: &User, program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", user.name, "--regid", user.name, "--clear-groups", "--", "/bin/sh", "-c", "exec \"$0\" \"$@\""])
        .arg(program);
    c.env_remove("FTPROF_CACHE");
    c
}

/// What every test shares: the users, a copy of the free-threaded CPython and of the workloads
/// that they can read, and a copy of this build's ftprof with the README's file capabilities.
struct Stage {
    a: User,
    b: User,
    python: PathBuf,
    workloads: PathBuf,
    ftprof_caps: PathBuf,
    _dir: tempfile::TempDir,
}

fn stage() -> &'static Stage {
    static S: OnceLock<Stage> = OnceLock::new();
    S.get_or_init(|| {
        let (a, b) = (user("ftprof-test-a"), user("ftprof-test-b"));
        let python = readable_python();
        let dir = tempfile::Builder::new().prefix("ftprof-privilege-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let workloads = dir.path().join("workloads");
        std::fs::create_dir(&workloads).unwrap();
        for f in ["priv_tree.py", "forever.py"] {
            std::fs::copy(workload(f), workloads.join(f)).unwrap();
        }
        let ftprof_caps = dir.path().join("ftprof");
        std::fs::copy(env!("CARGO_BIN_EXE_ftprof"), &ftprof_caps).unwrap();
        std::fs::set_permissions(&ftprof_caps, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new("setcap")
            .arg("cap_perfmon,cap_sys_ptrace+ep")
            .arg(&ftprof_caps)
            .output()
            .expect("run setcap (install it: apt-get install libcap2-bin)");
        assert!(out.status.success(), "setcap failed: {}", String::from_utf8_lossy(&out.stderr));
        Stage { a, b, python, workloads, ftprof_caps, _dir: dir }
    })
}

/// A copy of the provisioned free-threaded CPython that every user can run (the provisioned
/// one lives under root's home). Made once per interpreter build under /var/tmp and reused.
fn readable_python() -> PathBuf {
    let exe = python().canonicalize().unwrap();
    let prefix = exe.parent().and_then(Path::parent).expect("the interpreter lives in PREFIX/bin");
    let stamp = prefix.metadata().unwrap().modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let copy = PathBuf::from(format!(
        "/var/tmp/ftprof-tests-python/{}-{stamp}",
        prefix.file_name().unwrap().to_string_lossy()
    ));
    let done = copy.join(".complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        let st = Command::new("cp").arg("-a").arg(prefix).arg(&copy).status().expect("run cp");
        assert!(st.success(), "copying {} to {} failed", prefix.display(), copy.display());
        let st = Command::new("chmod").args(["-R", "a+rX"]).arg(&copy).status().expect("run chmod");
        assert!(st.success());
        std::fs::set_permissions(copy.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&done, "").unwrap();
    }
    copy.join("bin").join(exe.file_name().unwrap())
}

/// The tree workload run by `user` (None: by root) for `seconds`, with children run by `kids`.
fn tree(user: Option<&User>, seconds: &str, kids: &[&Path]) -> Background {
    let s = stage();
    let mut cmd = match user {
        Some(u) => as_user(u, &s.python),
        None => Command::new(&s.python),
    };
    cmd.arg(s.workloads.join("priv_tree.py")).arg(seconds).args(kids);
    let mut bg = Background::spawn(cmd);
    bg.wait_for("ready");
    bg
}

/// A directory user `u` can write, for outputs.
fn out_dir(u: &User) -> tempfile::TempDir {
    let d = tempdir();
    let st = Command::new("chown").arg(u.name).arg(d.path()).status().expect("run chown");
    assert!(st.success());
    d
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A refusal: non-zero exit, one line naming the rule and the remedies, nothing of the target
/// printed or written.
fn assert_refused(what: &str, out: &Output, pid: u32, output_file: Option<&Path>) {
    let (stdout, stderr) = text(out);
    assert!(!out.status.success(), "{what}: ftprof with capabilities observed process {pid}:\n{stdout}\n{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{what}: one line:\n{stderr}");
    for needle in [&format!("will not observe process {pid}") as &str, "sudo", "you could trace yourself"] {
        assert!(stderr.contains(needle), "{what}: the refusal names {needle:?}:\n{stderr}");
    }
    assert!(!stdout.contains("parent_loop"), "{what}: the target's stack was printed:\n{stdout}");
    if let Some(f) = output_file {
        assert!(!f.exists(), "{what}: an output was written: {}", f.display());
    }
}

#[test]
fn root_and_other_users_processes_are_refused() {
    let s = stage();
    let root_target = tree(None, "60", &[]);
    let other_target = tree(Some(&s.b), "60", &[]);
    let dir = out_dir(&s.a);
    for (whose, pid) in [("root's", root_target.pid()), ("another user's", other_target.pid())] {
        let out = as_user(&s.a, &s.ftprof_caps).args(["dump", "--pid", &pid.to_string()]).output().unwrap();
        assert_refused(&format!("dump of {whose} process"), &out, pid, None);

        let file = dir.path().join(format!("{pid}.json"));
        let out = as_user(&s.a, &s.ftprof_caps)
            .args(["record", "--pid", &pid.to_string(), "--duration", "1", "-o"])
            .arg(&file)
            .output()
            .unwrap();
        assert_refused(&format!("record --pid of {whose} process"), &out, pid, Some(&file));

        // `top` needs a terminal: run it in one (util-linux `script`), its output read from there.
        let line = format!(
            "setpriv --reuid {0} --regid {0} --clear-groups -- /bin/sh -c 'exec {1} top --pid {pid}'",
            s.a.name,
            s.ftprof_caps.display()
        );
        let out =
            Command::new("script").args(["-q", "-e", "-c", &line, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
        let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        let out = Output { status: out.status, stdout: Vec::new(), stderr: screen.into_bytes() };
        assert_refused(&format!("top --pid of {whose} process"), &out, pid, None);
    }
}

#[test]
fn own_processes_and_launched_programs_are_profiled() {
    let s = stage();
    let own = tree(Some(&s.a), "60", &[]);
    let pid = own.pid().to_string();
    let out = as_user(&s.a, &s.ftprof_caps).args(["dump", "--pid", &pid]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "dump of the user's own process:\n{stderr}");
    assert!(stdout.contains("parent_loop"), "dump shows the running function:\n{stdout}");

    let dir = out_dir(&s.a);
    let file = dir.path().join("attached.json");
    let out = as_user(&s.a, &s.ftprof_caps)
        .args(["record", "--pid", &pid, "--duration", "1", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "record --pid of the user's own process:\n{}", text(&out).1);
    let json = std::fs::read_to_string(&file).unwrap();
    assert!(json.contains("parent_loop"), "the attached profile has the target's frames");

    let file = dir.path().join("launched.json");
    let out = as_user(&s.a, &s.ftprof_caps)
        .args(["record", "-o"])
        .arg(&file)
        .arg("--")
        .arg(&s.python)
        .arg(s.workloads.join("priv_tree.py"))
        .arg("1")
        .output()
        .unwrap();
    assert!(out.status.success(), "record of a launched program:\n{}", text(&out).1);
    let json = std::fs::read_to_string(&file).unwrap();
    assert!(json.contains("parent_loop"), "the launched program's profile has its frames");
    // No BPF with privileges the caller lacks: the fallback is named, in the summary and JSON.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ps = &v["summary"]["python_stacks"];
    assert_eq!(ps["path"], "after-sample", "{ps}");
    assert!(ps["reason"].as_str().unwrap().contains("privileges its caller lacks"), "{ps}");
    let stderr = text(&out).1;
    assert!(
        stderr.contains("Python stacks: read after the sample (BPF not used: ftprof runs with privileges"),
        "{stderr}"
    );
    // Required (FTPROF_BPF=1) but refused: one line, non-zero, before the program starts.
    let out = as_user(&s.a, &s.ftprof_caps)
        .env("FTPROF_BPF", "1")
        .args(["record", "-o"])
        .arg(dir.path().join("required.json"))
        .arg("--")
        .arg(&s.python)
        .arg(s.workloads.join("priv_tree.py"))
        .arg("1")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stderr.trim().lines().count() == 1, "{stderr}");
    assert!(stderr.contains("FTPROF_BPF=1") && stderr.contains("unset FTPROF_BPF"), "{stderr}");
    assert!(!stdout.contains("ready") && !dir.path().join("required.json").exists(), "{stdout}");
}

/// A copy of the interpreter beside it (so it finds its standard library), owned by `owner`
/// with `mode`, removed on drop.
struct InterpreterCopy(PathBuf);

impl InterpreterCopy {
    fn new(s: &Stage, name: &str, owner: &str, mode: u32) -> InterpreterCopy {
        let p = s.python.with_file_name(format!("python-{name}-{}", std::process::id()));
        std::fs::copy(&s.python, &p).unwrap();
        let st = Command::new("chown").arg(owner).arg(&p).status().unwrap();
        assert!(st.success());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        InterpreterCopy(p)
    }

    /// Set-user-ID root, runnable only by user `a`'s group: its processes run with effective
    /// uid 0 and are not dumpable.
    fn setuid_root(s: &Stage) -> InterpreterCopy {
        InterpreterCopy::new(s, "setuid", &format!("root:{}", s.a.name), 0o4750)
    }
}

impl Drop for InterpreterCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `child PID EUID` lines printed by the tree workload.
fn children(lines: &[String]) -> Vec<(u32, u32)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut w = l.strip_prefix("child ")?.split_whitespace().map(|x| x.parse::<u32>().unwrap());
            Some((w.next()?, w.next()?))
        })
        .collect()
}

fn kill(pids: &[(u32, u32)]) {
    for (pid, _) in pids {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
}

#[test]
fn subprocesses_that_are_not_the_callers_are_not_followed() {
    let s = stage();
    let suid = InterpreterCopy::setuid_root(s);
    // Attached: the user's own process started a set-uid child (root, not dumpable) and an own one.
    let parent = tree(Some(&s.a), "30", &[&suid.0, &s.python]);
    let kids = children(&parent.lines);
    assert_eq!(kids.len(), 2, "{:?}", parent.lines);
    let (suid_child, own_child) = (kids[0], kids[1]);
    assert_eq!(
        suid_child.1,
        0,
        "the set-uid copy did not run with effective uid 0 (is {} on a nosuid filesystem?)",
        suid.0.display()
    );
    assert_eq!(own_child.1, s.a.uid);
    let dir = out_dir(&s.a);
    let file = dir.path().join("tree.json");
    let out = as_user(&s.a, &s.ftprof_caps)
        .args(["record", "--subprocesses", "--pid", &parent.pid().to_string(), "--duration", "1", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    kill(&kids);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "record --subprocesses of the user's own process:\n{stderr}");
    assert!(
        stderr.contains(&format!("not observed: ftprof will not observe process {}", suid_child.0)),
        "the set-uid child is reported as not observed:\n{stderr}"
    );
    let p: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let followed: Vec<u64> =
        p["summary"]["processes"].as_array().unwrap().iter().map(|x| x["pid"].as_u64().unwrap()).collect();
    assert!(followed.contains(&(parent.pid() as u64)) && followed.contains(&(own_child.0 as u64)), "{followed:?}");
    assert!(!followed.contains(&(suid_child.0 as u64)), "the set-uid child was followed: {followed:?}");
    let json = p.to_string();
    assert!(!json.contains(&format!("process {} ", suid_child.0)), "nothing of the set-uid child is in the profile");

    // Launched: the program and everything it starts stay the caller's (no new privileges), so
    // the same set-uid interpreter runs as the user and is followed.
    let file = dir.path().join("launched.json");
    let out = as_user(&s.a, &s.ftprof_caps)
        .args(["record", "--subprocesses", "-o"])
        .arg(&file)
        .arg("--")
        .arg(&s.python)
        .arg(s.workloads.join("priv_tree.py"))
        .arg("1")
        .arg(&suid.0)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "record --subprocesses of a launched program:\n{stderr}");
    let kids = children(&stdout.lines().map(str::to_string).collect::<Vec<_>>());
    assert_eq!(kids.len(), 1, "{stdout}");
    assert_eq!(kids[0].1, s.a.uid, "a launched program gains no privileges from a set-uid binary:\n{stdout}");
    assert!(!stderr.contains("warning: not observed"), "{stderr}");
}

#[test]
fn real_root_is_not_restricted() {
    let s = stage();
    let other = tree(Some(&s.b), "60", &[]);
    // Root running the same capability binary has nothing to gain from it: no restriction.
    let out = Command::new(&s.ftprof_caps).args(["dump", "--pid", &other.pid().to_string()]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "root's dump of another user's process:\n{stderr}");
    assert!(stdout.contains("parent_loop"), "{stdout}");
}

#[test]
fn a_set_uid_installation_is_refused() {
    let s = stage();
    let copy = s.ftprof_caps.with_file_name(format!("ftprof-setuid-{}", std::process::id()));
    std::fs::copy(env!("CARGO_BIN_EXE_ftprof"), &copy).unwrap();
    let st = Command::new("chown").arg(format!("root:{}", s.a.name)).arg(&copy).status().unwrap();
    assert!(st.success());
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4750)).unwrap();
    let target = tree(Some(&s.b), "60", &[]);
    let out = as_user(&s.a, &copy).args(["dump", "--pid", &target.pid().to_string()]).output().unwrap();
    let _ = std::fs::remove_file(&copy);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("set-user-ID") && stderr.contains("sudo"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!stdout.contains("parent_loop"), "{stdout}");
}

#[test]
fn an_unreadable_interpreter_is_named_as_a_permission_problem() {
    let s = stage();
    // Executable but not readable by its user: the kernel runs it, ftprof cannot read the ELF.
    let hidden = InterpreterCopy::new(s, "unreadable", "root:root", 0o711);
    let dir = out_dir(&s.a);
    let file = dir.path().join("launched.json");
    let out = as_user(&s.a, &s.ftprof_caps)
        .args(["record", "-o"])
        .arg(&file)
        .arg("--")
        .arg(&hidden.0)
        .arg(s.workloads.join("priv_tree.py"))
        .arg("1")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read {}", hidden.0.display())) && stderr.contains("ermission denied"),
        "{stderr}"
    );
    assert!(!stderr.contains("not a CPython"), "{stderr}");

    // Attached: the user's own process runs that interpreter.
    let mut cmd = as_user(&s.a, &hidden.0);
    cmd.arg(s.workloads.join("priv_tree.py")).arg("60");
    let mut target = Background::spawn(cmd);
    target.wait_for("ready");
    let out = as_user(&s.a, &s.ftprof_caps).args(["dump", "--pid", &target.pid().to_string()]).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // The kernel makes a process of an unreadable executable not dumpable (the user could not
    // ptrace it either): the refusal says so, and names the unreadable executable as a cause.
    assert!(
        stderr.contains(&format!("will not observe process {}", target.pid()))
            && stderr.contains("not dumpable")
            && stderr.contains("an executable that is not readable by you"),
        "{stderr}"
    );
    assert!(!stderr.contains("not a CPython"), "{stderr}");
}
