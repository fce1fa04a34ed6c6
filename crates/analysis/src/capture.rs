//! Captures: what the engine hands to the decisions, kept in a file so that `ftprof report`
//! re-analyses and re-renders a recording later, with this or a later ftprof.
//!
//! A [`Capture`] is everything [`ProfileBuilder`] is given for one recording — the symbolized
//! samples (native inline chains and kernel names interned once, the Python stack read at the
//! instant, the parked-on lock, the operand object), the threads and processes, the kernel's
//! per-wait counts, the holder observations for blame, how the run went — so that
//! [`Capture::profile`] is the one path from observations to a [`Profile`]: `record` builds its
//! profile through it too, and a capture re-renders byte-identically. Symbolization is not
//! repeated (the frames are stored resolved); classification, blame, findings, gains and every
//! renderer are.
//!
//! File format: gzip of one JSON document `{"format": "ftprof-capture", "version": N,
//! "ftprof": "x.y.z", "capture": {…}}`. [`decode`] refuses, in one line, a file that is not a
//! capture, one cut short (gzip's length and CRC trailer), one whose version this ftprof does not
//! read, and one whose indices point outside its tables.

use std::collections::HashMap;
use std::io::{Read, Write};

use frames::native::NativeFrame;
use frames::python::{ObjectRef, ParkedInfo, PyStack};
use serde::{Deserialize, Serialize};

use crate::blame::BlameData;
use crate::profile::{
    KernelWaits, LostRange, Observation, ProcessInfo, Profile, ProfileBuilder, PythonStacks, SampleInput,
    SchedAccounting, Summary, TargetInfo,
};

/// The capture format this ftprof writes.
pub const CAPTURE_VERSION: u32 = 1;
/// The oldest capture format this ftprof reads.
pub const MIN_CAPTURE_VERSION: u32 = 1;
const FORMAT: &str = "ftprof-capture";
/// Decompressed size above which a capture is refused (a bomb, or not ours).
const MAX_DECOMPRESSED: u64 = 8 << 30;

/// One distinct observation, symbolized (the owned form of [`SampleInput`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CapturedSample {
    pub tid: u32,
    /// Indices into [`Capture::chains`], leaf first.
    pub native: Vec<u32>,
    pub native_complete: bool,
    pub python: Option<PyStack>,
    /// Indices into [`Capture::names`], leaf first.
    pub kernel: Vec<u32>,
    /// Index into [`Capture::chains`]: the inline chain of the instruction before the sampled one.
    pub leaf_prev: Option<u32>,
    pub parked: Option<ParkedInfo>,
    pub observation: Observation,
    pub alone: bool,
    pub marker: Option<String>,
    pub syscall: Option<u64>,
    pub operand: Option<ObjectRef>,
    pub concurrent: bool,
}

/// How the run went: the summary's facts that come from the recording, not from the samples.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunFacts {
    pub duration_s: f64,
    pub rate_hz: u64,
    pub lost_records: u64,
    pub lost: Vec<LostRange>,
    pub target_cpu_s: Option<f64>,
    pub switch_outs: u64,
    pub observed_waits: u64,
    pub unobserved_us: u64,
    pub sched_corrected_threads: u64,
    pub wait_mode: String,
    pub wait_rate_hz: Option<f64>,
    pub processes: Vec<ProcessInfo>,
    pub cpus: Option<usize>,
    pub python_stacks: Option<PythonStacks>,
    pub sched_accounting: Option<SchedAccounting>,
}

impl RunFacts {
    fn apply(&self, s: &mut Summary) {
        s.duration_s = self.duration_s;
        s.rate_hz = self.rate_hz;
        s.lost_records = self.lost_records;
        s.lost = self.lost.clone();
        s.target_cpu_s = self.target_cpu_s;
        s.switch_outs = self.switch_outs;
        s.observed_waits = self.observed_waits;
        s.unobserved_us = self.unobserved_us;
        s.sched_corrected_threads = self.sched_corrected_threads;
        s.wait_mode = self.wait_mode.clone();
        s.wait_rate_hz = self.wait_rate_hz;
        s.processes = self.processes.clone();
        s.cpus = self.cpus;
        s.python_stacks = self.python_stacks.clone();
        s.sched_accounting = self.sched_accounting.clone();
    }
}

