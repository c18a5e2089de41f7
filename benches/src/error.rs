//! The one error type of the benchmark library. A benchmark that cannot measure fails
//! loudly with what it was doing; it never reports a figure it did not measure.

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The corpus or its schema is not what the benchmark can use.
    #[error("corpus: {reason}")]
    Corpus {
        /// What went wrong.
        reason: String,
    },
    /// Tantivy refused an operation.
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// A JetStream operation failed.
    #[error("jetstream: {0}")]
    JetStream(String),
    /// An HTTP request to sluice failed at the transport level.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// sluice answered something the benchmark cannot go on from.
    #[error("sluice: {0}")]
    Sluice(String),
}

impl BenchError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}
