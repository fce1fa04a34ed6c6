//! # flamegraph — rendering
//!
//! Job: present a profile. Input: an `analysis::Profile` (for `ftprof scale`, an
//! `analysis::scaling::ScaleResult` and the profile of each thread count). Output, one renderer
//! per format, all of the same aggregated profile ([`render`] picks one by [`Format`]): Brendan
//! Gregg folded stacks ([`folded`]) and an interactive SVG flamegraph through inferno ([`svg`]),
//! each weighted for a [`Mode`] (CPU samples, wait time, or both as wall-clock time); the JSON
//! profile ([`json`]); the self-contained HTML report ([`html`]: vendored d3 + d3-flame-graph,
//! and `ftprof scale`'s `index.html`); speedscope's JSON ([`speedscope`]); the Firefox
//! Profiler's processed profile ([`firefox`]); gzip-compressed pprof ([`pprof`]); the
//! end-of-recording terminal summary ([`summary_text`]); differential flamegraphs ([`diff_svg`])
//! and the charts of `ftprof scale` ([`charts`]: speedup against ideal with fitted curves, time
//! breakdown per thread count).

pub mod charts;
pub mod firefox;
pub mod html;
pub mod pprof;
pub mod speedscope;

use std::io::Write;

use analysis::{Category, FrameKind, Profile, Stack};
use inferno::flamegraph::color::{Color, PaletteMap};
use inferno::flamegraph::{self as inferno_fg, Options};

/// Output formats of `ftprof record`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Folded,
    Json,
    /// Self-contained interactive HTML report ([`html`]).
    Html,
    /// speedscope's JSON ([`speedscope`]).
    Speedscope,
    /// Firefox Profiler's processed profile ([`firefox`]).
    Firefox,
    /// gzip-compressed pprof profile.proto ([`pprof`]).
    Pprof,
}

impl Format {
    /// The format an output file name implies (`.svg`, `.json`, `.html`, `.speedscope.json`,
    /// `.pb.gz`/`.pprof`, `.gecko.json`/`.firefox.json`); `None`: no known extension.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        Some(if name.ends_with(".speedscope.json") {
            Format::Speedscope
        } else if name.ends_with(".gecko.json") || name.ends_with(".firefox.json") {
            Format::Firefox
        } else if name.ends_with(".pb.gz") || name.ends_with(".pprof") || name.ends_with(".pb") {
            Format::Pprof
        } else if name.ends_with(".json") {
            Format::Json
        } else if name.ends_with(".svg") {
            Format::Svg
        } else if name.ends_with(".html") || name.ends_with(".htm") {
            Format::Html
        } else if name.ends_with(".txt") || name.ends_with(".folded") {
            Format::Folded
        } else {
            return None;
        })
    }

    /// The default output file name of this format.
    pub fn default_file(self) -> &'static str {
        match self {
            Format::Svg => "profile.svg",
            Format::Folded => "profile.txt",
            Format::Json => "profile.json",
            Format::Html => "profile.html",
            Format::Speedscope => "profile.speedscope.json",
            Format::Firefox => "profile.gecko.json",
            Format::Pprof => "profile.pb.gz",
        }
    }
}

/// Render `p` in `format` (the one entry point `record` and `report` share). `title`: the
/// flamegraph's title (default: the command line). `Mode::Blame` is refused for the Firefox
/// Profiler only (pprof writes a `blame` sample type, speedscope `blame: <lock>` profiles, the
/// HTML report opens on its blame view).
pub fn render(p: &Profile, format: Format, title: Option<&str>, mode: Mode, idle: bool) -> anyhow::Result<Vec<u8>> {
    let title = title.map(str::to_string).unwrap_or_else(|| format!("ftprof: {}", p.target.command.join(" ")));
    let mut bytes = Vec::new();
    if let Some(why) = unsupported(format, mode) {
        anyhow::bail!("{why}");
    }
    match format {
        Format::Svg => svg(p, &title, mode, idle, &mut bytes)?,
        Format::Folded => bytes = folded(p, mode, idle).into_bytes(),
        Format::Json => json(p, &mut bytes)?,
        Format::Html => bytes = html::report(p, &title, mode, idle)?.into_bytes(),
        Format::Speedscope => speedscope::write(p, &title, mode, idle, &mut bytes)?,
        Format::Firefox => firefox::write(p, mode, idle, &mut bytes)?,
        Format::Pprof => pprof::write(p, mode, idle, &mut bytes)?,
    }
    Ok(bytes)
}

