//! Configuration: the command line, the environment (`KUBE_RELAY_SENDER_*`, and the shared
//! `KUBE_RELAY_CONFIG`, `KUBE_RELAY_TOKEN`, `KUBE_RELAY_TOKEN_FILE`, `KUBE_RELAY_LOG_FORMAT`)
//! and an optional config file (its `[sender]` section and shared top-level keys), resolved
//! into one [`Config`].
//!
//! The layering is the one both binaries share ([`kube_relay_proto::config`]): flag >
//! environment > file > default for every setting. [`Cli`] is the schema of all three
//! layers (a field is a flag, a variable and a file key at once); every default is defined
//! once in [`defaults`] and shown by `--help`.
//!
//! No setting sets the heartbeat interval or the frame size: both are the receiver's, told
//! in its `Welcome` (see [`crate::link`]).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kube_relay_proto::config::{self as layer, Section};
use serde::Deserialize;

pub use kube_relay_proto::config::{HumanDuration, LogFormat};

use crate::error::Error;

/// Defaults, defined once.
pub mod defaults {
    use std::time::Duration;

    /// How often PodMetrics (or the kubelets) are polled.
    pub const USAGE_INTERVAL: Duration = Duration::from_secs(15);
    /// Heartbeat interval if a receiver's `Welcome` names none (receivers always do).
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
    /// How long changes coalesce before a delta batch: short enough for the freshness
    /// target (API change to `/metrics` p99 ≤ 20 ms at 1,000 changes/s; 10 ms gave p99
    /// 18.5–23 ms, 5 ms gives 12–15 ms), long enough that a burst shares one batch (5 ms
    /// costs the same bytes per sample and CPU as 10 ms, `sender/README.md`).
    pub const FLUSH_INTERVAL: Duration = Duration::from_millis(5);
    /// Unacknowledged batches kept for replay, in encoded bytes (also the most a sender has
    /// in flight: about 40 MiB/s at the receiver's 100 ms ack interval).
    pub const SPOOL_MAX_BYTES: u64 = 4 << 20;
    /// Largest frame payload the sender writes; a receiver's smaller `--max-frame-bytes`
    /// (told in its `Welcome`) lowers it. Larger frames would only lengthen the time a
    /// batch holds the link and the spool's unit of loss.
    pub const MAX_FRAME_BYTES: usize = kube_relay_proto::DEFAULT_MAX_FRAME_BYTES;
    /// Time allowed to connect and complete the handshake.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Time allowed to flush and say goodbye on shutdown.
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
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

/// The sender's settings as any layer gives them: the command line, and the schema of the
/// environment and the config file (a field is a flag, a variable and a file key at once;
/// see [`kube_relay_proto::config`]). A default declared here (`default_value_t`) is the
/// lowest layer and shown by `--help`; `None` means no layer gave the setting.
#[derive(Debug, Clone, Parser, Deserialize)]
#[command(
    name = "sender",
    version,
    about = "Watches a Kubernetes cluster and streams its state to a kube-relay receiver.",
    long_about = "Watches a Kubernetes cluster (pods, HPAs, nodes, namespaces, scaling events, \
                  CPU and memory per container) and streams it as metrics over one TCP \
                  connection to a kube-relay receiver, which serves them to Prometheus.\n\n\
                  Kubernetes access works like kubectl: --kubeconfig / KUBECONFIG / \
                  ~/.kube/config with --context, or the in-cluster service account. The \
                  heartbeat interval and the largest frame are the receiver's, told when \
                  the sender connects."
)]
pub struct Cli {
    /// Config file (TOML or YAML, by extension): the shared keys at the top level, the
    /// sender's under [sender].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The receiver's sender port, HOST:PORT; several (comma-separated or repeated; a list
    /// in the file) for failover, in order: the sender stays with a receiver until it fails
    /// (connect error, dead link, refusal other than cluster-in-use), then moves to the next.
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(default, deserialize_with = "crate::target::one_or_many")]
    pub target: Option<Vec<String>>,

    /// Cluster name, the `cluster` label of every series: 1 to 253 characters of
    /// [A-Za-z0-9._-] [default: the kube context's name].
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// Kubeconfig file [default: $KUBECONFIG, then ~/.kube/config, then in-cluster].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context [default: the current context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// Watch only this namespace (repeatable; comma-separated in the environment)
    /// [default: all namespaces].
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<Vec<String>>,

    /// Label selector for pods and PodMetrics, e.g. `app=web,tier!=cache` [default: all].
    #[arg(long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Where CPU and memory per container come from.
    #[arg(long, value_name = "SOURCE", value_enum, default_value_t = UsageSource::MetricsApi)]
    pub usage_source: UsageSource,

    /// How often usage is polled (metrics.k8s.io cannot be watched).
    #[arg(long, value_name = "DURATION",
          default_value_t = HumanDuration(defaults::USAGE_INTERVAL))]
    pub usage_interval: HumanDuration,

    /// Shared secret the receiver requires; --token and --token-file are one setting, the
    /// highest layer giving either wins [default: none].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Read the shared secret from this file (surrounding whitespace trimmed; an empty file
    /// is refused).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Switch the link to TLS and trust only the CA certificate(s) in this PEM file to sign
    /// the receiver's certificate; renewed TLS files are used from the next connection
    /// [default: plain TCP].
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate chain (PEM) presented to the receiver for mutual TLS; needs
    /// --tls-client-key and --tls-ca.
    #[arg(long, value_name = "FILE")]
    pub tls_client_cert: Option<PathBuf>,

    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-client-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_client_key: Option<PathBuf>,

    /// Name the receiver's certificate must be valid for (a DNS name or an IP address)
    /// [default: the host part of each --target entry].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Directory for durable state: the sender id and the scaling-event ledger, so counts
    /// continue exactly across restarts; one sender per directory (locked) [default: none;
    /// events still in the API (about an hour) are recounted after a restart].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Keep unacknowledged batches on disk in this directory, so a restarted sender can
    /// replay them [default: DIR/spool with --state-dir DIR, else in memory].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Most bytes of sent-but-unacknowledged batches kept for replay after a reconnect. When
    /// full, new deltas wait briefly for acks (changes keep coalescing); if none come, the
    /// oldest batch is dropped (counted in relay_sender_dropped_updates_total) and a reconnect
    /// that needs it starts with a full snapshot.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::SPOOL_MAX_BYTES)]
    pub spool_max_bytes: u64,

    /// How often pending changes are sent (coalesced: only a series' latest value goes).
    #[arg(long, value_name = "DURATION",
          default_value_t = HumanDuration(defaults::FLUSH_INTERVAL))]
    pub flush_interval: HumanDuration,

    /// Log format (the level comes from RUST_LOG, default `info`).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve the sender's own /metrics (its relay_sender_* and process metrics, also while
    /// the link is down), /healthz and /readyz (ready once every watch has listed the
    /// cluster) on this HOST:PORT, e.g. 127.0.0.1:9101; the Kubernetes manifests use
    /// $(POD_IP):9101 [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    pub http_listen: Option<String>,
}

