//! `ftprof scale`: run a workload at several thread counts (profiling each run), compute speedup
//! and efficiency, fit Amdahl and the USL, chart it, and say where the lost time went.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use analysis::baseline::{self, BaselineFile, PointView};
use analysis::scaling::{analyse, largest_growth, top_sites, Measure, RawPoint, ScaleResult};
use analysis::Profile;
use anyhow::{bail, Context, Result};
use flamegraph::Mode;
use profiler::{LaunchSpec, Target};

use crate::check::{check_interpreter, Interpreter};
use crate::record::record_profile;

/// Options of `ftprof scale` (also its command-line arguments).
#[derive(Clone, Debug, clap::Args)]
pub struct ScaleOptions {
    /// Thread counts, e.g. 1,2,4,8 (each replaces n written in curly braces in the command, and
    /// FTPROF_THREADS=n is set)
    #[arg(short, long, value_delimiter = ',', required = true, value_parser = parse_threads)]
    pub threads: Vec<u32>,
    /// Runs per thread count (the median is used)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// Output directory (index.html, report-n*.html, results.json, scaling.svg, breakdown.svg, diff.svg, flame-n*.svg, runs/)
    #[arg(short, long, default_value = "scaling")]
    pub output: PathBuf,
    /// Weak scaling: every thread does the same work (speedup = N·T1/TN) [default: strong, T1/TN]
    #[arg(long)]
    pub weak: bool,
    /// Measure a number the program prints instead of wall time: a regex whose first group captures it
    #[arg(long, value_name = "REGEX")]
    pub metric: Option<String>,
    /// The --metric is a rate (higher is better) [default: a duration, lower is better]
    #[arg(long, requires = "metric")]
    pub higher_is_better: bool,
    /// Exit with status 3 when the efficiency at the largest N is below EFF (0..1)
    #[arg(long, value_name = "EFF")]
    pub fail_under: Option<f64>,
    /// Compare with an earlier run's results.json: exit with status 3 when the speedup at some N
    /// dropped beyond the spread of both runs (see the README), naming what grew
    #[arg(long, value_name = "RESULTS_JSON")]
    pub baseline: Option<PathBuf>,
    /// With --baseline: the smallest relative drop of speedup counted as a regression
    #[arg(long, value_name = "FRACTION", default_value_t = baseline::DEFAULT_TOLERANCE, requires = "baseline", value_parser = parse_tolerance)]
    pub tolerance: f64,
    /// Only time the runs; do not profile them (no breakdown or flamegraphs)
    #[arg(long)]
    pub no_profile: bool,
    /// Sampling rate of the profiles
    #[arg(short, long = "rate", value_name = "HZ", default_value_t = 199, value_parser = clap::value_parser!(u64).range(1..=20000))]
    pub rate_hz: u64,
    /// The workload, e.g. -- python3.13t bench.py --threads N (N = n in curly braces)
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

fn parse_threads(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{s}' is not a thread count (a whole number ≥ 1, e.g. --threads 1,2,4)")),
    }
}

fn parse_tolerance(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a fraction between 0 and 1 (e.g. --tolerance 0.1 for 10 %)")),
    }
}

/// Read and check `--baseline` before any run: a missing or foreign file is a one-line error.
fn load_baseline(path: &std::path::Path, opts: &ScaleOptions) -> Result<BaselineFile> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read the --baseline {}; give the results.json of an earlier ftprof scale run", path.display())
    })?;
    let b: BaselineFile = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "--baseline {} is not an ftprof scale results.json ({e}); give the results.json of an earlier run",
            path.display()
        )
    })?;
    let scaling = if opts.weak { "weak" } else { "strong" };
    if b.scaling != scaling {
        bail!(
            "--baseline {} measured {} scaling, this run {scaling}: not comparable (use the same --weak setting)",
            path.display(),
            b.scaling
        );
    }
    let what = opts.metric.clone().unwrap_or_else(|| "wall_time_s".into());
    if b.measure.what != what || b.measure.higher_is_better != opts.higher_is_better {
        bail!(
            "--baseline {} measured {}, this run {what}: not comparable (use the same --metric and --higher-is-better)",
            path.display(),
            b.measure.what
        );
    }
    Ok(b)
}

