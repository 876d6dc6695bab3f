//! A scripted remote-write backend: a real HTTP/1.1 server on loopback that answers each
//! request with the next status of a script (then `204`) and records what it received, for
//! tests of retry and drop rules that a real backend cannot be made to answer on cue.
//!
//! It also serves HTTPS ([`WriteBackend::start_tls`]), optionally requiring a client
//! certificate, so tests can prove what a client's TLS settings put on the wire.
//!
//! Bodies are kept as received (snappy-compressed protobuf); decoding them is the test's
//! business, with the product's own `wire::decode_request`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use kube_relay_proto::tls;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::pki::CertKey;

/// One answer of the script: status, extra headers, body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Extra response headers (e.g. `Retry-After`).
    pub headers: Vec<(String, String)>,
    /// Response body (the backend's message).
    pub body: String,
}

impl Answer {
    /// `status` with a body naming it.
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: format!("scripted answer {status}"),
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
    /// Whether the client presented a certificate (always false over plain HTTP; over TLS
    /// requiring one, the certificate chained to the required CA).
    pub client_certificate: bool,
}

impl Received {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Script {
    answers: VecDeque<Answer>,
    received: Vec<Received>,
    /// How long every answer takes (a backend slower than the load).
    latency: Duration,
    /// TLS handshakes that failed (no or a wrong client certificate, an untrusted server).
    failed_handshakes: u64,
}

/// The running backend; stops when dropped.
#[derive(Debug)]
pub struct WriteBackend {
    addr: SocketAddr,
    scheme: &'static str,
    script: Arc<Mutex<Script>>,
    task: JoinHandle<()>,
}

impl WriteBackend {
    /// Starts the backend answering `script` in order, then `204` to everything.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(script: Vec<Answer>) -> Result<WriteBackend> {
        Self::start_at(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), script).await
    }

    /// [`WriteBackend::start`] on a given address (a backend coming back where it was).
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn start_at(addr: SocketAddr, script: Vec<Answer>) -> Result<WriteBackend> {
        Self::listen(addr, script, None).await
    }

    /// [`WriteBackend::start`] over HTTPS with the certificate `server`; with `client_ca`,
    /// every client must present a certificate chaining to it (mutual TLS), else the
    /// handshake fails and is counted ([`WriteBackend::failed_handshakes`]).
    ///
    /// # Errors
    /// When the PEM files are unusable or no loopback port can be bound.
    pub async fn start_tls(
        script: Vec<Answer>,
        server: &CertKey,
        client_ca: Option<&Path>,
    ) -> Result<WriteBackend> {
        let builder = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .context("failed to choose TLS versions")?;
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(
                    Arc::new(tls::root_store(ca)?),
                    tls::provider(),
                )
                .build()
                .context("failed to build the client certificate verifier")?,
            ),
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(
                tls::read_certs("server certificate", &server.cert)?,
                tls::read_key("server key", &server.key)?,
            )
            .context("failed to use the server certificate")?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Self::listen(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            script,
            Some(acceptor),
        )
        .await
    }

    async fn listen(
        addr: SocketAddr,
        script: Vec<Answer>,
        acceptor: Option<TlsAcceptor>,
    ) -> Result<WriteBackend> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to bind {addr}"))?;
        let addr = listener.local_addr()?;
        let script = Arc::new(Mutex::new(Script {
            answers: script.into(),
            received: Vec::new(),
            latency: Duration::ZERO,
            failed_handshakes: 0,
        }));
        let shared = script.clone();
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = shared.clone();
                match acceptor.clone() {
                    None => {
                        tokio::spawn(serve(stream, false, script));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            match acceptor.accept(stream).await {
                                Ok(stream) => {
                                    let certified =
                                        stream.get_ref().1.peer_certificates().is_some();
                                    serve(stream, certified, script).await;
                                }
                                Err(_) => {
                                    if let Ok(mut s) = script.lock() {
                                        s.failed_handshakes += 1;
                                    }
                                }
                            }
                        });
                    }
                }
            }
        });
        Ok(WriteBackend {
            addr,
            scheme,
            script,
            task,
        })
    }

    /// The URL to write to (`https` for [`WriteBackend::start_tls`]).
    pub fn url(&self) -> String {
        format!("{}://{}/api/v1/write", self.scheme, self.addr)
    }

    /// TLS handshakes that failed so far.
    pub fn failed_handshakes(&self) -> u64 {
        self.script.lock().map(|s| s.failed_handshakes).unwrap_or(0)
    }

    /// Makes every later answer wait `latency` after its request arrived, as a backend
    /// slower than the load does (for tests of resharding).
    pub fn set_latency(&self, latency: Duration) {
        if let Ok(mut s) = self.script.lock() {
            s.latency = latency;
        }
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.script
            .lock()
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }
}

impl Drop for WriteBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    client_certificate: bool,
    script: Arc<Mutex<Script>>,
) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if stream.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                if k == "content-length" {
                    length = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let (answer, latency) = {
            let Ok(mut s) = script.lock() else { return };
            let answer = s.answers.pop_front().unwrap_or_else(|| Answer {
                status: 204,
                headers: Vec::new(),
                body: String::new(),
            });
            s.received.push(Received {
                headers,
                body,
                status: answer.status,
                client_certificate,
            });
            (answer, s.latency)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut response = format!(
            "HTTP/1.1 {} Scripted\r\ncontent-length: {}\r\n",
            answer.status,
            answer.body.len()
        );
        for (k, v) in &answer.headers {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&answer.body);
        if stream
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}
