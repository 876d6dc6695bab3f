//! The sender's errors. Each variant has a bounded [`Error::kind`] for metric labels.

use std::path::{Path, PathBuf};

use kube_relay_proto::RejectReason;
use kube_relay_proto::tls::TlsError;

use crate::tls_failure::TlsFailure;

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong in the sender.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration (flags, environment, file) is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A setting could not be read (a bad flag, variable or config-file key, an unreadable
    /// config or token file; also `--help` and `--version`, which `main` prints). The
    /// message names the flag, variable or file.
    #[error(transparent)]
    Settings(#[from] kube_relay_proto::config::Error),

    /// No Kubernetes client configuration could be built (kubeconfig, context, in-cluster).
    #[error("failed to configure Kubernetes access: {0}")]
    KubeConfig(#[source] BoxError),

    /// A Kubernetes API call failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What was attempted, e.g. `list pods`.
        action: String,
        /// What kube-rs reported.
        #[source]
        source: kube::Error,
    },

    /// A state file (ledger, sender id) could not be read or written.
    #[error("failed to access state file {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// A TLS file (`--tls-ca`, `--tls-client-cert`, `--tls-client-key`) could not be used.
    #[error("failed to load the TLS {what} from {path}: {source}")]
    TlsFile {
        /// What the file should hold, e.g. `CA certificate`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What rustls reported.
        #[source]
        source: BoxError,
    },

    /// The receiver could not be reached.
    #[error("failed to connect to {target}: {source}")]
    Connect {
        /// `HOST:PORT`.
        target: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },

    /// The wire protocol failed (I/O, framing, decoding, a rule broken).
    #[error("failed to exchange frames with the receiver: {0}")]
    Protocol(#[from] kube_relay_proto::Error),

    /// The receiver refused the handshake.
    #[error("the receiver rejected the connection ({}): {message}", reason.as_label())]
    Rejected {
        /// Why.
        reason: RejectReason,
        /// The receiver's explanation.
        message: String,
    },

    /// The receiver answered something unexpected or went silent.
    #[error("failed to keep the session: {0}")]
    Session(String),
}

impl Error {
    /// A [`Error::State`] for `path`.
    pub fn state(path: &Path, source: impl Into<BoxError>) -> Self {
        Error::State {
            path: path.to_owned(),
            source: source.into(),
        }
    }

    /// A [`Error::TlsFile`]: `path` should hold `what` (e.g. `CA certificate`).
    pub fn tls_file(what: &'static str, path: &Path, source: impl Into<BoxError>) -> Self {
        Error::TlsFile {
            what,
            path: path.to_owned(),
            source: source.into(),
        }
    }

    /// A [`Error::Kube`] for `action`.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }

    /// True when retrying cannot help: an unsupported protocol version or a bad
    /// configuration. A refused token or certificate is not fatal: the operator may fix the
    /// receiver, so the link keeps retrying with backoff.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Rejected {
                reason: RejectReason::UnsupportedVersion { .. },
                ..
            } | Error::Config(_)
                | Error::Settings(_)
                | Error::TlsFile { .. }
        )
    }

    /// The TLS failure behind this error, when it is one: the connection or a later read or
    /// write failed in the TLS layer (see [`crate::tls_failure::failure`]).
    pub fn tls_failure(&self) -> Option<TlsFailure> {
        match self {
            Error::Connect { source, .. }
            | Error::Protocol(kube_relay_proto::Error::Io(source)) => {
                crate::tls_failure::failure(source)
            }
            _ => None,
        }
    }

    /// What an operator should change when retrying alone will not help: the receiver
    /// refused us for a reason it named (its `Reject`), or a TLS handshake failed. `None` for
    /// errors a retry may cure (a refused connection, a receiver shutting down).
    pub fn hint(&self) -> Option<String> {
        let Error::Rejected { reason, .. } = self else {
            return self.tls_failure().map(|f| f.hint().to_owned());
        };
        let hint = match reason {
            RejectReason::Unauthorized => {
                "the receiver refused our token: --token / --token-file must match the \
                 receiver's --token / --token-file"
                    .to_owned()
            }
            RejectReason::TlsRequired => {
                "the receiver requires TLS on its sender port: pass --tls-ca (the CA that \
                 signed the receiver's certificate)"
                    .to_owned()
            }
            RejectReason::FrameTooLarge { limit } => format!(
                "the receiver refused a frame over its --max-frame-bytes ({limit} bytes); the \
                 sender splits batches to that limit, so one series must be larger: raise \
                 --max-frame-bytes on the receiver"
            ),
            RejectReason::ProtocolViolation => {
                "the receiver says this sender broke the protocol (its reason is above); the \
                 next connection starts with a full snapshot. If it repeats, report it with \
                 both logs"
                    .to_owned()
            }
            RejectReason::ClusterInUse => {
                "another live sender reports this cluster: give each sender its own --cluster \
                 (or stop the other one)"
                    .to_owned()
            }
            RejectReason::InvalidHello => {
                "the receiver refused our Hello (its reason is above): check --cluster".to_owned()
            }
            RejectReason::Busy => {
                "the receiver is at its connection or cluster limit; it must be raised there, \
                 or other senders leave"
                    .to_owned()
            }
            RejectReason::UnsupportedVersion { .. } | RejectReason::ShuttingDown => return None,
        };
        Some(hint)
    }

    /// A short, bounded label for this error, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        if let Some(failure) = self.tls_failure() {
            return failure.as_label();
        }
        match self {
            Error::Config(_) | Error::Settings(_) => "config",
            Error::KubeConfig(_) => "kubeconfig",
            Error::Kube { source, .. } => kube_error_kind(source),
            Error::State { .. } => "state",
            Error::TlsFile { .. } => "tls_config",
            Error::Connect { .. } => "connect",
            Error::Protocol(e) => e.kind(),
            Error::Rejected { reason, .. } => reason.as_label(),
            Error::Session(_) => "session",
        }
    }
}

