//! Errors of the indexer: start-up failures ([`IndexerError`]), search failures
//! ([`SearchError`], with the stable code users see) and the internal failures of one
//! shard ([`ShardError`]), which the consume loops log and retry rather than surface.

use sluice_core::log::LogError;
use sluice_core::resilience::{Classify, ErrorKind};
use sluice_core::store::StoreError;

pub use sluice_core::search::SearchError;

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

impl From<ShardError> for SearchError {
    fn from(e: ShardError) -> Self {
        SearchError::Internal(e.to_string())
    }
}

/// An unexpected failure while searching (a Tantivy or I/O error), as a [`SearchError`].
pub(crate) fn internal(error: impl std::fmt::Display) -> SearchError {
    SearchError::Internal(error.to_string())
}
