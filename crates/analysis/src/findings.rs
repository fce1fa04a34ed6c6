//! Findings: known free-threading scaling pitfalls recognised in a finished [`Profile`], each
//! with what to change.
//!
//! The pitfalls are data, `crates/analysis/data/pitfalls.json` (embedded): per row an `id`, a
//! `title`, the evidence that must match (`when`, a list of alternatives), the CPython build and
//! versions it applies to, a share threshold, the `remedy`, the version that fixed it
//! (`fixed_in`) and the `citation`. [`derive`] is a pure function of the profile: every stack is
//! tried against the rows in order and claimed by the first row one of whose alternatives it
//! matches; the claimed stacks of one row are grouped per object (the wait leaf: the lock, the
//! object whose reference count stalled); a group above the row's `min_share` of all thread time,
//! seen on at least `min_threads` threads (each with 10 % of the group's time), is a finding. Shares are of the active thread time
//! ([`active_us`]: all thread time but the idle kinds and the runqueue, which machine load
//! decides); a group of shared-refcount stalls counts only if some of them were contended. Contention that no row claims is still
//! reported, per object, with guidance for its category (`generic: true`).
//!
//! Right or silent: a row only applies to the builds and versions it names (`build`,
//! `python_min`, `python_max`); its remedy says a newer CPython fixes it only when the target's
//! version is older than `fixed_in`.
//!
//! An alternative of `when` matches a stack when every field it gives matches (each field is a
//! list of which any one must match):
//!
//! | field | matches |
//! |---|---|
//! | `categories` | the stack's category (`refcount`, `lock`, … as in the JSON profile) |
//! | `object_types` | the object's type: the first word of the wait leaf (`str`, `_thread.lock`) |
//! | `object_contains` | a substring of the wait leaf (`constant of`, `closure variable`) |
//! | `frames` | a substring of any frame's name (native functions, Python qualnames) |
//! | `python_files` | a substring of the innermost Python frame's file |
//! | `python_functions` | a substring of the innermost Python frame's qualname |
//! | `held_by` | the lock's holder stacks with a Python frame containing one of these (`""`: any holder code) have at least [`HOLDER_MIN_SHARE`] of its blamed waiting |
//! | `source` | `gil_reenabled`: only when the profile says the GIL was turned back on |
//!
//! A row with `site_outside` (file substrings) names as its line the program's call into that
//! library: the innermost Python frame whose file contains none of them (a disabled
//! `log.debug()` is fixed at the call, not inside `logging`).
//!
//! A row with `one_finding: true` makes all its evidence one finding (named after the object with
//! the most time) instead of one per object. Uncontended shared refcount updates count only next
//! to contended ones on the same object, unless the row says `cost_of_sharing: true` (the atomic
//! updates are the pitfall, as for arithmetic over a shared list's numbers).

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::profile::{Frame, FrameKind, Profile};
use crate::wait::Category;

/// The pitfall table, as shipped.
pub const PITFALLS_JSON: &str = include_str!("../data/pitfalls.json");

/// Share of a lock's blamed waiting its matching holder stacks must have for `held_by` evidence.
pub const HOLDER_MIN_SHARE: f64 = 0.25;

/// Share of a group's time a thread must have to count towards `min_threads`.
pub const PARTICIPANT_MIN_SHARE: f64 = 0.1;

/// Share of active thread time that contention no row explains must reach to be reported.
pub const GENERIC_MIN_SHARE: f64 = 0.03;

/// Predicted throughput gain if a finding's contention were removed (`crate::gain`).
pub use crate::gain::Gain;

/// One alternative of a row's evidence (see the module documentation).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub object_types: Vec<String>,
    #[serde(default)]
    pub object_contains: Vec<String>,
    #[serde(default)]
    pub frames: Vec<String>,
    #[serde(default)]
    pub python_files: Vec<String>,
    #[serde(default)]
    pub python_functions: Vec<String>,
    #[serde(default)]
    pub held_by: Option<Vec<String>>,
}

/// The CPython version that fixed a pitfall, and how.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedIn {
    pub version: String,
    pub what: String,
}

