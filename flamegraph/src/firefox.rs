//! The Firefox Profiler's processed profile format (through `fxprof-processed-profile`): one
//! thread per recorded thread with its name, frames in categories (Python, native, kernel, and
//! one per wait kind, coloured as in the SVG), CPU deltas for the CPU graph, and each off-CPU
//! stack as an interval marker carrying the lock's identity and the waiting stack.
//!
//! ftprof's profile is aggregated, so each thread's track lays its distinct stacks end to end
//! (most time first): the call tree, flame graph and marker table are exact; the order along
//! the time axis is not the order things happened.

use analysis::{Category, FrameKind, Profile};
use fxprof_processed_profile::{
    CategoryColor, CategoryHandle, CpuDelta, Frame as FxFrame, FrameFlags, FrameInfo, MarkerFieldFlags,
    MarkerFieldFormat, MarkerTiming, Profile as FxProfile, ReferenceTimestamp, SamplingInterval, StaticSchemaMarker,
    StaticSchemaMarkerField, StringHandle, Timestamp,
};

use crate::Mode;

/// How to open the file, printed after writing it.
pub const HOW_TO_OPEN: &str = "open https://profiler.firefox.com and choose \"Load a profile from file\" \
(the file is read in the browser; nothing is uploaded unless you press Upload)";

/// The named Firefox Profiler colour nearest to the SVG's colour of a category.
fn color(c: Category) -> CategoryColor {
    match c {
        Category::Python => CategoryColor::Blue,
        Category::Native => CategoryColor::Orange,
        Category::CriticalSection => CategoryColor::Red,
        Category::Lock => CategoryColor::Magenta,
        Category::Pymutex | Category::StopTheWorld => CategoryColor::Purple,
        Category::Gil => CategoryColor::LightRed,
        Category::Spin => CategoryColor::Orange,
        Category::Refcount | Category::AtomicRefcount => CategoryColor::Yellow,
        Category::Gc => CategoryColor::Green,
        Category::Io => CategoryColor::LightBlue,
        Category::Runqueue => CategoryColor::Brown,
        _ => CategoryColor::Gray,
    }
}

/// An off-CPU interval marker: the stack's wait leaf (lock or wait kind) with its figures.
struct WaitMarker {
    name: StringHandle,
    lock: StringHandle,
    kind: StringHandle,
    category: CategoryHandle,
    waits: f64,
    time_ms: f64,
}

impl StaticSchemaMarker for WaitMarker {
    const UNIQUE_MARKER_TYPE_NAME: &'static str = "FtprofWait";
    const DESCRIPTION: Option<&'static str> = Some("Off-CPU time of one stack (all its waits, laid end to end)");
    const CHART_LABEL: Option<&'static str> = Some("{marker.data.lock}");
    const TOOLTIP_LABEL: Option<&'static str> = Some("{marker.data.kind}: {marker.data.lock}");
    const TABLE_LABEL: Option<&'static str> =
        Some("{marker.data.kind}: {marker.data.lock} ({marker.data.waits} waits)");
    const FIELDS: &'static [StaticSchemaMarkerField] = &[
        StaticSchemaMarkerField {
            key: "lock",
            label: "Lock",
            format: MarkerFieldFormat::String,
            flags: MarkerFieldFlags::SEARCHABLE,
        },
        StaticSchemaMarkerField {
            key: "kind",
            label: "Wait kind",
            format: MarkerFieldFormat::String,
            flags: MarkerFieldFlags::SEARCHABLE,
        },
        StaticSchemaMarkerField {
            key: "waits",
            label: "Waits",
            format: MarkerFieldFormat::Integer,
            flags: MarkerFieldFlags::empty(),
        },
        StaticSchemaMarkerField {
            key: "total",
            label: "Time waiting",
            format: MarkerFieldFormat::Milliseconds,
            flags: MarkerFieldFlags::empty(),
        },
    ];

    fn name(&self, _: &mut FxProfile) -> StringHandle {
        self.name
    }
    fn category(&self, _: &mut FxProfile) -> CategoryHandle {
        self.category
    }
    fn string_field_value(&self, i: u32) -> StringHandle {
        if i == 0 {
            self.lock
        } else {
            self.kind
        }
    }
    fn number_field_value(&self, i: u32) -> f64 {
        if i == 2 {
            self.waits
        } else {
            self.time_ms
        }
    }
}

