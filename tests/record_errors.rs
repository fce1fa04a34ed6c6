//! Every error path of `ftprof record`: one line on stderr, a remedy, non-zero exit, no panic.

mod common;

use std::os::unix::process::CommandExt;

use common::*;
#[test]
fn command_not_found() {
    let dir = tempdir();
    let out = ftprof()
        .args(["record", "-o"])
        .arg(dir.path().join("p.svg"))
        .args(["--", "no-such-command-ftprof"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "command not found: no-such-command-ftprof");
    assert!(!dir.path().join("p.svg").exists(), "no output left behind");
}

/// A CPython older than 3.13 (provisioned: see `python_old`) is refused with its version.
#[test]
fn old_cpython_is_refused_with_its_version() {
    let old = python_old();
    let (major, minor) = python_version(&old);
    let dir = tempdir();
    let out = ftprof()
        .args(["record", "-o"])
        .arg(dir.path().join("p.svg"))
        .arg("--")
        .arg(&old)
        .args(["-c", "pass"])
        .output()
        .unwrap();
    let e = assert_one_line_error(&out, &format!("is CPython {major}.{minor}"));
    assert!(e.contains("3.13 or newer"), "{e}");
}

#[test]
fn non_python_commands_are_refused_with_what_they_are() {
    let dir = tempdir();
    let out = ftprof().args(["record", "-o"]).arg(dir.path().join("p.svg")).args(["--", "true"]).output().unwrap();
    assert_one_line_error(&out, "is not a CPython interpreter");

    let script = dir.path().join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = ftprof().args(["record", "-o"]).arg(dir.path().join("p.svg")).arg("--").arg(&script).output().unwrap();
    assert_one_line_error(&out, "is not a CPython interpreter");
}

#[test]
fn unwritable_output_fails_before_the_target_starts() {
    let dir = tempdir();
    let marker = dir.path().join("ran");
    let code = format!("open({:?}, 'w').write('x')", marker.to_str().unwrap());
    let out = ftprof()
        .args(["record", "-o", "/nonexistent-dir/p.svg", "--"])
        .arg(python())
        .args(["-c", &code])
        .output()
        .unwrap();
    assert_one_line_error(&out, "/nonexistent-dir/p.svg");
    assert!(!marker.exists(), "the target must not have run");

    let out =
        ftprof().args(["record", "-o"]).arg(dir.path()).arg("--").arg(python()).args(["-c", &code]).output().unwrap();
    assert_one_line_error(&out, "is a directory");
    assert!(!marker.exists());
}

/// A seccomp filter makes the kernel refuse perf_event_open with EACCES, exactly as Docker's
/// default profile does, so this is the real refusal path.
#[test]
fn perf_event_open_refused() {
    #[repr(C)]
    struct SockFilter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    const NR_PERF_EVENT_OPEN: u32 = 298;
    let filter = [
        SockFilter { code: 0x20, jt: 0, jf: 0, k: 0 },                  // ld [nr]
        SockFilter { code: 0x15, jt: 0, jf: 1, k: NR_PERF_EVENT_OPEN }, // jeq perf_event_open
        SockFilter { code: 0x06, jt: 0, jf: 0, k: 0x0005_0000 | libc::EACCES as u32 }, // ret ERRNO(EACCES)
        SockFilter { code: 0x06, jt: 0, jf: 0, k: 0x7fff_0000 },        // ret ALLOW
    ];
    let dir = tempdir();
    let mut cmd = ftprof();
    cmd.args(["record", "-o"]).arg(dir.path().join("p.svg")).arg("--").arg(python()).args(["-c", "pass"]);
    let prog = SockFprog { len: filter.len() as u16, filter: filter.as_ptr() };
    let prog_addr = &prog as *const SockFprog as usize;
    // SAFETY: prctl(2) is async-signal-safe; `prog` outlives the spawn that runs the hook.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, 2 /* SECCOMP_MODE_FILTER */, prog_addr, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap();
    let e = assert_one_line_error(&out, "perf_event_open was refused");
    assert!(e.contains(&format!("perf_event_paranoid is {}", paranoid.trim())), "{e}");
    assert!(e.contains("sysctl kernel.perf_event_paranoid"), "remedy: {e}");
}
