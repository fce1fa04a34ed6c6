//! `ftprof` command-line entry point (see the crate docs in `lib.rs`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use flamegraph::{Format, Mode};
use ftprof::record::{self, RecordOptions};

#[derive(Parser)]
#[command(name = "ftprof", version, about = "Lock-contention and scaling profiler for free-threaded CPython")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// Interactive SVG flamegraph (inferno)
    Svg,
    /// Folded stacks, one line per stack
    Folded,
    /// ftprof's JSON profile (readable again by `ftprof report`)
    Json,
    /// Self-contained interactive report (flamegraph, where time went, top locks)
    Html,
    /// speedscope's JSON (speedscope.app)
    Speedscope,
    /// Firefox Profiler's processed profile (profiler.firefox.com)
    Firefox,
    /// gzip-compressed pprof profile.proto (go tool pprof, Pyroscope, Parca)
    Pprof,
}

impl FormatArg {
    fn format(self) -> Format {
        match self {
            FormatArg::Svg => Format::Svg,
            FormatArg::Folded => Format::Folded,
            FormatArg::Json => Format::Json,
            FormatArg::Html => Format::Html,
            FormatArg::Speedscope => Format::Speedscope,
            FormatArg::Firefox => Format::Firefox,
            FormatArg::Pprof => Format::Pprof,
        }
    }
}

