//! A scripted remote-write backend: a real HTTP/1.1 server on loopback that answers each
//! request with the next status of a script (then `204`) and records what it received, for
//! tests of retry and drop rules that a real backend cannot be made to answer on cue.
//!
//! Bodies are kept as received (snappy-compressed protobuf); decoding them is the test's
//! business, with the product's own `wire::decode_request`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

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
}

/// The running backend; stops when dropped.
#[derive(Debug)]
pub struct WriteBackend {
    addr: SocketAddr,
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
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to bind {addr}"))?;
        let addr = listener.local_addr()?;
        let script = Arc::new(Mutex::new(Script {
            answers: script.into(),
            received: Vec::new(),
            latency: Duration::ZERO,
        }));
        let shared = script.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Ok(WriteBackend { addr, script, task })
    }

    /// The URL to write to.
    pub fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
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

async fn serve(stream: TcpStream, script: Arc<Mutex<Script>>) {
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
