//! `kube-sim`: serves a simulated Kubernetes cluster on plain HTTP, writes a kubeconfig for
//! it, and runs its scenario in real time (optionally sped up) until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kube_relay_sim::{ClockMode, Scenario, Simulator};
use tracing::info;

/// Serve a simulated Kubernetes cluster that kubectl and kube-rs accept.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Address to serve the Kubernetes API on (plain HTTP).
    #[arg(long, env = "KUBE_SIM_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// A built-in scenario (demo, load-test, bulk, faults) or a scenario YAML file.
    #[arg(long, env = "KUBE_SIM_SCENARIO", default_value = "demo")]
    scenario: String,
    /// Simulated seconds per real second.
    #[arg(long, env = "KUBE_SIM_SPEED", default_value_t = 1.0)]
    speed: f64,
    /// Override the scenario's RNG seed.
    #[arg(long, env = "KUBE_SIM_SEED")]
    seed: Option<u64>,
    /// Where to write the kubeconfig (default: a file in the temp directory).
    #[arg(long, env = "KUBE_SIM_KUBECONFIG_OUT")]
    kubeconfig_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.speed > 0.0, "--speed must be positive");
    let mut scenario = Scenario::from_name_or_path(&args.scenario)?;
    if let Some(seed) = args.seed {
        scenario = scenario.with_seed(seed);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let sim = Simulator::start(
        scenario,
        listener,
        ClockMode::RealTime { speed: args.speed },
    )
    .await?;
    let path = args.kubeconfig_out.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("kube-sim-{}.kubeconfig", sim.local_addr().port()))
    });
    std::fs::write(&path, sim.kubeconfig_yaml())
        .with_context(|| format!("failed to write the kubeconfig to {}", path.display()))?;
    println!("kube-sim: serving {} ({})", sim.base_url(), args.scenario);
    println!("kubeconfig: {}", path.display());
    println!("try: KUBECONFIG={} kubectl get pods -A", path.display());
    shutdown_signal().await;
    info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