/// The shared TLS plumbing's errors as the sender reports them: an unusable file is an
/// [`Error::TlsFile`] naming it, an invalid server name an [`Error::Config`] pointing at
/// `--tls-server-name`.
impl From<TlsError> for Error {
    fn from(err: TlsError) -> Self {
        let (what, path, source): (_, _, BoxError) = match err {
            TlsError::Read { what, path, source } => (what, path, source.into()),
            TlsError::NoCertificate { what, path } => (
                what,
                path,
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into(),
            ),
            TlsError::NoKey { what, path } => (
                what,
                path,
                "no PEM private key (-----BEGIN PRIVATE KEY-----, or an RSA or EC one) in the \
                 file"
                    .into(),
            ),
            TlsError::TrustAnchor { path, source } => ("CA certificate", path, source.into()),
            TlsError::ServerName { name, source } => {
                return Error::Config(format!(
                    "{name:?} is not a valid TLS server name (a DNS name or an IP address; \
                     set --tls-server-name): {source}"
                ));
            }
        };
        Error::TlsFile { what, path, source }
    }
}

/// A short, bounded label for a kube-rs error: `http_<code>` buckets for API answers,
/// otherwise the failing layer.
pub fn kube_error_kind(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(status) => match status.code {
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            410 => "gone",
            429 => "throttled",
            500..=599 => "server_error",
            _ => "api_error",
        },
        // ReadEvents: the connection failed while a response body was being read.
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            "connection"
        }
        kube::Error::SerdeError(_) => "decode",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(reason: RejectReason) -> Error {
        Error::Rejected {
            reason,
            message: "the receiver's words".to_owned(),
        }
    }

    #[test]
    fn each_refusal_names_the_flag_to_change() {
        for (reason, flag) in [
            (RejectReason::Unauthorized, "--token-file"),
            (RejectReason::TlsRequired, "--tls-ca"),
            (
                RejectReason::FrameTooLarge { limit: 65536 },
                "--max-frame-bytes (65536 bytes)",
            ),
            (RejectReason::ClusterInUse, "--cluster"),
            (RejectReason::InvalidHello, "--cluster"),
            (RejectReason::ProtocolViolation, "full snapshot"),
            (RejectReason::Busy, "limit"),
        ] {
            let hint = rejected(reason.clone()).hint().expect("a hint");
            assert!(hint.contains(flag), "{reason:?}: {hint}");
        }
        assert_eq!(rejected(RejectReason::ShuttingDown).hint(), None);
        let kind = rejected(RejectReason::TlsRequired).kind();
        assert_eq!(kind, "tls_required");
    }
}
