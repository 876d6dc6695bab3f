//! Configuration: command-line flags, `KUBE_RELAY_*` environment variables and an optional
//! file, resolved into one [`Config`].
//!
//! Precedence: a flag beats its environment variable, which beats the `--config` file
//! (TOML or YAML, keys named like the long flags: `usage-interval = "15s"`), which beats the
//! defaults in [`defaults`]. Every default is defined there once and shown by `--help`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::Deserialize;

use crate::error::Error;

/// Defaults, defined once.
pub mod defaults {
    use std::time::Duration;

    /// How often PodMetrics (or the kubelets) are polled.
    pub const USAGE_INTERVAL: Duration = Duration::from_secs(15);
    /// Heartbeat interval until the receiver's `Welcome` says otherwise.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
    /// How long changes coalesce before a delta batch: short enough for the freshness
    /// target (API change to `/metrics` p99 ≤ 20 ms at 1,000 changes/s; 10 ms gave p99
    /// 18.5–23 ms, 5 ms gives 12–15 ms), long enough that a burst shares one batch (5 ms
    /// costs the same bytes per sample and CPU as 10 ms, `sender/README.md`).
    pub const FLUSH_INTERVAL: Duration = Duration::from_millis(5);
    /// Unacknowledged batches kept for replay, in encoded bytes (also the most a sender has
    /// in flight: about 40 MiB/s at the receiver's 100 ms ack interval).
    pub const SPOOL_MAX_BYTES: u64 = 4 << 20;
    /// Largest frame payload sent (the receiver's default limit).
    pub const MAX_FRAME_BYTES: usize = kube_relay_proto::DEFAULT_MAX_FRAME_BYTES;
    /// Cluster name under `--simulate` when none is given.
    pub const SIMULATED_CLUSTER: &str = "kube-sim";
    /// Scenario of `--simulate` without a value.
    pub const SIMULATE_SCENARIO: &str = "demo";
    /// Time allowed to connect and complete the handshake.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Time allowed to flush and say goodbye on shutdown.
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
}

/// A duration on the command line: `500ms`, `15s`, `2m`, `1h`, or plain seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(DurationArg)
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else if !ms.is_multiple_of(60_000) || ms == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{}m", ms / 60_000)
        }
    }
}

impl<'de> Deserialize<'de> for DurationArg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::Seconds(s) if s >= 0.0 && s.is_finite() => {
                Ok(DurationArg(Duration::from_secs_f64(s)))
            }
            Raw::Seconds(s) => Err(serde::de::Error::custom(format!("invalid duration {s}"))),
        }
    }
}

/// Parses `500ms`, `15s`, `2m`, `1h` or plain (possibly fractional) seconds.
///
/// # Errors
/// A message naming the bad input.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 500ms, 15s, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1e3,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Where CPU and memory per container come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UsageSource {
    /// `metrics.k8s.io` PodMetrics (metrics-server), polled; the CPU counter is integrated
    /// from its rate.
    MetricsApi,
    /// Each kubelet's `/metrics/resource` through the API server's node proxy; real
    /// counters, relayed.
    Kubelet,
    /// No usage metrics.
    None,
}

impl fmt::Display for UsageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UsageSource::MetricsApi => "metrics-api",
            UsageSource::Kubelet => "kubelet",
            UsageSource::None => "none",
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The command line of `sender`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sender",
    version,
    about = "Watches a Kubernetes cluster and streams its state to a kube-relay receiver.",
    long_about = "Watches a Kubernetes cluster (pods, HPAs, nodes, namespaces, scaling events, \
                  CPU and memory per container) and streams it as metrics over one TCP \
                  connection to a kube-relay receiver, which serves them to Prometheus.\n\n\
                  Kubernetes access works like kubectl: --kubeconfig / KUBECONFIG / \
                  ~/.kube/config with --context, or the in-cluster service account. Every \
                  flag can also be set by its environment variable or in a --config file \
                  (flag > environment > file > default)."
)]
pub struct Cli {
    /// Configuration file (TOML or YAML; keys are the long flag names, e.g. `usage-interval`,
    /// or snake_case `usage_interval`).
    #[arg(long, env = "KUBE_RELAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The receiver's sender port, HOST:PORT.
    #[arg(long, env = "KUBE_RELAY_TARGET", value_name = "HOST:PORT")]
    pub target: Option<String>,

