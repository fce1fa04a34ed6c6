//! speedscope's file format (<https://www.speedscope.app>, schema `file-format-schema.json` in the
//! `speedscope` npm package): one sampled profile per thread, weights in microseconds, one
//! shared frame table with file and line. In `Mode::Blame`, first one profile per lock named
//! `blame: <lock>` (its blame stacks: the lock, the holder thread, the holder's Python frames,
//! weighted by the time others waited), then the threads weighted as in `Mode::Wall`.
//!
//! The profile is aggregated, so each distinct stack is one "sample" with its total weight:
//! speedscope's "Left Heavy" and "Sandwich" views are exact; its time-ordered view shows the
//! stacks one after the other, not in the order they happened.

use std::collections::HashMap;

use analysis::{FrameKind, Profile};
use serde::{Deserialize, Serialize};

use crate::Mode;

pub const SCHEMA_URL: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct File {
    #[serde(rename = "$schema")]
    pub schema: String,
    pub shared: Shared,
    pub profiles: Vec<SampledProfile>,
    pub name: String,
    #[serde(rename = "activeProfileIndex")]
    pub active_profile_index: usize,
    pub exporter: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Shared {
    pub frames: Vec<FrameEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FrameEntry {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SampledProfile {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub unit: String,
    #[serde(rename = "startValue")]
    pub start_value: f64,
    #[serde(rename = "endValue")]
    pub end_value: f64,
    pub samples: Vec<Vec<usize>>,
    pub weights: Vec<f64>,
}

/// The speedscope document for `p`, weighted as `mode` (µs; CPU mode: samples × period; blame
/// mode: the blame profiles, then the threads as in wall mode).
pub fn document(p: &Profile, title: &str, mode: Mode, idle: bool) -> File {
    let per = p.summary.period_us();
    let mut frames = Vec::new();
    let mut index: HashMap<u32, usize> = HashMap::new();
    let mut profiles = Vec::new();
    let blame = if mode == Mode::Blame { blame_profiles(p, &mut frames, &mut index) } else { Vec::new() };
    let mode = if mode == Mode::Blame { Mode::Wall } else { mode };
    for t in &p.threads {
        let mut samples = Vec::new();
        let mut weights = Vec::new();
        for s in p.stacks.iter().filter(|s| s.thread == t.tid) {
            let w = crate::weight(s, mode, idle, per);
            let w = if mode == Mode::Cpu { w as f64 * per } else { w as f64 };
            if w <= 0.0 {
                continue;
            }
            let ids: Vec<usize> = s
                .frames
                .iter()
                .filter(|&&f| p.frames[f as usize].kind != FrameKind::Thread)
                .map(|&f| frame_id(p, f, &mut frames, &mut index))
                .collect();
            samples.push(ids);
            weights.push(w.round());
        }
        if samples.is_empty() {
            continue;
        }
        let total: f64 = weights.iter().sum();
        let name = if t.name.is_empty() { format!("thread {}", t.tid) } else { format!("{} ({})", t.name, t.tid) };
        profiles.push(SampledProfile {
            kind: "sampled".into(),
            name,
            unit: "microseconds".into(),
            start_value: 0.0,
            end_value: total,
            samples,
            weights,
        });
    }
    // The busiest thread first: speedscope opens the active profile (blame: the largest lock's).
    profiles.sort_by(|a, b| b.end_value.total_cmp(&a.end_value));
    let profiles = blame.into_iter().chain(profiles).collect();
    File {
        schema: SCHEMA_URL.into(),
        shared: Shared { frames },
        profiles,
        name: title.to_string(),
        active_profile_index: 0,
        exporter: format!("ftprof {}", env!("CARGO_PKG_VERSION")),
    }
}

fn frame_id(p: &Profile, f: u32, frames: &mut Vec<FrameEntry>, index: &mut HashMap<u32, usize>) -> usize {
    *index.entry(f).or_insert_with(|| {
        let fr = &p.frames[f as usize];
        frames.push(FrameEntry {
            name: fr.label(),
            file: fr.file.clone().or_else(|| fr.module.clone()),
            line: fr.line,
        });
        frames.len() - 1
    })
}

/// One profile per lock with blame stacks, `blame: <lock>`, the largest first.
fn blame_profiles(p: &Profile, frames: &mut Vec<FrameEntry>, index: &mut HashMap<u32, usize>) -> Vec<SampledProfile> {
    let mut by_lock: std::collections::BTreeMap<usize, SampledProfile> = Default::default();
    let mut roots: HashMap<usize, usize> = HashMap::new();
    for b in p.blame.iter().filter(|b| b.time_us > 0) {
        let root = *roots.entry(b.lock).or_insert_with(|| {
            frames.push(FrameEntry { name: analysis::blame::lock_root(p, b.lock), file: None, line: None });
            frames.len() - 1
        });
        let mut ids = vec![root];
        ids.extend(b.frames.iter().map(|&f| frame_id(p, f, frames, index)));
        let prof = by_lock.entry(b.lock).or_insert_with(|| SampledProfile {
            kind: "sampled".into(),
            name: format!("blame: {}", p.locks[b.lock].description),
            unit: "microseconds".into(),
            start_value: 0.0,
            end_value: 0.0,
            samples: Vec::new(),
            weights: Vec::new(),
        });
        prof.samples.push(ids);
        prof.weights.push(b.time_us as f64);
        prof.end_value += b.time_us as f64;
    }
    let mut v: Vec<SampledProfile> = by_lock.into_values().collect();
    v.sort_by(|a, b| b.end_value.total_cmp(&a.end_value));
    v
}

/// Write the speedscope JSON.
pub fn write(p: &Profile, title: &str, mode: Mode, idle: bool, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let doc = document(p, title, mode, idle);
    if doc.profiles.is_empty() {
        anyhow::bail!("nothing to write in this mode (no stacks with weight); try --mode wall or --idle");
    }
    serde_json::to_writer(&mut *out, &doc)?;
    out.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_profile_per_thread_with_the_profile_total() {
        let p = analysis::fixture::profile();
        let doc = document(&p, "t", Mode::Wall, true);
        let total: f64 = doc.profiles.iter().map(|s| s.end_value).sum();
        let expected = p.summary.thread_time_us as f64;
        assert!((total - expected).abs() <= expected * 0.01 + doc.profiles.len() as f64, "{total} vs {expected}");
        let threads = p.threads.iter().filter(|t| t.samples > 0 || t.wait_us > 0).count();
        assert_eq!(doc.profiles.len(), threads);
        for s in &doc.profiles {
            assert_eq!(s.samples.len(), s.weights.len());
            assert!(s.samples.iter().flatten().all(|&i| i < doc.shared.frames.len()));
        }
        assert!(doc.shared.frames.iter().any(|f| f.line.is_some() && f.file.is_some()));
        let text = serde_json::to_string(&doc).unwrap();
        let back: File = serde_json::from_str(&text).unwrap();
        assert_eq!(back.profiles.len(), doc.profiles.len());
    }

    #[test]
    fn blame_mode_puts_one_profile_per_lock_first() {
        let p = analysis::fixture::profile();
        let doc = document(&p, "t", Mode::Blame, false);
        let wall = document(&p, "t", Mode::Wall, false);
        let locks: std::collections::BTreeSet<usize> = p.blame.iter().map(|b| b.lock).collect();
        assert!(!locks.is_empty());
        let (blame, threads) = doc.profiles.split_at(locks.len());
        assert_eq!(threads.len(), wall.profiles.len(), "then the threads, as in wall mode");
        for (a, b) in threads.iter().zip(&wall.profiles) {
            assert_eq!((&a.name, &a.weights), (&b.name, &b.weights));
        }
        for prof in blame {
            let i = p.locks.iter().position(|l| prof.name == format!("blame: {}", l.description)).unwrap();
            let want: u64 = p.blame.iter().filter(|b| b.lock == i).map(|b| b.time_us).sum();
            assert_eq!(prof.end_value, want as f64);
            assert_eq!(prof.weights.iter().sum::<f64>(), want as f64);
            let root = analysis::blame::lock_root(&p, i);
            assert!(prof.samples.iter().all(|s| doc.shared.frames[s[0]].name == root && s.len() >= 2));
        }
        assert!(blame.windows(2).all(|w| w[0].end_value >= w[1].end_value), "the largest lock first");
    }
}
