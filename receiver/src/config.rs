//! Configuration: the documented defaults ([`ReceiverConfig::default`]), the command line,
//! the environment (`KUBE_RELAY_RECEIVER_*`, and the shared `KUBE_RELAY_CONFIG`,
//! `KUBE_RELAY_TOKEN`, `KUBE_RELAY_TOKEN_FILE`, `KUBE_RELAY_LOG_FORMAT`) and an optional
//! config file (its `[receiver]` section and shared top-level keys).
//!
//! The layering is the one both binaries share ([`kube_relay_proto::config`]): flag >
//! environment > file > default for every setting. [`Cli`] is the schema of all three
//! layers (a field is a flag, a variable and a file key at once).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kube_relay_proto::config::{self as layer, HumanDuration, Section};
use serde::Deserialize;

pub use kube_relay_proto::config::LogFormat;

use crate::remote_write::{self, Endpoint};
use crate::security::BasicAuth;
use crate::tls::TlsFiles;
use crate::{Error, Result};

/// Default address senders connect to.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9000";
/// Default address of `/metrics`, `/healthz`, `/readyz` and the status page.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:9100";
/// Default time a disconnected cluster's series are kept: 5 minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default cap on concurrent sender connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// Default time a new connection has to complete its `Hello`: 5 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default heartbeat interval told to senders: 5 s (a link silent for 3 intervals is dead).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Default cap on series per cluster; definitions past it are dropped and counted.
pub const DEFAULT_MAX_SERIES_PER_CLUSTER: usize = 500_000;
pub use crate::store::DEFAULT_MAX_CLUSTERS;
/// Default bound on draining connections at shutdown: 10 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Smallest `--max-frame-bytes`, 64 KiB: above the largest thing a sender cannot split (one
/// series with its family's definition, a few KB), and small enough that no sane setting is
/// refused; smaller frames would only multiply per-frame costs.
pub const MIN_MAX_FRAME_BYTES: usize = 64 << 10;

/// Heartbeat intervals of silence after which a link is declared dead.
pub const SILENT_INTERVALS: u32 = 3;

/// Everything the receiver needs to run. `Default` gives the documented defaults.
///
/// `Debug` shows whether a token is set, never the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Address senders connect to (`--listen`).
    pub listen: SocketAddr,
    /// Address of the HTTP endpoints (`--http-listen`).
    pub http_listen: SocketAddr,
    /// How long a disconnected cluster's series are kept (`--ttl`).
    pub ttl: Duration,
    /// Shared secret senders must present, if any (`--token` / `--token-file`).
    pub token: Option<String>,
    /// TLS on the ingest port (`--tls-cert`, `--tls-key`); `None` is plain TCP.
    pub tls: Option<TlsFiles>,
    /// CA that must have signed every sender's client certificate (`--tls-client-ca`,
    /// mutual TLS); requires [`ReceiverConfig::tls`].
    pub tls_client_ca: Option<PathBuf>,
    /// TLS on the HTTP port (`--http-tls-cert`, `--http-tls-key`).
    pub http_tls: Option<TlsFiles>,
    /// Credentials required on `/metrics` and the status page (`--http-basic-auth-user`,
    /// `--http-basic-auth-password-file`); `/healthz` and `/readyz` stay open.
    pub http_basic_auth: Option<BasicAuth>,
    /// Cap on concurrent sender connections (`--max-connections`).
    pub max_connections: usize,
    /// Cap on connections from one IP address that have not yet authenticated
    /// (`--max-handshakes-per-ip`); `None` means half of `max_connections`.
    pub max_handshakes_per_ip: Option<usize>,
    /// Largest data frame payload accepted, in bytes (`--max-frame-bytes`); told to senders
    /// in `Welcome`, so they split batches to fit it.
    pub max_frame_bytes: usize,
    /// Time a connection has to send an acceptable `Hello` (`--handshake-timeout`).
    pub handshake_timeout: Duration,
    /// Heartbeat interval told to senders (`--heartbeat-interval`); silence for
    /// [`SILENT_INTERVALS`] intervals closes the link.
    pub heartbeat_interval: Duration,
    /// Cap on series per cluster (`--max-series-per-cluster`).
    pub max_series_per_cluster: usize,
    /// Cap on clusters held, connected or waiting for their TTL (`--max-clusters`).
    pub max_clusters: usize,
    /// Bound on draining connections at shutdown (`--shutdown-timeout`).
    pub shutdown_timeout: Duration,
    /// Log line format (`--log-format`).
    pub log_format: LogFormat,
    /// Directory for the receiver's durable state: the remote-write queues (`--state-dir`).
    pub state_dir: Option<PathBuf>,
    /// Remote-write URLs and their settings (`--remote-write-url`, the file's
    /// `remote_write` list).
    pub remote_write: Vec<Endpoint>,
    /// Interval of cluster time at which every live series is written again
    /// (`--remote-write-interval`).
    pub remote_write_interval: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            http_listen: DEFAULT_HTTP_LISTEN.parse().expect("valid default address"),
            ttl: DEFAULT_TTL,
            token: None,
            tls: None,
            tls_client_ca: None,
            http_tls: None,
            http_basic_auth: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes_per_ip: None,
            max_frame_bytes: kube_relay_proto::DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            max_series_per_cluster: DEFAULT_MAX_SERIES_PER_CLUSTER,
            max_clusters: DEFAULT_MAX_CLUSTERS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            log_format: LogFormat::Text,
            state_dir: None,
            remote_write: Vec::new(),
            remote_write_interval: remote_write::DEFAULT_INTERVAL,
        }
    }
}

