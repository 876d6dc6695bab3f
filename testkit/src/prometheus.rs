//! A real Prometheus (Debian's `prometheus` package) on loopback, for end-to-end tests.
//!
//! [`Prometheus::start`] writes a config scraping the given targets every second, starts the
//! server on a free loopback port with its own TSDB in a temporary directory, and waits until
//! it is ready. Queries go through the HTTP API (`/api/v1/query`, `/api/v1/query_range`).
//! Targets may be scraped over HTTPS with basic auth ([`PrometheusConfig::scheme`],
//! [`BasicAuth`], [`TlsConfig`]). The process is killed when the value is dropped.
//! Prometheus 2.42 takes a few seconds to its first scrape: use [`Prometheus::wait_for`],
//! never a sleep.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tokio::process::{Child, Command};

use crate::http::{self, encode_component};
use crate::wait::wait_until;

/// What to scrape and which rules to load.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// `host:port` targets scraped at `/metrics` under job `kube-relay`.
    pub targets: Vec<SocketAddr>,
    /// Scrape and rule evaluation interval (whole milliseconds, at least 100 ms; Prometheus
    /// accepts sub-second intervals, which fast tests use to catch short-lived states).
    pub interval: Duration,
    /// Rule files to load (e.g. the project's alert rules).
    pub rule_files: Vec<PathBuf>,
    /// `http` (the default) or `https`.
    pub scheme: String,
    /// Credentials sent with every scrape (`basic_auth`).
    pub basic_auth: Option<BasicAuth>,
    /// How scrapes verify the target's certificate and which client certificate they
    /// present (`tls_config`).
    pub tls_config: Option<TlsConfig>,
    /// More targets of the same job, each with its own target labels (one `static_configs`
    /// entry each): e.g. a receiver labelled with the one cluster it serves.
    pub labelled_targets: Vec<(SocketAddr, BTreeMap<String, String>)>,
    /// `honor_labels`: a scraped series keeps its own value of a label that is also a
    /// target label (the receiver's `cluster`), instead of it becoming `exported_<name>`.
    pub honor_labels: bool,
    /// Accept Prometheus remote write at `/api/v1/write`
    /// (`--web.enable-remote-write-receiver`), with this out-of-order window
    /// (`storage.tsdb.out_of_order_time_window`) for history older than what it holds.
    pub remote_write_receiver: Option<Duration>,
}

/// A scrape job's `basic_auth` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// File holding the password (Prometheus reads it at every scrape).
    pub password_file: PathBuf,
}

/// A scrape job's `tls_config` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// CA certificate(s) the target's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Client certificate to present.
    pub cert_file: Option<PathBuf>,
    /// Key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name checked against the target's certificate instead of the target's host.
    pub server_name: Option<String>,
}

impl PrometheusConfig {
    /// Scrapes `targets` every second, no rules.
    pub fn new(targets: &[SocketAddr]) -> Self {
        PrometheusConfig {
            targets: targets.to_vec(),
            interval: Duration::from_secs(1),
            rule_files: Vec::new(),
            scheme: "http".to_owned(),
            basic_auth: None,
            tls_config: None,
            labelled_targets: Vec::new(),
            honor_labels: false,
            remote_write_receiver: None,
        }
    }

    fn to_yaml(&self) -> String {
        let ms = self.interval.as_millis().max(100);
        let mut y = format!(
            "global:\n  scrape_interval: {ms}ms\n  evaluation_interval: {ms}ms\n  scrape_timeout: {ms}ms\n"
        );
        if let Some(window) = self.remote_write_receiver {
            let _ = writeln!(
                y,
                "storage:\n  tsdb:\n    out_of_order_time_window: {}s",
                window.as_secs()
            );
        }
        if !self.rule_files.is_empty() {
            y.push_str("rule_files:\n");
            for f in &self.rule_files {
                let _ = writeln!(y, "  - {:?}", f.display().to_string());
            }
        }
        y.push_str("scrape_configs:\n  - job_name: kube-relay\n");
        if self.scheme != "http" {
            let _ = writeln!(y, "    scheme: {:?}", self.scheme);
        }
        if let Some(auth) = &self.basic_auth {
            let _ = writeln!(
                y,
                "    basic_auth:\n      username: {:?}\n      password_file: {:?}",
                auth.username,
                auth.password_file.display().to_string()
            );
        }
        if let Some(tls) = &self.tls_config {
            y.push_str("    tls_config:\n");
            let files = [
                ("ca_file", &tls.ca_file),
                ("cert_file", &tls.cert_file),
                ("key_file", &tls.key_file),
            ];
            for (key, path) in files {
                if let Some(path) = path {
                    let _ = writeln!(y, "      {key}: {:?}", path.display().to_string());
                }
            }
            if let Some(name) = &tls.server_name {
                let _ = writeln!(y, "      server_name: {name:?}");
            }
        }
        if self.honor_labels {
            y.push_str("    honor_labels: true\n");
        }
        y.push_str("    static_configs:\n");
        if !self.targets.is_empty() {
            let targets: Vec<String> = self.targets.iter().map(|t| format!("\"{t}\"")).collect();
            let _ = writeln!(y, "      - targets: [{}]", targets.join(", "));
        }
        for (target, labels) in &self.labelled_targets {
            let _ = writeln!(y, "      - targets: [\"{target}\"]");
            if !labels.is_empty() {
                let labels: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
                let _ = writeln!(y, "        labels: {{{}}}", labels.join(", "));
            }
        }
        y
    }
}

