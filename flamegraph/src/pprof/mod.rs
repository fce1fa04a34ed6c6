//! pprof's `profile.proto`, gzip-compressed: what `go tool pprof`, Pyroscope, Parca and Grafana
//! read. Sample types `cpu`/nanoseconds (CPU samples × period), `wait`/nanoseconds (off-CPU
//! time), `samples`/count and `blame`/nanoseconds (time others waited on a lock, by its
//! holder's stack: the lock frame as the root); each thread sample carries the labels `thread`
//! (name and TID), `category` (why the thread was there) and, for waits, `lock` (the lock's
//! identity); each blame sample `lock`, `category` (the lock's kind) and `holder` (the holding
//! thread, when found).
//! Functions have their file and start line, locations their line.

pub mod proto;

use std::collections::HashMap;
use std::io::Write;

use analysis::{Frame, FrameKind, Profile};
use prost::Message;

use crate::Mode;

struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        Strings { table: vec![String::new()], index: HashMap::from([(String::new(), 0)]) }
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// The function name pprof shows for a frame: the qualified name for Python frames (file and
/// line are separate fields), the flamegraph label otherwise.
pub fn function_name(f: &Frame) -> String {
    match f.kind {
        FrameKind::Python => f.name.clone(),
        _ => f.label(),
    }
}

/// Functions and locations, one location per distinct frame (or lock root).
struct Locations {
    functions: Vec<proto::Function>,
    function_ids: HashMap<(String, Option<String>), u64>,
    locations: Vec<proto::Location>,
    ids: HashMap<Key, u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// An index into `Profile::frames`.
    Frame(u32),
    /// The root of a lock's blame stacks (an index into `Profile::locks`).
    Lock(usize),
}

impl Locations {
    /// The location of a frame: `name` (pprof's function name), `system_name`, file, first
    /// line, line.
    fn id(&mut self, st: &mut Strings, key: Key, make: impl FnOnce() -> FrameInfo) -> u64 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let f = make();
        let next = self.functions.len() as u64 + 1;
        let functions = &mut self.functions;
        let function_id = *self.function_ids.entry((f.name.clone(), f.file.clone())).or_insert_with(|| {
            functions.push(proto::Function {
                id: next,
                name: st.id(&f.name),
                system_name: st.id(&f.system_name),
                filename: f.file.as_deref().map(|x| st.id(x)).unwrap_or(0),
                start_line: f.start_line,
            });
            next
        });
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id: 0,
            address: 0,
            line: vec![proto::Line { function_id, line: f.line, column: 0 }],
            is_folded: false,
        });
        self.ids.insert(key, id);
        id
    }

    /// The locations of a stack of `p.frames` indices (root first), leaf first as pprof wants
    /// them, thread frames left out.
    fn stack(&mut self, st: &mut Strings, p: &Profile, frames: &[u32]) -> Vec<u64> {
        frames
            .iter()
            .rev()
            .filter(|&&fi| p.frames[fi as usize].kind != FrameKind::Thread)
            .map(|&fi| self.id(st, Key::Frame(fi), || frame_info(&p.frames[fi as usize])))
            .collect()
    }
}

struct FrameInfo {
    name: String,
    system_name: String,
    file: Option<String>,
    start_line: i64,
    line: i64,
}

fn frame_info(f: &Frame) -> FrameInfo {
    FrameInfo {
        name: function_name(f),
        system_name: f.name.clone(),
        file: f.file.clone().or_else(|| f.module.clone()),
        start_line: f.start_line.unwrap_or(0) as i64,
        line: f.line.unwrap_or(0) as i64,
    }
}

