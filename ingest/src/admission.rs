//! Overload admission: a bound on the documents accepted but not yet searchable.
//!
//! The log is on disk, so an ingest rate above what the workers and the indexes sustain
//! does not grow memory, but it grows the backlog without limit: disk, and the time until
//! accepted documents become searchable. Past `ingest.max_backlog_docs`, ingest answers
//! 429 `overloaded` with `Retry-After` before reading the request body, like
//! Elasticsearch's 429 on a full write queue or quickwit's WAL disk quota.
//!
//! The backlog is a ledger of what this node appended, in two stages:
//! - *applying*: DOCS message sequence → documents, until the workers' ack floor passes
//!   the message (workers ack only after the store write and the event append);
//! - *indexing*: then, per collection, the EVENTS head read after that floor → documents,
//!   until every index shard of the collection has acked through it (indexers ack only
//!   after commit), the same reasoning as [`crate::visibility`].
//!
//! [`Backlog::run`] advances the stages every [`REFRESH_INTERVAL`] (only while the ledger
//! is not empty, so an idle node asks the log nothing); admission reads one atomic.
//! Known limits: the ledger starts empty, so a backlog left by a previous run is not
//! counted; with several ingest nodes, each bounds what it appended itself.
//!
//! # Per-client limits
//!
//! [`ClientTable`] bounds what one client address holds: open connections
//! (`server.max_connections_per_client`, enforced at accept by [`crate::server`]) and
//! requests in flight (`server.max_in_flight_per_client`, 429 `overloaded` past it, by
//! [`limit_client_requests`]). The per-client check runs before any handler, so a client
//! sending many slow bodies holds at most its own share of the node-wide ingest permits
//! (`ingest.max_in_flight_requests`), and the minimum body rate
//! ([`crate::body::enforce_body_deadline`]) frees those within `server.body_rate_grace`
//! plus what its bytes bought. The node-wide permit is still taken before the body is
//! read: it bounds the memory of bodies being buffered (each may grow to
//! `ingest.max_body_size`), which taking it after the body arrived would not.
//! Invariant: an address has an entry exactly while it holds a connection.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::gauge;
use sluice_core::catalog::Catalog;
use sluice_core::log::{Log, LogError};
use sluice_core::metrics::INGEST_BACKLOG_DOCUMENTS;
use sluice_core::subjects::{self, StreamKind};
use sluice_core::{CollectionName, ErrorCode, Partition, Seq};
use tokio_util::sync::CancellationToken;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ack_floors::AckFloors;
use crate::error::ApiError;

/// How often the ledger follows the consumers' ack floors.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// `Retry-After` of an overloaded answer, in seconds.
const RETRY_AFTER_SECS: u64 = 1;

#[derive(Default)]
struct Ledger {
    /// DOCS message sequence → (collection, documents).
    applying: BTreeMap<Seq, (CollectionName, u64)>,
    /// Collection → EVENTS head when applied → documents.
    indexing: HashMap<CollectionName, BTreeMap<Seq, u64>>,
    applying_docs: u64,
    indexing_docs: u64,
}

/// The backlog of documents this node accepted; see the module docs.
pub struct Backlog {
    log: Arc<dyn Log>,
    floors: Arc<AckFloors>,
    catalog: Arc<Catalog>,
    limit: u64,
    ledger: Mutex<Ledger>,
    total: AtomicU64,
}

impl Backlog {
    /// A ledger bounded at `limit` documents (0: no bound), following the floors through
    /// `floors`.
    pub fn new(
        log: Arc<dyn Log>,
        floors: Arc<AckFloors>,
        catalog: Arc<Catalog>,
        limit: u64,
    ) -> Self {
        Self {
            log,
            floors,
            catalog,
            limit,
            ledger: Mutex::new(Ledger::default()),
            total: AtomicU64::new(0),
        }
    }

    /// Documents accepted and not yet searchable, as last counted.
    pub fn documents(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }

