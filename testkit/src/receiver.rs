//! The real receiver running in the test's own runtime on loopback ports, for the
//! receiver's and the sender's tests alike: bound with any [`ReceiverConfig`] (TLS, tokens,
//! remote write), its store at hand, stopped and awaited on [`RunningReceiver::stop`],
//! cancelled when dropped.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube_relay_receiver::{Receiver, ReceiverConfig, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http;

/// How long [`RunningReceiver::metrics_until`] and [`RunningReceiver::stop`] wait.
pub const RECEIVER_WAIT: Duration = Duration::from_secs(10);

/// A receiver running in this process.
pub struct RunningReceiver {
    /// Where senders connect.
    pub ingest: SocketAddr,
    /// Its HTTP address (`/metrics`, `/`).
    pub http: SocketAddr,
    /// Its store.
    pub store: Store,
    /// Cancelling it stops the receiver.
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<kube_relay_receiver::Result<()>>>,
}

impl RunningReceiver {
    /// Binds a receiver with `config` (use [`ReceiverConfig::loopback`] as the base) and
    /// runs it.
    ///
    /// # Errors
    /// When the receiver cannot bind or load its configuration.
    pub async fn start(config: ReceiverConfig) -> Result<RunningReceiver> {
        let receiver = Receiver::bind(config)
            .await
            .context("failed to bind the receiver")?;
        let (ingest, http) = (receiver.ingest_addr(), receiver.http_addr());
        let store = receiver.store().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(receiver.run(shutdown.clone()));
        Ok(RunningReceiver {
            ingest,
            http,
            store,
            shutdown,
            task: Some(task),
        })
    }

    /// A receiver with the loopback defaults.
    ///
    /// # Errors
    /// As [`RunningReceiver::start`].
    pub async fn loopback() -> Result<RunningReceiver> {
        RunningReceiver::start(ReceiverConfig::loopback()).await
    }

    /// `GET /metrics` as Prometheus text.
    ///
    /// # Errors
    /// When the request fails or is not answered 200.
    pub async fn metrics(&self) -> Result<String> {
        metrics_text(self.http).await
    }

    /// Polls `/metrics` until `pred` holds, returning that exposition.
    ///
    /// # Errors
    /// When `pred` does not hold within [`RECEIVER_WAIT`].
    pub async fn metrics_until(&self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        crate::wait_until(what, RECEIVER_WAIT, Duration::from_millis(20), || async {
            let text = self.metrics().await?;
            Ok(pred(&text).then_some(text))
        })
        .await
    }

    /// Cancels the receiver and waits for it to stop.
    ///
    /// # Errors
    /// When it does not stop within [`RECEIVER_WAIT`] or stops with an error.
    pub async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(RECEIVER_WAIT, task)
                .await
                .context("the receiver did not stop in time")?
                .context("the receiver's task panicked")??;
        }
        Ok(())
    }
}

impl Drop for RunningReceiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `GET /metrics` from a receiver's HTTP address, as text.
///
/// # Errors
/// When the request fails or is not answered 200.
pub async fn metrics_text(http_addr: SocketAddr) -> Result<String> {
    let response = http::get(http_addr, "/metrics", &[]).await?;
    if response.status != 200 {
        bail!("GET /metrics answered {}", response.status);
    }
    Ok(response.text()?.to_owned())
}
