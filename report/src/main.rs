//! `kube-relay-report`: parses the command line and runs the report (see the library).

use std::time::SystemTime;

use clap::Parser;
use kube_relay_report::cli::Args;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let options = Args::parse().options(SystemTime::now())?;
    let summary = kube_relay_report::run(&options).await?;
    println!(
        "{} HPA(s), {} scaling action(s), {} step(s); wrote:",
        summary.hpas, summary.scaling_events, summary.steps
    );
    for f in &summary.files {
        println!("  {}", f.display());
    }
    Ok(())
}
