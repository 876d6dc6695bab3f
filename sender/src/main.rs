//! `sender`: parses the configuration, sets up logging and Kubernetes access, and runs a
//! [`Sender`] until SIGTERM or Ctrl-C.

use anyhow::{Context, Result};
use kube_relay_sender::config::defaults;
use kube_relay_sender::kubeclient::{self, cluster_name_from_context};
use kube_relay_sender::{Config, Sender, malloc, simulate, telemetry, tls};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

fn main() -> Result<()> {
    // Before any thread exists: glibc reads its tunables only at start-up.
    let malloc = malloc::tune_and_reexec();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?
        .block_on(run(malloc))
}

async fn run(malloc: &'static str) -> Result<()> {
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    tracing::debug!(malloc, "allocator settings");
    // TLS files are read now: a bad one stops the start-up with its name.
    let connector = tls::connector(&config)?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;

    // Keeps the simulated cluster (if any) alive while the sender runs.
    let mut simulated = None;
    let (client, cluster) = match &config.simulate {
        Some(scenario) => {
            let sim = simulate::start(scenario).await?;
            let client = sim.client.clone();
            simulated = Some(sim);
            let cluster = config
                .cluster
                .clone()
                .unwrap_or_else(|| defaults::SIMULATED_CLUSTER.to_owned());
            (client, cluster)
        }
        None => {
            let access = kubeclient::connect(&config).await?;
            let cluster = match (&config.cluster, &access.context) {
                (Some(cluster), _) => cluster.clone(),
                (None, Some(context)) => cluster_name_from_context(context),
                (None, None) => anyhow::bail!(
                    "--cluster (KUBE_RELAY_CLUSTER) is required in-cluster: \
                     there is no kube context to name it after"
                ),
            };
            (access.client, cluster)
        }
    };
    // Start-up file work (directory locks, the ledger, the spool's recovery) off the runtime.
    let sender = tokio::task::spawn_blocking(move || {
        Sender::new(config, client, cluster).map_err(anyhow::Error::from)
    })
    .await
    .context("the start-up task failed")??;
    let result = sender.run_with(connector, shutdown).await;
    if let Some(sim) = simulated {
        sim.sim.shutdown().await;
    }
    if let Err(e) = &result {
        error!(cause = %e, "sender failed");
    }
    result.context("the sender stopped with an error")
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
fn spawn_signal_handler(shutdown: CancellationToken) -> Result<()> {
    let mut term =
        signal(SignalKind::terminate()).context("failed to install a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("failed to install a SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down");
        shutdown.cancel();
    });
    Ok(())
}