/// One sample of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Labels, including `__name__` when the expression keeps it.
    pub metric: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A label's value, or `""`.
    pub fn label(&self, name: &str) -> &str {
        self.metric.get(name).map_or("", String::as_str)
    }
}

/// One series of a range query.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// Labels.
    pub metric: BTreeMap<String, String>,
    /// `(unix seconds, value)` points.
    pub values: Vec<(f64, f64)>,
}

/// A running Prometheus; killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second and waits until it is ready.
    ///
    /// # Errors
    /// When the `prometheus` binary is missing (install Debian's `prometheus` package) or the
    /// server does not become ready.
    pub async fn start(targets: &[SocketAddr]) -> Result<Prometheus> {
        Self::start_with(PrometheusConfig::new(targets)).await
    }

    /// Starts Prometheus with `config`.
    ///
    /// # Errors
    /// As [`Prometheus::start`].
    pub async fn start_with(config: PrometheusConfig) -> Result<Prometheus> {
        let binary = which("prometheus").context(
            "the `prometheus` binary is not on PATH: install Debian's package \
             (apt-get install -y prometheus); .ci/run does this",
        )?;
        let mut dir = tempfile::tempdir().context("failed to create a temporary directory")?;
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config.to_yaml())
            .with_context(|| format!("failed to write {}", config_path.display()))?;
        let mut last_err = None;
        for _attempt in 0..3 {
            let addr = free_loopback_addr()?;
            let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .args(
                    config
                        .remote_write_receiver
                        .map(|_| "--web.enable-remote-write-receiver"),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("failed to start {}", binary.display()))?;
            let mut prom = Prometheus { child, addr, dir };
            match prom.wait_ready().await {
                Ok(()) => return Ok(prom),
                Err(e) => {
                    last_err = Some(e.context(format!("log:\n{}", prom.log())));
                    let _ = prom.child.start_kill();
                    dir = prom.dir;
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("prometheus did not start")))
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let addr = self.addr;
        let child = &mut self.child;
        wait_until(
            "prometheus /-/ready",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let exited = child.try_wait().ok().flatten();
                async move {
                    if let Some(status) = exited {
                        bail!("prometheus exited with {status}");
                    }
                    let r = http::get(addr, "/-/ready", &[]).await?;
                    Ok((r.status == 200).then_some(()))
                }
            },
        )
        .await
    }

    /// The HTTP address of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The data directory (config, TSDB, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Prometheus' own log so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path_and_query: &str) -> Result<serde_json::Value> {
        let r = http::get(self.addr, path_and_query, &[]).await?;
        let parsed: ApiResponse = serde_json::from_slice(&r.body)
            .with_context(|| format!("bad JSON from {path_and_query}: {:?}", r.text()))?;
        if parsed.status != "success" {
            bail!(
                "prometheus API error ({}): {}",
                parsed.error_type.unwrap_or_default(),
                parsed.error.unwrap_or_default()
            );
        }
        parsed.data.context("success response without data")
    }

    /// Runs an instant query at the current time.
    ///
    /// # Errors
    /// When the query fails (bad PromQL, server error) or the result is not a vector/scalar.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode_component(promql)))
            .await
            .with_context(|| format!("query {promql:?} failed"))?;
        parse_instant(&data).with_context(|| format!("query {promql:?}"))
    }

    /// Runs a range query over `[start, end]` (Unix seconds) at `step` seconds.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn query_range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<RangeSeries>> {
        let data = self
            .api(&format!(
                "/api/v1/query_range?query={}&start={start}&end={end}&step={step}",
                encode_component(promql)
            ))
            .await
            .with_context(|| format!("range query {promql:?} failed"))?;
        matrix(&data, "range result is not a matrix")
    }

    /// Raw samples of a range selector (`name{...}[1h]`) evaluated at `time` (Unix
    /// seconds), as `(unix seconds, value)` per series; staleness markers are not returned
    /// (Prometheus hides them).
    ///
    /// # Errors
    /// When the query fails or does not return a matrix.
    pub async fn raw_samples(&self, selector: &str, time: f64) -> Result<Vec<RangeSeries>> {
        let data = self
            .api(&format!(
                "/api/v1/query?query={}&time={time}",
                encode_component(selector)
            ))
            .await
            .with_context(|| format!("query {selector:?} failed"))?;
        matrix(&data, "not a matrix")
    }

    /// Re-runs `promql` until `accept` holds for its result, and returns that result.
    ///
    /// # Errors
    /// When `timeout` passes first; the error shows the last result or query error.
    pub async fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        accept: impl Fn(&[Sample]) -> bool,
    ) -> Result<Vec<Sample>> {
        let last = std::sync::Mutex::new(Vec::new());
        let result = wait_until(
            &format!("prometheus query {promql:?}"),
            timeout,
            Duration::from_millis(250),
            || async {
                let samples = self.query(promql).await?;
                if accept(&samples) {
                    Ok(Some(samples))
                } else {
                    if let Ok(mut l) = last.lock() {
                        *l = samples;
                    }
                    Ok(None)
                }
            },
        )
        .await;
        result.with_context(|| {
            let l = last.lock().map(|l| l.clone()).unwrap_or_default();
            format!("last result: {l:?}\nprometheus log:\n{}", self.log())
        })
    }

    /// Waits until every target has been scraped successfully at least once.
    ///
    /// # Errors
    /// When `timeout` passes first.
    pub async fn wait_for_scrape(&self, timeout: Duration) -> Result<()> {
        self.wait_for("up", timeout, |s| {
            !s.is_empty() && s.iter().all(|s| s.value == 1.0)
        })
        .await
        .map(|_| ())
    }
}

