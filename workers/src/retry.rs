//! Failure classification and retry timing, in one place.
//!
//! Every failure a worker meets while handling a DOCS message is a [`Failure`]: a store
//! error or a log error, classified by the ports' own [`Classify`] (in
//! `sluice_core::resilience`, the one place that decides whether retrying may help).
//! Transient and unavailable failures are retried in place with exponential backoff and jitter
//! ([`RetryPolicy::backoff`]), for a bounded total time or until a breaker reports the
//! dependency down, then the message is nak'ed with [`RetryPolicy::nak_delay`] so the log
//! delivers it again later: a retried message is never a dropped one. Rejected and
//! caller errors are not retried in place: the same call would fail the same way.
//!
//! Concurrency: the policy is plain data, copied into every worker; each retry loop owns
//! its own backoff state.

use std::future::Future;
use std::time::Duration;

use sluice_core::config::WorkersConfig;
use sluice_core::log::LogError;
use sluice_core::resilience::{Classify, Delays, ErrorKind};
use sluice_core::store::StoreError;
use tokio_util::sync::CancellationToken;

/// Most time a worker keeps retrying one message in place before nak'ing it (less when
/// `retry_max` is small: four of its delays). Bounded so a long outage turns into
/// redeliveries (visible in metrics) rather than a stuck worker.
const MAX_RETRY_ELAPSED: Duration = Duration::from_secs(5);

/// Jitter applied to every backoff delay (±30 %), so workers that failed together do
/// not retry together.
const JITTER: f64 = 0.3;

/// Why handling a message failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The store refused or failed a read or a write.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log failed an append, an ack or a nak.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl Classify for Failure {
    fn kind(&self) -> ErrorKind {
        match self {
            Failure::Store(e) => e.kind(),
            Failure::Log(e) => e.kind(),
        }
    }
}

/// Retry timing derived from the `[workers]` configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    initial: Duration,
    max: Duration,
    budget: Duration,
}

impl RetryPolicy {
    /// The policy of `config` (`retry_initial` .. `retry_max`).
    pub(crate) fn from_config(config: &WorkersConfig) -> Self {
        let initial = config.retry_initial.max(Duration::from_millis(1));
        let max = config.retry_max.max(initial);
        Self {
            initial,
            max,
            budget: max.saturating_mul(4).min(MAX_RETRY_ELAPSED),
        }
    }

    /// A fresh in-place backoff: doubling from `initial` up to `max`, with jitter,
    /// giving up once the retry budget (at most [`MAX_RETRY_ELAPSED`]) is spent.
    pub(crate) fn backoff(&self) -> Delays {
        Delays::new(self.initial, self.max, JITTER, Some(self.budget))
    }

    /// How long the log should wait before delivering a nak'ed message again: grows
    /// with the number of deliveries so a message that keeps failing backs off.
    pub(crate) fn nak_delay(&self, delivery_count: u32) -> Duration {
        let doublings = delivery_count.saturating_sub(1).min(16);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// Runs `operation` until it succeeds, fails permanently, spends the retry budget of
/// `policy`, `give_up` says a dependency is down, or `shutdown` is cancelled (then the
/// last failure is returned at once, so a stopping worker does not sit in a backoff).
/// Only transient failures are retried, so a retried operation must be idempotent.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    shutdown: &CancellationToken,
    what: &'static str,
    give_up: impl Fn() -> bool,
    mut operation: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut backoff = policy.backoff();
    loop {
        let failure = match operation().await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let delay = if failure.is_transient() && !shutdown.is_cancelled() && !give_up() {
            backoff.next()
        } else {
            None
        };
        let Some(delay) = delay else {
            return Err(failure);
        };
        tracing::debug!(error = %failure, ?delay, what, "transient failure, retrying");
        tokio::select! {
            () = shutdown.cancelled() => return Err(failure),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        let config = WorkersConfig {
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(200),
            ..WorkersConfig::default()
        };
        RetryPolicy::from_config(&config)
    }

    #[test]
    fn classification_follows_the_ports() {
        let store_errors = [
            StoreError::Timeout,
            StoreError::Unavailable("down".into()),
            StoreError::Storage("disk".into()),
            StoreError::Rejected("refused".into()),
            StoreError::Corrupt("bad".into()),
        ];
        for error in store_errors {
            assert_eq!(Failure::from(error.clone()).kind(), error.kind());
        }
        let log_errors = [
            LogError::Timeout,
            LogError::Unavailable("no responders".into()),
            LogError::StreamNotFound("DOCS".into()),
            LogError::InvalidRequest("bad request".into()),
            LogError::Closed,
        ];
        for error in log_errors {
            assert_eq!(Failure::from(error.clone()).kind(), error.kind());
        }
        assert!(Failure::from(StoreError::Storage("disk".into())).is_transient());
        assert!(!Failure::from(StoreError::Rejected("refused".into())).is_transient());
        assert!(!Failure::from(LogError::StreamNotFound("DOCS".into())).is_transient());
    }

    #[test]
    fn nak_delay_doubles_and_is_capped() {
        let policy = policy();
        assert_eq!(policy.nak_delay(1), Duration::from_millis(10));
        assert_eq!(policy.nak_delay(2), Duration::from_millis(20));
        assert_eq!(policy.nak_delay(4), Duration::from_millis(80));
        assert_eq!(policy.nak_delay(6), Duration::from_millis(200));
        assert_eq!(policy.nak_delay(u32::MAX), Duration::from_millis(200));
    }

    #[test]
    fn retry_budget_is_bounded() {
        assert_eq!(policy().budget, Duration::from_millis(800));
        assert_eq!(
            RetryPolicy::from_config(&WorkersConfig::default()).budget,
            MAX_RETRY_ELAPSED
        );
    }

    #[tokio::test]
    async fn with_retries_retries_transient_failures_only() {
        let policy = policy();
        let shutdown = CancellationToken::new();
        let mut calls = 0;
        let result = with_retries(
            &policy,
            &shutdown,
            "test",
            || false,
            || {
                calls += 1;
                let attempt = calls;
                async move {
                    if attempt < 3 {
                        Err(Failure::from(StoreError::Timeout))
                    } else {
                        Ok(attempt)
                    }
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 3);

        let mut calls = 0;
        let result: Result<(), Failure> = with_retries(
            &policy,
            &shutdown,
            "test",
            || false,
            || {
                calls += 1;
                async { Err(Failure::from(StoreError::Corrupt("x".into()))) }
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "rejected failures are not retried");

        shutdown.cancel();
        let mut calls = 0;
        let result: Result<(), Failure> = with_retries(
            &policy,
            &shutdown,
            "test",
            || false,
            || {
                calls += 1;
                async { Err(Failure::from(StoreError::Timeout)) }
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "no retries once shutting down");

        let running = CancellationToken::new();
        let mut calls = 0;
        let result: Result<(), Failure> = with_retries(
            &policy,
            &running,
            "test",
            || true,
            || {
                calls += 1;
                async { Err(Failure::from(StoreError::Timeout)) }
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "no retries while a dependency is down");
    }

    #[test]
    fn backoff_stays_within_bounds_with_jitter() {
        let policy = policy();
        let mut backoff = policy.backoff();
        for _ in 0..3 {
            let delay = backoff.next().expect("budget not spent yet");
            assert!(delay >= Duration::from_millis(7), "{delay:?}");
            assert!(delay <= Duration::from_millis(260), "{delay:?}");
        }
    }
}
