//! The self-contained HTML report: an interactive flamegraph (d3-flame-graph, vendored and
//! inlined) switchable between wall, CPU and waiting time and blame (the lock as the root, then
//! its holder's stacks, from `Profile::blame`), coloured like the SVG, with search, click to zoom
//! and a per-thread filter; the header of the recording; where thread time went and the sentence
//! naming the largest loss; the top locks with the lines holding them (sortable; clicking one
//! highlights its stacks); the top waiting lines. The data travel as JSON in a
//! `<script type="application/json">` block (`</` escaped); nothing is fetched when it opens.
//!
//! [`scale_index`] renders `ftprof scale`'s `index.html` from an `analysis::scaling::ScaleResult`.

mod scale;

pub use scale::scale_index;

use analysis::{Category, FrameKind, Profile};
use serde::Serialize;

use crate::Mode;

pub(crate) const D3: &str = include_str!("../../assets/d3.v7.9.2.min.js");
pub(crate) const FLAMEGRAPH: &str = include_str!("../../assets/d3-flamegraph.v4.1.3.min.js");
pub(crate) const FLAMEGRAPH_CSS: &str = include_str!("../../assets/d3-flamegraph.v4.1.3.css");
const TEMPLATE: &str = include_str!("report.html");
pub(crate) const STYLE: &str = include_str!("style.css");
pub(crate) const COMMON_JS: &str = include_str!("common.js");
const REPORT_JS: &str = include_str!("report.js");

/// JSON for a `<script type="application/json">` block: `</` cannot close the element.
pub(crate) fn script_json<T: Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(v)?.replace("</", "<\\/").replace("<!--", "\\u003c!--"))
}

fn hex(c: inferno::flamegraph::color::Color) -> String {
    format!("#{:02x}{:02x}{:02x}", c.r, c.g, c.b)
}

#[derive(Serialize)]
pub(crate) struct CategoryInfo {
    name: &'static str,
    color: String,
    on_cpu: bool,
    contention: bool,
    idle: bool,
}

pub(crate) fn categories() -> Vec<CategoryInfo> {
    Category::ALL
        .iter()
        .map(|&c| CategoryInfo {
            name: c.name(),
            color: hex(crate::legend_color(c)),
            on_cpu: c.on_cpu(),
            contention: c.is_contention(),
            idle: c.is_idle(),
        })
        .collect()
}

fn kind_index(k: FrameKind, inlined: bool) -> u8 {
    match k {
        FrameKind::Thread => 0,
        FrameKind::Python => 1,
        FrameKind::Native if inlined => 6,
        FrameKind::Native => 2,
        FrameKind::Kernel => 3,
        FrameKind::Marker => 4,
        FrameKind::Wait => 5,
    }
}

fn category_index(c: Category) -> u8 {
    Category::ALL.iter().position(|&x| x == c).unwrap_or(0) as u8
}