    /// Cluster name, the `cluster` label of every series [default: the kube context's name;
    /// `kube-sim` under --simulate].
    #[arg(long, env = "KUBE_RELAY_CLUSTER")]
    pub cluster: Option<String>,

    /// Kubeconfig file [default: $KUBECONFIG, then ~/.kube/config, then in-cluster].
    #[arg(long, env = "KUBE_RELAY_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context [default: the current context].
    #[arg(long, env = "KUBE_RELAY_CONTEXT")]
    pub context: Option<String>,

    /// Watch only this namespace (repeatable; comma-separated in the environment)
    /// [default: all namespaces].
    #[arg(
        long = "namespace",
        env = "KUBE_RELAY_NAMESPACE",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Label selector for pods and PodMetrics, e.g. `app=web,tier!=cache` [default: all].
    #[arg(long, env = "KUBE_RELAY_SELECTOR")]
    pub selector: Option<String>,

    /// Start the built-in simulated cluster in-process and watch it instead of a real one.
    #[arg(long, env = "KUBE_RELAY_SIMULATE", value_name = "SCENARIO", num_args = 0..=1,
          default_missing_value = defaults::SIMULATE_SCENARIO)]
    pub simulate: Option<String>,

    /// Where CPU and memory per container come from.
    #[arg(long, env = "KUBE_RELAY_USAGE_SOURCE", value_enum,
          default_value_t = UsageSource::MetricsApi)]
    pub usage_source: UsageSource,

    /// How often usage is polled (metrics.k8s.io cannot be watched).
    #[arg(long, env = "KUBE_RELAY_USAGE_INTERVAL", value_name = "DURATION",
          default_value_t = DurationArg(defaults::USAGE_INTERVAL))]
    pub usage_interval: DurationArg,

    /// Shared secret the receiver requires [default: none].
    #[arg(long, env = "KUBE_RELAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Read the shared secret from this file (trailing whitespace trimmed).
    #[arg(
        long,
        env = "KUBE_RELAY_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,

    /// Switch the link to TLS and trust only the CA certificate(s) in this PEM file to sign
    /// the receiver's certificate; renewed TLS files are used from the next connection
    /// [default: plain TCP].
    #[arg(long, env = "KUBE_RELAY_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate chain (PEM) presented to the receiver for mutual TLS; needs
    /// --tls-client-key and --tls-ca.
    #[arg(long, env = "KUBE_RELAY_TLS_CLIENT_CERT", value_name = "FILE")]
    pub tls_client_cert: Option<PathBuf>,

    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-client-cert.
    #[arg(long, env = "KUBE_RELAY_TLS_CLIENT_KEY", value_name = "FILE")]
    pub tls_client_key: Option<PathBuf>,

    /// Name the receiver's certificate must be valid for (a DNS name or an IP address)
    /// [default: the host part of --target].
    #[arg(long, env = "KUBE_RELAY_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Directory for durable state: the sender id and the scaling-event ledger, so counts
    /// continue exactly across restarts; one sender per directory (locked) [default: none;
    /// events still in the API (about an hour) are recounted after a restart].
    #[arg(long, env = "KUBE_RELAY_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Keep unacknowledged batches on disk in this directory, so a restarted sender can
    /// replay them [default: DIR/spool with --state-dir DIR, else in memory].
    #[arg(long, env = "KUBE_RELAY_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Most bytes of sent-but-unacknowledged batches kept for replay after a reconnect. When
    /// full, new deltas wait briefly for acks (changes keep coalescing); if none come, the
    /// oldest batch is dropped (counted in relay_sender_dropped_updates_total) and a reconnect
    /// that needs it starts with a full snapshot.
    #[arg(long, env = "KUBE_RELAY_SPOOL_MAX_BYTES", value_name = "BYTES",
          default_value_t = defaults::SPOOL_MAX_BYTES)]
    pub spool_max_bytes: u64,

    /// Heartbeat interval; the receiver's value from the handshake wins. Three silent
    /// intervals mean a dead link.
    #[arg(long, env = "KUBE_RELAY_HEARTBEAT_INTERVAL", value_name = "DURATION",
          default_value_t = DurationArg(defaults::HEARTBEAT_INTERVAL))]
    pub heartbeat_interval: DurationArg,

    /// How often pending changes are sent (coalesced: only a series' latest value goes).
    #[arg(long, env = "KUBE_RELAY_FLUSH_INTERVAL", value_name = "DURATION",
          default_value_t = DurationArg(defaults::FLUSH_INTERVAL))]
    pub flush_interval: DurationArg,

    /// Largest frame payload sent; must not exceed the receiver's --max-frame-bytes.
    #[arg(long, env = "KUBE_RELAY_MAX_FRAME_BYTES", value_name = "BYTES",
          default_value_t = defaults::MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Log format (the level comes from RUST_LOG, default `info`).
    #[arg(long, env = "KUBE_RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The `--config` file: every key optional, named like the long flags (`usage-interval`), or
