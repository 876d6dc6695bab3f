//! The HTTP side: `GET /metrics`, `/healthz`, `/readyz` and the status page at `/`.
//!
//! [`HttpApp::respond`] maps a request to a response without any socket, so routing is unit
//! tested directly; [`serve`] runs it with hyper on a bound listener, shutting connections
//! down gracefully when the shutdown token fires.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::exposition::Format;
use crate::metrics::Metrics;
use crate::status;
use crate::store::Store;

/// Longest time a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the HTTP endpoints read. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpApp {
    store: Store,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    last_len: Arc<AtomicUsize>,
}

impl HttpApp {
    /// An app over `store` and `metrics`; `/readyz` answers 200 while `ready` is true.
    pub fn new(store: Store, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Self {
        HttpApp {
            store,
            metrics,
            ready,
            last_len: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Answers one request (the body is never read).
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match (get, req.uri().path()) {
            (true, "/metrics") => {
                let accept = req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let format = Format::negotiate(accept);
                let body = self.render_metrics(format);
                reply(StatusCode::OK, format.content_type(), body)
            }
            (true, "/healthz") => reply(StatusCode::OK, TEXT, "ok\n".into()),
            (true, "/readyz") if self.ready.load(Ordering::Acquire) => {
                reply(StatusCode::OK, TEXT, "ready\n".into())
            }
            (true, "/readyz") => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "not ready: starting or shutting down\n".into(),
            ),
            (true, "/") => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                status::render(&self.store.clusters(), &self.store.scaling_events()),
            ),
            (false, "/metrics" | "/healthz" | "/readyz" | "/") => {
                let mut r = reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    TEXT,
                    "only GET is allowed\n".into(),
                );
                r.headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
                r
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found; try /metrics, /healthz, /readyz or /\n".into(),
            ),
        }
    }

    /// Encodes every cluster's series and the self-metrics in `format`, and records the
    /// time it took in `relay_receiver_scrape_duration_seconds`.
    pub fn render_metrics(&self, format: Format) -> String {
        let started = std::time::Instant::now();
        let mut out = String::with_capacity(self.last_len.load(Ordering::Relaxed) + 4096);
        self.store.encode_series(format, &mut out);
        self.metrics.encode(format, &mut out);
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        self.last_len.store(out.len(), Ordering::Relaxed);
        self.metrics.observe_scrape(started.elapsed().as_secs_f64());
        out
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// Serves `app` on `listener` until `shutdown` fires; open connections finish their current
/// request and close. Connection tasks are spawned on `tracker`.
pub async fn serve(
    listener: TcpListener,
    app: HttpApp,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(cause = %e, "failed to accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let response = app.respond(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(peer = %peer, cause = %e, "HTTP connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use super::*;

    fn app() -> HttpApp {
        let store = Store::new(StdDuration::from_secs(60), 100);
        let metrics = Metrics::new(store.clone());
        HttpApp::new(store, metrics, Arc::new(AtomicBool::new(true)))
    }

    fn get(app: &HttpApp, path: &str, accept: Option<&str>) -> Response<Full<Bytes>> {
        let mut req = Request::get(path);
        if let Some(accept) = accept {
            req = req.header(header::ACCEPT, accept);
        }
        app.respond(&req.body(()).expect("request"))
    }

    fn content_type(r: &Response<Full<Bytes>>) -> &str {
        r.headers()[header::CONTENT_TYPE].to_str().expect("ascii")
    }

    #[test]
    fn metrics_are_negotiated() {
        let app = app();
        let r = get(&app, "/metrics", None);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(content_type(&r), "text/plain; version=0.0.4; charset=utf-8");
        let r = get(
            &app,
            "/metrics",
            Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.3"),
        );
        assert_eq!(
            content_type(&r),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }

    #[test]
    fn openmetrics_ends_with_eof_and_text_does_not() {
        let app = app();
        let om = app.render_metrics(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE relay_receiver_connected_senders gauge\n"));
        let text = app.render_metrics(Format::Text);
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE relay_receiver_scrape_duration_seconds histogram\n"));
    }

    #[test]
    fn health_readiness_and_unknown_paths() {
        let app = app();
        assert_eq!(get(&app, "/healthz", None).status(), StatusCode::OK);
        assert_eq!(get(&app, "/readyz", None).status(), StatusCode::OK);
        app.ready.store(false, Ordering::Release);
        assert_eq!(
            get(&app, "/readyz", None).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&app, "/nope", None).status(), StatusCode::NOT_FOUND);
        let post = Request::post("/metrics").body(()).expect("request");
        assert_eq!(app.respond(&post).status(), StatusCode::METHOD_NOT_ALLOWED);
        let status = get(&app, "/", None);
        assert_eq!(content_type(&status), "text/html; charset=utf-8");
    }
}