#[derive(Serialize)]
struct Header {
    command: String,
    python: String,
    gil: String,
    pid: u32,
    duration_s: f64,
    threads: usize,
    samples: u64,
    rate_hz: u64,
    lost_records: u64,
    wait_mode: String,
    thread_time_us: u64,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct LockRow {
    kind: &'static str,
    description: String,
    /// The name of the wait leaf frame of this lock's stacks.
    leaf: String,
    total_us: u64,
    waits: u64,
    samples: u64,
    max_us: u64,
    mean_us: u64,
    threads: usize,
    top_lines: Vec<(String, u64)>,
    /// The holder's top lines: `[line, holder thread, µs others waited, share 0..1]`.
    held_by: Vec<(String, String, u64, f64)>,
}

#[derive(Serialize)]
struct TimeRow {
    category: &'static str,
    time_us: u64,
    share: f64,
    contention: bool,
}

/// The report's data block (compact: frames and stacks as arrays).
#[derive(Serialize)]
pub(crate) struct ReportData {
    title: String,
    mode: &'static str,
    idle: bool,
    period_us: f64,
    header: Header,
    /// `[label, kind]`: kind 0 thread, 1 Python, 2 native, 3 kernel, 4 marker, 5 wait, 6 inlined.
    frames: Vec<(String, u8)>,
    /// `[tid, frames root→leaf, category, CPU samples, off-CPU µs]`.
    stacks: Vec<(u32, Vec<u32>, u8, u64, u64)>,
    /// The blame stacks, in the shape of `stacks`: `[holder tid (0: none), frames root→leaf,
    /// the lock's category, 0, µs others waited]`; the root frame is the lock (a wait frame,
    /// labelled as the lock row's `leaf`), then the holder thread and its Python frames.
    blame: Vec<(u32, Vec<u32>, u8, u64, u64)>,
    categories: Vec<CategoryInfo>,
    /// `[tid, label, thread time µs]`, busiest first.
    threads: Vec<(u32, String, u64)>,
    time: Vec<TimeRow>,
    verdict: Option<String>,
    locks: Vec<LockRow>,
    lines: Vec<(String, u64, u64)>,
    /// The profile's findings, best first.
    findings: Vec<FindingRow>,
    /// The program's source files with time on their lines (the source view).
    sources: Vec<SourceFile>,
}

/// One finding of the Findings panel.
#[derive(Serialize)]
struct FindingRow {
    id: String,
    title: String,
    site: Option<String>,
    /// Index into `sources` and the line, when the site's file is shown.
    source: Option<(usize, u32)>,
    evidence: String,
    remedy: String,
    citation: Option<String>,
    gain: Option<String>,
    generic: bool,
    /// The wait leaf of its stacks (`[category: object]`), to highlight them in the flamegraph.
    leaf: String,
}

/// A source file of the program with the time spent on its lines.
#[derive(Serialize)]
struct SourceFile {
    path: String,
    /// The base name, as in frame labels (`app.py`).
    name: String,
    text: Vec<String>,
    /// `[line, [[category index, µs], …]]`: thread time whose innermost Python frame was at
    /// that line, by category.
    lines: Vec<(u32, Vec<(u8, u64)>)>,
}

/// Most files the source view embeds, and the largest.
const MAX_SOURCES: usize = 40;
const MAX_SOURCE_BYTES: u64 = 2 << 20;

/// Per line, per category index: thread time (µs).
type LineCats = std::collections::BTreeMap<u32, std::collections::BTreeMap<u8, f64>>;

/// Per source file (by path), per line, per category: thread time at that innermost Python line;
/// with the file's total.
fn line_times(p: &Profile) -> Vec<(String, LineCats, f64)> {
    let per = p.summary.period_us();
    let mut files: std::collections::HashMap<&str, (LineCats, f64)> = Default::default();
    for st in &p.stacks {
        let Some(f) =
            st.frames.iter().rev().filter_map(|&i| p.frames.get(i as usize)).find(|f| f.kind == FrameKind::Python)
        else {
            continue;
        };
        let (Some(file), Some(line)) = (f.file.as_deref(), f.line) else { continue };
        let t = st.time_us(per);
        if t <= 0.0 || st.category.is_idle() {
            continue;
        }
        let e = files.entry(file).or_default();
        *e.0.entry(line).or_default().entry(category_index(st.category)).or_default() += t;
        e.1 += t;
    }
    let mut v: Vec<_> = files.into_iter().map(|(f, (l, t))| (f.to_string(), l, t)).collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    v
}

/// The source view's files: those with time on their lines that can be read here (the report is
/// rendered where the program ran), busiest first; a finding's file always comes first.
fn sources(p: &Profile) -> Vec<SourceFile> {
    let mut times = line_times(p);
    // Files with a finding first (in the findings' order), then by time.
    let rank = |path: &str| p.findings.iter().position(|f| f.file.as_deref() == Some(path)).unwrap_or(usize::MAX);
    times.sort_by_key(|t| rank(&t.0));
    let mut out = Vec::new();
    for (path, lines, _) in times {
        if out.len() >= MAX_SOURCES {
            break;
        }
        let readable = std::fs::metadata(&path).map(|m| m.is_file() && m.len() <= MAX_SOURCE_BYTES).unwrap_or(false);
        let Some(text) = readable.then(|| std::fs::read(&path).ok()).flatten() else { continue };
        let text: Vec<String> = String::from_utf8_lossy(&text).lines().map(str::to_string).collect();
        out.push(SourceFile {
            name: path.rsplit('/').next().unwrap_or(&path).to_string(),
            path,
            text,
            lines: lines
                .into_iter()
                .map(|(l, cats)| (l, cats.into_iter().map(|(c, us)| (c, us.round() as u64)).collect()))
                .collect(),
        });
    }
    out
}

fn finding_rows(p: &Profile, sources: &[SourceFile]) -> Vec<FindingRow> {
    p.findings
        .iter()
        .map(|f| FindingRow {
            id: f.id.clone(),
            title: f.title.clone(),
            site: f.site.clone(),
            source: f.file.as_deref().and_then(|file| sources.iter().position(|s| s.path == file)).zip(f.line),
            evidence: f.evidence.clone(),
            remedy: f.remedy.clone(),
            citation: f.citation.clone(),
            gain: crate::gain_text(f),
            generic: f.generic,
            leaf: format!("[{}: {}]", f.category.name(), f.object),
        })
        .collect()
}

pub(crate) fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Cpu => "cpu",
        Mode::Wait => "wait",
        Mode::Wall => "wall",
        Mode::Blame => "blame",
    }
}

