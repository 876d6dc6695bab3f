//! The sender's own HTTP port (`--http-listen`): `GET /metrics`, `/healthz`, `/readyz`.
//!
//! The sender's self-metrics ride the link to the receiver, so they vanish exactly when the
//! link is down; this port answers regardless. `/metrics` (Prometheus text format) holds the
//! `relay_sender_*` families as they are relayed, computed afresh at each scrape, plus what
//! only this port shows: `relay_sender_link_up` (1 while a session with the receiver is
//! established), `relay_sender_spool_updates` (changed samples in sent, unacknowledged
//! batches) and the `process_*` families ([`crate::process`]). `/healthz` answers 200 while
//! the runtime serves requests (liveness); `/readyz` answers 200 once every watcher has
//! completed its first list, 503 before (readiness: a restarted sender is ready once it
//! relays the whole cluster again).
//!
//! [`HttpApp::respond`] maps a request to a response without a socket, so routing is unit
//! tested directly; [`serve`] runs it with hyper on a bound listener, at most
//! [`MAX_HTTP_CONNECTIONS`] at once, until the shutdown token fires. Reading `/proc` for the
//! process metrics is file I/O, so a scrape is rendered on the blocking pool.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use kube_relay_proto::MetricKind;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::exposition::{self, Exposition};
use crate::process::ProcessStats;
use crate::shared::Shared;

/// Longest time a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most HTTP connections served at once; further ones are closed on accept. A kubelet and a
/// Prometheus or two connect; this only bounds abuse.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// What the endpoints read. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpApp {
    shared: Arc<Shared>,
}

const TEXT: &str = "text/plain; charset=utf-8";