/// Why `format` cannot be written in `mode` (checked by [`render`], and by `record` before it
/// starts); `None`: it can.
pub fn unsupported(format: Format, mode: Mode) -> Option<&'static str> {
    (mode == Mode::Blame && format == Format::Firefox).then_some(
        "--mode blame is not written as a Firefox profile (its tracks are threads over time); use --format pprof, speedscope, html, svg or folded, or --mode wall, cpu or wait",
    )
}

/// What the flamegraph weighs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// CPU samples only (on-CPU stacks; counts are samples).
    Cpu,
    /// Off-CPU time only (waits; counts are microseconds), the lock as the leaf.
    Wait,
    /// CPU time and waits together (counts are microseconds of thread time).
    Wall,
    /// Time others waited on each lock (µs), by the holder's stack: the lock as the root, then
    /// the holding thread and its Python frames (see `analysis::blame`).
    Blame,
}

fn clean(label: &str) -> String {
    // ';' separates frames in folded stacks; newlines would split records.
    label.replace(';', ":").replace(['\n', '\r'], " ")
}

/// Weight of a stack in `mode` (0: left out).
pub(crate) fn weight(s: &Stack, mode: Mode, idle: bool, period_us: f64) -> u64 {
    if !idle && s.category.is_idle() {
        return 0;
    }
    match mode {
        Mode::Cpu => s.samples,
        // Waiting, including spinning and refcount stalls (contention that burns CPU, or yields it).
        Mode::Wait if s.category.on_cpu() && !s.category.is_contention() => 0,
        Mode::Wait => s.time_us(period_us) as u64,
        Mode::Wall => s.time_us(period_us) as u64,
        Mode::Blame => 0,
    }
}

fn period_us(p: &Profile) -> f64 {
    p.summary.period_us()
}

/// One line per distinct stack: `frame;frame;frame count`, root first.
pub fn folded(p: &Profile, mode: Mode, idle: bool) -> String {
    folded_with(p, mode, idle, true)
}