    /// Admits a write request, or refuses it with 429 while the backlog is full. A
    /// request admitted below the bound may take the backlog past it; the next ones wait.
    pub fn admit(&self) -> Result<(), ApiError> {
        if self.limit > 0 && self.documents() >= self.limit {
            return Err(ApiError::new(
                ErrorCode::Overloaded,
                "too many accepted documents are not searchable yet; retry later",
            )
            .retry_after(RETRY_AFTER_SECS));
        }
        Ok(())
    }

    /// Records a durable DOCS message of `docs` ops at `seq`.
    pub fn appended(&self, collection: &CollectionName, seq: Seq, docs: u64) {
        let mut ledger = self.lock();
        ledger.applying.insert(seq, (collection.clone(), docs));
        ledger.applying_docs += docs;
        self.publish(&ledger);
    }

    /// Follows the ack floors every [`REFRESH_INTERVAL`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REFRESH_INTERVAL) => {}
            }
            if let Err(error) = self.refresh().await {
                // Admission then works from the last count, which only errs on the side
                // of refusing; the next round tries again.
                tracing::debug!(%error, "cannot follow the backlog");
            }
        }
    }

    /// Moves what the workers applied to the indexing stage and drops what every shard
    /// made searchable.
    pub async fn refresh(&self) -> Result<(), LogError> {
        if self.lock().applying.is_empty() {
            return self.refresh_indexing().await;
        }
        let floor = self
            .floors
            .current(StreamKind::Docs, subjects::WORKERS_CONSUMER)
            .await?;
        if let Some(floor) = floor {
            // Read after the floor: the events of every message at or below it are at
            // or below this head.
            let events_head = self.log.last_seq(StreamKind::Events).await?;
            let mut ledger = self.lock();
            let pending = ledger.applying.split_off(&Seq(floor.0.saturating_add(1)));
            let applied = std::mem::replace(&mut ledger.applying, pending);
            for (collection, docs) in applied.into_values() {
                ledger.applying_docs -= docs;
                ledger.indexing_docs += docs;
                *ledger
                    .indexing
                    .entry(collection)
                    .or_default()
                    .entry(events_head)
                    .or_default() += docs;
            }
            self.publish(&ledger);
        }
        self.refresh_indexing().await
    }

    async fn refresh_indexing(&self) -> Result<(), LogError> {
        let waiting: Vec<CollectionName> = self.lock().indexing.keys().cloned().collect();
        for collection in waiting {
            let floor = match self.catalog.get(&collection) {
                Some(meta) => {
                    let mut min = Seq(u64::MAX);
                    for shard in 0..meta.shards() {
                        let consumer = subjects::indexer_consumer(&collection, Partition(shard));
                        // A shard consumer not there yet has made nothing searchable.
                        let floor = self
                            .floors
                            .current(StreamKind::Events, &consumer)
                            .await?
                            .unwrap_or_default();
                        min = min.min(floor);
                    }
                    min
                }
                // A deleted collection will never be indexed; nothing waits for it.
                None => Seq(u64::MAX),
            };
            let mut ledger = self.lock();
            let Some(heads) = ledger.indexing.get_mut(&collection) else {
                continue;
            };
            let pending = heads.split_off(&Seq(floor.0.saturating_add(1)));
            let searchable: u64 = std::mem::replace(heads, pending).into_values().sum();
            if heads.is_empty() {
                ledger.indexing.remove(&collection);
            }
            ledger.indexing_docs -= searchable;
            self.publish(&ledger);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // Every update leaves the ledger consistent, so a poisoned lock is still usable.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, ledger: &Ledger) {
        self.total.store(
            ledger.applying_docs + ledger.indexing_docs,
            Ordering::Release,
        );
        gauge!(INGEST_BACKLOG_DOCUMENTS, "stage" => "applying").set(ledger.applying_docs as f64);
        gauge!(INGEST_BACKLOG_DOCUMENTS, "stage" => "indexing").set(ledger.indexing_docs as f64);
    }
}

/// What one client address holds now.
#[derive(Default)]
struct ClientUsage {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
}

