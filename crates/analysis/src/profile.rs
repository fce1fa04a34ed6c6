//! The profile data model and its builder.

use std::collections::HashMap;

use serde::Serialize;
use symbolizer::native::NativeFrame;
use symbolizer::python::PyStack;

use crate::merge::{merge_stacks, MergeStatus};

/// Version of the JSON profile layout (bump on incompatible changes).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    /// The root frame of a thread: `name (TID)`.
    Thread,
    Python,
    Native,
    Kernel,
    /// Something ftprof inserted: `[python/native mismatch]`, `[truncated]`.
    Marker,
}

/// One frame of a stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Frame {
    pub kind: FrameKind,
    /// Python: qualname. Native: function name (demangled) or `[unknown]`.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Native: path of the ELF module.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Native: offset in the module (only kept for unresolved frames).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    pub inlined: bool,
}

impl Frame {
    pub fn marker(text: &str) -> Frame {
        Frame {
            kind: FrameKind::Marker,
            name: text.into(),
            file: None,
            line: None,
            module: None,
            offset: None,
            inlined: false,
        }
    }

    /// The label used in flamegraphs and folded stacks.
    pub fn label(&self) -> String {
        let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
        match self.kind {
            FrameKind::Python => match self.line {
                Some(l) => format!(
                    "{} ({}:{l})",
                    self.name,
                    base(self.file.as_deref().unwrap_or("?"))
                ),
                None => format!(
                    "{} ({})",
                    self.name,
                    base(self.file.as_deref().unwrap_or("?"))
                ),
            },
            FrameKind::Native if self.name == "[unknown]" => match (&self.module, self.offset) {
                (Some(m), Some(o)) => format!("[unknown] ({}+{o:#x})", base(m)),
                _ => "[unknown]".into(),
            },
            FrameKind::Native if self.inlined => format!("{} [inlined]", self.name),
            FrameKind::Kernel => format!("{}_[k]", self.name),
            _ => self.name.clone(),
        }
    }

    pub fn from_native(f: &NativeFrame) -> Frame {
        Frame {
            kind: FrameKind::Native,
            name: f.function.clone().unwrap_or_else(|| "[unknown]".into()),
            file: f.file.clone(),
            line: f.line,
            module: Some(f.module.clone()),
            offset: f.function.is_none().then_some(f.module_offset),
            inlined: f.inlined,
        }
    }
}

