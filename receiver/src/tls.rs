//! TLS for the ingest port and the HTTP port (rustls with the `ring` provider).
//!
//! - [`server_config`] loads a PEM certificate chain and key and, for mutual TLS, a CA whose
//!   signature every client certificate must carry. TLS 1.2 and 1.3 only, rustls' safe
//!   defaults.
//! - [`HandshakeFailure`] classifies a failed handshake into a bounded metric label.
//!
//! The server certificate and key are reloaded when their files change (looked at, at most
//! once a second, by the next handshake), so a renewed certificate (cert-manager, a rotated
//! Kubernetes Secret) reaches new connections without a restart; files that fail to load
//! are logged and the previous certificate stays in use. The client CA (mutual TLS) is
//! reloaded the same way, when a client presents its certificate.
//!
//! The handshake runs inside each connection's task, under the handshake timeout, so a slow
//! or hostile client never blocks the accept loop. Nothing of the kube-relay protocol is read
//! before the handshake (and, under mutual TLS, the client certificate check) succeeds.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube_relay_proto::tls::{self, Reloadable, Reloaded};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tracing::{error, info};

use crate::metrics::Metrics;
use crate::{Error, Result};

/// First byte of every TLS connection: a handshake record (`ContentType::Handshake`).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first (`--tls-cert`, `--http-tls-cert`).
    pub cert: PathBuf,
    /// Private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`--tls-key`, `--http-tls-key`).
    pub key: PathBuf,
}

