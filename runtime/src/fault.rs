//! Kill points for crash-consistency tests.
//!
//! Built with the `fault-injection` feature, [`point`] aborts the process when the environment
//! variable `GRAFT_KILL_AT` names it, so that a test can kill a host at an exact step of a swap
//! or a commit and check what a restart finds. Without the feature it compiles to nothing.

/// Aborts the process here if `GRAFT_KILL_AT` names `name` (with the `fault-injection` feature).
#[inline]
pub(crate) fn point(name: &str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var("GRAFT_KILL_AT").is_ok_and(|at| at == name) {
        std::process::abort();
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}
