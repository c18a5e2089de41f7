//! Failure classification, call timeouts and circuit breakers, for every dependency.
//!
//! sluice depends on three things that can fail independently of the request at hand:
//! the log (publish and consume), the store and the index. Each call site wraps its calls
//! in the [`Breaker`] of that [`Dependency`], with a timeout. The rules live here, once:
//!
//! - **Classification.** Every dependency error says what it is through [`Classify`],
//!   as one of four [`ErrorKind`]s, decided here for [`LogError`] and [`StoreError`]
//!   (adapters only pick the variant that names what happened):
//!   [`ErrorKind::Transient`] (this call failed, the next may not: a timeout, a 5xx
//!   answer), [`ErrorKind::Unavailable`] (the dependency cannot serve now: unreachable,
//!   no responders, no cluster quorum, failing local storage, an open breaker),
//!   [`ErrorKind::Rejected`] (the dependency answered and refused the request as made:
//!   stream not found, wrong last sequence, a corrupt record) and [`ErrorKind::Caller`]
//!   (the caller's own mistake or state: a bad request, an unknown consumer, a log that
//!   is shutting down). Transient and unavailable failures are retried (with backoff and
//!   jitter, by the caller) and are the only ones that count against a breaker; a
//!   rejected or caller error proves the dependency answered, so it counts as a success.
//! - **Timeouts.** [`Breaker::call`] bounds every call; a call that runs out of time is a
//!   transient failure ([`DependencyError::timed_out`]): it may or may not have taken
//!   effect, which every caller already tolerates (appends carry dedup ids, store writes
//!   are last-writer-wins).
//! - **Breakers.** After `breaker_failures` consecutive infrastructure failures the breaker
//!   opens: calls fail at once with [`DependencyError::circuit_open`] (a transient error)
//!   instead of piling up on a dependency that is down. After a jittered delay that grows
//!   from `breaker_open_initial` to `breaker_open_max` it lets calls through again
//!   (half-open); the first success closes it, a failure opens it again. Callers that pull
//!   work (workers, index shards) ask [`Breaker::permits_calls`] before pulling, so an
//!   outage leaves messages in the log rather than burning their delivery attempts.
//!
//! The state of every breaker is the gauge `sluice_breaker_state{dependency}` (0 closed,
//! 1 half-open, 2 open); transitions are logged once each and counted.
//!
//! Concurrency: a [`Breaker`] is cheap to clone and shared by every task that calls the
//! same dependency; its state is behind failsafe's mutex, held only for bookkeeping.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use failsafe::failure_policy::ConsecutiveFailures;
use failsafe::futures::CircuitBreaker as _;
use failsafe::{Instrument, StateMachine};

use crate::config::ResilienceConfig;
use crate::log::LogError;
use crate::metrics as m;
use crate::store::StoreError;

/// What kind of failure an error is. Decided once per error type, in its [`Classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// This call failed and the next may not (a timeout, a server error answer): retry
    /// with backoff; counts against the breaker.
    Transient,
    /// The dependency cannot serve now (unreachable, no responders, no quorum, failing
    /// local storage, an open breaker): retry later; counts against the breaker.
    Unavailable,
    /// The dependency answered and refused the request as made (a missing stream, a
    /// wrong expected sequence, a corrupt record): retrying it unchanged fails the same
    /// way. Says nothing about the dependency's health.
    Rejected,
    /// The caller's own mistake or state (a malformed request, an unknown consumer, a
    /// log this process is closing). Never retried, never counted.
    Caller,
}

impl ErrorKind {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Unavailable)
    }

    /// Whether a failure of this kind says the dependency is unhealthy, i.e. counts
    /// towards opening its breaker.
    pub fn counts_against_breaker(self) -> bool {
        self.is_retryable()
    }

    /// The kind's name, for log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Caller => "caller",
        }
    }
}

/// Classification of an error, in one place per error type.
pub trait Classify {
    /// What kind of failure this is.
    fn kind(&self) -> ErrorKind;

