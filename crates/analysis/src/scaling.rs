//! Scaling analysis: speedup and efficiency per thread count, and least-squares fits of Amdahl's
//! law and the Universal Scalability Law (USL).
//!
//! Both models are fitted on their linearised forms, which are exact for data that follow them:
//! * Amdahl, `S(N) = 1 / (s + (1 - s) / N)`: `1/S - 1/N = s · (1 - 1/N)`;
//! * USL, `S(N) = N / (1 + σ(N - 1) + κN(N - 1))`: `N/S - 1 = σ(N - 1) + κN(N - 1)`.

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    #[error("need at least {0} distinct thread counts to fit, got {1}")]
    TooFewPoints(usize, usize),
    #[error("thread counts and speedups must be positive and finite (got N = {0}, S = {1})")]
    BadPoint(f64, f64),
    #[error("the fit is degenerate (all points carry the same information)")]
    Degenerate,
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
    let serial_fraction = sxy / sxx;
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
    let sigma = (b1 * a22 - b2 * a12) / det;
    let kappa = (a11 * b2 - a12 * b1) / det;
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

    #[test]
    fn noisy_data_still_fits_close() {
        let truth = Usl { sigma: 0.1, kappa: 0.005, peak_threads: None, rmse: 0.0 };
        let noise = [1.01, 0.99, 1.02, 0.98, 1.0, 1.01];
        let pts: Vec<(f64, f64)> = NS.iter().zip(noise).map(|(&n, e)| (n, truth.speedup(n) * e)).collect();
        let fit = fit_usl(&pts).unwrap();
        assert!((fit.sigma - 0.1).abs() < 0.05 && (fit.kappa - 0.005).abs() < 0.005, "{fit:?}");
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    pub categories: std::collections::BTreeMap<String, f64>,
}

/// What a scaling run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measure {
    /// "wall_time_s", or the metric's regular expression.
    pub what: String,
    /// Higher values are better (a rate), lower are better (a duration).
    pub higher_is_better: bool,
}

/// The result of `ftprof scale` (written as `results.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
/// `raw`: per thread count, the successful run values, failed runs and category shares.
#[allow(clippy::type_complexity)]
pub fn analyse(
    raw: Vec<(u32, Vec<f64>, u32, std::collections::BTreeMap<String, f64>)>,
    weak: bool,
    higher_is_better: bool,
    online_cpus: u32,
) -> (Vec<ScalePoint>, Option<Amdahl>, Option<Usl>, Option<String>) {
    // Durations (lower is better) as they are; rates as 1/rate, so that one formula serves both.
    let as_time = |v: f64| if higher_is_better { 1.0 / v } else { v };
    let mut points: Vec<ScalePoint> = raw
        .into_iter()
        .map(|(threads, mut runs, failed_runs, categories)| {
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
            }
        })
        .collect();
    points.sort_by_key(|p| p.threads);
    // The baseline must be a usable number (a rate of 0 would make every speedup infinite).
    let base = points
        .iter()
        .find(|p| !p.runs.is_empty())
        .map(|p| (p.threads, as_time(p.median)))
        .filter(|(_, t1)| t1.is_finite() && *t1 > 0.0);
    if let Some((n1, t1)) = base {
        for p in points.iter_mut().filter(|p| !p.runs.is_empty()) {
            // Relative to the smallest thread count measured (normally 1).
            let threads = p.threads;
            let rel = |v: f64| {
                // With a rate, "weak" is already in the number: a total rate counts all work.
                let w = weak && !higher_is_better;
                let tn = as_time(v);
                (tn > 0.0 && tn.is_finite()).then(|| if w { threads as f64 * t1 / tn } else { n1 as f64 * t1 / tn })
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
    let pts: Vec<(f64, f64)> = points.iter().filter_map(|p| Some((p.threads as f64, p.speedup?))).collect();
    match (fit_amdahl(&pts), fit_usl(&pts)) {
        (Ok(a), Ok(u)) => (points, Some(a), Some(u), None),
        (Ok(a), Err(e)) => (points, Some(a), None, Some(format!("no USL fit: {e}"))),
        (Err(e), _) => (points, None, None, Some(format!("no fit: {e}"))),
    }
}