/// Exit code when `--fail-under` is not met.
pub const EXIT_FAIL_UNDER: i32 = 3;

fn substitute(command: &[OsString], n: u32) -> Vec<OsString> {
    command.iter().map(|a| OsString::from(a.to_string_lossy().replace("{n}", &n.to_string()))).collect()
}

struct Run {
    value: Option<f64>,
    failure: Option<String>,
    profile: Option<Profile>,
}

fn parse_metric(re: &regex::Regex, text: &str) -> Option<f64> {
    // The last match wins (programs often print progress before the final figure).
    re.captures_iter(text)
        .last()
        .and_then(|c| c.get(1).or_else(|| c.get(0)))
        .and_then(|m| m.as_str().trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

fn one_run(opts: &ScaleOptions, interp: &std::path::Path, n: u32, r: u32, re: Option<&regex::Regex>) -> Result<Run> {
    let log_path = opts.output.join("runs").join(format!("n{n}-r{r}.log"));
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let argv = substitute(&opts.command, n);
    let env = vec![(OsString::from("FTPROF_THREADS"), OsString::from(n.to_string()))];
    let (elapsed, exit, profile) = if !opts.no_profile {
        let spec = LaunchSpec { argv, env, stdout: Some(log.as_raw_fd()), stderr: Some(log.as_raw_fd()) };
        let cfg = engine::EngineConfig {
            rate_hz: opts.rate_hz,
            stack_bytes: 16 * 1024,
            waits: engine::Waits::Sampled,
            subprocesses: false,
            attached: false,
            command: spec.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            bpf_stacks: engine::bpf_requested(),
            hold_at: None,
        };
        let (profile, outcome) = record_profile(Target::LaunchSpec(spec), interp, &cfg)?;
        let exit = match outcome.exit {
            Some(profiler::ExitStatus::Code(0)) => None,
            Some(e) => Some(e.to_string()),
            None => Some("did not finish".to_string()),
        };
        (outcome.duration.as_secs_f64(), exit, Some(profile))
    } else {
        let t = Instant::now();
        let status = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .envs(env)
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("starting {}", argv[0].to_string_lossy()))?;
        let exit = (!status.success()).then(|| match status.code() {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        });
        (t.elapsed().as_secs_f64(), exit, None)
    };
    let log_name = format!("runs/n{n}-r{r}.log");
    if let Some(e) = exit {
        return Ok(Run { value: None, failure: Some(format!("N={n} run {r}: {e} (see {log_name})")), profile });
    }
    let value = match re {
        None => Some(elapsed),
        Some(re) => {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            match parse_metric(re, &text) {
                Some(v) => Some(v),
                None => {
                    return Ok(Run {
                        value: None,
                        failure: Some(format!("N={n} run {r}: the --metric regex matched no number (see {log_name})")),
                        profile,
                    })
                }
            }
        }
    };
    Ok(Run { value, failure: None, profile })
}

/// Run `ftprof scale`; returns the exit code.
pub fn run(opts: &ScaleOptions) -> Result<i32> {
    if opts.threads.is_empty() {
        bail!("--threads needs at least one thread count, e.g. --threads 1,2,4");
    }
    let re = match &opts.metric {
        Some(m) => Some(regex::Regex::new(m).map_err(|e| {
            anyhow::anyhow!("invalid --metric regular expression: {}", e.to_string().lines().last().unwrap_or(""))
        })?),
        None => None,
    };
    let interp = interpreter(opts)?;
    let baseline_file = match &opts.baseline {
        Some(p) => Some((p.clone(), load_baseline(p, opts)?)),
        None => None,
    };
    std::fs::create_dir_all(opts.output.join("runs")).with_context(|| {
        format!("cannot create the output directory {}; choose another with -o", opts.output.display())
    })?;
    let cpus = profiler::perf::online_cpus().len() as u32;
    let mut threads = opts.threads.clone();
    threads.sort_unstable();
    threads.dedup();
    for &n in threads.iter().filter(|&&n| n > cpus) {
        eprintln!("ftprof: warning: {n} threads > {cpus} online CPUs: that point is oversubscribed");
    }
    let command_line: Vec<String> = opts.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let (raw, failures, first_profiles) = run_all(opts, &interp, &threads, re.as_ref())?;
    if raw.iter().all(|p| p.runs.is_empty()) {
        if re.is_some() && failures.iter().all(|f| f.contains("--metric")) {
            bail!(
                "the --metric regex never matched the output of any run; check it against {}/runs/*.log",
                opts.output.display()
            );
        }
        bail!("every run failed; the first: {}", failures.first().map(String::as_str).unwrap_or("?"));
    }
    let higher_is_better = opts.higher_is_better && re.is_some();
    let (mut points, amdahl, usl, fit_note) = analyse(raw, opts.weak, higher_is_better, cpus);
    let growth = largest_growth(&points);
    // The curve without the top contention: its predicted gain in each profiled run.
    let without = analysis::scaling::top_contention(&points, growth.as_ref());
    if let Some(c) = without {
        let gains: BTreeMap<u32, analysis::gain::Gain> = first_profiles
            .iter()
            .map(|(&n, p)| {
                let g = analysis::gain::gain(p, &analysis::gain::Target::Category(c), Some(cpus as usize));
                // No sample of it at that N: nothing to remove there.
                (n, g.unwrap_or(analysis::gain::Gain { factor: 1.0, low: 1.0, high: 1.0 }))
            })
            .collect();
        analysis::scaling::predict_without(&mut points, &gains);
    }
    let comparison = baseline_file.as_ref().map(|(path, b)| {
        let now: Vec<PointView> = points.iter().map(PointView::from).collect();
        baseline::compare(&now, &b.points, higher_is_better, opts.tolerance, &path.display().to_string())
    });
    let result = ScaleResult {
        schema_version: 2,
        command: command_line.clone(),
        scaling: if opts.weak { "weak" } else { "strong" }.into(),
        measure: match &opts.metric {
            Some(m) => Measure { what: m.clone(), higher_is_better: opts.higher_is_better },
            None => Measure { what: "wall_time_s".into(), higher_is_better: false },
        },
        repeat: opts.repeat,
        online_cpus: cpus,
        points,
        amdahl,
        usl,
        fit_note,
        growth,
        baseline: comparison,
        without: without.map(|c| c.name().to_string()),
    };
    let title = format!("ftprof scale: {}", command_line.join(" "));
    let written = write_outputs(opts, &result, &first_profiles, &title)?;
    print!("{}", table(&result));
    println!("wrote {}: {}", opts.output.display(), written.join(", "));
    for f in &failures {
        eprintln!("ftprof: failed run: {f}");
    }
    gates(opts, &result, &first_profiles)
}

/// The interpreter the command runs (checked when profiling), or the command's program.
fn interpreter(opts: &ScaleOptions) -> Result<PathBuf> {
    let first = substitute(&opts.command, opts.threads[0]);
    let Interpreter::CPython { path, .. } = if !opts.no_profile {
        check_interpreter(&first)?
    } else {
        match profiler::launch::resolve_command(&first[0]) {
            Some(p) => Interpreter::CPython { path: p, version: None, main_start: None },
            None => {
                bail!("command not found: {} (check the spelling, or give a full path)", first[0].to_string_lossy())
            }
        }
    };
    Ok(path)
}

/// Every run: the measurements per thread count, the failed runs, the first profile per N.
type Runs = (Vec<RawPoint>, Vec<String>, BTreeMap<u32, Profile>);

/// Run the command `opts.repeat` times at each thread count, with a progress bar. Repeats are
/// interleaved (every N once, then again): runs of the same repeat ran close in time, under
/// similar load from other processes, and their ratios are the paired speedups.
fn run_all(opts: &ScaleOptions, interp: &std::path::Path, threads: &[u32], re: Option<&regex::Regex>) -> Result<Runs> {
    let bar = indicatif::ProgressBar::new((threads.len() as u32 * opts.repeat) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} runs  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut failures = Vec::new();
    struct Acc {
        repeats: Vec<Option<f64>>,
        failed: u32,
        /// Thread time per category of each profiled run.
        profiled: Vec<BTreeMap<String, f64>>,
        first: Option<Profile>,
    }
    let mut acc: BTreeMap<u32, Acc> = threads
        .iter()
        .map(|&n| (n, Acc { repeats: Vec::new(), failed: 0, profiled: Vec::new(), first: None }))
        .collect();
    for r in 1..=opts.repeat {
        for &n in threads {
            let a = acc.get_mut(&n).expect("every thread count has an accumulator");
            bar.set_message(format!("N = {n}, run {r}"));
            let run = one_run(opts, interp, n, r, re)?;
            bar.inc(1);
            match (run.value, run.failure) {
                (Some(v), _) => a.repeats.push(Some(v)),
                (None, f) => {
                    a.repeats.push(None);
                    a.failed += 1;
                    let f = f.unwrap_or_default();
                    bar.println(format!("ftprof: {f}"));
                    failures.push(f);
                }
            }
            if let Some(p) = run.profile {
                a.profiled.push(
                    p.summary.categories.iter().map(|c| (c.category.name().to_string(), c.time_us as f64)).collect(),
                );
                a.first.get_or_insert(p);
            }
        }
    }
    let mut raw = Vec::new();
    let mut first_profiles = BTreeMap::new();
    for (n, a) in acc {
        let (category_us, category_se_us) = analysis::scaling::mean_and_se(&a.profiled);
        let total: f64 = category_us.values().sum();
        raw.push(RawPoint {
            threads: n,
            runs: a.repeats.iter().flatten().copied().collect(),
            failed_runs: a.failed,
            categories: category_us
                .iter()
                .map(|(k, v)| (k.clone(), if total > 0.0 { v / total } else { 0.0 }))
                .collect(),
            category_us,
            category_se_us,
            sites: a.first.as_ref().map(top_sites).unwrap_or_default(),
            repeats: a.repeats,
        });
        if let Some(p) = a.first {
            first_profiles.insert(n, p);
        }
    }
    bar.finish_and_clear();
    Ok((raw, failures, first_profiles))
}

/// results.json, the charts, the flamegraphs and the HTML index; returns the files written.
fn write_outputs(
    opts: &ScaleOptions,
    result: &ScaleResult,
    first_profiles: &BTreeMap<u32, Profile>,
    title: &str,
) -> Result<Vec<String>> {
    let out = &opts.output;
    let mut written = vec!["results.json".to_string()];
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(result)? + "\n")?;
    std::fs::write(out.join("scaling.svg"), flamegraph::charts::scaling_svg(result, title)?)?;
    written.push("scaling.svg".into());
    if !opts.no_profile {
        std::fs::write(out.join("breakdown.svg"), flamegraph::charts::breakdown_svg(result, title)?)?;
        written.push("breakdown.svg".into());
        for (n, p) in first_profiles {
            let mut svg = Vec::new();
            if flamegraph::svg(p, &format!("{title} — N = {n}"), Mode::Wall, false, &mut svg).is_ok() {
                std::fs::write(out.join(format!("flame-n{n}.svg")), svg)?;
                written.push(format!("flame-n{n}.svg"));
            }
        }
        if let (Some((lo, a)), Some((hi, b))) = (first_profiles.iter().next(), first_profiles.iter().next_back()) {
            if lo != hi {
                if let Ok(svg) =
                    flamegraph::diff_svg(a, b, &format!("{title} — what changed from N = {lo} to N = {hi}"))
                {
                    std::fs::write(out.join("diff.svg"), svg)?;
                    written.push("diff.svg".into());
                }
            }
        }
    }
    for (name, bytes) in flamegraph::html::scale_index(result, first_profiles, title)? {
        std::fs::write(out.join(&name), bytes)?;
        written.push(name);
    }
    Ok(written)
}

