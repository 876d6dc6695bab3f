//! TLS failures as bounded labels: why a handshake with the receiver failed, and what an
//! operator should check. A leaf (rustls and `std::io` only), so the crate's [`Error`] can
//! classify itself without depending on the TLS transport.
//!
//! A failed handshake is an I/O error carrying a [`HandshakeError`] that names the CA file
//! and the server name; [`failure_kind`] turns it (or a TLS alert read later, as TLS 1.3
//! delivers a refused client certificate) into a label for
//! `relay_sender_connect_errors_total{kind}`: `tls_certificate` (we do not trust the
//! receiver's certificate), `tls_refused` (the receiver aborted the handshake, e.g. it wants
//! a client certificate we lack or do not trust ours), `tls_plain_receiver` (it answered
//! with bytes that are no TLS record: its port is plain TCP, and a kube-relay receiver says
//! so in plain framing), `tls` (anything else).
//!
//! [`Error`]: crate::Error

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a TLS handshake with the receiver failed, as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// We refused the receiver's certificate: not signed by `--tls-ca`, not valid for the
    /// server name, expired, or otherwise invalid.
    Certificate,
    /// The receiver aborted the handshake with an alert: usually it requires a client
    /// certificate we did not present, or does not trust the one we did.
    Refused,
    /// The receiver answered with bytes that are no TLS record: its sender port is plain TCP
    /// (a kube-relay receiver without `--tls-cert` answers a TLS client in plain framing).
    PlainReceiver,
    /// Anything else: the receiver closed the connection mid-handshake (a plain-TCP port),
    /// no common protocol version, a malformed message.
    Other,
}

impl TlsFailure {
    /// Classifies an error rustls reported.
    pub fn classify(err: &rustls::Error) -> Self {
        match err {
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                TlsFailure::Certificate
            }
            rustls::Error::AlertReceived(_) => TlsFailure::Refused,
            rustls::Error::InvalidMessage(_) => TlsFailure::PlainReceiver,
            _ => TlsFailure::Other,
        }
    }

    /// The `kind` label.
    pub fn as_label(self) -> &'static str {
        match self {
            TlsFailure::Certificate => "tls_certificate",
            TlsFailure::Refused => "tls_refused",
            TlsFailure::PlainReceiver => "tls_plain_receiver",
            TlsFailure::Other => "tls",
        }
    }

    /// What an operator should check.
    pub fn hint(self) -> &'static str {
        match self {
            TlsFailure::Certificate => {
                "the receiver's certificate must be signed by the CA in --tls-ca and valid for \
                 --tls-server-name (default: the host part of --target)"
            }
            TlsFailure::Refused => {
                "the receiver refused the TLS session: it may require a client certificate \
                 (--tls-client-cert, --tls-client-key) signed by its --tls-client-ca"
            }
            TlsFailure::PlainReceiver => {
                "the receiver's sender port speaks plain TCP: give the receiver --tls-cert and \
                 --tls-key, or remove --tls-ca here"
            }
            TlsFailure::Other => "is the receiver's sender port configured for TLS (--tls-cert)?",
        }
    }
}

/// A failed TLS handshake with the receiver, naming the CA file and the server name.
#[derive(Debug)]
pub struct HandshakeError {
    /// The classification.
    pub failure: TlsFailure,
    /// The `--tls-ca` file.
    pub ca: PathBuf,
    /// The name checked in the receiver's certificate.
    pub server_name: String,
    source: io::Error,
}

impl HandshakeError {
    /// A handshake with the receiver at `server_name`, trusting `ca`, failed with `source`.
    pub fn new(failure: TlsFailure, ca: PathBuf, server_name: String, source: io::Error) -> Self {
        HandshakeError {
            failure,
            ca,
            server_name,
            source,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failure {
            TlsFailure::Certificate => write!(
                f,
                "failed to verify the receiver's TLS certificate for server name {:?} against \
                 the CA in {}: {}",
                self.server_name,
                self.ca.display(),
                self.source
            ),
            TlsFailure::Refused => write!(
                f,
                "the receiver refused the TLS handshake (server name {:?}): {}",
                self.server_name, self.source
            ),
            TlsFailure::PlainReceiver => write!(
                f,
                "failed the TLS handshake: the receiver (server name {:?}) answered without \
                 TLS: {}",
                self.server_name, self.source
            ),
            TlsFailure::Other => write!(
                f,
                "failed the TLS handshake with the receiver (server name {:?}): {}",
                self.server_name, self.source
            ),
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The TLS failure behind an I/O error of the link, if it is one: a [`HandshakeError`] from
/// [`TlsConnector`], or an alert or certificate error rustls reported on a later read.
pub fn failure_kind(err: &io::Error) -> Option<&'static str> {
    failure(err).map(TlsFailure::as_label)
}

/// Like [`failure_kind`], the classification itself.
pub fn failure(err: &io::Error) -> Option<TlsFailure> {
    let inner = err.get_ref()?;
    if let Some(handshake) = inner.downcast_ref::<HandshakeError>() {
        return Some(handshake.failure);
    }
    inner
        .downcast_ref::<rustls::Error>()
        .map(TlsFailure::classify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_map_to_bounded_labels() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        for (err, label) in [
            (
                wrap(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                "tls_certificate",
            ),
            (
                wrap(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                )),
                "tls_certificate",
            ),
            (
                wrap(rustls::Error::AlertReceived(
                    rustls::AlertDescription::CertificateRequired,
                )),
                "tls_refused",
            ),
            (
                wrap(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                "tls_plain_receiver",
            ),
            (wrap(rustls::Error::HandshakeNotComplete), "tls"),
        ] {
            assert_eq!(failure_kind(&err), Some(label), "{err}");
        }
        assert_eq!(
            failure_kind(&io::Error::from(io::ErrorKind::ConnectionRefused)),
            None
        );
        let wrapped = io::Error::other(HandshakeError {
            failure: TlsFailure::Certificate,
            ca: PathBuf::from("/etc/kube-relay/ca.pem"),
            server_name: "receiver.example".to_owned(),
            source: wrap(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        });
        assert_eq!(failure_kind(&wrapped), Some("tls_certificate"));
        let text = wrapped.to_string();
        assert!(
            text.contains("/etc/kube-relay/ca.pem") && text.contains("receiver.example"),
            "{text}"
        );
    }
}