/// The profile message for `p`. Sample types `cpu`, `wait` (ns), `samples` (count) and `blame`
/// (ns). Off-CPU time is left out in `Mode::Cpu`, CPU time in `Mode::Wait`; idle waits are kept
/// only with `idle`. The blame stacks (see `analysis::blame`: the lock as the root, then the
/// holder's Python frames; labels `lock`, `holder`, `category`) are written in `Mode::Wall` and
/// `Mode::Blame`, where CPU and waiting time are kept as in `Mode::Wall`. The default sample type
/// is `wait` in `Mode::Wait`, `blame` in `Mode::Blame`, `cpu` otherwise.
pub fn message(p: &Profile, mode: Mode, idle: bool) -> proto::Profile {
    let mut st = Strings::new();
    let vt = |st: &mut Strings, t: &str, u: &str| proto::ValueType { r#type: st.id(t), unit: st.id(u) };
    let sample_type = vec![
        vt(&mut st, "cpu", "nanoseconds"),
        vt(&mut st, "wait", "nanoseconds"),
        vt(&mut st, "samples", "count"),
        vt(&mut st, "blame", "nanoseconds"),
    ];
    let period_ns = p.summary.period_ns as i64;
    let mut locs =
        Locations { functions: Vec::new(), function_ids: HashMap::new(), locations: Vec::new(), ids: HashMap::new() };
    let names: HashMap<u32, String> = p.threads.iter().map(|t| (t.tid, crate::thread_label(t))).collect();
    let (k_thread, k_category, k_lock, k_holder) = (st.id("thread"), st.id("category"), st.id("lock"), st.id("holder"));
    let label = |key: i64, str: i64| proto::Label { key, str, num: 0, num_unit: 0 };
    let mut samples = Vec::new();
    for s in &p.stacks {
        if !idle && s.category.is_idle() {
            continue;
        }
        let cpu = if mode == Mode::Wait { 0 } else { s.samples as i64 * period_ns };
        let wait = if mode == Mode::Cpu { 0 } else { s.wait_us as i64 * 1000 };
        let count = if mode == Mode::Wait { 0 } else { s.samples as i64 };
        if cpu == 0 && wait == 0 {
            continue;
        }
        let location_id = locs.stack(&mut st, p, &s.frames);
        let mut labels = vec![
            label(k_thread, st.id(names.get(&s.thread).map(String::as_str).unwrap_or("?"))),
            label(k_category, st.id(s.category.name())),
        ];
        if let Some(leaf) = s.frames.last().map(|&f| &p.frames[f as usize]).filter(|f| f.kind == FrameKind::Wait) {
            if let Some((_, lock)) = leaf.name.split_once(": ") {
                labels.push(label(k_lock, st.id(lock)));
            }
        }
        samples.push(proto::Sample { location_id, value: vec![cpu, wait, count, 0], label: labels });
    }
    if matches!(mode, Mode::Wall | Mode::Blame) {
        for b in &p.blame {
            // Leaf first: the holder's innermost frame (or a marker), ..., the lock.
            let mut location_id = locs.stack(&mut st, p, &b.frames);
            location_id.push(locs.id(&mut st, Key::Lock(b.lock), || {
                let name = analysis::blame::lock_root(p, b.lock);
                FrameInfo { system_name: name.clone(), name, file: None, start_line: 0, line: 0 }
            }));
            let l = &p.locks[b.lock];
            let mut labels = vec![label(k_category, st.id(l.kind.name())), label(k_lock, st.id(&l.description))];
            if let Some(h) = b.holder {
                let name = names.get(&h).cloned().unwrap_or_else(|| format!("thread ({h})"));
                labels.push(label(k_holder, st.id(&name)));
            }
            samples.push(proto::Sample { location_id, value: vec![0, 0, 0, b.time_us as i64 * 1000], label: labels });
        }
    }
    let comment = vec![st.id(&format!("ftprof {}: {}", env!("CARGO_PKG_VERSION"), p.target.command.join(" ")))];
    let default_sample_type = st.id(match mode {
        Mode::Wait => "wait",
        Mode::Blame => "blame",
        _ => "cpu",
    });
    let period_type = Some(vt(&mut st, "cpu", "nanoseconds"));
    proto::Profile {
        sample_type,
        sample: samples,
        mapping: Vec::new(),
        location: locs.locations,
        function: locs.functions,
        string_table: st.table,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: 0,
        duration_nanos: (p.summary.duration_s * 1e9) as i64,
        period_type,
        period: period_ns,
        comment,
        default_sample_type,
    }
}

/// Write the gzip-compressed profile.
pub fn write(p: &Profile, mode: Mode, idle: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let msg = message(p, mode, idle);
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&msg.encode_to_vec())?;
    gz.finish()?;
    Ok(())
}