/// One row of the pitfall table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pitfall {
    pub id: String,
    pub title: String,
    pub when: Vec<Evidence>,
    /// `free-threaded`, `default`, or absent (any build).
    #[serde(default)]
    pub build: Option<String>,
    #[serde(default)]
    pub python_min: Option<String>,
    #[serde(default)]
    pub python_max: Option<String>,
    pub min_share: f64,
    #[serde(default)]
    pub min_threads: Option<usize>,
    /// All the row's evidence is one finding (its object: the one with the most time), instead
    /// of one per object: for pitfalls spread over several objects (a classmethod, its class).
    #[serde(default)]
    pub one_finding: bool,
    /// Uncontended shared refcount updates (`atomic_refcount`) are the pitfall itself: the row
    /// does not ask for another thread on the same object at the same time (arithmetic over a
    /// shared list's numbers: each number is updated atomically by every thread, rarely at the
    /// same moment, and the remedy removes the atomics).
    #[serde(default)]
    pub cost_of_sharing: bool,
    /// The finding's line is the program's call into a library: the innermost Python frame
    /// whose file contains none of these (when a stack has one), not the library's own line.
    #[serde(default)]
    pub site_outside: Vec<String>,
    pub remedy: String,
    #[serde(default)]
    pub fixed_in: Option<FixedIn>,
    pub citation: String,
}

#[derive(Deserialize)]
struct Table {
    #[allow(dead_code)]
    about: String,
    pitfalls: Vec<Pitfall>,
}

/// Parse a pitfall table (the JSON format of `data/pitfalls.json`), checking every category
/// name, build and version.
pub fn parse_table(json: &str) -> Result<Vec<Pitfall>, String> {
    let t: Table = serde_json::from_str(json).map_err(|e| format!("pitfall table: {e}"))?;
    for p in &t.pitfalls {
        for w in &p.when {
            if let Some(c) = w.categories.iter().find(|c| category(c).is_none()) {
                return Err(format!("pitfall {}: unknown category {c:?}", p.id));
            }
            if w.source.as_deref().is_some_and(|s| s != "gil_reenabled") {
                return Err(format!("pitfall {}: unknown source {:?}", p.id, w.source));
            }
        }
        if p.build.as_deref().is_some_and(|b| b != "free-threaded" && b != "default") {
            return Err(format!("pitfall {}: unknown build {:?}", p.id, p.build));
        }
        for v in [&p.python_min, &p.python_max].into_iter().flatten().chain(p.fixed_in.as_ref().map(|f| &f.version)) {
            if version(v).is_none() {
                return Err(format!("pitfall {}: bad version {v:?}", p.id));
            }
        }
        if p.when.is_empty() || !(0.0..1.0).contains(&p.min_share) {
            return Err(format!("pitfall {}: no evidence or a share outside [0, 1)", p.id));
        }
    }
    let mut ids = BTreeSet::new();
    if let Some(p) = t.pitfalls.iter().find(|p| !ids.insert(p.id.as_str())) {
        return Err(format!("pitfall {}: id used twice", p.id));
    }
    Ok(t.pitfalls)
}

/// The shipped table ([`PITFALLS_JSON`]).
pub fn pitfalls() -> &'static [Pitfall] {
    static T: OnceLock<Vec<Pitfall>> = OnceLock::new();
    // The table is compiled in and checked by the unit tests: a parse error is a build defect.
    T.get_or_init(|| parse_table(PITFALLS_JSON).expect("the embedded pitfall table parses"))
}

/// A pitfall (or unexplained contention) seen in a profile, with what to do about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The table row (`shared-constant`, …), or `generic-<category>`.
    pub id: String,
    pub title: String,
    /// The category of the evidence (the largest one when several).
    pub category: Category,
    /// What it is about: the object or lock (`str 'x' (constant of `f`)`, `_thread.lock @ 0x…`).
    pub object: String,
    /// Where to change the program, `qualname (file:line)`: the line where the time was lost, or
    /// the holder's line for a lock held across work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The site's file (full path when the profile has it) and line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Where the threads lost the time, when the site is elsewhere (the holder's line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_at: Option<String>,
    /// Share of the active thread time ([`active_us`]), 0..1.
    pub share: f64,
    pub time_us: u64,
    /// Threads with time in the evidence.
    pub threads: usize,
    /// One sentence: what was measured.
    pub evidence: String,
    /// One or two sentences: what to change (for the target's version).
    pub remedy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citation: Option<String>,
    /// No pitfall row explains it: `remedy` is guidance for its category.
    pub generic: bool,
    /// What removing it would gain, when predicted.
    #[serde(default)]
    pub predicted_gain: Option<Gain>,
}

