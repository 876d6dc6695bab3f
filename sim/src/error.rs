//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong building or driving the simulated cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario is not valid YAML or has an unknown field or a bad value; the message
    /// names the field and its line.
    #[error("failed to parse the scenario: {source}")]
    ScenarioParse {
        /// What serde_yaml reported (with the field path and line).
        #[source]
        source: serde_yaml::Error,
    },

    /// The scenario parsed but is inconsistent.
    #[error("invalid scenario: {field}: {message}")]
    ScenarioInvalid {
        /// The offending field, as a path (`hpas[0].target`).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// No built-in scenario has this name.
    #[error("failed to find a built-in scenario named `{name}` (built-ins: {known})")]
    UnknownScenario {
        /// The requested name.
        name: String,
        /// The built-in names.
        known: String,
    },

    /// Neither a built-in scenario nor a file has this name.
    #[error(
        "failed to find the scenario `{name}`: it names no built-in scenario and no file \
         (built-ins: {known})"
    )]
    NoSuchScenario {
        /// The requested name or path.
        name: String,
        /// The built-in names.
        known: String,
    },

    /// A scenario file could not be read.
    #[error("failed to read the scenario file {path}: {source}")]
    ScenarioRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// The listener's socket failed.
    #[error("failed to use the listening socket: {0}")]
    Io(#[source] io::Error),

    /// An object to act on does not exist.
    #[error("failed to find {kind} {namespace}/{name}")]
    NotFound {
        /// Kind, e.g. `pod`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },

    /// An object could not be encoded as JSON.
    #[error("failed to encode a {kind} as JSON: {source}")]
    Encode {
        /// The kind being encoded.
        kind: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// A timestamp fell outside the representable range.
    #[error("failed to compute a timestamp: {0}")]
    Time(String),
}

impl Error {
    /// A short, bounded label for this error, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ScenarioParse { .. } => "scenario_parse",
            Error::ScenarioInvalid { .. } => "scenario_invalid",
            Error::UnknownScenario { .. } | Error::NoSuchScenario { .. } => "unknown_scenario",
            Error::ScenarioRead { .. } => "scenario_read",
            Error::Io(_) => "io",
            Error::NotFound { .. } => "not_found",
            Error::Encode { .. } => "encode",
            Error::Time(_) => "time",
        }
    }
}