    /// Whether retrying the same call later may succeed (transient or unavailable).
    fn is_transient(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Whether this failure says the dependency is unhealthy (counts towards a breaker).
    fn is_infrastructure(&self) -> bool {
        self.kind().counts_against_breaker()
    }
}

/// An error type a [`Breaker`] can produce itself: for a rejected or timed-out call.
pub trait DependencyError: Classify + Sized {
    /// The breaker of `dependency` is open; the call was not made. Must be transient.
    fn circuit_open(dependency: Dependency) -> Self;
    /// The call did not finish within its timeout. Must be transient.
    fn timed_out() -> Self;
}

/// A dependency guarded by its own breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dependency {
    /// Appending to the log (ingest, worker events, DLQ).
    LogPublish,
    /// Fetching from and acking to the log (workers, index shards).
    LogConsume,
    /// Reading and writing the document store.
    Store,
    /// Committing an index shard.
    IndexCommit,
}

impl Dependency {
    /// The `dependency` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::LogPublish => "log_publish",
            Dependency::LogConsume => "log_consume",
            Dependency::Store => "store",
            Dependency::IndexCommit => "index_commit",
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A breaker's state, as the gauge reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    /// Calls go through.
    Closed = 0,
    /// Calls go through as probes; the first success closes the breaker.
    HalfOpen = 1,
    /// Calls are refused at once.
    Open = 2,
}

/// Publishes state transitions: the gauge, a counter and one log line each.
#[derive(Debug)]
struct StateReporter {
    dependency: Dependency,
    state: AtomicU8,
}

impl StateReporter {
    fn set(&self, state: BreakerState) {
        let previous = self.state.swap(state as u8, Ordering::Relaxed);
        let label = self.dependency.as_str();
        metrics::gauge!(m::BREAKER_STATE, "dependency" => label).set(f64::from(state as u8));
        if previous == state as u8 {
            return;
        }
        metrics::counter!(m::BREAKER_TRANSITIONS_TOTAL, "dependency" => label, "to" => state.as_str())
            .increment(1);
        match state {
            BreakerState::Open => tracing::warn!(dependency = label, "circuit breaker opened"),
            BreakerState::HalfOpen => {
                tracing::info!(dependency = label, "circuit breaker half-open: probing")
            }
            BreakerState::Closed => tracing::info!(dependency = label, "circuit breaker closed"),
        }
    }
}

impl BreakerState {
    /// The `to` label of a transition.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            0 => BreakerState::Closed,
            1 => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }
}

/// failsafe calls back into this on every transition.
#[derive(Clone, Debug)]
struct Reporter(Arc<StateReporter>);

impl Instrument for Reporter {
    fn on_call_rejected(&self) {
        metrics::counter!(m::BREAKER_REJECTIONS_TOTAL, "dependency" => self.0.dependency.as_str())
            .increment(1);
    }

    fn on_open(&self) {
        self.0.set(BreakerState::Open);
    }

    fn on_half_open(&self) {
        self.0.set(BreakerState::HalfOpen);
    }

    fn on_closed(&self) {
        self.0.set(BreakerState::Closed);
    }
}

/// Jittered exponential delays: doubling from `initial` up to `max`, each randomized by
/// ±`jitter` (a fraction), ending once `budget` (if any) has elapsed since the first.
/// The one place the `backoff` crate is used: the breakers' open delays and the workers'
/// in-place retries both draw their delays from here. (The crate is flagged unmaintained
/// by RustSec; it stays, behind this type, so replacing it touches this type only.)
#[derive(Clone, Debug)]
pub struct Delays(ExponentialBackoff);

impl Delays {
    /// Delays from `initial` to `max` (at least `initial`, and at least 1 ms), ±`jitter`.
    pub fn new(initial: Duration, max: Duration, jitter: f64, budget: Option<Duration>) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self(
            ExponentialBackoffBuilder::new()
                .with_initial_interval(initial)
                .with_max_interval(max.max(initial))
                .with_multiplier(2.0)
                .with_randomization_factor(jitter)
                .with_max_elapsed_time(budget)
                .build(),
        )
    }
}

impl Iterator for Delays {
    type Item = Duration;

