//! `ftprof top`: a live terminal view of a running (`--pid`) or launched program.
//!
//! The recording engine is the one of `ftprof record` (the same [`Recorder`] driven by the
//! engine's perf source on a background thread); once per interval it builds a cumulative
//! [`analysis::Profile`] of everything so far ([`Recorder::profile_now`]), reduced to
//! [`Totals`] and sent to the terminal thread, which keeps the [`Model`] (interval deltas,
//! sorting, filtering: `top_model`) and draws it with ratatui.

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use profiler::Sink;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use engine::Recorder;

use crate::record;
use crate::top_model::{Metric, Model, SortKey, Totals, View};

/// Options of `ftprof top`.
#[derive(Clone, Debug)]
pub struct TopOptions {
    /// The command to launch (empty with `pid`).
    pub command: Vec<OsString>,
    pub pid: Option<u32>,
    pub rate_hz: u64,
    /// How often the view is refreshed.
    pub interval: Duration,
    /// Follow child processes and `exec`s of CPython interpreters (as `record --subprocesses`).
    pub subprocesses: bool,
}

/// Set by SIGTERM/SIGINT/SIGHUP (a Ctrl-C in the terminal arrives as a key instead).
static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// Tells the recording thread to stop (detach, or stop the launched target).
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { signal(sig, SigHandler::Handler(on_signal)) };
    }
}

enum Input {
    Ready,
    None,
    HungUp,
}

/// Wait up to `timeout` for input on the terminal (standard input).
fn wait_for_input(timeout: Duration) -> Input {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::from(timeout.as_millis().min(10_000) as u16);
    match poll(&mut fds, ms) {
        Ok(0) => Input::None,
        Ok(_) => match fds[0].revents() {
            Some(r) if r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) => Input::HungUp,
            Some(r) if r.contains(PollFlags::POLLIN) => Input::Ready,
            _ => Input::None,
        },
        Err(nix::errno::Errno::EINTR) => Input::None,
        Err(_) => Input::HungUp,
    }
}

/// What the header shows besides the totals.
#[derive(Clone, Debug, Default)]
struct Header {
    pid: u32,
    command: String,
    python: String,
    lost: u64,
    /// The top finding of the recording so far (cumulative), with its remedy.
    finding: Option<String>,
}

enum Msg {
    Update(Box<(Totals, Vec<u32>, Header)>),
    Done(Result<profiler::RecordingOutcome, String>),
}

/// The recording side: the engine's [`Recorder`] plus the symbols its profiles need.
struct TopSink {
    rec: Recorder,
    symbols: engine::Symbols,
    interval: Duration,
    next: Instant,
    /// The target (0 until the recording started).
    pid: i32,
    tx: mpsc::Sender<Msg>,
}

impl TopSink {
    fn emit(&mut self) {
        if self.pid == 0 {
            return;
        }
        let profile = self.rec.profile_now(&mut self.symbols);
        let python = match &profile.target.python {
            Some(p) => format!(
                "CPython {}{}, GIL {}",
                p.version,
                if p.free_threaded { " free-threaded" } else { "" },
                match p.gil_enabled {
                    Some(true) => "enabled",
                    Some(false) => "disabled",
                    None => "unknown",
                }
            ),
            None => "CPython not located yet".into(),
        };
        let (lost_samples, lost_switches) = self.rec.lost();
        let header = Header {
            pid: self.pid as u32,
            command: profile.target.command.join(" "),
            python,
            lost: lost_samples + lost_switches,
            finding: profile
                .findings
                .first()
                .map(|f| format!("top finding: {} — do: {}", flamegraph::finding_line(f), f.remedy)),
        };
        let totals = Totals::from_profile(&profile, profile.summary.duration_s);
        let _ = self.tx.send(Msg::Update(Box::new((totals, self.rec.live_threads(), header))));
    }
}

impl Sink for TopSink {
    fn started(&mut self, pid: i32) {
        self.pid = pid;
        // The first view comes after half an interval.
        self.next = Instant::now() + self.interval / 2;
        self.rec.started(pid);
    }

    fn record(&mut self, r: profiler::Record) {
        self.rec.record(r);
    }

