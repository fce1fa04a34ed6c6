//! Reading a few kinds of Python objects out of the target: dicts, ints, instance attributes —
//! enough to find `threading._active` and each `Thread`'s name.

use super::mem::{field_u64, field_u8};
use super::PyProcess;

/// `PyDictKeysObject` header (3.13/3.14, GIL and free-threaded alike).
const DK_LOG2_INDEX_BYTES: u64 = 9;
const DK_KIND: u64 = 10;
const DK_NENTRIES: u64 = 24;
const DK_INDICES: u64 = 32;
const DICT_KEYS_GENERAL: u8 = 0;
/// Offsets in `PyHeapTypeObject` after the `PyTypeObject`: the method suites (as_async 4,
/// as_number 36, as_mapping 3, as_sequence 10, as_buffer 2 pointers), ht_name, ht_slots,
/// ht_qualname, then ht_cached_keys.
const HT_CACHED_KEYS_AFTER_TYPE: u64 = (4 + 36 + 3 + 10 + 2 + 3) * 8;
const MAX_ENTRIES: u64 = 1 << 16;

impl PyProcess {
    /// `(key, value)` pairs of a dict (combined or split table).
    pub(crate) fn dict_items(&self, dict: u64) -> Vec<(u64, u64)> {
        let o = &self.offsets;
        let (Ok(keys), Ok(values)) =
            (self.mem.u64(dict.wrapping_add(o.dict_ma_keys)), self.mem.u64(dict.wrapping_add(o.dict_ma_values)))
        else {
            return Vec::new();
        };
        let Ok(hdr) = self.mem.read_vec(keys, DK_INDICES as usize) else { return Vec::new() };
        let n = field_u64(&hdr, DK_NENTRIES).min(MAX_ENTRIES);
        let general = field_u8(&hdr, DK_KIND) == DICT_KEYS_GENERAL;
        let entries = keys.wrapping_add(DK_INDICES).wrapping_add(1u64 << field_u8(&hdr, DK_LOG2_INDEX_BYTES).min(40));
        let width = if general { 24 } else { 16 };
        let Ok(raw) = self.mem.read_vec(entries, (n * width) as usize) else { return Vec::new() };
        let split_values =
            if values != 0 { self.mem.read_vec(values.wrapping_add(8), (n * 8) as usize).ok() } else { None };
        raw.chunks_exact(width as usize)
            .enumerate()
            .filter_map(|(i, e)| {
                let (k, v) =
                    if general { (field_u64(e, 8), field_u64(e, 16)) } else { (field_u64(e, 0), field_u64(e, 8)) };
                let v = match &split_values {
                    Some(vals) => field_u64(vals, i as u64 * 8),
                    None => v,
                };
                (k != 0 && v != 0).then_some((k, v))
            })
            .collect()
    }

    /// Value of the `str` key `name` in a dict.
    pub(crate) fn dict_get_str(&self, dict: u64, name: &str) -> Option<u64> {
        let o = &self.offsets;
        self.dict_items(dict).into_iter().find_map(|(k, v)| {
            // Check the length before reading the characters.
            let len = self.mem.u64(k.wrapping_add(o.unicode_length)).ok()?;
            (len == name.len() as u64 && self.unicode(k).ok()? == name).then_some(v)
        })
    }

    /// A non-negative `int` that fits in 64 bits.
    pub(crate) fn long_value(&self, obj: u64) -> Option<u64> {
        let o = &self.offsets;
        let tag = self.mem.u64(obj.wrapping_add(o.long_lv_tag)).ok()?;
        let (ndigits, sign) = (tag >> 3, tag & 3);
        if sign == 2 || ndigits > 3 {
            return None;
        }
        let raw = self.mem.read_vec(obj.wrapping_add(o.long_ob_digit), (ndigits as usize) * 4).ok()?;
        let mut v: u64 = 0;
        for (i, d) in raw.chunks_exact(4).enumerate() {
            let digit = u32::from_le_bytes(d.try_into().ok()?) as u64;
            v = v.checked_add(digit.checked_shl(30 * i as u32)?)?;
        }
        Some(v)
    }

