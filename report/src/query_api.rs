//! The Prometheus HTTP query API (`/api/v1/query_range`, `/api/v1/query`), as Prometheus and
//! VictoriaMetrics serve it: one client, and the parsing of its answers into [`Series`].
//!
//! The client is hyper-util's pooled client over hyper-rustls, the HTTP stack the tree
//! already builds (kube, remote write): `http://` and `https://` (system roots) both work.
//! Queries go as POST forms, so long PromQL never meets a URL length limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::window::Window;

/// Most bytes of an error answer quoted in [`Error::Status`].
const QUOTED_BODY: usize = 512;

/// One series of an answer: its labels and its points `(Unix seconds, value)`, oldest first.
/// Points whose value is not a finite number (`NaN`, `±Inf`: a ratio over nothing) are left
/// out, so they read as gaps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Label name → value (`__name__` included when the answer has it).
    pub labels: BTreeMap<String, String>,
    /// `(time, value)`, oldest first.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// The value of label `name`, empty when absent.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// A client of one query API.
#[derive(Debug, Clone)]
pub struct QueryApi {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    timeout: Duration,
    max_answer_bytes: usize,
}

impl QueryApi {
    /// A client for the API under `base` (`http://127.0.0.1:9090`, or a prefix such as
    /// VictoriaMetrics cluster's `http://vmselect:8481/select/0/prometheus`).
    ///
    /// # Errors
    /// [`Error::Argument`] (`--prometheus`) for a URL that is not http(s).
    pub fn new(base: &str, timeout: Duration, max_answer_bytes: usize) -> Result<QueryApi> {
        let bad = |reason: &str| Error::Argument {
            flag: "prometheus",
            value: base.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = base.parse().map_err(|e| bad(&format!("{e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad("expected an http:// or https:// URL with a host"));
        }
        if uri.query().is_some() {
            return Err(bad("the base URL takes no query string"));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // A system certificate rustls cannot use is one less root, not a failure.
            let _ = roots.add(cert);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(QueryApi {
            http: Client::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_owned(),
            timeout,
            max_answer_bytes,
        })
    }

    /// `query` over the window at its resolution (`/api/v1/query_range`).
    ///
    /// # Errors
    /// See [`QueryApi::post`] and [`parse_answer`].
    pub async fn range(&self, query: &str, window: &Window) -> Result<Vec<Series>> {
        let form = [
            ("query", query.to_owned()),
            ("start", format!("{:.3}", window.from)),
            ("end", format!("{:.3}", window.to)),
            ("step", format!("{:.3}", window.resolution)),
            // VictoriaMetrics moves the points of a long range query to cacheable times
            // unless told not to; Prometheus ignores the parameter
            ("nocache", "1".to_owned()),
        ];
        let (status, body) = self.post("/api/v1/query_range", &form).await?;
        parse_answer(query, &self.url("/api/v1/query_range"), status, &body)
    }

    /// `query` at time `at` (`/api/v1/query`).
    ///
    /// # Errors
    /// See [`QueryApi::post`] and [`parse_answer`].
    pub async fn instant(&self, query: &str, at: f64) -> Result<Vec<Series>> {
        let form = [("query", query.to_owned()), ("time", format!("{at:.3}"))];
        let (status, body) = self.post("/api/v1/query", &form).await?;
        parse_answer(query, &self.url("/api/v1/query"), status, &body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a form and reads the whole answer (at most `max_answer_bytes`).
    ///
    /// # Errors
    /// [`Error::Unreachable`] when the request fails, times out or the answer is too large.
    async fn post(&self, path: &str, form: &[(&str, String)]) -> Result<(u16, Bytes)> {
        let url = self.url(path);
        let unreachable = |reason: String| Error::Unreachable {
            url: url.clone(),
            reason,
        };
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("kube-relay-report/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(format!("bad request: {e}")))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| unreachable(chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), self.max_answer_bytes)
                .collect()
                .await
                .map_err(|e| {
                    unreachable(format!(
                        "reading the answer (at most {} bytes): {e}",
                        self.max_answer_bytes
                    ))
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
    }
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `application/x-www-form-urlencoded` encoding of one key or value.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Option<Vec<(f64, String)>>,
    #[serde(default)]
    value: Option<(f64, String)>,
}

/// Reads an answer of the query API: the series of a `matrix` or `vector` result.
///
/// # Errors
/// [`Error::Refused`] for `"status": "error"` (whatever the HTTP status),
/// [`Error::Status`] for another non-2xx answer, [`Error::Answer`] for JSON that is not the
/// documented envelope, another result type, or a value that is not a number.
pub fn parse_answer(query: &str, url: &str, status: u16, body: &[u8]) -> Result<Vec<Series>> {
    let answer = |reason: String| Error::Answer {
        query: query.to_owned(),
        reason,
    };
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) if (200..300).contains(&status) => {
            return Err(answer(format!("not the query API's JSON: {e}")));
        }
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BODY)]);
            return Err(Error::Status {
                url: url.to_owned(),
                status,
                body: text.trim().to_owned(),
            });
        }
    };
    if envelope.status != "success" {
        return Err(Error::Refused {
            query: query.to_owned(),
            error_type: envelope
                .error_type
                .unwrap_or_else(|| envelope.status.clone()),
            message: envelope.error.unwrap_or_default(),
        });
    }
    if !(200..300).contains(&status) {
        return Err(Error::Status {
            url: url.to_owned(),
            status,
            body: "a success envelope with an error status".to_owned(),
        });
    }
    let data = envelope
        .data
        .ok_or_else(|| answer("`data` is missing".to_owned()))?;
    if data.result_type != "matrix" && data.result_type != "vector" {
        return Err(answer(format!(
            "a {} result; the report asks for series (matrix or vector)",
            data.result_type
        )));
    }
    let raw: Vec<RawSeries> = serde_json::from_value(data.result)
        .map_err(|e| answer(format!("`data.result` is not a list of series: {e}")))?;
    raw.into_iter()
        .map(|r| {
            let pairs = match (r.values, r.value) {
                (Some(values), _) => values,
                (None, Some(value)) => vec![value],
                (None, None) => Vec::new(),
            };
            let mut points = Vec::with_capacity(pairs.len());
            for (t, text) in pairs {
                let v: f64 = text
                    .parse()
                    .map_err(|_| answer(format!("the value {text:?} at {t} is not a number")))?;
                if v.is_finite() && t.is_finite() {
                    points.push((t, v));
                }
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Ok(Series {
                labels: r.metric,
                points,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://prom/api/v1/query_range";

    #[test]
    fn reads_a_matrix_and_a_vector() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","job":"a"},"values":[[10,"1"],[11.5,"0"],[13,"NaN"],[14,"+Inf"],[15,"2"]]}]}}"#;
        let series = parse_answer("up", URL, 200, body).expect("parses");
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].label("job"), "a");
        assert_eq!(series[0].label("none"), "");
        // NaN and infinities are gaps, not values
        assert_eq!(
            series[0].points,
            vec![(10.0, 1.0), (11.5, 0.0), (15.0, 2.0)]
        );

        let body = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[7,"3.5"]}]}}"#;
        let series = parse_answer("x", URL, 200, body).expect("parses");
        assert_eq!(series[0].points, vec![(7.0, 3.5)]);

        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(
            parse_answer("x", URL, 200, body)
                .expect("parses")
                .is_empty()
        );
    }

    #[test]
    fn bad_answers_are_errors_that_say_why() {
        let err = parse_answer("up", URL, 200, b"<html>proxy login</html>").map(|_| ());
        assert!(
            matches!(&err, Err(Error::Answer { query, reason }) if query == "up" && reason.contains("JSON")),
            "{err:?}"
        );
        let err = parse_answer("up", URL, 502, b"Bad Gateway").map(|_| ());
        assert!(
            matches!(&err, Err(Error::Status { status: 502, body, .. }) if body == "Bad Gateway"),
            "{err:?}"
        );
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let err = parse_answer("up{", URL, 400, body).map(|_| ());
        assert!(
            matches!(&err, Err(Error::Refused { query, error_type, message })
                if query == "up{" && error_type == "bad_data" && message.contains("parse error")),
            "{err:?}"
        );
        let body = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;
        let err = parse_answer("1", URL, 200, body).map(|_| ());
        assert!(
            matches!(&err, Err(Error::Answer { reason, .. }) if reason.contains("scalar")),
            "{err:?}"
        );
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[7,"many"]}]}}"#;
        let err = parse_answer("x", URL, 200, body).map(|_| ());
        assert!(
            matches!(&err, Err(Error::Answer { reason, .. }) if reason.contains("\"many\"")),
            "{err:?}"
        );
        let body = br#"{"status":"success"}"#;
        assert!(matches!(
            parse_answer("x", URL, 200, body),
            Err(Error::Answer { .. })
        ));
    }

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            form_encode(r#"sum(up{job="a b"})"#),
            "sum%28up%7Bjob%3D%22a+b%22%7D%29"
        );
    }

    #[test]
    fn the_base_url_must_be_http() {
        let t = Duration::from_secs(1);
        assert!(QueryApi::new("http://127.0.0.1:9090/", t, 1024).is_ok());
        assert!(QueryApi::new("https://vm.example/select/0/prometheus", t, 1024).is_ok());
        for bad in ["127.0.0.1:9090", "ftp://x", "http://x/?a=b", "not a url"] {
            assert!(
                matches!(
                    QueryApi::new(bad, t, 1024),
                    Err(Error::Argument {
                        flag: "prometheus",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