/// Build the processed profile for `p`, weighted as `mode` (idle waits only with `idle`).
pub fn build(p: &Profile, mode: Mode, idle: bool) -> FxProfile {
    let period_ns = p.summary.period_ns.max(1);
    let product = p.target.command.first().map(|c| c.rsplit('/').next().unwrap_or(c)).unwrap_or("ftprof");
    let mut fx = FxProfile::new(
        &format!("ftprof: {product}"),
        ReferenceTimestamp::from_millis_since_unix_epoch(0.0),
        SamplingInterval::from_nanos(period_ns),
    );
    let kinds = [
        (FrameKind::Python, "Python", CategoryColor::Blue),
        (FrameKind::Native, "Native", CategoryColor::Orange),
        (FrameKind::Kernel, "Kernel", CategoryColor::Red),
        (FrameKind::Marker, "ftprof marker", CategoryColor::Gray),
    ];
    let kind_cat: Vec<(FrameKind, CategoryHandle)> =
        kinds.iter().map(|(k, n, c)| (*k, fx.add_category(n, *c))).collect();
    let wait_cat: Vec<(Category, CategoryHandle)> = Category::ALL
        .iter()
        .filter(|c| !matches!(c, Category::Python | Category::Native))
        .map(|&c| (c, fx.add_category(&format!("wait: {}", c.name()), color(c))))
        .collect();
    let cat_of = |k: FrameKind| kind_cat.iter().find(|x| x.0 == k).map(|x| x.1).unwrap_or(CategoryHandle::OTHER);
    let wait_of = |c: Category| wait_cat.iter().find(|x| x.0 == c).map(|x| x.1).unwrap_or(CategoryHandle::OTHER);
    let process = fx.add_process(product, p.target.pid, Timestamp::from_nanos_since_reference(0));
    let per_us = p.summary.period_us();
    for t in &p.threads {
        let stacks: Vec<&analysis::Stack> =
            p.stacks.iter().filter(|s| s.thread == t.tid && crate::weight(s, mode, idle, per_us) > 0).collect();
        if stacks.is_empty() {
            continue;
        }
        let th = fx.add_thread(process, t.tid, Timestamp::from_nanos_since_reference(0), t.tid == p.target.pid);
        let name = if t.name.is_empty() { format!("thread {}", t.tid) } else { t.name.clone() };
        fx.set_thread_name(th, &name);
        fx.set_thread_show_markers_in_timeline(th, true);
        let mut cursor_ns: u64 = 0;
        for s in stacks {
            let mut parent = None;
            for &fi in &s.frames {
                let f = &p.frames[fi as usize];
                if f.kind == FrameKind::Thread {
                    continue;
                }
                let category = if f.kind == FrameKind::Wait { wait_of(s.category) } else { cat_of(f.kind) };
                let label = fx.intern_string(&f.label());
                let frame = fx.intern_frame(
                    th,
                    FrameInfo {
                        frame: FxFrame::Label(label),
                        category_pair: category.into(),
                        flags: FrameFlags::empty(),
                    },
                );
                parent = Some(fx.intern_stack(th, parent, frame));
            }
            let cpu_ns = if mode == Mode::Wait { 0 } else { s.samples * period_ns };
            let wait_ns = if mode == Mode::Cpu { 0 } else { s.wait_us * 1000 };
            let span = cpu_ns + wait_ns;
            if span == 0 {
                continue;
            }
            let start = cursor_ns;
            cursor_ns += span;
            // Weight in sample periods, so the call tree adds CPU and waiting time alike.
            let weight = ((span as f64 / period_ns as f64).round() as i32).max(1);
            fx.add_sample(
                th,
                Timestamp::from_nanos_since_reference(cursor_ns),
                parent,
                CpuDelta::from_nanos(cpu_ns),
                weight,
            );
            if wait_ns > 0 {
                let leaf = s.frames.last().map(|&f| &p.frames[f as usize]).filter(|f| f.kind == FrameKind::Wait);
                let lock = leaf
                    .map(|f| f.name.split_once(": ").map(|x| x.1).unwrap_or(&f.name).to_string())
                    .unwrap_or_else(|| s.category.name().to_string());
                let m = WaitMarker {
                    name: fx.intern_string(&format!("wait: {}", s.category.name())),
                    lock: fx.intern_string(&lock),
                    kind: fx.intern_string(s.category.name()),
                    category: wait_of(s.category),
                    waits: s.waits as f64,
                    time_ms: wait_ns as f64 / 1e6,
                };
                let timing = MarkerTiming::Interval(
                    Timestamp::from_nanos_since_reference(start + cpu_ns),
                    Timestamp::from_nanos_since_reference(cursor_ns),
                );
                let h = fx.add_marker(th, timing, m);
                fx.set_marker_stack(th, h, parent);
            }
        }
        fx.set_thread_end_time(th, Timestamp::from_nanos_since_reference(cursor_ns));
    }
    fx
}

/// Write the processed profile JSON.
pub fn write(p: &Profile, mode: Mode, idle: bool, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, &build(p, mode, idle))?;
    out.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_threads_categories_and_wait_markers_and_round_trips() {
        let p = analysis::fixture::profile();
        let mut bytes = Vec::new();
        write(&p, Mode::Wall, true, &mut bytes).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["meta"]["version"].as_u64().is_some_and(|x| x > 0), "meta.version");
        let cats: Vec<&str> =
            v["meta"]["categories"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert!(cats.contains(&"Python") && cats.contains(&"wait: lock"), "{cats:?}");
        let threads = v["threads"].as_array().unwrap();
        let names: Vec<&str> = threads.iter().map(|t| t["name"].as_str().unwrap()).collect();
        for t in p.threads.iter().filter(|t| t.samples > 0 || t.wait_us > 0) {
            let want = if t.name.is_empty() { format!("thread {}", t.tid) } else { t.name.clone() };
            assert!(names.contains(&want.as_str()), "{want} in {names:?}");
        }
        let markers: u64 = threads.iter().map(|t| t["markers"]["length"].as_u64().unwrap()).sum();
        assert_eq!(markers as usize, p.stacks.iter().filter(|s| s.wait_us > 0).count());
        let schema = v["meta"]["markerSchema"].as_array().unwrap();
        assert!(schema.iter().any(|s| s["name"] == "FtprofWait"));
        // Round trip: the JSON read back and written again is the same document.
        let again = serde_json::to_vec(&v).unwrap();
        let v2: serde_json::Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(v, v2);
    }
}