fn gil_state(p: &Profile) -> (String, String) {
    match &p.target.python {
        Some(py) => (
            format!("CPython {}", py.version),
            match (py.free_threaded, py.gil_enabled) {
                (true, Some(false)) => "disabled (free-threaded build)",
                (true, Some(true)) => "ENABLED at run time in a free-threaded build",
                (true, None) => "free-threaded build (state unknown)",
                (false, _) => "enabled (default build)",
            }
            .into(),
        ),
        None => ("no CPython runtime found".into(), "-".into()),
    }
}

pub(crate) fn data(p: &Profile, title: &str, mode: Mode, idle: bool) -> ReportData {
    let per = p.summary.period_us();
    let (python, gil) = gil_state(p);
    let s = &p.summary;
    let mut notes = Vec::new();
    for l in &s.lost {
        notes.push(format!(
            "the kernel dropped {} {} records between {:.1} s and {:.1} s",
            l.count, l.ring, l.first_s, l.last_s
        ));
    }
    if s.unobserved_us > 0 {
        notes.push(format!(
            "{:.1} ms of blocked time that no sample explains: shown as [off-CPU, not observed]",
            s.unobserved_us as f64 / 1000.0
        ));
    }
    if p.target.partial {
        notes.push("the target exited while ftprof was attached: the profile covers part of the period".into());
    }
    let mut per_thread: std::collections::HashMap<u32, f64> = Default::default();
    for st in &p.stacks {
        *per_thread.entry(st.thread).or_default() += st.time_us(per);
    }
    let mut threads: Vec<(u32, String, u64)> = p
        .threads
        .iter()
        .filter_map(|t| {
            let us = per_thread.get(&t.tid).copied()?;
            Some((t.tid, crate::thread_label(t), us.round() as u64))
        })
        .collect();
    threads.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let mut frames: Vec<(String, u8)> = p.frames.iter().map(|f| (f.label(), kind_index(f.kind, f.inlined))).collect();
    let blame = blame_stacks(p, &mut frames);
    let sources = sources(p);
    ReportData {
        title: title.to_string(),
        mode: mode_name(mode),
        idle,
        period_us: per,
        header: Header {
            command: p.target.command.join(" "),
            python,
            gil,
            pid: p.target.pid,
            duration_s: s.duration_s,
            threads: s.threads,
            samples: s.samples,
            rate_hz: s.rate_hz,
            lost_records: s.lost_records,
            wait_mode: s.wait_mode.clone(),
            thread_time_us: s.thread_time_us,
            notes,
        },
        frames,
        stacks: p
            .stacks
            .iter()
            .map(|st| (st.thread, st.frames.clone(), category_index(st.category), st.samples, st.wait_us))
            .collect(),
        blame,
        categories: categories(),
        threads,
        time: s
            .categories
            .iter()
            .map(|c| TimeRow {
                category: c.category.name(),
                time_us: c.time_us,
                share: c.share,
                contention: c.contention,
            })
            .collect(),
        verdict: crate::largest_loss(p),
        locks: p
            .locks
            .iter()
            .map(|l| LockRow {
                kind: l.kind.name(),
                description: l.description.clone(),
                leaf: format!("[{}: {}]", l.kind.name(), l.description),
                total_us: l.total_us,
                waits: l.waits,
                samples: l.samples,
                max_us: l.max_us,
                mean_us: l.mean_us,
                threads: l.threads.len(),
                top_lines: l.top_lines.iter().map(|t| (t.line.clone(), t.time_us)).collect(),
                held_by: l.held_by.iter().map(|h| (h.line.clone(), h.thread.clone(), h.time_us, h.share)).collect(),
            })
            .collect(),
        lines: p.top_lines.iter().map(|l| (l.line.clone(), l.time_us, l.waits)).collect(),
        findings: finding_rows(p, &sources),
        sources,
    }
}