    /// The next delay; `None` once the budget is spent.
    fn next(&mut self) -> Option<Duration> {
        self.0.next_backoff()
    }
}

/// How long an opened breaker stays open: doubling from `breaker_open_initial` to
/// `breaker_open_max` with ±30 % jitter, so the breakers of many nodes do not probe a
/// recovering dependency in step. failsafe asks for the next delay each time a probe
/// fails and starts again from the first once the breaker closes.
fn open_delays(config: &ResilienceConfig) -> Delays {
    Delays::new(
        config.breaker_open_initial,
        config.breaker_open_max,
        0.3,
        None,
    )
}

type Machine = StateMachine<ConsecutiveFailures<Delays>, Reporter>;

/// The circuit breaker and call timeout of one dependency. Clones share state.
#[derive(Clone, Debug)]
pub struct Breaker {
    dependency: Dependency,
    timeout: Duration,
    machine: Machine,
    reporter: Arc<StateReporter>,
}

impl Breaker {
    /// A closed breaker for `dependency`, bounding each call by `timeout`.
    pub fn new(dependency: Dependency, timeout: Duration, config: &ResilienceConfig) -> Self {
        let reporter = Arc::new(StateReporter {
            dependency,
            state: AtomicU8::new(BreakerState::Closed as u8),
        });
        let policy = failsafe::failure_policy::consecutive_failures(
            config.breaker_failures.max(1),
            open_delays(config),
        );
        let machine = StateMachine::new(policy, Reporter(reporter.clone()));
        Self {
            dependency,
            timeout,
            machine,
            reporter,
        }
    }

    /// The dependency this breaker guards.
    pub fn dependency(&self) -> Dependency {
        self.dependency
    }

    /// The timeout of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The current state (as of the last call or permission check).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.reporter.state.load(Ordering::Relaxed))
    }

    /// Whether a call would be let through now. When the open delay has passed this
    /// moves the breaker to half-open, so the next call is a probe.
    pub fn permits_calls(&self) -> bool {
        self.machine.is_call_permitted()
    }

    /// Waits until the breaker lets calls through (returning `true`), or until
    /// `cancelled` resolves (returning `false`). Polls a few times a second: no busy loop.
    pub async fn wait_until_permitted(&self, cancelled: impl Future<Output = ()>) -> bool {
        const POLL: Duration = Duration::from_millis(200);
        let mut cancelled = std::pin::pin!(cancelled);
        loop {
            if self.permits_calls() {
                return true;
            }
            tokio::select! {
                () = &mut cancelled => return false,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Runs `call` under the breaker and the timeout. Transient and unavailable failures
    /// (timeouts included) count towards opening the breaker; rejected and caller errors
    /// count as successes, since the dependency answered.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, E>
    where
        E: DependencyError,
        F: Future<Output = Result<T, E>>,
    {
        let timeout = self.timeout;
        let bounded = async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(E::timed_out()),
            }
        };
        match self
            .machine
            .call_with(|error: &E| error.is_infrastructure(), bounded)
            .await
        {
            Ok(value) => Ok(value),
            Err(failsafe::Error::Inner(error)) => Err(error),
            Err(failsafe::Error::Rejected) => Err(E::circuit_open(self.dependency)),
        }
    }

    /// Records the outcome of work that was not run through [`Breaker::call`] (e.g. a
    /// blocking index commit on its own thread).
    pub fn record<E: Classify>(&self, outcome: Result<(), &E>) {
        match outcome {
            Ok(()) => self.machine.on_success(),
            Err(error) if error.is_infrastructure() => self.machine.on_error(),
            Err(_) => self.machine.on_success(),
        }
    }
}

/// The breakers of one node, one per dependency, shared by every role in the process.
#[derive(Clone, Debug)]
pub struct Breakers {
    /// Appends to the log.
    pub log_publish: Breaker,
    /// Fetches and acks.
    pub log_consume: Breaker,
    /// Store reads and writes.
    pub store: Breaker,
    /// Index commits.
    pub index_commit: Breaker,
}

