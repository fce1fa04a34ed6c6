//! A code object's decoded location table and the line lookup in it (the decoder of the 3.11+
//! `co_linetable` format, `symbolizer::python::linetable::decode`, reads the target and stays
//! in the symbolizer).

/// `(start, end, line)` ranges in code units; `line` is `None` for "no location" entries.
pub type LineRanges = Vec<(u32, u32, Option<i32>)>;

/// Line of the instruction at code unit `lasti`.
pub fn line_for(ranges: &LineRanges, lasti: u32) -> Option<i32> {
    let i = ranges.partition_point(|r| r.1 <= lasti);
    ranges.get(i).filter(|r| r.0 <= lasti).and_then(|r| r.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_ranges_and_gaps() {
        let r: LineRanges = vec![(0, 1, Some(12)), (1, 4, Some(13)), (4, 6, Some(13)), (6, 7, Some(10)), (7, 8, None)];
        assert_eq!(line_for(&r, 0), Some(12));
        assert_eq!(line_for(&r, 3), Some(13));
        assert_eq!(line_for(&r, 6), Some(10));
        assert_eq!(line_for(&r, 7), None);
        assert_eq!(line_for(&r, 99), None);
        assert_eq!(line_for(&Vec::new(), 0), None);
    }
}
