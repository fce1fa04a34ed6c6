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
    Svg,
    Folded,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// CPU samples only
    Cpu,
    /// Waiting time only (the lock as the leaf frame)
    Wait,
    /// Running and waiting time together
    Wall,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command and profile every thread of it (Python and native frames merged).
    Record {
        /// Output file [default: profile.svg, profile.txt or profile.json by --format]
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Output format [default: from the -o extension (.svg, .json, else folded), else svg]
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
    /// Run a workload at several thread counts: speedup against ideal, fitted scalability
    /// models, and where the lost time went at each count.
    Scale(ftprof::scale::ScaleOptions),
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
            subprocesses,
            command,
        } => {
            let format = match (format, output.as_ref().and_then(|o| o.extension()).and_then(|e| e.to_str())) {
                (Some(FormatArg::Svg), _) => Format::Svg,
                (Some(FormatArg::Folded), _) => Format::Folded,
                (Some(FormatArg::Json), _) => Format::Json,
                (None, Some("svg")) | (None, None) => Format::Svg,
                (None, Some("json")) => Format::Json,
                (None, Some(_)) => Format::Folded,
            };
            let output = output.unwrap_or_else(|| {
                PathBuf::from(match format {
                    Format::Svg => "profile.svg",
                    Format::Folded => "profile.txt",
                    Format::Json => "profile.json",
                })
            });
            record::run(&RecordOptions {
                command,
                pid,
                duration,
                output,
                format,
                rate_hz: rate,
                stack_bytes: stack_size & !7,
                title,
                mode: if no_waits {
                    Mode::Cpu
                } else {
                    match mode {
                        ModeArg::Cpu => Mode::Cpu,
                        ModeArg::Wait => Mode::Wait,
                        ModeArg::Wall => Mode::Wall,
                    }
                },
                idle,
                off_cpu: !no_waits,
                exact_waits,
                subprocesses,
            })
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
