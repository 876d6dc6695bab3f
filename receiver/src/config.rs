//! Configuration: the documented defaults ([`ReceiverConfig::default`]), the command line
//! ([`Cli`], every flag also read from a `KUBE_RELAY_*` environment variable) and an optional
//! TOML or YAML file (`--config`). Precedence: defaults < file < environment < flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
/// Default bound on draining connections at shutdown: 10 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Heartbeat intervals of silence after which a link is declared dead.
pub const SILENT_INTERVALS: u32 = 3;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

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
    /// Largest data frame payload accepted, in bytes (`--max-frame-bytes`).
    pub max_frame_bytes: usize,
    /// Time a connection has to send an acceptable `Hello` (`--handshake-timeout`).
    pub handshake_timeout: Duration,
    /// Heartbeat interval told to senders (`--heartbeat-interval`); silence for
    /// [`SILENT_INTERVALS`] intervals closes the link.
    pub heartbeat_interval: Duration,
    /// Cap on series per cluster (`--max-series-per-cluster`).
    pub max_series_per_cluster: usize,
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

    /// Builds the configuration from parsed flags (and their environment variables), reading
    /// `--config` and `--token-file` if given.
    ///
    /// # Errors
    /// [`Error::Config`] for an unreadable file or a bad value, [`Error::TokenFile`] when the
    /// token file cannot be read.
    pub fn from_cli(cli: &Cli) -> Result<Self> {
        let file = match &cli.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let mut c = ReceiverConfig::default();
        // Each setting: the flag (or its env var) if given, else the file, else the default.
        if let Some(v) = pick(&cli.listen, &file.listen) {
            c.listen = parse_addr("listen", v)?;
        }
        if let Some(v) = pick(&cli.http_listen, &file.http_listen) {
            c.http_listen = parse_addr("http-listen", v)?;
        }
        if let Some(v) = pick(&cli.ttl, &file.ttl) {
            c.ttl = parse_duration(v).map_err(|e| Error::Config(format!("ttl: {e}")))?;
        }
        if let Some(v) = pick(&cli.handshake_timeout, &file.handshake_timeout) {
            c.handshake_timeout =
                parse_duration(v).map_err(|e| Error::Config(format!("handshake-timeout: {e}")))?;
        }
        if let Some(v) = pick(&cli.heartbeat_interval, &file.heartbeat_interval) {
            c.heartbeat_interval =
                parse_duration(v).map_err(|e| Error::Config(format!("heartbeat-interval: {e}")))?;
        }
        if let Some(v) = pick(&cli.shutdown_timeout, &file.shutdown_timeout) {
            c.shutdown_timeout =
                parse_duration(v).map_err(|e| Error::Config(format!("shutdown-timeout: {e}")))?;
        }
        if let Some(v) = cli.max_connections.or(file.max_connections) {
            c.max_connections = v;
        }
        if let Some(v) = cli.max_handshakes_per_ip.or(file.max_handshakes_per_ip) {
            c.max_handshakes_per_ip = Some(v);
        }
        if let Some(v) = cli.max_frame_bytes.or(file.max_frame_bytes) {
            c.max_frame_bytes = v;
        }
        if let Some(v) = cli.max_series_per_cluster.or(file.max_series_per_cluster) {
            c.max_series_per_cluster = v;
        }
        if let Some(v) = cli.log_format.or(file.log_format) {
            c.log_format = v;
        }
        c.state_dir = pick_path(&cli.state_dir, &file.state_dir).cloned();
        if let Some(v) = pick(&cli.remote_write_interval, &file.remote_write_interval) {
            c.remote_write_interval = parse_duration(v)
                .map_err(|e| Error::Config(format!("remote-write-interval: {e}")))?;
        }
        // The file's entries carry their own settings; a flag URL not among them gets the
        // defaults.
        for entry in file.remote_write.clone().unwrap_or_default() {
            c.remote_write.push(entry.resolve().map_err(Error::Config)?);
        }
        // An empty value (`KUBE_RELAY_REMOTE_WRITE_URL=` in a compose file) means none.
        for url in cli.remote_write_url.iter().filter(|u| !u.is_empty()) {
            if !c.remote_write.iter().any(|e| &e.url == url) {
                c.remote_write.push(Endpoint::new(url.clone()));
            }
        }
        let token_file = cli.token_file.as_ref().or(file.token_file.as_ref());
        // An empty token (e.g. `KUBE_RELAY_TOKEN=` in a compose file) means none.
        let token = pick(&cli.token, &file.token).filter(|t| !t.is_empty());
        c.token = match (token, token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(read_token(path)?),
            (None, None) => None,
        };
        c.tls = tls_files(
            "tls",
            pick_path(&cli.tls_cert, &file.tls_cert),
            pick_path(&cli.tls_key, &file.tls_key),
        )?;
        c.tls_client_ca = pick_path(&cli.tls_client_ca, &file.tls_client_ca).cloned();
        c.http_tls = tls_files(
            "http-tls",
            pick_path(&cli.http_tls_cert, &file.http_tls_cert),
            pick_path(&cli.http_tls_key, &file.http_tls_key),
        )?;
        let user = pick(&cli.http_basic_auth_user, &file.http_basic_auth_user);
        let password_file = pick_path(
            &cli.http_basic_auth_password_file,
            &file.http_basic_auth_password_file,
        );
        c.http_basic_auth = match (user, password_file) {
            (None, None) => None,
            (Some(user), Some(path)) => Some(BasicAuth {
                user: user.clone(),
                password: read_password(path)?,
            }),
            _ => {
                return Err(Error::Config(
                    "http-basic-auth-user and http-basic-auth-password-file must be given \
                     together"
                        .into(),
                ));
            }
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
            return bad("max-connections");
        }
        if self.max_frame_bytes == 0 {
            return bad("max-frame-bytes");
        }
        if self.max_frame_bytes > kube_relay_proto::MAX_FRAME_BYTES_CEILING {
            return Err(Error::Config(format!(
                "max-frame-bytes must be at most {} bytes",
                kube_relay_proto::MAX_FRAME_BYTES_CEILING
            )));
        }
        if self.heartbeat_interval.is_zero() {
            return bad("heartbeat-interval");
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake-timeout");
        }
        if self.heartbeat_interval.as_millis() > u128::from(u32::MAX) {
            return Err(Error::Config("heartbeat-interval is too long".into()));
        }
        if self.token.as_deref() == Some("") {
            return Err(Error::Config("token must not be empty".into()));
        }
        if self.max_handshakes_per_ip == Some(0) {
            return bad("max-handshakes-per-ip");
        }
        if self.tls_client_ca.is_some() && self.tls.is_none() {
            return Err(Error::Config(
                "tls-client-ca requires tls-cert and tls-key (mutual TLS needs TLS)".into(),
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
        if !self.remote_write.is_empty() && self.state_dir.is_none() {
            return Err(Error::Config(
                "remote write needs --state-dir: each URL's queue is kept on disk there so \
                 acknowledged data survives a restart"
                    .into(),
            ));
        }
        if self.remote_write_interval < Duration::from_secs(1) {
            return Err(Error::Config(
                "remote-write-interval must be at least 1s".into(),
            ));
        }
        if let Some(auth) = &self.http_basic_auth {
            if auth.user.is_empty() || auth.user.contains(':') {
                return Err(Error::Config(
                    "http-basic-auth-user must be non-empty and contain no ':'".into(),
                ));
            }
            if auth.password.is_empty() {
                return Err(Error::Config(
                    "the http basic auth password must not be empty".into(),
                ));
            }
        }
        Ok(())
    }
}

fn pick<'a>(flag: &'a Option<String>, file: &'a Option<String>) -> Option<&'a String> {
    flag.as_ref().or(file.as_ref())
}

fn pick_path<'a>(flag: &'a Option<PathBuf>, file: &'a Option<PathBuf>) -> Option<&'a PathBuf> {
    flag.as_ref().or(file.as_ref())
}

/// A certificate and key given together, or neither.
fn tls_files(
    what: &str,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> Result<Option<TlsFiles>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })),
        _ => Err(Error::Config(format!(
            "{what}-cert and {what}-key must be given together"
        ))),
    }
}