impl HttpApp {
    /// An app over the sender's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        HttpApp { shared }
    }

    /// Answers one request (the body is never read). `/metrics` reads `/proc`: call this
    /// off the runtime ([`serve`] does).
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match (get, path) {
            (true, "/metrics") => reply(
                StatusCode::OK,
                exposition::CONTENT_TYPE,
                self.render_metrics(),
            ),
            (true, "/healthz") => reply(StatusCode::OK, TEXT, "ok\n".into()),
            (true, "/readyz") if self.shared.stats.watches_synced() => {
                reply(StatusCode::OK, TEXT, "ready\n".into())
            }
            (true, "/readyz") => {
                let stats = &self.shared.stats;
                let body = format!(
                    "not ready: {} of {} watches have listed the cluster\n",
                    stats.watchers_listed.load(Ordering::Relaxed),
                    stats.watchers.load(Ordering::Relaxed)
                );
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, body)
            }
            (false, "/metrics" | "/healthz" | "/readyz") => {
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
                "not found; try /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }

    /// The exposition: the relayed self-metrics, the port's own gauges, the process.
    pub fn render_metrics(&self) -> String {
        let stats = &self.shared.stats;
        let set = self.shared.self_series(&self.shared.store());
        let mut out = Exposition::new();
        out.series(&set);
        out.single(
            "relay_sender_link_up",
            "1 while a session with the receiver is established, else 0.",
            MetricKind::Gauge,
            f64::from(u8::from(stats.connected.load(Ordering::Relaxed))),
        );
        out.single(
            "relay_sender_spool_updates",
            "Changed samples in sent batches the receiver has not acknowledged yet (kept in the spool for replay).",
            MetricKind::Gauge,
            stats.spooled_samples.load(Ordering::Relaxed) as f64,
        );
        match ProcessStats::read() {
            Ok(process) => process.encode(&mut out),
            Err(e) => debug!(cause = %e, "no process metrics"),
        }
        out.into_string()
    }
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

/// Binds `--http-listen`'s `HOST:PORT`; an IPv6 address may come without brackets
/// (`fd00::7:9101`, what `$(POD_IP):9101` gives in an IPv6 pod), the port being what follows
/// the last colon.
///
/// # Errors
/// When the address does not resolve or cannot be bound.
pub async fn bind(listen: &str) -> std::io::Result<TcpListener> {
    match listen_addr(listen) {
        Some(addr) => TcpListener::bind(addr).await,
        None => TcpListener::bind(listen).await,
    }
}

/// `listen` as a socket address when it is an IP address and a port (bracketed or not), `None`
/// for a host name.
pub fn listen_addr(listen: &str) -> Option<SocketAddr> {
    listen.parse().ok().or_else(|| {
        let (ip, port) = listen.rsplit_once(':')?;
        Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
    })
}

/// Serves `app` on `listener` until `shutdown` fires; open connections finish their current
/// request and close.
pub async fn serve(listener: TcpListener, app: HttpApp, shutdown: CancellationToken) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(cause = %e, "failed to accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            debug!(peer = %peer, "HTTP connection limit reached; closing");
            continue;
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, app, shutdown).await;
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

/// Serves HTTP/1.1 on one connection until it closes or shutdown.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: HttpApp,
    shutdown: CancellationToken,
) {
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let app = app.clone();
        let (parts, _body) = req.into_parts();
        let req = Request::from_parts(parts, ());
        async move {
            let response = tokio::task::spawn_blocking(move || app.respond(&req))
                .await
                .unwrap_or_else(|e| {
                    warn!(cause = %e, "rendering an HTTP response failed");
                    reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        TEXT,
                        "internal error\n".into(),
                    )
                });
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
    use super::*;

    fn get(app: &HttpApp, method: Method, path: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request");
        let response = app.respond(&req);
        let status = response.status();
        let body = response.into_body();
        let bytes = futures::executor::block_on(http_body_util::BodyExt::collect(body))
            .expect("body")
            .to_bytes();
        (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
    }

    #[test]
    fn readiness_follows_the_watchers_first_lists() {
        let shared = Arc::new(Shared::new(1));
        let app = HttpApp::new(Arc::clone(&shared));
        assert_eq!(get(&app, Method::GET, "/healthz").0, StatusCode::OK);
        let (status, body) = get(&app, Method::GET, "/readyz");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no watcher yet");
        assert!(body.contains("0 of 0"), "{body}");
        shared.stats.watchers.store(2, Ordering::Relaxed);
        shared.stats.watchers_listed.store(1, Ordering::Relaxed);
        assert_eq!(
            get(&app, Method::GET, "/readyz"),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: 1 of 2 watches have listed the cluster\n".to_owned()
            )
        );
        shared.stats.watchers_listed.store(2, Ordering::Relaxed);
        assert_eq!(get(&app, Method::GET, "/readyz").0, StatusCode::OK);
    }

    #[test]
    fn metrics_hold_the_self_metrics_the_link_state_and_the_process() {
        let shared = Arc::new(Shared::new(1));
        shared.stats.reconnects.store(2, Ordering::Relaxed);
        shared.stats.spooled_samples.store(7, Ordering::Relaxed);
        shared.source.expect_watch("pods", None);
        shared.source.api_answered(true, None);
        let app = HttpApp::new(Arc::clone(&shared));
        let (status, text) = get(&app, Method::GET, "/metrics");
        assert_eq!(status, StatusCode::OK);
        for line in [
            "relay_sender_reconnects_total 2",
            "relay_sender_queue_depth 7",
            "relay_sender_api_up 1",
            r#"relay_sender_watch_up{resource="pods"} 0"#,
            "relay_sender_link_up 0",
            "relay_sender_spool_updates 7",
            "# TYPE relay_sender_reconnects_total counter",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        shared.stats.connected.store(true, Ordering::Relaxed);
        assert!(
            get(&app, Method::GET, "/metrics")
                .1
                .contains("\nrelay_sender_link_up 1\n")
        );
    }

    #[test]
    fn other_methods_and_paths_are_refused() {
        let app = HttpApp::new(Arc::new(Shared::new(1)));
        assert_eq!(
            get(&app, Method::POST, "/metrics").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (status, body) = get(&app, Method::GET, "/");
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("/metrics"), "{body}");
    }
}
