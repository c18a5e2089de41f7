//! Errors of the indexer: start-up failures ([`IndexerError`]), search failures
//! ([`SearchError`], with the stable code users see) and the internal failures of one
//! shard ([`ShardError`]), which the consume loops log and retry rather than surface.

use sluice_core::log::LogError;
use sluice_core::resilience::{Classify, ErrorKind};
use sluice_core::store::StoreError;
use sluice_core::ErrorCode;

/// Why [`crate::Indexer::start`] (or opening a collection's shards) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexerError {
    /// The index directory could not be created, listed or removed.
    #[error("index directory {path}: {source}")]
    Io {
        /// The directory involved.
        path: std::path::PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A shard's Tantivy index could not be opened, written or committed.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// Scanning the store to (re)build an index failed.
    #[error("rebuilding from the store: {0}")]
    Store(#[from] StoreError),
    /// The log refused an operation on a shard's consumer.
    #[error("log: {0}")]
    Log(#[from] LogError),
}

/// A failure of one shard's Tantivy index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// Tantivy reported an error (I/O, corrupt index, writer killed).
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// Reading postings failed.
    #[error("index i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task running the operation panicked or was cancelled.
    #[error("shard task failed: {0}")]
    Task(String),
    /// A commit took longer than `resilience.index_commit_timeout` (it still ran to the
    /// end: a commit cannot be abandoned half-way).
    #[error("index commit timed out")]
    Timeout,
}

/// For the `index_commit` breaker: a shard failure is the index's own (local storage),
/// like the store's and the log's storage failures.
impl Classify for ShardError {
    fn kind(&self) -> ErrorKind {
        match self {
            ShardError::Tantivy(_) | ShardError::Io(_) => ErrorKind::Unavailable,
            ShardError::Task(_) | ShardError::Timeout => ErrorKind::Transient,
        }
    }
}

impl From<tantivy::directory::error::OpenDirectoryError> for ShardError {
    fn from(e: tantivy::directory::error::OpenDirectoryError) -> Self {
        ShardError::Tantivy(e.into())
    }
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The request cannot be run as asked (bad syntax, unknown or unsortable field, window
    /// too large); the message says what to change.
    #[error("{0}")]
    InvalidQuery(String),
    /// The query text is longer, or a query or filter nested deeper, than the limits
    /// allow (`indexer.max_query_length`, `indexer.max_query_depth`); the message names
    /// the limit.
    #[error("{0}")]
    QueryTooComplex(String),
    /// No such collection.
    #[error("collection not found")]
    CollectionNotFound,
    /// The collection's index is not ready (still building); retry later.
    #[error("index unavailable: {0}")]
    Unavailable(String),
    /// An unexpected failure while searching; details are logged.
    #[error("search failed: {0}")]
    Internal(String),
}

impl SearchError {
    /// The code users see.
    pub fn code(&self) -> ErrorCode {
        match self {
            SearchError::InvalidQuery(_) => ErrorCode::InvalidQuery,
            SearchError::QueryTooComplex(_) => ErrorCode::QueryTooComplex,
            SearchError::CollectionNotFound => ErrorCode::CollectionNotFound,
            SearchError::Unavailable(_) => ErrorCode::Unavailable,
            SearchError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<ShardError> for SearchError {
    fn from(e: ShardError) -> Self {
        SearchError::Internal(e.to_string())
    }
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        SearchError::Internal(e.to_string())
    }
}
