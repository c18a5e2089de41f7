//! The three JetStream streams sluice keeps, and their idempotent set-up.
//!
//! Retention, and why:
//! - DOCS uses *interest* retention. Its one real reader is the shared `workers`
//!   durable consumer (filter `sluice.docs.>`), so a message is removed once the
//!   workers acked it and DOCS does not grow forever. WorkQueue retention is not used:
//!   it refuses a second consumer whose filter overlaps (so no replay or inspection
//!   consumer could ever be added), and on 2.9 it cannot be combined with several
//!   filtered consumers at all. Interest retention has one trap: a message published
//!   while no consumer's filter matches it is dropped at once, although the publish is
//!   acknowledged. [`ensure_workers_interest`] closes it by creating the `workers`
//!   consumer at connect when it does not exist yet (the workers' own settings replace
//!   the placeholder ones when they open it). Extra filtered consumers on DOCS only add
//!   interest: a message stays until every consumer whose filter matches it acked it.
//! - EVENTS uses *limits* retention (`events_max_age`, `events_max_bytes`): it is the
//!   change stream, kept for replay by new indexer shards and other subscribers, with
//!   any number of filtered consumers; acks do not remove anything.
//! - DLQ uses limits retention without limits: dead letters stay until purged.
//!
//! Every stream uses file storage, the configured replica count and duplicate window.
//! Creating is "update, else create", so a second process or a restart finds the same
//! streams; an incompatible existing stream (e.g. other retention) is an error.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use sluice_core::log::LogError;
use sluice_core::subjects::{self, StreamKind};

use super::errors::{api_error, driver_error};
use super::JetStreamConfig;

/// Ack wait of the `workers` consumer until the workers open it with their own.
const PLACEHOLDER_ACK_WAIT: Duration = Duration::from_secs(30);
/// Max ack pending of the `workers` consumer until the workers open it with their own.
const PLACEHOLDER_MAX_ACK_PENDING: i64 = 256;

/// The JetStream configuration of `stream`.
pub(crate) fn stream_config(stream: StreamKind, config: &JetStreamConfig) -> Config {
    let base = Config {
        name: stream.name().to_owned(),
        subjects: vec![stream.all_subjects().to_owned()],
        storage: StorageType::File,
        num_replicas: config.replicas.max(1),
        duplicate_window: config.duplicate_window,
        discard: DiscardPolicy::Old,
        ..Config::default()
    };
    match stream {
        StreamKind::Docs => Config {
            description: Some("sluice: accepted document ops, read by workers".to_owned()),
            retention: RetentionPolicy::Interest,
            ..base
        },
        StreamKind::Events => Config {
            description: Some("sluice: applied changes, kept for replay".to_owned()),
            retention: RetentionPolicy::Limits,
            max_age: config.events_max_age,
            max_bytes: config.events_max_bytes,
            ..base
        },
        StreamKind::Dlq => Config {
            description: Some("sluice: ops that could not be applied".to_owned()),
            retention: RetentionPolicy::Limits,
            ..base
        },
    }
}

/// Creates or updates every stream.
pub(crate) async fn ensure_streams(
    context: &Context,
    config: &JetStreamConfig,
) -> Result<(), LogError> {
    for stream in StreamKind::ALL {
        context
            .create_or_update_stream(stream_config(stream, config))
            .await
            .map_err(|error| {
                use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
                let what = format!("create or update stream {}", stream.name());
                match error.kind() {
                    Kind::TimedOut => LogError::Timeout,
                    Kind::JetStream(api) => api_error(&what, &api),
                    Kind::JetStreamUnavailable => {
                        LogError::Unavailable(format!("{what}: JetStream unavailable: {error}"))
                    }
                    Kind::EmptyStreamName | Kind::InvalidStreamName => {
                        LogError::InvalidRequest(format!("{what}: {error}"))
                    }
                    _ => driver_error(&what, &error),
                }
            })?;
    }
    Ok(())
}

/// The consumer configuration sluice uses for every durable consumer.
pub(crate) fn durable_config(
    name: &str,
    filter_subject: &str,
    ack_wait: Duration,
    max_ack_pending: i64,
) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: filter_subject.to_owned(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait,
        max_ack_pending,
        // Workers enforce their own limit from `delivery_count` and dead-letter the op.
        max_deliver: -1,
        ..pull::Config::default()
    }
}

/// Creates the `workers` consumer on DOCS when it does not exist (see the module docs).
pub(crate) async fn ensure_workers_interest(log: &super::JetStreamLog) -> Result<(), LogError> {
    let name = subjects::WORKERS_CONSUMER;
    match log.consumer_info(StreamKind::Docs, name).await {
        Ok(_) => Ok(()),
        Err(LogError::ConsumerNotFound(_)) => log
            .create_consumer(
                StreamKind::Docs,
                durable_config(
                    name,
                    StreamKind::Docs.all_subjects(),
                    PLACEHOLDER_ACK_WAIT,
                    PLACEHOLDER_MAX_ACK_PENDING,
                ),
            )
            .await
            .map(|_| ()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_keep_interest_events_and_dlq_keep_limits() {
        let config = JetStreamConfig {
            replicas: 3,
            events_max_bytes: 1 << 30,
            ..JetStreamConfig::default()
        };
        let docs = stream_config(StreamKind::Docs, &config);
        assert_eq!(docs.retention, RetentionPolicy::Interest);
        assert_eq!(docs.subjects, vec!["sluice.docs.>".to_owned()]);
        let events = stream_config(StreamKind::Events, &config);
        assert_eq!(events.retention, RetentionPolicy::Limits);
        assert_eq!(events.max_age, config.events_max_age);
        assert_eq!(events.max_bytes, 1 << 30);
        let dlq = stream_config(StreamKind::Dlq, &config);
        assert_eq!(dlq.retention, RetentionPolicy::Limits);
        assert_eq!(
            dlq.max_age,
            Duration::ZERO,
            "dead letters stay until purged"
        );
        for stream in [docs, events, dlq] {
            assert_eq!(stream.storage, StorageType::File);
            assert_eq!(stream.num_replicas, 3);
            assert_eq!(stream.duplicate_window, config.duplicate_window);
        }
    }

    #[test]
    fn durable_consumers_ack_explicitly_and_never_give_up() {
        let config = durable_config("workers", "sluice.docs.>", Duration::from_secs(5), 64);
        assert_eq!(config.durable_name.as_deref(), Some("workers"));
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        assert_eq!(config.deliver_policy, DeliverPolicy::All);
        assert_eq!(config.max_deliver, -1);
        assert_eq!(config.max_ack_pending, 64);
    }
}
