//! graft's integration tests: one binary, one module per behaviour.
//!
//! The fixture plugins are built once per run by `graft_tests::path`; each test copies what it
//! needs into its own temporary directory and builds its own runtime, so tests run in parallel
//! without sharing state.

mod integration;