impl std::fmt::Debug for ReceiverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverConfig")
            .field("listen", &self.listen)
            .field("http_listen", &self.http_listen)
            .field("ttl", &self.ttl)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("http_tls", &self.http_tls)
            .field("http_basic_auth", &self.http_basic_auth)
            .field("max_connections", &self.max_connections)
            .field("max_handshakes_per_ip", &self.max_handshakes_per_ip)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("max_series_per_cluster", &self.max_series_per_cluster)
            .field("max_clusters", &self.max_clusters)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("log_format", &self.log_format)
            .field("state_dir", &self.state_dir)
            .field("remote_write", &self.remote_write)
            .field("remote_write_interval", &self.remote_write_interval)
            .finish()
    }
}

impl ReceiverConfig {
    /// A configuration for tests: both listeners on `127.0.0.1:0`, other values default.
    pub fn loopback() -> Self {
        ReceiverConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ReceiverConfig::default()
        }
    }

    /// The effective cap on not-yet-authenticated connections per IP address: the
    /// configured value, or half of `max_connections` (at least 1).
    pub fn handshakes_per_ip_limit(&self) -> usize {
        self.max_handshakes_per_ip
            .unwrap_or(self.max_connections / 2)
            .clamp(1, self.max_connections.max(1))
    }

    /// Time after which a silent connection is closed.
    pub fn idle_timeout(&self) -> Duration {
        self.heartbeat_interval * SILENT_INTERVALS
    }

    /// The process's configuration: its arguments, its environment and the config file they
    /// name.
    ///
    /// # Errors
    /// As [`ReceiverConfig::load`].
    pub fn from_env() -> Result<Self> {
        ReceiverConfig::load(std::env::args_os(), std::env::vars_os())
    }

    /// The configuration `args` (the first is the program name), the environment `env` and
    /// the config file they name give, flag over variable over file over default.
    ///
    /// # Errors
    /// [`Error::Settings`] naming the flag, variable or file key at fault (and for `--help`
    /// and `--version`, which `main` prints), [`Error::Config`] for values that parse but
    /// cannot work.
    pub fn load<A, T, E>(args: A, env: E) -> Result<Self>
    where
        A: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
        E: IntoIterator<Item = (OsString, OsString)>,
    {
        let cli: Cli = layer::load(Section::Receiver, args, env)?;
        ReceiverConfig::from_cli(cli)
    }

    /// The configuration from merged settings: the token and password files read, pairs
    /// checked, every value validated.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad value or an incomplete pair, [`Error::Settings`] for an
    /// unreadable or empty token or password file.
    pub fn from_cli(cli: Cli) -> Result<Self> {
        let token = match (cli.token, cli.token_file) {
            (Some(token), _) if token.is_empty() => {
                return Err(Error::Config(
                    "--token is empty: give the shared secret or leave it unset".into(),
                ));
            }
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(layer::read_secret_file("token", &path)?),
            (None, None) => None,
        };
        let http_basic_auth = match (cli.http_basic_auth_user, cli.http_basic_auth_password_file) {
            (None, None) => None,
            (Some(user), Some(path)) => Some(BasicAuth {
                user,
                password: layer::read_secret_file("password", &path)?,
            }),
            _ => {
                return Err(Error::Config(
                    "--http-basic-auth-user and --http-basic-auth-password-file go together".into(),
                ));
            }
        };
        // The file's entries carry their own settings; a URL given only by a flag or the
        // environment gets the defaults.
        let mut remote_write: Vec<Endpoint> = cli
            .remote_write
            .unwrap_or_default()
            .into_iter()
            .map(EndpointFile::resolve)
            .collect();
        // An empty URL (`--remote-write-url=` in a script) means none, as an empty variable.
        for url in cli.remote_write_url.unwrap_or_default() {
            if !url.is_empty() && !remote_write.iter().any(|e| e.url == url) {
                remote_write.push(Endpoint::new(url));
            }
        }
        let c = ReceiverConfig {
            listen: cli.listen,
            http_listen: cli.http_listen,
            ttl: cli.ttl.get(),
            token,
            tls: tls_files("--tls", cli.tls_cert, cli.tls_key)?,
            tls_client_ca: cli.tls_client_ca,
            http_tls: tls_files("--http-tls", cli.http_tls_cert, cli.http_tls_key)?,
            http_basic_auth,
            max_connections: cli.max_connections,
            max_handshakes_per_ip: cli.max_handshakes_per_ip,
            max_frame_bytes: cli.max_frame_bytes,
            handshake_timeout: cli.handshake_timeout.get(),
            heartbeat_interval: cli.heartbeat_interval.get(),
            max_series_per_cluster: cli.max_series_per_cluster,
            max_clusters: cli.max_clusters,
            shutdown_timeout: cli.shutdown_timeout.get(),
            log_format: cli.log_format,
            state_dir: cli.state_dir,
            remote_write,
            remote_write_interval: cli.remote_write_interval.get(),
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks values that would make the receiver misbehave.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("{what} must be greater than zero")));
        if self.max_connections == 0 {
            return bad("--max-connections");
        }
        if self.max_clusters == 0 {
            return bad("--max-clusters");
        }
        if !(MIN_MAX_FRAME_BYTES..=kube_relay_proto::MAX_FRAME_BYTES_CEILING)
            .contains(&self.max_frame_bytes)
        {
            return Err(Error::Config(format!(
                "--max-frame-bytes {} must be between {MIN_MAX_FRAME_BYTES} and {} bytes",
                self.max_frame_bytes,
                kube_relay_proto::MAX_FRAME_BYTES_CEILING
            )));
        }
        if self.heartbeat_interval.is_zero() {
            return bad("--heartbeat-interval");
        }
        if self.handshake_timeout.is_zero() {
            return bad("--handshake-timeout");
        }
        if self.heartbeat_interval.as_millis() > u128::from(u32::MAX) {
            return Err(Error::Config("--heartbeat-interval is too long".into()));
        }
        if self.token.as_deref() == Some("") {
            return Err(Error::Config("--token must not be empty".into()));
        }
        if self.max_handshakes_per_ip == Some(0) {
            return bad("--max-handshakes-per-ip");
        }
        if self.tls_client_ca.is_some() && self.tls.is_none() {
            return Err(Error::Config(
                "--tls-client-ca requires --tls-cert and --tls-key (mutual TLS needs TLS)".into(),
            ));
        }
        for (i, endpoint) in self.remote_write.iter().enumerate() {
            endpoint.validate().map_err(Error::Config)?;
            if self.remote_write[..i].iter().any(|e| e.url == endpoint.url) {
                return Err(Error::Config(format!(
                    "remote_write url {} is given twice",
                    endpoint.display_url()
                )));
            }
        }
        if let Some(dir) = &self.state_dir {
            // A missing directory is created when remote write starts; a file never works
            // (and would otherwise say only "Not a directory" about a queue path inside it).
            if std::fs::metadata(dir).is_ok_and(|meta| !meta.is_dir()) {
                return Err(Error::Config(format!(
                    "--state-dir {}: exists and is not a directory",
                    dir.display()
                )));
            }
        }
        if !self.remote_write.is_empty() && self.state_dir.is_none() {
            return Err(Error::Config(
                "remote write needs --state-dir: each URL's queue is kept on disk there so \
                 acknowledged data survives a restart"
                    .into(),
            ));
        }
        if self.remote_write_interval < Duration::from_secs(1) {
            return Err(Error::Config(
                "--remote-write-interval must be at least 1s".into(),
            ));
        }
        if let Some(auth) = &self.http_basic_auth {
            if auth.user.is_empty() || auth.user.contains(':') {
                return Err(Error::Config(
                    "--http-basic-auth-user must be non-empty and contain no ':'".into(),
                ));
            }
            if auth.password.is_empty() {
                return Err(Error::Config(
                    "the http basic auth password must not be empty".into(),
                ));
            }
        }
        if addresses_clash(self.listen, self.http_listen) {
            return Err(Error::Config(format!(
                "--listen {} and --http-listen {} take the same port: give the sender port \
                 and the HTTP port different ones",
                self.listen, self.http_listen
            )));
        }
        Ok(())
    }
}