impl Finding {
    /// What ranking uses: the predicted gain's factor, else the gain if the time vanished
    /// entirely (`1 / (1 - share)`, an upper bound).
    pub fn rank_value(&self) -> f64 {
        match self.predicted_gain {
            Some(g) => g.factor,
            None => 1.0 / (1.0 - self.share.min(0.99)),
        }
    }

    /// One line: `title — evidence`.
    pub fn headline(&self) -> String {
        format!("{} — {}", self.title, self.evidence)
    }
}

fn category(name: &str) -> Option<Category> {
    Category::ALL.iter().copied().find(|c| c.name() == name)
}

/// `3.13.1` → `[3, 13, 1]` (a suffix such as `rc1` or `+` on a component is ignored).
fn version(v: &str) -> Option<Vec<u32>> {
    let parts: Option<Vec<u32>> = v
        .split('.')
        .map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    parts.filter(|p| !p.is_empty())
}

/// Compare `target` with `bound` on the components `bound` gives (`3.13.4` vs `3.13` → equal).
fn cmp_prefix(target: &[u32], bound: &[u32]) -> std::cmp::Ordering {
    let n = bound.len().min(target.len());
    target[..n].cmp(&bound[..n]).then(if target.len() < bound.len() {
        std::cmp::Ordering::Less
    } else {
        std::cmp::Ordering::Equal
    })
}

/// The target as a row sees it.
struct Target {
    version: Option<Vec<u32>>,
    free_threaded: Option<bool>,
}

impl Target {
    fn of(p: &Profile) -> Target {
        let py = p.target.python.as_ref();
        Target { version: py.and_then(|py| version(&py.version)), free_threaded: py.map(|py| py.free_threaded) }
    }

    fn applies(&self, row: &Pitfall) -> bool {
        let build_ok = match row.build.as_deref() {
            None => true,
            Some("free-threaded") => self.free_threaded == Some(true),
            Some(_) => self.free_threaded == Some(false),
        };
        let bound = |b: &Option<String>, ok: fn(std::cmp::Ordering) -> bool| match b {
            None => true,
            Some(b) => match (&self.version, version(b)) {
                (Some(t), Some(b)) => ok(cmp_prefix(t, &b)),
                _ => false,
            },
        };
        build_ok && bound(&row.python_min, |o| o.is_ge()) && bound(&row.python_max, |o| o.is_le())
    }

    /// The row's remedy for this target: with the fix in a newer CPython when there is one.
    fn remedy(&self, row: &Pitfall) -> String {
        match (&row.fixed_in, &self.version) {
            (Some(f), Some(t)) if version(&f.version).is_some_and(|v| cmp_prefix(t, &v).is_lt()) => {
                format!("{} Fixed in CPython {}: {}.", row.remedy, f.version, f.what)
            }
            _ => row.remedy.clone(),
        }
    }
}

/// A stack with what the rows look at.
struct View<'a> {
    index: usize,
    category: Category,
    thread: u32,
    time_us: f64,
    /// The wait leaf without its category prefix (`str 'x' (constant of `f`)`).
    object: Option<&'a str>,
    frames: Vec<&'a Frame>,
    python: Option<&'a Frame>,
}

impl<'a> View<'a> {
    /// The Python frame that names the line: the innermost one, or for generated code (a file
    /// `<string>`, as dataclasses and namedtuple make) the first caller with a real file.
    fn site_frame(&self) -> Option<&'a Frame> {
        let pseudo = |f: &Frame| f.file.as_deref().is_none_or(|p| p.starts_with('<'));
        match self.python {
            Some(f) if pseudo(f) => {
                self.frames.iter().rev().find(|g| g.kind == FrameKind::Python && !pseudo(g)).copied().or(Some(f))
            }
            other => other,
        }
    }

    /// [`Self::site_frame`], or with `outside` given, the innermost Python frame whose file
    /// contains none of `outside` (the program's line calling into a library), when there is one.
    fn site_frame_outside(&self, outside: &[String]) -> Option<&'a Frame> {
        if outside.is_empty() {
            return self.site_frame();
        }
        self.frames
            .iter()
            .rev()
            .find(|f| {
                f.kind == FrameKind::Python
                    && f.file.as_deref().is_some_and(|file| !file.starts_with('<') && !any_in(outside, file))
            })
            .copied()
            .or_else(|| self.site_frame())
    }

    fn object_type(&self) -> Option<&'a str> {
        self.object.and_then(|o| o.split_whitespace().next())
    }
}

