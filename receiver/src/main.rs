//! `receiver`: parses the configuration, starts logging, runs the receiver until SIGINT or
//! SIGTERM. Whatever stops it is said once, on stderr (through the log once logging is set
//! up), with exit status 1 (2 for a bad configuration).

use std::process::ExitCode;

use kube_relay_proto::config::error_chain;
use kube_relay_receiver::{Error, Receiver, ReceiverConfig, telemetry};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let config = match ReceiverConfig::from_env() {
        Ok(config) => config,
        Err(Error::Settings(kube_relay_proto::config::Error::CommandLine(e))) => e.exit(),
        Err(e) => {
            eprintln!("receiver: {}", error_chain(causes(&e)));
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let result = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(config)),
        Err(e) => {
            tracing::error!(cause = %e, "failed to start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(cause = %error_chain(causes(&e)), "receiver stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ReceiverConfig) -> Result<(), Error> {
    let receiver = Receiver::bind(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    receiver.run(shutdown).await
}

/// `e` and its sources, outermost first.
fn causes(e: &Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
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
