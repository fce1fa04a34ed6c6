//! The recording loop: start or follow the target, drain rings until it stops.

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};
use nix::unistd::Pid;

use crate::hold::Hold;
use crate::launch::{LaunchError, Launched};
use crate::perf::{self, PerfError, Ring, SamplingConfig};
use crate::records::Record;
use crate::records::SampleSource;

/// What to record.
#[derive(Clone, Debug)]
pub enum Target {
    /// Launch this command (`argv[0]` is looked up in PATH).
    Launch(Vec<OsString>),
    /// Launch with extra environment and redirected output.
    LaunchSpec(crate::launch::LaunchSpec),
    /// Follow a running process (and the threads it creates) for at most `duration`.
    Attach { pid: i32, duration: Option<Duration> },
}

/// Why recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    TargetExited,
    Interrupted,
    /// `--duration` elapsed (attach mode).
    Duration,
}

/// How the target ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RecordingOutcome {
    pub pid: i32,
    pub exit: Option<ExitStatus>,
    pub stop: StopReason,
    /// Wall time from release of the target to the end of recording.
    pub duration: Duration,
    /// CLOCK_MONOTONIC ns when the target was released.
    pub start_ns: u64,
    /// Records the kernel dropped because a ring buffer was full (samples' rings).
    pub lost: u64,
    /// Switch records the kernel dropped.
    pub lost_switches: u64,
    /// User + system CPU seconds of the target and its threads (from `wait4`), when it exited.
    pub target_cpu_seconds: Option<f64>,
    /// With [`SamplingConfig::follow_children`]: whether child processes were followed (not when
    /// attaching with per-thread events, which only cover the target's own threads).
    pub followed_children: bool,
    /// Launched: how long the target was held stopped after its `exec` (at
    /// [`Sink::hold_at`]) while ftprof got ready.
    pub held: Duration,
    /// Whether it was held at the `exec` itself (the breakpoint could not be set), before the
    /// program's own start-up, rather than at [`Sink::hold_at`].
    pub held_at_exec: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Perf(#[from] PerfError),
}

/// Longest sleep between drains when no ring wakes us.
const POLL_MS: u64 = 10;

/// A record stamped this long before a drain pass began is surely in its ring by then (the
/// kernel stamps and publishes a record within a few µs, with preemption disabled).
const PUBLISH_MARGIN_NS: u64 = 200_000;

/// What the recording loop hands its records to.
pub trait Sink {
    /// The target is about to `exec` (launch), or the events were just enabled (attach).
    fn started(&mut self, _pid: i32) {}
    /// The cpu-clock sampling events, opened and not yet enabled: a BPF program attached to
    /// them now (`PERF_EVENT_IOC_SET_BPF`, e.g. `bpf::PyStacks::attach`) runs at every sample,
    /// in the sampled thread, and is inherited with them. The descriptors stay open for the
    /// recording.
    fn sampling_events(&mut self, _events: &[BorrowedFd<'_>]) {}
    /// Attach only: the target passed its access check and its events are about to be enabled.
    /// What must be in place before the first sample (e.g. registering the target's runtime with
    /// a BPF program attached in [`Sink::sampling_events`], which writes no record for a process
    /// it does not know) is set up here.
    fn before_enable(&mut self, _pid: i32) {}
    /// One record, as drained (records of different CPUs are not in time order; a
    /// [`Record::Drained`] ends each pass).
    fn record(&mut self, r: Record);
    /// The loop just woke up (from its wait for the rings), at `at_ns` (CLOCK_MONOTONIC): a
    /// target thread switched out about now may have made room for ftprof itself.
    fn woke(&mut self, _at_ns: u64) {}
    /// Launch only, after [`Sink::sampling_events`]: where to hold the target (its start-up runs,
    /// none of the program's own code) until [`Sink::holding`] turns false; `None` releases it
    /// at once.
    fn hold_at(&mut self) -> Option<crate::hold::HoldAt> {
        None
    }
    /// Whether a held target must stay held (polled after every drain pass). With `wait`, block
    /// until it need not: the hold could not be made, and the target waits before its `exec`.
    fn holding(&mut self, _wait: bool) -> bool {
        false
    }
    /// Called after every drain pass; returns how long the loop may sleep before the next call.
    fn tick(&mut self) -> Duration {
        Duration::from_millis(POLL_MS)
    }
}

/// Counts of dropped records, per ring kind.
#[derive(Default)]
struct LostCounts {
    samples: u64,
    switches: u64,
}

pub fn monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// The draining thread must run soon after a ring wakes it even when the target keeps a hundred
/// threads runnable: where allowed (root, CAP_SYS_NICE), it runs at nice -10. Its work per
/// wake-up is bounded, so it cannot take more than its small share.
/// Restores the thread's priority when the recording ends (a later launch forks from it).
#[must_use]
struct DrainPriority(libc::c_int);

fn raise_drain_priority() -> DrainPriority {
    // SAFETY: get/setpriority on the calling thread (who = 0 is the caller's tid on Linux);
    // failure (no permission) leaves it unchanged, which is fine.
    unsafe {
        let before = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, before.min(-10));
        DrainPriority(before)
    }
}

impl Drop for DrainPriority {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, self.0) };
    }
}

