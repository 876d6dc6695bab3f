//! The HTTP server: an accept loop on the caller's listener, one hyper HTTP/1.1 connection
//! task per client (capped), and request dispatch to the API handlers.
//!
//! Injected request faults (500s, delays) apply to resource requests only, never to
//! discovery, so clients keep their bearings while their list/watch calls fail.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::api::{self, Query, Reply, Route};
use crate::faults::FaultAction;
use crate::resources;
use crate::shared::{Body, RequestRecord, Shared, full};

/// Most concurrent connections served.
const MAX_CONNECTIONS: usize = 4096;
/// Largest request body read (the real server's limit is 3 MiB).
const MAX_BODY_BYTES: usize = 3 << 20;

fn respond(reply: Reply) -> Response<Body> {
    let mut response = Response::new(full(reply.body));
    *response.status_mut() = reply.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(reply.content_type),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    response
}

/// Accepts connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared2 = shared.clone();
                shared.tracker.spawn(async move {
                    connection(stream, peer, shared2).await;
                    drop(permit);
                });
            }
            Err(e) => {
                warn!(cause = %e, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    debug!("accept loop stopped");
}

async fn connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let svc_shared = shared.clone();
    let service = service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(handle(req, shared).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, cause = %e, "connection ended with an error");
            }
        }
        _ = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let (response, watch) = dispatch(req, &shared).await;
    debug!(%method, %path, status = response.status().as_u16(), "request");
    shared.log_request(RequestRecord {
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
        watch,
    });
    response
}

async fn read_body(body: Incoming) -> Result<Bytes, Reply> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(Reply::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("failed to read the request body: {e}"),
            None,
        )),
    }
}

async fn dispatch(req: Request<Incoming>, shared: &Arc<Shared>) -> (Response<Body>, bool) {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let accept = header(header::ACCEPT);
    let content_type = header(header::CONTENT_TYPE);
    let metrics = shared.lock().cfg.metrics_enabled;
    let reply = match api::route(&path, metrics) {
        Route::Root => Reply::json(
            StatusCode::OK,
            &json!({"paths": ["/api", "/api/v1", "/apis", "/apis/apps/v1", "/apis/autoscaling/v2", "/apis/events.k8s.io/v1", "/healthz", "/livez", "/readyz", "/version"]}),
        ),
        Route::Version => Reply::json(StatusCode::OK, &resources::version_info()),
        Route::Health => Reply::text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok".to_string(),
        ),
        Route::Api => Reply::json(
            StatusCode::OK,
            &resources::api_versions(&shared.addr.to_string()),
        ),
        Route::Apis => Reply::json(StatusCode::OK, &resources::api_group_list(metrics)),
        Route::Group(g) => match resources::api_group(&g, metrics) {
            Some(doc) => Reply::json(StatusCode::OK, &doc),
            None => Reply::page_not_found(),
        },
        Route::ResourceList(g, v) => match resources::api_resource_list(&g, &v, metrics) {
            Some(doc) => Reply::json(StatusCode::OK, &doc),
            None => Reply::page_not_found(),
        },
        Route::Unknown => {
            if path.starts_with("/api/") || path.starts_with("/apis/") {
                Reply::no_resource()
            } else {
                Reply::page_not_found()
            }
        }
        Route::Resource(r) => {
            match shared.with(|c| c.take_fault(r.def.plural)) {
                Some(FaultAction::Fail) => {
                    return (
                        respond(Reply::status(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "InternalError",
                            "Internal error occurred: injected fault (kube-sim)".to_string(),
                            None,
                        )),
                        false,
                    );
                }
                Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
                None => {}
            }
            if r.def.plural == "pods"
                && let Some(sub @ ("log" | "exec" | "attach" | "portforward")) = r.sub.as_deref()
            {
                return (respond(Reply::no_containers(sub)), false);
            }
            let Some(format) = api::negotiate(accept.as_deref()) else {
                return (
                    respond(Reply::status(
                        StatusCode::NOT_ACCEPTABLE,
                        "NotAcceptable",
                        "only the following media types are accepted: application/json".to_string(),
                        None,
                    )),
                    false,
                );
            };
            // A real API server's watch cache waits a while for a resourceVersion it has
            // not reached before it refuses it (lists and gets here; watches in `watch`).
            if matches!(parts.method, Method::GET | Method::HEAD)
                && !query.flag("watch")
                && query.get("continue").is_none_or(str::is_empty)
                && let Ok(Some(rv)) = api::requested_rv(&query)
                && rv > shared.lock().store.rv()
            {
                shared.wait_for_rv(rv, api::TOO_LARGE_WAIT).await;
            }
            match parts.method {
                Method::GET | Method::HEAD if r.name.is_none() => {
                    if query.flag("watch") {
                        return match crate::watch::start(shared.clone(), &r, &query, format) {
                            Ok(response) => (response, true),
                            Err(reply) => (respond(reply), true),
                        };
                    }
                    shared.with(|c| api::list(c, &r, &query, format))
                }
                Method::GET | Method::HEAD => shared.with(|c| api::get(c, &r, &query, format)),
                Method::DELETE => match read_body(body).await {
                    Ok(b) => shared.with(|c| api::delete(c, &r, &query, &b)),
                    Err(reply) => reply,
                },
                Method::PUT | Method::PATCH if r.sub.as_deref() == Some("scale") => {
                    match read_body(body).await {
                        Ok(b) => shared.with(|c| {
                            api::update_scale(c, &r, &parts.method, content_type.as_deref(), &b)
                        }),
                        Err(reply) => reply,
                    }
                }
                _ => Reply::read_only(&parts.method, &r),
            }
        }
    };
    (respond(reply), false)
}
