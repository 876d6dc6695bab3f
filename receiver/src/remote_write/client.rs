//! One remote-write URL's HTTP client: hyper-util's pooled client over hyper-rustls (the
//! stack kube already brings), the spec's headers, authentication, and the verdict on each
//! response: delivered, retry (network errors, 5xx, 429, honouring `Retry-After`) or drop
//! (any other 4xx, with the backend's message).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube_relay_proto::config::read_secret_file;
use kube_relay_proto::tls as shared_tls;

use super::settings::Endpoint;
use super::wire;
use crate::{Error, Result};

/// Most bytes of an error response kept for the log.
const MAX_ERROR_BODY: usize = 1024;

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the backend has the samples.
    Delivered,
    /// Worth trying again (network error, timeout, 5xx, 429), after `after` if the backend
    /// said (`Retry-After`).
    Retry {
        /// Bounded reason: `network`, `timeout`, `http_5xx`, `http_429`.
        reason: &'static str,
        /// What happened, for the log.
        detail: String,
        /// The backend's `Retry-After`, if any.
        after: Option<Duration>,
    },
    /// Never retried (4xx other than 429): the batch is dropped and counted.
    Drop {
        /// The status.
        status: u16,
        /// The backend's message (truncated).
        message: String,
    },
}

/// A client for one URL.
#[derive(Debug, Clone)]
pub struct Client {
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    headers: HeaderMap,
    tenant_header: Option<HeaderName>,
    timeout: Duration,
}

impl Client {
    /// Builds the client: TLS roots (`tls_ca_file`, else the system's), client certificate,
    /// and the fixed headers (protocol, user agent, authentication, custom).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URL or header, [`Error::Pem`]/[`Error::Tls`] for unusable
    /// TLS files, [`Error::TokenFile`]/[`Error::PasswordFile`] for unreadable secrets.
    pub fn new(endpoint: &Endpoint) -> Result<Client> {
        endpoint.validate().map_err(Error::Config)?;
        let uri: Uri = endpoint
            .url
            .parse()
            .map_err(|e| Error::Config(format!("remote_write url: {e}")))?;
        let roots = match &endpoint.tls_ca_file {
            Some(ca) => shared_tls::root_store(ca)?,
            None => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                roots
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(shared_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::Tls {
                what: "remote_write",
                source,
            })?
            .with_root_certificates(roots);
        let tls = match (&endpoint.tls_cert_file, &endpoint.tls_key_file) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    shared_tls::read_certs("client certificate", cert)?,
                    shared_tls::read_key("client key", key)?,
                )
                .map_err(|source| Error::Tls {
                    what: "remote_write client certificate",
                    source,
                })?,
            _ => builder.with_no_client_auth(),
        };
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(endpoint.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);

        let mut headers = HeaderMap::new();
        let fixed = [
            (header::CONTENT_ENCODING, wire::CONTENT_ENCODING),
            (header::CONTENT_TYPE, wire::CONTENT_TYPE),
            (
                header::USER_AGENT,
                concat!("kube-relay-receiver/", env!("CARGO_PKG_VERSION")),
            ),
        ];
        for (name, value) in fixed {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers.insert(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static(wire::VERSION),
        );
        let bad_header =
            |what: &str| Error::Config(format!("remote_write {}: {what}", endpoint.display_url()));
        if let Some(path) = &endpoint.bearer_token_file {
            let token = read_secret_file("bearer token", path)?;
            let mut v = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| bad_header("the bearer token holds characters a header cannot"))?;
            v.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, v);
        }
        if let (Some(user), Some(path)) = (
            &endpoint.basic_auth_username,
            &endpoint.basic_auth_password_file,
        ) {
            use base64::Engine as _;
            let password = read_secret_file("password", path)?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut v = HeaderValue::try_from(format!("Basic {encoded}"))
                .map_err(|_| bad_header("basic auth credentials"))?;
            v.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, v);
        }
        for (name, value) in &endpoint.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad_header("a header name"))?;
            let value = HeaderValue::from_str(value).map_err(|_| bad_header("a header value"))?;
            headers.insert(name, value);
        }
        let tenant_header = match &endpoint.tenant_header {
            Some(name) => Some(
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad_header("tenant_header"))?,
            ),
            None => None,
        };
        Ok(Client {
            http,
            uri,
            headers,
            tenant_header,
            timeout: endpoint.timeout,
        })
    }

    /// Whether requests must hold one cluster each (a tenant header from the cluster).
    pub fn per_cluster(&self) -> bool {
        self.tenant_header.is_some()
    }

    /// POSTs one compressed `WriteRequest`; `cluster` fills the tenant header if one is set.
    pub async fn send(&self, body: Bytes, cluster: Option<&str>) -> Outcome {
        let mut request = Request::post(self.uri.clone());
        if let Some(h) = request.headers_mut() {
            h.clone_from(&self.headers);
            if let (Some(name), Some(cluster)) = (&self.tenant_header, cluster)
                && let Ok(v) = HeaderValue::from_str(cluster)
            {
                h.insert(name.clone(), v);
            }
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Drop {
                    status: 0,
                    message: format!("failed to build the request: {e}"),
                };
            }
        };
        let response = match tokio::time::timeout(self.timeout, self.http.request(request)).await {
            Err(_) => {
                return Outcome::Retry {
                    reason: "timeout",
                    detail: format!("no answer within {:?}", self.timeout),
                    after: None,
                };
            }
            Ok(Err(e)) => {
                return Outcome::Retry {
                    reason: "network",
                    detail: error_chain(&e),
                    after: None,
                };
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status.is_success() {
            // Read the (usually empty) body so the connection goes back to the pool.
            let _ = tokio::time::timeout(self.timeout, response.into_body().collect()).await;
            return Outcome::Delivered;
        }
        let after = retry_after(response.headers());
        let message = match tokio::time::timeout(
            self.timeout,
            Limited::new(response.into_body(), 64 << 10).collect(),
        )
        .await
        {
            Ok(Ok(body)) => {
                let bytes = body.to_bytes();
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)]);
                text.trim().to_owned()
            }
            _ => String::new(),
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            Outcome::Retry {
                reason: "http_429",
                detail: format!("{status}: {message}"),
                after,
            }
        } else if status.is_server_error() {
            Outcome::Retry {
                reason: "http_5xx",
                detail: format!("{status}: {message}"),
                after,
            }
        } else {
            Outcome::Drop {
                status: status.as_u16(),
                message,
            }
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by remote-write backends and
/// falls back to the backoff).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(300)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_is_honoured_and_capped() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(300)));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