/// Record `target` until it exits or `stop` becomes true. Every record is passed to `sink` as it
/// is drained (on this thread).
pub fn record(
    target: &Target,
    cfg: &SamplingConfig,
    stop: &AtomicBool,
    sink: &mut dyn Sink,
) -> Result<RecordingOutcome, RecordError> {
    let mut child = match target {
        Target::Launch(argv) => Launched::spawn(argv)?,
        Target::LaunchSpec(spec) => Launched::spawn_spec(spec)?,
        Target::Attach { pid, duration } => return attach(*pid, *duration, cfg, stop, sink),
    };
    let pid = child.pid;
    // After the fork: the target keeps its own priority.
    let _priority = raise_drain_priority();
    let (mut rings, mut filter) = match open_rings(pid, cfg, true) {
        Ok(r) => r,
        Err(e) => {
            child.abandon();
            return Err(e.into());
        }
    };
    sink.sampling_events(&cpu_clock_fds(&rings));
    if filter.is_some() {
        // CPU-wide events cannot be enabled on exec: enable them now, just before the release.
        for r in &rings {
            r.enable().map_err(PerfError::Other)?;
        }
    }
    // Held at an instruction after its exec (see `hold`), else before its exec.
    let hold_at = sink.hold_at();
    let mut hold = hold_at.as_ref().and_then(|_| Hold::seize(pid));
    if hold_at.is_some() && hold.is_none() {
        sink.holding(true);
    }
    sink.started(pid);
    let start_ns = monotonic_ns();
    let started = Instant::now();
    child.release()?;
    if let (Some(h), Some(at)) = (&mut hold, &hold_at) {
        h.after_exec(at);
    }
    let held_at_exec = hold.as_ref().is_some_and(|h| h.fallback.is_some());
    if let Some(at) = &hold_at {
        timing_held_where(at, hold.as_ref());
    }
    let mut held = Duration::ZERO;

    let mut lost = LostCounts::default();
    let (mut exit, mut cpu) = (None, None);
    let mut stop_reason = StopReason::TargetExited;
    let mut escalation = Escalation::default();

    let mut wait = Duration::from_millis(POLL_MS);
    loop {
        // Held: look again soon (the hold ends when the sink is ready, not at a ring's wake-up).
        poll_rings(&rings, if hold.is_some() { wait.min(Duration::from_millis(1)) } else { wait });
        sink.woke(monotonic_ns());
        drain_all(&mut rings, &mut lost, filter.as_mut(), sink);
        wait = sink.tick();
        if let Some(h) = &mut hold {
            h.service();
            if !sink.holding(false) || stop.load(Ordering::Relaxed) {
                held = hold.take().map(Hold::release).unwrap_or_default();
                if std::env::var_os("FTPROF_TIMING").is_some() {
                    eprintln!("ftprof timing: target released after {:?}, stopped {held:?} of it", started.elapsed());
                }
            }
        }
        match reap(pid) {
            Reaped::Running => {}
            Reaped::Exited(status, seconds) => {
                (exit, cpu) = (Some(status), Some(seconds));
                break;
            }
            Reaped::NotOurs => break,
        }
        if stop.load(Ordering::Relaxed) {
            stop_reason = StopReason::Interrupted;
            escalation.step(pid);
        }
    }
    for r in &rings {
        r.disable();
    }
    drain_all(&mut rings, &mut lost, filter.as_mut(), sink);
    sink.record(Record::Drained { upto: u64::MAX });
    Ok(RecordingOutcome {
        pid,
        exit,
        stop: stop_reason,
        duration: started.elapsed(),
        start_ns,
        lost: lost.samples,
        lost_switches: lost.switches,
        target_cpu_seconds: cpu,
        followed_children: cfg.follow_children,
        held,
        held_at_exec,
    })
}

