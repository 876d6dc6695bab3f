//! The HTTP side: `GET /metrics`, `/healthz`, `/readyz` and the status page at `/`.
//!
//! [`HttpApp::respond`] maps a request to a response without any socket, so routing and
//! basic auth are unit tested directly; [`serve`] runs it with hyper on a bound listener
//! (optionally under TLS, the handshake in each connection's task), at most
//! [`MAX_HTTP_CONNECTIONS`] at once, shutting connections down gracefully when the shutdown
//! token fires.
//!
//! With [`BasicAuth`] configured, `/metrics` and `/` answer `401` with
//! `WWW-Authenticate: Basic realm="kube-relay"` unless the request carries the credentials
//! (counted in `relay_receiver_auth_failures_total{kind="http_basic_auth"}`); `/healthz` and
//! `/readyz` stay open for probes.
//!
//! `/metrics` and the status page read every cluster's series: at a million series that is
//! hundreds of milliseconds of CPU (the fan-in bench). [`serve`] renders them on tokio's
//! blocking pool, not on a runtime worker, where the sessions that worker would have run
//! meanwhile (its local queue and LIFO slot cannot all be stolen) waited for the whole
//! render, and senders saw it as ack latency.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::exposition::Format;
use crate::metrics::Metrics;
use crate::security::{BASIC_AUTH_CHALLENGE, BasicAuth, RefusalLog};
use crate::status;
use crate::store::Store;

/// Longest time a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most HTTP connections served at once; further ones are closed on accept. Prometheus
/// keeps one connection per target, so this only bounds abuse.
pub const MAX_HTTP_CONNECTIONS: usize = 256;

/// Most `/metrics` or status pages rendered at once (each render builds its whole page,
/// about 170 bytes per series held). On the runtime workers the number of workers bounded
/// it; on the blocking pool (up to 512 threads) this does.
pub const MAX_RENDERS: usize = 2;

/// Everything the HTTP endpoints read. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpApp {
    store: Store,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    last_len: Arc<AtomicUsize>,
    /// Pages rendered at once; the others wait for a turn.
    renders: Arc<tokio::sync::Semaphore>,
    basic_auth: Option<Arc<BasicAuth>>,
    refusals: Arc<RefusalLog>,
}

impl HttpApp {
    /// An app over `store` and `metrics`; `/readyz` answers 200 while `ready` is true.
    pub fn new(store: Store, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Self {
        HttpApp {
            store,
            metrics,
            ready,
            last_len: Arc::new(AtomicUsize::new(0)),
            renders: Arc::new(tokio::sync::Semaphore::new(MAX_RENDERS)),
            basic_auth: None,
            refusals: Arc::new(RefusalLog::default()),
        }
    }

    /// Logs refused requests through `refusals` (shared with the sender port).
    pub fn with_refusal_log(mut self, refusals: Arc<RefusalLog>) -> Self {
        self.refusals = refusals;
        self
    }

    /// Requires `auth` on `/metrics` and the status page.
    pub fn with_basic_auth(mut self, auth: BasicAuth) -> Self {
        self.basic_auth = Some(Arc::new(auth));
        self
    }

    /// Answers one request (the body is never read), rendering any page in this thread.
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        match self.route(req) {
            Routed::Ready(response) => response,
            Routed::Render(page) => self.render(page),
        }
    }