/// Whether two listen addresses would fight over one port: the same port (not 0, which
/// picks a free one) on the same address, or on any address when either is unspecified
/// (`0.0.0.0` and `::` take the port on every address).
fn addresses_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A certificate and key given together, or neither.
fn tls_files(what: &str, cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        _ => Err(Error::Config(format!(
            "{what}-cert and {what}-key go together"
        ))),
    }
}

/// The receiver's settings as any layer gives them: the command line, and the schema of the
/// environment and the config file (a field is a flag, a variable and a file key at once;
/// see [`kube_relay_proto::config`]). A default declared here (`default_value_t`) is the
/// lowest layer and shown by `--help`; `None` means no layer gave the setting.
#[derive(Debug, Clone, clap::Parser, Deserialize)]
#[command(
    name = "receiver",
    version,
    about = "Accepts kube-relay senders and serves their clusters' state to Prometheus.",
    long_about = "Accepts kube-relay senders on --listen and serves every connected cluster's \
                  metrics on --http-listen: /metrics (OpenMetrics or Prometheus text, every \
                  series labelled with its cluster), /healthz, /readyz and a status page at /.\n\n\
                  Security: --token (or --token-file) is checked in constant time before any \
                  data is decoded; --tls-cert/--tls-key put the sender port under TLS and \
                  --tls-client-ca requires client certificates (mutual TLS). /metrics and the \
                  status page take --http-tls-cert/--http-tls-key and HTTP basic auth; \
                  /healthz and /readyz stay open. Without TLS and token any client reaching \
                  --listen can report any cluster: fine for a lab, logged as a warning.\n\n\
                  Port 9100, the default of --http-listen, is also node_exporter's: on a \
                  host that runs one, move either (e.g. --http-listen 0.0.0.0:9101)."
)]
pub struct Cli {
    /// Config file (TOML or YAML, by extension): the shared keys at the top level, the
    /// receiver's under [receiver].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address senders connect to: an IP address (0.0.0.0 for every interface) and a port.
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Address of /metrics, /healthz, /readyz and the status page. Port 9100 is also
    /// node_exporter's default: where node_exporter runs, pick another (e.g. 9101).
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,