/// With `FTPROF_TIMING`: where the launched target is held (`hold`: seized, else not).
fn timing_held_where(at: &crate::hold::HoldAt, hold: Option<&Hold>) {
    if std::env::var_os("FTPROF_TIMING").is_none() {
        return;
    }
    let how = match hold {
        None => "not seized: held before its exec".to_string(),
        Some(h) => h
            .fallback
            .clone()
            .map_or_else(|| format!("at {}+{:#x}", at.file.display(), at.offset), |why| format!("at its exec ({why})")),
    };
    eprintln!("ftprof timing: target held {how}");
}

/// The launched child, looked at without waiting.
enum Reaped {
    Running,
    /// It exited (reaped): how, and its user + system CPU seconds.
    Exited(ExitStatus, f64),
    /// Not our child any more.
    NotOurs,
}

fn reap(pid: i32) -> Reaped {
    if !child_exited(pid) {
        return Reaped::Running;
    }
    let mut status = 0;
    // SAFETY: `rusage` is plain data, all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // Reaping runs the kernel's clean-up of the target's /proc entries, which waits for the
    // target's exiting threads: at a real-time priority above theirs, on their CPU (pinned), it
    // waited for them forever (a livelock seen with ftprof at SCHED_RR 2 and the workers at 1).
    // So it reaps at normal priority; the priority is back after it (`scale` launches its next
    // run from this thread, which the launch inherits).
    let r = {
        let _normal = NormalPriority::enter();
        // SAFETY: both pointers are to live locals; nix has no `wait4` (the child's rusage).
        unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) }
    };
    if r < 0 {
        return Reaped::NotOurs;
    }
    if r != pid {
        return Reaped::Running;
    }
    let exit = if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Reaped::Exited(exit, tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// Stopping a launched target on Ctrl-C: a Ctrl-C in a terminal already reached it (same
/// process group), so it gets a second to finish, then SIGINT, SIGTERM and SIGKILL, 3 s apart.
#[derive(Default)]
struct Escalation {
    since: Option<Instant>,
    sent: usize,
}

impl Escalation {
    /// Called while the stop is pending: sends the signal that is due, if any.
    fn step(&mut self, pid: i32) {
        let since = *self.since.get_or_insert_with(Instant::now);
        let due = [1, 4, 7].get(self.sent).map(|&s| Duration::from_secs(s));
        if due.is_none_or(|d| since.elapsed() < d) {
            return;
        }
        let sig = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL][self.sent];
        // Its children too (a process pool's workers), as a Ctrl-C in the terminal would: the
        // descendants first, then the target.
        for child in crate::threads::descendants(pid as u32) {
            let _ = kill(Pid::from_raw(child as i32), sig);
        }
        let _ = kill(Pid::from_raw(pid), sig);
        self.sent += 1;
    }
}

/// Is `pid` still a live process (not gone, not a zombie)?
pub fn alive(pid: i32) -> bool {
    u32::try_from(pid).ok().and_then(|p| crate::threads::read_stat(p, None)).is_some_and(|s| s.state != 'Z')
}