    /// Instance attribute `name` stored in the object's inline values (3.13+ objects of classes
    /// without `__slots__`), looked up through its type's shared keys.
    pub(crate) fn inline_attr(&self, obj: u64, name: &str) -> Option<u64> {
        let o = &self.offsets;
        let ty = self.mem.u64(obj.wrapping_add(o.ob_type)).ok()?;
        let basicsize = self.mem.u64(ty.wrapping_add(o.tp_name).wrapping_add(8)).ok()?;
        let keys = self.mem.u64(ty.wrapping_add(o.type_size).wrapping_add(HT_CACHED_KEYS_AFTER_TYPE)).ok()?;
        let hdr = self.mem.read_vec(keys, DK_INDICES as usize).ok()?;
        let n = field_u64(&hdr, DK_NENTRIES).min(256);
        let entries = keys.wrapping_add(DK_INDICES).wrapping_add(1u64 << field_u8(&hdr, DK_LOG2_INDEX_BYTES).min(40));
        let raw = self.mem.read_vec(entries, (n * 16) as usize).ok()?;
        let index = raw.chunks_exact(16).position(|e| {
            let k = field_u64(e, 0);
            k != 0
                && self.mem.u64(k.wrapping_add(o.unicode_length)).ok() == Some(name.len() as u64)
                && self.unicode(k).ok().as_deref() == Some(name)
        })? as u64;
        // PyDictValues: capacity, size, embedded, valid, 4 bytes padding, then the values.
        let values = obj.wrapping_add(basicsize);
        let vhdr = self.mem.read_vec(values, 8).ok()?;
        if vhdr[3] == 0 || index >= vhdr[1] as u64 {
            return None; // the values moved into a real __dict__
        }
        self.mem.u64(values.wrapping_add(8 + 8 * index)).ok().filter(|&v| v != 0)
    }

    /// `threading.Thread` names by thread ident (`pthread_self`), from `threading._active`.
    pub fn thread_names(&mut self) -> std::collections::HashMap<u64, String> {
        let mut out = std::collections::HashMap::new();
        let active = match self.threading_active {
            Some(a) => a,
            None => {
                let Some(a) = self.find_threading_active() else { return out };
                self.threading_active = Some(a);
                a
            }
        };
        for (k, thread) in self.dict_items(active) {
            let (Some(ident), Some(name)) = (self.long_value(k), self.inline_attr(thread, "_name")) else { continue };
            if let Ok(name) = self.unicode(name) {
                out.insert(ident, name);
            }
        }
        out
    }

    /// `threading.Thread` names by OS thread id.
    pub fn thread_names_by_tid(&mut self) -> std::collections::HashMap<u32, String> {
        let names = self.thread_names();
        if names.is_empty() {
            return Default::default();
        }
        self.threads()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| Some((t.native_tid, names.get(&t.thread_id)?.clone())))
            .collect()
    }

    fn find_threading_active(&self) -> Option<u64> {
        let o = &self.offsets;
        let interp = self.mem.u64(self.runtime.wrapping_add(o.runtime_interpreters_head)).ok()?;
        let modules = self.mem.u64(interp.wrapping_add(o.interp_imports_modules)).ok()?;
        let threading = self.dict_get_str(modules, "threading")?;
        let md_dict = self.mem.u64(threading.wrapping_add(o.pyobject_size)).ok()?;
        self.dict_get_str(md_dict, "_active")
    }
}

/// `PyModuleObject.md_def` and `.md_gil`, after the object header: `md_dict, md_def, md_state,
/// md_weaklist, md_name, md_gil` (`Include/internal/pycore_moduleobject.h`, 3.13 and 3.14; 3.15
/// renames `md_def` to `md_def_or_null`, same place). `md_gil` exists in free-threaded builds
/// only; checked with `offsetof` against the 3.13.5t headers (72 with the 32-byte header).
const MD_DEF_AFTER_HEADER: u64 = 8;
const MD_GIL_AFTER_HEADER: u64 = 40;

impl PyProcess {
    /// Extension modules in `sys.modules` that did not declare `Py_mod_gil = Py_MOD_GIL_NOT_USED`
    /// (their `md_gil` is `Py_MOD_GIL_USED`): each of them turned the GIL on when it was
    /// imported into a free-threaded build. `(name, __file__)`, in `sys.modules` order; empty for
    /// default builds.
    pub fn modules_needing_gil(&self) -> Vec<(String, Option<String>)> {
        let o = &self.offsets;
        if !o.free_threaded {
            return Vec::new();
        }
        let Ok(interp) = self.mem.u64(self.runtime.wrapping_add(o.runtime_interpreters_head)) else {
            return Vec::new();
        };
        let Ok(modules) = self.mem.u64(interp.wrapping_add(o.interp_imports_modules)) else { return Vec::new() };
        let mut out = Vec::new();
        for (k, m) in self.dict_items(modules) {
            if self.object_type_name(m).ok().as_deref() != Some("module") {
                continue;
            }
            let def = self.mem.u64(m.wrapping_add(o.pyobject_size + MD_DEF_AFTER_HEADER)).unwrap_or(0);
            let gil = self.mem.u64(m.wrapping_add(o.pyobject_size + MD_GIL_AFTER_HEADER)).unwrap_or(1);
            if def == 0 || gil != 0 {
                continue; // a Python module, or an extension that runs without the GIL
            }
            let Ok(name) = self.unicode(k) else { continue };
            let file = self
                .mem
                .u64(m.wrapping_add(o.pyobject_size))
                .ok()
                .and_then(|d| self.dict_get_str(d, "__file__"))
                .and_then(|f| self.unicode(f).ok());
            out.push((name, file));
        }
        out
    }
}