fn read_password(path: &Path) -> Result<String> {
    let raw = std::fs::read_to_string(path).map_err(|source| Error::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(raw.trim_end_matches(['\n', '\r']).to_owned())
}

fn parse_addr(what: &str, v: &str) -> Result<SocketAddr> {
    v.parse().map_err(|e| {
        Error::Config(format!(
            "{what}: {v:?} is not an address like 0.0.0.0:9000: {e}"
        ))
    })
}

fn read_token(path: &Path) -> Result<String> {
    let raw = std::fs::read_to_string(path).map_err(|source| Error::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(raw.trim_end_matches(['\n', '\r']).to_owned())
}

/// Parses a humane duration: `500ms`, `30s`, `5m`, `1h`, `1h30m`, or bare seconds (`90`).
///
/// # Errors
/// A message naming what could not be read.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{s:?}: expected a number before {rest:?}"));
        }
        let n: u64 = rest[..digits].parse().map_err(|e| format!("{s:?}: {e}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (use ms, s, m, h, d)"
                ));
            }
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The receiver's command line. Every flag can also be set through the environment variable
/// shown, or in the `--config` file (same names, `snake_case` or as the flags).
#[derive(Debug, Clone, Default, clap::Parser)]
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
                  Precedence: defaults < --config file < environment < flags."
)]
pub struct Cli {
    /// Configuration file (TOML or YAML, by extension) with the same settings, in snake_case
    /// or spelled like the flags.
    #[arg(long, env = "KUBE_RELAY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address senders connect to [default: 0.0.0.0:9000].
    #[arg(long, env = "KUBE_RELAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Address of /metrics, /healthz, /readyz and the status page [default: 0.0.0.0:9100].
    #[arg(long, env = "KUBE_RELAY_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<String>,