    // The BPF path needs the sampling events and the runtime before the first sample, and the
    // tick needs the loop's wake-up times: forwarded as `record` gets them.
    fn sampling_events(&mut self, events: &[std::os::fd::BorrowedFd<'_>]) {
        self.rec.sampling_events(events);
    }

    fn before_enable(&mut self, pid: i32) {
        self.rec.before_enable(pid);
    }

    fn woke(&mut self, at_ns: u64) {
        self.rec.woke(at_ns);
    }

    fn tick(&mut self) -> Duration {
        let sleep = self.rec.tick();
        let now = Instant::now();
        if now >= self.next {
            self.emit();
            self.next = Instant::now() + self.interval;
        }
        sleep.min(self.next.saturating_duration_since(Instant::now()))
    }
}

/// Run `ftprof top`. Returns the exit code (the launched target's, 0 when attached).
pub fn run(opts: &TopOptions) -> Result<i32> {
    use std::io::IsTerminal;
    if opts.interval < Duration::from_millis(100) {
        bail!("the refresh interval must be at least 0.1 s (each refresh rebuilds the profile)");
    }
    if !std::io::stdout().is_terminal() {
        bail!("ftprof top needs a terminal; to write a profile to a file use ftprof record");
    }
    let (interp, attach, hold_at) = record::resolve_interpreter(opts.pid, &opts.command)?;
    let cfg = engine::EngineConfig {
        rate_hz: opts.rate_hz,
        stack_bytes: 16384,
        waits: engine::Waits::Sampled,
        subprocesses: opts.subprocesses,
        attached: opts.pid.is_some(),
        command: opts.command.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        bpf_stacks: engine::bpf_requested(),
        hold_at,
    };
    let interp = interp.canonicalize().unwrap_or(interp).to_string_lossy().into_owned();
    let opnames = symbolizer::python::opcodes::base_opnames_cached(std::path::Path::new(&interp), &engine::cache_dir())
        .unwrap_or_default();
    let symbols = engine::preload(&interp, opnames);
    // The launched program's output would draw over the view: it goes to /dev/null.
    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null").context("opening /dev/null")?;
    let target = match &attach {
        Some(t) => profiler::Target::Attach { pid: t.pid as i32, duration: None },
        None => {
            use std::os::fd::AsRawFd;
            profiler::Target::LaunchSpec(profiler::LaunchSpec {
                argv: opts.command.clone(),
                env: Vec::new(),
                stdout: Some(devnull.as_raw_fd()),
                stderr: Some(devnull.as_raw_fd()),
            })
        }
    };
    let (tx, rx) = mpsc::channel();
    let sink = TopSink {
        rec: Recorder::new(&cfg),
        symbols,
        interval: opts.interval,
        next: Instant::now(),
        pid: 0,
        tx: tx.clone(),
    };
    let mut source = engine::PerfSource { target, sampling: cfg.sampling() };
    install_signal_handlers();
    let recording = std::thread::spawn(move || {
        let mut sink = sink;
        let r = engine::EventSource::run(&mut source, &mut sink, &STOP).map_err(|e| format!("{e:#}"));
        let _ = tx.send(Msg::Done(r));
        sink.rec.refused().iter().map(|(_, why)| why.clone()).collect::<Vec<String>>()
    });

    let mut terminal = ratatui::init();
    let ended = ui(&mut terminal, &rx, opts);
    ratatui::restore();
    STOP.store(true, Ordering::Relaxed);
    let quit = matches!(ended, Ended::Quit(_));
    let done = match ended {
        Ended::Done(r) => r,
        Ended::Quit(how) => {
            if attach.is_none() {
                eprintln!("ftprof top: {how}; stopping the target");
            }
            loop {
                match rx.recv() {
                    Ok(Msg::Done(r)) => break r,
                    Ok(Msg::Update(_)) => continue,
                    Err(_) => break Err("the recording thread ended without a result".into()),
                }
            }
        }
    };
    // Printed once the terminal is restored.
    for why in recording.join().unwrap_or_default() {
        eprintln!("ftprof top: warning: not observed: {why}");
    }
    drop(devnull);
    let outcome = done.map_err(anyhow::Error::msg)?;
    if opts.subprocesses && !outcome.followed_children {
        eprintln!(
            "ftprof top: warning: --subprocesses: child processes were not followed (attaching without CPU-wide events; run as root or grant CAP_PERFMON)"
        );
    }
    if let Some(t) = &attach {
        let how = match outcome.stop {
            profiler::StopReason::TargetExited => "the target exited",
            _ => "detached; the target keeps running",
        };
        eprintln!("ftprof top: pid {} watched for {:.1} s — {how}", t.pid, outcome.duration.as_secs_f64());
        return Ok(0);
    }
    let code = outcome.exit.map_or(0, profiler::ExitStatus::shell_code);
    let how = match outcome.exit {
        Some(profiler::ExitStatus::Signal(s)) => format!("killed by signal {s}"),
        _ => format!("exit code {code}"),
    };
    eprintln!("ftprof top: the target ended ({how}) after {:.1} s", outcome.duration.as_secs_f64());
    // Quitting the view is a normal end; when the target ended on its own, its status is ours.
    Ok(if quit { 0 } else { code })
}

enum Ended {
    /// The user quit (how).
    Quit(&'static str),
    /// The recording ended (the target exited, or an error).
    Done(Result<profiler::RecordingOutcome, String>),
}

fn ui(terminal: &mut ratatui::DefaultTerminal, rx: &mpsc::Receiver<Msg>, opts: &TopOptions) -> Ended {
    let mut model = Model::default();
    let mut view = View::default();
    let mut header = Header::default();
    let mut dirty = true;
    let mut buffered = false;
    loop {
        if SIGNALLED.load(Ordering::Relaxed) {
            return Ended::Quit("signalled");
        }
        loop {
            match rx.try_recv() {
                Ok(Msg::Update(u)) => {
                    if !view.paused {
                        let (totals, live, h) = *u;
                        model.update(totals, live);
                        header = h;
                        dirty = true;
                    }
                }
                Ok(Msg::Done(r)) => return Ended::Done(r),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Ended::Done(Err("the recording thread ended without a result".into()))
                }
            }
        }
        if dirty {
            // A failed draw (terminal gone) ends the view like a quit.
            if terminal.draw(|f| draw(f, &model, &view, &header, opts)).is_err() {
                return Ended::Quit("the terminal failed");
            }
            dirty = false;
        }
        // Wait for input on the terminal ourselves: crossterm's reader loops forever on a
        // terminal that has hung up (ssh dropped, tmux killed), so it is only asked once a key
        // is there. A resize is picked up by the next draw (ratatui resizes as it draws).
        // crossterm may hold events it has already read (several keys at once): those first.
        if !buffered {
            match wait_for_input(Duration::from_millis(100)) {
                Input::HungUp => return Ended::Quit("the terminal closed"),
                Input::None => continue,
                Input::Ready => {}
            }
        }
        match event::poll(Duration::ZERO) {
            Ok(true) => buffered = true,
            Ok(false) => {
                buffered = false;
                continue;
            }
            Err(_) => return Ended::Quit("the terminal failed"),
        }
        let Ok(ev) = event::read() else { return Ended::Quit("the terminal failed") };
        match ev {
            Event::Key(k) if k.kind != KeyEventKind::Release => {
                dirty = true;
                match k.code {
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ended::Quit("Ctrl-C"),
                    KeyCode::Char('q') | KeyCode::Esc => return Ended::Quit("quit"),
                    KeyCode::Char('m') => view.metric = view.metric.next(),
                    KeyCode::Char('c') => view.metric = Metric::Cpu,
                    KeyCode::Char('w') => view.metric = Metric::Wait,
                    KeyCode::Char('a') => view.metric = Metric::Wall,
                    KeyCode::Char('s') => view.sort = view.sort.next(),
                    KeyCode::Char('p') | KeyCode::Char(' ') => view.paused = !view.paused,
                    KeyCode::Char('t') => view.thread = model.next_thread(view.thread),
                    KeyCode::Char('0') => view.thread = None,
                    _ => dirty = false,
                }
            }
            Event::Resize(..) => dirty = true,
            _ => {}
        }
    }
}

fn pct(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// `us` as a percentage of one CPU over `span_s`.
fn of_cpu(us: f64, span_s: f64) -> String {
    if span_s <= 0.0 {
        return "-".into();
    }
    format!("{:.1}%", us / (span_s * 1e4))
}

fn secs(us: f64) -> String {
    format!("{:.2}", us / 1e6)
}

fn draw(f: &mut Frame, model: &Model, view: &View, header: &Header, opts: &TopOptions) {
    let threads = model.thread_rows();
    let thread_h = (threads.len() as u16 + 3).min(12);
    let [head, thr, funcs, locks, foot] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(thread_h),
        Constraint::Min(6),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(f.area());

    let thread_name = |tid: u32| {
        threads.iter().find(|t| t.tid == tid).map(|t| format!("{} ({tid})", t.name)).unwrap_or(tid.to_string())
    };
    let counts = format!(
        "{} | {:.1} s | samples {} | lost records {} | refresh {:.1} s",
        header.python,
        model.overall.elapsed_s,
        model.overall.samples,
        header.lost,
        opts.interval.as_secs_f64(),
    );
    let mut status = format!(
        "metric {} | sort: {} | thread: {}",
        view.metric.name(),
        view.sort.name(),
        view.thread.map(thread_name).unwrap_or_else(|| "all".into()),
    );
    if view.paused {
        status.push_str(" | PAUSED");
    }
    let title = if model.updates == 0 {
        "ftprof top — waiting for the first samples…".to_string()
    } else {
        format!("ftprof top — pid {} {}", header.pid, header.command)
    };
    let finding = header.finding.clone().unwrap_or_else(|| "top finding: none so far".into());
    f.render_widget(
        Paragraph::new(vec![Line::from(title).bold(), Line::from(counts), Line::from(status), Line::from(finding)]),
        head,
    );

    let span = model.interval.elapsed_s;
    draw_threads(f, thr, &threads, span);
    draw_functions(f, funcs, model, view, span);
    draw_locks(f, locks, model, view, span);
    f.render_widget(
        Paragraph::new(
            "q quit  m metric (c cpu, w wait, a wall)  s sort  p pause  t next thread  0 all threads".reversed(),
        ),
        foot,
    );
}

/// The threads table: state, running and waiting shares, categories of the last interval.
fn draw_threads(f: &mut Frame, thr: ratatui::layout::Rect, threads: &[crate::top_model::ThreadRow], span: f64) {
    let rows = threads.iter().map(|t| {
        let parts: Vec<String> = t.parts.iter().take(5).map(|(c, s)| format!("{} {}", c.name(), pct(*s))).collect();
        Row::new(vec![
            t.tid.to_string(),
            t.name.clone(),
            t.state.clone(),
            pct(t.running),
            pct(t.waiting),
            parts.join("  "),
        ])
    });
    let bold = Style::default().add_modifier(Modifier::BOLD);
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(7),
                Constraint::Length(14),
                Constraint::Length(16),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Fill(1),
            ],
        )
        .header(Row::new(vec!["TID", "THREAD", "STATE", "RUN", "WAIT", "LAST INTERVAL BY CATEGORY"]).style(bold))
        .block(Block::bordered().title(format!(" threads (last {span:.1} s) "))),
        thr,
    );
}

