//! The supervisor's policies: how soon a failed service is restarted, when it is given up on,
//! and whether a freshly swapped generation has passed its probation.
//!
//! Nothing here does I/O, starts a thread or reads a clock: the supervisor passes the time in,
//! so every rule is tested directly, and checked against a naive model where it has many cases.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a service whose start failed (its `create` or its first health check returned an error
/// or panicked) is restarted, in the manner of
/// systemd's `Restart=` with a `RestartSec=` that grows exponentially, bounded by
/// `StartLimitBurst=` and `StartLimitIntervalSec=`.
///
/// The default restarts after 10 ms, doubling the delay with each consecutive failure up to 5 s,
/// and gives up on the sixth failure within 10 s. A service that runs for 30 s without failing
/// has its failure history forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Whether a failed service is restarted at all; when false, its first failure is final.
    pub enabled: bool,
    /// The delay before the first restart after the failure history was last cleared.
    pub initial_backoff: Duration,
    /// The longest delay before a restart, however many failures came before it.
    pub max_backoff: Duration,
    /// The factor the delay grows by with each consecutive failure. It should be at least 1;
    /// 0 is taken as 1, so that the delay never shrinks to nothing and the service never spins.
    pub multiplier: u32,
    /// The most failures tolerated within `interval`: one more and the service is failed for
    /// good, until an operator resets it.
    pub burst: u32,
    /// The sliding window in which failures are counted against `burst`.
    pub interval: Duration,
    /// How long a service must run without failing for its failure history to be cleared, so
    /// that its next failure is treated as a first one again.
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            enabled: true,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(5),
            multiplier: 2,
            burst: 5,
            interval: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
        }
    }
}

/// What the supervisor should do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartDecision {
    /// Start the service again once this delay has passed.
    RestartAfter(Duration),
    /// Leave the service failed: restarts are disabled or it failed too often.
    GiveUp,
}

/// The failure history of one service, owned by the supervisor and fed with the times it
/// observes.
///
/// Times are expected not to go backwards, as `Instant`s from one clock do not; a time earlier
/// than one already recorded is treated as if it were the same time, never as a panic.
#[derive(Debug, Clone, Default)]
pub(crate) struct FailureHistory {
    /// The failures that may still count against the burst, in the order they were recorded.
    /// Holds at most `burst + 1` of them: once that many lie within the interval the service is
    /// given up on, and older ones cannot change any later decision.
    recent: VecDeque<Instant>,
    /// Failures since the history was last cleared, whether or not they still lie within the
    /// interval: the back-off keeps growing for a service that fails slowly but never recovers.
    consecutive: u32,
    /// The latest failure since the history was last cleared, so that a report of running since
    /// before it is not mistaken for a stable run.
    last_failure: Option<Instant>,
}

impl FailureHistory {
    /// Records a failure at `now` and decides what to do about it.
    ///
    /// If the policy is disabled, the answer is [`RestartDecision::GiveUp`]. Otherwise a failure
    /// counts against the burst while it is at most `policy.interval` old (one exactly that old
    /// still counts); if, counting this one, more than `policy.burst` failures do, the answer is
    /// `GiveUp`. Otherwise the service is restarted after [`backoff`] of the number of
    /// consecutive failures, this one included. The failure is recorded either way.
    pub(crate) fn record_failure(
        &mut self,
        now: Instant,
        policy: &RestartPolicy,
    ) -> RestartDecision {
        self.consecutive = self.consecutive.saturating_add(1);
        self.last_failure = Some(self.last_failure.map_or(now, |last| last.max(now)));

        self.recent.retain(|&failed| now.saturating_duration_since(failed) <= policy.interval);
        self.recent.push_back(now);
        let burst = usize::try_from(policy.burst).unwrap_or(usize::MAX);
        while self.recent.len() > burst.saturating_add(1) {
            self.recent.pop_front();
        }

        if !policy.enabled || self.recent.len() > burst {
            RestartDecision::GiveUp
        } else {
            RestartDecision::RestartAfter(backoff(self.consecutive, policy))
        }
    }

    /// Records that the supervisor found the service healthy at `now`, running since `since`.
    /// Once it has run for at least `policy.stable_after`, the history is cleared.
    ///
    /// A `since` earlier than the latest recorded failure is ignored: the service cannot have
    /// run without failing since then, so the claim comes from a stale observation.
    pub(crate) fn record_running(&mut self, since: Instant, now: Instant, policy: &RestartPolicy) {
        if self.last_failure.is_some_and(|failed| failed > since) {
            return;
        }
        if now.saturating_duration_since(since) >= policy.stable_after {
            self.reset();
        }
    }

