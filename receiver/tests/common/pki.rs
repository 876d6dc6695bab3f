//! Certificates generated at test time with rcgen (nothing secret is committed): two
//! unrelated CAs, a server certificate for `127.0.0.1`/`localhost` signed by the first, and
//! client certificates signed by each, written as PEM files in a temporary directory.

use std::path::{Path, PathBuf};

use kube_relay_receiver::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A test PKI on disk.
pub struct Pki {
    dir: tempfile::TempDir,
    /// The CA that signed the server and `client` certificates.
    pub ca: PathBuf,
    /// An unrelated CA (and the issuer of `rogue_client`).
    pub other_ca: PathBuf,
    /// Server certificate and key for `127.0.0.1` and `localhost`, signed by `ca`.
    pub server: TlsFiles,
    /// A client certificate signed by `ca`.
    pub client: TlsFiles,
    /// A client certificate signed by `other_ca`.
    pub rogue_client: TlsFiles,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA certificate");
    Ca {
        issuer: Issuer::new(params, key),
        pem: cert.pem(),
    }
}

fn leaf(ca: &Ca, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// Generates everything into a new temporary directory.
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, pem: &str| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let main = ca("kube-relay test CA");
        let other = ca("some other CA");
        let pair = |name: &str, (cert, key): (String, String)| TlsFiles {
            cert: write(&format!("{name}.crt"), &cert),
            key: write(&format!("{name}.key"), &key),
        };
        let server = pair(
            "server",
            leaf(
                &main,
                "receiver",
                &["127.0.0.1", "localhost"],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
        );
        let client = pair(
            "client",
            leaf(
                &main,
                "sender-a",
                &["sender-a"],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        );
        let rogue_client = pair(
            "rogue",
            leaf(
                &other,
                "sender-a",
                &["sender-a"],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        );
        Pki {
            ca: write("ca.crt", &main.pem),
            other_ca: write("other-ca.crt", &other.pem),
            server,
            client,
            rogue_client,
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
