//! A userspace TCP proxy standing in for a bad link: latency (this kernel has no `tc
//! netem`), a stalled link (bytes stop flowing but no connection closes: what a dead peer
//! looks like), and a reset of every connection.
//!
//! Each direction of each connection is a reader task stamping chunks with their arrival
//! time and a writer task releasing them `delay` later, in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Default)]
struct Link {
    delay_us: AtomicU64,
    stalled: AtomicBool,
    forwarded_bytes: AtomicU64,
}

/// A proxy from a loopback port to `upstream`; dropped, it closes everything.
#[derive(Debug)]
pub struct LinkProxy {
    addr: SocketAddr,
    link: Arc<Link>,
    reset: tokio::sync::watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn start(upstream: SocketAddr) -> Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("failed to bind the proxy")?;
        let addr = listener.local_addr()?;
        let link = Arc::new(Link::default());
        let (reset, reset_rx) = tokio::sync::watch::channel(0u64);
        let accept = tokio::spawn(accept_loop(listener, upstream, link.clone(), reset_rx));
        Ok(LinkProxy {
            addr,
            link,
            reset,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One-way latency added to every byte, in both directions.
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.link.delay_us.store(us, Ordering::Relaxed);
    }

    /// Stops (`true`) or resumes (`false`) the flow of bytes without closing connections.
    pub fn stall(&self, stalled: bool) {
        self.link.stalled.store(stalled, Ordering::Relaxed);
    }

    /// Closes every open connection (new ones are still accepted).
    pub fn reset_all(&self) {
        self.reset.send_modify(|n| *n += 1);
    }

    /// Bytes forwarded so far, both directions.
    pub fn forwarded_bytes(&self) -> u64 {
        self.link.forwarded_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.reset_all();
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    link: Arc<Link>,
    reset: tokio::sync::watch::Receiver<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let link = link.clone();
        let mut reset = reset.clone();
        reset.mark_unchanged();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let mut pumps = JoinSet::new();
            pumps.spawn(pump(cr, sw, link.clone()));
            pumps.spawn(pump(sr, cw, link));
            tokio::select! {
                _ = reset.changed() => {}
                _ = pumps.join_next() => {}
            }
            // Dropping the set aborts both directions and closes both sockets.
        });
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: Arc<Link>) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            let delay = Duration::from_micros(link.delay_us.load(Ordering::Relaxed));
            tokio::time::sleep_until(at + delay).await;
            while link.stalled.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            link.forwarded_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn forwards_delays_stalls_and_resets() {
        let proxy = LinkProxy::start(echo_server().await).await.expect("proxy");
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut buf = [0u8; 5];
        c.write_all(b"hello").await.expect("write");
        c.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"hello");

        proxy.set_delay(Duration::from_millis(100));
        let t = Instant::now();
        c.write_all(b"again").await.expect("write");
        c.read_exact(&mut buf).await.expect("echo");
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "two one-way delays"
        );
        proxy.set_delay(Duration::ZERO);

        proxy.stall(true);
        c.write_all(b"stall").await.expect("write");
        let r = tokio::time::timeout(Duration::from_millis(200), c.read_exact(&mut buf)).await;
        assert!(r.is_err(), "nothing flows while stalled");
        proxy.stall(false);
        c.read_exact(&mut buf).await.expect("flows again");
        assert_eq!(&buf, b"stall");

        proxy.reset_all();
        let n = c.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "connection closed by reset");
        assert!(proxy.forwarded_bytes() >= 30);
    }
}