/// `p.blame` as report stacks; each lock's root frame is the profile's wait frame of the same
/// label when there is one, else one appended to `frames` (kind 5, wait).
fn blame_stacks(p: &Profile, frames: &mut Vec<(String, u8)>) -> Vec<(u32, Vec<u32>, u8, u64, u64)> {
    let mut roots: std::collections::HashMap<usize, u32> = Default::default();
    p.blame
        .iter()
        .map(|b| {
            let root = *roots.entry(b.lock).or_insert_with(|| {
                let label = analysis::blame::lock_root(p, b.lock);
                match frames.iter().position(|f| f.1 == 5 && f.0 == label) {
                    Some(i) => i as u32,
                    None => {
                        frames.push((label, 5));
                        frames.len() as u32 - 1
                    }
                }
            });
            let mut ids = Vec::with_capacity(b.frames.len() + 1);
            ids.push(root);
            ids.extend_from_slice(&b.frames);
            (b.holder.unwrap_or(0), ids, category_index(p.locks[b.lock].kind), 0, b.time_us)
        })
        .collect()
}

/// Fill the page template: `{{NAME}}` placeholders, each used once.
pub(crate) fn fill(template: &str, parts: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + parts.iter().map(|p| p.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find("}}").map(|e| i + e + 2).unwrap_or(rest.len());
        let key = &rest[i + 2..end.saturating_sub(2).max(i + 2)];
        match parts.iter().find(|p| p.0 == key) {
            Some(p) => out.push_str(p.1),
            None => out.push_str(&rest[i..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The HTML report of one profile; `mode` and `idle` are what it opens with.
pub fn report(p: &Profile, title: &str, mode: Mode, idle: bool) -> anyhow::Result<String> {
    let json = script_json(&data(p, title, mode, idle))?;
    Ok(fill(
        TEMPLATE,
        &[
            ("FLAMEGRAPH_CSS", FLAMEGRAPH_CSS),
            ("STYLE", STYLE),
            ("DATA", &json),
            ("D3", D3),
            ("FLAMEGRAPH", FLAMEGRAPH),
            ("COMMON_JS", COMMON_JS),
            ("REPORT_JS", REPORT_JS),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Findings panel's rows point into the source view, whose file is the program's own
    /// (read where the report is made), with per-line time by category.
    #[test]
    fn findings_are_anchored_on_their_source_lines() {
        let dir = std::env::temp_dir().join(format!("ftprof-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let app = dir.join("app.py");
        std::fs::write(&app, (1..=60).map(|i| format!("line_{i} = {i}\n")).collect::<String>()).unwrap();
        let mut p = analysis::fixture::profile();
        for f in p.frames.iter_mut().filter(|f| f.file.as_deref() == Some("/opt/app/app.py")) {
            f.file = Some(app.to_string_lossy().into());
        }
        let p = p.with_findings();
        let d = data(&p, "t", Mode::Wall, false);
        std::fs::remove_dir_all(&dir).unwrap();
        // threading.py of the fixture does not exist here: only app.py is embedded.
        assert_eq!(d.sources.len(), 1);
        let s = &d.sources[0];
        assert_eq!((s.name.as_str(), s.text.len(), s.text[11].as_str()), ("app.py", 60, "line_12 = 12"));
        let lines: Vec<u32> = s.lines.iter().map(|l| l.0).collect();
        assert_eq!(lines, [12, 20, 25, 26, 30, 50]);
        // Line 20: the lock wait (30 ms), its spinning (5 samples × 1 ms) and the runqueue.
        let at20 = &s.lines[1].1;
        assert!(at20.contains(&(category_index(Category::Lock), 30_000)), "{at20:?}");
        assert!(at20.contains(&(category_index(Category::Spin), 5_000)), "{at20:?}");
        let f: Vec<_> = d.findings.iter().map(|f| (f.id.as_str(), f.source, f.leaf.as_str())).collect();
        assert_eq!(
            f,
            [
                ("lock-held-across-work", Some((0, 12)), "[lock: _thread.lock @ 0x7f1000001000]"),
                ("shared-container-writes", Some((0, 25)), "[critical_section: list @ 0x7f2000002000]"),
                ("generic-spin", Some((0, 26)), "[spin: list_extend]")
            ]
        );
        // Each finding's leaf is the wait leaf of its stacks in the flamegraph.
        for r in &d.findings {
            assert!(d.frames.iter().any(|(label, kind)| *kind == 5 && *label == r.leaf), "{}", r.leaf);
        }
    }

    #[test]
    fn data_block_cannot_close_its_script_element() {
        let mut p = analysis::fixture::profile();
        p.target.command = vec!["python".into(), "</script><script>alert(1)</script><!--".into()];
        let html = report(&p, "t</script>", Mode::Wall, false).unwrap();
        let start = html.find("id=\"ftprof-data\"").unwrap();
        let block = &html[start..];
        let end = block.find("</script>").unwrap();
        let json = &block[block.find('>').unwrap() + 1..end];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["header"]["command"], "python </script><script>alert(1)</script><!--");
        assert!(!html.contains("{{"), "every placeholder filled");
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "nothing fetched");
    }

    #[test]
    fn lock_rows_name_their_leaf_frames() {
        let p = analysis::fixture::profile();
        let d = data(&p, "t", Mode::Wait, false);
        let leaves: std::collections::HashSet<&str> =
            d.frames.iter().filter(|f| f.1 == 5).map(|f| f.0.as_str()).collect();
        assert!(!d.locks.is_empty());
        for l in d.locks.iter().filter(|l| l.waits > 0) {
            assert!(leaves.contains(l.leaf.as_str()), "{} among {leaves:?}", l.leaf);
        }
    }

    /// `--mode blame` opens the blame view; its stacks start at the lock's frame, labelled as the
    /// lock row's leaf (what a click on the row highlights), and add up to the profile's blame.
    #[test]
    fn blame_stacks_start_at_their_lock_row() {
        let p = analysis::fixture::profile();
        let d = data(&p, "t", Mode::Blame, false);
        assert_eq!(d.mode, "blame");
        assert_eq!(d.blame.len(), p.blame.len());
        assert_eq!(d.blame.iter().map(|b| b.4).sum::<u64>(), p.blame.iter().map(|b| b.time_us).sum::<u64>());
        for (row, b) in d.blame.iter().zip(&p.blame) {
            let root = &d.frames[row.1[0] as usize];
            assert_eq!((root.0.as_str(), root.1), (d.locks[b.lock].leaf.as_str(), 5));
            assert_eq!(&row.1[1..], &b.frames[..], "then the holder's frames, interned as the others");
        }
        // One frame per lock root at most, and none when the wait frame exists already.
        assert!(d.frames.len() <= p.frames.len() + p.locks.len());
        let roots: std::collections::HashSet<u32> = d.blame.iter().map(|b| b.1[0]).collect();
        assert!(roots.len() <= p.locks.len());
        let l = d.locks.iter().find(|l| !l.held_by.is_empty()).expect("a lock with a holder");
        let h = &p.locks.iter().find(|x| x.description == l.description).unwrap().held_by[0];
        assert_eq!(l.held_by[0], (h.line.clone(), h.thread.clone(), h.time_us, h.share));
    }
}
