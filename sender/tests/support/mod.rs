//! Test support for the sender's integration tests.
//!
//! - [`metrics_text`]: the receiver's `/metrics` as text;
//! - [`CutProxy`]: a loopback TCP proxy whose live connections can be cut on demand (a link
//!   failure without restarting either end).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// `GET /metrics` from the receiver's HTTP address, as text.
pub async fn metrics_text(http: SocketAddr) -> Result<String> {
    let response = kube_relay_testkit::http::get(http, "/metrics", &[]).await?;
    if response.status != 200 {
        bail!("GET /metrics: {}", response.status);
    }
    Ok(response.text()?.to_owned())
}

/// A TCP proxy on `127.0.0.1:0` forwarding to one upstream; [`CutProxy::cut`] aborts every
/// connection it carries (new ones are still accepted).
pub struct CutProxy {
    addr: SocketAddr,
    live: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl CutProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let live = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        tokio::spawn({
            let live = Arc::clone(&live);
            let stop = stop.clone();
            async move {
                loop {
                    let accepted = tokio::select! {
                        () = stop.cancelled() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((mut client, _)) = accepted else {
                        continue;
                    };
                    let cut = live.lock().expect("lock").clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            () = cut.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        }
                    });
                }
            }
        });
        CutProxy { addr, live, stop }
    }

    /// Where senders connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Aborts every connection carried so far.
    pub fn cut(&self) {
        let mut live = self.live.lock().expect("lock");
        live.cancel();
        *live = CancellationToken::new();
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.live.lock().map(|l| l.cancel()).ok();
    }
}