    /// Forgets every failure, as when an operator resets a failed service.
    pub(crate) fn reset(&mut self) {
        *self = FailureHistory::default();
    }

    /// The number of consecutive failures since the history was last cleared.
    pub(crate) fn consecutive(&self) -> u32 {
        self.consecutive
    }
}

/// The delay before restarting after the `n`-th consecutive failure:
/// `min(initial_backoff * multiplier^(n - 1), max_backoff)`.
///
/// An `n` of 0 is taken as 1. The arithmetic cannot overflow: a delay that would exceed
/// `max_backoff` is `max_backoff`, however large `n` is.
pub(crate) fn backoff(n: u32, policy: &RestartPolicy) -> Duration {
    // In nanoseconds, a u128 holds any Duration, and the loop below stops as soon as the delay
    // reaches the cap, so it runs at most ~128 times even for the largest `n`.
    let cap = policy.max_backoff.as_nanos();
    let mut delay = policy.initial_backoff.as_nanos();
    let multiplier = u128::from(policy.multiplier.max(1));
    if delay == 0 || multiplier == 1 {
        return policy.initial_backoff.min(policy.max_backoff);
    }
    for _ in 1..n {
        if delay >= cap {
            break;
        }
        delay = delay.saturating_mul(multiplier);
    }
    if delay >= cap { policy.max_backoff } else { duration_from_nanos(delay, policy.max_backoff) }
}

/// Probation after a swap: the new generation is watched for a while, and rolled back if it
/// misbehaves.
///
/// The window ends after `calls` calls or after `duration`, whichever comes first. The
/// generation fails probation as soon as more than `max_failures` calls have failed, or, once at
/// least `min_calls` calls were made, as soon as more than `max_failure_rate` of them have.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbationPolicy {
    /// The number of calls after which the window ends.
    pub calls: u64,
    /// The time after which the window ends, if `calls` calls have not been made by then.
    pub duration: Duration,
    /// The most failed calls (errors or panics) tolerated in the window; one more fails it.
    pub max_failures: u64,
    /// The largest tolerated ratio of failed calls to calls, from 0.0 to 1.0, judged only once
    /// `min_calls` calls were made. NaN disables this check.
    pub max_failure_rate: f64,
    /// The number of calls before which `max_failure_rate` is not judged, so that one early
    /// failure is not a 100% failure rate.
    pub min_calls: u64,
}

impl Default for ProbationPolicy {
    fn default() -> Self {
        ProbationPolicy {
            calls: 1000,
            duration: Duration::from_secs(10),
            max_failures: 10,
            max_failure_rate: 0.05,
            min_calls: 100,
        }
    }
}

/// How a canary release is judged and how much traffic it takes; see
/// [`Runtime::swap_with`](crate::Runtime::swap_with) and [`SwapStrategy::Canary`].
///
/// The canary is promoted once it has answered `calls` calls within the thresholds, and
/// aborted as soon as more than `max_failures` of its calls failed or, once `min_calls` were
/// made, more than `max_failure_rate` of them. As in a probation window, a failure is an error
/// or a panic; a service's own refusal ([`Error::Refused`](crate::Error::Refused)) is not.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryPolicy {
    /// The share of calls sent to the canary, from 0.0 (none) to 1.0 (all).
    pub weight: f64,
    /// The number of calls the canary answers before it is promoted.
    pub calls: u64,
    /// The most failed calls tolerated; one more aborts the canary.
    pub max_failures: u64,
    /// The largest tolerated ratio of failed calls, judged once `min_calls` calls were made.
    pub max_failure_rate: f64,
    /// The number of calls before which `max_failure_rate` is not judged.
    pub min_calls: u64,
}

impl CanaryPolicy {
    /// A canary taking `weight` of the calls, promoted after 1,000 calls with at most 1% of
    /// them failed (judged from the 100th call) and at most 10 failures in all.
    pub fn with_weight(weight: f64) -> Self {
        CanaryPolicy {
            weight,
            calls: 1000,
            max_failures: 10,
            max_failure_rate: 0.01,
            min_calls: 100,
        }
    }

