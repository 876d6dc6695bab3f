//! `sender`: parses the configuration, sets up logging and Kubernetes access, and runs a
//! [`Sender`] until SIGTERM or Ctrl-C. Whatever stops it is said once, on stderr (through
//! the log once logging is set up), with exit status 1 (2 for a bad configuration).

use std::process::ExitCode;

use anyhow::{Context, Result};
use kube_relay_proto::config::error_chain;
use kube_relay_sender::kubeclient::{self, cluster_name_from_context};
use kube_relay_sender::{Config, Error, Sender, http, malloc, telemetry, tls};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

fn main() -> ExitCode {
    // Before any thread exists: glibc reads its tunables only at start-up.
    let malloc = malloc::tune_and_reexec();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(Error::Settings(kube_relay_proto::config::Error::CommandLine(e))) => e.exit(),
        Err(e) => {
            eprintln!("sender: {}", error_chain(causes(&e)));
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    tracing::debug!(malloc, "allocator settings");
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
        .and_then(|runtime| runtime.block_on(run(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(cause = %error_chain(e.chain()), "sender stopped");
            ExitCode::FAILURE
        }
    }
}

/// `e` and its sources, outermost first.
fn causes(e: &Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
}

async fn run(config: Config) -> Result<()> {
    // TLS files are read now: a bad one stops the start-up with its name.
    let connectors = tls::connectors(&config)?;
    // Bound now: a port in use stops the start-up with its address.
    let http = match &config.http_listen {
        Some(listen) => Some(
            http::bind(listen)
                .await
                .with_context(|| format!("failed to listen on --http-listen {listen}"))?,
        ),
        None => None,
    };
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;

    let access = kubeclient::connect(&config).await?;
    let cluster = match (&config.cluster, &access.context) {
        (Some(cluster), _) => cluster.clone(),
        (None, Some(context)) => cluster_name_from_context(context),
        (None, None) => anyhow::bail!(
            "--cluster (KUBE_RELAY_SENDER_CLUSTER) is required in-cluster: \
             there is no kube context to name it after"
        ),
    };
    let client = access.client;
    // Start-up file work (directory locks, the ledger, the spool's recovery) off the runtime.
    let sender = tokio::task::spawn_blocking(move || {
        Sender::new(config, client, cluster).map_err(anyhow::Error::from)
    })
    .await
    .context("the start-up task failed")??;
    let sender = match http {
        Some(listener) => sender.with_http(listener),
        None => sender,
    };
    Ok(sender.run_with_targets(connectors, shutdown).await?)
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