/// Everything the decisions are given for one recording (see the module's comment).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Capture {
    pub period_ns: u64,
    /// The CPython runtime modules, the launched process's first.
    pub core_modules: Vec<String>,
    pub opnames: Vec<String>,
    /// The kernel's blocked waits per (thread, address), when BPF counted them.
    pub kernel_waits: Option<Vec<(u32, u64, KernelWaits)>>,
    /// Process roots: (pid, label).
    pub processes: Vec<(u32, String)>,
    /// (tid, pid, name).
    pub threads: Vec<(u32, u32, String)>,
    /// Interned native inline chains (innermost first).
    pub chains: Vec<Vec<NativeFrame>>,
    /// Interned kernel function names.
    pub names: Vec<String>,
    pub samples: Vec<CapturedSample>,
    pub run: RunFacts,
    pub target: TargetInfo,
    /// Holder observations (sampled waits only): blame is attached from them.
    pub blame: Option<BlameData>,
}

/// Interns chains and names while a [`Capture`] is built.
#[derive(Default)]
pub struct Interner {
    chains: HashMap<(u32, u64, bool), u32>,
    names: HashMap<String, u32>,
}

impl Capture {
    /// The index of the inline chain of `addr` in process `pid` (`is_return`: a return
    /// address), symbolized by `symbolize` the first time.
    pub fn chain(
        &mut self,
        interner: &mut Interner,
        pid: u32,
        addr: u64,
        is_return: bool,
        symbolize: impl FnOnce() -> Vec<NativeFrame>,
    ) -> u32 {
        *interner.chains.entry((pid, addr, is_return)).or_insert_with(|| {
            self.chains.push(symbolize());
            (self.chains.len() - 1) as u32
        })
    }

    /// The index of the kernel function name `name`.
    pub fn name(&mut self, interner: &mut Interner, name: String) -> u32 {
        if let Some(&i) = interner.names.get(&name) {
            return i;
        }
        self.names.push(name.clone());
        let i = (self.names.len() - 1) as u32;
        interner.names.insert(name, i);
        i
    }

    /// Classify, aggregate, attach blame and derive findings: the profile of this recording.
    pub fn profile(&self) -> Profile {
        let mut b = ProfileBuilder::new(self.period_ns);
        b.set_core_modules(self.core_modules.clone());
        b.set_opnames(self.opnames.clone());
        if let Some(w) = &self.kernel_waits {
            b.set_kernel_waits(w.iter().map(|&(tid, addr, k)| ((tid, addr), k)).collect());
        }
        for (pid, label) in &self.processes {
            b.set_process(*pid, label);
        }
        for (tid, pid, name) in &self.threads {
            b.set_thread(*tid, *pid, name);
        }
        let empty = Vec::new();
        let exact = self.kernel_waits.as_ref().map(|k| crate::reconcile::exact_blocked_times(&self.samples, k));
        for (i, s) in self.samples.iter().enumerate() {
            let mut observation = s.observation;
            if let (Observation::OffCpu { wait_us, .. }, Some(Some(t))) =
                (&mut observation, exact.as_ref().map(|e| e.times[i]))
            {
                *wait_us = t;
            }
            let native: Vec<Vec<NativeFrame>> = s.native.iter().map(|&i| self.chains[i as usize].clone()).collect();
            let kernel: Vec<String> = s.kernel.iter().map(|&i| self.names[i as usize].clone()).collect();
            let leaf_prev = s.leaf_prev.map_or(&empty, |i| &self.chains[i as usize]);
            b.add(&SampleInput {
                tid: s.tid,
                native: &native,
                native_complete: s.native_complete,
                python: s.python.as_ref(),
                kernel: &kernel,
                leaf_prev,
                parked: s.parked.as_ref(),
                observation,
                alone: s.alone,
                marker: s.marker.as_deref(),
                syscall: s.syscall,
                operand: s.operand.as_ref(),
                concurrent: s.concurrent,
            });
        }
        let unobserved = exact.map(|e| e.unobserved).unwrap_or_default();
        for &(tid, us) in &unobserved {
            b.add(&SampleInput {
                tid,
                native: &[],
                native_complete: false,
                python: None,
                kernel: &[],
                leaf_prev: &empty,
                parked: None,
                observation: Observation::OffCpu { wait_us: us, waits: 0, max_us: 0, preempted: false },
                alone: false,
                marker: Some(crate::reconcile::UNOBSERVED_MARKER),
                syscall: None,
                operand: None,
                concurrent: false,
            });
        }
        self.run.apply(&mut b.summary);
        b.summary.unobserved_us += unobserved.iter().map(|u| u.1).sum::<u64>();
        let mut profile = b.finish(self.target.clone());
        if let Some(blame) = &self.blame {
            crate::blame::attach(&mut profile, blame);
        }
        profile.with_findings()
    }

