//! The benchmark crate; the benchmarks are in `benches/graft.rs`.