fn views(p: &Profile) -> Vec<View<'_>> {
    let period_us = p.summary.period_us();
    p.stacks
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let frames: Vec<&Frame> = s.frames.iter().filter_map(|&i| p.frames.get(i as usize)).collect();
            let object = frames
                .last()
                .filter(|f| f.kind == FrameKind::Wait)
                .and_then(|f| f.name.split_once(": ").map(|(_, o)| o));
            let python = frames.iter().rev().find(|f| f.kind == FrameKind::Python).copied();
            View {
                index,
                category: s.category,
                thread: s.thread,
                time_us: s.time_us(period_us),
                object,
                frames,
                python,
            }
        })
        .collect()
}

fn any_in(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| text.contains(p.as_str()))
}

/// The holder evidence of the lock a stack waited on: the holder stacks (code, not markers
/// such as `[holder not found]` or a hand-over) with a Python frame that contains one of
/// `patterns`, when together they have at least [`HOLDER_MIN_SHARE`] of the lock's blamed
/// waiting. A holder is "logging" wherever in the logging module its innermost frame is (a
/// formatter, an `isinstance` check called from it), so the whole stack is matched, not only
/// its innermost line. Stands for them: the innermost matching frame and thread with the most
/// time.
fn main_holder(p: &Profile, v: &View, patterns: &[String]) -> Option<crate::blame::HeldBy> {
    let object = v.object?;
    let lock = p.locks.iter().position(|l| l.kind == v.category && l.description == object)?;
    let stacks = || p.blame.iter().filter(|b| b.lock == lock);
    let total: u64 = stacks().map(|b| b.time_us).sum();
    // Per holder line, the time per holder thread: the line to change is the same whichever
    // thread held the lock there (on a loaded machine one thread's release line can outweigh
    // each thread's share of the work line, never their sum).
    let mut sites: Vec<(String, Vec<(String, u64)>)> = Vec::new();
    for b in stacks().filter(|b| b.holder.is_some()) {
        let frames: Vec<&Frame> = b.frames.iter().map(|&f| &p.frames[f as usize]).collect();
        if frames.last().is_none_or(|f| f.kind != FrameKind::Python) {
            continue;
        }
        let Some(site) = frames
            .iter()
            .rev()
            .filter(|f| f.kind == FrameKind::Python)
            .map(|f| f.label())
            .find(|l| any_in(patterns, l))
        else {
            continue;
        };
        let thread = frames.first().map(|f| f.name.clone()).unwrap_or_default();
        let i = match sites.iter().position(|(l, _)| *l == site) {
            Some(i) => i,
            None => {
                sites.push((site, Vec::new()));
                sites.len() - 1
            }
        };
        match sites[i].1.iter_mut().find(|(t, _)| *t == thread) {
            Some((_, t)) => *t += b.time_us,
            None => sites[i].1.push((thread, b.time_us)),
        }
    }
    let line_total = |threads: &[(String, u64)]| threads.iter().map(|t| t.1).sum::<u64>();
    let matched: u64 = sites.iter().map(|s| line_total(&s.1)).sum();
    if total == 0 || (matched as f64) < HOLDER_MIN_SHARE * total as f64 {
        return None;
    }
    sites.sort_by(|a, b| line_total(&b.1).cmp(&line_total(&a.1)).then(a.0.cmp(&b.0)));
    let (line, mut threads) = sites.swap_remove(0);
    let time_us = line_total(&threads);
    threads.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let thread = match threads.len() {
        1 => threads[0].0.clone(),
        n => format!("{} and {} other thread{}", threads[0].0, n - 1, if n == 2 { "" } else { "s" }),
    };
    Some(crate::blame::HeldBy { line, thread, time_us, share: time_us as f64 / total as f64 })
}

