//! `--simulate[=SCENARIO]`: the built-in simulated cluster (`kube_relay_sim`), started
//! in-process in real time, with a kube client pointed at it.

use kube::Client;
use kube_relay_sim::{ClockMode, RunningSim, Scenario, Simulator};
use tokio::net::TcpListener;
use tracing::info;

use crate::error::Error;
use crate::kubeclient::plain_client;

/// A running simulated cluster and a client for it.
pub struct Simulated {
    /// The cluster (stops when dropped).
    pub sim: RunningSim,
    /// A kube client for its API.
    pub client: Client,
}

/// Starts `scenario` (a built-in name or a YAML file) on a loopback port, in real time.
///
/// # Errors
/// [`Error::Simulator`] when the scenario is unknown or invalid or the port cannot be bound.
pub async fn start(scenario: &str) -> Result<Simulated, Error> {
    let scenario =
        Scenario::from_name_or_path(scenario).map_err(|e| Error::Simulator(Box::new(e)))?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Simulator(Box::new(e)))?;
    let sim = Simulator::start(scenario, listener, ClockMode::RealTime { speed: 1.0 })
        .await
        .map_err(|e| Error::Simulator(Box::new(e)))?;
    info!(api = %sim.base_url(), "simulated cluster running in-process");
    let client = plain_client(&sim.base_url())?;
    Ok(Simulated { sim, client })
}