/// The functions table, by the view's metric and sort order.
fn draw_functions(f: &mut Frame, funcs: ratatui::layout::Rect, model: &Model, view: &View, span: f64) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let m = view.metric;
    let n = funcs.height.saturating_sub(3) as usize;
    let rows = model.function_rows(view, n).into_iter().map(|r| {
        Row::new(vec![
            of_cpu(r.interval.own.get(m), span),
            of_cpu(r.interval.total.get(m), span),
            secs(r.overall.own.get(m)),
            secs(r.overall.total.get(m)),
            r.label,
        ])
    });
    let sorted = |k: SortKey, s: &str| if view.sort == k { format!("[{s}]") } else { s.to_string() };
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new(vec![
                sorted(SortKey::OwnInterval, "%OWN"),
                sorted(SortKey::TotalInterval, "%TOTAL"),
                sorted(SortKey::OwnOverall, "OWN s"),
                sorted(SortKey::TotalOverall, "TOTAL s"),
                "FUNCTION".into(),
            ])
            .style(bold),
        )
        .block(
            Block::bordered().title(format!(
                " functions by {} time (% of one CPU over the last interval; seconds overall) ",
                m.name()
            )),
        ),
        funcs,
    );
}

/// The locks table: waiting time in the last interval and overall.
fn draw_locks(f: &mut Frame, locks: ratatui::layout::Rect, model: &Model, view: &View, span: f64) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let n = locks.height.saturating_sub(3) as usize;
    let rows = model.lock_rows(view, n).into_iter().map(|l| {
        Row::new(vec![
            of_cpu(l.interval_us, span),
            l.interval_waits.to_string(),
            secs(l.overall_us),
            l.overall_waits.to_string(),
            l.kind.name().to_string(),
            l.description,
            l.top_line.unwrap_or_default(),
        ])
    });
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(16),
                Constraint::Fill(3),
                Constraint::Fill(2),
            ],
        )
        .header(Row::new(vec!["%WAIT", "WAITS", "WAIT s", "WAITS", "KIND", "LOCK", "TOP LINE"]).style(bold))
        .block(Block::bordered().title(" locks (last interval | overall) ")),
        locks,
    );
}
