//! TLS on the link to the receiver (rustls with the `ring` provider, as the receiver uses).
//!
//! `--tls-ca FILE` switches the link to TLS: [`TlsConnector`] trusts the CA certificate(s) in
//! that PEM file and nothing else (no system roots), checks each receiver's certificate
//! against `--tls-server-name` or the host part of its `--target` entry (a DNS name or an
//! IP address, which must then be in the certificate's IP SANs), and with `--tls-client-cert` and
//! `--tls-client-key` presents a client certificate for mutual TLS. The files are read at
//! start-up (a missing or malformed file is an [`Error::TlsFile`] naming it) and again before
//! a connection when they changed, so a renewed client certificate or CA is used from the
//! next connection on without a restart; changed files that fail to load are logged and the
//! previous ones stay in use.
//!
//! The TLS handshake is part of [`Connector::connect`], so it runs under the link's connect
//! timeout, and the `Hello` follows at once (the receiver's handshake deadline covers both).
//! Closing the link (`Goodbye`) shuts the TLS stream down, which sends `close_notify`.
//!
//! A failed handshake is an I/O error carrying a [`HandshakeError`] that names the CA file
//! and the server name; [`crate::tls_failure`] turns it (or a TLS alert read later, as TLS
//! 1.3 delivers a refused client certificate) into a bounded label for
//! `relay_sender_connect_errors_total{kind}`. None of these is fatal: the link keeps
//! retrying with backoff, since the operator may fix the receiver.
//!
//! [`connector`] picks TLS or plain TCP from the configuration and logs what TLS checks or,
//! without it, the [`security_warnings`] (a token in clear, or no protection at all), so the
//! binary and [`Sender::run`](crate::Sender::run) say the same.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube_relay_proto::tls::{self, Reloadable, Reloaded};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::error::Error;
use crate::tls_failure::{HandshakeError, TlsFailure, failure};
use crate::transport::{Connector, TcpConnector, Transport};

pub use kube_relay_proto::tls::host_of;

/// Builds the client configuration: trust only the CA certificate(s) in `ca` (PEM) and, for
/// mutual TLS, present `identity` (certificate chain file, key file). TLS 1.2 and 1.3,
/// rustls' safe defaults, the `ring` provider.
///
/// # Errors
/// [`Error::TlsFile`] naming the file that cannot be read, holds no certificate or key, or
/// that rustls refuses (a CA that is no CA certificate, a key that does not fit).
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, Error> {
    let roots = tls::root_store(ca)?;
    let builder = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::tls_file("CA certificate", ca, e))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = tls::read_certs("client certificate", cert)?;
            let key_der = tls::read_key("client key", key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| Error::tls_file("client key", key, e))?
        }
    };
    Ok(Arc::new(config))
}

/// Parses a server name: a DNS name or an IP address.
///
/// # Errors
/// [`Error::Config`] when `name` is neither.
pub fn server_name(name: &str) -> Result<ServerName<'static>, Error> {
    Ok(tls::server_name(name)?)
}

/// TCP to the receiver, then a TLS handshake. See the [module docs](self).
#[derive(Clone)]
pub struct TlsConnector {
    tcp: TcpConnector,
    server_name: ServerName<'static>,
    files: Arc<ClientFiles>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("target", &self.tcp.target())
            .field("server_name", &self.server_name)
            .field("ca", &self.files.ca)
            .finish_non_exhaustive()
    }
}

/// The CA and client identity files and the configuration last built from them.
struct ClientFiles {
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
    config: Reloadable<Arc<ClientConfig>>,
}

impl ClientFiles {
    fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, Error> {
        let mut paths = vec![ca.to_owned()];
        paths.extend(
            identity
                .into_iter()
                .flat_map(|(c, k)| [c.to_owned(), k.to_owned()]),
        );
        // Looked at before every connection (they are seconds apart at most).
        let config = Reloadable::new(paths, Duration::ZERO, || client_config(ca, identity))?;
        Ok(ClientFiles {
            ca: ca.to_owned(),
            identity: identity.map(|(cert, key)| (cert.to_owned(), key.to_owned())),
            config,
        })
    }

