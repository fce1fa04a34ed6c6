//! Scaling regressions between two runs of `ftprof scale` (`--baseline OLD/results.json`).
//!
//! Input: the points of this run and of the baseline (each thread count's run values with their
//! spread, speedups, category shares and top lock/line per category). Output: a [`Comparison`]
//! per thread count and a verdict.
//!
//! The decision rule, at each thread count N measured in both (above the smallest, whose speedup
//! is 1 by definition):
//! 1. with at least two **paired speedups** in both runs (`ftprof scale` interleaves the repeats,
//!    and each repeat at N is divided by the same repeat at the smallest N, run close in time, so
//!    a load that drifts between repeats cancels out), the drop is *beyond the spread* when the
//!    baseline's mean exceeds this run's by more than twice the standard error of the difference
//!    (Welch);
//! 2. without pairs, each speedup is an interval (the spread of the repeats at N widened by the
//!    spread at the smallest N), and the drop is beyond the spread when this run's interval lies
//!    entirely below the baseline's;
//! 3. it must also exceed `tolerance` (relative; default 10 %), so that two runs whose repeats
//!    happened to agree closely are not told apart by a few percent;
//! 4. and, when both runs were profiled, some category of the program (anything but `runqueue` and
//!    the idle kinds) must have grown its share of the program's own time (thread time less
//!    waiting for a CPU) by at least [`GROWN_POINTS`]: a drop that only shows as waiting for a CPU
//!    is the machine being busier (other processes), reported as such but not as a regression of
//!    the program. Shares of the program's own time, not of all thread time: on a busier machine
//!    waiting for a CPU grows and dilutes every other share, a lock added included.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::scaling::{blamable, ScalePoint, Site};

/// A category "grew" when its share of the program's own time at N (thread time less waiting for
/// a CPU) rose by at least this much (0..1).
pub const GROWN_POINTS: f64 = 0.03;

/// Default minimum relative drop of speedup for a regression.
pub const DEFAULT_TOLERANCE: f64 = 0.10;

/// The parts of a `results.json` a comparison reads (older files without profiles' fields parse
/// too; failed points have `null` medians).
#[derive(Clone, Debug, Deserialize)]
pub struct BaselineFile {
    pub schema_version: u32,
    #[serde(default)]
    pub command: Vec<String>,
    pub scaling: String,
    pub measure: crate::scaling::Measure,
    pub points: Vec<PointView>,
}

/// One thread count of either run.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PointView {
    pub threads: u32,
    #[serde(default)]
    pub median: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub speedup: Option<f64>,
    #[serde(default)]
    pub speedup_min: Option<f64>,
    #[serde(default)]
    pub speedup_max: Option<f64>,
    #[serde(default)]
    pub categories: BTreeMap<String, f64>,
    #[serde(default)]
    pub sites: BTreeMap<String, Site>,
    #[serde(default)]
    pub paired_speedups: Vec<f64>,
}

impl From<&ScalePoint> for PointView {
    fn from(p: &ScalePoint) -> PointView {
        let f = |v: f64| v.is_finite().then_some(v);
        PointView {
            threads: p.threads,
            median: f(p.median),
            min: f(p.min),
            max: f(p.max),
            speedup: p.speedup,
            speedup_min: p.speedup_min,
            speedup_max: p.speedup_max,
            categories: p.categories.clone(),
            sites: p.sites.clone(),
            paired_speedups: p.paired_speedups.clone(),
        }
    }
}

/// A category whose share of the program's own time at N (thread time less waiting for a CPU)
/// grew from the baseline to this run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrownCategory {
    pub category: String,
    /// Shares of the program's own time (0..1), in this run and in the baseline.
    pub share: f64,
    pub baseline_share: f64,
    /// Its top lock and line in this run's profile, and in the baseline's.
    pub site: Site,
    pub baseline_site: Site,
}

/// One thread count compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointComparison {
    pub threads: u32,
    pub speedup: f64,
    /// The speedup's interval from the spread of the repeats (at N and at the smallest N).
    pub speedup_range: [f64; 2],
    pub baseline_speedup: f64,
    pub baseline_range: [f64; 2],
    /// `1 - speedup / baseline_speedup`, or of the paired means when both runs have them
    /// (negative: it scales better now).
    pub drop: f64,
    /// With paired speedups in both runs: their means and the margin the difference had to exceed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<PairedTest>,
    /// The drop is beyond the spread of both runs: the baseline's paired mean exceeds this run's
    /// by more than the margin, or (without pairs) this run's interval lies entirely below the
    /// baseline's.
    pub beyond_spread: bool,
    /// Categories of the program whose share grew by at least [`GROWN_POINTS`], most first.
    pub grown: Vec<GrownCategory>,
    /// Growth of `runqueue`'s share (points, 0..1): waiting for a CPU.
    pub runqueue_growth: f64,
    pub regression: bool,
    /// Why this is or is not a regression, in words.
    pub reason: String,
}