    /// How long a disconnected cluster's series stay before they are removed; its
    /// relay_cluster_up drops to 0 at once.
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(DEFAULT_TTL))]
    pub ttl: HumanDuration,

    /// Shared secret senders must present in their Hello; --token and --token-file are one
    /// setting, the highest layer giving either wins [default: none, any sender is
    /// accepted, with a warning at start].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// File holding the shared secret (surrounding whitespace trimmed; an empty file is
    /// refused).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM certificate chain for TLS on the sender port; with --tls-key, senders must speak
    /// TLS. A renewed pair is served to new connections without a restart
    /// [default: none, plain TCP].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): senders must present a client certificate signed by one of
    /// them (mutual TLS); requires --tls-cert. A changed file is used for new connections
    /// without a restart (rotate through a bundle holding the old and the new CA) [default:
    /// none, no client certificates].
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// PEM certificate chain for HTTPS on --http-listen (with --http-tls-key)
    /// [default: none, plain HTTP].
    #[arg(long, value_name = "FILE")]
    pub http_tls_cert: Option<PathBuf>,

    /// PEM private key of --http-tls-cert.
    #[arg(long, value_name = "FILE")]
    pub http_tls_key: Option<PathBuf>,

    /// User name for HTTP basic auth on /metrics and the status page (with
    /// --http-basic-auth-password-file); /healthz and /readyz stay open [default: none].
    #[arg(long, value_name = "USER")]
    pub http_basic_auth_user: Option<String>,

    /// File holding the basic auth password in clear (surrounding whitespace trimmed, as
    /// Prometheus' basic_auth.password_file does, so the same file can serve both).
    #[arg(long, value_name = "FILE")]
    pub http_basic_auth_password_file: Option<PathBuf>,

    /// Most concurrent sender connections; more are answered Busy and closed.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Most connections from one IP address still in their handshake (TLS and Hello, not
    /// yet authenticated); more are closed at once [default: half of --max-connections].
    #[arg(long, value_name = "N")]
    pub max_handshakes_per_ip: Option<usize>,

    /// Largest data frame accepted, in bytes (at least 65536); told to senders when they
    /// connect, so they split batches to fit.
    #[arg(long, value_name = "BYTES",
          default_value_t = kube_relay_proto::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Time a new connection has to send its Hello.
    #[arg(long, value_name = "DURATION",
          default_value_t = HumanDuration(DEFAULT_HANDSHAKE_TIMEOUT))]
    pub handshake_timeout: HumanDuration,

    /// Heartbeat interval told to senders when they connect; a link silent for 3 intervals
    /// is closed.
    #[arg(long, value_name = "DURATION",
          default_value_t = HumanDuration(DEFAULT_HEARTBEAT_INTERVAL))]
    pub heartbeat_interval: HumanDuration,

    /// Most series kept per cluster; further definitions are dropped and counted in
    /// relay_receiver_series_dropped_total.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SERIES_PER_CLUSTER)]
    pub max_series_per_cluster: usize,

    /// Most clusters held at once, connected or waiting for their TTL; a sender of a new
    /// cluster beyond it is refused (Busy, counted in
    /// relay_receiver_handshakes_rejected_total{reason="busy"}). The default is twice the
    /// 10,000-sender fan-in goal.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CLUSTERS)]
    pub max_clusters: usize,

    /// Bound on draining connections at shutdown.
    #[arg(long, value_name = "DURATION",
          default_value_t = HumanDuration(DEFAULT_SHUTDOWN_TIMEOUT))]
    pub shutdown_timeout: HumanDuration,

    /// Log format (the level comes from RUST_LOG, default `info`).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Directory for durable state: remote write keeps each URL's queue under
    /// DIR/remote-write/ (required with --remote-write-url) [default: none].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Prometheus remote-write URL (repeatable; the environment variable takes a
    /// comma-separated list). Every change of every cluster is written as a sample at the
    /// time the sender observed it, from a durable queue in --state-dir; senders' batches
    /// are acknowledged once every queue holds them. Per-URL settings (auth, TLS, headers,
    /// tenant, queue size, shards) go in the config file's remote_write list under
    /// [receiver] [default: none].
    #[arg(long, value_name = "URL")]
    pub remote_write_url: Option<Vec<String>>,

    /// Every live series is written again at each multiple of this interval of cluster
    /// time, so PromQL's lookback never sees a steady value as absent.
    #[arg(long, value_name = "DURATION",
          default_value_t = HumanDuration(remote_write::DEFAULT_INTERVAL))]
    pub remote_write_interval: HumanDuration,

    /// Remote-write endpoints with their settings: only in the config file (a list of
    /// tables under [receiver]).
    #[arg(skip)]
    pub remote_write: Option<Vec<EndpointFile>>,
}