fn attach(
    pid: i32,
    duration: Option<Duration>,
    cfg: &SamplingConfig,
    stop: &AtomicBool,
    sink: &mut dyn Sink,
) -> Result<RecordingOutcome, RecordError> {
    let _priority = raise_drain_priority();
    // CPU-wide events when allowed (no cost per context switch of the target); else one event
    // per thread of the target.
    let (mut rings, mut filter, _events) = match open_rings(pid, cfg, false) {
        Ok((rings, Some(mut filter))) => {
            if cfg.follow_children {
                filter.pids.extend(crate::threads::descendants(pid as u32));
            }
            (rings, Some(filter), None)
        }
        Ok((_, None)) | Err(PerfError::Permission { .. }) => {
            let mut events = perf::ThreadEvents::open(pid, cfg)?;
            let rings = std::mem::take(&mut events.rings);
            (rings, None, Some(events))
        }
        Err(e) => return Err(e.into()),
    };
    let mut sampling = cpu_clock_fds(&rings);
    if let Some(events) = &_events {
        sampling.extend(events.sampling_fds());
    }
    sink.sampling_events(&sampling);
    drop(sampling);
    // The events exist but sample nothing yet: check the target again (it may have exec'd a
    // set-id program since the caller's check) before the kernel copies any of its stacks.
    crate::access::check(pid as u32)
        .map_err(|e| PerfError::Other(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string())))?;
    sink.before_enable(pid);
    let start_ns = monotonic_ns();
    let started = Instant::now();
    for r in &rings {
        r.enable().map_err(PerfError::Other)?;
    }
    if let Some(events) = &_events {
        events.enable().map_err(PerfError::Other)?;
    }
    // Events are live: what the caller reads now is covered by what the rings report next.
    sink.started(pid);
    let mut lost = LostCounts::default();
    let mut wait = Duration::from_millis(POLL_MS);
    let reason = loop {
        poll_rings(&rings, wait);
        sink.woke(monotonic_ns());
        drain_all(&mut rings, &mut lost, filter.as_mut(), sink);
        wait = sink.tick();
        if stop.load(Ordering::Relaxed) {
            break StopReason::Interrupted;
        }
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break StopReason::Duration;
        }
        if !alive(pid) {
            break StopReason::TargetExited;
        }
    };
    drain_all(&mut rings, &mut lost, filter.as_mut(), sink);
    sink.record(Record::Drained { upto: u64::MAX });
    // Dropping the events detaches: nothing stays installed in the target.
    drop(rings);
    drop(_events);
    Ok(RecordingOutcome {
        pid,
        exit: None,
        stop: reason,
        duration: started.elapsed(),
        start_ns,
        lost: lost.samples,
        lost_switches: lost.switches,
        target_cpu_seconds: None,
        followed_children: cfg.follow_children && filter.is_some(),
        held: Duration::ZERO,
        held_at_exec: false,
    })
}

/// Wait until a ring has data or `wait` (at most POLL_MS) has passed. Nanosecond precision: a
/// timeout rounded down to 0 ms would turn the loop into a busy wait before every tick.
fn poll_rings(rings: &[Ring], wait: Duration) {
    let wait = wait.min(Duration::from_millis(POLL_MS));
    let mut fds: Vec<PollFd> = rings.iter().map(|r| PollFd::new(r.as_fd(), PollFlags::POLLIN)).collect();
    let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None);
}

/// Which processes' records to keep from CPU-wide rings: the target and the processes it forks.
struct PidFilter {
    pids: std::collections::HashSet<u32>,
}

impl PidFilter {
    fn keep(&mut self, r: &Record) -> bool {
        match r {
            Record::Sample(s) => self.pids.contains(&s.pid),
            Record::Mmap(m) => self.pids.contains(&m.pid),
            Record::Comm { pid, .. } | Record::Exit { pid, .. } | Record::Switch { pid, .. } => self.pids.contains(pid),
            Record::Fork { pid, ppid, .. } => {
                if self.pids.contains(ppid) {
                    self.pids.insert(*pid);
                }
                self.pids.contains(pid)
            }
            Record::Lost { .. } | Record::Drained { .. } => true,
        }
    }
}

fn cpu_clock_fds(rings: &[Ring]) -> Vec<BorrowedFd<'_>> {
    rings.iter().filter(|r| r.source() == SampleSource::CpuClock).map(|r| r.as_fd()).collect()
}

/// The rings for `pid`: CPU-wide with a filter when allowed and nothing needs per-task events
/// (sampling every switch-out does), else per-task (launch: inherited from `pid`;
/// attach: `None` — the caller opens per-thread events).
///
/// With privileges its caller lacks (`access`), ftprof never opens CPU-wide events: the kernel
/// would copy every process's user stack into the ring before the filter could drop it.
fn open_rings(pid: i32, cfg: &SamplingConfig, launch: bool) -> Result<(Vec<Ring>, Option<PidFilter>), PerfError> {
    if !cfg.switch_samples && std::env::var_os("FTPROF_PER_TASK_EVENTS").is_none() && !crate::access::is_elevated() {
        match perf::open_cpu_wide_rings(cfg) {
            Ok(rings) => {
                let pids = [pid as u32].into_iter().collect();
                return Ok((rings, Some(PidFilter { pids })));
            }
            Err(PerfError::Permission { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if launch {
        Ok((perf::open_process_rings(pid, cfg, true)?, None))
    } else {
        Ok((Vec::new(), None))
    }
}

/// Whether our child `pid` has exited (or is no longer our child), without reaping it.
fn child_exited(pid: i32) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::Pid(Pid::from_raw(pid)), flags), Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR))
}