impl ModeArg {
    fn mode(self) -> Mode {
        match self {
            ModeArg::Cpu => Mode::Cpu,
            ModeArg::Wait => Mode::Wait,
            ModeArg::Wall => Mode::Wall,
            ModeArg::Blame => Mode::Blame,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// CPU samples only
    Cpu,
    /// Waiting time only (the lock as the leaf frame)
    Wait,
    /// Running and waiting time together
    Wall,
    /// Time others waited on each lock, by what its holder was doing (the lock as the root)
    Blame,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command and profile every thread of it (Python and native frames merged).
    Record {
        /// Output file [default: profile.svg, profile.txt or profile.json by --format]
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Output format [default: from the -o extension (.svg, .json, .html, .speedscope.json,
        /// .gecko.json, .pb.gz; else folded), else svg]
        #[arg(short, long, value_enum)]
        format: Option<FormatArg>,
        /// What the flamegraph weighs: CPU samples, waiting time, or both (thread time)
        #[arg(short, long, value_enum, default_value = "wall")]
        mode: ModeArg,
        /// Keep idle time (sleep, join, waiting for an event) in the flamegraph
        #[arg(long)]
        idle: bool,
        /// Do not record switch-outs (no off-CPU time or lock waits; lowest overhead)
        #[arg(long)]
        no_waits: bool,
        /// Take a stack at every switch-out instead of sampling blocked threads: exact wait
        /// counts and stacks, but costly at high switch rates (a reference mode)
        #[arg(long, conflicts_with = "no_waits")]
        exact_waits: bool,
        /// Samples per second of CPU time, per thread
        #[arg(short, long, value_name = "HZ", default_value_t = 199, value_parser = clap::value_parser!(u64).range(1..=20000))]
        rate: u64,
        /// Bytes of user stack copied per sample (for DWARF unwinding)
        #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1024..=60000))]
        stack_size: u32,
        /// Title of the flamegraph [default: the command line]
        #[arg(long)]
        title: Option<String>,
        /// Also keep what the analysis is given (symbolized samples, waits, holder observations)
        /// in FILE, so that `ftprof report FILE` re-analyses and re-renders it later
        #[arg(long, value_name = "FILE")]
        capture: Option<PathBuf>,
        /// Follow child processes and execs of CPython interpreters (multiprocessing, process
        /// pools, launchers): each process's threads under `process PID (command)`
        #[arg(long)]
        subprocesses: bool,
        /// Attach to this running process instead of launching a command
        #[arg(short, long, value_name = "PID", conflicts_with = "command")]
        pid: Option<u32>,
        /// With --pid: stop after this many seconds (default: until Ctrl-C or the process exits)
        #[arg(short, long, value_name = "SECONDS", requires = "pid", value_parser = parse_seconds)]
        duration: Option<std::time::Duration>,
        /// The command to profile, e.g. -- python3.13t app.py
        #[arg(
            required_unless_present = "pid",
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<OsString>,
    },
    /// Render a JSON profile (from `record --format json`) in another format, e.g. the HTML
    /// report; or re-analyse a capture (from `record --capture`) with this ftprof and render it.
    Report {
        /// The JSON profile or the capture
        #[arg(value_name = "PROFILE.json|CAPTURE")]
        input: PathBuf,
        /// Output file [default: the input's name with the format's extension]
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Output format [default: from the -o extension, else html]
        #[arg(short, long, value_enum)]
        format: Option<FormatArg>,
        /// What the flamegraph weighs (the HTML report opens with it and can switch)
        #[arg(short, long, value_enum, default_value = "wall")]
        mode: ModeArg,
        /// Keep idle time (sleep, join, waiting for an event)
        #[arg(long)]
        idle: bool,
        /// Title [default: the command line]
        #[arg(long)]
        title: Option<String>,
    },
    /// Run a workload at several thread counts: speedup against ideal, fitted scalability
    /// models, and where the lost time went at each count.
    Scale(ftprof::scale::ScaleOptions),
    /// A live view of a running process (--pid) or a command: per-thread states, top functions
    /// and top locks, refreshed every second (q quits; an attached process keeps running).
    Top {
        /// Watch this running process instead of launching a command
        #[arg(short, long, value_name = "PID", conflicts_with = "command")]
        pid: Option<u32>,
        /// Samples per second of CPU time, per thread
        #[arg(short, long, value_name = "HZ", default_value_t = 199, value_parser = clap::value_parser!(u64).range(1..=20000))]
        rate: u64,
        /// Seconds between refreshes
        #[arg(short, long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
        interval: std::time::Duration,
        /// Follow child processes and execs of CPython interpreters (multiprocessing,
        /// ProcessPoolExecutor, launcher scripts); their threads are listed with the target's
        #[arg(long)]
        subprocesses: bool,
        /// The command to launch and watch, e.g. -- python3.13t app.py (its output is discarded)
        #[arg(
            required_unless_present = "pid",
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<OsString>,
    },
    /// Print what every thread of a running process is doing now: state, what it waits on (and
    /// who holds it), its Python stack; detects deadlocks.
    Dump {
        /// The process to inspect
        #[arg(short, long, value_name = "PID")]
        pid: u32,
        /// Merge native frames into the stacks
        #[arg(long)]
        native: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("the duration must be a positive number of seconds, not {s}"));
    }
    std::time::Duration::try_from_secs_f64(v).map_err(|_| format!("{s} seconds is too long"))
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line: clap's first line, without its usage block.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("ftprof: error: {first} (see ftprof --help)");
            std::process::exit(2);
        }
    };
    if let Some(why) = profiler::access::privilege().refusal() {
        eprintln!("ftprof: error: {why}");
        std::process::exit(2);
    }
    let result = match cli.cmd {
        Cmd::Record {
            output,
            format,
            mode,
            idle,
            no_waits,
            exact_waits,
            pid,
            duration,
            rate,
            stack_size,
            title,
            capture,
            subprocesses,
            command,
        } => {
            let format = match format {
                Some(f) => f.format(),
                None => {
                    output.as_deref().map(|o| Format::from_path(o).unwrap_or(Format::Folded)).unwrap_or(Format::Svg)
                }
            };
            let output = output.unwrap_or_else(|| PathBuf::from(format.default_file()));
            if matches!(mode, ModeArg::Blame) && (no_waits || exact_waits) {
                eprintln!(
                    "ftprof: error: --mode blame needs the default sampled waits (drop --{})",
                    if no_waits { "no-waits" } else { "exact-waits" }
                );
                std::process::exit(2);
            }
            if let Some(why) = flamegraph::unsupported(format, mode.mode()) {
                eprintln!("ftprof: error: {why}");
                std::process::exit(2);
            }
            record::run(&RecordOptions {
                command,
                pid,
                duration,
                output,
                format,
                rate_hz: rate,
                stack_bytes: stack_size & !7,
                title,
                mode: if no_waits { Mode::Cpu } else { mode.mode() },
                idle,
                waits: match (no_waits, exact_waits) {
                    (true, _) => engine::Waits::Off,
                    (false, true) => engine::Waits::Exact,
                    (false, false) => engine::Waits::Sampled,
                },
                subprocesses,
                capture,
            })
        }
        Cmd::Report { input, output, format, mode, idle, title } => {
            ftprof::report::run(&input, output, format.map(FormatArg::format), mode.mode(), idle, title.as_deref())
        }
        Cmd::Top { pid, rate, interval, subprocesses, command } => {
            ftprof::top::run(&ftprof::top::TopOptions { command, pid, rate_hz: rate, interval, subprocesses })
        }
        Cmd::Dump { pid, native, json } => ftprof::dump::run(pid, native, json),
        Cmd::Scale(opts) => ftprof::scale::run(&opts),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ftprof: error: {e:#}");
            std::process::exit(2);
        }
    }
}