    /// The configuration for the next connection, rebuilt first if the files changed.
    fn current(&self) -> Arc<ClientConfig> {
        let identity = self
            .identity
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()));
        let (config, reloaded) = self.config.get(|| client_config(&self.ca, identity));
        match reloaded {
            Reloaded::No => {}
            Reloaded::Loaded => {
                info!(ca = %self.ca.display(), "TLS files changed; the next connections use them");
            }
            Reloaded::Failed(e) => {
                error!(cause = %e, "TLS files changed but cannot be used; keeping the previous \
                                    ones until they are fixed");
            }
        }
        config
    }
}

impl TlsConnector {
    /// A connector to `target` trusting the CA in `ca`, checking `server_name` (default: the
    /// host of `target`), presenting `identity` (certificate, key) when given.
    ///
    /// # Errors
    /// [`Error::TlsFile`] for unusable files, [`Error::Config`] for an invalid server name.
    pub fn new(
        target: impl Into<String>,
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> Result<Self, Error> {
        let target = target.into();
        let name = self::server_name(server_name.unwrap_or_else(|| host_of(&target)))?;
        Ok(TlsConnector {
            tcp: TcpConnector::new(target),
            server_name: name,
            files: Arc::new(ClientFiles::load(ca, identity)?),
        })
    }

    /// The TLS connector a (validated) configuration asks for, to its first target, `None`
    /// without `--tls-ca`.
    ///
    /// # Errors
    /// As [`TlsConnector::new`].
    pub fn from_config(config: &Config) -> Result<Option<Self>, Error> {
        let Some(ca) = &config.tls_ca else {
            return Ok(None);
        };
        // `Config::validate` already requires the certificate and the key together.
        let identity = config
            .tls_client_cert
            .as_deref()
            .zip(config.tls_client_key.as_deref());
        let first = config.targets.first().cloned().unwrap_or_default();
        TlsConnector::new(first, ca, identity, config.tls_server_name.as_deref()).map(Some)
    }

    /// A connector to another receiver, `target`, with the same CA and client identity (read
    /// once, reloaded together), checking `server_name` (default: the host of `target`).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid server name.
    pub fn to(&self, target: impl Into<String>, server_name: Option<&str>) -> Result<Self, Error> {
        let target = target.into();
        let name = self::server_name(server_name.unwrap_or_else(|| host_of(&target)))?;
        Ok(TlsConnector {
            tcp: TcpConnector::new(target),
            server_name: name,
            files: Arc::clone(&self.files),
        })
    }

    /// The name the receiver's certificate is checked against.
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    fn handshake_error(&self, source: io::Error) -> io::Error {
        let failure = failure(&source).unwrap_or(TlsFailure::Other);
        io::Error::other(HandshakeError::new(
            failure,
            self.files.ca.clone(),
            self.server_name(),
            source,
        ))
    }
}

impl Connector for TlsConnector {
    type Io = TlsStream<TcpStream>;

    async fn connect(&self) -> io::Result<Self::Io> {
        let tls = tokio_rustls::TlsConnector::from(self.files.current());
        let tcp = self.tcp.connect().await?;
        tls.connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| self.handshake_error(e))
    }

    fn target(&self) -> &str {
        self.tcp.target()
    }
}

/// Plain TCP or TLS, as configured: what the binary runs the link over.
#[derive(Debug, Clone)]
pub enum LinkConnector {
    /// Plain TCP (no `--tls-ca`).
    Plain(TcpConnector),
    /// TLS (`--tls-ca`).
    Tls(TlsConnector),
}

impl LinkConnector {
    /// True for TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, LinkConnector::Tls(_))
    }
}

impl Connector for LinkConnector {
    type Io = Box<dyn Transport>;

    async fn connect(&self) -> io::Result<Self::Io> {
        Ok(match self {
            LinkConnector::Plain(c) => Box::new(c.connect().await?),
            LinkConnector::Tls(c) => Box::new(c.connect().await?),
        })
    }

    fn target(&self) -> &str {
        match self {
            LinkConnector::Plain(c) => c.target(),
            LinkConnector::Tls(c) => c.target(),
        }
    }
}