/// The calling thread at normal priority while this lives, when it ran at a real-time one (its
/// policy and priority are restored on drop).
struct NormalPriority(Option<(libc::c_int, libc::sched_param)>);

impl NormalPriority {
    fn enter() -> NormalPriority {
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_getscheduler/sched_getparam/sched_setscheduler on the calling thread (0),
        // with valid parameter blocks; a failure leaves its policy as it was.
        unsafe {
            let policy = libc::sched_getscheduler(0);
            let base = policy & !libc::SCHED_RESET_ON_FORK;
            if (base == libc::SCHED_FIFO || base == libc::SCHED_RR) && libc::sched_getparam(0, &mut param) == 0 {
                let normal = libc::sched_param { sched_priority: 0 };
                if libc::sched_setscheduler(0, libc::SCHED_OTHER | (policy & libc::SCHED_RESET_ON_FORK), &normal) == 0 {
                    return NormalPriority(Some((policy, param)));
                }
            }
        }
        NormalPriority(None)
    }
}

impl Drop for NormalPriority {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.0.take() {
            // SAFETY: as in `enter`: the calling thread (the guard never leaves it), valid block.
            unsafe { libc::sched_setscheduler(0, policy, &param) };
        }
    }
}

fn drain_all(rings: &mut [Ring], lost: &mut LostCounts, mut filter: Option<&mut PidFilter>, sink: &mut dyn Sink) {
    // Drain until a pass finds nothing, so one busy CPU cannot starve the others, but give the
    // caller back control after 50 ms so that stop requests and deadlines are seen under load.
    let start = Instant::now();
    loop {
        let pass_start = monotonic_ns();
        let mut n = 0;
        for ring in rings.iter_mut() {
            n += ring.drain(&mut |r| {
                if let Record::Lost { count, source, .. } = r {
                    match source {
                        crate::records::SampleSource::CpuClock => lost.samples += count,
                        crate::records::SampleSource::SwitchOut => lost.switches += count,
                    }
                }
                // A sample of a thread in the middle of exiting can carry pid/tid -1: nothing to
                // attribute it to.
                let unnamed = matches!(&r, Record::Sample(s) if s.tid == u32::MAX || s.pid == u32::MAX);
                if !unnamed && filter.as_mut().is_none_or(|f| f.keep(&r)) {
                    sink.record(r)
                }
            });
        }
        sink.record(Record::Drained { upto: pass_start.saturating_sub(PUBLISH_MARGIN_NS) });
        if n == 0 || start.elapsed() >= Duration::from_millis(50) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_child_is_seen_without_being_reaped() {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(!child_exited(pid), "still running");
        let start = Instant::now();
        while !child_exited(pid) {
            assert!(start.elapsed() < Duration::from_secs(30), "sleep 0.2 never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Still there to reap, with its status: seeing it did not reap it.
        assert!(child.wait().unwrap().success());
        assert!(child_exited(pid), "no longer our child counts as exited");
    }

    #[test]
    fn a_realtime_thread_reaps_at_normal_priority_and_gets_its_priority_back() {
        std::thread::spawn(|| {
            // SAFETY (all blocks below): the calling thread, valid parameter blocks.
            let policy = || unsafe { libc::sched_getscheduler(0) };
            let priority = || {
                let mut p = libc::sched_param { sched_priority: -1 };
                unsafe { libc::sched_getparam(0, &mut p) };
                p.sched_priority
            };
            let param = libc::sched_param { sched_priority: 3 };
            let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
            assert_eq!(set, 0, "SCHED_RR needs root or CAP_SYS_NICE: {}", std::io::Error::last_os_error());
            {
                let _normal = NormalPriority::enter();
                assert_eq!((policy(), priority()), (libc::SCHED_OTHER, 0));
            }
            assert_eq!((policy(), priority()), (libc::SCHED_RR, 3));
            // Not real time: nothing changes.
            let normal = libc::sched_param { sched_priority: 0 };
            assert_eq!(unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &normal) }, 0);
            {
                let _normal = NormalPriority::enter();
                assert_eq!(policy(), libc::SCHED_OTHER);
            }
            assert_eq!(policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
