//! Scaling analysis: speedup and efficiency per thread count, and least-squares fits of Amdahl's
//! law and the Universal Scalability Law (USL).
//!
//! Both models are fitted on their linearised forms, which are exact for data that follow them:
//! * Amdahl, `S(N) = 1 / (s + (1 - s) / N)`: `1/S - 1/N = s · (1 - 1/N)`;
//! * USL, `S(N) = N / (1 + σ(N - 1) + κN(N - 1))`: `N/S - 1 = σ(N - 1) + κN(N - 1)`.
//!
//! The fits are physical: the serial fraction is kept in [0, 1] and σ, κ ≥ 0 (least squares
//! under those bounds). Points with more threads than CPUs (oversubscribed) are left out — their
//! speedup is bounded by the CPUs, not by the program — and a model is fitted only when more
//! points than it has parameters determine it (the point at the smallest N is the baseline, a
//! speedup of 1 by definition): Amdahl from two other thread counts, the USL from three.
//! Otherwise the fit is absent and [`analyse`] says why.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Category, FrameKind, Profile};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    #[error("need at least {0} distinct thread counts to fit, got {1}")]
    TooFewPoints(usize, usize),
    #[error("thread counts and speedups must be positive and finite (got N = {0}, S = {1})")]
    BadPoint(f64, f64),
    #[error("the fit is degenerate (all points carry the same information)")]
    Degenerate,
    #[error("{model} has {params} parameter(s): it needs {needed} thread counts besides the baseline within the CPUs to be determined, got {got}")]
    Undetermined { model: &'static str, params: usize, needed: usize, got: usize },
}

/// Fitted Amdahl's law.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Amdahl {
    /// Serial fraction `s` (0 = perfectly parallel).
    pub serial_fraction: f64,
    /// Root mean square error of the fitted speedups.
    pub rmse: f64,
}

impl Amdahl {
    pub fn speedup(&self, n: f64) -> f64 {
        1.0 / (self.serial_fraction + (1.0 - self.serial_fraction) / n)
    }
}

/// Fitted Universal Scalability Law.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usl {
    /// σ: contention (serialisation).
    pub sigma: f64,
    /// κ: coherency (crosstalk) cost.
    pub kappa: f64,
    /// The thread count at which throughput peaks, `sqrt((1 - σ) / κ)`; `None` when κ ≤ 0.
    pub peak_threads: Option<f64>,
    pub rmse: f64,
}

impl Usl {
    pub fn speedup(&self, n: f64) -> f64 {
        n / (1.0 + self.sigma * (n - 1.0) + self.kappa * n * (n - 1.0))
    }
}

fn check(points: &[(f64, f64)], min: usize) -> Result<(), FitError> {
    for &(n, s) in points {
        if !(n.is_finite() && s.is_finite() && n > 0.0 && s > 0.0) {
            return Err(FitError::BadPoint(n, s));
        }
    }
    let mut ns: Vec<f64> = points.iter().map(|p| p.0).collect();
    ns.sort_by(f64::total_cmp);
    ns.dedup();
    if ns.len() < min {
        return Err(FitError::TooFewPoints(min, ns.len()));
    }
    Ok(())
}

fn rmse(points: &[(f64, f64)], f: impl Fn(f64) -> f64) -> f64 {
    (points.iter().map(|&(n, s)| (f(n) - s).powi(2)).sum::<f64>() / points.len() as f64).sqrt()
}

/// Fit Amdahl's law to `(threads, speedup)` points (at least three distinct thread counts).
pub fn fit_amdahl(points: &[(f64, f64)]) -> Result<Amdahl, FitError> {
    check(points, 3)?;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &(n, s) in points {
        let x = 1.0 - 1.0 / n;
        let y = 1.0 / s - 1.0 / n;
        sxy += x * y;
        sxx += x * x;
    }
    if sxx <= f64::EPSILON {
        return Err(FitError::Degenerate);
    }
    let serial_fraction = (sxy / sxx).clamp(0.0, 1.0);
    let mut a = Amdahl { serial_fraction, rmse: 0.0 };
    a.rmse = rmse(points, |n| a.speedup(n));
    Ok(a)
}

