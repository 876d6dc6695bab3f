//! A real VictoriaMetrics (Debian's `victoria-metrics` package, the single-node server) on
//! loopback, as a remote-write backend for end-to-end tests.
//!
//! [`VictoriaMetrics::start`] runs it on a free port with its own data directory and
//! `-search.latencyOffset=0s` (so fresh samples are queryable at once), waits until it
//! answers, and kills it on drop. [`VictoriaMetrics::stop`] and
//! [`VictoriaMetrics::restart`] take the backend away and bring it back on the same port and
//! data, for outage tests. [`VictoriaMetrics::export`] returns raw samples (every
//! timestamp, nothing interpolated), so tests can count them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tokio::process::{Child, Command};

use crate::http::{self, encode_component};
use crate::prometheus::{free_loopback_addr, which};
use crate::wait::wait_until;

/// VictoriaMetrics writes NaN and infinities in an export's `values` as bare `NaN`, `Inf`
/// and `-Inf`, which JSON does not have, and staleness markers as `null`: quote the former
/// so the line parses.
fn quote_special_values(line: &str) -> String {
    let Some(start) = line.find("\"values\":[") else {
        return line.to_owned();
    };
    let start = start + "\"values\":[".len();
    let end = line[start..].find(']').map_or(line.len(), |e| start + e);
    let values: Vec<String> = line[start..end]
        .split(',')
        .map(|v| match v.trim() {
            t @ ("NaN" | "Inf" | "+Inf" | "-Inf") => format!("\"{t}\""),
            t => t.to_owned(),
        })
        .collect();
    format!("{}{}{}", &line[..start], values.join(","), &line[end..])
}

/// One series of `/api/v1/export`: labels and raw samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// Labels, `__name__` included.
    pub metric: BTreeMap<String, String>,
    /// `(timestamp ms, value)`; the staleness marker comes back as a NaN.
    pub samples: Vec<(i64, f64)>,
}

impl Exported {
    /// A label's value, or `""`.
    pub fn label(&self, name: &str) -> &str {
        self.metric.get(name).map_or("", String::as_str)
    }
}

#[derive(Deserialize)]
struct ExportLine {
    metric: BTreeMap<String, String>,
    values: Vec<serde_json::Value>,
    timestamps: Vec<i64>,
}

/// A running VictoriaMetrics; killed on drop.
#[derive(Debug)]
pub struct VictoriaMetrics {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics on a free loopback port and waits until it is healthy.
    ///
    /// # Errors
    /// When the binary is missing (install Debian's `victoria-metrics`) or it does not come
    /// up.
    pub async fn start() -> Result<VictoriaMetrics> {
        Self::start_with(&[]).await
    }

    /// [`VictoriaMetrics::start`] with extra command-line flags (e.g.
    /// `-search.disableCache` for a benchmark polling fresh data).
    ///
    /// # Errors
    /// As [`VictoriaMetrics::start`].
    pub async fn start_with(extra: &[&str]) -> Result<VictoriaMetrics> {
        let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
        let mut vm = VictoriaMetrics {
            child: None,
            addr: free_loopback_addr()?,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        vm.restart().await?;
        Ok(vm)
    }

    /// (Re)starts the server on its port and data directory.
    ///
    /// # Errors
    /// As [`VictoriaMetrics::start`].
    pub async fn restart(&mut self) -> Result<()> {
        let binary = which("victoria-metrics").context(
            "the `victoria-metrics` binary is not on PATH: install Debian's package \
             (apt-get install -y victoria-metrics); scripts/install-test-deps.sh does this",
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&binary)
            .arg(format!("-httpListenAddr={}", self.addr))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            .arg("-search.latencyOffset=0s")
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=WARN")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        self.child = Some(child);
        let addr = self.addr;
        wait_until(
            "victoria-metrics /health",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async move {
                Ok(http::get(addr, "/health", &[])
                    .await
                    .ok()
                    .filter(|r| r.status == 200)
                    .map(|_| ()))
            },
        )
        .await
        .with_context(|| format!("log:\n{}", self.log()))
    }

    /// Stops the server the way an operator would (SIGINT: it flushes what it accepted to
    /// disk; a `kill -9` loses the last seconds of accepted samples, which is the backend's
    /// own durability, not the test's subject). Its data stays for
    /// [`VictoriaMetrics::restart`].
    ///
    /// # Errors
    /// When the process cannot be signalled or does not exit within 30 s (it is then
    /// killed).
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().context("victoria-metrics already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .context("failed to run kill")?;
        if !status.success() {
            bail!("kill -INT {pid} failed");
        }
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            child
                .kill()
                .await
                .context("failed to kill victoria-metrics")?;
            bail!("victoria-metrics did not stop within 30 s of SIGINT");
        }
        Ok(())
    }

    /// The HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The remote-write URL (`/api/v1/write`).
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("victoria-metrics.log")
    }

    /// The process id, while running (for CPU accounting in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Raw samples of every series matching `selector` (e.g. `{cluster="a"}`), from the
    /// beginning of time, each series' samples in time order.
    ///
    /// # Errors
    /// When the request fails or the answer does not parse.
    pub async fn export(&self, selector: &str) -> Result<Vec<Exported>> {
        let path = format!(
            "/api/v1/export?match[]={}&start=0",
            encode_component(selector)
        );
        let r = http::get(self.addr, &path, &[]).await?;
        if r.status != 200 {
            bail!("GET {path}: {} {}", r.status, r.text().unwrap_or_default());
        }
        let mut out = Vec::new();
        for line in r.text()?.lines().filter(|l| !l.trim().is_empty()) {
            let line = quote_special_values(line);
            let parsed: ExportLine =
                serde_json::from_str(&line).with_context(|| format!("bad export line {line:?}"))?;
            let values = parsed.values.iter().map(|v| match v {
                serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                // NaN and infinities quoted above; staleness markers are null.
                serde_json::Value::String(s) => match s.as_str() {
                    "Inf" | "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    _ => f64::NAN,
                },
                _ => f64::NAN,
            });
            let mut samples: Vec<(i64, f64)> = parsed.timestamps.into_iter().zip(values).collect();
            samples.sort_by_key(|(t, _)| *t);
            out.push(Exported {
                metric: parsed.metric,
                samples,
            });
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_nan_and_infinities_in_an_export_line_are_quoted() {
        let line =
            r#"{"metric":{"__name__":"NaN"},"values":[NaN,1,null,-Inf],"timestamps":[1,2,3,4]}"#;
        let fixed = quote_special_values(line);
        assert_eq!(
            fixed,
            r#"{"metric":{"__name__":"NaN"},"values":["NaN",1,null,"-Inf"],"timestamps":[1,2,3,4]}"#
        );
        assert!(serde_json::from_str::<ExportLine>(&fixed).is_ok());
    }
}
