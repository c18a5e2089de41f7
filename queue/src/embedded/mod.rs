//! The embedded durable log: JetStream's guarantees in one process, on fjall.
//!
//! Layout:
//! - [`storage`]: the two fjall databases, recovery, read/purge/delete and truncation.
//! - [`group_commit`]: the committer thread that makes appends durable in groups.
//! - [`consumer`]: durable consumers shared by name, deliveries, acks and redelivery.
//! - [`retention`]: the background thread truncating what every consumer acked.
//! - [`codec`]: byte layouts of everything stored.
//!
//! Concurrency model: appends travel through a bounded channel to a single committer
//! thread; truncation runs on a retention thread; every other storage operation runs on
//! tokio's blocking pool, so async workers never wait on the disk. Dropping the last
//! [`Arc<EmbeddedLog>`] closes the append channel, joins the committer once it has
//! answered every queued append, then stops and joins the retention thread; consumer
//! handles keep the storage open until they are dropped too (the log directory is
//! locked until then, so reopen only after dropping them).
//!
//! Retention: a stream's messages at or below the minimum ack floor of its consumers are
//! truncated in the background after acks and consumer deletions; a stream without
//! consumers keeps everything until purged.

mod codec;
mod consumer;
mod group_commit;
mod retention;
mod storage;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use async_trait::async_trait;
use sluice_core::config::LogConfig;
use sluice_core::log::{Consumer, ConsumerConfig, Log, LogError, OutgoingMessage, StoredMessage};
use sluice_core::metrics::LOG_APPEND_DURATION_SECONDS;
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;
use tokio::sync::{mpsc, oneshot};

use self::consumer::{blocking, ConsumerGroup, EmbeddedConsumer};
use self::group_commit::{wall_clock_ms, AppendRequest, Committer, DedupIndex, MSG_ID_WINDOW};
use self::retention::RetentionWork;
use self::storage::{lock, storage_error, Shared};

/// The embedded durable log (see the module documentation).
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    appends: Option<mpsc::Sender<AppendRequest>>,
    /// `None` only while dropping.
    committer: Option<JoinHandle<()>>,
    /// `None` only while dropping.
    retention: Option<JoinHandle<()>>,
}

impl EmbeddedLog {
    /// Opens (creating) the log under `dir`; recovers consumer positions.
    pub fn open(dir: &Path, config: &LogConfig) -> Result<Arc<EmbeddedLog>, LogError> {
        let (retention_requests, retention_work) = std::sync::mpsc::sync_channel(1);
        let recovered = Shared::open(
            dir,
            config.ack_wait,
            DedupIndex::new(MSG_ID_WINDOW),
            wall_clock_ms(),
            retention_requests,
        )?;
        let retention = retention::spawn(Arc::clone(&recovered.shared), retention_work)
            .map_err(storage_error)?;
        let (appends, requests) = mpsc::channel(config.max_pending_appends.max(1));
        let committer = Committer::new(Arc::clone(&recovered.shared), requests, recovered.dedup);
        let committer = match std::thread::Builder::new()
            .name("sluice-log-commit".to_owned())
            .spawn(move || committer.run())
        {
            Ok(committer) => committer,
            Err(error) => {
                let _ = recovered.shared.retention.send(RetentionWork::Stop);
                let _ = retention.join();
                return Err(storage_error(error));
            }
        };
        // Truncate whatever recovered consumers had acked before the restart.
        recovered.shared.request_truncation();
        Ok(Arc::new(EmbeddedLog {
            shared: recovered.shared,
            appends: Some(appends),
            committer: Some(committer),
            retention: Some(retention),
        }))
    }

    /// How many group commits reached the disk since this log was opened (one fsync each).
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        // Closing the channel ends the committer's loop once the queue is drained; joining
        // makes sure its handle on the databases is gone when the drop returns.
        self.appends.take();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
        // A blocking send: it waits for a queued run to be taken, then the thread exits.
        let _ = self.shared.retention.send(RetentionWork::Stop);
        if let Some(retention) = self.retention.take() {
            let _ = retention.join();
        }
    }
}

#[async_trait]
impl Log for EmbeddedLog {
    async fn append(
        &self,
        stream: StreamKind,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<Seq>, LogError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let appends = self.appends.as_ref().ok_or(LogError::Closed)?;
        let (reply, answer) = oneshot::channel();
        appends
            .send(AppendRequest {
                stream,
                messages,
                reply,
            })
            .await
            .map_err(|_| LogError::Closed)?;
        let seqs = answer.await.map_err(|_| LogError::Closed)??;
        metrics::histogram!(LOG_APPEND_DURATION_SECONDS, "stream" => stream.name())
            .record(started.elapsed().as_secs_f64());
        Ok(seqs)
    }

    async fn consumer(
        &self,
        stream: StreamKind,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, LogError> {
        let shared = Arc::clone(&self.shared);
        let group = blocking(move || {
            let mut registry = lock(&shared.registry);
            let key = (stream, config.durable_name.clone());
            if let Some(group) = registry.get(&key) {
                let group = Arc::clone(group);
                drop(registry);
                group.reconfigure(&shared, &config)?;
                return Ok(group);
            }
            let group = ConsumerGroup::create(&shared, stream, &config)?;
            registry.insert(key, Arc::clone(&group));
            Ok(group)
        })
        .await?;
        Ok(Box::new(EmbeddedConsumer::new(
            Arc::clone(&self.shared),
            group,
        )))
    }

    async fn ack_floor(
        &self,
        stream: StreamKind,
        durable_name: &str,
    ) -> Result<Option<Seq>, LogError> {
        Ok(lock(&self.shared.registry)
            .get(&(stream, durable_name.to_owned()))
            .map(|group| Seq(group.ack_floor())))
    }

    async fn last_seq(&self, stream: StreamKind) -> Result<Seq, LogError> {
        Ok(Seq(self
            .shared
            .stream(stream)
            .last_seq
            .load(Ordering::Acquire)))
    }

    async fn read(
        &self,
        stream: StreamKind,
        filter: &str,
        from: Seq,
        max: usize,
    ) -> Result<Vec<StoredMessage>, LogError> {
        let shared = Arc::clone(&self.shared);
        let filter = filter.to_owned();
        blocking(move || shared.read(stream, &filter, from.0, max)).await
    }

    async fn purge(&self, stream: StreamKind, filter: &str) -> Result<u64, LogError> {
        let shared = Arc::clone(&self.shared);
        let filter = filter.to_owned();
        blocking(move || shared.purge(stream, &filter)).await
    }

    async fn delete_message(&self, stream: StreamKind, seq: Seq) -> Result<bool, LogError> {
        let shared = Arc::clone(&self.shared);
        blocking(move || shared.delete_message(stream, seq.0)).await
    }

    async fn delete_consumer(
        &self,
        stream: StreamKind,
        durable_name: &str,
    ) -> Result<(), LogError> {
        let shared = Arc::clone(&self.shared);
        let name = durable_name.to_owned();
        blocking(move || {
            let group = lock(&shared.registry)
                .remove(&(stream, name.clone()))
                .ok_or(LogError::ConsumerNotFound(name))?;
            group.delete(&shared)?;
            // The deleted consumer may have been the one holding truncation back.
            shared.request_truncation();
            Ok(())
        })
        .await
    }
}