/// Fit the USL to `(threads, speedup)` points (at least three distinct thread counts).
pub fn fit_usl(points: &[(f64, f64)]) -> Result<Usl, FitError> {
    check(points, 3)?;
    // Normal equations of y = σ·x1 + κ·x2.
    let (mut a11, mut a12, mut a22, mut b1, mut b2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(n, s) in points {
        let (x1, x2, y) = (n - 1.0, n * (n - 1.0), n / s - 1.0);
        a11 += x1 * x1;
        a12 += x1 * x2;
        a22 += x2 * x2;
        b1 += x1 * y;
        b2 += x2 * y;
    }
    let det = a11 * a22 - a12 * a12;
    if det.abs() <= 1e-12 * (a11 * a22).max(1.0) {
        return Err(FitError::Degenerate);
    }
    // Least squares under σ, κ ≥ 0: the unconstrained optimum when it is feasible, else the
    // best of the boundaries (one parameter at 0, the other fitted alone and kept ≥ 0).
    let (mut sigma, mut kappa) = ((b1 * a22 - b2 * a12) / det, (a11 * b2 - a12 * b1) / det);
    if sigma < 0.0 || kappa < 0.0 {
        let sse = |sg: f64, kp: f64| {
            points.iter().map(|&(n, s)| (n / s - 1.0 - sg * (n - 1.0) - kp * n * (n - 1.0)).powi(2)).sum::<f64>()
        };
        let only_sigma = ((b1 / a11).max(0.0), 0.0);
        let only_kappa = (0.0, (b2 / a22).max(0.0));
        (sigma, kappa) =
            if sse(only_sigma.0, only_sigma.1) <= sse(only_kappa.0, only_kappa.1) { only_sigma } else { only_kappa };
    }
    let peak_threads = (kappa > 1e-12 && sigma < 1.0).then(|| ((1.0 - sigma) / kappa).sqrt());
    let mut u = Usl { sigma, kappa, peak_threads, rmse: 0.0 };
    u.rmse = rmse(points, |n| u.speedup(n));
    Ok(u)
}

/// Speedup for a run of `threads` threads that took `time` (or reported a duration metric),
/// given the one-thread time: strong scaling `T1/TN`, weak scaling `N·T1/TN`.
pub fn speedup(t1: f64, tn: f64, threads: u32, weak: bool) -> Option<f64> {
    if !(t1 > 0.0 && tn > 0.0 && t1.is_finite() && tn.is_finite()) {
        return None;
    }
    Some(if weak { threads as f64 * t1 / tn } else { t1 / tn })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: [f64; 6] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

    #[test]
    fn usl_recovers_known_parameters() {
        for (sigma, kappa) in [(0.05, 0.001), (0.2, 0.0), (0.01, 0.02), (0.0, 0.0)] {
            let truth = Usl { sigma, kappa, peak_threads: None, rmse: 0.0 };
            let pts: Vec<(f64, f64)> = NS.iter().map(|&n| (n, truth.speedup(n))).collect();
            let fit = fit_usl(&pts).unwrap();
            assert!((fit.sigma - sigma).abs() < 1e-3, "σ {} vs {sigma}", fit.sigma);
            assert!((fit.kappa - kappa).abs() < 1e-3, "κ {} vs {kappa}", fit.kappa);
            assert!(fit.rmse < 1e-9);
            if kappa > 0.0 {
                let peak = ((1.0 - sigma) / kappa).sqrt();
                assert!((fit.peak_threads.unwrap() - peak).abs() < 1e-6);
            } else {
                assert!(fit.peak_threads.is_none());
            }
        }
    }

    #[test]
    fn amdahl_recovers_the_serial_fraction() {
        for s in [0.0, 0.05, 0.3, 0.9] {
            let truth = Amdahl { serial_fraction: s, rmse: 0.0 };
            let pts: Vec<(f64, f64)> = NS[..4].iter().map(|&n| (n, truth.speedup(n))).collect();
            let fit = fit_amdahl(&pts).unwrap();
            assert!((fit.serial_fraction - s).abs() < 1e-3, "{} vs {s}", fit.serial_fraction);
        }
    }

    /// Physical fits: table of points and the expected parameters (None: no fit).
    #[test]
    fn fits_are_physical() {
        #[rustfmt::skip]
        type Case = (&'static str, Vec<(f64, f64)>, Option<f64>, Option<(f64, f64)>);
        let cases: Vec<Case> = vec![
            // Superlinear: unconstrained fits give a negative serial fraction and σ < 0.
            ("superlinear", vec![(1.0, 1.0), (2.0, 2.2), (4.0, 4.6), (8.0, 9.0)], Some(0.0), Some((0.0, 0.0))),
            // Slower with more threads than one thread alone: the serial fraction caps at 1.
            ("retrograde", vec![(1.0, 1.0), (2.0, 0.6), (4.0, 0.5)], Some(1.0), None),
            // Retrograde with σ alone: κ would be negative unconstrained.
            ("σ only", vec![(1.0, 1.0), (2.0, 1.6), (4.0, 2.4), (8.0, 3.3)], None, None),
        ];
        for (name, pts, amdahl, usl) in cases {
            let a = fit_amdahl(&pts).unwrap();
            assert!((0.0..=1.0).contains(&a.serial_fraction), "{name}: {a:?}");
            if let Some(want) = amdahl {
                assert!((a.serial_fraction - want).abs() < 1e-9, "{name}: {a:?}");
            }
            let u = fit_usl(&pts).unwrap();
            assert!(u.sigma >= 0.0 && u.kappa >= 0.0, "{name}: {u:?}");
            if let Some((sg, kp)) = usl {
                assert!((u.sigma - sg).abs() < 1e-9 && (u.kappa - kp).abs() < 1e-9, "{name}: {u:?}");
            }
        }
        // The constrained USL is the best fit on its boundary: σ alone here.
        let u = fit_usl(&[(1.0, 1.0), (2.0, 2.0 / 1.3), (4.0, 4.0 / 1.9), (8.0, 8.0 / 3.1)]).unwrap();
        assert!((u.sigma - 0.3).abs() < 1e-3 && u.kappa.abs() < 1e-3, "{u:?}");
    }

    fn point(threads: u32, speedup: f64, cpus: u32) -> ScalePoint {
        ScalePoint { threads, speedup: Some(speedup), oversubscribed: threads > cpus, ..Default::default() }
    }

    #[test]
    fn the_curve_without_the_top_contention() {
        use crate::gain::Gain;
        let g = |f: f64| Gain { factor: f, low: f - 0.1, high: f + 0.1 };
        let mut pts = vec![point(1, 1.0, 4), point(2, 1.2, 4), point(4, 1.5, 4)];
        pts[2].speedup = None;
        let gains: BTreeMap<u32, Gain> = [(1, g(1.0)), (2, g(1.5)), (4, g(2.0))].into();
        predict_without(&mut pts, &gains);
        assert_eq!(pts[0].without, Some(Gain { factor: 1.0, low: 0.9, high: 1.1 }));
        let w = pts[1].without.unwrap();
        assert!((w.factor - 1.8).abs() < 1e-9 && (w.low - 1.68).abs() < 1e-9 && (w.high - 1.92).abs() < 1e-9, "{w:?}");
        assert_eq!(pts[2].without, None, "no speedup measured at 4");
        // Contention already at the baseline: relative to the baseline without it.
        let gains: BTreeMap<u32, Gain> = [(1, g(1.2)), (2, g(1.8))].into();
        predict_without(&mut pts, &gains);
        assert!((pts[0].without.unwrap().factor - 1.0).abs() < 1e-9);
        assert!((pts[1].without.unwrap().factor - 1.8).abs() < 1e-9);
    }

    #[test]
    fn the_top_contention_is_what_grew_else_the_largest_at_the_largest_n() {
        let mut a = point(1, 1.0, 4);
        a.category_us = cats(&[("python", 10.0)]);
        let mut b = point(2, 1.2, 4);
        b.category_us = cats(&[("python", 10.0), ("lock", 3.0), ("refcount", 5.0), ("runqueue", 50.0)]);
        let pts = [a, b];
        assert_eq!(top_contention(&pts, None), Some(Category::Refcount));
        let grew = Growth { category: "lock".into(), ..Default::default() };
        assert_eq!(top_contention(&pts, Some(&grew)), Some(Category::Lock));
        let grew = Growth { category: "python".into(), ..Default::default() };
        assert_eq!(top_contention(&pts, Some(&grew)), Some(Category::Refcount));
        assert_eq!(top_contention(&pts[..1], None), None);
    }

    /// The case: `--threads 1,2,4` on 2 CPUs gave an exact USL fit of three points (one
    /// oversubscribed) with κ < 0, and a serial fraction above 1.
    #[test]
    fn oversubscribed_points_are_left_out_and_undetermined_fits_are_absent_with_a_reason() {
        let pts = [point(1, 1.0, 2), point(2, 0.9, 2), point(4, 1.2, 2)];
        let (a, u, note) = fits(&pts);
        assert!(a.is_none() && u.is_none(), "{a:?} {u:?}");
        let note = note.unwrap();
        assert!(note.contains("no Amdahl fit: Amdahl's law has 1 parameter(s): it needs 2 thread counts besides the baseline within the CPUs to be determined, got 1"), "{note}");
        assert!(note.contains("no USL fit"), "{note}");
        assert!(note.contains("N = 4 left out of the fits (more threads than CPUs)"), "{note}");
        // Three thread counts within 16 CPUs: Amdahl yes, the USL (two parameters) not yet.
        let pts = [point(1, 1.0, 16), point(2, 1.8, 16), point(4, 3.0, 16)];
        let (a, u, note) = fits(&pts);
        assert!(a.is_some() && u.is_none());
        assert!(note.unwrap().starts_with("no USL fit: the USL has 2 parameter(s): it needs 3"));
        let pts = [point(1, 1.0, 16), point(2, 1.8, 16), point(4, 3.0, 16), point(8, 4.5, 16), point(32, 2.0, 16)];
        let (a, u, note) = fits(&pts);
        assert!(a.is_some() && u.is_some() && note.is_none(), "{note:?}");
        // The oversubscribed point does not pull the fit down: the same fit without it.
        let (a2, u2, _) = fits(&pts[..4]);
        assert_eq!((a, u), (a2, u2));
    }

    #[test]
    fn noisy_data_still_fits_close() {
        let truth = Usl { sigma: 0.1, kappa: 0.005, peak_threads: None, rmse: 0.0 };
        let noise = [1.01, 0.99, 1.02, 0.98, 1.0, 1.01];
        let pts: Vec<(f64, f64)> = NS.iter().zip(noise).map(|(&n, e)| (n, truth.speedup(n) * e)).collect();
        let fit = fit_usl(&pts).unwrap();
        assert!((fit.sigma - 0.1).abs() < 0.05 && (fit.kappa - 0.005).abs() < 0.005, "{fit:?}");
    }

    fn cats(v: &[(&str, f64)]) -> BTreeMap<String, f64> {
        v.iter().map(|(k, t)| (k.to_string(), *t)).collect()
    }

    fn raw(threads: u32, secs: f64, us: &[(&str, f64)]) -> RawPoint {
        let total: f64 = us.iter().map(|x| x.1).sum();
        let sites = us
            .iter()
            .map(|(k, _)| (k.to_string(), Site { lock: None, line: Some(format!("work (w.py:{threads})")) }))
            .collect();
        RawPoint {
            threads,
            runs: vec![secs],
            failed_runs: 0,
            categories: us.iter().map(|(k, t)| (k.to_string(), t / total)).collect(),
            category_us: cats(us),
            category_se_us: BTreeMap::new(),
            sites,
            repeats: vec![Some(secs)],
        }
    }

    #[test]
    fn growth_per_unit_of_work_finds_a_cause_that_dominated_at_one_thread() {
        // Weak scaling: refcount stalls are 60 % of thread time at N = 1 and still ~60 % at N = 2
        // (its share barely moves), but per unit of work they went from 0.6 s to 1.8 s. Runqueue
        // and join grew in share more than refcount did.
        let p1 = raw(1, 1.0, &[("refcount", 600_000.0), ("python", 400_000.0), ("join", 1_000_000.0)]);
        let p2 = raw(
            2,
            2.6,
            &[("refcount", 3_600_000.0), ("python", 900_000.0), ("runqueue", 600_000.0), ("join", 2_600_000.0)],
        );
        let (points, ..) = analyse(vec![p1, p2], true, false, 2);
        let shares = |p: &ScalePoint, c: &str| p.categories.get(c).copied().unwrap_or(0.0);
        assert!(shares(&points[1], "refcount") - shares(&points[0], "refcount") < 0.2);
        assert!((points[1].per_work_us["refcount"] - 1_800_000.0).abs() < 1e-6);
        let g = largest_growth(&points).unwrap();
        assert_eq!(g.category, "refcount");
        assert!((g.growth_us - 1_200_000.0).abs() < 1e-6, "{g:?}");
        assert!((g.runqueue_growth_us - 300_000.0).abs() < 1e-6);
        assert_eq!(g.line.as_deref(), Some("work (w.py:2)"));
        assert!(g.describe().contains("refcount (+1200 ms of thread time per unit of work"), "{}", g.describe());
        // Strong scaling: the same numbers are per unit of work as they are.
        let p1 = raw(1, 1.0, &[("lock", 0.0), ("python", 1_000_000.0)]);
        let p2 = raw(2, 1.0, &[("lock", 900_000.0), ("python", 1_100_000.0), ("runqueue", 2_000_000.0)]);
        let (points, ..) = analyse(vec![p1, p2], false, false, 2);
        let g = largest_growth(&points).unwrap();
        assert_eq!((g.category.as_str(), g.growth_us), ("lock", 900_000.0));
    }

    #[test]
    fn paired_speedups_divide_each_repeat_by_the_same_repeat_at_the_smallest_n() {
        let mk = |threads, repeats: Vec<Option<f64>>| RawPoint {
            threads,
            runs: repeats.iter().flatten().copied().collect(),
            repeats,
            ..Default::default()
        };
        let raw = vec![mk(2, vec![Some(0.5), None, Some(1.0)]), mk(1, vec![Some(1.0), Some(1.2), Some(1.8)])];
        let (points, ..) = analyse(raw.clone(), false, false, 2);
        assert_eq!(points[1].paired_speedups, vec![2.0, 1.8]);
        assert!(points[0].paired_speedups.iter().all(|&s| (s - 1.0).abs() < 1e-12));
        let (points, ..) = analyse(raw, true, false, 2);
        assert_eq!(points[1].paired_speedups, vec![4.0, 3.6]);
        // One pair is no spread: left empty.
        let (points, ..) =
            analyse(vec![mk(1, vec![Some(1.0), None]), mk(2, vec![Some(0.5), Some(0.5)])], false, false, 2);
        assert!(points[1].paired_speedups.is_empty());
    }

    #[test]
    fn no_growth_without_two_profiled_points_or_when_only_waiting_for_a_cpu_grew() {
        let p1 = raw(1, 1.0, &[("python", 1_000_000.0)]);
        assert!(largest_growth(&analyse(vec![p1.clone()], false, false, 2).0).is_none());
        let mut p2 = raw(2, 1.0, &[("python", 900_000.0), ("runqueue", 500_000.0), ("idle", 100_000.0)]);
        assert!(largest_growth(&analyse(vec![p1.clone(), p2.clone()], false, false, 2).0).is_none());
        // A growth within 2 % of all thread time per unit of work is noise.
        let p3 = raw(2, 1.0, &[("python", 1_015_000.0), ("runqueue", 500_000.0)]);
        assert!(largest_growth(&analyse(vec![p1.clone(), p3], false, false, 2).0).is_none());
        let p4 = raw(2, 1.0, &[("python", 1_025_000.0), ("runqueue", 500_000.0)]);
        assert_eq!(largest_growth(&analyse(vec![p1.clone(), p4], false, false, 2).0).unwrap().category, "python");
        p2.category_us.clear();
        assert!(largest_growth(&analyse(vec![p1, p2], false, false, 2).0).is_none());
    }

    #[test]
    fn a_growth_within_the_run_to_run_variation_is_not_named() {
        let runs = |v: &[f64]| -> Vec<BTreeMap<String, f64>> { v.iter().map(|&x| cats(&[("python", x)])).collect() };
        let (m, se) = mean_and_se(&runs(&[900_000.0, 1_000_000.0, 1_100_000.0]));
        assert!((m["python"] - 1_000_000.0).abs() < 1e-6 && (se["python"] - 100_000.0 / 3f64.sqrt()).abs() < 1e-6);
        assert!(mean_and_se(&runs(&[5.0])).1.is_empty());
        let point = |threads, v: &[f64]| {
            let (category_us, category_se_us) = mean_and_se(&runs(v));
            RawPoint { threads, runs: vec![1.0], category_us, category_se_us, ..Default::default() }
        };
        // +100 ms on means that vary by ±100 ms run to run: noise.
        let (pts, ..) = analyse(
            vec![point(1, &[900_000.0, 1_000_000.0, 1_100_000.0]), point(2, &[1_000_000.0, 1_100_000.0, 1_200_000.0])],
            false,
            false,
            2,
        );
        assert!(largest_growth(&pts).is_none());
        // The same growth with tight runs: named.
        let (pts, ..) = analyse(
            vec![point(1, &[990_000.0, 1_000_000.0, 1_010_000.0]), point(2, &[1_090_000.0, 1_100_000.0, 1_110_000.0])],
            false,
            false,
            2,
        );
        assert_eq!(largest_growth(&pts).unwrap().category, "python");
    }

    #[test]
    fn top_sites_name_the_largest_lock_and_the_hottest_line() {
        let p = crate::fixture::profile();
        let sites = top_sites(&p);
        for l in &p.locks {
            let s = &sites[l.kind.name()];
            assert!(s.lock.is_some(), "{:?}", l.kind);
        }
        let biggest = p.locks.iter().max_by_key(|l| l.total_us).unwrap();
        let s = &sites[biggest.kind.name()];
        if p.locks.iter().filter(|l| l.kind == biggest.kind).count() == 1 {
            assert_eq!(s.lock.as_deref(), Some(biggest.description.as_str()));
        }
        assert!(sites.get("python").is_some_and(|s| s.lock.is_none() && s.line.is_some()), "{sites:?}");
    }

    #[test]
    fn degenerate_inputs_are_errors_not_nan() {
        assert_eq!(fit_usl(&[(1.0, 1.0)]), Err(FitError::TooFewPoints(3, 1)));
        assert_eq!(fit_usl(&[(1.0, 1.0), (2.0, 1.9), (2.0, 1.8)]), Err(FitError::TooFewPoints(3, 2)));
        assert_eq!(fit_amdahl(&[(1.0, 1.0), (1.0, 1.0), (1.0, 1.0)]), Err(FitError::TooFewPoints(3, 1)));
        assert!(matches!(fit_usl(&[(1.0, 1.0), (2.0, 0.0), (4.0, 2.0)]), Err(FitError::BadPoint(..))));
        assert!(matches!(fit_amdahl(&[(1.0, f64::NAN), (2.0, 1.0), (4.0, 2.0)]), Err(FitError::BadPoint(..))));
        assert_eq!(speedup(0.0, 1.0, 2, false), None);
        assert_eq!(speedup(1.0, 0.0, 2, false), None);
        assert_eq!(speedup(2.0, 1.0, 2, false), Some(2.0));
        assert_eq!(speedup(1.0, 1.0, 4, true), Some(4.0));
    }
}

/// One thread count of `ftprof scale`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScalePoint {
    pub threads: u32,
    /// Each successful run's value: wall time in seconds, or the metric.
    pub runs: Vec<f64>,
    /// Runs whose command failed or printed no metric.
    pub failed_runs: u32,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// (max - min) / median.
    pub spread: f64,
    pub speedup: Option<f64>,
    /// Speedup range from the fastest and slowest runs.
    pub speedup_min: Option<f64>,
    pub speedup_max: Option<f64>,
    /// speedup / threads.
    pub efficiency: Option<f64>,
    /// More threads than online CPUs.
    pub oversubscribed: bool,
    /// Share of thread time per category (python, native, refcount, spin, lock, …), summed over
    /// the profiled runs; empty with `--no-profile`.
    pub categories: BTreeMap<String, f64>,
    /// Thread time per category (µs), mean over the profiled runs; empty with `--no-profile`.
    pub category_us: BTreeMap<String, f64>,
    /// Thread time per category per unit of work (µs): `category_us / N` for weak scaling (each
    /// thread does one unit), as is for strong scaling (one unit in all). Compared across N, it
    /// grows for whatever costs more as threads are added, even when it already dominated at N = 1.
    pub per_work_us: BTreeMap<String, f64>,
    /// Standard error of `per_work_us` (µs) from the run-to-run variation of the profiled runs
    /// (empty with a single profiled run).
    pub per_work_se_us: BTreeMap<String, f64>,
    /// The top lock and Python line of each category, from the first profiled run.
    pub sites: BTreeMap<String, Site>,
    /// The speedup of each repeat against the same repeat at the smallest N (`ftprof scale` runs
    /// the repeats interleaved, so each pair ran close in time, under similar load); empty when
    /// fewer than two repeats paired up.
    pub paired_speedups: Vec<f64>,
    /// The speedup predicted without the run's top contention ([`ScaleResult::without`]), with
    /// its interval (see [`crate::gain`] and [`predict_without`]); profiled points only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without: Option<crate::gain::Gain>,
}

/// The contention category whose removal `scale` predicts: the one that grew most with N when
/// it is contention, else the largest contention category at the largest profiled N.
pub fn top_contention(points: &[ScalePoint], growth: Option<&Growth>) -> Option<Category> {
    let by_name = |n: &str| Category::ALL.into_iter().find(|c| c.name() == n);
    if let Some(c) = growth.and_then(|g| by_name(&g.category)).filter(|c| c.is_contention()) {
        return Some(c);
    }
    let last = points.iter().rev().find(|p| !p.category_us.is_empty())?;
    last.category_us
        .iter()
        .filter_map(|(k, v)| Some((by_name(k)?, *v)))
        .filter(|(c, v)| c.is_contention() && *v > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|x| x.0)
}

/// Each point's speedup without the contention, from the predicted gain at each N (`gains`,
/// throughput factors of the profiled run at that N): `S'(N) = S(N) · g(N) / g(N₀)`, relative
/// to the smallest N without the contention too (it may cost there already). Points without a
/// speedup or a gain get none.
pub fn predict_without(points: &mut [ScalePoint], gains: &BTreeMap<u32, crate::gain::Gain>) {
    let Some(base) = points.iter().find(|p| p.speedup.is_some()).map(|p| p.threads) else { return };
    let g0 = gains.get(&base).map_or(1.0, |g| g.factor);
    if !(g0.is_finite() && g0 > 0.0) {
        return;
    }
    for p in points.iter_mut() {
        p.without = match (p.speedup, gains.get(&p.threads)) {
            (Some(s), Some(g)) => {
                Some(crate::gain::Gain { factor: s * g.factor / g0, low: s * g.low / g0, high: s * g.high / g0 })
            }
            _ => None,
        };
    }
}

/// Where one category's time went in a profile: its largest lock and its top Python line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Site {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
}

