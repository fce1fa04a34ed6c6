//! `ftprof scale`'s `index.html`: the scaling chart, the fits, the per-N breakdown, the
//! differential flamegraph from the smallest to the largest N, and links to each N's report.

use std::collections::{BTreeMap, HashMap};

use analysis::scaling::ScaleResult;
use analysis::Profile;
use serde::Serialize;

use super::{fill, script_json, COMMON_JS, D3, FLAMEGRAPH, FLAMEGRAPH_CSS, STYLE};
use crate::Mode;

const TEMPLATE: &str = include_str!("scale.html");
const SCALE_JS: &str = include_str!("scale.js");

/// A node of the differential tree: `value` = time at the larger N (µs), `delta` = change from
/// the smaller N, both inclusive.
#[derive(Serialize, Default)]
struct DiffNode {
    name: String,
    value: u64,
    delta: i64,
    children: Vec<DiffNode>,
}

fn strip_hex(s: &str) -> String {
    // Addresses differ between runs: `list @ 0x7f…` matches `list @ 0x7e…`.
    let mut out = String::with_capacity(s.len());
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c == '0' && s[i + 1..].starts_with('x') {
            let rest = &s[i + 2..];
            let n = rest.chars().take_while(|c| c.is_ascii_hexdigit()).count();
            if n > 0 {
                out.push_str("0x…");
                for _ in 0..n + 1 {
                    it.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

fn weights(p: &Profile) -> HashMap<Vec<String>, u64> {
    let mut m: HashMap<Vec<String>, u64> = HashMap::new();
    for line in crate::folded_with(p, Mode::Wall, false, false).lines() {
        if let Some((path, w)) = line.rsplit_once(' ') {
            let w: u64 = w.parse().unwrap_or(0);
            *m.entry(path.split(';').map(strip_hex).collect()).or_default() += w;
        }
    }
    m
}

fn diff_tree(lo: &Profile, hi: &Profile, name: String) -> DiffNode {
    let mut root = DiffNode { name, ..Default::default() };
    let (a, b) = (weights(lo), weights(hi));
    let mut paths: Vec<&Vec<String>> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let (wa, wb) = (a.get(path).copied().unwrap_or(0), b.get(path).copied().unwrap_or(0));
        let d = wb as i64 - wa as i64;
        let mut n = &mut root;
        n.value += wb;
        n.delta += d;
        for f in path {
            let i = match n.children.iter().position(|c| &c.name == f) {
                Some(i) => i,
                None => {
                    n.children.push(DiffNode { name: f.clone(), ..Default::default() });
                    n.children.len() - 1
                }
            };
            n = &mut n.children[i];
            n.value += wb;
            n.delta += d;
        }
    }
    root
}

#[derive(Serialize)]
struct Point {
    threads: u32,
    median: f64,
    speedup: Option<f64>,
    efficiency: Option<f64>,
    oversubscribed: bool,
    failed_runs: u32,
    categories: BTreeMap<String, f64>,
    report: Option<String>,
}

#[derive(Serialize)]
struct IndexData {
    title: String,
    command: String,
    scaling: String,
    measure: String,
    online_cpus: u32,
    fits: Vec<String>,
    points: Vec<Point>,
    categories: Vec<super::CategoryInfo>,
    diff: Option<(u32, u32, DiffNode)>,
}

/// File name of the report of `n` threads.
pub fn report_name(n: u32) -> String {
    format!("report-n{n}.html")
}

/// `index.html` and one report per profiled N, as `(file name, contents)` for the output
/// directory of `ftprof scale`.
pub fn scale_index(
    r: &ScaleResult,
    profiles: &BTreeMap<u32, Profile>,
    title: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for (n, p) in profiles {
        let html = super::report(p, &format!("{title} — N = {n}"), Mode::Wall, false)?;
        files.push((report_name(*n), html.into_bytes()));
    }
    let mut fits = Vec::new();
    if let Some(a) = r.amdahl {
        fits.push(format!("Amdahl: serial fraction {:.3} (RMSE {:.3})", a.serial_fraction, a.rmse));
    }
    if let Some(u) = r.usl {
        let peak = u.peak_threads.map(|p| format!(", peak at N ≈ {p:.1}")).unwrap_or_default();
        fits.push(format!(
            "USL: σ (contention) = {:.3}, κ (coherency) = {:.4}{peak} (RMSE {:.3})",
            u.sigma, u.kappa, u.rmse
        ));
    }
    if let Some(n) = &r.fit_note {
        fits.push(n.clone());
    }
    let diff = match (profiles.iter().next(), profiles.iter().next_back()) {
        (Some((lo, a)), Some((hi, b))) if lo != hi => {
            Some((*lo, *hi, diff_tree(a, b, format!("all threads, N = {lo} → N = {hi}"))))
        }
        _ => None,
    };
    let data = IndexData {
        title: title.to_string(),
        command: r.command.join(" "),
        scaling: r.scaling.clone(),
        measure: r.measure.what.clone(),
        online_cpus: r.online_cpus,
        fits,
        points: r
            .points
            .iter()
            .map(|p| Point {
                threads: p.threads,
                median: p.median,
                speedup: p.speedup,
                efficiency: p.efficiency,
                oversubscribed: p.oversubscribed,
                failed_runs: p.failed_runs,
                categories: p.categories.clone(),
                report: profiles.contains_key(&p.threads).then(|| report_name(p.threads)),
            })
            .collect(),
        categories: super::categories(),
        diff,
    };
    let scaling = crate::charts::scaling_svg(r, title)?;
    let breakdown = if profiles.is_empty() { String::new() } else { crate::charts::breakdown_svg(r, title)? };
    let json = script_json(&data)?;
    let html = fill(
        TEMPLATE,
        &[
            ("FLAMEGRAPH_CSS", FLAMEGRAPH_CSS),
            ("STYLE", STYLE),
            ("SCALING_SVG", &scaling),
            ("BREAKDOWN_SVG", &breakdown),
            ("DATA", &json),
            ("D3", D3),
            ("FLAMEGRAPH", FLAMEGRAPH),
            ("COMMON_JS", COMMON_JS),
            ("SCALE_JS", SCALE_JS),
        ],
    );
    files.push(("index.html".into(), html.into_bytes()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_stripped_for_matching() {
        assert_eq!(strip_hex("[lock: list @ 0x7f12ab]"), "[lock: list @ 0x…]");
        assert_eq!(strip_hex("f (a.py:0)"), "f (a.py:0)");
    }

    #[test]
    fn diff_of_a_profile_with_itself_is_zero() {
        let p = analysis::fixture::profile();
        let t = diff_tree(&p, &p, "x".into());
        assert_eq!(t.delta, 0);
        assert!(t.value > 0);
        assert!(t.children.iter().all(|c| c.delta == 0));
    }
}