    /// Every index points inside its table.
    fn check(&self) -> Result<(), String> {
        let (chains, names) = (self.chains.len(), self.names.len());
        for (n, s) in self.samples.iter().enumerate() {
            let bad_chain = s.native.iter().chain(s.leaf_prev.iter()).any(|&i| i as usize >= chains);
            if bad_chain || s.kernel.iter().any(|&i| i as usize >= names) {
                return Err(format!("sample {n} refers to a frame the capture does not hold"));
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'a str,
    version: u32,
    ftprof: &'a str,
    capture: &'a Capture,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    format: String,
    #[serde(default)]
    version: u32,
    #[serde(default)]
    ftprof: String,
}

#[derive(Deserialize)]
struct FileIn {
    capture: Capture,
}

/// The capture file's bytes. `ftprof_version`: the writer's version, kept for messages.
pub fn encode(capture: &Capture, ftprof_version: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let doc = FileOut { format: FORMAT, version: CAPTURE_VERSION, ftprof: ftprof_version, capture };
    serde_json::to_writer(&mut gz, &doc).expect("a capture serializes (plain data, string keys)");
    gz.write_all(b"\n").expect("writing to memory cannot fail");
    gz.finish().expect("writing to memory cannot fail")
}

/// Does `bytes` look like a capture file (gzip)? JSON profiles start with `{`.
pub fn is_capture(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Read a capture file's bytes; the error is one line saying why not.
pub fn decode(bytes: &[u8]) -> Result<Capture, String> {
    if !is_capture(bytes) {
        return Err("not an ftprof capture (no gzip header); write one with `ftprof record --capture FILE`".into());
    }
    let mut json = Vec::new();
    let read = flate2::read::GzDecoder::new(bytes).take(MAX_DECOMPRESSED).read_to_end(&mut json);
    if let Err(e) = read {
        return Err(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "the capture is truncated (the recording was cut short while writing it, or the copy is incomplete)"
                    .into()
            }
            _ => format!("the capture is corrupt ({e})"),
        });
    }
    let header: Header = serde_json::from_slice(&json).map_err(|e| format!("the capture is corrupt ({e})"))?;
    if header.format != FORMAT {
        return Err("not an ftprof capture (a gzip file without the capture header)".into());
    }
    if header.version > CAPTURE_VERSION {
        return Err(format!(
            "the capture was written by a newer ftprof ({}, capture format {}); this ftprof reads formats {MIN_CAPTURE_VERSION} to {CAPTURE_VERSION}: upgrade ftprof",
            header.ftprof, header.version
        ));
    }
    if header.version < MIN_CAPTURE_VERSION {
        return Err(format!(
            "the capture's format {} (ftprof {}) is older than this ftprof reads ({MIN_CAPTURE_VERSION} to {CAPTURE_VERSION}): record it again, or report it with that ftprof",
            header.version, header.ftprof
        ));
    }
    let file: FileIn = serde_json::from_slice(&json).map_err(|e| format!("the capture is corrupt ({e})"))?;
    file.capture.check()?;
    Ok(file.capture)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_capture() -> Capture {
        let mut c = Capture { period_ns: 5_025_125, ..Default::default() };
        let mut i = Interner::default();
        let frame = |f: &str| NativeFrame {
            function: Some(f.into()),
            file: None,
            line: None,
            module: "/usr/bin/python3.13t".into(),
            module_offset: 0x1000,
            inlined: false,
        };
        let a = c.chain(&mut i, 1, 0x10, false, || vec![frame("work")]);
        let b = c.chain(&mut i, 1, 0x20, true, || vec![frame("main")]);
        let again = c.chain(&mut i, 1, 0x10, false, || unreachable!("interned"));
        assert_eq!((a, b, again), (0, 1, 0));
        let k = c.name(&mut i, "futex_wait".into());
        c.threads.push((1, 1, "main".into()));
        c.samples.push(CapturedSample {
            tid: 1,
            native: vec![a, b],
            native_complete: true,
            python: None,
            kernel: vec![],
            leaf_prev: Some(a),
            parked: None,
            observation: Observation::Cpu { samples: 7 },
            alone: false,
            marker: None,
            syscall: None,
            operand: None,
            concurrent: false,
        });
        c.samples.push(CapturedSample {
            kernel: vec![k],
            observation: Observation::OffCpu { wait_us: 1500, waits: 3, max_us: 900, preempted: false },
            syscall: Some(202),
            ..c.samples[0].clone()
        });
        c.run.duration_s = 1.5;
        c.run.wait_mode = "sampled".into();
        c.target.command = vec!["python3".into()];
        c
    }

    #[test]
    fn a_capture_round_trips_to_the_same_profile() {
        let c = sample_capture();
        let bytes = encode(&c, "0.1.0");
        let back = decode(&bytes).expect("decodes");
        let json = |p: &Profile| serde_json::to_string(p).unwrap();
        assert_eq!(json(&back.profile()), json(&c.profile()));
        let p = back.profile();
        assert_eq!(p.summary.samples, 7);
        assert_eq!(p.summary.duration_s, 1.5);
    }

    #[test]
    fn an_empty_capture_gives_an_empty_profile() {
        let p = decode(&encode(&Capture::default(), "0.1.0")).unwrap().profile();
        assert_eq!((p.summary.samples, p.stacks.len()), (0, 0));
    }

    #[test]
    fn refusals_are_one_line_and_say_why() {
        let bytes = encode(&sample_capture(), "0.1.0");
        let cut = decode(&bytes[..bytes.len() - 9]).unwrap_err();
        assert!(cut.contains("truncated"), "{cut}");
        assert!(decode(b"{\"schema_version\": 3}").unwrap_err().contains("not an ftprof capture"));
        let newer = {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(br#"{"format":"ftprof-capture","version":99,"ftprof":"9.0.0","capture":{}}"#).unwrap();
            gz.finish().unwrap()
        };
        let e = decode(&newer).unwrap_err();
        assert!(e.contains("newer ftprof (9.0.0, capture format 99)") && e.contains("upgrade"), "{e}");
        let older = {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(br#"{"format":"ftprof-capture","version":0,"ftprof":"0.0.1","capture":{}}"#).unwrap();
            gz.finish().unwrap()
        };
        assert!(decode(&older).unwrap_err().contains("older than this ftprof reads"));
        let mut bad = sample_capture();
        bad.samples[0].native.push(99);
        let e = decode(&encode(&bad, "0.1.0")).unwrap_err();
        assert!(e.contains("does not hold"), "{e}");
        for e in [cut, e] {
            assert!(!e.contains('\n'));
        }
    }

    /// Cut and flipped bytes anywhere: an error, never a panic, and never a different capture
    /// taken silently for the original.
    #[test]
    fn fuzzed_captures_are_refused_or_equal() {
        let c = sample_capture();
        let bytes = encode(&c, "0.1.0");
        let json = |c: &Capture| serde_json::to_string(c).unwrap();
        let want = json(&c);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "a capture cut at {cut} of {} decoded", bytes.len());
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..4000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = bytes.clone();
            let at = (seed % b.len() as u64) as usize;
            b[at] ^= 1 << ((seed >> 32) % 8);
            if let Ok(d) = decode(&b) {
                // gzip's CRC lets nothing through but a flip in the header's unchecked fields.
                assert_eq!(json(&d), want, "a flip at byte {at} changed the capture silently");
            }
        }
    }
}