impl Site {
    /// `_thread.lock @ 0x… at f (x.py:3)`, `at f (x.py:3)`, or empty.
    pub fn describe(&self) -> String {
        match (&self.lock, &self.line) {
            (Some(l), Some(line)) => format!("{l} at {line}"),
            (Some(l), None) => l.clone(),
            (None, Some(line)) => format!("at {line}"),
            (None, None) => String::new(),
        }
    }
}

/// Per category of a profile, its largest lock (with that lock's top line) and, for categories
/// without locks, the Python line (innermost Python frame) with the most time in it.
pub fn top_sites(p: &Profile) -> BTreeMap<String, Site> {
    let mut out: BTreeMap<String, Site> = BTreeMap::new();
    let mut best_lock: BTreeMap<&str, u64> = BTreeMap::new();
    for l in &p.locks {
        let name = l.kind.name();
        if best_lock.get(name).is_none_or(|&t| l.total_us > t) {
            best_lock.insert(name, l.total_us);
            out.insert(
                name.to_string(),
                Site { lock: Some(l.description.clone()), line: l.top_lines.first().map(|t| t.line.clone()) },
            );
        }
    }
    let period_us = p.summary.period_us();
    let mut lines: BTreeMap<(&str, String), f64> = BTreeMap::new();
    for (s, frames) in p.iter_stacks() {
        if let Some(f) = frames.iter().rev().find(|f| f.kind == FrameKind::Python) {
            *lines.entry((s.category.name(), f.label())).or_default() += s.time_us(period_us);
        }
    }
    let mut best_line: BTreeMap<&str, (f64, String)> = BTreeMap::new();
    for ((cat, line), t) in lines {
        if best_line.get(cat).is_none_or(|b| t > b.0) {
            best_line.insert(cat, (t, line));
        }
    }
    for (cat, (_, line)) in best_line {
        let site = out.entry(cat.to_string()).or_default();
        if site.line.is_none() {
            site.line = Some(line);
        }
    }
    out
}

