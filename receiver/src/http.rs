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
//! a 167 MB page and a few hundred milliseconds of CPU (the fan-in bench). [`serve`] renders
//! them on a thread of their own ([`crate::page`]), not on a runtime worker, where the
//! sessions that worker would have run meanwhile (its local queue and LIFO slot cannot all
//! be stolen) waited for the whole render, and senders saw it as ack latency. The page goes
//! out in pieces as it is written (chunked, without `Content-Length`), so a scrape needs a
//! few pieces of memory, not the page, and the client reads while the receiver renders.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::exposition::{Format, PageWriter, ReaderGone};
use crate::metrics::Metrics;
use crate::page::{self, PageBody};
use crate::security::{BASIC_AUTH_CHALLENGE, BasicAuth, RefusalLog};
use crate::status;
use crate::store::Store;

/// Longest time a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most HTTP connections served at once; further ones are closed on accept. Prometheus
/// keeps one connection per target, so this only bounds abuse.
pub const MAX_HTTP_CONNECTIONS: usize = 256;

/// Most `/metrics` or status pages rendered at once, each on a thread of its own, each
/// holding a view of every cluster (copy-on-write: chunks that ingest changes meanwhile are
/// copied) and up to [`crate::page::PIECES_AHEAD`] pieces; the others wait for a turn.
pub const MAX_RENDERS: usize = 2;

/// A response body: short answers whole, rendered pages in pieces as they are written.
pub type HttpBody = Either<Full<Bytes>, PageBody>;