/// in snake_case like the receiver's file (`usage_interval`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    target: Option<String>,
    cluster: Option<String>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    #[serde(alias = "namespaces")]
    namespace: Option<Vec<String>>,
    selector: Option<String>,
    simulate: Option<String>,
    #[serde(alias = "usage_source")]
    usage_source: Option<UsageSource>,
    #[serde(alias = "usage_interval")]
    usage_interval: Option<DurationArg>,
    token: Option<String>,
    #[serde(alias = "token_file")]
    token_file: Option<PathBuf>,
    #[serde(alias = "tls_ca")]
    tls_ca: Option<PathBuf>,
    #[serde(alias = "tls_client_cert")]
    tls_client_cert: Option<PathBuf>,
    #[serde(alias = "tls_client_key")]
    tls_client_key: Option<PathBuf>,
    #[serde(alias = "tls_server_name")]
    tls_server_name: Option<String>,
    #[serde(alias = "state_dir")]
    state_dir: Option<PathBuf>,
    #[serde(alias = "spool_dir")]
    spool_dir: Option<PathBuf>,
    #[serde(alias = "spool_max_bytes")]
    spool_max_bytes: Option<u64>,
    #[serde(alias = "heartbeat_interval")]
    heartbeat_interval: Option<DurationArg>,
    #[serde(alias = "flush_interval")]
    flush_interval: Option<DurationArg>,
    #[serde(alias = "max_frame_bytes")]
    max_frame_bytes: Option<usize>,
    #[serde(alias = "log_format")]
    log_format: Option<LogFormat>,
}

/// The resolved configuration of a sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Receiver address, `HOST:PORT`.
    pub target: String,
    /// Cluster name; `None` means the kube context's name (or `kube-sim` when simulating).
    pub cluster: Option<String>,
    /// Kubeconfig file.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    pub context: Option<String>,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Pod label selector.
    pub selector: Option<String>,
    /// Simulated scenario, when simulating.
    pub simulate: Option<String>,
    /// Usage source.
    pub usage_source: UsageSource,
    /// Usage poll interval.
    pub usage_interval: Duration,
    /// Shared secret.
    pub token: Option<String>,
    /// CA file that switches the link to TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain for mutual TLS.
    pub tls_client_cert: Option<PathBuf>,
    /// Key of the client certificate.
    pub tls_client_key: Option<PathBuf>,
    /// Name checked in the receiver's certificate; `None` means the host part of `target`.
    pub tls_server_name: Option<String>,
    /// Durable state directory.
    pub state_dir: Option<PathBuf>,
    /// Disk spool directory (see [`Config::spool_path`]).
    pub spool_dir: Option<PathBuf>,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
    /// Heartbeat interval until the receiver says otherwise.
    pub heartbeat_interval: Duration,
    /// Delta flush interval.
    pub flush_interval: Duration,
    /// Largest frame payload sent.
    pub max_frame_bytes: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Handshake timeout.
    pub connect_timeout: Duration,
    /// Shutdown bound.
    pub shutdown_timeout: Duration,
}