/// The category whose thread time per unit of work grew most from the smallest to the largest
/// thread count (see [`largest_growth`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    pub category: String,
    pub from_threads: u32,
    pub to_threads: u32,
    /// Thread time in the category per unit of work (µs) at the two thread counts.
    pub from_us: f64,
    pub to_us: f64,
    /// `to_us - from_us`.
    pub growth_us: f64,
    /// Its top lock and line at the larger thread count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// Growth of `runqueue` (waiting for a CPU) per unit of work (µs): never blamed on the
    /// program, since other processes cause it too; reported beside.
    pub runqueue_growth_us: f64,
}

impl Growth {
    /// `lock (+350 ms per unit of work, 12 ms → 362 ms), mostly _thread.lock @ 0x… at f (x.py:3)`.
    pub fn describe(&self) -> String {
        let ms = |us: f64| format!("{:.0} ms", us / 1000.0);
        let mut o = format!(
            "{} (+{} of thread time per unit of work from N = {} to N = {}: {} → {})",
            self.category,
            ms(self.growth_us),
            self.from_threads,
            self.to_threads,
            ms(self.from_us),
            ms(self.to_us)
        );
        let site = Site { lock: self.lock.clone(), line: self.line.clone() }.describe();
        if !site.is_empty() {
            o += &format!(", mostly {site}");
        }
        o
    }
}

