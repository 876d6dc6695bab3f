//! Prints a scenario's timeline under the manual clock: every 5 s, each deployment's desired
//! replicas, Ready pods and HPA utilization, then the scaling events.
//!
//! `cargo run -p kube-relay-sim --example timeline -- demo 240`

use std::time::Duration;

use kube_relay_sim::{ClockMode, Scenario, Simulator};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let scenario = Scenario::from_name_or_path(&args.next().unwrap_or_else(|| "demo".into()))?;
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(240);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = Simulator::start(scenario, listener, ClockMode::Manual).await?;
    let h = sim.handle();
    let mut names: Vec<(String, String)> = h
        .pods()
        .iter()
        .filter_map(|p| {
            let owner = p.metadata.owner_references.as_ref()?.first()?.name.clone();
            let d = owner.rsplit_once('-')?.0.to_string();
            Some((p.metadata.namespace.clone()?, d))
        })
        .collect();
    names.sort();
    names.dedup();
    for t in (5..=seconds).step_by(5) {
        h.advance(Duration::from_secs(5))?;
        let mut line = format!("{t:>4}s");
        for (ns, d) in &names {
            let want = h
                .deployment(ns, d)
                .and_then(|d| d.spec)
                .and_then(|s| s.replicas)
                .unwrap_or(0);
            let running = h.running_pods(ns, d).len();
            let util = h
                .hpa_status(ns, d)
                .and_then(|s| s.current_metrics)
                .and_then(|m| m.first().and_then(|m| m.resource.clone()))
                .and_then(|r| r.current.average_utilization)
                .map(|u| format!(" {u}%"))
                .unwrap_or_default();
            line.push_str(&format!("  {d}: {running}/{want}{util}"));
        }
        println!("{line}");
    }
    for e in h.scaling_events() {
        println!(
            "{} {}",
            e.first_timestamp
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            e.message.unwrap_or_default()
        );
    }
    sim.shutdown().await;
    Ok(())
}