fn matches(p: &Profile, e: &Evidence, v: &View) -> bool {
    if e.source.as_deref() == Some("gil_reenabled")
        && p.target.python.as_ref().and_then(|py| py.gil_reenabled.as_ref()).is_none()
    {
        return false;
    }
    let obj = v.object.unwrap_or("");
    (e.categories.is_empty() || e.categories.iter().any(|c| category(c) == Some(v.category)))
        && (e.object_types.is_empty() || v.object_type().is_some_and(|t| e.object_types.iter().any(|x| x == t)))
        && (e.object_contains.is_empty() || any_in(&e.object_contains, obj))
        && (e.frames.is_empty() || v.frames.iter().any(|f| any_in(&e.frames, &f.name)))
        && (e.python_files.is_empty()
            || v.python.and_then(|f| f.file.as_deref()).is_some_and(|f| any_in(&e.python_files, f)))
        && (e.python_functions.is_empty() || v.python.is_some_and(|f| any_in(&e.python_functions, &f.name)))
        && e.held_by.as_ref().is_none_or(|pats| main_holder(p, v, pats).is_some())
}

/// A finding's category: uncontended refcount updates count as refcount (the finding is
/// about the object's count either way).
fn merged(c: Category) -> Category {
    if c == Category::AtomicRefcount {
        Category::Refcount
    } else {
        c
    }
}

/// Time of one group of claimed stacks.
#[derive(Default)]
struct Group {
    time_us: f64,
    threads: BTreeSet<u32>,
    per_cat: HashMap<Category, f64>,
    /// Per innermost Python frame: time.
    lines: HashMap<(String, Option<String>, Option<u32>), f64>,
    /// The same per category (see [`merged`]).
    category_lines: HashMap<(Category, String, Option<String>, Option<u32>), f64>,
    holder: Option<crate::blame::HeldBy>,
    stacks: Vec<usize>,
    /// Per category (see [`merged`]) and object (wait leaf): time.
    objects: HashMap<(Category, String), f64>,
    /// Per thread: time.
    per_thread: HashMap<u32, f64>,
    /// Stop-the-world: the paused threads' lines (the site when no other line is known), and
    /// their time.
    victim_lines: HashMap<(String, Option<String>, Option<u32>), f64>,
    paused_us: f64,
    /// Paused time per thread.
    paused_by: HashMap<u32, f64>,
    /// The row's `site_outside`: lines are the program's calls into these files.
    site_outside: Vec<String>,
}

impl Group {
    fn add(&mut self, v: &View<'_>) {
        self.time_us += v.time_us;
        if v.time_us > 0.0 {
            self.threads.insert(v.thread);
        }
        *self.per_cat.entry(v.category).or_default() += v.time_us;
        if let Some(f) = v.site_frame_outside(&self.site_outside) {
            // A paused thread is a victim: the line is where the collections were asked for.
            let victim = v.category == Category::StopTheWorld && v.object.is_some_and(|o| o.contains("paused thread"));
            let lines = if victim { &mut self.victim_lines } else { &mut self.lines };
            *lines.entry((f.label(), f.file.clone(), f.line)).or_default() += v.time_us;
            if !victim {
                *self.category_lines.entry((merged(v.category), f.label(), f.file.clone(), f.line)).or_default() +=
                    v.time_us;
            }
            if victim {
                self.paused_us += v.time_us;
                *self.paused_by.entry(v.thread).or_default() += v.time_us;
            }
        }
        self.stacks.push(v.index);
        *self.per_thread.entry(v.thread).or_default() += v.time_us;
        *self.objects.entry((merged(v.category), v.object.unwrap_or(v.category.name()).to_string())).or_default() +=
            v.time_us;
    }

    /// Threads with at least [`PARTICIPANT_MIN_SHARE`] of the group's time: a thread with a few
    /// pauses at start-up does not make one worker's pauses a two-thread affair.
    fn participants(&self) -> usize {
        let mut per: HashMap<u32, f64> = HashMap::new();
        for (t, us) in &self.per_thread {
            *per.entry(*t).or_default() += us;
        }
        per.values().filter(|&&us| us >= PARTICIPANT_MIN_SHARE * self.time_us).count()
    }

