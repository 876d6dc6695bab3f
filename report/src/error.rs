//! The report's one error type: every variant names the input it could not use.

use std::path::PathBuf;

/// What went wrong, naming the flag, URL, query, file or answer at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line value that cannot be used.
    #[error("failed to read --{flag} {value:?}: {reason}")]
    Argument {
        /// The flag, without dashes.
        flag: &'static str,
        /// What was given.
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The query API could not be reached or the connection failed.
    #[error("failed to reach the query API at {url}: {reason}")]
    Unreachable {
        /// The request's URL (query included).
        url: String,
        /// The transport's error, with its causes.
        reason: String,
    },
    /// The query API answered with an HTTP error status.
    #[error("failed to query {url}: HTTP {status}: {body}")]
    Status {
        /// The request's URL (query included).
        url: String,
        /// The status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The query API said the query failed (`"status": "error"`).
    #[error("the query API refused `{query}`: {error_type}: {message}")]
    Refused {
        /// The PromQL expression.
        query: String,
        /// `errorType` (bad_data, execution, timeout, ...).
        error_type: String,
        /// `error`.
        message: String,
    },
    /// An answer that is not what the Prometheus HTTP API documents.
    #[error("failed to read the answer to `{query}`: {reason}")]
    Answer {
        /// The PromQL expression.
        query: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Nothing about the cluster in the window.
    #[error(
        "no data for cluster {cluster:?} between {from} and {to}: no kube_deployment_spec_replicas \
         or kube_horizontalpodautoscaler_* series (check --cluster, --namespace and the window)"
    )]
    NoData {
        /// `--cluster`.
        cluster: String,
        /// Start of the window (RFC 3339).
        from: String,
        /// End of the window (RFC 3339).
        to: String,
    },
    /// The scenario file giving the steps' names.
    #[error("failed to read the scenario {path}: {reason}")]
    Scenario {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No usable TrueType font for the plots' text.
    #[error("failed to find a font for the plots: {reason}")]
    Font {
        /// What was tried.
        reason: String,
    },
    /// A plot could not be drawn or encoded.
    #[error("failed to draw {path}: {reason}")]
    Plot {
        /// The PNG being drawn.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// An output file or directory could not be written.
    #[error("failed to write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The report's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
