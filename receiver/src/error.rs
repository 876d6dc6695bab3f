//! The receiver's error type: one enum, "failed to …" messages, sources kept, and a bounded
//! [`Error::kind`] for metric labels.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use kube_relay_proto::tls::TlsError;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the receiver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("failed to bind {what} listener on {addr}")]
    Bind {
        /// Which listener (`ingest` or `http`).
        what: &'static str,
        /// Requested address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// The configuration is invalid: values that parse but cannot work together.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A setting could not be read (a bad flag, variable or config-file key, an unreadable
    /// config, token or password file; also `--help` and `--version`, which `main` prints).
    /// The message names the flag, variable or file.
    #[error(transparent)]
    Settings(#[from] kube_relay_proto::config::Error),

    /// A certificate, key or CA file could not be read, or held nothing of the kind.
    #[error("failed to read the {what} from {path}")]
    Pem {
        /// What the file should hold (`certificate chain`, `private key`, `CA certificate`).
        what: &'static str,
        /// Path given.
        path: PathBuf,
        /// What the PEM reader said.
        #[source]
        source: rustls::pki_types::pem::Error,
    },

    /// A certificate, key or CA file holds no PEM block of its kind (a DER file, a key
    /// given as the certificate, ...).
    #[error("failed to read the {what} from {path}: the file holds no {expected}")]
    NoPem {
        /// What the file should hold (`certificate chain`, `private key`, `CA certificate`).
        what: &'static str,
        /// Path given.
        path: PathBuf,
        /// The PEM block expected.
        expected: &'static str,
    },

    /// rustls refused a TLS setup (a key that does not fit its certificate, ...).
    #[error("failed to set up TLS ({what})")]
    Tls {
        /// Which setup (`ingest`, `http`, `client`, `CA`).
        what: &'static str,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },

    /// The client CA for mutual TLS is unusable.
    #[error("failed to build the client certificate verifier from {path}")]
    ClientCa {
        /// Path given.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },

    /// A client failed the TLS handshake (or, under mutual TLS, the certificate check).
    #[error("failed to complete the TLS handshake ({kind})")]
    TlsHandshake {
        /// Bounded label (see `tls::HandshakeFailure::as_label`).
        kind: &'static str,
        /// What tokio-rustls reported.
        #[source]
        source: io::Error,
    },

    /// The wire protocol failed: framing, decoding or a rule violation.
    #[error("failed to read the sender's stream: {0}")]
    Protocol(#[from] kube_relay_proto::Error),

    /// A peer started a TLS handshake on a port configured for plain TCP.
    #[error(
        "failed to read a Hello: the peer started a TLS handshake, but this port is plain TCP \
         (set --tls-cert and --tls-key here, or turn TLS off on the sender)"
    )]
    UnexpectedTls,

    /// The sender sent nothing (or no complete `Hello`) within the handshake timeout.
    #[error("failed to complete the handshake within {0:?}")]
    HandshakeTimeout(std::time::Duration),

    /// The sender was silent for longer than the idle timeout (3 heartbeat intervals).
    #[error("failed to hear from the sender for {0:?} (idle timeout)")]
    IdleTimeout(std::time::Duration),

    /// A remote-write queue directory could not be opened or its thread started.
    #[error("failed to open the remote-write queue in {path}")]
    Queue {
        /// The queue directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// The handshake was refused; the sender was told why.
    #[error("failed the handshake: {reason}: {message}")]
    Rejected {
        /// Bounded reason label (see `RejectReason::as_label`).
        reason: &'static str,
        /// What the sender was told.
        message: String,
    },
}

impl Error {
    /// A short, bounded label for this error, fit for a metric label or a log field.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Bind { .. } => "bind",
            Error::Config(_) => "config",
            Error::Settings(_) => "config",
            Error::Pem { .. } | Error::NoPem { .. } => "pem",
            Error::Tls { .. } => "tls_setup",
            Error::ClientCa { .. } => "client_ca",
            Error::TlsHandshake { kind, .. } => kind,
            Error::Protocol(e) => e.kind(),
            Error::UnexpectedTls => "unexpected_tls",
            Error::HandshakeTimeout(_) => "handshake_timeout",
            Error::IdleTimeout(_) => "idle_timeout",
            Error::Rejected { reason, .. } => reason,
            Error::Queue { .. } => "queue",
        }
    }
}

/// The shared TLS plumbing's errors as the receiver reports them: an unusable file is an
/// [`Error::Pem`] naming it, a CA rustls refuses an [`Error::Tls`] (`CA`), an invalid server
/// name an [`Error::Config`].
impl From<TlsError> for Error {
    fn from(err: TlsError) -> Self {
        match err {
            TlsError::Read { what, path, source } => Error::Pem { what, path, source },
            TlsError::NoCertificate { what, path } => Error::NoPem {
                what,
                path,
                expected: "PEM certificate (-----BEGIN CERTIFICATE-----)",
            },
            TlsError::NoKey { what, path } => Error::NoPem {
                what,
                path,
                expected: "PEM private key (-----BEGIN PRIVATE KEY-----, or an RSA or EC one)",
            },
            TlsError::TrustAnchor { source, .. } => Error::Tls { what: "CA", source },
            err @ TlsError::ServerName { .. } => Error::Config(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_errors_keep_the_proto_kind() {
        let err = Error::from(kube_relay_proto::Error::FrameTooLarge { len: 9, max: 1 });
        assert_eq!(err.kind(), "frame_too_large");
        assert!(err.to_string().starts_with("failed to"), "{err}");
    }
}
