//! `ftprof top` in a real terminal (tmux; scripts/test.sh installs it when missing): the live view
//! shows the hot function of a known workload and its lock, quits cleanly (alternate screen left,
//! shell back) on `q`, Ctrl-C and the target's exit, survives a resize, and leaves an attached
//! target running.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A private tmux server (its own socket) running `sh` in a window of the given size.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(width: u32, height: u32) -> Tmux {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("ftprof-test-{}-{n}", std::process::id());
        let t = Tmux { socket };
        let out = t
            .cmd()
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", &width.to_string(), "-y"])
            .arg(height.to_string())
            .arg("env PS1='$ ' sh")
            .output()
            .expect("tmux (scripts/test.sh installs it)");
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "top", "-l", line]);
        self.run(&["send-keys", "-t", "top", "Enter"]);
    }

    fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", "top", key]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn alternate_on(&self) -> bool {
        self.run(&["display-message", "-p", "-t", "top", "#{alternate_on}"]).trim() == "1"
    }

    /// Poll the screen every 50 ms until `ok` holds; returns the screen, or panics with the last.
    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> (String, Duration) {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return (s, t0.elapsed());
            }
            assert!(t0.elapsed() < limit, "no {what} after {limit:?}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

const HEADER: &str = "ftprof top — pid";

/// The view shows `top_hot_function` among the functions and the workload's lock (a
/// `_thread.lock`, with the line that waits for it in that function) among the locks.
fn shows_function_and_lock(s: &str) -> bool {
    let function = s.lines().any(|l| l.contains("top_hot_function (top_lock.py)"));
    let lock = s.lines().any(|l| l.contains("_thread.lock @ 0x") && l.contains("top_hot_function (top_lock.py:"));
    function && lock
}

/// `ftprof top …; echo TOP-EXIT-"$?"` typed into the shell.
fn start_top(tmux: &Tmux, args: &str) {
    tmux.type_line(&format!("{} top {args}; echo TOP-EXIT-\"$?\"", env!("CARGO_BIN_EXE_ftprof")));
}

/// The exit status echoed after `ftprof top` returned (the typed command line, which shows
/// `TOP-EXIT-"$?"`, does not count).
fn top_exit(s: &str) -> Option<i32> {
    s.match_indices("TOP-EXIT-").find_map(|(i, m)| {
        let digits: String = s[i + m.len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    })
}

/// The target's CPU time (user + system ticks) from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the target is alive");
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn attached_view_shows_hot_function_and_lock_and_q_leaves_target_running() {
    let mut bg = Background::start(&python(), "top_lock.py", &[]);
    bg.wait_for("ready");
    let tmux = Tmux::new(160, 45);
    let started = Instant::now();
    start_top(&tmux, &format!("--pid {}", bg.pid()));
    let (_, first) = tmux.wait_for("first frame", Duration::from_secs(60), |s| s.contains(HEADER));
    let (screen, after_first) = tmux.wait_for("hot function and lock", Duration::from_secs(3), shows_function_and_lock);
    eprintln!(
        "top --pid: first frame {:.2} s after start, function and lock {:.2} s after the first frame",
        first.as_secs_f64(),
        after_first.as_secs_f64()
    );
    eprintln!("{screen}");
    assert!(screen.contains("CPython 3.13") || screen.contains("CPython 3.1"), "{screen}");
    assert!(screen.contains("free-threaded"), "{screen}");
    assert!(tmux.alternate_on(), "the view is not on the alternate screen");
    // The header names the top finding of the recording so far, with its line.
    let (found, _) = tmux.wait_for("the top finding", Duration::from_secs(15), |s| {
        s.lines().any(|l| l.contains("top finding: ") && l.contains("(top_lock.py:"))
    });
    eprintln!("{}", found.lines().find(|l| l.contains("top finding: ")).unwrap_or(""));

    // A resize redraws the view at the new size.
    tmux.run(&["resize-window", "-t", "top", "-x", "110", "-y", "35"]);
    let (resized, _) = tmux.wait_for("redraw after resize", Duration::from_secs(5), |s| {
        s.contains(HEADER) && s.lines().any(|l| l.starts_with("q quit")) && s.lines().count() <= 35
    });
    assert!(resized.lines().all(|l| l.chars().count() <= 110), "{resized}");

    // Keys: switch to CPU, sort by total, filter by the first thread, pause.
    for k in ["c", "s", "t", "p"] {
        tmux.key(k);
    }
    let (keys, _) = tmux.wait_for("the keys' effect", Duration::from_secs(5), |s| {
        s.contains("metric cpu") && s.contains("sort: total, last interval") && s.contains("PAUSED")
    });
    assert!(!keys.contains("thread: all"), "{keys}");

    let before_quit = cpu_ticks(bg.pid());
    tmux.key("q");
    let (after, quit) = tmux.wait_for("the shell after q", Duration::from_secs(10), |s| top_exit(s).is_some());
    assert_eq!(top_exit(&after), Some(0), "{after}");
    eprintln!("q → shell prompt in {:.2} s", quit.as_secs_f64());
    assert!(!tmux.alternate_on(), "still on the alternate screen after q");
    assert!(!after.contains(HEADER), "the view is still on the screen:\n{after}");
    assert!(after.contains("detached; the target keeps running"), "{after}");
    // The target keeps running (and working) after ftprof detached.
    std::thread::sleep(Duration::from_millis(500));
    assert!(bg.child.try_wait().unwrap().is_none(), "the target exited after ftprof top quit");
    let after_quit = cpu_ticks(bg.pid());
    assert!(after_quit > before_quit, "the target did not run after detach ({before_quit} → {after_quit} ticks)");
    bg.wait_for(&format!("tick {}", started.elapsed().as_millis() / 200 + 3));
}

#[test]
fn launched_view_ends_with_the_target_and_on_ctrl_c() {
    let py = python();
    let wl = workload("top_lock.py");

    // The target ends by itself: the view closes, the shell gets its exit status.
    let tmux = Tmux::new(150, 40);
    start_top(&tmux, &format!("-- {} {} 6", py.display(), wl.display()));
    let (_, first) = tmux.wait_for("first frame", Duration::from_secs(60), |s| s.contains(HEADER));
    // (The interpreter's start-up is in this interval: a wider bound than when attached.)
    let (_, shown) = tmux.wait_for("hot function and lock", Duration::from_secs(10), shows_function_and_lock);
    eprintln!(
        "top -- cmd: first frame {:.2} s, function and lock {:.2} s after it",
        first.as_secs_f64(),
        shown.as_secs_f64()
    );
    let (after, _) =
        tmux.wait_for("the shell after the target ended", Duration::from_secs(30), |s| top_exit(s).is_some());
    assert!(top_exit(&after) == Some(0) && after.contains("the target ended (exit code 0)"), "{after}");
    assert!(!tmux.alternate_on() && !after.contains(HEADER), "{after}");
    drop(tmux);

    // Ctrl-C: the view closes at once, the launched target is stopped.
    let tmux = Tmux::new(150, 40);
    start_top(&tmux, &format!("-- {} {} 120", py.display(), wl.display()));
    let (screen, _) = tmux
        .wait_for("hot function", Duration::from_secs(60), |s| s.contains(HEADER) && s.contains("top_hot_function"));
    let pid: u32 = screen
        .split(HEADER)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the header:\n{screen}"));
    tmux.key("C-c");
    let (after, _) = tmux.wait_for("the shell after Ctrl-C", Duration::from_secs(15), |s| top_exit(s).is_some());
    assert_eq!(top_exit(&after), Some(0), "{after}");
    assert!(!tmux.alternate_on() && !after.contains(HEADER), "{after}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the launched target {pid} still runs");
}

/// The child processes of `pid` and theirs, recursively (`/proc/PID/task/*/children`).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for t in tasks.filter_map(|e| e.ok()) {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// Whether process `pid` still exists (and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()) != Some("Z"))
}

/// The `ftprof top` process started by [`start_top`] in `tmux`'s pane (the shell's child).
fn top_pid(tmux: &Tmux) -> u32 {
    let shell: u32 = tmux.run(&["display-message", "-p", "-t", "top", "#{pane_pid}"]).trim().parse().unwrap();
    let children = descendants(shell);
    *children
        .iter()
        .find(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"top")))
        .unwrap_or_else(|| panic!("no ftprof top among the pane's processes {children:?}"))
}