/// `--baseline` and `--fail-under`: the exit code (0, or [`EXIT_FAIL_UNDER`]), with the reasons
/// on stderr, each naming the top finding of the profile at the largest thread count (what to
/// change).
fn gates(opts: &ScaleOptions, result: &ScaleResult, first_profiles: &BTreeMap<u32, Profile>) -> Result<i32> {
    let finding = first_profiles.values().next_back().and_then(|p| p.findings.first()).map(finding_clause);
    let finding = finding.unwrap_or_default();
    let mut code = 0;
    if let Some(c) = &result.baseline {
        eprintln!("ftprof: {}{}", c.message, if c.verdict == "regression" { finding.as_str() } else { "" });
        if c.verdict == "regression" {
            code = EXIT_FAIL_UNDER;
        }
    }
    if let Some(min_eff) = opts.fail_under {
        let Some(last) = result.points.iter().rev().find(|p| p.efficiency.is_some()) else {
            bail!("--fail-under: no thread count was measured");
        };
        let eff = last.efficiency.unwrap_or(0.0);
        if eff < min_eff {
            eprintln!(
                "ftprof: efficiency {eff:.2} at N = {} is below {min_eff:.2}{}{finding}",
                last.threads,
                gate_reason(result)
            );
            code = EXIT_FAIL_UNDER;
        }
    }
    Ok(code)
}