impl Breakers {
    /// Every breaker closed, with the timeouts of `config` (`log_timeout` for the log).
    pub fn new(config: &ResilienceConfig, log_timeout: Duration) -> Self {
        Self {
            log_publish: Breaker::new(Dependency::LogPublish, log_timeout, config),
            log_consume: Breaker::new(Dependency::LogConsume, log_timeout, config),
            store: Breaker::new(Dependency::Store, config.store_timeout, config),
            index_commit: Breaker::new(
                Dependency::IndexCommit,
                config.index_commit_timeout,
                config,
            ),
        }
    }
}

impl Classify for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Timeout => ErrorKind::Transient,
            StoreError::Unavailable(_) | StoreError::Storage(_) => ErrorKind::Unavailable,
            StoreError::Rejected(_) | StoreError::Corrupt(_) => ErrorKind::Rejected,
            StoreError::Closed => ErrorKind::Caller,
        }
    }
}

impl DependencyError for StoreError {
    fn circuit_open(dependency: Dependency) -> Self {
        StoreError::Unavailable(format!("circuit breaker for {dependency} is open"))
    }

    fn timed_out() -> Self {
        StoreError::Timeout
    }
}

impl Classify for LogError {
    fn kind(&self) -> ErrorKind {
        match self {
            LogError::Timeout | LogError::Server { .. } => ErrorKind::Transient,
            LogError::Unavailable(_) | LogError::Storage(_) => ErrorKind::Unavailable,
            LogError::StreamNotFound(_)
            | LogError::WrongLastSequence(_)
            | LogError::MessageNotFound(_)
            | LogError::Rejected { .. }
            | LogError::Corrupt(_) => ErrorKind::Rejected,
            // A missing consumer is a setup error, and a closing log is this process
            // shutting down: neither is about the log's health.
            LogError::InvalidRequest(_) | LogError::ConsumerNotFound(_) | LogError::Closed => {
                ErrorKind::Caller
            }
        }
    }
}

impl DependencyError for LogError {
    fn circuit_open(dependency: Dependency) -> Self {
        LogError::Unavailable(format!("circuit breaker for {dependency} is open"))
    }

    fn timed_out() -> Self {
        LogError::Timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ResilienceConfig {
        ResilienceConfig {
            breaker_failures: 3,
            breaker_open_initial: Duration::from_millis(50),
            breaker_open_max: Duration::from_millis(100),
            ..ResilienceConfig::default()
        }
    }

    async fn fail(breaker: &Breaker, error: StoreError) -> StoreError {
        breaker
            .call(async { Err::<(), _>(error) })
            .await
            .unwrap_err()
    }

    #[test]
    fn every_store_error_has_its_kind() {
        use ErrorKind::*;
        let cases = [
            (StoreError::Timeout, Transient),
            (StoreError::Unavailable("down".into()), Unavailable),
            (StoreError::Storage("disk".into()), Unavailable),
            (StoreError::Rejected("refused".into()), Rejected),
            (StoreError::Corrupt("bad".into()), Rejected),
            (StoreError::Closed, Caller),
            (StoreError::circuit_open(Dependency::Store), Unavailable),
            (StoreError::timed_out(), Transient),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error:?}");
            assert_eq!(error.is_transient(), kind.is_retryable(), "{error:?}");
            assert_eq!(
                error.is_infrastructure(),
                matches!(kind, Transient | Unavailable),
                "{error:?}"
            );
        }
    }

