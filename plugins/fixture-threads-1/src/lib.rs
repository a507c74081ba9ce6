//! Fixture: the `threads` service 1.0.0 (see `plugins/shared/threads.rs`).

const VERSION: &str = "1.0.0";

include!("../../shared/threads.rs");