/// An entry of the config file's `remote_write` list; unset fields take the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointFile {
    url: String,
    #[serde(alias = "bearer-token-file")]
    bearer_token_file: Option<PathBuf>,
    #[serde(alias = "basic-auth-username")]
    basic_auth_username: Option<String>,
    #[serde(alias = "basic-auth-password-file")]
    basic_auth_password_file: Option<PathBuf>,
    #[serde(alias = "tls-ca-file")]
    tls_ca_file: Option<PathBuf>,
    #[serde(alias = "tls-cert-file")]
    tls_cert_file: Option<PathBuf>,
    #[serde(alias = "tls-key-file")]
    tls_key_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(alias = "tenant-header")]
    tenant_header: Option<String>,
    #[serde(alias = "max-queue-bytes")]
    max_queue_bytes: Option<u64>,
    #[serde(alias = "min-shards")]
    min_shards: Option<usize>,
    #[serde(alias = "max-shards")]
    max_shards: Option<usize>,
    #[serde(alias = "max-samples-per-send")]
    max_samples_per_send: Option<usize>,
    #[serde(alias = "batch-deadline")]
    batch_deadline: Option<HumanDuration>,
    timeout: Option<HumanDuration>,
}

impl EndpointFile {
    /// The settings, defaults filled in.
    fn resolve(self) -> Endpoint {
        let mut e = Endpoint::new(self.url);
        e.bearer_token_file = self.bearer_token_file;
        e.basic_auth_username = self.basic_auth_username;
        e.basic_auth_password_file = self.basic_auth_password_file;
        e.tls_ca_file = self.tls_ca_file;
        e.tls_cert_file = self.tls_cert_file;
        e.tls_key_file = self.tls_key_file;
        e.headers = self.headers;
        e.tenant_header = self.tenant_header;
        if let Some(v) = self.max_queue_bytes {
            e.max_queue_bytes = v;
        }
        if let Some(v) = self.min_shards {
            e.min_shards = v;
        }
        if let Some(v) = self.max_shards {
            e.max_shards = v;
        }
        if let Some(v) = self.max_samples_per_send {
            e.max_samples_per_send = v;
        }
        if let Some(v) = self.batch_deadline {
            e.batch_deadline = v.get();
        }
        if let Some(v) = self.timeout {
            e.timeout = v.get();
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tests pass the environment explicitly; none sets the process environment (tests run
    // in parallel threads).

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<ReceiverConfig> {
        let env: Vec<(OsString, OsString)> = env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        ReceiverConfig::load(std::iter::once("receiver").chain(args.iter().copied()), env)
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    }

    /// One row per setting: a value for the file (a TOML literal), one for the environment
    /// and one for the flag, each different from the layer below (the file's from the
    /// default), the flags the setting needs to be valid, and what the setting changes.
    struct Row {
        key: &'static str,
        values: [&'static str; 3],
        needs: &'static [&'static str],
        shows: fn(&ReceiverConfig) -> String,
    }

    fn rows() -> Vec<Row> {
        fn row(
            key: &'static str,
            values: [&'static str; 3],
            shows: fn(&ReceiverConfig) -> String,
        ) -> Row {
            Row {
                key,
                values,
                needs: &[],
                shows,
            }
        }
        let tls = |c: &ReceiverConfig| format!("{:?}", c.tls);
        let http_tls = |c: &ReceiverConfig| format!("{:?}", c.http_tls);
        vec![
            row(
                "listen",
                ["\"127.0.0.1:7001\"", "127.0.0.1:7002", "127.0.0.1:7003"],
                |c| c.listen.to_string(),
            ),
            row(
                "http_listen",
                ["\"127.0.0.1:7101\"", "127.0.0.1:7102", "127.0.0.1:7103"],
                |c| c.http_listen.to_string(),
            ),
            row("ttl", ["\"1m\"", "2m", "3m"], |c| format!("{:?}", c.ttl)),
            row("token", ["\"f\"", "e", "g"], |c| format!("{:?}", c.token)),
            Row {
                needs: &["--tls-key=/k"],
                ..row("tls_cert", ["\"/f\"", "/e", "/g"], tls)
            },
            Row {
                needs: &["--tls-cert=/c"],
                ..row("tls_key", ["\"/f\"", "/e", "/g"], tls)
            },
            Row {
                needs: &["--tls-cert=/c", "--tls-key=/k"],
                ..row("tls_client_ca", ["\"/f\"", "/e", "/g"], |c| {
                    format!("{:?}", c.tls_client_ca)
                })
            },
            Row {
                needs: &["--http-tls-key=/k"],
                ..row("http_tls_cert", ["\"/f\"", "/e", "/g"], http_tls)
            },
            Row {
                needs: &["--http-tls-cert=/c"],
                ..row("http_tls_key", ["\"/f\"", "/e", "/g"], http_tls)
            },
            row("max_connections", ["10", "20", "30"], |c| {
                c.max_connections.to_string()
            }),
            row("max_handshakes_per_ip", ["1", "2", "3"], |c| {
                format!("{:?}", c.max_handshakes_per_ip)
            }),
            row("max_frame_bytes", ["70000", "80000", "90000"], |c| {
                c.max_frame_bytes.to_string()
            }),
            row("handshake_timeout", ["\"1s\"", "2s", "3s"], |c| {
                format!("{:?}", c.handshake_timeout)
            }),
            row("heartbeat_interval", ["\"1s\"", "2s", "3s"], |c| {
                format!("{:?}", c.heartbeat_interval)
            }),
            row("max_series_per_cluster", ["1", "2", "3"], |c| {
                c.max_series_per_cluster.to_string()
            }),
            row("max_clusters", ["1", "2", "3"], |c| {
                c.max_clusters.to_string()
            }),
            row("shutdown_timeout", ["\"1s\"", "2s", "3s"], |c| {
                format!("{:?}", c.shutdown_timeout)
            }),
            row("log_format", ["\"json\"", "text", "json"], |c| {
                c.log_format.to_string()
            }),
            row("state_dir", ["\"/f\"", "/e", "/g"], |c| {
                format!("{:?}", c.state_dir)
            }),
            Row {
                needs: &["--state-dir=/s"],
                ..row(
                    "remote_write_url",
                    ["[\"http://f/w\"]", "http://e/w,http://e2/w", "http://g/w"],
                    |c| {
                        let urls: Vec<&str> =
                            c.remote_write.iter().map(|e| e.url.as_str()).collect();
                        urls.join(",")
                    },
                )
            },
            row("remote_write_interval", ["\"1m\"", "2m", "3m"], |c| {
                format!("{:?}", c.remote_write_interval)
            }),
        ]
    }

    #[test]
    fn every_setting_takes_the_flag_over_the_environment_over_the_file_over_the_default() {
        let command = layer::command::<Cli>(Section::Receiver);
        let rows = rows();
        // `config` names the file itself; the file settings read one: each has its own test.
        let special = [
            "config",
            "token_file",
            "http_basic_auth_user",
            "http_basic_auth_password_file",
        ];
        for key in layer::keys(&command) {
            assert!(
                special.contains(&key.id.as_str()) || rows.iter().any(|r| r.key == key.id),
                "setting {} has no precedence row: add one",
                key.id
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for row in rows {
            let flag = format!("--{}", row.key.replace('_', "-"));
            let var = Section::Receiver.env_name(row.key);
            let section = if layer::SHARED_KEYS.contains(&row.key) {
                ""
            } else {
                "[receiver]\n"
            };
            let key = row.key.replace('_', "-");
            let path = write(
                &dir,
                "receiver.toml",
                &format!("{section}{key} = {}\n", row.values[0]),
            );
            let with = |extra: &[String], env: &[(&str, &str)]| {
                let mut all: Vec<&str> = row.needs.to_vec();
                all.extend(extra.iter().map(String::as_str));
                let config =
                    load(&all, env).unwrap_or_else(|e| panic!("{}: {all:?} {env:?}: {e}", row.key));
                (row.shows)(&config)
            };
            let config_flag = ["--config".to_owned(), path.clone()];
            let value_flag = [format!("{flag}={}", row.values[2])];
            let env = [(var.as_str(), row.values[1])];
            let both_flags = [
                config_flag[0].clone(),
                config_flag[1].clone(),
                value_flag[0].clone(),
            ];
            // Without the setting, a row that needs it may be refused: that is its default.
            let default = {
                let all: Vec<&str> = row.needs.to_vec();
                load(&all, &[]).map_or_else(|e| e.to_string(), |c| (row.shows)(&c))
            };
            let file = with(&config_flag, &[]);
            assert_ne!(file, default, "{}: the file is read", row.key);
            let file_env = with(&config_flag, &env);
            assert_eq!(
                file_env,
                with(&[], &env),
                "{}: the environment beats the file",
                row.key
            );
            assert_ne!(file_env, file, "{}: {var} is read", row.key);
            let all = with(&both_flags, &env);
            assert_eq!(
                all,
                with(&value_flag, &[]),
                "{}: the flag beats the environment",
                row.key
            );
            assert_ne!(all, file_env, "{}: {flag} is read", row.key);
        }
    }

    #[test]
    fn secret_files_take_the_flag_over_the_environment_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<String> = ["file", "env", "flag"]
            .iter()
            .map(|t| write(&dir, &format!("{t}.secret"), &format!("{t}-secret \n")))
            .collect();
        for (key, shows) in [
            (
                "token_file",
                (|c: &ReceiverConfig| c.token.clone()) as fn(&_) -> _,
            ),
            ("http_basic_auth_password_file", |c: &ReceiverConfig| {
                c.http_basic_auth.as_ref().map(|a| a.password.clone())
            }),
        ] {
            let needs: &[&str] = if key == "token_file" {
                &[]
            } else {
                &["--http-basic-auth-user=prom"]
            };
            let file_key = Section::Receiver.file_key(key);
            let (section, name) = match file_key.split_once('.') {
                Some((section, name)) => (format!("[{section}]\n"), name.to_owned()),
                None => (String::new(), file_key),
            };
            let toml = write(
                &dir,
                "r.toml",
                &format!("{section}{name} = {:?}\n", files[0]),
            );
            let var = Section::Receiver.env_name(key);
            let flag = format!("--{}={}", key.replace('_', "-"), files[2]);
            let get = |args: &[&str], env: &[(&str, &str)]| {
                let mut all = needs.to_vec();
                all.extend_from_slice(args);
                shows(&load(&all, env).expect("config"))
            };
            let env = [(var.as_str(), files[1].as_str())];
            assert_eq!(
                get(&["--config", &toml], &[]).as_deref(),
                Some("file-secret")
            );
            assert_eq!(
                get(&["--config", &toml], &env).as_deref(),
                Some("env-secret")
            );
            assert_eq!(
                get(&["--config", &toml, &flag], &env).as_deref(),
                Some("flag-secret"),
                "{key}"
            );
        }
        // The basic auth user, too, goes flag > environment > file.
        let toml = write(
            &dir,
            "u.toml",
            &format!(
                "[receiver]\nhttp-basic-auth-user = \"f\"\nhttp-basic-auth-password-file = {:?}\n",
                files[0]
            ),
        );
        let user = |args: &[&str], env: &[(&str, &str)]| {
            load(args, env)
                .expect("config")
                .http_basic_auth
                .map(|a| a.user)
        };
        let env = [("KUBE_RELAY_RECEIVER_HTTP_BASIC_AUTH_USER", "e")];
        assert_eq!(user(&["--config", &toml], &[]).as_deref(), Some("f"));
        assert_eq!(user(&["--config", &toml], &env).as_deref(), Some("e"));
        assert_eq!(
            user(&["--config", &toml, "--http-basic-auth-user=g"], &env).as_deref(),
            Some("g")
        );
    }

    #[test]
    fn a_token_file_flag_beats_a_token_in_the_file_or_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = write(&dir, "token", "from-token-file\n");
        let toml = write(&dir, "r.toml", "token = \"from-config-file\"\n");
        let flag = format!("--token-file={token}");
        let c = load(&["--config", &toml, &flag], &[]).expect("config");
        assert_eq!(c.token.as_deref(), Some("from-token-file"));
        let c = load(&[&flag], &[("KUBE_RELAY_TOKEN", "from-env")]).expect("config");
        assert_eq!(c.token.as_deref(), Some("from-token-file"));
        // The receiver no longer silently prefers --token when both are given.
        let err = load(&["--token=t", &flag], &[]).expect_err("both");
        assert!(err.to_string().contains("--token-file"), "{err}");
    }

    #[test]
    fn no_flags_give_the_documented_defaults() {
        let c = load(&[], &[]).expect("config");
        assert_eq!(c, ReceiverConfig::default());
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.http_listen.to_string(), "0.0.0.0:9100");
        assert_eq!(c.ttl, Duration::from_secs(300));
    }

    #[test]
    fn help_states_the_real_defaults_the_variables_and_the_precedence() {
        let help = layer::command::<Cli>(Section::Receiver)
            .render_long_help()
            .to_string();
        let d = ReceiverConfig::default();
        for needle in [
            format!("[default: {}]", d.listen),
            format!("[default: {}]", d.http_listen),
            "[default: 5m]".to_owned(),
            format!("[default: {}]", d.max_connections),
            format!("[default: {}]", d.max_frame_bytes),
            "[default: 5s]".to_owned(),
            format!("[default: {}]", d.max_series_per_cluster),
            "[default: 10s]".to_owned(),
            "[env: KUBE_RELAY_RECEIVER_LISTEN]".to_owned(),
            "[env: KUBE_RELAY_RECEIVER_TTL]".to_owned(),
            "[env: KUBE_RELAY_TOKEN_FILE]".to_owned(),
            "--token-file <FILE>".to_owned(),
            "--tls-cert <FILE>".to_owned(),
            "--log-format <FORMAT>".to_owned(),
            "node_exporter".to_owned(),
            layer::PRECEDENCE
                .lines()
                .next()
                .expect("a first line")
                .to_owned(),
        ] {
            assert!(help.contains(&needle), "help lacks {needle:?}:\n{help}");
        }
        assert!(!help.contains("<PATH>"), "{help}");
        assert!(
            layer::schema_problems::<Cli>(Section::Receiver).is_empty(),
            "{:?}",
            layer::schema_problems::<Cli>(Section::Receiver)
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = write(&dir, "empty.tok", " \n");
        let missing = dir.path().join("missing.tok");
        let missing = missing.to_str().expect("utf-8");
        for (args, env, needle) in [
            (
                vec![],
                vec![("KUBE_RELAY_RECEIVER_TTL", "abc")],
                "KUBE_RELAY_RECEIVER_TTL",
            ),
            (
                vec![],
                vec![("KUBE_RELAY_TTL", "abc")],
                "KUBE_RELAY_RECEIVER_TTL",
            ),
            (vec!["--token-file", &empty], vec![], "empty.tok"),
            (vec!["--token-file", missing], vec![], "missing.tok"),
            (vec!["--token="], vec![], "--token is empty"),
            (
                vec!["--listen=127.0.0.1:9000", "--http-listen=127.0.0.1:9000"],
                vec![],
                "take the same port",
            ),
            (
                vec!["--listen=0.0.0.0:9000", "--http-listen=127.0.0.1:9000"],
                vec![],
                "take the same port",
            ),
            (
                vec!["--max-frame-bytes=100"],
                vec![],
                "--max-frame-bytes 100",
            ),
            (vec!["--tls-cert", "/c"], vec![], "--tls-cert and --tls-key"),
            (
                vec!["--http-tls-key", "/k"],
                vec![],
                "--http-tls-cert and --http-tls-key",
            ),
            (
                vec!["--http-basic-auth-user", "prom"],
                vec![],
                "go together",
            ),
            (
                vec!["--tls-client-ca", "/ca"],
                vec![],
                "--tls-client-ca requires",
            ),
            (
                vec!["--max-handshakes-per-ip", "0"],
                vec![],
                "--max-handshakes-per-ip",
            ),
        ] {
            let err = load(&args, &env).expect_err("refused");
            let text = kube_relay_proto::config::error_chain(std::iter::successors(
                Some(&err as &(dyn std::error::Error + 'static)),
                |e| e.source(),
            ));
            assert!(text.contains(needle), "{args:?} {env:?}: {text}");
        }
        // Different ports, or port 0 twice (tests), are fine.
        load(&["--listen=127.0.0.1:0", "--http-listen=127.0.0.1:0"], &[]).expect("port 0");
        load(
            &["--listen=127.0.0.1:9000", "--http-listen=127.0.0.2:9000"],
            &[],
        )
        .expect("two addresses");
    }

    #[test]
    fn remote_write_urls_come_from_flags_and_the_file_with_their_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            &dir,
            "receiver.yaml",
            "receiver:\n  state_dir: /var/lib/relay\n  remote_write_interval: 30s\n  \
             remote_write:\n    - url: https://mimir.example/api/v1/push\n      \
             tenant_header: X-Scope-OrgID\n      headers: {X-Extra: one}\n      \
             max_shards: 4\n      batch_deadline: 250ms\n",
        );
        let c = load(
            &[
                "--config",
                &file,
                "--remote-write-url",
                "http://vm:8428/api/v1/write",
                "--remote-write-url",
                "https://mimir.example/api/v1/push",
            ],
            &[],
        )
        .expect("config");
        assert_eq!(c.remote_write.len(), 2, "{:?}", c.remote_write);
        let mimir = &c.remote_write[0];
        assert_eq!(mimir.tenant_header.as_deref(), Some("X-Scope-OrgID"));
        assert_eq!(mimir.max_shards, 4);
        assert_eq!(mimir.batch_deadline, Duration::from_millis(250));
        assert_eq!(
            c.remote_write[1],
            Endpoint::new("http://vm:8428/api/v1/write")
        );
        assert_eq!(c.remote_write_interval, Duration::from_secs(30));

        let err = load(&["--remote-write-url", "http://vm/w"], &[]).expect_err("no state dir");
        assert!(err.to_string().contains("--state-dir"), "{err}");
        let err = load(
            &["--state-dir", "/tmp/x", "--remote-write-url", "vm:8428"],
            &[],
        )
        .expect_err("not a URL");
        assert!(err.to_string().contains("vm:8428"), "{err}");
        let typo = write(
            &dir,
            "typo.yaml",
            "receiver:\n  remote_write:\n    - url: http://vm/w\n      tenant: x\n",
        );
        let err = load(&["--config", &typo], &[]).expect_err("unknown endpoint key");
        assert!(err.to_string().contains("tenant"), "{err}");
    }

    #[test]
    fn the_shipped_remote_write_example_is_a_valid_configuration() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("remote-write.example.yaml");
        let c = load(&["--config", path.to_str().expect("utf-8")], &[]).expect("the example loads");
        let urls: Vec<&str> = c.remote_write.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(urls.len(), 3, "{urls:?}");
        assert_eq!(
            c.remote_write[1].tenant_header.as_deref(),
            Some("X-Scope-OrgID")
        );
        assert_eq!(
            c.remote_write[2]
                .headers
                .get("THANOS-TENANT")
                .map(String::as_str),
            Some("platform")
        );
        let empty = load(
            &["--state-dir=/s"],
            &[("KUBE_RELAY_RECEIVER_REMOTE_WRITE_URL", "")],
        )
        .expect("an empty variable is unset");
        assert!(empty.remote_write.is_empty());
    }

    #[test]
    fn the_handshake_cap_per_address_defaults_to_half_the_connection_cap() {
        let mut c = ReceiverConfig::default();
        assert_eq!(c.handshakes_per_ip_limit(), DEFAULT_MAX_CONNECTIONS / 2);
        c.max_connections = 1;
        assert_eq!(c.handshakes_per_ip_limit(), 1);
        c.max_handshakes_per_ip = Some(10_000);
        assert_eq!(
            c.handshakes_per_ip_limit(),
            1,
            "never above the connection cap"
        );
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let c = ReceiverConfig {
            token: Some("s3cret-token".into()),
            http_basic_auth: Some(BasicAuth {
                user: "prom".into(),
                password: "s3cret-password".into(),
            }),
            ..ReceiverConfig::default()
        };
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