/// Connections and requests in flight per client address; see the module docs.
pub struct ClientTable {
    max_connections: usize,
    max_in_flight: usize,
    clients: Mutex<HashMap<IpAddr, Arc<ClientUsage>>>,
}

/// One open connection of a client; dropping it releases the connection's share.
/// Requests on the connection carry it (as a request extension) to
/// [`limit_client_requests`].
#[derive(Clone)]
pub struct ClientConnection {
    inner: Arc<ConnectionSlot>,
}

struct ConnectionSlot {
    table: Arc<ClientTable>,
    address: IpAddr,
    usage: Arc<ClientUsage>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut clients = self.table.lock();
        if self.usage.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            clients.remove(&self.address);
        }
    }
}

/// One request in flight of a client; dropping it releases the request's share.
struct RequestSlot(Arc<ClientUsage>);

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClientTable {
    /// A table allowing each address `max_connections` connections and `max_in_flight`
    /// requests in flight.
    pub fn new(max_connections: usize, max_in_flight: usize) -> Arc<Self> {
        Arc::new(Self {
            max_connections,
            max_in_flight,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a new connection from `address`, or `None` when the address already holds
    /// its maximum. IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn open(self: &Arc<Self>, address: IpAddr) -> Option<ClientConnection> {
        let address = address.to_canonical();
        let mut clients = self.lock();
        let usage = clients.entry(address).or_default().clone();
        if usage.connections.load(Ordering::Acquire) >= self.max_connections {
            return None;
        }
        usage.connections.fetch_add(1, Ordering::AcqRel);
        drop(clients);
        Some(ClientConnection {
            inner: Arc::new(ConnectionSlot {
                table: self.clone(),
                address,
                usage,
            }),
        })
    }

    /// Addresses holding at least one connection.
    pub fn clients(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Arc<ClientUsage>>> {
        // Updates are single map operations, so a poisoned lock is still consistent.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientConnection {
    fn begin_request(&self) -> Option<RequestSlot> {
        let slot = &self.inner;
        let usage = &slot.usage;
        let admitted = usage
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < slot.table.max_in_flight).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| RequestSlot(usage.clone()))
    }
}

/// Middleware: a request of a client already at `server.max_in_flight_per_client`
/// answers 429 `overloaded` with `Retry-After`, before any handler (or body read) runs.
/// Requests without a [`ClientConnection`] (served without [`crate::serve`]) pass.
pub async fn limit_client_requests(request: Request, next: Next) -> Response {
    let Some(connection) = request.extensions().get::<ClientConnection>().cloned() else {
        return next.run(request).await;
    };
    let Some(_slot) = connection.begin_request() else {
        let mut response = ApiError::new(
            ErrorCode::Overloaded,
            "this client address has too many requests in flight; retry later",
        )
        .retry_after(RETRY_AFTER_SECS)
        .into_response();
        // The body is never read: the connection cannot carry another request.
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return response;
    };
    next.run(request).await
}

#[cfg(test)]
mod client_tests {
    use super::*;

    #[test]
    fn connections_and_requests_are_bounded_per_address() {
        let table = ClientTable::new(2, 1);
        let attacker: IpAddr = "127.0.0.2".parse().unwrap();
        let producer: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let first = table.open(attacker).expect("first connection");
        let second = table.open(attacker).expect("second connection");
        assert!(table.open(attacker).is_none(), "a third is refused");
        // Another address is not affected by the first one's use.
        let other = table.open(producer).expect("another address");
        assert_eq!(table.clients(), 2);

        let request = first.begin_request().expect("one request in flight");
        assert!(
            second.begin_request().is_none(),
            "the address is at its bound"
        );
        assert!(other.begin_request().is_some());
        drop(request);
        assert!(
            second.begin_request().is_some(),
            "released with the request"
        );

        drop(first);
        assert!(
            table.open(attacker).is_some(),
            "released with the connection"
        );
        drop(second);
        drop(other);
        assert_eq!(table.clients(), 0, "entries go with the last connection");
    }
}