    /// Answers one request (the body is never read), rendering `/metrics` and the status
    /// page on the blocking pool so no runtime worker waits for them.
    pub async fn respond_off_runtime<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        match self.route(req) {
            Routed::Ready(response) => response,
            Routed::Render(page) => {
                // The semaphore is never closed; a closed one would only end the wait.
                let Ok(turn) = self.renders.clone().acquire_owned().await else {
                    return reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        "failed to render the page\n".into(),
                    );
                };
                let app = self.clone();
                let render = move || {
                    let response = app.render(page);
                    drop(turn);
                    response
                };
                match tokio::task::spawn_blocking(render).await {
                    Ok(response) => response,
                    Err(e) => {
                        warn!(cause = %e, "rendering a page failed");
                        reply(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            TEXT,
                            "failed to render the page\n".into(),
                        )
                    }
                }
            }
        }
    }

    fn render(&self, page: Page) -> Response<Full<Bytes>> {
        match page {
            Page::Metrics(format) => reply(
                StatusCode::OK,
                format.content_type(),
                self.render_metrics(format),
            ),
            Page::Status(query) => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                status::page(&self.store, query.as_deref()),
            ),
        }
    }

    /// The response to `req`, or the page to render for it.
    fn route<B>(&self, req: &Request<B>) -> Routed {
        let path = req.uri().path();
        if let Some(auth) = &self.basic_auth
            && matches!(path, "/metrics" | "/")
            && !auth.accepts(
                req.headers()
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            )
        {
            self.metrics.auth_failure("http_basic_auth");
            let mut r = reply(
                StatusCode::UNAUTHORIZED,
                TEXT,
                "authentication required\n".into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(BASIC_AUTH_CHALLENGE),
            );
            return Routed::Ready(r);
        }
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        Routed::Ready(match (get, path) {
            (true, "/metrics") => {
                let accept = req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                return Routed::Render(Page::Metrics(Format::negotiate(accept)));
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
            (true, "/") => {
                return Routed::Render(Page::Status(req.uri().query().map(str::to_owned)));
            }
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
        })
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

/// A page whose rendering reads every cluster.
#[derive(Debug, Clone)]
enum Page {
    Metrics(Format),
    /// The status page, with the request's query string.
    Status(Option<String>),
}

/// What routing a request gave.
enum Routed {
    Ready(Response<Full<Bytes>>),
    Render(Page),
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `shutdown` fires; open
/// connections finish their current request and close. Connection tasks are spawned on
/// `tracker`.
pub async fn serve(
    listener: TcpListener,
    app: HttpApp,
    tls: Option<TlsAcceptor>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
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
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(peer = %peer, "HTTP connection limit reached; closing");
            continue;
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            match tls {
                None => serve_connection(stream, peer, app, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, app, shutdown).await,
                        Ok(Err(e)) => {
                            debug!(peer = %peer, cause = %e, "HTTPS handshake failed");
                        }
                        Err(_) => debug!(peer = %peer, "HTTPS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Serves HTTP/1.1 on one connection until it closes or shutdown.
async fn serve_connection<S>(stream: S, peer: SocketAddr, app: HttpApp, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let app = app.clone();
        async move {
            let response = app.respond_off_runtime(&req).await;
            if response.status() == StatusCode::UNAUTHORIZED {
                let cause = format!("{} without valid basic auth credentials", req.uri().path());
                app.refusals.refused(peer, "http_basic_auth", &cause);
            }
            Ok::<_, Infallible>(response)
        }
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
    fn basic_auth_guards_metrics_and_status_and_leaves_health_open() {
        use base64::Engine as _;
        let app = app().with_basic_auth(BasicAuth {
            user: "u".into(),
            password: "p".into(),
        });
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:p")
        );
        let with = |path: &str, auth: Option<&str>| {
            let mut req = Request::get(path);
            if let Some(auth) = auth {
                req = req.header(header::AUTHORIZATION, auth);
            }
            app.respond(&req.body(()).expect("request"))
        };
        for path in ["/metrics", "/"] {
            let r = with(path, None);
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(
                r.headers()[header::WWW_AUTHENTICATE],
                "Basic realm=\"kube-relay\""
            );
            assert_eq!(with(path, Some(&good)).status(), StatusCode::OK, "{path}");
        }
        assert_eq!(with("/healthz", None).status(), StatusCode::OK);
        assert_eq!(with("/readyz", None).status(), StatusCode::OK);
        let text = app.render_metrics(Format::Text);
        assert!(
            text.contains("relay_receiver_auth_failures_total{kind=\"http_basic_auth\"} 2\n"),
            "{text}"
        );
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
