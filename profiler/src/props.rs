//! Property tests: the parsers of data that comes from the kernel (ring records, `/proc` files)
//! must never panic, whatever the bytes. `FTPROF_FUZZ_CASES` sets the number of inputs per
//! parser (default 100 000).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::perf::read_ring;
use crate::records::tests::{record, sample_record, sample_type};
use crate::records::{parse, SampleSource};
use crate::threads::{parse_ctxt_switches, parse_schedstat, parse_stat, parse_syscall};

pub(crate) fn cases() -> u32 {
    std::env::var("FTPROF_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() })
}

/// A few (position, value) pairs of edge values for 8-byte fields.
fn words() -> impl Strategy<Value = Vec<(prop::sample::Index, u64)>> {
    let edge = prop_oneof![
        (0u64..16).prop_map(|k| u64::MAX - k),
        (0u64..16).prop_map(|k| (1 << 63) + k),
        (0u64..16).prop_map(|k| (1 << 32) + k),
        0u64..1024,
        any::<u64>(),
    ];
    prop::collection::vec((any::<prop::sample::Index>(), edge), 0..3)
}

/// Record bytes: pure noise, or a real record with bytes flipped, cut or extended, so that the
/// parser gets past the header into each record type's body.
fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
    let known = prop_oneof![Just(1u32), Just(2), Just(3), Just(4), Just(7), Just(9), Just(10), Just(14), any::<u32>()];
    let real = (0u32..200, any::<u64>(), prop::collection::vec(any::<u8>(), 0..64), any::<u64>())
        .prop_map(|(tid, time, stack, dyn_size)| sample_record(tid, time, &stack, dyn_size % 80));
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        (known, any::<u16>(), prop::collection::vec(any::<u8>(), 0..400))
            .prop_map(|(ty, misc, body)| record(ty, misc, &body)),
        (
            real,
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            words(),
            any::<prop::sample::Index>()
        )
            .prop_map(|(mut r, flips, words, cut)| {
                for (at, v) in flips {
                    let i = at.index(r.len());
                    r[i] = v;
                }
                // Whole 8-byte fields (counts, sizes) set to edge values.
                for (at, v) in words {
                    let i = 8 + 8 * at.index((r.len() - 8) / 8);
                    r[i..i + 8].copy_from_slice(&v.to_ne_bytes());
                }
                let keep = cut.index(r.len() + 1);
                r.truncate(keep.max(r.len() / 2));
                r
            }),
    ]
}

#[test]
fn record_parsing_never_panics() {
    let st = sample_type();
    runner()
        .run(&(record_bytes(), any::<u64>(), any::<bool>()), |(rec, other_type, switch)| {
            let source = if switch { SampleSource::SwitchOut } else { SampleSource::CpuClock };
            let _ = parse(&rec, st, source);
            let _ = parse(&rec, other_type, source);
            Ok(())
        })
        .unwrap();
}

#[test]
fn ring_walking_never_panics_and_never_passes_head() {
    let strategy = (prop::collection::vec(any::<u8>(), 512..=512), 0u32..7, any::<u64>(), 0u64..300);
    runner()
        .run(&strategy, |(bytes, log2, tail, span)| {
            let data = &bytes[..8 << log2 as usize]; // 8..512 bytes
            let tail = tail % (u64::MAX / 2);
            let head = tail + span;
            let mut scratch = Vec::new();
            let mut seen = 0u64;
            let end = read_ring(data, tail, head, &mut scratch, &mut |r| seen += r.len() as u64);
            prop_assert!(end >= tail && end <= head, "tail {tail} head {head} end {end}");
            prop_assert!(seen <= head - tail);
            Ok(())
        })
        .unwrap();
}

/// Text shaped like a `/proc` file: numbers (decimal, hex, huge, negative) and words.
fn proc_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        any::<u64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| format!("0x{v:x}")),
        any::<i64>().prop_map(|v| v.to_string()),
        Just("running".to_string()),
        Just("voluntary_ctxt_switches:".to_string()),
        Just("nonvoluntary_ctxt_switches:".to_string()),
        "[ -~]{0,12}",
    ];
    prop_oneof![
        prop::collection::vec((token, prop_oneof![Just(" "), Just("\t"), Just("\n"), Just(":\t")]), 0..12)
            .prop_map(|v| v.into_iter().map(|(t, s)| t + s).collect()),
        any::<String>(),
    ]
}

#[test]
fn proc_parsers_never_panic() {
    runner()
        .run(&proc_text(), |text| {
            let _ = parse_syscall(&text);
            let _ = parse_schedstat(&text);
            let _ = parse_ctxt_switches(&text);
            let _ = parse_stat(&text);
            Ok(())
        })
        .unwrap();
}
