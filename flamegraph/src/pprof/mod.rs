//! pprof's `profile.proto`, gzip-compressed: what `go tool pprof`, Pyroscope, Parca and Grafana
//! read. Sample types `cpu`/nanoseconds (CPU samples × period), `wait`/nanoseconds (off-CPU
//! time) and `samples`/count; each sample carries the labels `thread` (name and TID),
//! `category` (why the thread was there) and, for waits, `lock` (the lock's identity).
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

/// The profile message for `p`. Off-CPU time is left out in `Mode::Cpu`, CPU time in
/// `Mode::Wait`; idle waits are kept only with `idle`. The default sample type is `wait` in
/// `Mode::Wait`, `cpu` otherwise.
pub fn message(p: &Profile, mode: Mode, idle: bool) -> proto::Profile {
    let mut st = Strings::new();
    let vt = |st: &mut Strings, t: &str, u: &str| proto::ValueType { r#type: st.id(t), unit: st.id(u) };
    let sample_type =
        vec![vt(&mut st, "cpu", "nanoseconds"), vt(&mut st, "wait", "nanoseconds"), vt(&mut st, "samples", "count")];
    let period_ns = p.summary.period_ns as i64;
    let mut functions: Vec<proto::Function> = Vec::new();
    let mut function_ids: HashMap<(String, Option<String>), u64> = HashMap::new();
    let mut locations: Vec<proto::Location> = Vec::new();
    let mut location_ids: HashMap<u32, u64> = HashMap::new();
    let names: HashMap<u32, String> = p
        .threads
        .iter()
        .map(|t| {
            (t.tid, if t.name.is_empty() { format!("thread ({})", t.tid) } else { format!("{} ({})", t.name, t.tid) })
        })
        .collect();
    let (k_thread, k_category, k_lock) = (st.id("thread"), st.id("category"), st.id("lock"));
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
        let mut location_id = Vec::with_capacity(s.frames.len());
        for &fi in s.frames.iter().rev() {
            let f = &p.frames[fi as usize];
            if f.kind == FrameKind::Thread {
                continue;
            }
            let id = match location_ids.get(&fi) {
                Some(&id) => id,
                None => {
                    let name = function_name(f);
                    let file = f.file.clone().or_else(|| f.module.clone());
                    let next = functions.len() as u64 + 1;
                    let function_id = *function_ids.entry((name.clone(), file.clone())).or_insert_with(|| {
                        functions.push(proto::Function {
                            id: next,
                            name: st.id(&name),
                            system_name: st.id(&f.name),
                            filename: file.as_deref().map(|x| st.id(x)).unwrap_or(0),
                            start_line: f.start_line.unwrap_or(0) as i64,
                        });
                        next
                    });
                    let id = locations.len() as u64 + 1;
                    locations.push(proto::Location {
                        id,
                        mapping_id: 0,
                        address: 0,
                        line: vec![proto::Line { function_id, line: f.line.unwrap_or(0) as i64, column: 0 }],
                        is_folded: false,
                    });
                    location_ids.insert(fi, id);
                    id
                }
            };
            location_id.push(id);
        }
        let mut label = vec![
            proto::Label {
                key: k_thread,
                str: st.id(names.get(&s.thread).map(String::as_str).unwrap_or("?")),
                num: 0,
                num_unit: 0,
            },
            proto::Label { key: k_category, str: st.id(s.category.name()), num: 0, num_unit: 0 },
        ];
        if let Some(leaf) = s.frames.last().map(|&f| &p.frames[f as usize]).filter(|f| f.kind == FrameKind::Wait) {
            if let Some((_, lock)) = leaf.name.split_once(": ") {
                label.push(proto::Label { key: k_lock, str: st.id(lock), num: 0, num_unit: 0 });
            }
        }
        samples.push(proto::Sample { location_id, value: vec![cpu, wait, count], label });
    }
    let comment = vec![st.id(&format!("ftprof {}: {}", env!("CARGO_PKG_VERSION"), p.target.command.join(" ")))];
    let default_sample_type = st.id(if mode == Mode::Wait { "wait" } else { "cpu" });
    let period_type = Some(vt(&mut st, "cpu", "nanoseconds"));
    proto::Profile {
        sample_type,
        sample: samples,
        mapping: Vec::new(),
        location: locations,
        function: functions,
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
        assert_eq!(types, [("cpu", "nanoseconds"), ("wait", "nanoseconds"), ("samples", "count")]);
        let cpu: i64 = m.sample.iter().map(|x| x.value[0]).sum();
        let wait: i64 = m.sample.iter().map(|x| x.value[1]).sum();
        let count: i64 = m.sample.iter().map(|x| x.value[2]).sum();
        assert_eq!(count as u64, p.summary.samples);
        assert_eq!(cpu, p.summary.samples as i64 * p.summary.period_ns as i64);
        assert_eq!(wait as u64, p.stacks.iter().map(|s| s.wait_us).sum::<u64>() * 1000);
        let ids: std::collections::HashSet<u64> = m.location.iter().map(|l| l.id).collect();
        assert!(m.sample.iter().flat_map(|x| &x.location_id).all(|i| ids.contains(i)));
        assert!(m.sample.iter().any(|x| x.label.iter().any(|l| s(l.key) == "lock")));
        assert!(m.sample.iter().all(|x| x.label.iter().any(|l| s(l.key) == "thread")));
        assert!(m.function.iter().any(|f| f.filename != 0 && f.start_line > 0));
    }
}