/// The paired speedups of both runs compared: the difference of their means against twice its
/// standard error (Welch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedTest {
    pub mean: f64,
    pub baseline_mean: f64,
    /// `2 · sqrt(sd² / n + sd_baseline² / n_baseline)`.
    pub margin: f64,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt())
}

fn paired_test(now: &[f64], base: &[f64]) -> Option<PairedTest> {
    if now.len() < 2 || base.len() < 2 {
        return None;
    }
    let ((m, sd), (bm, bsd)) = (mean_sd(now), mean_sd(base));
    let margin = 2.0 * (sd * sd / now.len() as f64 + bsd * bsd / base.len() as f64).sqrt();
    Some(PairedTest { mean: m, baseline_mean: bm, margin })
}

/// The comparison written to `results.json` (`baseline`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The baseline's path as given.
    pub path: String,
    /// `regression` or `no regression`.
    pub verdict: String,
    pub tolerance: f64,
    pub points: Vec<PointComparison>,
    /// Thread counts measured in only one of the two runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched_threads: Vec<u32>,
    /// The verdict in one paragraph (what `ftprof scale` prints).
    pub message: String,
}

/// The speedup at `p` as an interval: the range of the paired speedups (each repeat against the
/// same repeat at the smallest N, run close in time) when there are at least two, else the range
/// from the spread at N widened by the spread at the smallest N `first`.
fn interval(first: &PointView, p: &PointView, higher_is_better: bool) -> Option<(f64, [f64; 2])> {
    let s = p.speedup?;
    if p.paired_speedups.len() >= 2 {
        let lo = p.paired_speedups.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = p.paired_speedups.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        return Some((s, [lo.min(s), hi.max(s)]));
    }
    let (lo, hi) = (p.speedup_min.unwrap_or(s), p.speedup_max.unwrap_or(s));
    let (m, a, b) = (first.median?, first.min.unwrap_or(first.median?), first.max.unwrap_or(first.median?));
    if !(m > 0.0 && a > 0.0 && b > 0.0) {
        return Some((s, [lo, hi]));
    }
    // Durations: the speedup is proportional to T1; rates: inversely proportional to M1.
    let (f_lo, f_hi) = if higher_is_better { (m / b, m / a) } else { (a / m, b / m) };
    Some((s, [lo * f_lo, hi * f_hi]))
}

