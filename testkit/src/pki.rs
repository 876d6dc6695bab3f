//! A throwaway public-key infrastructure for TLS tests, generated at test time with rcgen
//! (nothing secret is committed): two unrelated CAs, a server certificate for
//! `127.0.0.1`/`localhost` signed by the first, and client certificates signed by each,
//! written as PEM files in a temporary directory that lives as long as the [`Pki`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertKey {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// A test PKI on disk.
pub struct Pki {
    dir: tempfile::TempDir,
    /// The CA that signed the server and `client` certificates.
    pub ca: PathBuf,
    /// An unrelated CA (and the issuer of `rogue_client`).
    pub other_ca: PathBuf,
    /// Server certificate for `127.0.0.1` and `localhost`, signed by `ca`.
    pub server: CertKey,
    /// The same names, signed by `other_ca` (a renewal tests can tell apart from `server`).
    pub other_server: CertKey,
    /// A client certificate for `sender-a`, signed by `ca`.
    pub client: CertKey,
    /// A client certificate for `sender-a`, signed by `other_ca`.
    pub rogue_client: CertKey,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Result<Ca> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        issuer: Issuer::new(params, key),
        pem: cert.pem(),
    })
}

/// A leaf certificate for `sans` (the first also its common name) and its key, as PEM.
fn leaf(ca: &Ca, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Result<(String, String)> {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    if let Some(name) = sans.first() {
        params.distinguished_name.push(DnType::CommonName, *name);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Pki {
    /// Generates everything into a new temporary directory.
    ///
    /// # Errors
    /// When a key or certificate cannot be generated or a file cannot be written.
    pub fn generate() -> Result<Pki> {
        let dir = tempfile::tempdir().context("failed to create the PKI directory")?;
        let write = |name: &str, pem: &str| -> Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, pem)
                .with_context(|| format!("failed to write {}", path.display()))?;
            Ok(path)
        };
        let pair = |name: &str, (cert, key): (String, String)| -> Result<CertKey> {
            Ok(CertKey {
                cert: write(&format!("{name}.crt"), &cert)?,
                key: write(&format!("{name}.key"), &key)?,
            })
        };
        let main = ca("kube-relay test CA")?;
        let other = ca("some other CA")?;
        let server = pair(
            "server",
            leaf(
                &main,
                &["127.0.0.1", "localhost"],
                ExtendedKeyUsagePurpose::ServerAuth,
            )?,
        )?;
        let other_server = pair(
            "other-server",
            leaf(
                &other,
                &["127.0.0.1", "localhost"],
                ExtendedKeyUsagePurpose::ServerAuth,
            )?,
        )?;
        let client = pair(
            "client",
            leaf(&main, &["sender-a"], ExtendedKeyUsagePurpose::ClientAuth)?,
        )?;
        let rogue_client = pair(
            "rogue",
            leaf(&other, &["sender-a"], ExtendedKeyUsagePurpose::ClientAuth)?,
        )?;
        Ok(Pki {
            ca: write("ca.crt", &main.pem)?,
            other_ca: write("other-ca.crt", &other.pem)?,
            server,
            other_server,
            client,
            rogue_client,
            dir,
        })
    }

    /// The directory holding the files (free for a test's other files too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Replaces `dst` with a copy of `src` the way a Kubernetes Secret update does: a new file
/// renamed over the old one, so a reader sees either version whole.
///
/// # Panics
/// When the copy or the rename fails (a test set-up error).
pub fn swap_in(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("new");
    std::fs::copy(src, &tmp)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), tmp.display()));
    std::fs::rename(&tmp, dst)
        .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), dst.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pem_files_that_name_their_contents() {
        let pki = Pki::generate().expect("PKI");
        for path in [&pki.ca, &pki.other_ca, &pki.server.cert, &pki.client.cert] {
            let pem = std::fs::read_to_string(path).expect("read");
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        }
        let key = std::fs::read_to_string(&pki.server.key).expect("read");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        assert_ne!(
            std::fs::read(&pki.ca).expect("ca"),
            std::fs::read(&pki.other_ca).expect("other ca"),
            "two distinct CAs"
        );
        assert!(pki.ca.starts_with(pki.dir()));
    }
}