    /// How long a disconnected cluster's series stay before they are removed; its
    /// relay_cluster_up drops to 0 at once [default: 5m].
    #[arg(long, env = "KUBE_RELAY_TTL", value_name = "DURATION")]
    pub ttl: Option<String>,

    /// Shared secret senders must present in their Hello; empty means none [default: none,
    /// any sender is accepted, with a warning at start].
    #[arg(
        long,
        env = "KUBE_RELAY_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// File holding the shared secret (trailing newline ignored); --token wins if both are
    /// set.
    #[arg(long, env = "KUBE_RELAY_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// PEM certificate chain for TLS on the sender port; with --tls-key, senders must speak
    /// TLS. A renewed pair is served to new connections without a restart
    /// [default: none, plain TCP].
    #[arg(long, env = "KUBE_RELAY_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "KUBE_RELAY_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): senders must present a client certificate signed by one of
    /// them (mutual TLS); requires --tls-cert. A changed file is used for new connections
    /// without a restart (rotate through a bundle holding the old and the new CA) [default:
    /// none, no client certificates].
    #[arg(long, env = "KUBE_RELAY_TLS_CLIENT_CA", value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,

    /// PEM certificate chain for HTTPS on --http-listen (with --http-tls-key)
    /// [default: none, plain HTTP].
    #[arg(long, env = "KUBE_RELAY_HTTP_TLS_CERT", value_name = "PATH")]
    pub http_tls_cert: Option<PathBuf>,

    /// PEM private key of --http-tls-cert.
    #[arg(long, env = "KUBE_RELAY_HTTP_TLS_KEY", value_name = "PATH")]
    pub http_tls_key: Option<PathBuf>,

    /// User name for HTTP basic auth on /metrics and the status page (with
    /// --http-basic-auth-password-file); /healthz and /readyz stay open [default: none].
    #[arg(long, env = "KUBE_RELAY_HTTP_BASIC_AUTH_USER", value_name = "USER")]
    pub http_basic_auth_user: Option<String>,

    /// File holding the basic auth password in clear (trailing newline ignored; the same
    /// file can serve Prometheus' basic_auth.password_file).
    #[arg(
        long,
        env = "KUBE_RELAY_HTTP_BASIC_AUTH_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub http_basic_auth_password_file: Option<PathBuf>,

    /// Most concurrent sender connections; more are answered Busy and closed [default: 2048].
    #[arg(long, env = "KUBE_RELAY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most connections from one IP address still in their handshake (TLS and Hello, not
    /// yet authenticated); more are closed at once [default: half of --max-connections].
    #[arg(long, env = "KUBE_RELAY_MAX_HANDSHAKES_PER_IP", value_name = "N")]
    pub max_handshakes_per_ip: Option<usize>,