    #[test]
    fn every_log_error_has_its_kind() {
        use ErrorKind::*;
        let server = LogError::Server {
            status: 500,
            code: 10077,
            description: "stream store failed".into(),
        };
        let rejected = LogError::Rejected {
            status: 400,
            code: 10052,
            description: "invalid stream config".into(),
        };
        let cases = [
            (LogError::Timeout, Transient),
            (server, Transient),
            (LogError::Unavailable("no responders".into()), Unavailable),
            (LogError::Storage("disk".into()), Unavailable),
            (LogError::StreamNotFound("DOCS".into()), Rejected),
            (LogError::WrongLastSequence("DOCS".into()), Rejected),
            (LogError::MessageNotFound("DLQ".into()), Rejected),
            (rejected, Rejected),
            (LogError::Corrupt("bad".into()), Rejected),
            (LogError::InvalidRequest("bad request".into()), Caller),
            (LogError::ConsumerNotFound("workers".into()), Caller),
            (LogError::Closed, Caller),
            (LogError::circuit_open(Dependency::LogPublish), Unavailable),
            (LogError::timed_out(), Transient),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error:?}");
            assert_eq!(error.is_transient(), kind.is_retryable(), "{error:?}");
            assert_eq!(
                error.is_infrastructure(),
                matches!(kind, Transient | Unavailable),
                "{error:?}"
            );
        }
    }

    #[tokio::test]
    async fn caller_and_rejected_log_errors_never_open_the_breaker_unavailability_does() {
        let breaker = Breaker::new(Dependency::LogPublish, Duration::from_secs(5), &config());
        let answered = [
            LogError::InvalidRequest("subject outside the stream".into()),
            LogError::StreamNotFound("DOCS".into()),
            LogError::WrongLastSequence("DOCS".into()),
            LogError::ConsumerNotFound("workers".into()),
        ];
        // Each one more times in a row than it takes to open the breaker.
        for error in &answered {
            for _ in 0..5 {
                let returned = breaker
                    .call(async { Err::<(), _>(error.clone()) })
                    .await
                    .unwrap_err();
                assert_eq!(&returned, error);
            }
            assert_eq!(breaker.state(), BreakerState::Closed, "{error:?}");
        }
        assert!(breaker.permits_calls());

        for _ in 0..3 {
            breaker
                .call(async { Err::<(), _>(LogError::Unavailable("no responders".into())) })
                .await
                .unwrap_err();
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn opens_after_consecutive_infrastructure_failures_and_recovers() {
        let breaker = Breaker::new(Dependency::Store, Duration::from_secs(5), &config());
        for _ in 0..3 {
            assert_eq!(
                fail(&breaker, StoreError::Timeout).await,
                StoreError::Timeout
            );
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        // Open: refused without running the call.
        let ran = std::sync::atomic::AtomicBool::new(false);
        let refused = breaker
            .call(async {
                ran.store(true, Ordering::Relaxed);
                Ok::<(), StoreError>(())
            })
            .await
            .unwrap_err();
        assert!(matches!(refused, StoreError::Unavailable(_)), "{refused:?}");
        assert!(!ran.load(Ordering::Relaxed));
        assert!(!breaker.permits_calls());

        // After the open delay a probe goes through, and its success closes the breaker.
        let permitted = tokio::time::timeout(
            Duration::from_secs(5),
            breaker.wait_until_permitted(std::future::pending()),
        )
        .await
        .unwrap();
        assert!(permitted);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker
            .call(async { Ok::<(), StoreError>(()) })
            .await
            .unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn rejected_and_caller_store_errors_never_open_the_breaker() {
        let breaker = Breaker::new(Dependency::Store, Duration::from_secs(5), &config());
        for _ in 0..10 {
            fail(&breaker, StoreError::Corrupt("one record".into())).await;
            fail(&breaker, StoreError::Rejected("one write".into())).await;
            fail(&breaker, StoreError::Closed).await;
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.permits_calls());
    }

    #[tokio::test]
    async fn a_slow_call_times_out_and_counts_as_a_failure() {
        let breaker = Breaker::new(Dependency::Store, Duration::from_millis(20), &config());
        for _ in 0..3 {
            let error = breaker
                .call(async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok::<(), StoreError>(())
                })
                .await
                .unwrap_err();
            assert_eq!(error, StoreError::Timeout);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn wait_until_permitted_returns_false_when_cancelled() {
        let config = ResilienceConfig {
            breaker_open_initial: Duration::from_secs(60),
            breaker_open_max: Duration::from_secs(60),
            ..config()
        };
        let breaker = Breaker::new(Dependency::Store, Duration::from_secs(5), &config);
        for _ in 0..3 {
            fail(&breaker, StoreError::Timeout).await;
        }
        let permitted = breaker
            .wait_until_permitted(tokio::time::sleep(Duration::from_millis(50)))
            .await;
        assert!(!permitted);
    }
}
