//! rustls plumbing shared by the sender and the receiver (feature `tls`).
//!
//! Both sides read the same kinds of PEM files and build their rustls configurations with
//! the same `ring` provider; this module holds that common part. What each side does with
//! it (server configuration, client identity rules, classification of failed handshakes)
//! stays in its own crate. Errors are a [`TlsError`] naming the file; each crate wraps it
//! into its own error type. [`Reloadable`] holds what both build from certificate files and
//! rebuilds it when the files change, so renewed certificates need no restart.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, InvalidDnsNameError, PrivateKeyDer, ServerName};

/// What can go wrong reading TLS files or parsing a server name.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("failed to read {what} from {path}: {source}")]
    Read {
        /// What the file should hold, e.g. `CA certificate`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM reader reported.
        #[source]
        source: pem::Error,
    },

    /// A certificate file holds no PEM certificate.
    #[error("failed to read {what} from {path}: no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },

    /// A key file holds no PEM private key.
    #[error(
        "failed to read {what} from {path}: no PEM private key (-----BEGIN PRIVATE KEY-----, \
         or an RSA or EC one)"
    )]
    NoKey {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },

    /// rustls refused a certificate of a CA file as a trust anchor.
    #[error("failed to add a CA certificate from {path} to the trust store: {source}")]
    TrustAnchor {
        /// The CA file.
        path: PathBuf,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },

    /// A server name is neither a DNS name nor an IP address.
    #[error("{name:?} is not a valid TLS server name: {source}")]
    ServerName {
        /// The name given.
        name: String,
        /// What the parser reported.
        #[source]
        source: InvalidDnsNameError,
    },
}

/// A version of a set of files: their bytes. Modification times are not enough: a file
/// replaced by one of the same size within the file system's timestamp granularity (a
/// coarse clock, or two quick renewals) would look unchanged. Certificate files are a few
/// kilobytes and are looked at no more than once per `min_interval`, so reading them is cheap.
/// At most [`MAX_COMPARED_BYTES`] of each are compared, so a path to something endless (a
/// device, a pipe) costs bounded memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileVersion(Vec<Vec<u8>>);

/// How much of each file [`FileVersion`] compares: far more than any certificate, key or CA
/// bundle (a system-wide CA bundle is ~200 KB).
const MAX_COMPARED_BYTES: u64 = 4 << 20;

impl FileVersion {
    /// The contents of `paths`, `None` when one of them cannot be read (e.g. mid-rotation).
    fn of(paths: &[PathBuf]) -> Option<FileVersion> {
        paths
            .iter()
            .map(|path| {
                let mut bytes = Vec::new();
                std::fs::File::open(path)
                    .and_then(|f| f.take(MAX_COMPARED_BYTES).read_to_end(&mut bytes))
                    .ok()?;
                Some(bytes)
            })
            .collect::<Option<Vec<_>>>()
            .map(FileVersion)
    }
}

/// What [`Reloadable::get`] did about the files.
#[derive(Debug)]
pub enum Reloaded<E> {
    /// Nothing: the files are unchanged, unreadable (mid-rotation), already refused in this
    /// version, or were looked at less than the minimum interval ago.
    No,
    /// The files changed and the value built from them is in use from now on.
    Loaded,
    /// The files changed but the value could not be built; the previous one stays in use
    /// and this version of the files is not tried again.
    Failed(E),
}

/// A value built from files (a certificate, a TLS configuration) and rebuilt when they
/// change, looked at on use, at most once per `min_interval`.
#[derive(Debug)]
pub struct Reloadable<T> {
    paths: Vec<PathBuf>,
    min_interval: Duration,
    state: Mutex<ReloadState<T>>,
}

#[derive(Debug)]
struct ReloadState<T> {
    current: T,
    /// The files' contents when `current` was built.
    loaded: Option<FileVersion>,
    /// A version of the files that failed to build.
    refused: Option<FileVersion>,
    checked: Instant,
}

impl<T: Clone> Reloadable<T> {
    /// Builds the value from `paths` with `build`.
    ///
    /// # Errors
    /// What `build` returns.
    pub fn new<E>(
        paths: Vec<PathBuf>,
        min_interval: Duration,
        build: impl FnOnce() -> Result<T, E>,
    ) -> Result<Self, E> {
        // Read before building: a change while building shows at the next look.
        let loaded = FileVersion::of(&paths);
        let current = build()?;
        Ok(Reloadable {
            paths,
            min_interval,
            state: Mutex::new(ReloadState {
                current,
                loaded,
                refused: None,
                checked: Instant::now(),
            }),
        })
    }

    /// The value in use, without looking at the files.
    pub fn current(&self) -> T {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.current.clone()
    }