/// Like [`folded`]; without the per-thread root frames when `threads` is false (all threads
/// merged, as for comparing runs).
pub fn folded_with(p: &Profile, mode: Mode, idle: bool, threads: bool) -> String {
    let per = period_us(p);
    let mut merged: std::collections::BTreeMap<String, u64> = Default::default();
    if mode == Mode::Blame {
        for (path, w) in analysis::blame::folded_lines(p) {
            let path: Vec<String> = path.iter().map(|f| clean(f)).collect();
            *merged.entry(path.join(";")).or_default() += w;
        }
    }
    for (s, frames) in p.iter_stacks() {
        let w = weight(s, mode, idle, per);
        if w == 0 {
            continue;
        }
        let path: Vec<String> =
            frames.iter().filter(|f| threads || f.kind != FrameKind::Thread).map(|f| clean(&f.label())).collect();
        *merged.entry(path.join(";")).or_default() += w;
    }
    let mut lines: Vec<String> = merged.into_iter().map(|(k, w)| format!("{k} {w}")).collect();
    lines.sort();
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// A thread as the reports name it: `name (tid)`, or `thread (tid)` when it has no name.
pub(crate) fn thread_label(t: &analysis::ThreadInfo) -> String {
    analysis::profile::thread_label(&t.name, t.tid)
}

fn rgb(r: u8, g: u8, b: u8) -> Color {
    Color { r, g, b }
}

/// Colour of a wait leaf by its category.
pub(crate) fn category_color(c: Category) -> Color {
    match c {
        Category::CriticalSection => rgb(220, 50, 50),
        Category::Lock => rgb(200, 60, 140),
        Category::Pymutex => rgb(170, 70, 200),
        Category::StopTheWorld => rgb(120, 80, 220),
        Category::Gil => rgb(240, 60, 90),
        Category::Spin => rgb(250, 120, 40),
        Category::Refcount => rgb(245, 200, 40),
        Category::AtomicRefcount => rgb(235, 225, 140),
        Category::Gc => rgb(110, 170, 90),
        Category::Io => rgb(90, 190, 190),
        Category::Runqueue => rgb(160, 160, 110),
        Category::Join => rgb(215, 215, 215),
        Category::Sleep => rgb(200, 200, 180),
        _ => rgb(180, 180, 180),
    }
}

/// Colour of a category in the legends and charts: on-CPU Python and native time as their
/// frames, the waits as [`category_color`].
pub(crate) fn legend_color(c: Category) -> Color {
    match c {
        Category::Python => frame_color(FrameKind::Python, false),
        Category::Native => frame_color(FrameKind::Native, false),
        _ => category_color(c),
    }
}

fn frame_color(kind: FrameKind, inlined: bool) -> Color {
    match kind {
        FrameKind::Thread => rgb(200, 200, 200),
        FrameKind::Python => rgb(80, 160, 230),
        FrameKind::Native if inlined => rgb(240, 190, 110),
        FrameKind::Native => rgb(235, 140, 60),
        FrameKind::Kernel => rgb(200, 90, 90),
        FrameKind::Marker | FrameKind::Wait => rgb(160, 160, 160),
    }
}

/// Interactive SVG (search with Ctrl-F / the Search button, click to zoom). Python frames are
/// blue, native orange (inlined lighter), kernel red, thread roots and markers grey; wait leaves
/// are coloured by wait kind.
pub fn svg(p: &Profile, title: &str, mode: Mode, idle: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut text = folded(p, mode, idle);
    if text.trim().is_empty() {
        // Still draw something: the summary and the other outputs stay useful.
        let what = match mode {
            Mode::Cpu => "no CPU samples",
            Mode::Wait => "no waiting recorded (no contention, or --idle not given)",
            Mode::Wall => "nothing recorded",
            Mode::Blame => "no lock waits with a holder recorded",
        };
        text = format!("[{what}] 1\n");
    }
    let mut palette = PaletteMap::default();
    for f in &p.frames {
        palette.insert(clean(&f.label()), frame_color(f.kind, f.inlined));
    }
    for (s, frames) in p.iter_stacks() {
        if let Some(leaf) = frames.last().filter(|f| f.kind == FrameKind::Wait) {
            palette.insert(clean(&leaf.label()), category_color(s.category));
        }
    }
    if mode == Mode::Blame {
        for (i, l) in p.locks.iter().enumerate() {
            palette.insert(clean(&analysis::blame::lock_root(p, i)), category_color(l.kind));
        }
    }
    let mut opts = Options::default();
    opts.title = title.to_string();
    let (unit, what) = match mode {
        Mode::Cpu => ("samples", format!("CPU samples at {} Hz", p.summary.rate_hz)),
        Mode::Wait => ("us", "waiting time (µs), the lock as the leaf".to_string()),
        Mode::Wall => ("us", "thread time (µs): running and waiting".to_string()),
        Mode::Blame => ("us", "time others waited (µs) on each lock, by what its holder was doing".to_string()),
    };
    opts.subtitle = Some(format!(
        "{what} — {} threads, {:.1} s — blue: Python, orange: native, leaves in [..]: why threads waited",
        p.summary.threads, p.summary.duration_s
    ));
    opts.count_name = unit.into();
    opts.palette_map = Some(&mut palette);
    inferno_fg::from_lines(&mut opts, text.lines(), out)?;
    Ok(())
}

/// Differential flamegraph from `before` to `after` (wall mode, all threads merged, addresses
/// stripped so the same lock matches across runs): frames are drawn as in `after`, red where
/// time grew, blue where it shrank.
pub fn diff_svg(before: &Profile, after: &Profile, title: &str) -> anyhow::Result<String> {
    let a = folded_with(before, Mode::Wall, false, false);
    let b = folded_with(after, Mode::Wall, false, false);
    let mut diff = Vec::new();
    let dopts = inferno::differential::Options { normalize: false, strip_hex: true };
    inferno::differential::from_readers(dopts, a.as_bytes(), b.as_bytes(), &mut diff)?;
    let text = String::from_utf8(diff)?;
    if text.trim().is_empty() {
        anyhow::bail!("no stacks to compare");
    }
    let mut opts = Options::default();
    opts.title = title.to_string();
    opts.subtitle = Some("thread time (µs); red: grew, blue: shrank".into());
    opts.count_name = "us".into();
    let mut out = Vec::new();
    inferno_fg::from_lines(&mut opts, text.lines(), &mut out)?;
    Ok(String::from_utf8(out)?)
}

/// The JSON profile (see the README for the schema).
pub fn json(p: &Profile, out: &mut dyn Write) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, p)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