    /// Stop-the-world pauses count when they stopped other threads (at least 10 % of the
    /// group's time is paused threads): a lone thread's own collections are its own work.
    /// Stop-the-world pauses count when they stopped other *working* threads (`working`: ones
    /// that ran at least a tenth as much as the busiest): a main thread blocked in `join()`,
    /// paused once at start-up while a loaded machine kept the collector off its CPU, is not
    /// a second thread slowed down.
    fn stopped_others(&self, working: &BTreeSet<u32>) -> bool {
        let paused: f64 =
            self.paused_by.iter().filter(|(t, _)| working.is_empty() || working.contains(t)).map(|(_, us)| us).sum();
        !self.per_cat.contains_key(&Category::StopTheWorld) || paused >= 0.1 * self.time_us
    }

    /// The object with the most time in the group's category (the finding says "category on
    /// object": both from the same stacks).
    fn top_object(&self) -> Option<String> {
        let category = self.category();
        let mut v: Vec<_> = self.objects.iter().filter(|((c, _), _)| *c == category).collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0 .1.cmp(&b.0 .1)));
        v.first().map(|((_, o), _)| o.clone())
    }

    /// Uncontended shared refcounts count only next to contention: a group of nothing but
    /// them (no other thread on the object at the time, ever) is not a finding. A group of
    /// critical-section waits with a stray uncontended refcount sample is.
    fn contended(&self) -> bool {
        self.per_cat.keys().any(|c| *c != Category::AtomicRefcount)
    }

    /// The group's category with the most time, uncontended refcount updates counted as
    /// refcount (the finding is about the object's count either way).
    fn category(&self) -> Category {
        let mut per: HashMap<Category, f64> = HashMap::new();
        for (&c, &t) in &self.per_cat {
            *per.entry(merged(c)).or_default() += t;
        }
        let mut v: Vec<_> = per.into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v[0].0
    }

    /// The line with the most time: `(label, file, line)`.
    fn top_line(&self) -> Option<(String, Option<String>, Option<u32>)> {
        // The line of the finding's category, where the group mixes several (one finding for
        // a pitfall seen as waits and as refcount stalls): the sentence names its line.
        let category = self.category();
        let mut v: Vec<_> = self.category_lines.iter().filter(|((c, ..), _)| *c == category).collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
        if let Some(((_, label, file, line), _)) = v.first() {
            return Some((label.clone(), file.clone(), *line));
        }
        let lines = if self.lines.is_empty() { &self.victim_lines } else { &self.lines };
        let mut v: Vec<_> = lines.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
        v.first().map(|(k, _)| (*k).clone())
    }
}

/// A Python frame of the profile whose label is `label` (to find a holder line's full path).
fn frame_by_label<'a>(p: &'a Profile, label: &str) -> Option<&'a Frame> {
    p.frames.iter().find(|f| f.kind == FrameKind::Python && f.label() == label)
}

fn percent(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

/// Guidance for contention no row explains.
fn generic_remedy(c: Category, free_threaded: Option<bool>) -> &'static str {
    match c {
        Category::Refcount => "Several threads update this object's reference count at the same time. Load it once into a local before the hot loop, or give each thread its own object.",
        Category::CriticalSection => "Threads take turns on this object's per-object lock. Give each thread its own object and merge at the end, or batch the operations.",
        Category::Lock => "Threads wait on this lock. Hold it for less time (only around the shared update), or split it into finer locks.",
        Category::Pymutex => "Threads wait on a lock inside the interpreter or an extension; the native frames of this line's stacks name it. Avoid the operation on the hot path or call it less often.",
        Category::Spin => "Threads spin on a lock before parking; the lock's waiters show where it is taken. Hold it for less time.",
        Category::StopTheWorld => "Stop-the-world pauses stop every thread. Allocate fewer container objects, or raise the collection thresholds (`gc.set_threshold`).",
        Category::Gil if free_threaded == Some(true) => "Threads wait for the GIL, which is on in this free-threaded build. Find what enabled it (PYTHON_GIL, an extension module) and run with it off.",
        Category::Gil => "This is a GIL build: only one thread runs Python at a time. Run the program on the free-threaded build (e.g. python3.13t) or use processes.",
        _ => "Threads lose time here to each other.",
    }
}