    /// Largest data frame accepted, in bytes; a larger length prefix closes the connection
    /// [default: 1048576].
    #[arg(long, env = "KUBE_RELAY_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// Time a new connection has to send its Hello [default: 5s].
    #[arg(long, env = "KUBE_RELAY_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<String>,

    /// Heartbeat interval told to senders; a link silent for 3 intervals is closed
    /// [default: 5s].
    #[arg(long, env = "KUBE_RELAY_HEARTBEAT_INTERVAL", value_name = "DURATION")]
    pub heartbeat_interval: Option<String>,

    /// Most series kept per cluster; further definitions are dropped and counted in
    /// relay_receiver_series_dropped_total [default: 500000].
    #[arg(long, env = "KUBE_RELAY_MAX_SERIES_PER_CLUSTER", value_name = "N")]
    pub max_series_per_cluster: Option<usize>,

    /// Bound on draining connections at shutdown [default: 10s].
    #[arg(long, env = "KUBE_RELAY_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,

    /// Log line format; the level comes from RUST_LOG [default: text].
    #[arg(long, env = "KUBE_RELAY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Directory for durable state: remote write keeps each URL's queue under
    /// DIR/remote-write/ (required with --remote-write-url) [default: none].
    #[arg(long, env = "KUBE_RELAY_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Prometheus remote-write URL (repeatable; the environment variable takes a
    /// comma-separated list). Every change of every cluster is written as a sample at the
    /// time the sender observed it, from a durable queue in --state-dir; senders' batches
    /// are acknowledged once every queue holds them. Per-URL settings (auth, TLS, headers,
    /// tenant, queue size, shards) go in the config file's remote_write list
    /// [default: none].
    #[arg(
        long,
        env = "KUBE_RELAY_REMOTE_WRITE_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub remote_write_url: Vec<String>,

    /// Every live series is written again at each multiple of this interval of cluster
    /// time, so PromQL's lookback never sees a steady value as absent [default: 15s].
    #[arg(
        long,
        env = "KUBE_RELAY_REMOTE_WRITE_INTERVAL",
        value_name = "DURATION"
    )]
    pub remote_write_interval: Option<String>,
}

/// The settings a `--config` file may hold, all optional: snake_case, or spelled like the
/// long flags (`http-listen`), as the sender's file accepts both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    #[serde(alias = "http-listen")]
    http_listen: Option<String>,
    ttl: Option<String>,
    token: Option<String>,
    #[serde(alias = "token-file")]
    token_file: Option<PathBuf>,
    #[serde(alias = "tls-cert")]
    tls_cert: Option<PathBuf>,
    #[serde(alias = "tls-key")]
    tls_key: Option<PathBuf>,
    #[serde(alias = "tls-client-ca")]
    tls_client_ca: Option<PathBuf>,
    #[serde(alias = "http-tls-cert")]
    http_tls_cert: Option<PathBuf>,
    #[serde(alias = "http-tls-key")]
    http_tls_key: Option<PathBuf>,
    #[serde(alias = "http-basic-auth-user")]
    http_basic_auth_user: Option<String>,
    #[serde(alias = "http-basic-auth-password-file")]
    http_basic_auth_password_file: Option<PathBuf>,
    #[serde(alias = "max-connections")]
    max_connections: Option<usize>,
    #[serde(alias = "max-handshakes-per-ip")]
    max_handshakes_per_ip: Option<usize>,
    #[serde(alias = "max-frame-bytes")]
    max_frame_bytes: Option<usize>,
    #[serde(alias = "handshake-timeout")]
    handshake_timeout: Option<String>,
    #[serde(alias = "heartbeat-interval")]
    heartbeat_interval: Option<String>,
    #[serde(alias = "max-series-per-cluster")]
    max_series_per_cluster: Option<usize>,
    #[serde(alias = "shutdown-timeout")]
    shutdown_timeout: Option<String>,
    #[serde(alias = "log-format")]
    log_format: Option<LogFormat>,
    #[serde(alias = "state-dir")]
    state_dir: Option<PathBuf>,
    #[serde(alias = "remote-write")]
    remote_write: Option<Vec<EndpointFile>>,
    #[serde(alias = "remote-write-interval")]
    remote_write_interval: Option<String>,
}