#[test]
fn a_closed_terminal_ends_the_view_and_detaches() {
    // ssh dropped or tmux killed: the terminal hangs up; ftprof must end (not spin on end of
    // file) and leave the attached target running.
    let mut bg = Background::start(&python(), "top_lock.py", &[]);
    bg.wait_for("ready");
    let tmux = Tmux::new(140, 40);
    start_top(&tmux, &format!("--pid {}", bg.pid()));
    tmux.wait_for("first frame", Duration::from_secs(60), |s| s.contains(HEADER));
    let top = top_pid(&tmux);
    let _ = tmux.cmd().arg("kill-server").output();
    let t0 = Instant::now();
    while alive(top) {
        assert!(t0.elapsed() < Duration::from_secs(10), "ftprof top still runs 10 s after its terminal closed");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(bg.child.try_wait().unwrap().is_none(), "the target exited with ftprof's terminal");
}

#[test]
fn subprocesses_show_the_workers_hot_function() {
    // A ProcessPoolExecutor whose 2 spawned workers run `hot`; the parent only waits. With
    // --subprocesses the workers' function is among the top functions, and their threads are
    // listed with the parent's.
    let py = python();
    let wl = workload("process_pool.py");
    let tmux = Tmux::new(160, 45);
    start_top(&tmux, &format!("--subprocesses -- {} {} spawn --rounds=400", py.display(), wl.display()));
    let (screen, _) = tmux.wait_for("the workers' hot function", Duration::from_secs(90), |s| {
        s.contains(HEADER) && s.lines().any(|l| l.contains("hot (process_pool.py)"))
    });
    eprintln!("{screen}");
    // The launched program and its workers (ftprof top's descendants).
    let launched = descendants(top_pid(&tmux));
    assert!(launched.len() >= 3, "the pool's parent and 2 workers: {launched:?}");
    tmux.key("q");
    let (after, _) = tmux.wait_for("the shell after q", Duration::from_secs(30), |s| top_exit(s).is_some());
    assert_eq!(top_exit(&after), Some(0), "{after}");
    // Quitting stops the launched program with its worker processes (no orphans left running).
    let t0 = Instant::now();
    while launched.iter().any(|&p| alive(p)) {
        assert!(t0.elapsed() < Duration::from_secs(15), "the pool or its workers still run after q");
        std::thread::sleep(Duration::from_millis(200));
    }
}