impl Config {
    /// A configuration with every default and this target.
    pub fn new(target: impl Into<String>) -> Self {
        Config {
            target: target.into(),
            cluster: None,
            kubeconfig: None,
            context: None,
            namespaces: Vec::new(),
            selector: None,
            simulate: None,
            usage_source: UsageSource::MetricsApi,
            usage_interval: defaults::USAGE_INTERVAL,
            token: None,
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            tls_server_name: None,
            state_dir: None,
            spool_dir: None,
            spool_max_bytes: defaults::SPOOL_MAX_BYTES,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            flush_interval: defaults::FLUSH_INTERVAL,
            max_frame_bytes: defaults::MAX_FRAME_BYTES,
            log_format: LogFormat::Text,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
        }
    }

    /// Parses the process's arguments and environment (and the `--config` file).
    ///
    /// # Errors
    /// [`Error::ConfigFile`] or [`Error::Config`]; clap's own errors (and `--help`) exit the
    /// process as clap does.
    pub fn from_env() -> Result<Config, Error> {
        Config::from_matches(&Cli::command().get_matches())
    }

    /// Parses `args` (the first is the program name) as the command line, reading the
    /// environment as usual.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad command line, [`Error::ConfigFile`] for a bad file.
    pub fn try_from_args<I, T>(args: I) -> Result<Config, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command()
            .try_get_matches_from(args)
            .map_err(|e| Error::Config(e.to_string()))?;
        Config::from_matches(&matches)
    }

    fn from_matches(matches: &ArgMatches) -> Result<Config, Error> {
        let cli = Cli::from_arg_matches(matches).map_err(|e| Error::Config(e.to_string()))?;
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        // A flag or its environment variable beats the file; the file beats the default.
        let explicit = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        fn pick<T>(explicit: bool, cli: T, file: Option<T>) -> T {
            if explicit { cli } else { file.unwrap_or(cli) }
        }
        let token_file = cli.token_file.or(file.token_file);
        let token = match (cli.token.or(file.token), token_file) {
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(read_token(&path)?),
            (None, None) => None,
        };
        let simulate = cli.simulate.or(file.simulate);
        let target = cli.target.or(file.target).ok_or_else(|| {
            Error::Config("--target HOST:PORT (or KUBE_RELAY_TARGET) is required".to_owned())
        })?;
        let config = Config {
            target,
            cluster: cli.cluster.or(file.cluster),
            kubeconfig: cli.kubeconfig.or(file.kubeconfig),
            context: cli.context.or(file.context),
            namespaces: if cli.namespaces.is_empty() {
                file.namespace.unwrap_or_default()
            } else {
                cli.namespaces
            },
            selector: cli.selector.or(file.selector),
            simulate,
            usage_source: pick(
                explicit("usage_source"),
                cli.usage_source,
                file.usage_source,
            ),
            usage_interval: pick(
                explicit("usage_interval"),
                cli.usage_interval,
                file.usage_interval,
            )
            .0,
            token,
            tls_ca: cli.tls_ca.or(file.tls_ca),
            tls_client_cert: cli.tls_client_cert.or(file.tls_client_cert),
            tls_client_key: cli.tls_client_key.or(file.tls_client_key),
            tls_server_name: cli.tls_server_name.or(file.tls_server_name),
            state_dir: cli.state_dir.or(file.state_dir),
            spool_dir: cli.spool_dir.or(file.spool_dir),
            spool_max_bytes: pick(
                explicit("spool_max_bytes"),
                cli.spool_max_bytes,
                file.spool_max_bytes,
            ),
            heartbeat_interval: pick(
                explicit("heartbeat_interval"),
                cli.heartbeat_interval,
                file.heartbeat_interval,
            )
            .0,
            flush_interval: pick(
                explicit("flush_interval"),
                cli.flush_interval,
                file.flush_interval,
            )
            .0,
            max_frame_bytes: pick(
                explicit("max_frame_bytes"),
                cli.max_frame_bytes,
                file.max_frame_bytes,
            ),
            log_format: pick(explicit("log_format"), cli.log_format, file.log_format),
            ..Config::new("")
        };
        config.validate()?;
        Ok(config)
    }

    /// Where the disk spool lives: `spool_dir`, else `<state_dir>/spool`; `None` means the
    /// spool is kept in memory.
    pub fn spool_path(&self) -> Option<PathBuf> {
        self.spool_dir
            .clone()
            .or_else(|| self.state_dir.as_ref().map(|dir| dir.join("spool")))
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// [`Error::Config`] naming the problem.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.target.contains(':') {
            return Err(Error::Config(format!(
                "--target {:?} is not HOST:PORT",
                self.target
            )));
        }
        if self.usage_interval < Duration::from_secs(1) {
            return Err(Error::Config(
                "--usage-interval must be at least 1s".to_owned(),
            ));
        }
        if self.heartbeat_interval < Duration::from_millis(100) {
            return Err(Error::Config(
                "--heartbeat-interval must be at least 100ms".to_owned(),
            ));
        }
        if self.flush_interval.is_zero() {
            return Err(Error::Config(
                "--flush-interval must be positive".to_owned(),
            ));
        }
        if !(4096..=kube_relay_proto::MAX_FRAME_BYTES_CEILING).contains(&self.max_frame_bytes) {
            return Err(Error::Config(format!(
                "--max-frame-bytes must be between 4096 and {}",
                kube_relay_proto::MAX_FRAME_BYTES_CEILING
            )));
        }
        if let Some(cluster) = &self.cluster
            && (cluster.is_empty()
                || cluster.len() > kube_relay_proto::MAX_NAME_BYTES
                || !cluster
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(Error::Config(format!(
                "--cluster {cluster:?} must be 1 to 253 characters of [A-Za-z0-9._-]"
            )));
        }
        if self.namespaces.iter().any(String::is_empty) {
            return Err(Error::Config("--namespace must not be empty".to_owned()));
        }
        if self.tls_client_cert.is_some() != self.tls_client_key.is_some() {
            return Err(Error::Config(
                "--tls-client-cert and --tls-client-key go together".to_owned(),
            ));
        }
        if self.tls_ca.is_none()
            && (self.tls_client_cert.is_some() || self.tls_server_name.is_some())
        {
            return Err(Error::Config(
                "--tls-client-cert, --tls-client-key and --tls-server-name need --tls-ca \
                 (the CA that signed the receiver's certificate)"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig, Error> {
    let err = |source| Error::ConfigFile {
        path: path.to_owned(),
        source,
    };
    config::Config::builder()
        .add_source(config::File::from(path))
        .build()
        .map_err(err)?
        .try_deserialize()
        .map_err(err)
}

fn read_token(path: &Path) -> Result<String, Error> {
    let token = std::fs::read_to_string(path).map_err(|e| Error::state(path, e))?;
    let token = token.trim_end().to_owned();
    if token.is_empty() {
        return Err(Error::Config(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tests pass every setting as a flag or in a file; none sets the process environment
    // (tests run in parallel threads).

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let config = Config::try_from_args(["sender", "--target", "b:9000"]).expect("config");
        assert_eq!(config, Config::new("b:9000"));
    }

    #[test]
    fn flags_parse_every_kind_of_value() {
        let config = Config::try_from_args([
            "sender",
            "--target=b:9000",
            "--cluster=prod-1",
            "--namespace=a",
            "--namespace=b",
            "--selector=app=web",
            "--simulate",
            "--usage-source=kubelet",
            "--usage-interval=30s",
            "--heartbeat-interval=500ms",
            "--spool-max-bytes=1024",
            "--log-format=json",
        ])
        .expect("config");
        assert_eq!(config.cluster.as_deref(), Some("prod-1"));
        assert_eq!(config.namespaces, ["a", "b"]);
        assert_eq!(config.selector.as_deref(), Some("app=web"));
        assert_eq!(config.simulate.as_deref(), Some("demo"));
        assert_eq!(config.usage_source, UsageSource::Kubelet);
        assert_eq!(config.usage_interval, Duration::from_secs(30));
        assert_eq!(config.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(config.spool_max_bytes, 1024);
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn the_file_fills_what_flags_leave_to_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sender.toml");
        std::fs::write(
            &path,
            "target = \"file:9000\"\ncluster = \"from-file\"\nusage-interval = \"1m\"\n\
             usage-source = \"none\"\nnamespace = [\"x\", \"y\"]\n",
        )
        .expect("write");
        let config = Config::try_from_args([
            "sender",
            "--config",
            path.to_str().expect("utf8"),
            "--cluster=from-flag",
        ])
        .expect("config");
        assert_eq!(config.target, "file:9000");
        assert_eq!(
            config.cluster.as_deref(),
            Some("from-flag"),
            "flag beats file"
        );
        assert_eq!(
            config.usage_interval,
            Duration::from_secs(60),
            "file beats default"
        );
        assert_eq!(config.usage_source, UsageSource::None);
        assert_eq!(config.namespaces, ["x", "y"]);
    }

    #[test]
    fn yaml_files_work_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sender.yaml");
        std::fs::write(
            &path,
            "target: y:1\nspool-max-bytes: 2048\nusage_interval: 30s\n",
        )
        .expect("write");
        let config = Config::try_from_args(["sender", "--config", path.to_str().expect("utf8")])
            .expect("config");
        assert_eq!(config.spool_max_bytes, 2048);
        assert_eq!(config.spool_path(), None, "in memory without a directory");
        assert_eq!(
            config.usage_interval,
            Duration::from_secs(30),
            "snake_case works too"
        );
        std::fs::write(&path, "target: y:1\nspool-bytes: 2048\n").expect("write");
        let err = Config::try_from_args(["sender", "--config", path.to_str().expect("utf8")])
            .expect_err("unknown key");
        assert!(err.to_string().contains("spool-bytes"), "{err}");
    }

    #[test]
    fn the_spool_goes_to_disk_with_a_spool_or_state_dir() {
        let state = Config::try_from_args(["sender", "--target=b:1", "--state-dir=/var/lib/kr"])
            .expect("config");
        assert_eq!(state.spool_path(), Some(PathBuf::from("/var/lib/kr/spool")));
        let both = Config::try_from_args([
            "sender",
            "--target=b:1",
            "--state-dir=/var/lib/kr",
            "--spool-dir=/fast/spool",
        ])
        .expect("config");
        assert_eq!(both.spool_path(), Some(PathBuf::from("/fast/spool")));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sender.yaml");
        std::fs::write(&path, "target: y:1\nspool_dir: /from/file\n").expect("write");
        let file = Config::try_from_args(["sender", "--config", path.to_str().expect("utf8")])
            .expect("config");
        assert_eq!(file.spool_path(), Some(PathBuf::from("/from/file")));
    }

    #[test]
    fn a_token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        let config = Config::try_from_args([
            "sender",
            "--target=b:1",
            "--token-file",
            path.to_str().expect("utf8"),
        ])
        .expect("config");
        assert_eq!(config.token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (args, needle) in [
            (vec!["sender"], "--target"),
            (vec!["sender", "--target=nocolon"], "HOST:PORT"),
            (
                vec!["sender", "--target=b:1", "--cluster=bad name"],
                "--cluster",
            ),
            (
                vec!["sender", "--target=b:1", "--usage-interval=10ms"],
                "--usage-interval",
            ),
            (
                vec!["sender", "--target=b:1", "--usage-interval=soon"],
                "duration",
            ),
            (
                vec!["sender", "--target=b:1", "--usage-source=magic"],
                "magic",
            ),
        ] {
            let err = Config::try_from_args(args.clone()).expect_err("refused");
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn help_explains_every_option_with_its_default() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "--target",
            "KUBE_RELAY_TARGET",
            "--usage-interval",
            "[default: 15s]",
            "[default: metrics-api]",
            "[default: 3s]",
            "[default: 4194304]",
            "[default: 5ms]",
            "--state-dir",
            "--simulate",
            "--kubeconfig",
            "--context",
            "--namespace",
            "--selector",
            "--token-file",
            "--spool-max-bytes",
            "--spool-dir",
            "KUBE_RELAY_SPOOL_DIR",
            "--log-format",
        ] {
            assert!(help.contains(needle), "help lacks {needle}:\n{help}");
        }
    }

    #[test]
    fn tls_settings_come_from_flags_or_the_file_and_must_fit_together() {
        let config = Config::try_from_args([
            "sender",
            "--target=relay.example:9000",
            "--tls-ca=/etc/kr/ca.pem",
            "--tls-client-cert=/etc/kr/sender.pem",
            "--tls-client-key=/etc/kr/sender.key",
            "--tls-server-name=relay.internal",
        ])
        .expect("config");
        assert_eq!(config.tls_ca, Some(PathBuf::from("/etc/kr/ca.pem")));
        assert_eq!(
            config.tls_client_cert,
            Some(PathBuf::from("/etc/kr/sender.pem"))
        );
        assert_eq!(
            config.tls_client_key,
            Some(PathBuf::from("/etc/kr/sender.key"))
        );
        assert_eq!(config.tls_server_name.as_deref(), Some("relay.internal"));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sender.yaml");
        std::fs::write(
            &path,
            "target: b:1\ntls-ca: /a/ca.pem\ntls_server_name: b.example\n",
        )
        .expect("write");
        let config = Config::try_from_args(["sender", "--config", path.to_str().expect("utf8")])
            .expect("config");
        assert_eq!(config.tls_ca, Some(PathBuf::from("/a/ca.pem")));
        assert_eq!(config.tls_server_name.as_deref(), Some("b.example"));

        for (args, needle) in [
            (
                vec![
                    "sender",
                    "--target=b:1",
                    "--tls-ca=ca",
                    "--tls-client-cert=c",
                ],
                "go together",
            ),
            (
                vec![
                    "sender",
                    "--target=b:1",
                    "--tls-client-cert=c",
                    "--tls-client-key=k",
                ],
                "need --tls-ca",
            ),
            (
                vec!["sender", "--target=b:1", "--tls-server-name=b.example"],
                "need --tls-ca",
            ),
        ] {
            let err = Config::try_from_args(args.clone()).expect_err("refused");
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "KUBE_RELAY_TLS_CA",
            "KUBE_RELAY_TLS_CLIENT_CERT",
            "KUBE_RELAY_TLS_CLIENT_KEY",
            "KUBE_RELAY_TLS_SERVER_NAME",
        ] {
            assert!(help.contains(needle), "help lacks {needle}");
        }
    }

    #[test]
    fn durations_round_trip_through_display() {
        for (text, d) in [
            ("500ms", Duration::from_millis(500)),
            ("15s", Duration::from_secs(15)),
            ("2m", Duration::from_secs(120)),
            ("1.5", Duration::from_millis(1500)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
            assert_eq!(
                parse_duration(&DurationArg(d).to_string()),
                Ok(d),
                "{text} displayed"
            );
        }
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1d").is_err());
    }
}