fn parse_instant(data: &serde_json::Value) -> Result<Vec<Sample>> {
    let kind = data
        .get("resultType")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    let result = data.get("result").context("no result")?;
    match kind {
        "vector" => result
            .as_array()
            .context("vector is not an array")?
            .iter()
            .map(|s| {
                Ok(Sample {
                    metric: labels(s.get("metric"))?,
                    value: point(s.get("value").context("sample without value")?)?.1,
                })
            })
            .collect(),
        "scalar" => Ok(vec![Sample {
            metric: BTreeMap::new(),
            value: point(result)?.1,
        }]),
        other => bail!("unexpected result type {other:?}"),
    }
}

fn labels(v: Option<&serde_json::Value>) -> Result<BTreeMap<String, String>> {
    let obj = v
        .and_then(|m| m.as_object())
        .context("metric is not an object")?;
    Ok(obj
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect())
}

fn point(v: &serde_json::Value) -> Result<(f64, f64)> {
    let arr = v.as_array().context("point is not an array")?;
    let t = arr
        .first()
        .and_then(|t| t.as_f64())
        .context("point without time")?;
    let value = arr
        .get(1)
        .and_then(|v| v.as_str())
        .context("point without value")?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .with_context(|| format!("bad sample value {v:?}"))?,
    };
    Ok((t, value))
}

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A loopback address with a port that was free a moment ago (for servers we cannot hand a
/// bound socket, like Prometheus, and for processes restarted on the same address).
///
/// The port is taken below the kernel's ephemeral range (`ip_local_port_range`), which
/// `bind(:0)` and outgoing connections draw from: a receiver killed and started again on its
/// port 30 s later found it taken by another test's connection (CI, once). Ports are tried
/// from a random start; only when none below the range binds is one drawn from it.
///
/// # Errors
/// When no port can be bound.
pub fn free_loopback_addr() -> Result<SocketAddr> {
    const LOWEST: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > LOWEST {
        let span = u32::from(ephemeral_low - LOWEST);
        let start = random_u32() % span;
        for i in 0..span.min(4096) {
            let port = LOWEST + ((start + i) % span) as u16;
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return Ok(l.local_addr()?);
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("failed to bind 127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A number that differs between calls and between test processes (std's per-process
/// random hash keys, a counter and the clock), enough to spread picked ports.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// The series of a `matrix` result (a range query's, or an instant query of a range
/// selector's); `not_matrix` is the error when the result is something else.
fn matrix(data: &serde_json::Value, not_matrix: &'static str) -> Result<Vec<RangeSeries>> {
    data.get("result")
        .and_then(|r| r.as_array())
        .context(not_matrix)?
        .iter()
        .map(|series| {
            let metric = labels(series.get("metric"))?;
            let values = series
                .get("values")
                .and_then(|v| v.as_array())
                .context("series without values")?
                .iter()
                .map(point)
                .collect::<Result<Vec<_>>>()?;
            Ok(RangeSeries { metric, values })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_loopback_port_is_below_the_ephemeral_range_and_bindable() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .expect("the ephemeral port range")
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("its low end");
        for _ in 0..20 {
            let addr = free_loopback_addr().expect("a port");
            assert!(addr.ip().is_loopback());
            if low > 10_000 {
                assert!((10_000..low).contains(&addr.port()), "{addr}");
            }
            std::net::TcpListener::bind(addr).expect("still free");
        }
    }

    #[test]
    fn config_scrapes_every_target() {
        let a: SocketAddr = "127.0.0.1:9100".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:9101".parse().expect("addr");
        let y = PrometheusConfig::new(&[a, b]).to_yaml();
        assert!(y.contains("scrape_interval: 1000ms"), "{y}");
        let mut fast = PrometheusConfig::new(&[a]);
        fast.interval = Duration::from_millis(250);
        assert!(fast.to_yaml().contains("scrape_interval: 250ms"));
        assert!(
            y.contains(r#"targets: ["127.0.0.1:9100", "127.0.0.1:9101"]"#),
            "{y}"
        );
        assert!(!y.contains("scheme") && !y.contains("basic_auth") && !y.contains("tls_config"));
    }

    #[test]
    fn labelled_targets_get_their_own_static_config() {
        let a: SocketAddr = "127.0.0.1:9100".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:9101".parse().expect("addr");
        let mut config = PrometheusConfig::new(&[]);
        config.labelled_targets = vec![
            (
                a,
                BTreeMap::from([("cluster".to_owned(), "east".to_owned())]),
            ),
            (b, BTreeMap::new()),
        ];
        config.honor_labels = true;
        let y = config.to_yaml();
        assert!(y.contains("    honor_labels: true\n"), "{y}");
        assert!(
            y.ends_with(
                "    static_configs:\n      - targets: [\"127.0.0.1:9100\"]\n        labels: {cluster: \"east\"}\n      - targets: [\"127.0.0.1:9101\"]\n"
            ),
            "{y}"
        );
    }

    #[test]
    fn config_carries_scheme_basic_auth_and_tls() {
        let a: SocketAddr = "127.0.0.1:9100".parse().expect("addr");
        let y = PrometheusConfig {
            scheme: "https".into(),
            basic_auth: Some(BasicAuth {
                username: "prom".into(),
                password_file: "/tmp/pw".into(),
            }),
            tls_config: Some(TlsConfig {
                ca_file: Some("/tmp/ca.crt".into()),
                server_name: Some("localhost".into()),
                ..TlsConfig::default()
            }),
            ..PrometheusConfig::new(&[a])
        }
        .to_yaml();
        for needle in [
            "    scheme: \"https\"\n",
            "    basic_auth:\n      username: \"prom\"\n      password_file: \"/tmp/pw\"\n",
            "    tls_config:\n      ca_file: \"/tmp/ca.crt\"\n      server_name: \"localhost\"\n",
        ] {
            assert!(y.contains(needle), "{needle:?} missing from:\n{y}");
        }
        assert!(!y.contains("cert_file"), "{y}");
    }

    #[test]
    fn parses_vectors_and_scalars() {
        let v: serde_json::Value = serde_json::json!({
            "resultType": "vector",
            "result": [{"metric": {"__name__": "up", "job": "x"}, "value": [1.5, "1"]}]
        });
        let s = parse_instant(&v).expect("vector");
        assert_eq!(s[0].label("job"), "x");
        assert_eq!(s[0].value, 1.0);
        let v = serde_json::json!({"resultType": "scalar", "result": [1.5, "NaN"]});
        assert!(parse_instant(&v).expect("scalar")[0].value.is_nan());
    }
}
