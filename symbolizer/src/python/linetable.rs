//! Decoder for the 3.11+ code-object location table (`co_linetable`).

/// The decoded table and the line lookup in it live in the `frames` crate, with `CodeInfo`.
pub use frames::python::linetable::{line_for, LineRanges};

fn varint(it: &mut std::slice::Iter<'_, u8>) -> Option<u32> {
    let mut b = *it.next()?;
    let mut v = (b & 63) as u32;
    let mut shift = 6;
    while b & 64 != 0 {
        b = *it.next()?;
        v |= ((b & 63) as u32).checked_shl(shift)?;
        shift += 6;
    }
    Some(v)
}

fn svarint(it: &mut std::slice::Iter<'_, u8>) -> Option<i32> {
    let v = varint(it)?;
    Some(if v & 1 != 0 { -((v >> 1) as i32) } else { (v >> 1) as i32 })
}

/// Decode the whole table (stops quietly at the first malformed entry).
pub fn decode(table: &[u8], firstlineno: i32) -> LineRanges {
    let mut out = Vec::new();
    let mut it = table.iter();
    let mut line = firstlineno;
    let mut addr = 0u32;
    while let Some(&first) = it.next() {
        if first & 0x80 == 0 {
            break;
        }
        let code = (first >> 3) & 15;
        let len = (first & 7) as u32 + 1;
        let delta = match code {
            15 => None,
            14 => {
                let d = svarint(&mut it);
                let rest = (varint(&mut it), varint(&mut it), varint(&mut it));
                if d.is_none() || rest.0.is_none() || rest.1.is_none() || rest.2.is_none() {
                    break;
                }
                d
            }
            13 => match svarint(&mut it) {
                Some(d) => Some(d),
                None => break,
            },
            10..=12 => {
                if it.next().is_none() || it.next().is_none() {
                    break;
                }
                Some(code as i32 - 10)
            }
            _ => {
                if it.next().is_none() {
                    break;
                }
                Some(0)
            }
        };
        if let Some(d) = delta {
            // Deltas come from the target's memory: a corrupt table may overflow.
            line = line.wrapping_add(d);
        }
        let Some(end) = addr.checked_add(len) else { break };
        out.push((addr, end, delta.map(|_| line)));
        addr = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_short_one_line_no_column_and_long_forms() {
        // entry 1: code 13 (no column), len 1, delta +2 → line 12
        // entry 2: code 11 (one-line form, delta 1), len 3 → 13, two extra bytes
        // entry 3: code 0 (short form), len 2 → 13, one extra byte
        // entry 4: code 14 (long), len 1, delta -3 → 10, + 3 varints
        // entry 5: code 15 (no location), len 1
        let table = [
            0x80 | (13 << 3),
            4, // svarint 4 → +2
            0x80 | (11 << 3) | 2,
            0,
            0,
            0x80 | 1,
            0,
            0x80 | (14 << 3),
            7,
            0,
            0,
            0, // svarint 7 → -3
            0x80 | (15 << 3),
        ];
        let r = decode(&table, 10);
        assert_eq!(r, vec![(0, 1, Some(12)), (1, 4, Some(13)), (4, 6, Some(13)), (6, 7, Some(10)), (7, 8, None)]);
        assert_eq!(line_for(&r, 0), Some(12));
        assert_eq!(line_for(&r, 3), Some(13));
        assert_eq!(line_for(&r, 6), Some(10));
        assert_eq!(line_for(&r, 7), None);
        assert_eq!(line_for(&r, 99), None);
    }

    #[test]
    fn multi_byte_varints() {
        // delta +100 as signed varint: 200 = 0b11_001000 → chunks 8 | 0x40, 3
        let table = [0x80 | (13 << 3), 8 | 0x40, 3];
        assert_eq!(decode(&table, 1), vec![(0, 1, Some(101))]);
    }
}