fn ms(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

/// A one-screen summary of a recording.
/// The summary's line on how the CPU samples' Python stacks were read.
fn python_stacks_line(ps: &analysis::PythonStacks) -> String {
    // Why samples had no kernel record, when known.
    let mut why = Vec::new();
    if ps.new_thread > 0 {
        why.push(format!("{} of a thread not registered yet", ps.new_thread));
    }
    if ps.ring_lost > 0 {
        why.push(format!("{} records lost in a full ring", ps.ring_lost));
    }
    if ps.unmatched > 0 {
        why.push(format!("{} records that found no sample", ps.unmatched));
    }
    let why = if why.is_empty() { String::new() } else { format!(": {}", why.join(", ")) };
    let line = python_stacks_path(ps, &why);
    if ps.too_late == 0 {
        return line;
    }
    format!(
        "{line}  Python stacks lost: {} samples have no Python frames: ftprof fell behind (up to {} ms) and read them after their thread had finished\n",
        ps.too_late, ps.too_late_ms
    )
}

fn python_stacks_path(ps: &analysis::PythonStacks, why: &str) -> String {
    match (ps.path.as_str(), &ps.reason) {
        ("bpf", _) if ps.before_ready > 0 => format!(
            "  Python stacks: read in the kernel at the sample instant (BPF) for {} samples, after the sample for {} (no kernel record{why}) and {} (taken while the kernel verified the BPF programs)\n",
            ps.at_instant, ps.after_sample, ps.before_ready
        ),
        ("bpf", _) => format!(
            "  Python stacks: read in the kernel at the sample instant (BPF) for {} samples, after the sample for {} (no kernel record{why})\n",
            ps.at_instant, ps.after_sample
        ),
        (_, Some(why)) => format!("  Python stacks: read after the sample (BPF not used: {why})\n"),
        _ => "  Python stacks: read after the sample\n".into(),
    }
}

/// The text summary printed after a recording (and by `ftprof report` for the text format).
pub fn summary_text(p: &Profile) -> String {
    let mut o = summary_header(p);
    o += &time_breakdown(p);
    o += &busiest_threads(p);
    o += &locks_and_lines(p);
    o += &what_to_do(p, 3);
    o
}

/// How off-CPU time was accounted: the blocked / runqueue split's source and the wait mode.
fn off_cpu_lines(s: &analysis::Summary) -> String {
    let mut o = String::new();
    if let Some(a) = &s.sched_accounting {
        o += &match (a.source.as_str(), &a.reason) {
            ("bpf", _) => format!(
                "  off-CPU split (blocked / waiting for a CPU): from the kernel's switch and wake-up events (BPF) for {} threads{}\n",
                a.kernel_threads,
                a.cross_check.as_ref().map_or(String::new(), |c| format!(
                    " (waiting for a CPU {:.2} s; schedstat's run delay over the same time: {:.2} s)",
                    c.events_runqueue_us as f64 / 1e6,
                    c.schedstat_runqueue_us as f64 / 1e6
                ))
            ),
            (_, Some(why)) => format!(
                "  off-CPU split (blocked / waiting for a CPU): from the kernel's schedstat counters, corrected by the ticks (BPF not used: {why})\n"
            ),
            _ => "  off-CPU split (blocked / waiting for a CPU): from the kernel's schedstat counters, corrected by the ticks\n".into(),
        };
    }
    match s.wait_mode.as_str() {
        "sampled" => {
            o += &format!(
                "  off-CPU: {} switch-outs; time per thread exact (kernel accounting), split between stacks by sampling blocked threads{} ({} distinct waits seen)",
                s.switch_outs,
                s.wait_rate_hz.map(|r| format!(" at {r:.0} Hz per thread")).unwrap_or_default(),
                s.observed_waits
            );
            if s.wait_rate_hz.is_some_and(|r| r + 0.5 < s.rate_hz as f64) {
                o += &format!(" — lowered from {} Hz to keep ftprof's cost bounded with this many threads", s.rate_hz);
            }
            o += "
";
        }
        // "exhaustive": the same mode, as earlier versions of ftprof named it.
        "exact" | "exhaustive" => {
            o += &format!(
                "  off-CPU: {} intervals, each with its stack (--exact-waits)
",
                s.switch_outs
            )
        }
        _ => {}
    }
    o
}

/// The target, how it was recorded, and how complete the evidence is.
fn summary_header(p: &Profile) -> String {
    let s = &p.summary;
    let mut o = String::new();
    let py = match &p.target.python {
        Some(py) => format!(
            "CPython {} — GIL: {}",
            py.version,
            match (py.free_threaded, py.gil_enabled) {
                (true, Some(false)) => "disabled (free-threaded build)",
                (true, Some(true)) => "ENABLED at run time in a free-threaded build (an extension module without Py_mod_gil, or PYTHON_GIL=1)",
                (true, None) => "free-threaded build (state unknown)",
                (false, _) => "enabled (default build)",
            }
        ),
        None => "no CPython runtime found".into(),
    };
    o += &format!("ftprof: {py}; pid {}", p.target.pid);
    if let Some(e) = &p.target.exit {
        o += &format!(", target {e}");
    }
    if p.target.interrupted {
        o += " (interrupted)";
    }
    o += "\n";
    if let Some(g) = p.target.python.as_ref().and_then(|py| py.gil_reenabled.as_ref()) {
        o += &format!("  {}\n", g.sentence());
    }
    o += &format!(
        "  wall {:.2} s, threads {}, {} CPU samples at {} Hz, {} switch-outs, {} lost records\n",
        s.duration_s, s.threads, s.samples, s.rate_hz, s.switch_outs, s.lost_records
    );
    if let Some(ps) = &s.python_stacks {
        o += &python_stacks_line(ps);
    }
    o += &off_cpu_lines(s);
    if !s.processes.is_empty() {
        let python: Vec<String> = s.processes.iter().filter(|p| p.python).map(|p| p.pid.to_string()).collect();
        o += &format!("  processes followed (--subprocesses): {} with CPython ({})\n", python.len(), python.join(", "));
        let skipped: Vec<String> =
            s.processes.iter().filter(|p| !p.python).map(|p| format!("{} ({})", p.pid, p.command)).collect();
        if !skipped.is_empty() {
            o += &format!(
                "  note: skipped {} child process(es) where no CPython runtime was found (not in the profile): {}\n",
                skipped.len(),
                skipped.join(", ")
            );
        }
    }
    if s.sched_corrected_threads > 0 {
        o += &format!(
            "  note: for {} thread(s) the kernel counted time blocked as time waiting for a CPU; their split follows ftprof's samples\n",
            s.sched_corrected_threads
        );
    }
    if s.unobserved_us > 0 {
        o += &format!(
            "  {:.1} ms of blocked time that no sample explains: shown as [off-CPU, not observed]\n",
            s.unobserved_us as f64 / 1000.0
        );
    }
    for l in &s.lost {
        o += &format!(
            "  warning: the kernel dropped {} {} records between {:.1} s and {:.1} s (ftprof drained too late){}\n",
            l.count,
            if l.ring == "switches" { "switch" } else { "sample" },
            l.first_s,
            l.last_s,
            if l.ring == "switches" {
                "; off-CPU intervals open at that time were discarded, so off-CPU totals are low"
            } else {
                "; CPU samples in that span are missing"
            }
        );
    }
    o += &format!(
        "  CPU samples: with Python frames {:.1} %, unwinding incomplete {:.1} %, python/native mismatch {:.1} %, unresolved core frames {:.1} %\n",
        pct(s.with_python, s.samples),
        pct(s.unwind_incomplete, s.samples),
        pct(s.mismatched, s.samples),
        pct(s.unresolved_core, s.samples)
    );
    o
}

/// Where thread time went, by category, and the largest loss in words.
fn time_breakdown(p: &Profile) -> String {
    let s = &p.summary;
    let mut o = String::new();
    if !s.categories.is_empty() {
        o += "  where thread time went:\n";
        for c in &s.categories {
            if c.share < 0.001 {
                continue;
            }
            let note = if c.contention { "  (contention)" } else { "" };
            let lock = p.locks.iter().find(|l| l.kind == c.category);
            let detail = match lock {
                Some(l) => {
                    let line = l.top_lines.first().map(|t| format!(" at {}", t.line)).unwrap_or_default();
                    format!("  {}{line}, {}", l.description, counts(l))
                }
                None if c.category == Category::AtomicRefcount => match top_leaf(p, c.category) {
                    Some((what, _)) => format!("  {what}  (no other thread on it at the time: not contention)"),
                    None => String::new(),
                },
                None => String::new(),
            };
            o += &format!("    {:<17}{:>6.1} %{detail}{note}\n", c.category.name(), c.share * 100.0);
        }
    }
    if let Some(v) = largest_loss(p) {
        o += &format!("  => {v}\n");
    }
    if let Some(c) = s.categories.iter().find(|c| c.category == Category::AtomicRefcount && c.share >= 0.05) {
        let what = top_leaf(p, c.category).map(|(w, _)| format!(", mostly {w}")).unwrap_or_default();
        o += &format!(
            "  => {:.0} % of thread time is atomic reference-count updates of objects owned by another thread{what}, with no other thread on them at the time: the cost of sharing them, not contention.\n",
            c.share * 100.0
        );
    }
    o
}

/// Busiest threads, each with where most of its time went.
fn busiest_threads(p: &Profile) -> String {
    let mut o = String::new();
    let per = period_us(p);
    let mut by_thread: std::collections::HashMap<u32, std::collections::HashMap<Category, f64>> = Default::default();
    for st in &p.stacks {
        *by_thread.entry(st.thread).or_default().entry(st.category).or_default() += st.time_us(per);
    }
    let mut threads: Vec<(u32, f64, Category, f64)> = by_thread
        .into_iter()
        .filter_map(|(tid, cats)| {
            let total: f64 = cats.values().sum();
            let (c, v) = cats.into_iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
            Some((tid, total, c, v / total.max(1.0)))
        })
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if threads.len() > 1 {
        o += "  threads (most of their time):\n";
        for (tid, total, c, share) in threads.iter().take(6) {
            let name = p.threads.iter().find(|t| t.tid == *tid).map(|t| t.name.as_str()).unwrap_or("");
            o += &format!(
                "    {:<28} {:>8.2} s   {} {:.0} %\n",
                format!("{name} ({tid})"),
                total / 1e6,
                c.name(),
                share * 100.0
            );
        }
        if threads.len() > 6 {
            o += &format!("    … and {} more threads\n", threads.len() - 6);
        }
    }
    o
}

/// Top locks (with who held them) and top waiting lines.
fn locks_and_lines(p: &Profile) -> String {
    let mut o = String::new();
    if !p.locks.is_empty() {
        o += "  top locks:\n";
        for l in p.locks.iter().take(5) {
            let counts = counts(l);
            // The holder's code that caused most of the waiting (markers only when nothing else).
            let held = l
                .held_by
                .iter()
                .find(|h| !h.line.starts_with('['))
                .or(l.held_by.first())
                .map(|h| {
                    let thread = if h.thread.is_empty() { String::new() } else { format!(" in {}", h.thread) };
                    format!(", held by {}{thread} {} ({:.0} %)", h.line, ms(h.time_us), h.share * 100.0)
                })
                .unwrap_or_default();
            o += &format!(
                "    {:<17}{:<44} {:>9} total, {counts}, threads {}{held}\n",
                l.kind.name(),
                l.description,
                ms(l.total_us),
                l.threads.len()
            );
        }
    }
    if !p.top_lines.is_empty() {
        o += "  top waiting lines:\n";
        for l in p.top_lines.iter().take(5) {
            o += &format!("    {:>9}  {}\n", ms(l.time_us), l.line);
        }
    }
    o
}

/// A finding's predicted gain in words (`predicted gain ×1.30 (1.20–1.45)`), when predicted.
pub fn gain_text(f: &analysis::findings::Finding) -> Option<String> {
    f.predicted_gain.map(|g| format!("predicted gain ×{:.2} ({:.2}–{:.2})", g.factor, g.low, g.high))
}

/// One line naming a finding: `title at site` (the line to change).
pub fn finding_line(f: &analysis::findings::Finding) -> String {
    match &f.site {
        Some(s) => format!("{} at {s}", f.title),
        None => f.title.clone(),
    }
}

/// The closing "what to do" section: the top `n` findings (best first), each with its line,
/// evidence and remedy.
pub fn what_to_do(p: &Profile, n: usize) -> String {
    if p.findings.is_empty() {
        return "  what to do: nothing to change for scaling — no known pitfall matched and no contention reached 3 % of thread time\n".into();
    }
    let mut o = format!(
        "  what to do ({} of {} finding{}, best first):\n",
        n.min(p.findings.len()),
        p.findings.len(),
        if p.findings.len() == 1 { "" } else { "s" }
    );
    for (i, f) in p.findings.iter().take(n).enumerate() {
        let gain = gain_text(f).map(|g| format!(" — {g}")).unwrap_or_default();
        o += &format!("    {}. {}{gain}\n", i + 1, finding_line(f));
        o += &format!("       evidence: {}\n", f.evidence);
        o += &format!("       do: {}\n", f.remedy);
        if let Some(c) = &f.citation {
            o += &format!("       see: {c}\n");
        }
    }
    o
}

/// The sentence naming the largest loss to contention (None below 5 % of thread time).
pub fn largest_loss(p: &Profile) -> Option<String> {
    let s = &p.summary;
    let contention: f64 = s.categories.iter().filter(|c| c.contention).map(|c| c.share).sum();
    if contention < 0.05 {
        return None;
    }
    let worst = s.categories.iter().find(|c| c.contention)?;
    let line = top_line_of(p, worst.category).map(|l| format!(", mostly at {l}")).unwrap_or_default();
    Some(format!(
        "{:.0} % of thread time is lost to contention; the largest part is {} ({:.0} %){line}.{}",
        contention * 100.0,
        describe(worst.category),
        worst.share * 100.0,
        holder_sentence(p, worst.category)
    ))
}

/// The line with the most time in category `c`: its locks' (and objects') top lines summed, so a
/// sentence about one category never names the line of another.
fn top_line_of(p: &Profile, c: Category) -> Option<String> {
    let mut by: std::collections::BTreeMap<&str, u64> = Default::default();
    for l in p.locks.iter().filter(|l| l.kind == c) {
        for t in &l.top_lines {
            *by.entry(t.line.as_str()).or_default() += t.time_us;
        }
    }
    // Most time first; equal times by name, for a stable answer.
    by.into_iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0))).map(|(l, _)| l.to_string())
}