/// One observed sample, symbolized.
pub struct SampleInput<'a> {
    pub tid: u32,
    /// Per unwound address (leaf first), its inline chain innermost first.
    pub native: &'a [Vec<NativeFrame>],
    /// The native unwinder reached the outermost frame.
    pub native_complete: bool,
    /// Python stack read at sample time (None: not a Python thread or unreadable).
    pub python: Option<&'a PyStack>,
    /// Kernel functions, leaf first (the sample was taken in a system call or fault).
    pub kernel: &'a [String],
    /// Weight of the sample (1 for a CPU sample).
    pub weight: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Stack {
    pub thread: u32,
    /// Indexes into `Profile::frames`, root → leaf (the thread frame first).
    pub frames: Vec<u32>,
    pub samples: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ThreadInfo {
    pub tid: u32,
    pub pid: u32,
    pub name: String,
    pub samples: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PythonInfo {
    pub version: String,
    pub free_threaded: bool,
    pub gil_enabled: Option<bool>,
    pub runtime_module: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetInfo {
    pub command: Vec<String>,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// Recording was stopped before the target finished (Ctrl-C).
    pub interrupted: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub duration_s: f64,
    pub rate_hz: u64,
    pub samples: u64,
    pub lost_records: u64,
    pub threads: usize,
    /// Samples whose stack has at least one Python frame.
    pub with_python: u64,
    /// Samples the native unwinder could not follow to the outermost frame.
    pub unwind_incomplete: u64,
    /// Samples whose Python and native stacks disagreed (marked `[python/native mismatch]`).
    pub mismatched: u64,
    /// Samples that have a frame in libpython/the interpreter or libc that did not resolve.
    pub unresolved_core: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_cpu_s: Option<f64>,
}

/// The whole result of a recording (serialized as the JSON profile).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Profile {
    pub schema_version: u32,
    pub target: TargetInfo,
    pub summary: Summary,
    pub threads: Vec<ThreadInfo>,
    pub frames: Vec<Frame>,
    pub stacks: Vec<Stack>,
}

impl Profile {
    /// `(thread label, frames root→leaf, samples)` for each stack.
    pub fn iter_stacks(&self) -> impl Iterator<Item = (&Stack, Vec<&Frame>)> {
        self.stacks.iter().map(|s| {
            (
                s,
                s.frames.iter().map(|&i| &self.frames[i as usize]).collect(),
            )
        })
    }
}

/// Accumulates samples into a [`Profile`].
#[derive(Default)]
pub struct ProfileBuilder {
    frames: Vec<Frame>,
    frame_ids: HashMap<Frame, u32>,
    stacks: HashMap<(u32, Vec<u32>), u64>,
    threads: HashMap<u32, ThreadInfo>,
    pub summary: Summary,
    /// Predicate naming modules whose unresolved frames count as `unresolved_core`.
    core_modules: Vec<String>,
}

impl ProfileBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Modules (paths) whose unresolved frames are counted in `Summary::unresolved_core`.
    pub fn set_core_modules(&mut self, modules: Vec<String>) {
        self.core_modules = modules;
    }

    pub fn set_thread(&mut self, tid: u32, pid: u32, name: &str) {
        let t = self.threads.entry(tid).or_insert_with(|| ThreadInfo {
            tid,
            pid,
            ..Default::default()
        });
        t.pid = pid;
        if !name.is_empty() {
            t.name = name.to_string();
        }
    }

    fn intern(&mut self, f: Frame) -> u32 {
        if let Some(&i) = self.frame_ids.get(&f) {
            return i;
        }
        let i = self.frames.len() as u32;
        self.frames.push(f.clone());
        self.frame_ids.insert(f, i);
        i
    }

    fn is_core(&self, module: &str) -> bool {
        let name = module.rsplit('/').next().unwrap_or(module);
        name.starts_with("libc.so")
            || name.starts_with("libc-")
            || self.core_modules.iter().any(|m| m == module)
    }

    /// Add one sample; returns how its stacks merged.
    pub fn add(&mut self, s: &SampleInput) -> MergeStatus {
        let (mut frames, status) = merge_stacks(s.native, s.native_complete, s.python);
        frames.extend(s.kernel.iter().rev().map(|k| Frame {
            kind: FrameKind::Kernel,
            name: k.clone(),
            file: None,
            line: None,
            module: None,
            offset: None,
            inlined: false,
        }));
        let thread = self.threads.entry(s.tid).or_insert_with(|| ThreadInfo {
            tid: s.tid,
            ..Default::default()
        });
        thread.samples += s.weight;
        let sum = &mut self.summary;
        sum.samples += s.weight;
        if status.has_python {
            sum.with_python += s.weight;
        }
        if !s.native_complete {
            sum.unwind_incomplete += s.weight;
        }
        if status.mismatch {
            sum.mismatched += s.weight;
        }
        if frames
            .iter()
            .any(|f| f.name == "[unknown]" && f.module.as_deref().is_some_and(|m| self.is_core(m)))
        {
            self.summary.unresolved_core += s.weight;
        }
        let ids: Vec<u32> = frames.into_iter().map(|f| self.intern(f)).collect();
        *self.stacks.entry((s.tid, ids)).or_default() += s.weight;
        status
    }

    pub fn finish(mut self, target: TargetInfo) -> Profile {
        let mut threads: Vec<ThreadInfo> =
            std::mem::take(&mut self.threads).into_values().collect();
        threads.sort_by_key(|t| t.tid);
        let mut thread_frame = HashMap::new();
        for t in &threads {
            let name = if t.name.is_empty() {
                format!("thread ({})", t.tid)
            } else {
                format!("{} ({})", t.name, t.tid)
            };
            let id = self.intern(Frame {
                kind: FrameKind::Thread,
                name,
                file: None,
                line: None,
                module: None,
                offset: None,
                inlined: false,
            });
            thread_frame.insert(t.tid, id);
        }
        let mut stacks: Vec<Stack> = std::mem::take(&mut self.stacks)
            .into_iter()
            .map(|((thread, ids), samples)| {
                let mut frames = Vec::with_capacity(ids.len() + 1);
                frames.push(thread_frame[&thread]);
                frames.extend(ids);
                Stack {
                    thread,
                    frames,
                    samples,
                }
            })
            .collect();
        stacks.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.frames.cmp(&b.frames)));
        let mut summary = self.summary;
        summary.threads = threads.iter().filter(|t| t.samples > 0).count();
        Profile {
            schema_version: SCHEMA_VERSION,
            target,
            summary,
            threads,
            frames: self.frames,
            stacks,
        }
    }
}