/// Read a gzip-compressed (or plain) profile.proto.
pub fn read(bytes: &[u8]) -> anyhow::Result<proto::Profile> {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut v)?;
        v
    } else {
        bytes.to_vec()
    };
    Ok(proto::Profile::decode(raw.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_totals_and_labels() {
        let p = analysis::fixture::profile();
        let mut bytes = Vec::new();
        write(&p, Mode::Wall, true, &mut bytes).unwrap();
        let m = read(&bytes).unwrap();
        let s = |i: i64| m.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        let types: Vec<(&str, &str)> = m.sample_type.iter().map(|v| (s(v.r#type), s(v.unit))).collect();
        assert_eq!(
            types,
            [("cpu", "nanoseconds"), ("wait", "nanoseconds"), ("samples", "count"), ("blame", "nanoseconds")]
        );
        let cpu: i64 = m.sample.iter().map(|x| x.value[0]).sum();
        let wait: i64 = m.sample.iter().map(|x| x.value[1]).sum();
        let count: i64 = m.sample.iter().map(|x| x.value[2]).sum();
        assert_eq!(count as u64, p.summary.samples);
        assert_eq!(cpu, p.summary.samples as i64 * p.summary.period_ns as i64);
        assert_eq!(wait as u64, p.stacks.iter().map(|s| s.wait_us).sum::<u64>() * 1000);
        let ids: std::collections::HashSet<u64> = m.location.iter().map(|l| l.id).collect();
        assert!(m.sample.iter().flat_map(|x| &x.location_id).all(|i| ids.contains(i)));
        assert!(m.sample.iter().any(|x| x.label.iter().any(|l| s(l.key) == "lock")));
        let threads = m.sample.iter().filter(|x| x.value[3] == 0);
        assert!(threads.clone().all(|x| x.label.iter().any(|l| s(l.key) == "thread")));
        let blame: i64 = m.sample.iter().map(|x| x.value[3]).sum();
        assert_eq!(blame as u64, p.blame.iter().map(|b| b.time_us).sum::<u64>() * 1000);
        assert!(m.function.iter().any(|f| f.filename != 0 && f.start_line > 0));
    }

    /// `--mode blame`: blame is the default sample type; each blame sample is the holder's stack
    /// (leaf first) ending at the lock's frame, labelled with the lock and the holder.
    #[test]
    fn blame_samples_end_at_the_lock() {
        let p = analysis::fixture::profile();
        assert!(!p.blame.is_empty());
        let m = message(&p, Mode::Blame, false);
        let s = |i: i64| m.string_table[i as usize].as_str();
        assert_eq!(s(m.default_sample_type), "blame");
        let function = |loc: u64| {
            let l = m.location.iter().find(|l| l.id == loc).unwrap();
            s(m.function.iter().find(|f| f.id == l.line[0].function_id).unwrap().name)
        };
        let blame: Vec<&proto::Sample> = m.sample.iter().filter(|x| x.value[3] > 0).collect();
        assert_eq!(blame.len(), p.blame.len());
        for (x, b) in blame.iter().zip(&p.blame) {
            assert_eq!(x.value, [0, 0, 0, b.time_us as i64 * 1000]);
            let root = analysis::blame::lock_root(&p, b.lock);
            assert_eq!(function(*x.location_id.last().unwrap()), root);
            let label = |k: &str| x.label.iter().find(|l| s(l.key) == k).map(|l| s(l.str));
            assert_eq!(label("lock"), Some(p.locks[b.lock].description.as_str()));
            assert_eq!(label("holder").is_some(), b.holder.is_some());
            let leaf = &p.frames[*b.frames.last().unwrap() as usize];
            let want = if leaf.kind == FrameKind::Python { leaf.name.clone() } else { leaf.label() };
            assert_eq!(function(x.location_id[0]), want, "the holder's innermost frame is the leaf");
        }
        // CPU and waiting time are kept as in wall mode; none of it in CPU mode.
        let wall = message(&p, Mode::Wall, false);
        let sum = |m: &proto::Profile, i: usize| m.sample.iter().map(|x| x.value[i]).sum::<i64>();
        assert_eq!((sum(&m, 0), sum(&m, 1), sum(&m, 3)), (sum(&wall, 0), sum(&wall, 1), sum(&wall, 3)));
        assert_eq!(sum(&message(&p, Mode::Cpu, false), 3), 0);
    }
}