/// The wait leaf (without its category prefix) with the most thread time in category `c`.
fn top_leaf(p: &Profile, c: Category) -> Option<(String, f64)> {
    let per = period_us(p);
    let mut by: std::collections::HashMap<&str, f64> = Default::default();
    for st in p.stacks.iter().filter(|st| st.category == c) {
        let Some(&leaf) = st.frames.last() else { continue };
        let f = &p.frames[leaf as usize];
        if f.kind == analysis::FrameKind::Wait {
            let name = f.name.split_once(": ").map(|x| x.1).unwrap_or(&f.name);
            *by.entry(name).or_default() += st.time_us(per);
        }
    }
    by.into_iter().max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0))).map(|(k, v)| (k.to_string(), v))
}

/// When the largest contention is waiting on a lock and one holder line caused most of that
/// lock's waiting (not counting time the lock sat with a thread waiting for a CPU): " Threads waited 1.2 s on `_thread.lock @ 0x…`, held mostly at `f (x.py:8)` in
/// `Thread-3 (42)`."
fn holder_sentence(p: &Profile, worst: Category) -> String {
    if !analysis::blame::is_blamed(worst) {
        return String::new();
    }
    let Some(l) = p.locks.iter().find(|l| l.kind == worst) else { return String::new() };
    // Time the lock sat with a thread waiting for a CPU is the machine's, not the holder's code.
    let code: u64 = l.held_by.iter().filter(|h| h.line != analysis::blame::HANDED_OVER).map(|h| h.time_us).sum();
    match l.held_by.iter().find(|h| !h.line.starts_with('[')) {
        Some(h) if h.time_us as f64 >= 0.5 * code as f64 && !h.thread.is_empty() => format!(
            " Threads waited {} on `{}`, held mostly at `{}` in `{}`.",
            match l.total_us.saturating_sub(l.spin_us) {
                us if us >= 1_000_000 => format!("{:.1} s", us as f64 / 1e6),
                us => ms(us),
            },
            l.description,
            h.line,
            h.thread
        ),
        _ => String::new(),
    }
}

