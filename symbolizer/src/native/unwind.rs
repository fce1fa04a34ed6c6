//! Stack unwinding with framehop: DWARF CFI from `.eh_frame`/`.eh_frame_hdr` or `.debug_frame`,
//! frame-pointer fallback where no CFI covers an address.

use std::ops::Range;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Unwinder as _};
use gimli::{EndianSlice, UnwindSection};

use super::elf::{Bytes, ElfFile};
use super::{Regs, Unwound};

/// Per-process framehop unwinder over file-backed section bytes.
pub(crate) type ProcessUnwinder = UnwinderX86_64<Bytes>;
/// Unwind-rule cache; shared by all processes (framehop keys it by module generation).
pub(crate) type UnwindCache = CacheX86_64;

/// Deepest stack we return.
pub const MAX_DEPTH: usize = 256;

/// Builds a framehop module for one executable mapping `avma` of `elf`, loaded with `bias`.
/// Also returns whether the module has any CFI (else framehop uses frame pointers only).
pub(crate) fn framehop_module(
    elf: &ElfFile,
    name: &str,
    avma: Range<u64>,
    bias: u64,
) -> (framehop::Module<Bytes>, bool) {
    let mut info = ExplicitModuleSectionInfo {
        // ELF: relative addresses are svmas (base 0), and `base_avma` is the load bias.
        base_svma: 0,
        text_svma: elf.section_range(".text"),
        got_svma: elf.section_range(".got"),
        ..Default::default()
    };
    // framehop reads one CFI section per module: `.eh_frame` if given, else `.debug_frame`.
    let cfi = cfi_source(elf);
    match cfi {
        Cfi::EhFrame => {
            info.eh_frame_svma = elf.section_range(".eh_frame");
            info.eh_frame = elf.section_data(".eh_frame");
            info.eh_frame_hdr_svma = elf.section_range(".eh_frame_hdr");
            info.eh_frame_hdr = elf.section_data(".eh_frame_hdr");
        }
        Cfi::DebugFrame => info.debug_frame = elf.section_data(".debug_frame"),
        Cfi::None => {}
    }
    let module = framehop::Module::new(name.to_owned(), avma, bias, info);
    (module, cfi != Cfi::None)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cfi {
    EhFrame,
    DebugFrame,
    None,
}

/// Picks the CFI section to unwind with. Code built with `-fno-asynchronous-unwind-tables -g`
/// has its CFI only in `.debug_frame`, while the linker may still emit an `.eh_frame` holding
/// nothing but a terminator (or the FDEs of a few crt objects): when both exist, the one with
/// more FDEs wins.
fn cfi_source(elf: &ElfFile) -> Cfi {
    let eh_frame = elf.section_data(".eh_frame").filter(|d| d.len() > 4);
    let debug_frame = elf.section_data(".debug_frame").filter(|d| d.len() > 4);
    match (eh_frame, debug_frame) {
        (Some(eh), Some(debug)) => {
            let mut debug_frame = gimli::DebugFrame::new(&debug, gimli::LittleEndian);
            debug_frame.set_address_size(8);
            let eh_frame = gimli::EhFrame::new(&eh, gimli::LittleEndian);
            if count_fdes(&debug_frame) > count_fdes(&eh_frame) {
                Cfi::DebugFrame
            } else {
                Cfi::EhFrame
            }
        }
        (Some(_), None) => Cfi::EhFrame,
        (None, Some(_)) => Cfi::DebugFrame,
        (None, None) => Cfi::None,
    }
}

fn count_fdes<'a, S>(section: &S) -> usize
where
    S: UnwindSection<EndianSlice<'a, gimli::LittleEndian>>,
{
    let bases = gimli::BaseAddresses::default();
    let mut entries = section.entries(&bases);
    let mut count = 0;
    while let Ok(Some(entry)) = entries.next() {
        count += usize::from(matches!(entry, gimli::CieOrFde::Fde(_)));
    }
    count
}

/// What the unwinder knows about the mapping holding a code address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CodeKind {
    /// No known executable mapping holds the address.
    Unknown,
    /// A known mapping without CFI (anonymous, unreadable file, no unwind sections).
    NoCfi,
    /// A module with `.eh_frame` or `.debug_frame`.
    Cfi,
}

/// Unwinds one sample.
///
/// `classify` tells where a code address lies. A return address outside every known mapping
/// ends the walk as incomplete: the walk went astray (garbage frame pointer, corrupt stack).
/// The end of the stack only counts as reached (`complete`) when the last frame had CFI, since
/// the frame-pointer fallback also "ends" on any zero `rbp` in code that uses rbp as a
/// general-purpose register.
pub(crate) fn unwind(
    unwinder: &ProcessUnwinder,
    cache: &mut UnwindCache,
    regs: Regs,
    stack: &[u8],
    classify: impl Fn(u64) -> CodeKind,
) -> Unwound {
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let off = usize::try_from(addr.checked_sub(regs.sp).ok_or(())?).map_err(|_| ())?;
        let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
    };
    let start = UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
    let mut frames = unwinder.iter_frames(regs.ip, start, cache, &mut read_stack);

    let mut out = Unwound { addrs: Vec::with_capacity(32), complete: false };
    let mut last_kind = classify(regs.ip);
    while out.addrs.len() < MAX_DEPTH {
        match frames.next() {
            Ok(Some(frame)) => {
                if frame.is_return_address() {
                    last_kind = classify(frame.address_for_lookup());
                    if last_kind == CodeKind::Unknown {
                        break;
                    }
                }
                out.addrs.push(frame.address());
            }
            Ok(None) => {
                out.complete = last_kind == CodeKind::Cfi;
                break;
            }
            Err(_) => break,
        }
    }
    out
}
