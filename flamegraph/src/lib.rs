//! flamegraph