impl FileConfig {
    fn load(path: &Path) -> Result<Self> {
        config::Config::builder()
            .add_source(config::File::from(path))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

/// An entry of the config file's `remote_write` list; unset fields take the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointFile {
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
    batch_deadline: Option<String>,
    timeout: Option<String>,
}

impl EndpointFile {
    /// The settings, defaults filled in.
    ///
    /// # Errors
    /// A message naming a duration that does not parse.
    fn resolve(self) -> Result<Endpoint, String> {
        let mut e = Endpoint::new(self.url);
        let at = e.display_url();
        let duration = |what: &str, v: &str| {
            parse_duration(v).map_err(|err| format!("remote_write {at}: {what}: {err}"))
        };
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
        if let Some(v) = &self.batch_deadline {
            e.batch_deadline = duration("batch_deadline", v)?;
        }
        if let Some(v) = &self.timeout {
            e.timeout = duration("timeout", v)?;
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn humane_durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn no_flags_give_the_documented_defaults() {
        let cli = Cli::try_parse_from(["receiver"]).expect("parse");
        let c = ReceiverConfig::from_cli(&cli).expect("config");
        assert_eq!(c, ReceiverConfig::default());
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.http_listen.to_string(), "0.0.0.0:9100");
        assert_eq!(c.ttl, Duration::from_secs(300));
    }

    #[test]
    fn help_states_the_real_defaults() {
        let help = Cli::command().render_long_help().to_string();
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
            "KUBE_RELAY_LISTEN".to_owned(),
            "KUBE_RELAY_TTL".to_owned(),
        ] {
            assert!(help.contains(&needle), "help lacks {needle:?}:\n{help}");
        }
        assert_eq!(d.ttl, parse_duration("5m").expect("5m"));
        assert_eq!(d.handshake_timeout, parse_duration("5s").expect("5s"));
        assert_eq!(d.heartbeat_interval, parse_duration("5s").expect("5s"));
        assert_eq!(d.shutdown_timeout, parse_duration("10s").expect("10s"));
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("receiver.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\nttl = \"30s\"\nmax_series_per_cluster = 10\n",
        )
        .expect("write");
        let cli = Cli::try_parse_from([
            "receiver",
            "--config",
            path.to_str().expect("utf-8 path"),
            "--ttl",
            "2m",
        ])
        .expect("parse");
        let c = ReceiverConfig::from_cli(&cli).expect("config");
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.ttl, Duration::from_secs(120));
        assert_eq!(c.max_series_per_cluster, 10);
        assert_eq!(c.http_listen, ReceiverConfig::default().http_listen);
    }

