//! # flamegraph — rendering
//!
//! Job: present a profile. Input: an `analysis::Profile`. Output: Brendan Gregg folded stacks
//! ([`folded`]), an interactive SVG flamegraph through inferno ([`svg`]), the JSON profile
//! ([`json`]), and the end-of-recording terminal summary ([`summary_text`]).

use std::io::Write;

use analysis::{FrameKind, Profile};
use inferno::flamegraph::color::{Color, PaletteMap};
use inferno::flamegraph::{self as inferno_fg, Options};

/// Output formats of `ftprof record`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Folded,
    Json,
}

fn clean(label: &str) -> String {
    // ';' separates frames in folded stacks; newlines would split records.
    label.replace(';', ":").replace(['\n', '\r'], " ")
}

/// One line per distinct stack: `frame;frame;frame count`, root first.
pub fn folded(p: &Profile) -> String {
    let mut lines: Vec<String> = p
        .iter_stacks()
        .map(|(s, frames)| {
            let path: Vec<String> = frames.iter().map(|f| clean(&f.label())).collect();
            format!("{} {}", path.join(";"), s.samples)
        })
        .collect();
    lines.sort();
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn color_for(kind: FrameKind, inlined: bool) -> Color {
    let c = |r, g, b| Color { r, g, b };
    match kind {
        FrameKind::Thread => c(200, 200, 200),
        FrameKind::Python => c(80, 160, 230),
        FrameKind::Native if inlined => c(240, 190, 110),
        FrameKind::Native => c(235, 140, 60),
        FrameKind::Kernel => c(200, 90, 90),
        FrameKind::Marker => c(160, 160, 160),
    }
}

/// Interactive SVG (search with Ctrl-F / the Search button, click to zoom). Python frames are
/// blue, native orange (inlined lighter), kernel red, thread roots and markers grey.
pub fn svg(p: &Profile, title: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let text = folded(p);
    let mut palette = PaletteMap::default();
    for f in &p.frames {
        palette.insert(clean(&f.label()), color_for(f.kind, f.inlined));
    }
    let mut opts = Options::default();
    opts.title = title.to_string();
    opts.subtitle = Some(format!(
        "{} samples at {} Hz, {} threads, {:.1} s — blue: Python, orange: native",
        p.summary.samples, p.summary.rate_hz, p.summary.threads, p.summary.duration_s
    ));
    opts.count_name = "samples".into();
    opts.palette_map = Some(&mut palette);
    if text.trim().is_empty() {
        anyhow::bail!("no samples were recorded, so there is no flamegraph to draw (did the target run at all?)");
    }
    inferno_fg::from_lines(&mut opts, text.lines(), out)?;
    Ok(())
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

/// A one-screen summary of a recording.
pub fn summary_text(p: &Profile) -> String {
    let s = &p.summary;
    let mut o = String::new();
    let py = match &p.target.python {
        Some(py) => format!(
            "CPython {} ({}{})",
            py.version,
            if py.free_threaded {
                "free-threaded"
            } else {
                "default build with the GIL"
            },
            match (py.free_threaded, py.gil_enabled) {
                (true, Some(true)) => ", GIL re-enabled at run time",
                (true, Some(false)) => ", GIL disabled",
                _ => "",
            }
        ),
        None => "no CPython runtime found".into(),
    };
    o += &format!("ftprof: {py}, pid {}", p.target.pid);
    if let Some(e) = &p.target.exit {
        o += &format!(", target {e}");
    }
    if p.target.interrupted {
        o += " (interrupted)";
    }
    o += "\n";
    o += &format!(
        "  duration {:.2} s, {} samples at {} Hz, {} threads, {} lost records\n",
        s.duration_s, s.samples, s.rate_hz, s.threads, s.lost_records
    );
    o += &format!(
        "  with Python frames {:.1} %, unwinding incomplete {:.1} %, python/native mismatch {:.1} %, unresolved core frames {:.1} %\n",
        pct(s.with_python, s.samples),
        pct(s.unwind_incomplete, s.samples),
        pct(s.mismatched, s.samples),
        pct(s.unresolved_core, s.samples)
    );
    let mut threads: Vec<_> = p.threads.iter().filter(|t| t.samples > 0).collect();
    threads.sort_by_key(|t| std::cmp::Reverse(t.samples));
    for t in threads.iter().take(8) {
        let name = if t.name.is_empty() { "thread" } else { &t.name };
        o += &format!(
            "  {:>6.1} %  {name} ({})\n",
            pct(t.samples, s.samples),
            t.tid
        );
    }
    if threads.len() > 8 {
        o += &format!("  … and {} more threads\n", threads.len() - 8);
    }
    o
}