/// Builds a server configuration from `files`; with `client_ca`, clients must present a
/// certificate signed by that CA (mutual TLS). `alpn` lists the application protocols to
/// offer (e.g. `http/1.1`), empty for none. Reloads of changed files are counted in
/// `metrics` (`relay_receiver_tls_reloads_total{port=what}`) when given.
///
/// # Errors
/// [`Error::Pem`] when a file cannot be read or holds no certificate or key,
/// [`Error::ClientCa`] for an unusable CA, [`Error::Tls`] when the key does not fit the
/// certificate or rustls refuses the setup.
pub fn server_config(
    what: &'static str,
    files: &TlsFiles,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
    metrics: Option<Arc<Metrics>>,
) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls { what, source })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(Arc::new(ReloadingClientCa::load(
            what,
            path,
            metrics.clone(),
        )?)),
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(ReloadingCert::load(what, files, metrics)?));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if client_ca.is_some() {
        // A resumed session skips the client certificate check: after the client CA is
        // rotated away from a sender's issuer, that sender could keep resuming. Senders
        // reconnect rarely, so every connection gets a full handshake instead.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

/// How often a handshake may look at the certificate files for a change.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The server's certificate, reloaded when its files change.
#[derive(Debug)]
struct ReloadingCert {
    what: &'static str,
    files: TlsFiles,
    metrics: Option<Arc<Metrics>>,
    key: Reloadable<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    fn load(what: &'static str, files: &TlsFiles, metrics: Option<Arc<Metrics>>) -> Result<Self> {
        if let Some(metrics) = &metrics {
            metrics.tls_reloads_start(what);
        }
        let key = Reloadable::new(
            vec![files.cert.clone(), files.key.clone()],
            CERT_CHECK_INTERVAL,
            || certified_key(what, files),
        )?;
        Ok(ReloadingCert {
            what,
            files: files.clone(),
            metrics,
            key,
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (key, reloaded) = self.key.get(|| certified_key(self.what, &self.files));
        report_reload(
            self.what,
            &self.files.cert,
            "certificate",
            reloaded,
            self.metrics.as_deref(),
        );
        Some(key)
    }
}

/// Logs and counts what a look at changed certificate files did (`kind` names what they
/// hold, e.g. `certificate`).
fn report_reload(
    what: &'static str,
    file: &Path,
    kind: &'static str,
    reloaded: Reloaded<Error>,
    metrics: Option<&Metrics>,
) {
    let loaded = match reloaded {
        Reloaded::No => return,
        Reloaded::Loaded => {
            info!(port = what, file = %file.display(),
                  "{kind} files changed; new connections use the new {kind}");
            true
        }
        Reloaded::Failed(e) => {
            error!(port = what, cause = %e,
                   "{kind} files changed but cannot be used; keeping the previous {kind} \
                    until they are fixed");
            false
        }
    };
    if let Some(metrics) = metrics {
        metrics.tls_reload(what, loaded);
    }
}

/// The check of client certificates (mutual TLS), rebuilt when the client CA file changes,
/// so a CA rotation (a bundle holding the old and the new CA, later the new one alone)
/// needs no restart. Looked at, at most once a second, when a client presents a
/// certificate; a CA file that fails to load leaves the previous check in use.
#[derive(Debug)]
struct ReloadingClientCa {
    what: &'static str,
    path: PathBuf,
    metrics: Option<Arc<Metrics>>,
    verifier: Reloadable<Arc<dyn ClientCertVerifier>>,
}

impl ReloadingClientCa {
    fn load(what: &'static str, path: &Path, metrics: Option<Arc<Metrics>>) -> Result<Self> {
        let verifier = Reloadable::new(vec![path.to_owned()], CERT_CHECK_INTERVAL, || {
            client_verifier(path)
        })?;
        Ok(ReloadingClientCa {
            what,
            path: path.to_owned(),
            metrics,
            verifier,
        })
    }
}

/// A verifier accepting client certificates signed by a CA in `path`.
fn client_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>> {
    let roots = Arc::new(tls::root_store(path)?);
    WebPkiClientVerifier::builder_with_provider(roots, tls::provider())
        .build()
        .map_err(|source| Error::ClientCa {
            path: path.to_owned(),
            source,
        })
}

impl ClientCertVerifier for ReloadingClientCa {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No CA names are sent to the client (allowed by TLS 1.2 and 1.3: it may then present
    /// any certificate). The names would have to outlive a reload; the sender presents its
    /// one certificate either way.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let (verifier, reloaded) = self.verifier.get(|| client_verifier(&self.path));
        report_reload(
            self.what,
            &self.path,
            "client CA",
            reloaded,
            self.metrics.as_deref(),
        );
        verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier
            .current()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier
            .current()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier.current().supported_verify_schemes()
    }
}

/// Reads a certificate chain and its key and checks that they belong together.
fn certified_key(what: &'static str, files: &TlsFiles) -> Result<Arc<CertifiedKey>> {
    let chain = tls::read_certs("certificate chain", &files.cert)?;
    let key = tls::read_key("private key", &files.key)?;
    CertifiedKey::from_der(chain, key, &tls::provider())
        .map(Arc::new)
        .map_err(|source| Error::Tls { what, source })
}

/// Why a TLS handshake failed, as a bounded label for
/// `relay_receiver_auth_failures_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client spoke something other than TLS (for example a plain-TCP sender).
    NotTls,
    /// Mutual TLS: the client presented no certificate, or one not signed by the client CA
    /// (or expired, or otherwise invalid).
    ClientCertificate,
    /// The client aborted with an alert: usually it does not trust the receiver's
    /// certificate (wrong CA, wrong server name).
    PeerAlert,
    /// Anything else: no common protocol version or cipher suite, a malformed message, the
    /// connection closed mid-handshake.
    Other,
}

impl HandshakeFailure {
    /// Classifies the error tokio-rustls returned from `accept`.
    pub fn classify(err: &io::Error) -> Self {
        let Some(tls) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return HandshakeFailure::Other;
        };
        match tls {
            rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertificate(_)
            | rustls::Error::InvalidCertRevocationList(_) => HandshakeFailure::ClientCertificate,
            rustls::Error::AlertReceived(_) => HandshakeFailure::PeerAlert,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                HandshakeFailure::NotTls
            }
            _ => HandshakeFailure::Other,
        }
    }

    /// The metric label.
    pub fn as_label(self) -> &'static str {
        match self {
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::ClientCertificate => "client_certificate",
            HandshakeFailure::PeerAlert => "tls_alert",
            HandshakeFailure::Other => "tls",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_errors_map_to_bounded_labels() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cases = [
            (
                wrap(rustls::Error::NoCertificatesPresented),
                "client_certificate",
            ),
            (
                wrap(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                "client_certificate",
            ),
            (
                wrap(rustls::Error::AlertReceived(
                    rustls::AlertDescription::UnknownCA,
                )),
                "tls_alert",
            ),
            (
                wrap(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                "not_tls",
            ),
            (
                io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"),
                "tls",
            ),
        ];
        for (err, label) in cases {
            assert_eq!(HandshakeFailure::classify(&err).as_label(), label, "{err}");
        }
    }

    #[test]
    fn missing_files_name_the_file() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let err = server_config("ingest", &files, None, &[], None).expect_err("missing");
        assert!(matches!(err, Error::Pem { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