    #[test]
    fn a_yaml_file_works_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("r.yaml");
        std::fs::write(&good, "log_format: json\nheartbeat_interval: 2s\n").expect("write");
        let cli = Cli {
            config: Some(good),
            ..Cli::default()
        };
        let c = ReceiverConfig::from_cli(&cli).expect("config");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.idle_timeout(), Duration::from_secs(6));

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "listn: 1.2.3.4:5\n").expect("write");
        let cli = Cli {
            config: Some(bad),
            ..Cli::default()
        };
        let err = ReceiverConfig::from_cli(&cli).expect_err("unknown key");
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn file_keys_may_be_spelled_like_the_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("r.toml");
        std::fs::write(
            &file,
            "http-listen = \"127.0.0.1:9191\"\nmax-series-per-cluster = 12\n\
             heartbeat_interval = \"2s\"\n",
        )
        .expect("write");
        let cli = Cli {
            config: Some(file),
            ..Cli::default()
        };
        let c = ReceiverConfig::from_cli(&cli).expect("config");
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:9191");
        assert_eq!(c.max_series_per_cluster, 12);
        assert_eq!(c.idle_timeout(), Duration::from_secs(6));
    }

    #[test]
    fn tls_and_basic_auth_come_from_flags_or_the_file_and_come_in_pairs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let password = dir.path().join("password");
        std::fs::write(&password, "pa ss\n").expect("write");
        let file = dir.path().join("receiver.yaml");
        std::fs::write(
            &file,
            format!(
                "tls_cert: /etc/relay/tls.crt\ntls_key: /etc/relay/tls.key\n\
                 tls_client_ca: /etc/relay/ca.crt\nhttp_basic_auth_user: prom\n\
                 http_basic_auth_password_file: {}\nmax_handshakes_per_ip: 7\n",
                password.display()
            ),
        )
        .expect("write");
        let cli = Cli::try_parse_from([
            "receiver",
            "--config",
            file.to_str().expect("utf-8"),
            "--http-tls-cert",
            "/h.crt",
            "--http-tls-key",
            "/h.key",
        ])
        .expect("parse");
        let c = ReceiverConfig::from_cli(&cli).expect("config");
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/etc/relay/tls.crt".into(),
                key: "/etc/relay/tls.key".into(),
            })
        );
        assert_eq!(c.tls_client_ca, Some(PathBuf::from("/etc/relay/ca.crt")));
        assert_eq!(
            c.http_tls.as_ref().map(|t| t.cert.clone()),
            Some(PathBuf::from("/h.crt"))
        );
        assert_eq!(
            c.http_basic_auth,
            Some(BasicAuth {
                user: "prom".into(),
                password: "pa ss".into(),
            })
        );
        assert_eq!(c.handshakes_per_ip_limit(), 7);

        for args in [
            &["receiver", "--tls-cert", "/c"][..],
            &["receiver", "--http-tls-key", "/k"],
            &["receiver", "--http-basic-auth-user", "prom"],
            &["receiver", "--tls-client-ca", "/ca"],
            &["receiver", "--max-handshakes-per-ip", "0"],
        ] {
            let cli = Cli::try_parse_from(args).expect("parse");
            let err = ReceiverConfig::from_cli(&cli).expect_err("incomplete");
            assert!(matches!(err, Error::Config(_)), "{args:?}: {err}");
        }
    }

    #[test]
    fn remote_write_urls_come_from_flags_and_the_file_with_their_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("receiver.yaml");
        std::fs::write(
            &file,
            "state_dir: /var/lib/relay\nremote_write_interval: 30s\nremote_write:\n  \
             - url: https://mimir.example/api/v1/push\n    tenant_header: X-Scope-OrgID\n    \
             headers: {X-Extra: one}\n    max_shards: 4\n    batch_deadline: 250ms\n",
        )
        .expect("write");
        let cli = Cli::try_parse_from([
            "receiver",
            "--config",
            file.to_str().expect("utf-8"),
            "--remote-write-url",
            "http://vm:8428/api/v1/write",
            "--remote-write-url",
            "https://mimir.example/api/v1/push",
        ])
        .expect("parse");
        let c = ReceiverConfig::from_cli(&cli).expect("config");
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

        let no_state =
            Cli::try_parse_from(["receiver", "--remote-write-url", "http://vm/w"]).expect("parse");
        let err = ReceiverConfig::from_cli(&no_state).expect_err("needs a state dir");
        assert!(err.to_string().contains("--state-dir"), "{err}");
        let bad = Cli::try_parse_from([
            "receiver",
            "--state-dir",
            "/tmp/x",
            "--remote-write-url",
            "vm:8428",
        ])
        .expect("parse");
        let err = ReceiverConfig::from_cli(&bad).expect_err("not a URL");
        assert!(err.to_string().contains("vm:8428"), "{err}");
    }

    #[test]
    fn the_shipped_remote_write_example_is_a_valid_configuration() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("remote-write.example.yaml");
        let cli = Cli {
            config: Some(path),
            ..Cli::default()
        };
        let c = ReceiverConfig::from_cli(&cli).expect("the example loads");
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

    #[test]
    fn the_token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        let cli = Cli {
            token_file: Some(path),
            ..Cli::default()
        };
        let c = ReceiverConfig::from_cli(&cli).expect("config");
        assert_eq!(c.token.as_deref(), Some("s3cret"));

        let empty = Cli {
            token: Some(String::new()),
            ..Cli::default()
        };
        let c = ReceiverConfig::from_cli(&empty).expect("an empty token means none");
        assert_eq!(c.token, None);

        let missing = Cli {
            token_file: Some(dir.path().join("nope")),
            ..Cli::default()
        };
        assert!(matches!(
            ReceiverConfig::from_cli(&missing),
            Err(Error::TokenFile { .. })
        ));
    }
}