    /// The judging as a probation window with no end in time: only calls decide.
    pub(crate) fn judging(&self) -> ProbationPolicy {
        ProbationPolicy {
            calls: self.calls,
            duration: Duration::MAX,
            max_failures: self.max_failures,
            max_failure_rate: self.max_failure_rate,
            min_calls: self.min_calls,
        }
    }

    /// The routing threshold: a call goes to the canary when a uniform 64-bit draw is below it.
    pub(crate) fn threshold(&self) -> u64 {
        if self.weight >= 1.0 {
            u64::MAX
        } else if self.weight > 0.0 {
            // Exact to 2^-53, far below any weight that matters.
            (self.weight * 18_446_744_073_709_551_616.0) as u64
        } else {
            0
        }
    }
}

/// How [`Runtime::swap_with`](crate::Runtime::swap_with) brings a new build in.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SwapStrategy {
    /// All calls go to the new build at once (as [`Runtime::swap`](crate::Runtime::swap)).
    Immediate,
    /// A share of the calls goes to the new build, the canary, while the rest stay on the
    /// build serving, until the canary is promoted or aborted, by its calls or by hand.
    Canary(CanaryPolicy),
}

impl ProbationPolicy {
    /// No probation: every generation passes as soon as it is published.
    pub fn disabled() -> Self {
        // The window ends at once, and no count or rate of failures can breach the thresholds,
        // which would otherwise be judged first.
        ProbationPolicy {
            calls: 0,
            duration: Duration::ZERO,
            max_failures: u64::MAX,
            max_failure_rate: f64::INFINITY,
            min_calls: u64::MAX,
        }
    }
}

/// The state of a generation's probation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// The window is still open and no threshold has been breached.
    Pending,
    /// The window ended without a threshold being breached.
    Pass,
    /// A threshold was breached; the message says which, in lowercase.
    Fail(String),
}

/// The verdict after `calls` calls of which `failures` failed, `elapsed` into the window.
///
/// A breached failure threshold is a [`Verdict::Fail`] even if the window ended at the same
/// time, so that a burst of failures right at the end is not waved through. Otherwise the
/// verdict is [`Verdict::Pass`] once `policy.calls` calls were made or `policy.duration` has
/// elapsed, and [`Verdict::Pending`] before.
pub(crate) fn probation_verdict(
    calls: u64,
    failures: u64,
    elapsed: Duration,
    policy: &ProbationPolicy,
) -> Verdict {
    if failures > policy.max_failures {
        return Verdict::Fail(format!(
            "{failures} of {calls} calls failed (more than {} allowed)",
            policy.max_failures
        ));
    }
    if calls > 0 && calls >= policy.min_calls {
        // Precision lost converting counts beyond 2^53 is far below any meaningful rate.
        let rate = failures as f64 / calls as f64;
        if rate > policy.max_failure_rate {
            return Verdict::Fail(format!(
                "{failures} of {calls} calls failed ({:.2}%, more than {:.2}% allowed)",
                rate * 100.0,
                policy.max_failure_rate * 100.0
            ));
        }
    }
    if calls >= policy.calls || elapsed >= policy.duration {
        Verdict::Pass
    } else {
        Verdict::Pending
    }
}

