//! Why a run could not start or finish. A breached threshold is not an error: it is a
//! verdict carried by the report (see [`crate::threshold`]).

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// A flag, scenario file or threshold expression is not valid; fix the input.
    #[error("{0}")]
    Invalid(String),
    /// The scenario file is not valid TOML for a plan.
    #[error("scenario file {path}: {source}")]
    PlanFile {
        /// The file.
        path: String,
        /// What the TOML parser said.
        source: toml::de::Error,
    },
    /// Reading or writing a local file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The target could not be reached or answered a setup request badly (before or after
    /// the measured stages; failures during a stage are counted, not raised).
    #[error("target {target}: {message}")]
    Target {
        /// The base URL.
        target: String,
        /// What went wrong.
        message: String,
    },
}
