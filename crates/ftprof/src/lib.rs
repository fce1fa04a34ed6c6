//! ftprof
