//! One follower per consumer ack floor, shared by everything on this node that waits on
//! or reads one: `wait=searchable` and read-your-writes ([`crate::visibility`]) and the
//! backlog behind admission control ([`crate::admission`]).
//!
//! A floor is followed only while somebody holds a receiver of it: the first
//! [`AckFloors::subscribe`] of a (stream, consumer) starts a task that reads the floor
//! from the log every [`POLL_INTERVAL`] and publishes it on a `tokio::sync::watch`
//! channel; it stops (and forgets the floor) once its last receiver is gone. A hundred
//! requests waiting on the same shard therefore cost one read of the log per interval,
//! not a hundred, and each waiter wakes as soon as the floor it needs is published.
//!
//! A failed read is published too (the last error), so waiters give up with the log's
//! error instead of waiting for their deadline; the follower keeps reading, and the next
//! success replaces it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sluice_core::log::{Log, LogError};
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a followed floor is read from the log.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// What the follower last read of one floor.
#[derive(Clone, Debug, PartialEq)]
pub enum Floor {
    /// Not read yet.
    Unknown,
    /// The consumer's ack floor; `None` while the consumer does not exist (it has acked
    /// nothing).
    Read(Option<Seq>),
    /// The last read failed.
    Failed(LogError),
}

type Key = (StreamKind, String);

/// The node's followed floors.
pub struct AckFloors {
    log: Arc<dyn Log>,
    followed: Mutex<HashMap<Key, watch::Sender<Floor>>>,
    /// Followers started so far.
    started: AtomicUsize,
}

impl AckFloors {
    /// Floors of `log`'s consumers.
    pub fn new(log: Arc<dyn Log>) -> Arc<Self> {
        Arc::new(Self {
            log,
            followed: Mutex::new(HashMap::new()),
            started: AtomicUsize::new(0),
        })
    }

    /// A receiver of the floor of `consumer` on `stream`, followed for as long as a
    /// receiver of it lives.
    pub fn subscribe(
        self: &Arc<Self>,
        stream: StreamKind,
        consumer: &str,
    ) -> watch::Receiver<Floor> {
        let key = (stream, consumer.to_owned());
        let mut followed = self.lock();
        if let Some(sender) = followed.get(&key) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Floor::Unknown);
        followed.insert(key.clone(), sender.clone());
        drop(followed);
        self.started.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(Arc::clone(self).follow(key, sender));
        receiver
    }

    /// The floor now (read once if nobody follows it yet).
    pub async fn current(
        self: &Arc<Self>,
        stream: StreamKind,
        consumer: &str,
    ) -> Result<Option<Seq>, LogError> {
        let mut floor = self.subscribe(stream, consumer);
        let read = floor
            .wait_for(|floor| *floor != Floor::Unknown)
            .await
            .map(|floor| floor.clone())
            .unwrap_or(Floor::Unknown);
        match read {
            Floor::Read(seq) => Ok(seq),
            Floor::Failed(error) => Err(error),
            Floor::Unknown => Err(LogError::Closed),
        }
    }

    /// Waits until the floor reaches `target`. `Ok(false)` when `deadline` passes first;
    /// the log's error when reading the floor fails.
    pub async fn wait_until(
        self: &Arc<Self>,
        stream: StreamKind,
        consumer: &str,
        target: Seq,
        deadline: Instant,
    ) -> Result<bool, LogError> {
        let mut floor = self.subscribe(stream, consumer);
        let reached = async {
            floor
                .wait_for(|floor| match floor {
                    Floor::Read(Some(seq)) => *seq >= target,
                    Floor::Failed(_) => true,
                    Floor::Read(None) | Floor::Unknown => false,
                })
                .await
                .map(|floor| floor.clone())
        };
        match tokio::time::timeout_at(deadline, reached).await {
            Err(_elapsed) => Ok(false),
            Ok(Err(_closed)) => Err(LogError::Closed),
            Ok(Ok(Floor::Failed(error))) => Err(error),
            Ok(Ok(_)) => Ok(true),
        }
    }

    /// Reads the floor into `sender` every [`POLL_INTERVAL`] until no receiver is left.
    async fn follow(self: Arc<Self>, key: Key, sender: watch::Sender<Floor>) {
        loop {
            let read = match self.log.ack_floor(key.0, &key.1).await {
                Ok(floor) => Floor::Read(floor),
                Err(error) => Floor::Failed(error),
            };
            sender.send_if_modified(|current| {
                let changed = *current != read;
                *current = read;
                changed
            });
            tokio::time::sleep(POLL_INTERVAL).await;
            // Checked under the lock that `subscribe` takes, so a receiver is never
            // handed out by a follower that is about to stop.
            let mut followed = self.lock();
            if sender.receiver_count() == 0 {
                followed.remove(&key);
                return;
            }
        }
    }

    /// Floors followed now.
    #[cfg(test)]
    fn followed(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Sender<Floor>>> {
        // The map is only ever left consistent (one insert or remove at a time).
        self.followed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use sluice_core::config::LogConfig;
    use sluice_core::log::{ConsumerConfig, OutgoingMessage};
    use sluice_core::{subjects, CollectionName, Partition};
    use sluice_queue::EmbeddedLog;

    const CONSUMER: &str = "floor-test";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_share_one_follower_which_stops_when_they_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> =
            EmbeddedLog::open(&dir.path().join("log"), &LogConfig::default()).unwrap();
        let subject = subjects::docs(&CollectionName::new("c").unwrap(), Partition(0));
        let consumer = log
            .consumer(
                StreamKind::Docs,
                ConsumerConfig {
                    durable_name: CONSUMER.to_owned(),
                    filter_subject: subject.clone(),
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 10,
                },
            )
            .await
            .unwrap();
        let seq = log
            .append(
                StreamKind::Docs,
                vec![OutgoingMessage {
                    subject,
                    msg_id: "m1".to_owned(),
                    payload: Bytes::from_static(b"x"),
                }],
            )
            .await
            .unwrap()[0];

        let floors = AckFloors::new(log.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let floors = Arc::clone(&floors);
                tokio::spawn(async move {
                    floors
                        .wait_until(StreamKind::Docs, CONSUMER, seq, deadline)
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(floors.followed(), 1, "one floor followed");
        assert_eq!(
            floors.started.load(Ordering::Relaxed),
            1,
            "one follower for the hundred waiters"
        );
        assert!(
            waiters.iter().all(|waiter| !waiter.is_finished()),
            "nothing is acked yet"
        );

        let delivered = consumer.fetch(1, Duration::from_secs(5)).await.unwrap();
        consumer.ack(&delivered).await.unwrap();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Ok(true));
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while floors.followed() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the follower stops once nobody waits");
        assert_eq!(
            floors.current(StreamKind::Docs, CONSUMER).await,
            Ok(Some(seq))
        );
    }

    #[tokio::test]
    async fn a_wait_ends_at_its_deadline_and_an_absent_consumer_has_acked_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> =
            EmbeddedLog::open(&dir.path().join("log"), &LogConfig::default()).unwrap();
        let floors = AckFloors::new(log);
        assert_eq!(floors.current(StreamKind::Events, "absent").await, Ok(None));
        let deadline = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            floors
                .wait_until(StreamKind::Events, "absent", Seq(1), deadline)
                .await,
            Ok(false)
        );
    }
}
