//! The client side of TLS for tests that dial a receiver: the rustls configuration a sender
//! builds from the same PEM files (trust a CA, optionally present a client certificate).
//! Test code only, so the receiver's production modules hold none of it; the real sender
//! builds its own (`kube_relay_sender::tls`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use kube_relay_proto::tls;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::pki::CertKey;

/// Trusts the CA in `ca` (PEM, one or more certificates) and, for mutual TLS, presents
/// `identity`.
///
/// # Errors
/// When a file cannot be read or holds no usable PEM (the error names the file), or rustls
/// refuses the setup (a key that does not fit its certificate).
pub fn client_config(ca: &Path, identity: Option<&CertKey>) -> Result<Arc<ClientConfig>> {
    let roots = tls::root_store(ca)?;
    let builder = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .context("failed to choose TLS versions")?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => builder
            .with_client_auth_cert(
                tls::read_certs("certificate chain", &pair.cert)?,
                tls::read_key("private key", &pair.key)?,
            )
            .context("failed to use the client certificate")?,
    };
    Ok(Arc::new(config))
}

/// The name a test client checks a loopback receiver's certificate against (the test PKI
/// issues server certificates for `127.0.0.1`).
pub fn loopback_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").expect("write");
        let err = client_config(&empty, None).expect_err("no certificate");
        assert!(format!("{err:#}").contains("empty.pem"), "{err:#}");
        let missing = dir.path().join("missing.pem");
        let err = client_config(&missing, None).expect_err("missing");
        assert!(format!("{err:#}").contains("missing.pem"), "{err:#}");
    }
}