/// Everything the HTTP endpoints read. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpApp {
    store: Store,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    last_len: Arc<AtomicUsize>,
    /// Pages rendered at once; the others wait for a turn.
    renders: Arc<tokio::sync::Semaphore>,
    /// How long a render waits for its client to take a piece.
    piece_taken_within: Duration,
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
            piece_taken_within: page::PIECE_TAKEN_WITHIN,
            basic_auth: None,
            refusals: Arc::new(RefusalLog::default()),
        }
    }

    /// Logs refused requests through `refusals` (shared with the sender port).
    pub fn with_refusal_log(mut self, refusals: Arc<RefusalLog>) -> Self {
        self.refusals = refusals;
        self
    }

    /// Stops a render whose client takes none of its pieces for `within` (default
    /// [`page::PIECE_TAKEN_WITHIN`]), freeing its turn.
    pub fn with_piece_taken_within(mut self, within: Duration) -> Self {
        self.piece_taken_within = within;
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
    /// page on a thread of their own ([`page::spawn_render`]) so no runtime worker waits for
    /// them; the response's body yields the page in pieces as they are written.
    pub async fn respond_off_runtime<B>(&self, req: &Request<B>) -> Response<HttpBody> {
        let page = match self.route(req) {
            Routed::Ready(response) => return response.map(Either::Left),
            Routed::Render(page) => page,
        };
        let failed = || {
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "failed to render the page\n".into(),
            )
            .map(Either::Left)
        };
        // The semaphore is never closed; a closed one would only end the wait.
        let Ok(turn) = self.renders.clone().acquire_owned().await else {
            return failed();
        };
        let content_type = page.content_type();
        let app = self.clone();
        let render = move |out: PageWriter<'_>| {
            let rendered = app.write_page(&page, out);
            drop(turn);
            rendered
        };
        match page::spawn_render(self.piece_taken_within, render) {
            Ok(body) => {
                let mut r = Response::new(Either::Right(body));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(content_type),
                );
                r
            }
            Err(e) => {
                warn!(cause = %e, "failed to start a render thread");
                failed()
            }
        }
    }

    fn render(&self, page: Page) -> Response<Full<Bytes>> {
        let text = match &page {
            Page::Metrics(format) => self.render_metrics(*format),
            Page::Status(query) => status::page(&self.store, query.as_deref()),
        };
        reply(StatusCode::OK, page.content_type(), text)
    }

    /// Writes `page` to `out` and finishes it.
    fn write_page(&self, page: &Page, mut out: PageWriter<'_>) -> Result<(), ReaderGone> {
        match page {
            Page::Metrics(format) => self.write_metrics(*format, out),
            Page::Status(query) => {
                out.text()
                    .push_str(&status::page(&self.store, query.as_deref()));
                out.finish()
            }
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

    /// Encodes every cluster's series and the self-metrics in `format` as one string, and
    /// records the time it took in `relay_receiver_scrape_duration_seconds`.
    pub fn render_metrics(&self, format: Format) -> String {
        let capacity = self.last_len.load(Ordering::Relaxed) + 4096;
        let text = PageWriter::gather(capacity, |out| self.write_metrics(format, out));
        self.last_len.store(text.len(), Ordering::Relaxed);
        text
    }

    /// Writes every cluster's series and the self-metrics in `format` to `out` and finishes
    /// it; a complete page records the time from its start to its last piece handed on in
    /// `relay_receiver_scrape_duration_seconds` (streamed, that includes waiting for a
    /// client slower than the render).
    fn write_metrics(&self, format: Format, mut out: PageWriter<'_>) -> Result<(), ReaderGone> {
        let started = std::time::Instant::now();
        self.store.write_series(format, &mut out)?;
        self.metrics.write(format, &mut out)?;
        if format == Format::OpenMetrics {
            out.text().push_str("# EOF\n");
        }
        out.finish()?;
        self.metrics.observe_scrape(started.elapsed().as_secs_f64());
        Ok(())
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

impl Page {
    fn content_type(&self) -> &'static str {
        match self {
            Page::Metrics(format) => format.content_type(),
            Page::Status(_) => "text/html; charset=utf-8",
        }
    }
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

    /// An app whose store holds one cluster `c1` of `n` series, `kube_pod_info{pod="pN"} 1`.
    fn app_with_series(n: u32) -> HttpApp {
        use kube_relay_proto::{
            Batch, FamilyDef, Hello, MetricKind, PROTOCOL_VERSION, SeriesDef, SnapshotPart,
            Updates, Value,
        };
        let store = Store::new(StdDuration::from_secs(60), n as usize);
        let metrics = Metrics::new(store.clone());
        let app = HttpApp::new(store, metrics, Arc::new(AtomicBool::new(true)));
        let hello = Hello {
            version: PROTOCOL_VERSION,
            cluster: "c1".into(),
            sender_id: "s".into(),
            epoch: 1,
            token: None,
            resume_from: None,
            agent: "test/0".into(),
        };
        let claim = app
            .store
            .claim(&hello, None, CancellationToken::new())
            .expect("claim");
        let snapshot = Batch {
            observed_at_ms: 0,
            seq: 1,
            snapshot: Some(SnapshotPart {
                first: true,
                last: true,
            }),
            families: vec![FamilyDef {
                id: 0,
                name: "kube_pod_info".into(),
                help: "Pods.".into(),
                kind: MetricKind::Gauge,
            }],
            series: (0..n)
                .map(|id| SeriesDef {
                    id,
                    family: 0,
                    labels: vec![("pod".into(), format!("p{id}"))],
                })
                .collect(),
            updates: Updates::from_unsorted((0..n).map(|id| (id, Value::Int(1))).collect()),
            removals: Vec::new(),
        };
        app.store
            .apply("c1", claim.conn, &snapshot, 10)
            .expect("snapshot");
        app
    }

    /// Serves `app` on a port of its own until the test ends.
    async fn serving(app: &HttpApp) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(serve(
            listener,
            app.clone(),
            None,
            TaskTracker::new(),
            CancellationToken::new(),
        ));
        addr
    }

    #[tokio::test]
    async fn a_page_streamed_in_pieces_is_the_page_rendered_whole() {
        let app = app_with_series(50_000);
        let mut series = String::new();
        app.store.encode_series(Format::OpenMetrics, &mut series);
        assert!(
            series.len() > 20 * page::PIECE_BYTES,
            "{} bytes",
            series.len()
        );
        let addr = serving(&app).await;
        // HTTP/1.0: the page ends with the connection.
        let accept = [("Accept", "application/openmetrics-text")];
        let r = kube_relay_testkit::http::get(addr, "/metrics", &accept)
            .await
            .expect("GET");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), None);
        let page = r.text().expect("UTF-8");
        assert!(page.starts_with(&series), "the series, whole and in order");
        assert!(page[series.len()..].contains("# TYPE relay_receiver_connected_senders gauge\n"));
        assert!(page.ends_with("\n# EOF\n"));
        assert_eq!(page.matches("# EOF").count(), 1);
        // HTTP/1.1, as Prometheus asks: chunked.
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let response = client
            .get(format!("http://{addr}/metrics").parse().expect("uri"))
            .await
            .expect("GET over HTTP/1.1");
        assert_eq!(response.headers()[header::TRANSFER_ENCODING], "chunked");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        let mut text_series = String::new();
        app.store.encode_series(Format::Text, &mut text_series);
        let text = std::str::from_utf8(&body).expect("UTF-8");
        assert!(text.starts_with(&text_series));
        assert!(text.contains("# TYPE relay_receiver_scrape_duration_seconds histogram\n"));
        assert!(!text.contains("# EOF"));
    }

    /// Asks `app`'s server for `/metrics` over HTTP/1.1 and reads the first piece's worth
    /// of the response: the render is under way and ahead of its client.
    async fn page_begun(app: &HttpApp) -> (tokio::net::TcpStream, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = serving(app).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
            .await
            .expect("request");
        let mut first = vec![0; page::PIECE_BYTES];
        stream.read_exact(&mut first).await.expect("first bytes");
        assert!(first.starts_with(b"HTTP/1.1 200 OK\r\n"));
        (stream, first)
    }

    /// Waits until no render holds a turn of `app`'s.
    async fn every_render_turn_free(app: &HttpApp) {
        kube_relay_testkit::wait_until(
            "the render's turn given back",
            StdDuration::from_secs(30),
            StdDuration::from_millis(10),
            || async { Ok((app.renders.available_permits() == MAX_RENDERS).then_some(())) },
        )
        .await
        .expect("turn given back");
    }

    #[tokio::test]
    async fn a_client_leaving_mid_page_stops_its_render_and_frees_its_turn() {
        // About 20 MB: more than the socket and hyper buffer while the client reads no more.
        let app = app_with_series(500_000);
        let (stream, _) = page_begun(&app).await;
        assert_eq!(app.renders.available_permits(), MAX_RENDERS - 1);
        drop(stream);
        every_render_turn_free(&app).await;
        // The render stopped before the end of its page, so it was not counted as a scrape
        // (this page is written before it counts itself).
        let page = app.render_metrics(Format::Text);
        assert!(
            page.contains("relay_receiver_scrape_duration_seconds_count 0\n"),
            "{}",
            &page[page.len().saturating_sub(2000)..]
        );
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_loses_its_render_and_its_page() {
        use tokio::io::AsyncReadExt;
        let app = app_with_series(500_000).with_piece_taken_within(StdDuration::from_millis(300));
        let (mut stream, mut first) = page_begun(&app).await;
        // The connection stays open, unread.
        every_render_turn_free(&app).await;
        let mut rest = Vec::new();
        // Aborted: the connection ends (or fails) without the chunked body's last chunk.
        let _ = stream.read_to_end(&mut rest).await;
        first.extend_from_slice(&rest);
        assert!(
            !first.ends_with(b"\r\n0\r\n\r\n"),
            "a complete chunked body"
        );
    }

    #[tokio::test]
    async fn head_answers_the_headers_of_get_without_a_page() {
        let app = app_with_series(10);
        let addr = serving(&app).await;
        let r = kube_relay_testkit::http::request(addr, "HEAD", "/metrics", &[], &[])
            .await
            .expect("HEAD");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(Format::Text.content_type()));
        assert!(r.body.is_empty());
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