/// The connectors `config` asks for, one per target in failover order: TLS with
/// `--tls-ca` (each checking its own host, or `--tls-server-name` for all), else plain TCP.
/// Reads the TLS files now, so a bad one stops the start-up, and logs the link's security:
/// what TLS checks, or each of the [`security_warnings`].
///
/// # Errors
/// As [`TlsConnector::new`].
pub fn connectors(config: &Config) -> Result<Vec<LinkConnector>, Error> {
    let targets = config.targets.join(",");
    Ok(match TlsConnector::from_config(config)? {
        Some(first) => {
            let mut all = Vec::with_capacity(config.targets.len());
            for target in config.targets.iter().skip(1) {
                all.push(first.to(target.clone(), config.tls_server_name.as_deref())?);
            }
            all.insert(0, first);
            for tls in &all {
                info!(
                    target = tls.target(),
                    server_name = %tls.server_name(),
                    ca = %tls.files.ca.display(),
                    client_certificate = config.tls_client_cert.is_some(),
                    token = config.token.is_some(),
                    "the link to the receiver uses TLS"
                );
            }
            all.into_iter().map(LinkConnector::Tls).collect()
        }
        None => {
            for warning in security_warnings(config) {
                warn!(target = %targets, "{warning}");
            }
            config
                .targets
                .iter()
                .map(|t| LinkConnector::Plain(TcpConnector::new(t.clone())))
                .collect()
        }
    })
}

/// What is unsafe about the link's configuration, one loud line each: a token sent over
/// plain TCP (naming the flag it came from: `--token` or `--token-file FILE`), or neither TLS
/// nor a token (anyone on the path reads the data, any receiver at the target gets it).
pub fn security_warnings(config: &Config) -> Vec<String> {
    match (config.tls_ca.is_some(), config.token.is_some()) {
        (false, true) => {
            let from = match &config.token_file {
                Some(path) => format!("the token from --token-file {}", path.display()),
                None => "the token from --token".to_owned(),
            };
            vec![format!(
                "TOKEN SENT IN CLEAR: without --tls-ca, {from} travels over plain TCP, readable \
                 and reusable by anyone on the path; set --tls-ca"
            )]
        }
        (false, false) => vec![
            "NO TLS AND NO TOKEN: the cluster's data goes over plain TCP to whatever answers at \
             --target; use this for a lab only (set --tls-ca and --token-file)"
                .to_owned(),
        ],
        (true, _) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_defaults_to_the_host_of_the_target() {
        assert_eq!(host_of("receiver.example:9000"), "receiver.example");
        assert_eq!(host_of("127.0.0.1:9000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9000"), "::1");
        assert!(matches!(
            server_name(host_of("[::1]:9000")).expect("ip"),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("receiver.example").expect("dns"),
            ServerName::DnsName(_)
        ));
        let err = server_name("not a name").expect_err("refused");
        assert!(err.to_string().contains("--tls-server-name"), "{err}");
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing-ca.pem");
        let err = client_config(&missing, None).expect_err("missing");
        assert!(err.to_string().contains("missing-ca.pem"), "{err}");
        assert!(err.to_string().contains("CA certificate"), "{err}");
        assert!(err.is_fatal());
        assert_eq!(err.kind(), "tls_config");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let err = client_config(&garbage, None).expect_err("no certificate");
        assert!(err.to_string().contains("garbage.pem"), "{err}");
    }

    #[test]
    fn unsafe_configurations_are_named() {
        let mut config = Config::new("b:9000");
        assert!(security_warnings(&config)[0].contains("NO TLS AND NO TOKEN"));
        config.token = Some("s3cret".to_owned());
        let warning = &security_warnings(&config)[0];
        assert!(warning.contains("TOKEN SENT IN CLEAR"), "{warning}");
        assert!(warning.contains("from --token "), "{warning}");
        config.token_file = Some(PathBuf::from("/run/secrets/token"));
        let warning = &security_warnings(&config)[0];
        assert!(
            warning.contains("from --token-file /run/secrets/token"),
            "names the file, not --token: {warning}"
        );
        config.tls_ca = Some(PathBuf::from("ca.pem"));
        assert!(security_warnings(&config).is_empty());
    }

    /// Log lines written while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn the_connector_logs_the_unsafe_configurations_for_library_users_too() {
        let mut config = Config::new("b:9000");
        config.token = Some("s3cret".to_owned());
        let log = logged(|| {
            connectors(&config).expect("plain");
        });
        assert!(log.contains("TOKEN SENT IN CLEAR"), "{log}");
        assert!(log.contains("b:9000"), "{log}");
    }
}