/// Turns a count of nanoseconds back into a `Duration`, or `fallback` if it does not fit one.
fn duration_from_nanos(nanos: u128, fallback: Duration) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 10^9, so it always fits a u32.
        Ok(secs) => Duration::new(secs, u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0)),
        Err(_) => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::Rng;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn restarts_after(millis: u64) -> RestartDecision {
        RestartDecision::RestartAfter(ms(millis))
    }

    // ----- back-off -----

    #[test]
    fn the_default_restart_policy_is_the_documented_one() {
        let policy = RestartPolicy::default();
        assert!(policy.enabled);
        assert_eq!(policy.initial_backoff, ms(10));
        assert_eq!(policy.max_backoff, Duration::from_secs(5));
        assert_eq!(policy.multiplier, 2);
        assert_eq!(policy.burst, 5);
        assert_eq!(policy.interval, Duration::from_secs(10));
        assert_eq!(policy.stable_after, Duration::from_secs(30));
    }

    #[test]
    fn backoff_grows_by_the_multiplier_until_the_cap() {
        let policy = RestartPolicy::default();
        let delays: Vec<Duration> = (1..=11).map(|n| backoff(n, &policy)).collect();
        let expected: Vec<Duration> =
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5000, 5000].map(ms).to_vec();
        assert_eq!(delays, expected);

        let triple = RestartPolicy { multiplier: 3, ..RestartPolicy::default() };
        assert_eq!(backoff(3, &triple), ms(90));
    }

    #[test]
    fn backoff_of_a_huge_failure_count_is_the_cap_without_overflow() {
        let policy = RestartPolicy::default();
        assert_eq!(backoff(u32::MAX, &policy), policy.max_backoff);

        let extreme = RestartPolicy {
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            multiplier: u32::MAX,
            ..RestartPolicy::default()
        };
        assert_eq!(backoff(u32::MAX, &extreme), Duration::MAX);
        assert_eq!(backoff(2, &extreme), Duration::MAX);

        // A cap beyond what the multiplier can reach in 64 steps must not stop the growth early.
        let uncapped = RestartPolicy {
            initial_backoff: Duration::from_nanos(1),
            max_backoff: Duration::MAX,
            multiplier: 2,
            ..RestartPolicy::default()
        };
        assert_eq!(backoff(65, &uncapped), duration_from_nanos(1 << 64, Duration::ZERO));
        assert_eq!(backoff(u32::MAX, &uncapped), Duration::MAX);
    }

    #[test]
    fn backoff_edge_cases_never_shrink_or_exceed_the_cap() {
        let base = RestartPolicy::default();
        assert_eq!(backoff(0, &base), base.initial_backoff, "n = 0 is taken as the first");

        let constant = RestartPolicy { multiplier: 1, ..base.clone() };
        assert_eq!(backoff(1000, &constant), ms(10));

        let zero_multiplier = RestartPolicy { multiplier: 0, ..base.clone() };
        assert_eq!(backoff(7, &zero_multiplier), ms(10), "a multiplier of 0 is taken as 1");

        let immediate = RestartPolicy { initial_backoff: Duration::ZERO, ..base.clone() };
        assert_eq!(backoff(50, &immediate), Duration::ZERO);

        let inverted = RestartPolicy { initial_backoff: ms(9000), ..base.clone() };
        assert_eq!(backoff(1, &inverted), base.max_backoff, "the cap applies to the first too");
    }

    /// The back-off as its formula reads, without the early exit.
    fn naive_backoff(n: u32, policy: &RestartPolicy) -> Duration {
        let mut delay = policy.initial_backoff.as_nanos();
        for _ in 1..n.max(1) {
            delay = delay.saturating_mul(u128::from(policy.multiplier.max(1)));
        }
        let capped = delay.min(policy.max_backoff.as_nanos());
        Duration::new(
            u64::try_from(capped / 1_000_000_000).unwrap(),
            u32::try_from(capped % 1_000_000_000).unwrap(),
        )
    }

    #[test]
    fn backoff_matches_the_naive_formula() {
        let mut rng = Rng(1);
        for _ in 0..20_000 {
            let unit = [1, 1_000, 1_000_000, 1_000_000_000][rng.below(4) as usize];
            let policy = RestartPolicy {
                initial_backoff: Duration::from_nanos(rng.below(50) * unit),
                max_backoff: Duration::from_nanos(rng.below(100_000) * unit),
                multiplier: [0, 1, 2, 3, 10, u32::MAX][rng.below(6) as usize],
                ..RestartPolicy::default()
            };
            let n = rng.below(300) as u32;
            assert_eq!(backoff(n, &policy), naive_backoff(n, &policy), "n = {n}, {policy:?}");
        }
    }

    // ----- failure history -----

    #[test]
    fn restarts_back_off_until_the_burst_is_exceeded_within_the_interval() {
        let policy = RestartPolicy::default();
        let start = Instant::now();
        let mut history = FailureHistory::default();
        let decisions: Vec<RestartDecision> =
            (0..6).map(|i| history.record_failure(start + ms(100 * i), &policy)).collect();
        assert_eq!(
            decisions,
            [
                restarts_after(10),
                restarts_after(20),
                restarts_after(40),
                restarts_after(80),
                restarts_after(160),
                RestartDecision::GiveUp,
            ]
        );
        assert_eq!(history.consecutive(), 6);
    }

    #[test]
    fn failures_older_than_the_interval_no_longer_count_toward_the_burst() {
        let policy = RestartPolicy::default();
        let start = Instant::now();
        let mut history = FailureHistory::default();
        for i in 0..5 {
            assert_ne!(history.record_failure(start + ms(i), &policy), RestartDecision::GiveUp);
        }
        // The first failure is 10.001 s old: out of the window, so this is the fifth in it.
        let decision = history.record_failure(start + ms(10_001), &policy);
        assert_eq!(decision, restarts_after(320), "the back-off still counts all six");
    }

    #[test]
    fn a_failure_exactly_one_interval_old_still_counts() {
        let policy = RestartPolicy::default();
        let start = Instant::now();
        let mut history = FailureHistory::default();
        for _ in 0..5 {
            history.record_failure(start, &policy);
        }
        assert_eq!(
            history.record_failure(start + policy.interval, &policy),
            RestartDecision::GiveUp
        );
    }

    #[test]
    fn slow_failures_never_give_up_but_the_backoff_keeps_growing() {
        let policy = RestartPolicy::default();
        let start = Instant::now();
        let mut history = FailureHistory::default();
        let mut last = RestartDecision::GiveUp;
        for i in 0..100 {
            last = history.record_failure(start + Duration::from_secs(11 * i), &policy);
            assert_ne!(last, RestartDecision::GiveUp, "failure {i}");
        }
        assert_eq!(last, RestartDecision::RestartAfter(policy.max_backoff));
        assert_eq!(history.consecutive(), 100);
    }

    #[test]
    fn a_disabled_policy_gives_up_at_the_first_failure() {
        let policy = RestartPolicy { enabled: false, ..RestartPolicy::default() };
        let mut history = FailureHistory::default();
        assert_eq!(history.record_failure(Instant::now(), &policy), RestartDecision::GiveUp);
        assert_eq!(history.consecutive(), 1);
    }

    #[test]
    fn a_burst_of_zero_gives_up_at_the_first_failure() {
        let policy = RestartPolicy { burst: 0, ..RestartPolicy::default() };
        let mut history = FailureHistory::default();
        assert_eq!(history.record_failure(Instant::now(), &policy), RestartDecision::GiveUp);
    }

    #[test]
    fn a_stable_run_clears_the_history_and_a_short_one_does_not() {
        let policy = RestartPolicy::default();
        let start = Instant::now();
        let mut history = FailureHistory::default();
        for _ in 0..4 {
            history.record_failure(start, &policy);
        }
        let restarted = start + ms(80);

        history.record_running(restarted, restarted + ms(29_999), &policy);
        assert_eq!(history.consecutive(), 4, "29.999 s is not yet stable");

        history.record_running(restarted, restarted + policy.stable_after, &policy);
        assert_eq!(history.consecutive(), 0, "exactly stable_after is stable");

        // The burst window was cleared too: five quick failures are tolerated again.
        let later = restarted + Duration::from_secs(31);
        for _ in 0..4 {
            history.record_failure(later, &policy);
        }
        assert_eq!(history.record_failure(later, &policy), restarts_after(160));
    }

    #[test]
    fn a_run_said_to_start_before_the_latest_failure_is_not_stable() {
        let policy = RestartPolicy::default();
        let start = Instant::now();
        let mut history = FailureHistory::default();
        history.record_failure(start + Duration::from_secs(40), &policy);
        history.record_running(start, start + Duration::from_secs(41), &policy);
        assert_eq!(history.consecutive(), 1);

        // A run starting at the very instant of the failure (a restart without delay) is fine.
        let failed = start + Duration::from_secs(40);
        history.record_running(failed, failed + policy.stable_after, &policy);
        assert_eq!(history.consecutive(), 0);
    }

    #[test]
    fn reset_forgets_a_service_that_was_given_up_on() {
        let policy = RestartPolicy::default();
        let now = Instant::now();
        let mut history = FailureHistory::default();
        for _ in 0..6 {
            history.record_failure(now, &policy);
        }
        assert_eq!(history.record_failure(now, &policy), RestartDecision::GiveUp);
        history.reset();
        assert_eq!(history.consecutive(), 0);
        assert_eq!(history.record_failure(now, &policy), restarts_after(10));
    }

    #[test]
    fn repeated_failures_after_giving_up_keep_the_history_bounded() {
        let policy = RestartPolicy::default();
        let now = Instant::now();
        let mut history = FailureHistory::default();
        for _ in 0..10_000 {
            history.record_failure(now, &policy);
        }
        assert_eq!(history.recent.len(), policy.burst as usize + 1);
        assert_eq!(history.consecutive(), 10_000);
    }

    /// The failure history as the rules read: every failure since the last clear is kept.
    #[derive(Default)]
    struct NaiveHistory {
        failures: Vec<Instant>,
    }

    impl NaiveHistory {
        fn record_failure(&mut self, now: Instant, policy: &RestartPolicy) -> RestartDecision {
            self.failures.push(now);
            let in_window =
                self.failures.iter().filter(|&&t| now.duration_since(t) <= policy.interval).count();
            if !policy.enabled || in_window > policy.burst as usize {
                RestartDecision::GiveUp
            } else {
                let n = u32::try_from(self.failures.len()).unwrap();
                RestartDecision::RestartAfter(naive_backoff(n, policy))
            }
        }

        fn record_running(&mut self, since: Instant, now: Instant, policy: &RestartPolicy) {
            let failed_since = self.failures.iter().any(|&t| t > since);
            if !failed_since && now.duration_since(since) >= policy.stable_after {
                self.failures.clear();
            }
        }
    }

    #[test]
    fn failure_history_matches_the_naive_model() {
        let mut rng = Rng(2);
        let origin = Instant::now();
        for round in 0..500 {
            let policy = RestartPolicy {
                enabled: !rng.chance(5),
                initial_backoff: ms(rng.below(20)),
                max_backoff: ms(rng.below(2000)),
                multiplier: rng.below(4) as u32,
                burst: rng.below(8) as u32,
                interval: ms(rng.below(1000)),
                stable_after: ms(rng.below(1000)),
            };
            let mut history = FailureHistory::default();
            let mut model = NaiveHistory::default();
            // Time only moves forward, as an Instant does; steps of zero are common on purpose.
            let mut now = origin;
            for step in 0..200 {
                now += ms(rng.below(4) * rng.below(150));
                match rng.below(10) {
                    0..=6 => {
                        let got = history.record_failure(now, &policy);
                        let want = model.record_failure(now, &policy);
                        assert_eq!(got, want, "round {round}, step {step}, {policy:?}");
                    }
                    7..=8 => {
                        let since = now.checked_sub(ms(rng.below(1500))).unwrap_or(origin);
                        let since = since.max(origin);
                        history.record_running(since, now, &policy);
                        model.record_running(since, now, &policy);
                    }
                    _ => {
                        if rng.chance(20) {
                            history.reset();
                            model.failures.clear();
                        }
                    }
                }
                let expected = u32::try_from(model.failures.len()).unwrap();
                assert_eq!(history.consecutive(), expected, "round {round}, step {step}");
            }
        }
    }

    // ----- probation -----

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_default_probation_policy_is_the_documented_one() {
        let policy = ProbationPolicy::default();
        assert_eq!(policy.calls, 1000);
        assert_eq!(policy.duration, secs(10));
        assert_eq!(policy.max_failures, 10);
        assert_eq!(policy.max_failure_rate, 0.05);
        assert_eq!(policy.min_calls, 100);
    }

    #[test]
    fn a_quiet_window_is_pending_until_calls_or_time_run_out() {
        let policy = ProbationPolicy::default();
        assert_eq!(probation_verdict(0, 0, Duration::ZERO, &policy), Verdict::Pending);
        assert_eq!(probation_verdict(999, 0, ms(9_999), &policy), Verdict::Pending);
        assert_eq!(probation_verdict(1000, 0, ms(1), &policy), Verdict::Pass);
        assert_eq!(probation_verdict(3, 0, secs(10), &policy), Verdict::Pass);
    }

    #[test]
    fn one_failure_more_than_allowed_fails_with_a_message_that_says_so() {
        let policy = ProbationPolicy::default();
        assert_eq!(probation_verdict(40, 10, secs(1), &policy), Verdict::Pending);
        assert_eq!(
            probation_verdict(40, 11, secs(1), &policy),
            Verdict::Fail("11 of 40 calls failed (more than 10 allowed)".to_owned())
        );
    }

    #[test]
    fn a_breach_at_the_end_of_the_window_is_still_a_failure() {
        let policy = ProbationPolicy::default();
        assert!(matches!(probation_verdict(1000, 11, secs(10), &policy), Verdict::Fail(_)));
        assert!(matches!(probation_verdict(1000, 51, secs(10), &policy), Verdict::Fail(_)));
        assert_eq!(probation_verdict(1000, 10, secs(10), &policy), Verdict::Pass);
    }

    #[test]
    fn the_failure_rate_is_judged_only_from_min_calls_and_only_above_the_limit() {
        let policy = ProbationPolicy { max_failures: 1000, ..ProbationPolicy::default() };
        // 50% of 99 calls: too few calls to judge a rate.
        assert_eq!(probation_verdict(99, 50, secs(1), &policy), Verdict::Pending);
        // Exactly 5% is allowed; above it is not.
        assert_eq!(probation_verdict(100, 5, secs(1), &policy), Verdict::Pending);
        assert_eq!(
            probation_verdict(100, 6, secs(1), &policy),
            Verdict::Fail("6 of 100 calls failed (6.00%, more than 5.00% allowed)".to_owned())
        );
        assert_eq!(probation_verdict(1000, 50, secs(1), &policy), Verdict::Pass);
        assert!(matches!(probation_verdict(1000, 51, secs(1), &policy), Verdict::Fail(_)));
    }

    #[test]
    fn a_rate_judged_from_zero_calls_does_not_divide_by_zero() {
        let policy = ProbationPolicy { min_calls: 0, max_failure_rate: 0.0, ..Default::default() };
        assert_eq!(probation_verdict(0, 0, Duration::ZERO, &policy), Verdict::Pending);
        assert!(matches!(probation_verdict(1, 1, Duration::ZERO, &policy), Verdict::Fail(_)));
    }

    #[test]
    fn disabled_probation_passes_everything_at_once() {
        let policy = ProbationPolicy::disabled();
        let mut rng = Rng(3);
        for _ in 0..10_000 {
            let calls = [0, 1, 100, u64::MAX][rng.below(4) as usize];
            let failures = [0, 1, 11, calls, u64::MAX][rng.below(5) as usize];
            let elapsed = [Duration::ZERO, ms(1), Duration::MAX][rng.below(3) as usize];
            assert_eq!(probation_verdict(calls, failures, elapsed, &policy), Verdict::Pass);
        }
    }

    /// The verdict as the rules read, with the rate compared exactly in integers: the rate
    /// limit is `per_mille / 1000`.
    fn naive_verdict(
        calls: u64,
        failures: u64,
        elapsed: Duration,
        policy: &ProbationPolicy,
        per_mille: u64,
    ) -> Verdict {
        let too_many = failures > policy.max_failures;
        let too_often = calls >= policy.min_calls
            && calls > 0
            && u128::from(failures) * 1000 > u128::from(per_mille) * u128::from(calls);
        let ended = calls >= policy.calls || elapsed >= policy.duration;
        match (too_many || too_often, ended) {
            (true, _) => Verdict::Fail(String::new()),
            (false, true) => Verdict::Pass,
            (false, false) => Verdict::Pending,
        }
    }

    #[test]
    fn probation_verdict_matches_the_naive_model() {
        let mut rng = Rng(4);
        for _ in 0..100_000 {
            let per_mille = rng.below(1001);
            let policy = ProbationPolicy {
                calls: rng.below(2000),
                duration: ms(rng.below(2000)),
                max_failures: rng.below(100),
                max_failure_rate: per_mille as f64 / 1000.0,
                min_calls: rng.below(200),
            };
            let calls = rng.below(3000);
            let failures = rng.below(calls + 1);
            let elapsed = ms(rng.below(3000));
            let got = probation_verdict(calls, failures, elapsed, &policy);
            let want = naive_verdict(calls, failures, elapsed, &policy, per_mille);
            let context = format!("{calls} calls, {failures} failed, {elapsed:?}, {policy:?}");
            match (&got, &want) {
                (Verdict::Fail(why), Verdict::Fail(_)) => {
                    assert!(why.starts_with(&format!("{failures} of {calls} calls failed")));
                }
                _ => assert_eq!(got, want, "{context}"),
            }
        }
    }

    #[test]
    fn more_failures_never_turn_a_failed_verdict_into_a_passing_one() {
        let mut rng = Rng(5);
        let policy = ProbationPolicy::default();
        for _ in 0..20_000 {
            let calls = rng.below(2000);
            let failures = rng.below(calls + 1);
            let elapsed = ms(rng.below(20_000));
            if matches!(probation_verdict(calls, failures, elapsed, &policy), Verdict::Fail(_)) {
                let worse = probation_verdict(calls, failures + 1, elapsed, &policy);
                assert!(matches!(worse, Verdict::Fail(_)), "{calls} calls, {failures} failed");
            }
        }
    }
}