/// Categories a scaling verdict may blame: what the program does (running, spinning, waiting on
/// its locks, I/O, collecting), not waiting for a CPU (`runqueue`: other processes cause it too)
/// nor the idle kinds (joins, sleeps, notifications: the consequence of other threads' work).
pub fn blamable(category: &str) -> bool {
    Category::ALL.iter().any(|c| c.name() == category && !c.is_idle() && *c != Category::Runqueue)
}

/// Thread time per unit of work: weak scaling does N units at N threads, strong scaling one.
pub fn per_work(category_us: &BTreeMap<String, f64>, threads: u32, weak: bool) -> BTreeMap<String, f64> {
    let units = if weak { threads.max(1) as f64 } else { 1.0 };
    category_us.iter().map(|(k, v)| (k.clone(), v / units)).collect()
}

/// A category's growth per unit of work counts only above this fraction of the program's own
/// thread time per unit of work at the smallest N (its blamable categories), and above twice the
/// standard error of the difference when the runs were repeated.
pub const MIN_GROWTH: f64 = 0.02;

/// Mean and standard error of each category's thread time over several runs (µs).
pub fn mean_and_se(runs: &[BTreeMap<String, f64>]) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let n = runs.len() as f64;
    let mut keys: Vec<&String> = runs.iter().flat_map(|r| r.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut mean = BTreeMap::new();
    let mut se = BTreeMap::new();
    for k in keys {
        let v: Vec<f64> = runs.iter().map(|r| r.get(k).copied().unwrap_or(0.0)).collect();
        let m = v.iter().sum::<f64>() / n;
        mean.insert(k.clone(), m);
        if runs.len() >= 2 {
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
            se.insert(k.clone(), (var / n).sqrt());
        }
    }
    (mean, se)
}

