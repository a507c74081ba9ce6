//! Fixture: the `threads` service 1.1.0 (see `plugins/shared/threads.rs`).

const VERSION: &str = "1.1.0";

include!("../../shared/threads.rs");
