//! `receiver`: parses the configuration, starts logging, runs the receiver until SIGINT or
//! SIGTERM.

use anyhow::Context;
use clap::Parser;
use kube_relay_receiver::{Cli, Receiver, ReceiverConfig, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = ReceiverConfig::from_cli(&cli).context("invalid configuration")?;
    telemetry::init(config.log_format);
    let receiver = Receiver::bind(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    receiver.run(shutdown).await?;
    Ok(())
}

/// Cancels `shutdown` on SIGINT (ctrl-c) or SIGTERM.
async fn signal_shutdown(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(cause = %e, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
    shutdown.cancel();
}