/// Thread time (µs) the threads were active: all but the idle kinds (sleep, join, idle) and the
/// runqueue (waiting for a CPU, which machine load decides). Findings' shares are of this.
pub fn active_us(p: &Profile) -> f64 {
    p.summary
        .categories
        .iter()
        .filter(|c| !c.category.is_idle() && c.category != Category::Runqueue)
        .map(|c| c.time_us as f64)
        .sum()
}

/// The findings of a finished profile, best first (see the module documentation).
pub fn derive(p: &Profile) -> Vec<Finding> {
    derive_with(p, pitfalls())
}

/// [`derive`] with a given table.
pub fn derive_with(p: &Profile, table: &[Pitfall]) -> Vec<Finding> {
    let total = active_us(p);
    if total <= 0.0 {
        return Vec::new();
    }
    let target = Target::of(p);
    let views = views(p);
    // Threads that did work: CPU samples at least a tenth of the busiest thread's (none known:
    // every thread counts).
    let busiest = p.threads.iter().map(|t| t.samples).max().unwrap_or(0);
    let working: BTreeSet<u32> =
        p.threads.iter().filter(|t| t.samples > 0 && t.samples * 10 >= busiest).map(|t| t.tid).collect();
    let mut claimed = vec![false; views.len()];
    let mut out = Vec::new();
    // Per finding, the innermost Python lines of its stacks.
    let mut lines: Vec<BTreeSet<String>> = Vec::new();
    for row in table.iter().filter(|r| target.applies(r)) {
        // Per object, the stacks this row claims.
        let mut groups: Vec<(String, Group)> = Vec::new();
        for v in views.iter().filter(|v| !claimed[v.index]) {
            if !row.when.iter().any(|e| matches(p, e, v)) {
                continue;
            }
            let per_object = !row.one_finding && !matches!(v.category, Category::StopTheWorld | Category::Gil);
            let key = if per_object { v.object.unwrap_or(v.category.name()).to_string() } else { String::new() };
            let g = match groups.iter().position(|(k, _)| *k == key) {
                Some(i) => &mut groups[i].1,
                None => {
                    groups.push((key, Group { site_outside: row.site_outside.clone(), ..Group::default() }));
                    &mut groups.last_mut().unwrap().1
                }
            };
            if g.holder.is_none() {
                g.holder = row.when.iter().filter_map(|e| e.held_by.as_ref()).find_map(|pats| main_holder(p, v, pats));
            }
            g.add(v);
        }
        for (key, g) in groups {
            let share = g.time_us / total;
            if share < row.min_share
                || g.participants() < row.min_threads.unwrap_or(1)
                || !(g.contended() || row.cost_of_sharing)
                || !g.stopped_others(&working)
            {
                continue;
            }
            for &i in &g.stacks {
                claimed[i] = true;
            }
            let category = g.category();
            let object = match (category, &p.target.python) {
                (Category::Gil, Some(py)) => match py.gil_reenabled.as_ref() {
                    Some(r) => format!("the GIL, turned on by {}", r.cause),
                    None => "the GIL".into(),
                },
                (Category::StopTheWorld, _) => "stop-the-world pauses".into(),
                _ if row.one_finding => g.top_object().unwrap_or_default(),
                _ => key,
            };
            lines.push(g.lines.keys().map(|k| k.0.clone()).collect());
            out.push(finding(p, &target, row, category, object, share, &g));
        }
    }
    // Spinning before parking belongs to the lock parked on at the same line (as in the lock
    // table): fold unclaimed spin stacks into the finding that has their line.
    for v in views.iter().filter(|v| v.category == Category::Spin) {
        if claimed[v.index] {
            continue;
        }
        let Some(label) = v.python.map(Frame::label) else { continue };
        if let Some(i) = lines.iter().position(|l| l.contains(&label)) {
            claimed[v.index] = true;
            out[i].time_us += v.time_us.round() as u64;
            out[i].share = out[i].time_us as f64 / total;
        }
    }
    out.extend(generic_findings(p, &target, &views, &claimed, total, &working));
    out.sort_by(|a, b| b.rank_value().total_cmp(&a.rank_value()).then(a.id.cmp(&b.id)).then(a.object.cmp(&b.object)));
    out
}

