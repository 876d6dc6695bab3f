//! The command line: flags (and their environment variables) into [`Options`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Parser;

use crate::error::{Error, Result};
use crate::report::Options;
use crate::window::Window;

/// Write an HPA scaling report from a Prometheus-compatible query API: CSV files per HPA and
/// per experiment step, and PNG plots of replicas and CPU over time with the scaling actions
/// marked, one panel per step.
///
/// Reads the kube_horizontalpodautoscaler_* families, the relay's scaling-action counter,
/// kube_deployment_spec_replicas / _status_replicas_available, container CPU and restarts of
/// one cluster (its `cluster` label) over a window. Steps are where the replicas asked of the
/// Deployments an experiment scales change (Deployments no HPA scales, or those a kube-sim
/// scenario file's `steps:` name); --scenario also gives them their names.
#[derive(Debug, Parser)]
#[command(name = "kube-relay-report", version)]
pub struct Args {
    /// Base URL of the query API (Prometheus, or VictoriaMetrics' /prometheus prefix).
    #[arg(
        long,
        value_name = "URL",
        env = "KUBE_RELAY_REPORT_PROMETHEUS",
        default_value = "http://127.0.0.1:9090"
    )]
    pub prometheus: String,
    /// The cluster, as its `cluster` label.
    #[arg(long, value_name = "NAME", env = "KUBE_RELAY_REPORT_CLUSTER")]
    pub cluster: String,
    /// Only this namespace [default: all].
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Start: RFC 3339 (2026-12-07T05:00:00Z), Unix seconds, or a duration before now (30m).
    #[arg(long, value_name = "TIME", default_value = "1h")]
    pub from: String,
    /// End: as --from, or `now`.
    #[arg(long, value_name = "TIME", default_value = "now")]
    pub to: String,
    /// Time between points of the tables and plots [default: the window / 1000, at least 100ms].
    #[arg(long, value_name = "DURATION")]
    pub resolution: Option<humantime::Duration>,
    /// Simulated seconds per real second of the run (kube-sim's --speed); durations and CPU
    /// are reported in the cluster's time. 1 for real clusters.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    pub speed: f64,
    /// Window of rate() for CPU per pod: at least two of the sender's usage polls (its
    /// --usage-interval, 15s by default).
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub rate_window: humantime::Duration,
    /// Replica changes this close together are one step, and a scaling action and the
    /// desired replicas it set may be this far apart (a few scrape intervals).
    #[arg(long, value_name = "DURATION", default_value = "3s")]
    pub settle: humantime::Duration,
    /// A kube-sim scenario file (sim/scenarios/*.yaml): its `steps:` name the steps found and
    /// say which Deployments they scale.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// A Deployment drawn in the step panels (repeatable) [default: the HPAs' targets, else
    /// every Deployment of the steps' namespaces].
    #[arg(long = "plot-deployment", value_name = "NAME")]
    pub plot_deployments: Vec<String>,
    /// Output directory (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// TrueType font for the plots' text [default: DejaVu Sans or Liberation Sans from the
    /// system's font directories].
    #[arg(long, value_name = "FILE")]
    pub font: Option<PathBuf>,
    /// Plot width in pixels.
    #[arg(long, value_name = "PIXELS", default_value_t = 1200)]
    pub width: u32,
    /// Plot height in pixels.
    #[arg(long, value_name = "PIXELS", default_value_t = 700)]
    pub height: u32,
    /// Timeout of each query.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub timeout: humantime::Duration,
    /// Largest answer read from the query API, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub max_answer_bytes: usize,
}

impl Args {
    /// The report's options, the window read against `now`.
    ///
    /// # Errors
    /// [`Error::Argument`] for a bad window, speed or plot size.
    pub fn options(self, now: SystemTime) -> Result<Options> {
        let window = Window::new(&self.from, &self.to, self.resolution.map(Into::into), now)?;
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err(Error::Argument {
                flag: "speed",
                value: self.speed.to_string(),
                reason: "must be a positive number of simulated seconds per real second".to_owned(),
            });
        }
        for (flag, v) in [("width", self.width), ("height", self.height)] {
            if !(200..=10_000).contains(&v) {
                return Err(Error::Argument {
                    flag,
                    value: v.to_string(),
                    reason: "must be 200 to 10000 pixels".to_owned(),
                });
            }
        }
        let rate_window: Duration = self.rate_window.into();
        if rate_window.is_zero() {
            return Err(Error::Argument {
                flag: "rate-window",
                value: self.rate_window.to_string(),
                reason: "must be more than zero".to_owned(),
            });
        }
        Ok(Options {
            prometheus: self.prometheus,
            cluster: self.cluster,
            namespace: self.namespace,
            window,
            speed: self.speed,
            rate_window: rate_window.as_secs_f64(),
            settle: Duration::from(self.settle).as_secs_f64(),
            scenario: self.scenario,
            plot_deployments: self.plot_deployments,
            out: self.out,
            font: self.font,
            size: (self.width, self.height),
            timeout: self.timeout.into(),
            max_answer_bytes: self.max_answer_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_options() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let args = Args::try_parse_from([
            "kube-relay-report",
            "--cluster",
            "kind",
            "--from",
            "15m",
            "--out",
            "r",
            "--speed",
            "10",
            "--rate-window",
            "5s",
        ])
        .expect("parses");
        let o = args.options(now).expect("options");
        assert_eq!((o.window.from, o.window.to), (1.8e9 - 900.0, 1.8e9));
        assert_eq!((o.speed, o.rate_window, o.settle), (10.0, 5.0, 3.0));
        let args = Args::try_parse_from([
            "kube-relay-report",
            "--cluster",
            "kind",
            "--out",
            "r",
            "--speed",
            "0",
        ])
        .expect("parses");
        assert!(matches!(
            args.options(now),
            Err(Error::Argument { flag: "speed", .. })
        ));
        assert!(Args::try_parse_from(["kube-relay-report", "--out", "r"]).is_err());
    }
}