/// "12 waits, max 3.1 ms" for waits, "40 samples" for CPU time, both when both.
fn counts(l: &analysis::LockStat) -> String {
    match (l.waits, l.samples) {
        (0, n) => format!("{n} samples"),
        (w, 0) => format!("{w} waits, max {}", ms(l.max_us)),
        (w, n) => format!("{w} waits, max {}, {n} samples", ms(l.max_us)),
    }
}

fn describe(c: Category) -> &'static str {
    match c {
        Category::Refcount => "threads updating the reference counts of shared objects at the same time",
        Category::Spin => "threads spinning for a PyMutex held by another thread",
        Category::CriticalSection => "threads blocked on a shared object's lock (critical section)",
        Category::Lock => "threads blocked on a threading lock",
        Category::Pymutex => "threads blocked on an interpreter-internal lock",
        Category::StopTheWorld => "stop-the-world pauses (garbage collection and others)",
        Category::Gil => "waiting for the GIL",
        _ => "waiting",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use analysis::blame::HeldBy;
    use analysis::{CategoryTime, LineStat, LockIdentity, LockStat};

    fn line(l: &str, time_us: u64) -> LineStat {
        LineStat { line: l.into(), time_us, waits: 1 }
    }

    fn lock(
        kind: Category,
        description: &str,
        total_us: u64,
        lines: &[(&str, u64)],
        held_by: &[(&str, u64)],
    ) -> LockStat {
        LockStat {
            kind,
            identity: LockIdentity { address: Some(0x10), type_name: Some(description.into()), symbol: None },
            description: description.into(),
            waits: 10,
            samples: 0,
            total_us,
            spin_us: 0,
            max_us: 1000,
            mean_us: 100,
            threads: vec![1, 2],
            top_lines: lines.iter().map(|&(l, t)| line(l, t)).collect(),
            held_by: held_by
                .iter()
                .map(|&(l, t)| HeldBy {
                    line: l.into(),
                    thread: "Thread-1 (11)".into(),
                    time_us: t,
                    share: t as f64 / total_us as f64,
                })
                .collect(),
            kernel_wait_us: None,
            kernel_runqueue_us: None,
        }
    }

    /// The real server's case: the largest contention is a threading lock waited on at
    /// task.py:66/:107, but the top waiting line of all categories is a dict critical section at
    /// `LogRecord.__init__`. Each sentence of the summary that names a line names the line of
    /// the thing it talks about.
    fn server_profile() -> Profile {
        let mut p = Profile::default();
        p.summary.period_ns = 5_000_000;
        p.summary.rate_hz = 199;
        p.summary.categories = vec![
            CategoryTime { category: Category::Lock, time_us: 1_600_000, share: 0.16, contention: true },
            CategoryTime { category: Category::CriticalSection, time_us: 1_200_000, share: 0.12, contention: true },
            CategoryTime { category: Category::Python, time_us: 7_200_000, share: 0.72, contention: false },
        ];
        p.locks = vec![
            lock(
                Category::Lock,
                "_thread.lock @ 0x7f01",
                1_000_000,
                &[("add_task (task.py:66)", 700_000), ("get (task.py:107)", 300_000)],
                &[("add_task (task.py:113)", 900_000)],
            ),
            lock(
                Category::CriticalSection,
                "dict @ 0x7f02",
                1_200_000,
                &[("LogRecord.__init__ (__init__.py:363)", 1_200_000)],
                &[],
            ),
            lock(Category::Lock, "_thread.lock @ 0x7f03", 600_000, &[("get (task.py:107)", 600_000)], &[]),
        ];
        p.top_lines = vec![
            line("LogRecord.__init__ (__init__.py:363)", 1_200_000),
            line("get (task.py:107)", 900_000),
            line("add_task (task.py:66)", 700_000),
        ];
        p
    }

    #[test]
    fn the_headline_names_the_top_line_of_its_category() {
        let p = server_profile();
        let s = largest_loss(&p).unwrap();
        // task.py:107 (300 + 600 ms over two locks) before task.py:66 (700 ms).
        assert!(
            s.contains("the largest part is threads blocked on a threading lock (16 %), mostly at get (task.py:107)."),
            "{s}"
        );
        assert!(!s.contains("__init__.py:363"), "{s}");
        // Its second sentence names the holder's line of that category's top lock.
        assert!(s.contains("Threads waited 1.0 s on `_thread.lock @ 0x7f01`, held mostly at `add_task (task.py:113)` in `Thread-1 (11)`."), "{s}");
    }

    #[test]
    fn each_category_row_names_the_line_of_its_own_top_lock() {
        let text = summary_text(&server_profile());
        let row = |c: &str| {
            text.lines().find(|l| l.trim_start().starts_with(c)).unwrap_or_else(|| panic!("no {c} row in {text}"))
        };
        assert!(row("lock ").contains("_thread.lock @ 0x7f01 at add_task (task.py:66)"), "{text}");
        assert!(row("critical_section").contains("dict @ 0x7f02 at LogRecord.__init__ (__init__.py:363)"), "{text}");
    }

    #[test]
    fn the_json_profile_reads_back_into_the_same_model() {
        let p = analysis::fixture::profile();
        let mut text = Vec::new();
        json(&p, &mut text).unwrap();
        let back: Profile = serde_json::from_slice(&text).unwrap();
        let back = back.loaded().unwrap();
        assert_eq!(back.summary.period_ns, p.summary.period_ns, "the period is restored from rate_hz");
        let mut again = Vec::new();
        json(&back, &mut again).unwrap();
        let (a, b) = (String::from_utf8(again).unwrap(), String::from_utf8(text.clone()).unwrap());
        let diff: Vec<(&str, &str)> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).take(5).collect();
        assert!(diff.is_empty() && a.lines().count() == b.lines().count(), "written again differs: {diff:?}");
        // Every renderer gives the same output from the read-back profile (inferno's SVG picks
        // random shades, so it is left out).
        for f in [Format::Folded, Format::Speedscope, Format::Pprof, Format::Html, Format::Firefox] {
            let same =
                render(&p, f, None, Mode::Wall, true).unwrap() == render(&back, f, None, Mode::Wall, true).unwrap();
            assert!(same, "{f:?} differs after reading the JSON back");
        }
        let mut v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        v["schema_version"] = 1.into();
        let old: Profile = serde_json::from_value(v).unwrap();
        assert!(old.loaded().unwrap_err().contains("record it again"));
    }
}