/// Refuses a path that exists but is no directory (a missing one is created later), so
/// `--state-dir` naming a file says so instead of "File exists".
fn check_directory(flag: &str, dir: &std::path::Path) -> Result<(), Error> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(Error::Config(format!(
            "{flag} {}: exists and is not a directory",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// The resolved configuration of a sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Receiver addresses, `HOST:PORT` each, in failover order (see [`crate::target`]).
    pub targets: Vec<String>,
    /// Cluster name; `None` means the kube context's name.
    pub cluster: Option<String>,
    /// Kubeconfig file.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    pub context: Option<String>,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Pod label selector.
    pub selector: Option<String>,
    /// Usage source.
    pub usage_source: UsageSource,
    /// Usage poll interval.
    pub usage_interval: Duration,
    /// Shared secret.
    pub token: Option<String>,
    /// The file the token was read from (`--token-file`), for messages; `None` when it was
    /// given as `--token`.
    pub token_file: Option<PathBuf>,
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
    /// Delta flush interval.
    pub flush_interval: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Where the sender's own HTTP port listens, `HOST:PORT`; `None`: no HTTP port.
    pub http_listen: Option<String>,
    /// Handshake timeout.
    pub connect_timeout: Duration,
    /// Shutdown bound.
    pub shutdown_timeout: Duration,
}

impl Config {
    /// A configuration with every default and this target.
    pub fn new(target: impl Into<String>) -> Self {
        Config {
            targets: vec![target.into()],
            cluster: None,
            kubeconfig: None,
            context: None,
            namespaces: Vec::new(),
            selector: None,
            usage_source: UsageSource::MetricsApi,
            usage_interval: defaults::USAGE_INTERVAL,
            token: None,
            token_file: None,
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            tls_server_name: None,
            state_dir: None,
            spool_dir: None,
            spool_max_bytes: defaults::SPOOL_MAX_BYTES,
            flush_interval: defaults::FLUSH_INTERVAL,
            log_format: LogFormat::Text,
            http_listen: None,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
        }
    }

    /// The process's configuration: its arguments, its environment and the config file they
    /// name.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_env() -> Result<Config, Error> {
        Config::load(std::env::args_os(), std::env::vars_os())
    }

    /// The configuration `args` (the first is the program name), the environment `env` and
    /// the config file they name give, flag over variable over file over default.
    ///
    /// # Errors
    /// [`Error::Settings`] naming the flag, variable or file key at fault (and for `--help`
    /// and `--version`, which `main` prints), [`Error::Config`] for values that parse but
    /// cannot work.
    pub fn load<A, T, E>(args: A, env: E) -> Result<Config, Error>
    where
        A: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
        E: IntoIterator<Item = (OsString, OsString)>,
    {
        let cli: Cli = layer::load(Section::Sender, args, env)?;
        Config::from_cli(cli)
    }

    /// [`Config::load`] with an empty environment.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn try_from_args<A, T>(args: A) -> Result<Config, Error>
    where
        A: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Config::load(args, std::iter::empty())
    }

    /// The configuration from merged settings: defaults for what no layer gave, the token
    /// file read, every value checked.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing target or a bad value, [`Error::Settings`] for an
    /// unreadable or empty token file.
    pub fn from_cli(cli: Cli) -> Result<Config, Error> {
        let targets = cli.target.ok_or_else(|| {
            Error::Config("--target HOST:PORT (or KUBE_RELAY_SENDER_TARGET) is required".to_owned())
        })?;
        let targets = crate::target::parse_targets(&targets).map_err(Error::Config)?;
        let token_file = cli.token_file.clone().filter(|_| cli.token.is_none());
        let token = match (cli.token, cli.token_file) {
            (Some(token), _) if token.is_empty() => {
                return Err(Error::Config(
                    "--token is empty: give the shared secret or leave it unset".to_owned(),
                ));
            }
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(layer::read_secret_file("token", &path)?),
            (None, None) => None,
        };
        let config = Config {
            targets,
            cluster: cli.cluster,
            kubeconfig: cli.kubeconfig,
            context: cli.context,
            namespaces: cli.namespace.unwrap_or_default(),
            selector: cli.selector,
            usage_source: cli.usage_source,
            usage_interval: cli.usage_interval.get(),
            token,
            token_file,
            tls_ca: cli.tls_ca,
            tls_client_cert: cli.tls_client_cert,
            tls_client_key: cli.tls_client_key,
            tls_server_name: cli.tls_server_name,
            state_dir: cli.state_dir,
            spool_dir: cli.spool_dir,
            spool_max_bytes: cli.spool_max_bytes,
            flush_interval: cli.flush_interval.get(),
            log_format: cli.log_format,
            http_listen: cli.http_listen,
            ..Config::new("")
        };
        config.validate()?;
        for (flag, dir) in [
            ("--state-dir", &config.state_dir),
            ("--spool-dir", &config.spool_dir),
        ] {
            if let Some(dir) = dir {
                check_directory(flag, dir)?;
            }
        }
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
        crate::target::check_targets(&self.targets).map_err(Error::Config)?;
        if let Some(listen) = &self.http_listen {
            let port = listen.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return Err(Error::Config(format!(
                    "--http-listen {listen:?} is not HOST:PORT (e.g. 127.0.0.1:9101)"
                )));
            }
        }
        if self.usage_interval < Duration::from_secs(1) {
            return Err(Error::Config(
                "--usage-interval must be at least 1s".to_owned(),
            ));
        }
        if self.flush_interval.is_zero() {
            return Err(Error::Config(
                "--flush-interval must be positive".to_owned(),
            ));
        }
        if let Some(cluster) = &self.cluster {
            kube_relay_proto::check_cluster_name(cluster)
                .map_err(|problem| Error::Config(format!("--cluster: {problem}")))?;
        }
        if let Some(selector) = &self.selector {
            crate::selector::check_label_selector(selector).map_err(|problem| {
                Error::Config(format!(
                    "--selector {selector:?} is not a label selector: {problem}"
                ))
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    // Tests pass the environment explicitly; none sets the process environment (tests run
    // in parallel threads).

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, Error> {
        let env: Vec<(OsString, OsString)> = env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        Config::load(std::iter::once("sender").chain(args.iter().copied()), env)
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
        shows: fn(&Config) -> String,
    }

    fn rows() -> Vec<Row> {
        fn row(key: &'static str, values: [&'static str; 3], shows: fn(&Config) -> String) -> Row {
            Row {
                key,
                values,
                needs: &[],
                shows,
            }
        }
        vec![
            row("target", ["\"f:1\"", "e:2", "g:3"], |c| c.targets.join(",")),
            row("cluster", ["\"file\"", "env", "flag"], |c| {
                format!("{:?}", c.cluster)
            }),
            row("kubeconfig", ["\"/f\"", "/e", "/g"], |c| {
                format!("{:?}", c.kubeconfig)
            }),
            row("context", ["\"f\"", "e", "g"], |c| {
                format!("{:?}", c.context)
            }),
            row("namespace", ["[\"f1\", \"f2\"]", "e1,e2", "g"], |c| {
                c.namespaces.join(",")
            }),
            row("selector", ["\"a=f\"", "a=e", "a=g"], |c| {
                format!("{:?}", c.selector)
            }),
            row(
                "usage_source",
                ["\"kubelet\"", "none", "metrics-api"],
                |c| c.usage_source.to_string(),
            ),
            row("usage_interval", ["\"1m\"", "2m", "3m"], |c| {
                format!("{:?}", c.usage_interval)
            }),
            row("token", ["\"f\"", "e", "g"], |c| format!("{:?}", c.token)),
            row("tls_ca", ["\"/f\"", "/e", "/g"], |c| {
                format!("{:?}", c.tls_ca)
            }),
            Row {
                needs: &["--tls-ca=/ca", "--tls-client-key=/k"],
                ..row("tls_client_cert", ["\"/f\"", "/e", "/g"], |c| {
                    format!("{:?}", c.tls_client_cert)
                })
            },
            Row {
                needs: &["--tls-ca=/ca", "--tls-client-cert=/c"],
                ..row("tls_client_key", ["\"/f\"", "/e", "/g"], |c| {
                    format!("{:?}", c.tls_client_key)
                })
            },
            Row {
                needs: &["--tls-ca=/ca"],
                ..row("tls_server_name", ["\"f\"", "e", "g"], |c| {
                    format!("{:?}", c.tls_server_name)
                })
            },
            row("state_dir", ["\"/f\"", "/e", "/g"], |c| {
                format!("{:?}", c.state_dir)
            }),
            row("spool_dir", ["\"/f\"", "/e", "/g"], |c| {
                format!("{:?}", c.spool_dir)
            }),
            row("spool_max_bytes", ["1", "2", "3"], |c| {
                c.spool_max_bytes.to_string()
            }),
            row("flush_interval", ["\"1s\"", "2s", "3s"], |c| {
                format!("{:?}", c.flush_interval)
            }),
            row("log_format", ["\"json\"", "text", "json"], |c| {
                c.log_format.to_string()
            }),
            row("http_listen", ["\"f:1\"", "e:2", "g:3"], |c| {
                format!("{:?}", c.http_listen)
            }),
        ]
    }

    #[test]
    fn the_http_port_is_off_unless_asked_for_and_must_be_host_and_port() {
        assert_eq!(
            load(&["--target=b:1"], &[]).expect("config").http_listen,
            None
        );
        for listen in [
            "127.0.0.1:9101",
            "[::1]:9101",
            "fd00::7:9101",
            "localhost:9101",
        ] {
            let config =
                load(&["--target=b:1", &format!("--http-listen={listen}")], &[]).expect("config");
            assert_eq!(config.http_listen.as_deref(), Some(listen));
        }
        for bad in ["9101", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"] {
            let err =
                load(&["--target=b:1", &format!("--http-listen={bad}")], &[]).expect_err("refused");
            assert!(
                err.to_string().contains("--http-listen") && err.to_string().contains(bad),
                "{err}"
            );
        }
    }

    #[test]
    fn every_setting_takes_the_flag_over_the_environment_over_the_file_over_the_default() {
        let command = layer::command::<Cli>(Section::Sender);
        let rows = rows();
        // `config` names the file itself; `token_file` reads one: both have their own tests.
        let special = ["config", "token_file"];
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
            let var = Section::Sender.env_name(row.key);
            let section = if layer::SHARED_KEYS.contains(&row.key) {
                ""
            } else {
                "[sender]\n"
            };
            let key = row.key.replace('_', "-");
            let path = write(
                &dir,
                "sender.toml",
                &format!("{section}{key} = {}\n", row.values[0]),
            );
            let mut args: Vec<String> = row.needs.iter().map(|a| (*a).to_owned()).collect();
            if row.key != "target" {
                args.push("--target=b:1".to_owned());
            }
            let with = |extra: &[String], env: &[(&str, &str)]| {
                let mut all = args.clone();
                all.extend(extra.iter().cloned());
                let all: Vec<&str> = all.iter().map(String::as_str).collect();
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
                let all: Vec<&str> = args.iter().map(String::as_str).collect();
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
    fn the_config_file_is_named_by_the_flag_over_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(&dir, "a.toml", "[sender]\ntarget = \"a:1\"\n");
        let b = write(&dir, "b.yaml", "sender:\n  target: b:1\n");
        assert_eq!(
            load(&[], &[("KUBE_RELAY_CONFIG", &a)])
                .expect("env")
                .targets,
            ["a:1"]
        );
        assert_eq!(
            load(&["--config", &b], &[("KUBE_RELAY_CONFIG", &a)])
                .expect("flag")
                .targets,
            ["b:1"]
        );
    }

    #[test]
    fn a_token_file_beats_a_token_in_a_lower_layer_and_is_read_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<String> = ["file", "env", "flag"]
            .iter()
            .map(|t| write(&dir, &format!("{t}.tok"), &format!("{t}-token \n")))
            .collect();
        let toml = write(&dir, "s.toml", &format!("token-file = {:?}\n", files[0]));
        let token = |args: &[&str], env: &[(&str, &str)]| {
            let mut all = vec!["--target=b:1"];
            all.extend_from_slice(args);
            load(&all, env).expect("config").token
        };
        assert_eq!(
            token(&["--config", &toml], &[]).as_deref(),
            Some("file-token")
        );
        let env = [("KUBE_RELAY_TOKEN_FILE", files[1].as_str())];
        assert_eq!(
            token(&["--config", &toml], &env).as_deref(),
            Some("env-token")
        );
        let flag = format!("--token-file={}", files[2]);
        assert_eq!(
            token(&["--config", &toml, &flag], &env).as_deref(),
            Some("flag-token")
        );

        // The case: a token in the file no longer beats --token-file.
        let with_token = write(&dir, "t.toml", "token = \"from-file\"\n");
        assert_eq!(
            token(&["--config", &with_token, &flag], &[]).as_deref(),
            Some("flag-token")
        );
        // And an environment token loses to --token-file too.
        assert_eq!(
            token(&[&flag], &[("KUBE_RELAY_TOKEN", "from-env")]).as_deref(),
            Some("flag-token")
        );
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let config = load(&["--target", "b:9000"], &[]).expect("config");
        assert_eq!(config, Config::new("b:9000"));
    }

    #[test]
    fn the_spool_goes_to_disk_with_a_spool_or_state_dir() {
        let state = load(&["--target=b:1", "--state-dir=/var/lib/kr"], &[]).expect("config");
        assert_eq!(state.spool_path(), Some(PathBuf::from("/var/lib/kr/spool")));
        let both = load(
            &[
                "--target=b:1",
                "--state-dir=/var/lib/kr",
                "--spool-dir=/fast/spool",
            ],
            &[],
        )
        .expect("config");
        assert_eq!(both.spool_path(), Some(PathBuf::from("/fast/spool")));
        assert_eq!(
            load(&["--target=b:1"], &[]).expect("config").spool_path(),
            None
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = write(&dir, "empty.tok", "\n");
        let missing = dir.path().join("missing.tok");
        let missing = missing.to_str().expect("utf-8");
        for (args, env, needle) in [
            (vec![], vec![], "--target"),
            (vec!["--target=nocolon"], vec![], "HOST:PORT"),
            (
                vec!["--target=b:1", "--cluster=bad name"],
                vec![],
                "--cluster",
            ),
            (
                vec!["--target=b:1", "--usage-interval=10ms"],
                vec![],
                "--usage-interval",
            ),
            (
                vec!["--target=b:1", "--usage-interval=soon"],
                vec![],
                "soon",
            ),
            (
                vec!["--target=b:1", "--usage-source=magic"],
                vec![],
                "magic",
            ),
            (
                vec!["--target=b:1", "--token-file", &empty],
                vec![],
                "empty.tok",
            ),
            (
                vec!["--target=b:1", "--token-file", missing],
                vec![],
                "missing.tok",
            ),
            (vec!["--target=b:1", "--token="], vec![], "--token is empty"),
            (
                vec!["--target=b:1", "--state-dir", &empty],
                vec![],
                "empty.tok: exists and is not a directory",
            ),
            (
                vec!["--target=b:1", "--spool-dir", &empty],
                vec![],
                "--spool-dir",
            ),
            (
                vec!["--target=b:1", "--selector", "==="],
                vec![],
                "--selector \"===\" is not a label selector",
            ),
            (
                vec!["--target=b:1"],
                vec![("KUBE_RELAY_SENDER_FLUSH_INTERVAL", "abc")],
                "KUBE_RELAY_SENDER_FLUSH_INTERVAL",
            ),
            (
                vec!["--target=b:1"],
                vec![("KUBE_RELAY_TARGET", "b:1")],
                "KUBE_RELAY_SENDER_TARGET",
            ),
        ] {
            let err = load(&args, &env).expect_err("refused");
            let text = kube_relay_proto::config::error_chain(std::iter::successors(
                Some(&err as &(dyn std::error::Error + 'static)),
                |e| e.source(),
            ));
            assert!(text.contains(needle), "{args:?} {env:?}: {text}");
        }
    }

    #[test]
    fn several_targets_come_comma_separated_repeated_or_as_a_file_list_in_order() {
        let two = ["a:9000", "b:9000"];
        assert_eq!(
            load(&["--target", "a:9000,b:9000"], &[])
                .expect("commas")
                .targets,
            two
        );
        assert_eq!(
            load(&["--target=a:9000", "--target=b:9000"], &[])
                .expect("repeated")
                .targets,
            two
        );
        assert_eq!(
            load(&[], &[("KUBE_RELAY_SENDER_TARGET", "a:9000, b:9000")])
                .expect("env")
                .targets,
            two
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let list = write(
            &dir,
            "l.toml",
            "[sender]\ntarget = [\"a:9000\", \"b:9000\"]\n",
        );
        let one = write(&dir, "o.yaml", "sender:\n  target: a:9000,b:9000\n");
        for file in [list, one] {
            assert_eq!(
                load(&["--config", &file], &[]).expect("file").targets,
                two,
                "{file}"
            );
        }
    }

    #[test]
    fn a_bad_target_stops_the_start_naming_the_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(&dir, "t.toml", "[sender]\ntarget = [\"a:9000\", \"\"]\n");
        for (args, env, needle) in [
            (
                vec!["--target=127.0.0.1:99999"],
                vec![],
                "\"127.0.0.1:99999\": port 99999",
            ),
            (
                vec!["--target=tcp://host:9000"],
                vec![],
                "\"tcp://host:9000\": no scheme",
            ),
            (vec!["--target=a:9000,,b:9000"], vec![], "empty entry"),
            (vec!["--target="], vec![], "empty entry"),
            (
                vec!["--target=a:9000", "--target=a:9000"],
                vec![],
                "a:9000 twice",
            ),
            (vec!["--config", file.as_str()], vec![], "empty entry"),
            (
                vec![],
                vec![("KUBE_RELAY_SENDER_TARGET", "hostb:http")],
                "\"http\" is not a number",
            ),
        ] {
            let err = load(&args, &env).expect_err("refused");
            let text = err.to_string();
            assert!(text.contains(needle), "{args:?} {env:?}: {text}");
        }
    }

    #[test]
    fn help_explains_every_option_with_its_variable_default_and_the_precedence() {
        let help = layer::command::<Cli>(Section::Sender)
            .render_long_help()
            .to_string();
        for needle in [
            "--target <HOST:PORT>",
            "[env: KUBE_RELAY_SENDER_TARGET]",
            "[env: KUBE_RELAY_TOKEN_FILE]",
            "[env: KUBE_RELAY_CONFIG]",
            "--usage-interval <DURATION>",
            "[default: 15s]",
            "[default: metrics-api]",
            "[default: 4194304]",
            "[default: 5ms]",
            "--log-format <FORMAT>",
            "--token-file <FILE>",
            "--state-dir <DIR>",
            layer::PRECEDENCE.lines().next().expect("a first line"),
        ] {
            assert!(help.contains(needle), "help lacks {needle}:\n{help}");
        }
        assert!(
            !help.contains("--heartbeat-interval"),
            "the receiver's setting: {help}"
        );
        assert!(
            !help.contains("--max-frame-bytes"),
            "the receiver's setting: {help}"
        );
        assert!(
            layer::schema_problems::<Cli>(Section::Sender).is_empty(),
            "{:?}",
            layer::schema_problems::<Cli>(Section::Sender)
        );
    }

    #[test]
    fn tls_settings_must_fit_together() {
        for (args, needle) in [
            (
                vec!["--target=b:1", "--tls-ca=ca", "--tls-client-cert=c"],
                "go together",
            ),
            (
                vec!["--target=b:1", "--tls-client-cert=c", "--tls-client-key=k"],
                "need --tls-ca",
            ),
            (
                vec!["--target=b:1", "--tls-server-name=b.example"],
                "need --tls-ca",
            ),
        ] {
            let err = load(&args, &[]).expect_err("refused");
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }
}