/// Compare this run's points with the baseline's (see the module documentation for the rule).
pub fn compare(
    now: &[PointView],
    base: &[PointView],
    higher_is_better: bool,
    tolerance: f64,
    path: &str,
) -> Comparison {
    let first = |v: &[PointView]| v.iter().filter(|p| p.speedup.is_some()).min_by_key(|p| p.threads).cloned();
    let (now_first, base_first) = (first(now), first(base));
    let mut points = Vec::new();
    let mut unmatched = Vec::new();
    for p in now {
        let Some(b) = base.iter().find(|b| b.threads == p.threads) else {
            unmatched.push(p.threads);
            continue;
        };
        let (Some(nf), Some(bf)) = (&now_first, &base_first) else { continue };
        if p.threads <= nf.threads.max(bf.threads) {
            continue; // speedup 1 by definition
        }
        let (Some((s, range)), Some((bs, brange))) =
            (interval(nf, p, higher_is_better), interval(bf, b, higher_is_better))
        else {
            continue;
        };
        let paired = paired_test(&p.paired_speedups, &b.paired_speedups);
        let (drop, beyond_spread) = match &paired {
            Some(t) => (1.0 - t.mean / t.baseline_mean, t.baseline_mean - t.mean > t.margin),
            None => (1.0 - s / bs, range[1] < brange[0]),
        };
        let share = |v: &PointView, c: &str| v.categories.get(c).copied().unwrap_or(0.0);
        // The share of the program's own time: thread time less waiting for a CPU.
        let own = |v: &PointView, c: &str| {
            let rest = 1.0 - share(v, "runqueue");
            if rest > 0.01 {
                share(v, c) / rest
            } else {
                0.0
            }
        };
        let profiled = !p.categories.is_empty() && !b.categories.is_empty();
        let mut names: Vec<&String> = p.categories.keys().chain(b.categories.keys()).collect();
        names.sort();
        names.dedup();
        let mut grown: Vec<GrownCategory> = names
            .into_iter()
            .filter(|c| blamable(c))
            .filter(|c| own(p, c) - own(b, c) >= GROWN_POINTS)
            .map(|c| GrownCategory {
                category: c.clone(),
                share: own(p, c),
                baseline_share: own(b, c),
                site: p.sites.get(c).cloned().unwrap_or_default(),
                baseline_site: b.sites.get(c).cloned().unwrap_or_default(),
            })
            .collect();
        grown.sort_by(|x, y| (y.share - y.baseline_share).total_cmp(&(x.share - x.baseline_share)));
        let runqueue_growth = share(p, "runqueue") - share(b, "runqueue");
        let (regression, reason) = if !beyond_spread {
            (false, "within the spread of the two runs".to_string())
        } else if drop <= tolerance {
            (false, format!("beyond the spread but under the {:.0} % tolerance", tolerance * 100.0))
        } else if profiled && grown.is_empty() {
            (
                false,
                format!(
                    "beyond the spread, but no category of the program grew{}: the machine was busier (other processes)",
                    if runqueue_growth > 0.0 {
                        format!(" (waiting for a CPU did, +{:.0} points)", runqueue_growth * 100.0)
                    } else {
                        String::new()
                    }
                ),
            )
        } else {
            (true, "beyond the spread of both runs".to_string())
        };
        points.push(PointComparison {
            threads: p.threads,
            speedup: s,
            speedup_range: range,
            baseline_speedup: bs,
            baseline_range: brange,
            drop,
            paired,
            beyond_spread,
            grown,
            runqueue_growth,
            regression,
            reason,
        });
    }
    unmatched.extend(base.iter().filter(|b| !now.iter().any(|p| p.threads == b.threads)).map(|b| b.threads));
    unmatched.sort_unstable();
    let regression = points.iter().any(|p| p.regression);
    let mut c = Comparison {
        path: path.to_string(),
        verdict: if regression { "regression" } else { "no regression" }.into(),
        tolerance,
        points,
        unmatched_threads: unmatched,
        message: String::new(),
    };
    c.message = message(&c);
    c
}

