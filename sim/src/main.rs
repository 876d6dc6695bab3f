//! `kube-sim`: serves a simulated Kubernetes cluster on plain HTTP, writes a kubeconfig for
//! it, and runs its scenario in real time (optionally sped up) until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use kube_relay_sim::{ClockMode, Scenario, Simulator};
use tracing::info;

/// What `kube-sim --help` says the simulator serves and does not serve.
const SERVED: &str = "\
What it serves (plain HTTP, no authentication, JSON only):
  core/v1                  pods (get, list, watch, delete), nodes, namespaces, events
  apps/v1                  deployments (and their scale subresource: kubectl scale),
                           replicasets
  autoscaling/v2           horizontalpodautoscalers
  events.k8s.io/v1         events
  metrics.k8s.io/v1beta1   pod and node metrics (kubectl top)
  nodes/NAME/proxy/metrics/resource   the kubelet's resource metrics
  Discovery, /version, /healthz; list and watch with resourceVersions, bookmarks, paging,
  label and field selectors, 410 Gone and 504 Too large resource version as a real API
  server answers them; Tables, so kubectl get, describe, top, delete and scale work.

What it does not serve (kubectl prints the server's reason):
  kubectl logs, exec, attach, port-forward: no containers run (404).
  kubectl create, apply, edit, patch, label, and deleting anything but pods: the scenario
  shapes the cluster; the only writes are pod deletion and deployment scaling (405).
  Services, endpoints, configmaps, secrets, jobs and every other kind: kubectl get svc
  says the server has no such resource type.
  OpenAPI (kubectl explain, kubectl apply's validation), protobuf, aggregated discovery,
  authentication and RBAC.";

/// Serve a simulated Kubernetes cluster that kubectl and kube-rs accept.
///
/// kube-sim builds the cluster a scenario describes (nodes, deployments, HPAs, load over
/// time, crashes and API faults), serves its Kubernetes API on plain HTTP, writes a
/// kubeconfig for it and runs the scenario's timeline in real time (or faster, --speed)
/// until Ctrl-C or SIGTERM. Logs go to stderr, coloured only on a terminal (NO_COLOR
/// turns colours off); RUST_LOG filters them (default info).
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Address to serve the Kubernetes API on (plain HTTP).
    #[arg(long, env = "KUBE_SIM_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// A built-in scenario (listed below) or a scenario YAML file.
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

/// The long help's closing part: what is served, and the built-in scenarios.
fn after_help() -> String {
    let mut help = format!(
        "{SERVED}\n\nBuilt-in scenarios (--scenario NAME; the files are in sim/scenarios/):\n"
    );
    for name in Scenario::builtin_names() {
        let description = Scenario::builtin(name)
            .map(|s| s.description().to_string())
            .unwrap_or_default();
        help.push_str(&format!("  {name:<14} {description}\n"));
    }
    help
}

fn parse_args() -> Args {
    let matches = Args::command().after_long_help(after_help()).get_matches();
    Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Runs kube-sim; an error is printed on one line, each cause once, with exit status 1 (a
/// bad command line exits with clap's message and status 2).
#[tokio::main]
async fn main() -> ExitCode {
    let args = parse_args();
    kube_relay_sim::telemetry::init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-sim: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text is already there
/// (messages that name their source would otherwise print it twice).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.speed > 0.0 && args.speed.is_finite(),
        "--speed must be a positive number of simulated seconds per real second, not {}",
        args.speed
    );
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