    /// The value in use, rebuilt first with `build` if the files changed since the last look.
    pub fn get<E>(&self, build: impl FnOnce() -> Result<T, E>) -> (T, Reloaded<E>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() < self.min_interval {
            return (state.current.clone(), Reloaded::No);
        }
        state.checked = Instant::now();
        let now = FileVersion::of(&self.paths);
        if now.is_none() || now == state.loaded || now == state.refused {
            return (state.current.clone(), Reloaded::No);
        }
        let reloaded = match build() {
            Ok(value) => {
                state.current = value;
                state.loaded = now;
                state.refused = None;
                Reloaded::Loaded
            }
            Err(e) => {
                state.refused = now;
                Reloaded::Failed(e)
            }
        };
        (state.current.clone(), reloaded)
    }
}

/// The crypto provider both sides use: rustls' `ring` provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every PEM certificate in `path` (`what` names the file's role in errors).
///
/// # Errors
/// [`TlsError::Read`] when the file cannot be read or parsed, [`TlsError::NoCertificate`]
/// when it holds no certificate.
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in `path`.
///
/// # Errors
/// [`TlsError::Read`] when the file cannot be read or parsed, [`TlsError::NoKey`] when it
/// holds no key.
pub fn read_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey {
            what,
            path: path.to_owned(),
        },
        source => TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        },
    })
}

/// A trust store holding the CA certificate(s) in `path` and nothing else.
///
/// # Errors
/// As [`read_certs`] (`what` is `CA certificate`), and [`TlsError::TrustAnchor`] when rustls
/// refuses one of the certificates.
pub fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("CA certificate", path)? {
        roots.add(cert).map_err(|source| TlsError::TrustAnchor {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// The host part of `HOST:PORT` (`[v6]:port` brackets removed).
pub fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Parses a server name: a DNS name or an IP address, taken as given.
///
/// # Errors
/// [`TlsError::ServerName`] when `name` is neither.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|source| TlsError::ServerName {
        name: name.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the file's content, refusing content that starts with "bad".
    fn build_from(path: &Path) -> Result<String, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        if text.starts_with("bad") {
            Err(format!("refused {text}"))
        } else {
            Ok(text)
        }
    }

    /// Replaces `path` with `text` the way a Secret update does (rename over).
    fn swap(path: &Path, text: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    #[test]
    fn a_reloadable_follows_its_file_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cert");
        swap(&path, "one");
        let value = Reloadable::new(vec![path.clone()], Duration::ZERO, || build_from(&path))
            .expect("built");
        let calls = std::cell::Cell::new(0);
        let get = || {
            value.get(|| {
                calls.set(calls.get() + 1);
                build_from(&path)
            })
        };
        assert!(matches!(get(), (v, Reloaded::No) if v == "one"));
        assert_eq!(calls.get(), 0, "unchanged files are not read");

        // Same size and, as on a file system with a coarse clock, the same modification
        // time: still a new version.
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        swap(&path, "two");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(modified))
            .expect("set mtime");
        assert!(matches!(get(), (v, Reloaded::Loaded) if v == "two"));
        assert!(matches!(get(), (v, Reloaded::No) if v == "two"));

        swap(&path, "bad three");
        assert!(
            matches!(get(), (v, Reloaded::Failed(e)) if v == "two" && e == "refused bad three")
        );
        assert!(matches!(get(), (v, Reloaded::No) if v == "two"));
        assert_eq!(calls.get(), 2, "a refused version is not tried again");

        std::fs::remove_file(&path).expect("remove");
        assert!(
            matches!(get(), (v, Reloaded::No) if v == "two"),
            "mid-rotation"
        );
        swap(&path, "four");
        assert!(matches!(get(), (v, Reloaded::Loaded) if v == "four"));
    }

    #[test]
    fn a_reloadable_looks_at_its_files_at_most_once_per_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cert");
        swap(&path, "one");
        let value = Reloadable::new(vec![path.clone()], Duration::from_secs(3600), || {
            build_from(&path)
        })
        .expect("built");
        swap(&path, "two");
        assert!(matches!(value.get(|| build_from(&path)), (v, Reloaded::No) if v == "one"));
    }

    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(host_of("receiver.example:9000"), "receiver.example");
        assert_eq!(host_of("127.0.0.1:9000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9000"), "::1");
        assert_eq!(host_of("receiver.example"), "receiver.example");
    }

    #[test]
    fn server_names_are_dns_names_or_ip_addresses() {
        assert!(matches!(
            server_name("receiver.example").expect("dns"),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("::1").expect("ip"),
            ServerName::IpAddress(_)
        ));
        let err = server_name("not a name").expect_err("refused");
        assert!(matches!(err, TlsError::ServerName { .. }), "{err}");
        assert!(err.to_string().contains("\"not a name\""), "{err}");
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing-ca.pem");
        let err = root_store(&missing).expect_err("missing");
        assert!(
            matches!(
                err,
                TlsError::Read {
                    what: "CA certificate",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("missing-ca.pem"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let err = read_certs("certificate chain", &garbage).expect_err("no certificate");
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");
        let err = read_key("private key", &garbage).expect_err("no key");
        assert!(
            matches!(
                err,
                TlsError::NoKey {
                    what: "private key",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("garbage.pem"), "{err}");
    }
}