fn message(c: &Comparison) -> String {
    let mut o = format!(
        "baseline {}: {}",
        c.path,
        if c.verdict == "regression" { "SCALING REGRESSION" } else { "no scaling regression" }
    );
    if c.points.is_empty() {
        o += " (no thread count above the smallest was measured in both runs)";
    }
    for p in &c.points {
        o += &format!(
            "\n  N = {}: speedup {:.2} ({:.2}–{:.2}) vs {:.2} ({:.2}–{:.2}) in the baseline, {:+.0} %{}: {}{}",
            p.threads,
            p.speedup,
            p.speedup_range[0],
            p.speedup_range[1],
            p.baseline_speedup,
            p.baseline_range[0],
            p.baseline_range[1],
            -p.drop * 100.0,
            p.paired
                .as_ref()
                .map(|t| format!(" (paired means {:.2} vs {:.2}, margin {:.2})", t.mean, t.baseline_mean, t.margin))
                .unwrap_or_default(),
            if p.regression { "a regression, " } else { "" },
            p.reason
        );
        if !p.grown.is_empty() {
            let g: Vec<String> = p
                .grown
                .iter()
                .map(|g| {
                    let site = g.site.describe();
                    let was = g.baseline_site.describe();
                    let mut s = format!("{} {:.0} % → {:.0} %", g.category, g.baseline_share * 100.0, g.share * 100.0);
                    if !site.is_empty() {
                        s += &format!(" ({site}");
                        if !was.is_empty() && was != site {
                            s += &format!("; baseline: {was}");
                        }
                        s += ")";
                    }
                    s
                })
                .collect();
            o += &format!("\n    share of the program's own time (less waiting for a CPU) grew: {}", g.join(", "));
        }
    }
    if !c.unmatched_threads.is_empty() {
        o += &format!(
            "\n  not compared (measured in only one run): N = {}",
            c.unmatched_threads.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(threads: u32, runs: &[f64], t1: Option<&[f64]>, cats: &[(&str, f64)]) -> PointView {
        let med = |r: &[f64]| {
            let mut v = r.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (m, lo, hi) =
            (med(runs), runs.iter().cloned().fold(f64::MAX, f64::min), runs.iter().cloned().fold(0.0, f64::max));
        let t1m = t1.map(med).unwrap_or(m);
        PointView {
            threads,
            median: Some(m),
            min: Some(lo),
            max: Some(hi),
            speedup: Some(t1m / m),
            speedup_min: Some(t1m / hi),
            speedup_max: Some(t1m / lo),
            categories: cats.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            sites: cats
                .iter()
                .map(|(k, _)| (k.to_string(), Site { lock: None, line: Some(format!("work (bench.py:{})", k.len())) }))
                .collect(),
            paired_speedups: Vec::new(),
        }
    }

    fn run(t1: &[f64], t2: &[f64], cats2: &[(&str, f64)]) -> Vec<PointView> {
        vec![pt(1, t1, None, &[("python", 0.9)]), pt(2, t2, Some(t1), cats2)]
    }

    #[test]
    fn a_lock_in_the_hot_loop_is_a_regression_and_named() {
        let base = run(&[1.0, 1.05, 0.98], &[0.55, 0.57, 0.6], &[("python", 0.9), ("runqueue", 0.05)]);
        let now = run(&[1.1, 1.12, 1.08], &[1.6, 1.7, 1.65], &[("python", 0.4), ("lock", 0.45)]);
        let c = compare(&now, &base, false, DEFAULT_TOLERANCE, "old/results.json");
        assert_eq!(c.verdict, "regression", "{}", c.message);
        let p = &c.points[0];
        assert!(p.regression && p.beyond_spread && p.drop > 0.5, "{p:?}");
        assert_eq!(p.grown[0].category, "lock");
        assert!(c.message.contains("lock 0 % → 45 %") && c.message.contains("bench.py:4"), "{}", c.message);
    }

    #[test]
    fn overlapping_spreads_are_no_regression() {
        let base = run(&[1.0, 1.1, 0.95], &[0.55, 0.7, 0.6], &[("python", 0.9)]);
        let now = run(&[1.0, 1.05, 0.97], &[0.62, 0.75, 0.66], &[("python", 0.85), ("lock", 0.05)]);
        let c = compare(&now, &base, false, DEFAULT_TOLERANCE, "b");
        assert_eq!(c.verdict, "no regression", "{}", c.message);
        assert!(!c.points[0].beyond_spread);
    }

    #[test]
    fn the_spread_at_n1_widens_the_interval() {
        // N = 2 repeats agree, but T1 varied by ±10 %: the speedups are not told apart.
        let base = run(&[0.9, 1.0, 1.1], &[0.55, 0.55, 0.55], &[("python", 0.9)]);
        let now = run(&[0.9, 1.0, 1.1], &[0.61, 0.61, 0.61], &[("python", 0.8), ("lock", 0.1)]);
        let c = compare(&now, &base, false, DEFAULT_TOLERANCE, "b");
        assert!(!c.points[0].beyond_spread, "{:?}", c.points[0]);
    }

    #[test]
    fn a_drop_beyond_the_spread_but_small_is_within_tolerance() {
        let base = run(&[1.0, 1.0, 1.0], &[0.55, 0.55, 0.55], &[("python", 0.9)]);
        let now = run(&[1.0, 1.0, 1.0], &[0.58, 0.58, 0.58], &[("python", 0.8), ("lock", 0.1)]);
        let c = compare(&now, &base, false, DEFAULT_TOLERANCE, "b");
        assert!(c.points[0].beyond_spread && !c.points[0].regression, "{:?}", c.points[0]);
        assert_eq!(c.verdict, "no regression");
    }

    #[test]
    fn a_busier_machine_is_not_a_regression_of_the_program() {
        let base = run(&[1.0, 1.02, 0.99], &[0.55, 0.56, 0.57], &[("python", 0.9), ("runqueue", 0.05)]);
        let now = run(&[1.0, 1.02, 0.99], &[0.9, 0.95, 0.92], &[("python", 0.55), ("runqueue", 0.4), ("join", 0.05)]);
        let c = compare(&now, &base, false, DEFAULT_TOLERANCE, "b");
        let p = &c.points[0];
        assert!(p.beyond_spread && !p.regression && p.grown.is_empty(), "{p:?}");
        assert!(p.reason.contains("machine was busier"), "{}", p.reason);
        // Unprofiled runs have no categories to tell: the drop alone decides.
        let strip = |v: Vec<PointView>| {
            v.into_iter().map(|mut p| {
                p.categories.clear();
                p
            })
        };
        let c = compare(&strip(now).collect::<Vec<_>>(), &strip(base).collect::<Vec<_>>(), false, 0.1, "b");
        assert_eq!(c.verdict, "regression");
    }

    #[test]
    fn a_lock_added_on_a_busier_machine_is_still_a_regression() {
        // The figures of a loaded run: the lock's share of all thread time barely moved (waiting
        // for a CPU grew far more and diluted it), but of the program's own time it did.
        let base = run(&[1.0, 1.02, 0.99], &[0.55, 0.56, 0.57], &[("python", 0.85), ("runqueue", 0.15)]);
        let now = run(&[1.0, 1.02, 0.99], &[1.4, 1.45, 1.5], &[("python", 0.25), ("lock", 0.07), ("runqueue", 0.68)]);
        let c = compare(&now, &base, false, DEFAULT_TOLERANCE, "b");
        let p = &c.points[0];
        assert!(p.regression, "{}", c.message);
        assert_eq!(p.grown.len(), 1, "{p:?}");
        assert_eq!(p.grown[0].category, "lock");
        assert!((p.grown[0].share - 0.07 / 0.32).abs() < 1e-9, "{p:?}");
        assert!((p.runqueue_growth - 0.53).abs() < 1e-9);
        assert!(c.message.contains("lock 0 % → 22 %"), "{}", c.message);
    }

    #[test]
    fn rates_and_unmatched_thread_counts() {
        // A rate: higher is better, speedup = M_N / M_1.
        let mk = |n: u32, runs: &[f64], m1: f64| {
            let m = runs[runs.len() / 2];
            PointView {
                threads: n,
                median: Some(m),
                min: Some(runs[0]),
                max: Some(runs[runs.len() - 1]),
                speedup: Some(m / m1),
                speedup_min: Some(runs[0] / m1),
                speedup_max: Some(runs[runs.len() - 1] / m1),
                ..Default::default()
            }
        };
        let base = vec![mk(1, &[99.0, 100.0, 101.0], 100.0), mk(2, &[190.0, 195.0, 200.0], 100.0)];
        let now = vec![
            mk(1, &[99.0, 100.0, 101.0], 100.0),
            mk(2, &[100.0, 105.0, 110.0], 100.0),
            mk(4, &[100.0, 100.0, 100.0], 100.0),
        ];
        let c = compare(&now, &base, true, 0.1, "b");
        assert_eq!(c.verdict, "regression");
        assert_eq!(c.unmatched_threads, vec![4]);
        let r = c.points[0].speedup_range;
        assert!((r[0] - 100.0 / 101.0).abs() < 1e-9 && (r[1] - 1.1 * 100.0 / 99.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn paired_speedups_cancel_a_load_that_drifted_between_repeats() {
        // The machine got slower for the third repeat of both N (interleaved runs): the ranges
        // of the unpaired values overlap, the pairs do not.
        let mut base = run(&[1.0, 1.0, 1.6], &[0.55, 0.56, 0.9], &[("python", 0.9)]);
        let mut now = run(&[1.0, 1.0, 1.6], &[0.95, 0.97, 1.55], &[("python", 0.5), ("lock", 0.4)]);
        let c = compare(&now, &base, false, DEFAULT_TOLERANCE, "b");
        assert!(!c.points[0].beyond_spread, "{:?}", c.points[0]);
        base[1].paired_speedups = vec![1.0 / 0.55, 1.0 / 0.56, 1.6 / 0.9];
        now[1].paired_speedups = vec![1.0 / 0.95, 1.0 / 0.97, 1.6 / 1.55];
        let c = compare(&now, &base, false, DEFAULT_TOLERANCE, "b");
        assert!(c.points[0].beyond_spread && c.points[0].regression, "{:?}", c.points[0]);
        assert_eq!(c.points[0].grown[0].category, "lock");
        let t = c.points[0].paired.as_ref().unwrap();
        assert!(t.baseline_mean - t.mean > t.margin && t.margin > 0.0, "{t:?}");
        assert!(c.message.contains("paired means"), "{}", c.message);
        // Paired means within twice their standard error: not beyond the spread.
        now[1].paired_speedups = vec![1.3, 1.9, 1.5];
        base[1].paired_speedups = vec![1.8, 1.6, 2.0];
        let c = compare(&now, &base, false, DEFAULT_TOLERANCE, "b");
        assert!(!c.points[0].beyond_spread && !c.points[0].regression, "{:?}", c.points[0]);
    }

    #[test]
    fn results_json_with_null_medians_parses() {
        let text = r#"{"schema_version":1,"command":["x"],"scaling":"strong",
            "measure":{"what":"wall_time_s","higher_is_better":false},"repeat":1,"online_cpus":2,
            "points":[{"threads":1,"runs":[],"failed_runs":1,"median":null,"min":null,"max":null,
            "spread":0.0,"speedup":null,"categories":{}}]}"#;
        let f: BaselineFile = serde_json::from_str(text).unwrap();
        assert_eq!(f.points[0].median, None);
    }
}
