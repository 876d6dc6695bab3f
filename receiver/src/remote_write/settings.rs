//! One remote-write URL's settings, from `--remote-write-url` (defaults) or the config
//! file's `remote_write` list (every field; read in `config`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default byte limit of a URL's on-disk queue: 512 MiB.
pub const DEFAULT_MAX_QUEUE_BYTES: u64 = 512 << 20;
/// Default most parallel connections (shards) per URL.
pub const DEFAULT_MAX_SHARDS: usize = 16;
/// Default fewest shards per URL.
pub const DEFAULT_MIN_SHARDS: usize = 1;
/// Default most samples in one request.
pub const DEFAULT_MAX_SAMPLES_PER_SEND: usize = 2000;
/// Default longest a sample waits for its request to fill: 100 ms, so an observed change
/// is queryable well within a second.
pub const DEFAULT_BATCH_DEADLINE: Duration = Duration::from_millis(100);
/// Default request timeout: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of one remote-write URL. `Debug` never shows header values (they may hold
/// credentials); secrets themselves live in files.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to POST (`http` or `https`), e.g. `http://vm:8428/api/v1/write`.
    pub url: String,
    /// File holding a bearer token (`Authorization: Bearer ...`), read at start.
    pub bearer_token_file: Option<PathBuf>,
    /// Basic auth user; the password comes from `basic_auth_password_file`.
    pub basic_auth_username: Option<String>,
    /// File holding the basic auth password, read at start.
    pub basic_auth_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) the server's certificate must chain to (default: the system's).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Extra headers sent with every request (e.g. `X-Scope-OrgID: team-a`).
    pub headers: BTreeMap<String, String>,
    /// A header whose value is the cluster name (e.g. `X-Scope-OrgID` for a Mimir tenant
    /// per cluster); requests then carry one cluster's series each.
    pub tenant_header: Option<String>,
    /// Byte limit of the on-disk queue; past it the oldest data is dropped and counted.
    pub max_queue_bytes: u64,
    /// Fewest parallel connections.
    pub min_shards: usize,
    /// Most parallel connections; shards grow towards it while the queue falls behind.
    pub max_shards: usize,
    /// Most samples in one request.
    pub max_samples_per_send: usize,
    /// Longest a sample waits for its request to fill.
    pub batch_deadline: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redact_url(&self.url))
            .field("bearer_token_file", &self.bearer_token_file)
            .field("basic_auth_username", &self.basic_auth_username)
            .field("basic_auth_password_file", &self.basic_auth_password_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("tenant_header", &self.tenant_header)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("min_shards", &self.min_shards)
            .field("max_shards", &self.max_shards)
            .field("max_samples_per_send", &self.max_samples_per_send)
            .field("batch_deadline", &self.batch_deadline)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Endpoint {
    /// `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Endpoint {
            url: url.into(),
            bearer_token_file: None,
            basic_auth_username: None,
            basic_auth_password_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            headers: BTreeMap::new(),
            tenant_header: None,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            min_shards: DEFAULT_MIN_SHARDS,
            max_shards: DEFAULT_MAX_SHARDS,
            max_samples_per_send: DEFAULT_MAX_SAMPLES_PER_SEND,
            batch_deadline: DEFAULT_BATCH_DEADLINE,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The URL without credentials, as logs and the `url` metric label show it.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Checks the settings, naming the bad one.
    ///
    /// # Errors
    /// A message for `Error::Config`.
    pub fn validate(&self) -> Result<(), String> {
        let at = self.display_url();
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("remote_write url {at:?} is not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "remote_write url {at:?} must be http:// or https:// with a host"
            ));
        }
        if self.basic_auth_username.is_some() != self.basic_auth_password_file.is_some() {
            return Err(format!(
                "remote_write {at}: basic_auth_username and basic_auth_password_file go together"
            ));
        }
        if self.bearer_token_file.is_some() && self.basic_auth_username.is_some() {
            return Err(format!(
                "remote_write {at}: use a bearer token or basic auth, not both"
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(format!(
                "remote_write {at}: tls_cert_file and tls_key_file go together"
            ));
        }
        for name in self.headers.keys().chain(self.tenant_header.iter()) {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("remote_write {at}: {name:?} is not a header name"));
            }
            let lower = name.to_ascii_lowercase();
            if [
                "content-type",
                "content-encoding",
                "content-length",
                "host",
                "user-agent",
                "x-prometheus-remote-write-version",
            ]
            .contains(&lower.as_str())
            {
                return Err(format!(
                    "remote_write {at}: header {name:?} is set by the protocol"
                ));
            }
        }
        for value in self.headers.values() {
            if http::HeaderValue::from_str(value).is_err() {
                return Err(format!(
                    "remote_write {at}: a header value holds characters a header cannot"
                ));
            }
        }
        if self.min_shards == 0 || self.max_shards < self.min_shards {
            return Err(format!(
                "remote_write {at}: shards must satisfy 1 <= min_shards <= max_shards"
            ));
        }
        if self.max_samples_per_send == 0 || self.batch_deadline.is_zero() || self.timeout.is_zero()
        {
            return Err(format!(
                "remote_write {at}: max_samples_per_send, batch_deadline and timeout must be \
                 greater than zero"
            ));
        }
        if self.max_queue_bytes < 1 << 20 {
            return Err(format!(
                "remote_write {at}: max_queue_bytes must be at least 1 MiB"
            ));
        }
        Ok(())
    }
}

/// `url` with any `user:password@` replaced by `***@`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme && !url[scheme + 3..at].contains('/') => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_never_reach_logs_or_labels() {
        assert_eq!(
            redact_url("https://user:s3cret@mimir:443/api/v1/push"),
            "https://***@mimir:443/api/v1/push"
        );
        assert_eq!(
            redact_url("http://vm:8428/api/v1/write"),
            "http://vm:8428/api/v1/write"
        );
        let mut e = Endpoint::new("http://u:p@vm/api/v1/write");
        e.headers
            .insert("X-Scope-OrgID".into(), "tenant-secret".into());
        let debug = format!("{e:?}");
        assert!(
            !debug.contains("u:p") && !debug.contains("tenant-secret"),
            "{debug}"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        type Case = (&'static str, fn(&mut Endpoint));
        let cases: [Case; 6] = [
            ("http:// or https://", |e| e.url = "ftp://x/y".into()),
            ("go together", |e| e.basic_auth_username = Some("u".into())),
            ("go together", |e| e.tls_cert_file = Some("/c".into())),
            ("set by the protocol", |e| {
                e.headers.insert("Content-Type".into(), "x".into());
            }),
            ("min_shards", |e| e.max_shards = 0),
            ("at least 1 MiB", |e| e.max_queue_bytes = 10),
        ];
        for (needle, break_it) in cases {
            let mut e = Endpoint::new("http://vm:8428/api/v1/write");
            assert_eq!(e.validate(), Ok(()));
            break_it(&mut e);
            let err = e.validate().expect_err(needle);
            assert!(err.contains(needle), "{err}");
        }
    }
}