/// Contention no row explains, per object: generic findings (category, object, generic
/// guidance) for what is not `claimed` and is above [`GENERIC_MIN_SHARE`].
fn generic_findings(
    p: &Profile,
    target: &Target,
    views: &[View],
    claimed: &[bool],
    total: f64,
    working: &BTreeSet<u32>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut groups: Vec<((Category, String), Group)> = Vec::new();
    // `PyEvent_WaitTimed` is a notification (a thread start handshake, `Event`-like), not a lock.
    let notification = |v: &View| v.object.is_some_and(|o| o.starts_with("PyEvent"));
    // A free-threaded build's GIL that did not stay on was on while an extension module
    // initialised: transient, not the program's.
    let transient_gil = |v: &View| {
        v.category == Category::Gil
            && p.target.python.as_ref().is_some_and(|py| py.free_threaded && py.gil_reenabled.is_none())
    };
    for v in views
        .iter()
        .filter(|v| !claimed[v.index] && v.category.is_contention() && !notification(v) && !transient_gil(v))
    {
        let key = (v.category, v.object.unwrap_or(v.category.name()).to_string());
        match groups.iter().position(|(k, _)| *k == key) {
            Some(i) => groups[i].1.add(v),
            None => {
                let mut g = Group::default();
                g.add(v);
                groups.push((key, g));
            }
        }
    }
    for ((category, object), g) in groups {
        let share = g.time_us / total;
        // Contention needs two threads at once: refcounts and pauses are seen on both; a lock's
        // waiter may be alone (its holder does not wait), but then the lock has a holder.
        let min_threads = if matches!(category, Category::Refcount | Category::StopTheWorld) { 2 } else { 1 };
        if share < GENERIC_MIN_SHARE || g.participants() < min_threads || !g.stopped_others(working) {
            continue;
        }
        let row = Pitfall {
            id: format!("generic-{}", category.name()),
            title: format!("{} contention", category.name().replace('_', " ")),
            when: Vec::new(),
            build: None,
            python_min: None,
            python_max: None,
            min_share: GENERIC_MIN_SHARE,
            min_threads: None,
            one_finding: false,
            cost_of_sharing: false,
            site_outside: Vec::new(),
            remedy: generic_remedy(category, target.free_threaded).into(),
            fixed_in: None,
            citation: String::new(),
        };
        let mut f = finding(p, target, &row, category, object, share, &g);
        f.generic = true;
        out.push(f);
    }
    out
}

fn finding(
    p: &Profile,
    target: &Target,
    row: &Pitfall,
    category: Category,
    object: String,
    share: f64,
    g: &Group,
) -> Finding {
    let waited = g.top_line();
    let threads = g.threads.len();
    let mut evidence = format!(
        "{} of active thread time in {} on {object}{}, {threads} thread{}",
        percent(share),
        category.name(),
        waited.as_ref().map(|w| format!(" at {}", w.0)).unwrap_or_default(),
        if threads == 1 { "" } else { "s" }
    );
    let (site, file, line, waited_at) = match &g.holder {
        Some(h) => {
            evidence.push_str(&format!("; held by {} at {} ({} of the waiting)", h.thread, h.line, percent(h.share)));
            let fr = frame_by_label(p, &h.line);
            (Some(h.line.clone()), fr.and_then(|f| f.file.clone()), fr.and_then(|f| f.line), waited.map(|w| w.0))
        }
        None => match waited {
            Some((label, file, line)) => (Some(label), file, line, None),
            None => (None, None, None, None),
        },
    };
    Finding {
        id: row.id.clone(),
        title: row.title.clone(),
        category,
        object,
        site,
        file,
        line,
        waited_at,
        share,
        time_us: g.time_us.round() as u64,
        threads,
        evidence,
        remedy: target.remedy(row),
        citation: (!row.citation.is_empty()).then(|| row.citation.clone()),
        generic: false,
        // The time of exactly this finding's stacks removed, on the machine it was recorded on.
        predicted_gain: crate::gain::gain(p, &crate::gain::Target::Stacks(g.stacks.clone()), p.summary.cpus),
    }
}

#[cfg(test)]
mod tests;