/// `; top finding: TITLE at LINE (EVIDENCE) — do: REMEDY` for the gate messages.
fn finding_clause(f: &analysis::findings::Finding) -> String {
    format!("; top finding: {} ({}) — do: {}", flamegraph::finding_line(f), f.evidence, f.remedy)
}

/// Why `--fail-under` failed: the category whose thread time per unit of work grew most, with its
/// lock and line; waiting for a CPU is said beside it, never blamed on the program.
fn gate_reason(r: &ScaleResult) -> String {
    let ms = |us: f64| format!("{:.0} ms", us / 1000.0);
    let runqueue = |g: f64, from: u32, to: u32| {
        format!(
            "waiting for a CPU (runqueue) grew +{} per unit of work from N = {from} to N = {to}: other processes or more threads than CPUs",
            ms(g)
        )
    };
    match &r.growth {
        Some(g) => {
            let mut o = format!("; the largest growing category is {}", g.describe());
            if g.runqueue_growth_us > g.growth_us {
                o += &format!("; also {}", runqueue(g.runqueue_growth_us, g.from_threads, g.to_threads));
            }
            o
        }
        None => {
            let profiled: Vec<_> = r.points.iter().filter(|p| !p.per_work_us.is_empty()).collect();
            match (profiled.first(), profiled.last()) {
                (Some(a), Some(b)) if a.threads != b.threads => {
                    let get = |p: &analysis::scaling::ScalePoint| p.per_work_us.get("runqueue").copied().unwrap_or(0.0);
                    let g = get(b) - get(a);
                    if g > 0.0 {
                        format!(
                            "; no category of the program grew per unit of work beyond the variation between runs; {}",
                            runqueue(g, a.threads, b.threads)
                        )
                    } else {
                        "; no category of the program grew per unit of work beyond the variation between runs"
                            .to_string()
                    }
                }
                _ => String::new(),
            }
        }
    }
}