/// Between the smallest and the largest thread count that were profiled, the blamable category
/// whose thread time per unit of work grew most (in absolute time, so a cause that already
/// dominated at N = 1 and grows with N is found even when its share barely moves). `None` when
/// fewer than two thread counts were profiled or no blamable category grew by more than
/// [`MIN_GROWTH`].
pub fn largest_growth(points: &[ScalePoint]) -> Option<Growth> {
    let profiled: Vec<&ScalePoint> = points.iter().filter(|p| !p.per_work_us.is_empty()).collect();
    let (first, last) = (profiled.first()?, profiled.last()?);
    if first.threads == last.threads {
        return None;
    }
    let get = |p: &ScalePoint, c: &str| p.per_work_us.get(c).copied().unwrap_or(0.0);
    let se = |p: &ScalePoint, c: &str| p.per_work_se_us.get(c).copied().unwrap_or(0.0);
    let own: f64 = first.per_work_us.iter().filter(|(c, _)| blamable(c)).map(|(_, v)| v).sum();
    let floor = MIN_GROWTH * own;
    let (category, growth_us) = Category::ALL
        .iter()
        .map(|c| c.name())
        .filter(|c| blamable(c))
        .map(|c| (c, get(last, c) - get(first, c), 2.0 * se(last, c).hypot(se(first, c))))
        .filter(|(_, d, noise)| *d > 0.0 && *d > floor && *d > *noise)
        .map(|(c, d, _)| (c, d))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let site = last.sites.get(category).cloned().unwrap_or_default();
    Some(Growth {
        category: category.to_string(),
        from_threads: first.threads,
        to_threads: last.threads,
        from_us: get(first, category),
        to_us: get(last, category),
        growth_us,
        lock: site.lock,
        line: site.line,
        runqueue_growth_us: get(last, "runqueue") - get(first, "runqueue"),
    })
}