/// The terminal table.
pub fn table(r: &ScaleResult) -> String {
    let unit = if r.measure.what == "wall_time_s" { "s" } else { "" };
    let mut o = format!(
        "ftprof scale: {} scaling ({}) of {}\n",
        r.scaling,
        if r.scaling == "weak" {
            "same work per thread; speedup = N·T1/TN"
        } else {
            "fixed total work; speedup = T1/TN"
        },
        r.command.join(" ")
    );
    o += &format!(
        "measured: {}; {} run(s) per point; {} online CPUs\n",
        if r.measure.what == "wall_time_s" {
            "wall time".to_string()
        } else {
            format!(
                "metric /{}/ ({} is better)",
                r.measure.what,
                if r.measure.higher_is_better { "higher" } else { "lower" }
            )
        },
        r.repeat,
        r.online_cpus
    );
    o += "      N      median    spread  speedup  efficiency  where time went (contention and waiting)\n";
    for p in &r.points {
        let mark = if p.oversubscribed { "*" } else { " " };
        let med = if p.runs.is_empty() { "failed".to_string() } else { format!("{:.3}{unit}", p.median) };
        let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        let mut losses: Vec<(&String, &f64)> = p
            .categories
            .iter()
            .filter(|(k, v)| **v >= 0.01 && !matches!(k.as_str(), "python" | "native" | "join"))
            .collect();
        losses.sort_by(|a, b| b.1.total_cmp(a.1));
        let losses: Vec<String> = losses.iter().take(4).map(|(k, v)| format!("{k} {:.0} %", **v * 100.0)).collect();
        o += &format!(
            "  {:>5}{mark} {:>10} {:>8.1} % {:>8} {:>10}   {}\n",
            p.threads,
            med,
            p.spread * 100.0,
            f(p.speedup),
            f(p.efficiency),
            if losses.is_empty() { "-".to_string() } else { losses.join(", ") }
        );
    }
    if r.points.iter().any(|p| p.oversubscribed) {
        o += &format!("  * oversubscribed: more threads than the {} online CPUs\n", r.online_cpus);
    }
    if let Some(u) = r.usl {
        o += &format!(
            "USL fit: σ (contention) = {:.4}, κ (coherency) = {:.5}, {}\n",
            u.sigma,
            u.kappa,
            match u.peak_threads {
                Some(n) => format!("throughput peaks at N ≈ {n:.1}"),
                None => "no peak (κ = 0)".into(),
            }
        );
    }
    if let Some(a) = r.amdahl {
        o += &format!(
            "Amdahl fit: serial fraction {:.4} (max speedup {:.1})\n",
            a.serial_fraction,
            1.0 / a.serial_fraction.max(1e-9)
        );
    }
    if let Some(n) = &r.fit_note {
        o += &format!("{n}\n");
    }
    if let Some(c) = &r.without {
        let at: Vec<String> = r
            .points
            .iter()
            .filter_map(|p| {
                let w = p.without?;
                Some(format!(
                    "N = {}: {:.2} [{:.2}, {:.2}] (measured {:.2})",
                    p.threads, w.factor, w.low, w.high, p.speedup?
                ))
            })
            .collect();
        if !at.is_empty() {
            o += &format!("predicted speedup without {c} (see README, Predicted gain): {}\n", at.join(", "));
        }
    }
    if let Some(g) = &r.growth {
        o += &format!(
            "growth: thread time per unit of work ({}) grew most in {}\n",
            if r.scaling == "weak" { "÷ N: each thread does one unit" } else { "the whole run is one unit" },
            g.describe()
        );
        if g.runqueue_growth_us > 0.0 {
            o += &format!(
                "        waiting for a CPU (runqueue) grew +{:.0} ms per unit of work (other processes, or more threads than CPUs)\n",
                g.runqueue_growth_us / 1000.0
            );
        }
    }
    o
}