/// What a scaling run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measure {
    /// "wall_time_s", or the metric's regular expression.
    pub what: String,
    /// Higher values are better (a rate), lower are better (a duration).
    pub higher_is_better: bool,
}

/// The result of `ftprof scale` (written as `results.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScaleResult {
    pub schema_version: u32,
    pub command: Vec<String>,
    /// "strong" (fixed total work: speedup T1/TN) or "weak" (work per thread: N·T1/TN).
    pub scaling: String,
    pub measure: Measure,
    pub repeat: u32,
    pub online_cpus: u32,
    pub points: Vec<ScalePoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amdahl: Option<Amdahl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usl: Option<Usl>,
    /// Why no fit was made (fewer than three thread counts, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit_note: Option<String>,
    /// The category whose thread time per unit of work grew most (profiled runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth: Option<Growth>,
    /// The comparison with `--baseline` (see [`crate::baseline`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<crate::baseline::Comparison>,
    /// The contention category the points' `without` speedups remove ([`top_contention`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without: Option<String>,
}

/// One thread count's measurements, as `analyse` takes them.
#[derive(Clone, Debug, Default)]
pub struct RawPoint {
    pub threads: u32,
    /// Each successful run's value.
    pub runs: Vec<f64>,
    pub failed_runs: u32,
    /// Share of thread time per category over the profiled runs.
    pub categories: BTreeMap<String, f64>,
    /// Thread time per category (µs), mean over the profiled runs.
    pub category_us: BTreeMap<String, f64>,
    /// Standard error of that mean (µs); empty with fewer than two profiled runs.
    pub category_se_us: BTreeMap<String, f64>,
    pub sites: BTreeMap<String, Site>,
    /// Each repeat's value in order (`None`: that run failed), for the paired speedups; may be
    /// empty.
    pub repeats: Vec<Option<f64>>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Build the points (speedups relative to the smallest thread count) and the fits.
/// `raw`: per thread count, the successful run values, failed runs and what the profiles say.
pub fn analyse(
    raw: Vec<RawPoint>,
    weak: bool,
    higher_is_better: bool,
    online_cpus: u32,
) -> (Vec<ScalePoint>, Option<Amdahl>, Option<Usl>, Option<String>) {
    // Durations (lower is better) as they are; rates as 1/rate, so that one formula serves both.
    let as_time = |v: f64| if higher_is_better { 1.0 / v } else { v };
    let mut raw = raw;
    raw.sort_by_key(|p| p.threads);
    let repeats: Vec<Vec<Option<f64>>> = raw.iter().map(|p| p.repeats.clone()).collect();
    let mut points: Vec<ScalePoint> = raw
        .into_iter()
        .map(|RawPoint { threads, mut runs, failed_runs, categories, category_us, category_se_us, sites, .. }| {
            let ok = !runs.is_empty();
            let med = if ok { median(&mut runs) } else { f64::NAN };
            let (min, max) = runs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            ScalePoint {
                threads,
                spread: if ok && med > 0.0 { (max - min) / med } else { 0.0 },
                runs,
                failed_runs,
                median: med,
                min: if ok { min } else { f64::NAN },
                max: if ok { max } else { f64::NAN },
                speedup: None,
                speedup_min: None,
                speedup_max: None,
                efficiency: None,
                oversubscribed: threads > online_cpus,
                categories,
                per_work_us: per_work(&category_us, threads, weak),
                per_work_se_us: per_work(&category_se_us, threads, weak),
                category_us,
                sites,
                paired_speedups: Vec::new(),
                without: None,
            }
        })
        .collect();
    // The baseline must be a usable number (a rate of 0 would make every speedup infinite).
    let base = points
        .iter()
        .find(|p| !p.runs.is_empty())
        .map(|p| (p.threads, as_time(p.median)))
        .filter(|(_, t1)| t1.is_finite() && *t1 > 0.0);
    if let Some((n1, t1)) = base {
        // The speedup at `threads` of a run taking `tn` against one taking `t1` at the smallest
        // N. With a rate, "weak" is already in the number: a total rate counts all work.
        let w = weak && !higher_is_better;
        let speedup = |threads: u32, t1: f64, tn: f64| if w { threads as f64 * t1 / tn } else { n1 as f64 * t1 / tn };
        // Paired speedups: repeat r at N against repeat r at the smallest N.
        let first = points.iter().position(|p| !p.runs.is_empty()).unwrap_or(0);
        for (i, p) in points.iter_mut().enumerate() {
            let pairs: Vec<f64> = repeats[first]
                .iter()
                .zip(&repeats[i])
                .filter_map(|(a, b)| {
                    let s = speedup(p.threads, as_time((*a)?), as_time((*b)?));
                    (s.is_finite() && s > 0.0).then_some(s)
                })
                .collect();
            if pairs.len() >= 2 {
                p.paired_speedups = pairs;
            }
        }
        for p in points.iter_mut().filter(|p| !p.runs.is_empty()) {
            // Relative to the smallest thread count measured (normally 1).
            let threads = p.threads;
            let rel = |v: f64| {
                let tn = as_time(v);
                (tn > 0.0 && tn.is_finite()).then(|| speedup(threads, t1, tn))
            };
            p.speedup = rel(p.median);
            let (a, b) = (rel(p.min), rel(p.max));
            p.speedup_min = match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
            p.speedup_max = match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            p.efficiency = p.speedup.map(|s| s / p.threads as f64);
        }
    }
    let (amdahl, usl, note) = fits(&points);
    (points, amdahl, usl, note)
}

/// The fits of measured points: the oversubscribed ones left out, each model only when enough
/// points determine it; the note says which fit is missing and why.
pub fn fits(points: &[ScalePoint]) -> (Option<Amdahl>, Option<Usl>, Option<String>) {
    let pts: Vec<(f64, f64)> =
        points.iter().filter(|p| !p.oversubscribed).filter_map(|p| Some((p.threads as f64, p.speedup?))).collect();
    let left_out: Vec<String> =
        points.iter().filter(|p| p.oversubscribed && p.speedup.is_some()).map(|p| p.threads.to_string()).collect();
    let mut ns: Vec<f64> = pts.iter().map(|p| p.0).collect();
    ns.sort_by(f64::total_cmp);
    ns.dedup();
    // Thread counts besides the baseline (the smallest N, a speedup of 1 by definition).
    let informative = ns.len().saturating_sub(1);
    let determined = |model: &'static str, params: usize| {
        if informative > params {
            Ok(())
        } else {
            Err(FitError::Undetermined { model, params, needed: params + 1, got: informative })
        }
    };
    let amdahl = determined("Amdahl's law", 1).and_then(|_| fit_amdahl(&pts));
    let usl = determined("the USL", 2).and_then(|_| fit_usl(&pts));
    let mut why = Vec::new();
    if let Err(e) = &amdahl {
        why.push(format!("no Amdahl fit: {e}"));
    }
    if let Err(e) = &usl {
        why.push(format!("no USL fit: {e}"));
    }
    if !why.is_empty() && !left_out.is_empty() {
        why.push(format!("N = {} left out of the fits (more threads than CPUs)", left_out.join(", ")));
    }
    (amdahl.ok(), usl.ok(), (!why.is_empty()).then(|| why.join("; ")))
}
