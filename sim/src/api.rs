//! The REST API: request paths → resources, and every handler except watch (see `watch`).
//!
//! Handlers run with the cluster locked and return a complete [`Reply`]. Errors are
//! `metav1.Status` objects with the real server's codes, reasons and message wording
//! (`pods "x" not found`, `field label not supported: spec.foo`, `410 Expired`, ...).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec, ScaleStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    DeleteOptions, ListMeta, Status, StatusCause, StatusDetails,
};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::resources::{self, ResourceDef, Source, View};
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::Cluster;
use crate::store::{ObjKey, Stored};
use crate::table;

/// Most replicas the scale subresource accepts (the simulator holds every pod in memory).
const MAX_REPLICAS: i32 = 100_000;

/// A complete HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    /// A JSON body.
    pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status,
                content_type: "application/json",
                body: Bytes::from(body),
            },
            Err(e) => Reply::status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("Internal error occurred: failed to encode the response: {e}"),
                None,
            ),
        }
    }

    /// A `metav1.Status` failure.
    pub(crate) fn status(
        code: StatusCode,
        reason: &str,
        message: String,
        details: Option<StatusDetails>,
    ) -> Reply {
        let status = Status {
            code: Some(i32::from(code.as_u16())),
            details,
            message: Some(message),
            metadata: ListMeta::default(),
            reason: Some(reason.to_string()),
            status: Some("Failure".to_string()),
        };
        let body = serde_json::to_vec(&status).unwrap_or_default();
        Reply {
            status: code,
            content_type: "application/json",
            body: Bytes::from(body),
        }
    }

    /// Plain text.
    pub(crate) fn text(status: StatusCode, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type,
            body: Bytes::from(body),
        }
    }

    /// `404` for a path the server does not serve at all.
    pub(crate) fn page_not_found() -> Reply {
        Reply::text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 page not found\n".to_string(),
        )
    }

    /// `404` for an unknown resource under a known prefix.
    pub(crate) fn no_resource() -> Reply {
        Reply::status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".to_string(),
            None,
        )
    }

    /// `405`.
    pub(crate) fn method_not_allowed() -> Reply {
        Reply::status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_string(),
            None,
        )
    }

    /// `405` for a write the simulator does not serve, saying which writes it serves.
    pub(crate) fn read_only(method: &http::Method, r: &ResourceRequest) -> Reply {
        let what = match (&r.name, &r.sub) {
            (Some(name), Some(sub)) => format!("{}/{name}/{sub}", r.def.plural),
            (Some(name), None) => format!("{}/{name}", r.def.plural),
            (None, _) => r.def.plural.to_string(),
        };
        Reply::status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource: kube-sim serves no {method} on {what}; its only writes are deleting pods and scaling deployments (the scale subresource), the scenario shapes everything else (kube-sim --help)"
            ),
            None,
        )
    }

    /// `404` for the container subresources (`kubectl logs`, `exec`, `attach`,
    /// `port-forward`): no containers run behind the simulator.
    pub(crate) fn no_containers(sub: &str) -> Reply {
        Reply::status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "kube-sim runs no containers, so it serves no pods/{sub} (kubectl logs, exec, attach and port-forward do not work against it; kube-sim --help)"
            ),
            None,
        )
    }

    /// `400`.
    pub(crate) fn bad_request(message: String) -> Reply {
        Reply::status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
    }

    /// `504` for a resourceVersion the server has not reached (see [`too_large`]).
    pub(crate) fn too_large(requested: u64, current: u64) -> Reply {
        Reply::json(StatusCode::GATEWAY_TIMEOUT, &too_large(requested, current))
    }
}

/// How long a request for a resourceVersion the store has not reached waits for it before
/// it is refused: the watch cache's `blockTimeout`.
pub(crate) const TOO_LARGE_WAIT: Duration = Duration::from_secs(3);

/// The Status a real API server answers a list, get or watch from a resourceVersion it has
/// not reached with (`storage.NewTooLargeResourceVersionError`): `504 Timeout`, the cause
/// `ResourceVersionTooLarge` and a retry after one second. client-go's reflector relists
/// from scratch on it (`isTooLargeResourceVersionError`); a watch gets it as an `ERROR`
/// event. A restarted server with fresh storage (or an etcd restore) is where clients meet
/// it: every resourceVersion they hold is one this server never issued.
pub(crate) fn too_large(requested: u64, current: u64) -> Status {
    Status {
        code: Some(i32::from(StatusCode::GATEWAY_TIMEOUT.as_u16())),
        details: Some(StatusDetails {
            retry_after_seconds: Some(1),
            causes: Some(vec![StatusCause {
                reason: Some("ResourceVersionTooLarge".to_string()),
                message: Some("Too large resource version".to_string()),
                field: None,
            }]),
            ..StatusDetails::default()
        }),
        message: Some(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        metadata: ListMeta::default(),
        reason: Some("Timeout".to_string()),
        status: Some("Failure".to_string()),
    }
}

/// The resourceVersion a list, get or watch asks for (`None` for none or `0`: "any").
///
/// # Errors
/// `400` for one that is not a number.
pub(crate) fn requested_rv(q: &Query) -> Result<Option<u64>, Reply> {
    match q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Reply::bad_request(format!("invalid resource version: {v}"))),
    }
}

/// `pods "x" not found` (with `apps`-style group suffixes where the real server adds them).
fn not_found(def: &ResourceDef, name: &str) -> Reply {
    let resource = if def.group.is_empty() {
        def.plural.to_string()
    } else {
        format!("{}.{}", def.plural, def.group)
    };
    Reply::status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{resource} \"{name}\" not found"),
        Some(StatusDetails {
            name: Some(name.to_string()),
            group: (!def.group.is_empty()).then(|| def.group.to_string()),
            kind: Some(def.plural.to_string()),
            ..StatusDetails::default()
        }),
    )
}

/// A parsed query string (last value wins; `?&limit=500` and friends are tolerated).
#[derive(Debug, Default, Clone)]
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    /// Parses `a=b&c=d` with percent- and `+`-decoding, skipping empty pairs.
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in query.unwrap_or("").split('&') {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(decode(k), decode(v));
        }
        Query(map)
    }

    /// A parameter's value.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean parameter (`true`, `1`).
    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True"))
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a request goes.
#[derive(Debug)]
pub(crate) enum Route {
    Root,
    Version,
    Health,
    Api,
    Apis,
    Group(String),
    ResourceList(String, String),
    Resource(ResourceRequest),
    Unknown,
}

/// A request for a resource (collection, object or subresource).
#[derive(Debug)]
pub(crate) struct ResourceRequest {
    pub def: &'static ResourceDef,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    /// Path segments after the subresource (node proxy paths).
    pub rest: Vec<String>,
}

/// Maps a path to a route.
pub(crate) fn route(path: &str, metrics: bool) -> Route {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match seg.as_slice() {
        [] => return Route::Root,
        ["version"] => return Route::Version,
        ["healthz" | "livez" | "readyz", ..] => return Route::Health,
        ["api"] => return Route::Api,
        ["apis"] => return Route::Apis,
        ["api", v] => return Route::ResourceList(String::new(), v.to_string()),
        ["apis", g] => return Route::Group(g.to_string()),
        ["apis", g, v] => return Route::ResourceList(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    let find = |plural: &str| resources::find(group, version, plural, metrics);
    let req =
        |def, namespace: Option<&str>, name: Option<&&str>, sub: Option<&&str>, rest: &[&str]| {
            Route::Resource(ResourceRequest {
                def,
                namespace: namespace.map(str::to_string),
                name: name.map(|s| s.to_string()),
                sub: sub.map(|s| s.to_string()),
                rest: rest.iter().map(|s| s.to_string()).collect(),
            })
        };
    match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|d| d.namespaced) => {
            let Some(def) = find(plural) else {
                return Route::Unknown;
            };
            match tail {
                [] => req(def, Some(ns), None, None, &[]),
                [name] => req(def, Some(ns), Some(name), None, &[]),
                [name, sub, more @ ..] => req(def, Some(ns), Some(name), Some(sub), more),
            }
        }
        [plural, tail @ ..] => {
            let Some(def) = find(plural) else {
                return Route::Unknown;
            };
            match tail {
                [] => req(def, None, None, None, &[]),
                [name] if !def.namespaced => req(def, None, Some(name), None, &[]),
                [name, sub, more @ ..] if !def.namespaced => {
                    req(def, None, Some(name), Some(sub), more)
                }
                _ => Route::Unknown,
            }
        }
        [] => Route::Unknown,
    }
}

/// How the client wants lists and objects rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Table,
}

/// Reads the `Accept` header: a Table if offered (kubectl get), else JSON; `None` when
/// the client accepts nothing the server speaks.
pub(crate) fn negotiate(accept: Option<&str>) -> Option<Format> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(Format::Json);
    };
    let mut json = false;
    for part in accept.split(',') {
        let part = part.trim();
        let media = part.split(';').next().unwrap_or("").trim();
        if media == "application/json" && part.contains("as=Table") {
            return Some(Format::Table);
        }
        if matches!(media, "application/json" | "*/*" | "application/*") {
            json = true;
        }
    }
    json.then_some(Format::Json)
}

/// Parsed list/watch selection parameters.
pub(crate) struct Selection {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    /// Parses and validates `labelSelector` and `fieldSelector` for a resource.
    pub(crate) fn parse(
        def: &ResourceDef,
        namespace: Option<&str>,
        q: &Query,
    ) -> Result<Self, Reply> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(Reply::bad_request)?;
        let mut fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(Reply::bad_request)?;
        if def.source == Source::Store(crate::resources::Kind::Event, View::EventsV1) {
            for r in &mut fields.0 {
                let renamed = match r.field.as_str() {
                    f if f.starts_with("regarding.") => {
                        Some(f.replacen("regarding.", "involvedObject.", 1))
                    }
                    "reportingController" => Some("reportingComponent".to_string()),
                    "deprecatedSource" => Some("source".to_string()),
                    _ => None,
                };
                if let Some(f) = renamed {
                    r.field = f;
                }
            }
        }
        if let Some(f) = fields.unsupported(|f| def.selectable(f)) {
            return Err(Reply::bad_request(format!(
                "field label not supported: {f}"
            )));
        }
        // A field selector on metadata.namespace narrows like a namespaced path.
        let namespace = namespace
            .map(str::to_string)
            .or_else(|| fields.required("metadata.namespace").map(str::to_string));
        Ok(Selection {
            namespace,
            labels,
            fields,
        })
    }

    /// Whether a stored object is selected.
    pub(crate) fn matches(&self, s: &Stored) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| s.key.namespace == ns)
            && self.labels.matches(&s.labels)
            && self.fields.matches(&s.fields)
    }
}

#[derive(Serialize)]
struct ObjectList<'a> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: ListMeta,
    items: Vec<&'a RawValue>,
}

#[derive(Serialize)]
struct TypedList<T> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: ListMeta,
    items: Vec<T>,
}

/// `GET` on a collection (not a watch).
pub(crate) fn list(c: &mut Cluster, r: &ResourceRequest, q: &Query, format: Format) -> Reply {
    let selection = match Selection::parse(r.def, r.namespace.as_deref(), q) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let now_ms = c.wall_ms(c.now_ms);
    let (kind, view) = match r.def.source {
        Source::Store(kind, view) => (kind, view),
        Source::PodMetrics | Source::NodeMetrics => return metrics_list(c, r, &selection),
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let current = c.store.rv();
    let (list_rv, items, offset, snapshot) = match q.get("continue").filter(|t| !t.is_empty()) {
        Some(token) => {
            let Ok(parsed) = c.store.parse_continue(token) else {
                return Reply::bad_request(format!("continue key is not valid: {token}"));
            };
            match parsed.and_then(|(id, offset)| Some((c.store.snapshot(id)?, offset, id))) {
                Some(((rv, items), offset, id)) => (rv, items, offset, Some(id)),
                None => {
                    return Reply::status(
                        StatusCode::GONE,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".to_string(),
                        None,
                    );
                }
            }
        }
        None => {
            match (
                q.get("resourceVersion")
                    .filter(|v| !v.is_empty() && *v != "0"),
                q.get("resourceVersionMatch"),
            ) {
                (Some(v), m) => {
                    let Ok(rv) = v.parse::<u64>() else {
                        return Reply::bad_request(format!("invalid resource version: {v}"));
                    };
                    if rv > current {
                        return Reply::too_large(rv, current);
                    }
                    if m == Some("Exact") && rv != current {
                        return Reply::status(
                            StatusCode::GONE,
                            "Expired",
                            format!(
                                "The resourceVersion for the provided list is too old. (requested {rv}, current {current})"
                            ),
                            None,
                        );
                    }
                }
                (None, Some("Exact")) => {
                    return Reply::bad_request(
                        "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".to_string(),
                    );
                }
                _ => {}
            }
            let items: Vec<Arc<Stored>> = c
                .store
                .objects(kind, selection.namespace.as_deref())
                .into_iter()
                .filter(|s| selection.matches(s))
                .collect();
            (current, Arc::new(items), 0, None)
        }
    };
    let end = match limit {
        Some(l) => offset.saturating_add(l).min(items.len()),
        None => items.len(),
    };
    let offset = offset.min(end);
    let more = end < items.len();
    let mut meta = ListMeta {
        resource_version: Some(list_rv.to_string()),
        ..ListMeta::default()
    };
    if more {
        let id = match snapshot {
            Some(id) => id,
            None => c.store.save_snapshot(list_rv, items.clone()),
        };
        meta.continue_ = Some(c.store.continue_token(id, end));
        if selection.labels.is_empty() && selection.fields.is_empty() {
            meta.remaining_item_count = Some(i64::try_from(items.len() - end).unwrap_or(i64::MAX));
        }
    } else if let Some(id) = snapshot {
        c.store.drop_snapshot(id);
    }
    let page = &items[offset..end];
    if format == Format::Table
        && let Some(t) = table::table(
            r.def,
            page,
            view,
            now_ms,
            meta.clone(),
            q.get("includeObject"),
        )
    {
        return match t {
            Ok(t) => Reply::json(StatusCode::OK, &t),
            Err(e) => internal(e),
        };
    }
    Reply::json(
        StatusCode::OK,
        &ObjectList {
            api_version: r.def.api_version(),
            kind: r.def.list_kind(),
            metadata: meta,
            items: page.iter().map(|s| s.view(view)).collect(),
        },
    )
}

fn internal(e: impl std::fmt::Display) -> Reply {
    Reply::status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("Internal error occurred: {e}"),
        None,
    )
}

fn metrics_list(c: &Cluster, r: &ResourceRequest, sel: &Selection) -> Reply {
    let meta = ListMeta::default();
    fn typed<T>(kind: &'static str, inner: T) -> crate::usage::Typed<'static, T> {
        crate::usage::Typed {
            api_version: "metrics.k8s.io/v1beta1",
            kind,
            inner,
        }
    }
    match r.def.source {
        Source::PodMetrics => match c.pod_metrics_list(sel.namespace.as_deref()) {
            Ok(items) => Reply::json(
                StatusCode::OK,
                &TypedList {
                    api_version: "metrics.k8s.io/v1beta1".to_string(),
                    kind: "PodMetricsList".to_string(),
                    metadata: meta,
                    items: items
                        .into_iter()
                        .filter(|(k, labels, _)| {
                            sel.labels.matches(labels)
                                && sel.fields.matches(&[
                                    ("metadata.name", k.name.clone()),
                                    ("metadata.namespace", k.namespace.clone()),
                                ])
                        })
                        .map(|(_, _, m)| typed(r.def.kind, m))
                        .collect(),
                },
            ),
            Err(e) => internal(e),
        },
        _ => match c.node_metrics_list() {
            Ok(items) => Reply::json(
                StatusCode::OK,
                &TypedList {
                    api_version: "metrics.k8s.io/v1beta1".to_string(),
                    kind: "NodeMetricsList".to_string(),
                    metadata: meta,
                    items: items
                        .into_iter()
                        .filter(|(k, labels, _)| {
                            sel.labels.matches(labels)
                                && sel.fields.matches(&[("metadata.name", k.name.clone())])
                        })
                        .map(|(_, _, m)| typed(r.def.kind, m))
                        .collect(),
                },
            ),
            Err(e) => internal(e),
        },
    }
}

fn key_of(r: &ResourceRequest, name: &str) -> ObjKey {
    ObjKey::new(r.namespace.as_deref().unwrap_or(""), name)
}

/// `GET` on an object or one of its subresources.
pub(crate) fn get(c: &mut Cluster, r: &ResourceRequest, q: &Query, format: Format) -> Reply {
    let Some(name) = r.name.as_deref() else {
        return Reply::no_resource();
    };
    let now_ms = c.wall_ms(c.now_ms);
    let current = c.store.rv();
    match requested_rv(q) {
        Err(reply) => return reply,
        Ok(Some(rv)) if rv > current => return Reply::too_large(rv, current),
        Ok(_) => {}
    }
    match (r.def.source, r.sub.as_deref()) {
        (Source::Store(kind, view), None | Some("status")) => {
            let Some(s) = c.store.get(kind, &key_of(r, name)) else {
                return not_found(r.def, name);
            };
            if format == Format::Table && r.sub.is_none() {
                let meta = ListMeta {
                    resource_version: Some(s.rv.to_string()),
                    ..ListMeta::default()
                };
                if let Some(t) = table::table(
                    r.def,
                    std::slice::from_ref(&s),
                    view,
                    now_ms,
                    meta,
                    q.get("includeObject"),
                ) {
                    return match t {
                        Ok(t) => Reply::json(StatusCode::OK, &t),
                        Err(e) => internal(e),
                    };
                }
            }
            Reply {
                status: StatusCode::OK,
                content_type: "application/json",
                body: Bytes::copy_from_slice(s.view(view).get().as_bytes()),
            }
        }
        (Source::Store(crate::resources::Kind::Deployment, _), Some("scale")) => {
            match scale_of(c, r, name) {
                Some(scale) => Reply::json(StatusCode::OK, &scale),
                None => not_found(r.def, name),
            }
        }
        (Source::Store(crate::resources::Kind::Node, _), Some("proxy")) => {
            let path: Vec<&str> = r.rest.iter().map(String::as_str).collect();
            if path != ["metrics", "resource"] {
                return Reply::page_not_found();
            }
            match c.kubelet_resource_metrics(name) {
                Some(text) => Reply::text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                ),
                None => not_found(r.def, name),
            }
        }
        (Source::PodMetrics | Source::NodeMetrics, None) => {
            let sel = Selection {
                namespace: r.namespace.clone(),
                labels: LabelSelector::default(),
                fields: FieldSelector(vec![crate::selector::FieldReq {
                    field: "metadata.name".to_string(),
                    equal: true,
                    value: name.to_string(),
                }]),
            };
            let reply = metrics_list(c, r, &sel);
            // Unwrap the single item from the list reply.
            let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&reply.body) else {
                return reply;
            };
            match v
                .get_mut("items")
                .and_then(|i| i.as_array_mut())
                .and_then(|i| i.pop())
            {
                Some(item) => Reply::json(StatusCode::OK, &item),
                None => not_found(r.def, name),
            }
        }
        _ => Reply::no_resource(),
    }
}

fn scale_of(c: &Cluster, r: &ResourceRequest, name: &str) -> Option<Scale> {
    let d = c.deployment(r.namespace.as_deref().unwrap_or(""), name)?;
    let selector = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    Some(Scale {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: d.metadata.name.clone(),
            namespace: d.metadata.namespace.clone(),
            uid: d.metadata.uid.clone(),
            resource_version: d.metadata.resource_version.clone(),
            creation_timestamp: d.metadata.creation_timestamp.clone(),
            ..Default::default()
        },
        spec: Some(ScaleSpec {
            replicas: d.spec.as_ref().and_then(|s| s.replicas),
        }),
        status: Some(ScaleStatus {
            replicas: d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            selector: Some(selector),
        }),
    })
}

/// `PUT` or `PATCH` on `deployments/{name}/scale`.
pub(crate) fn update_scale(
    c: &mut Cluster,
    r: &ResourceRequest,
    method: &http::Method,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    let Some(name) = r.name.as_deref() else {
        return Reply::read_only(method, r);
    };
    let Some(current) = scale_of(c, r, name) else {
        return not_found(r.def, name);
    };
    let invalid = |msg: String| {
        Reply::status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("Scale.autoscaling \"{name}\" is invalid: {msg}"),
            None,
        )
    };
    let replicas: Option<i64> = if method == http::Method::PUT {
        let scale: Scale = match serde_json::from_slice(body) {
            Ok(s) => s,
            Err(e) => return Reply::bad_request(format!("failed to decode the Scale: {e}")),
        };
        if let Some(rv) = scale.metadata.resource_version.as_deref()
            && Some(rv) != current.metadata.resource_version.as_deref()
        {
            return Reply::status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on deployments.apps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
                None,
            );
        }
        scale.spec.and_then(|s| s.replicas).map(i64::from)
    } else {
        let media = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        let doc: serde_json::Value = match media {
            "application/apply-patch+yaml" => match serde_yaml::from_slice(body) {
                Ok(v) => v,
                Err(e) => return Reply::bad_request(format!("failed to decode the patch: {e}")),
            },
            "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/json-patch+json" => match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return Reply::bad_request(format!("failed to decode the patch: {e}")),
            },
            other => {
                return Reply::status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                    ),
                    None,
                );
            }
        };
        match doc {
            serde_json::Value::Array(ops) => ops
                .iter()
                .filter(|op| {
                    op["path"] == "/spec/replicas"
                        && matches!(op["op"].as_str(), Some("replace" | "add"))
                })
                .filter_map(|op| op["value"].as_i64())
                .next_back(),
            v => v
                .pointer("/spec/replicas")
                .and_then(serde_json::Value::as_i64),
        }
    };
    let Some(replicas) = replicas else {
        return Reply::json(StatusCode::OK, &current);
    };
    let Ok(replicas) = i32::try_from(replicas)
        .map_err(drop)
        .and_then(|r| if r < 0 { Err(()) } else { Ok(r) })
    else {
        return invalid(format!(
            "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
        ));
    };
    if replicas > MAX_REPLICAS {
        return invalid(format!(
            "spec.replicas: Invalid value: {replicas}: the simulator allows at most {MAX_REPLICAS}"
        ));
    }
    let manager = if method == http::Method::PUT {
        "kubectl"
    } else {
        "kubectl-scale"
    };
    if let Err(e) = c.scale_deployment(
        r.namespace.as_deref().unwrap_or(""),
        name,
        replicas,
        manager,
    ) {
        return internal(e);
    }
    match scale_of(c, r, name) {
        Some(s) => Reply::json(StatusCode::OK, &s),
        None => not_found(r.def, name),
    }
}

/// `DELETE` on a pod.
pub(crate) fn delete(c: &mut Cluster, r: &ResourceRequest, q: &Query, body: &[u8]) -> Reply {
    let (Some(name), None) = (r.name.as_deref(), r.sub.as_deref()) else {
        return Reply::read_only(&http::Method::DELETE, r);
    };
    if r.def.source != Source::Store(crate::resources::Kind::Pod, View::Primary) {
        return Reply::read_only(&http::Method::DELETE, r);
    }
    let options: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(o) => o,
            Err(e) => return Reply::bad_request(format!("failed to decode DeleteOptions: {e}")),
        }
    };
    let key = key_of(r, name);
    let Some(stored) = c.store.get(crate::resources::Kind::Pod, &key) else {
        return not_found(r.def, name);
    };
    if let Some(pre) = &options.preconditions {
        let current: serde_json::Value =
            serde_json::from_str(stored.json.get()).unwrap_or_default();
        let uid = current.pointer("/metadata/uid").and_then(|v| v.as_str());
        if pre.uid.as_deref().is_some_and(|u| Some(u) != uid)
            || pre
                .resource_version
                .as_deref()
                .is_some_and(|v| v != stored.rv.to_string())
        {
            return Reply::status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods \"{name}\": the precondition was not met"
                ),
                None,
            );
        }
    }
    let grace = q
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse::<i64>().ok())
        .or(options.grace_period_seconds);
    match c.delete_pod(&key, grace) {
        Ok(pod) => Reply::json(StatusCode::OK, &pod),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_query_strings_are_tolerated() {
        let q = Query::parse(Some(
            "&limit=500&&labelSelector=app%3Dweb%2Ctier+in+%28a%29",
        ));
        assert_eq!(q.get("limit"), Some("500"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(Query::parse(Some("watch")).get("watch"), Some(""));
        assert_eq!(Query::parse(Some("a=%zz")).get("a"), Some("%zz"));
    }

    #[test]
    fn paths_route_to_resources() {
        let Route::Resource(r) = route("/api/v1/namespaces/default/pods/web-1", true) else {
            panic!("pod route")
        };
        assert_eq!(
            (r.def.plural, r.namespace.as_deref(), r.name.as_deref()),
            ("pods", Some("default"), Some("web-1"))
        );
        let Route::Resource(r) = route("/api/v1/namespaces/kube-system", true) else {
            panic!("namespace route")
        };
        assert_eq!(
            (r.def.plural, r.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let Route::Resource(r) = route(
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            true,
        ) else {
            panic!("scale route")
        };
        assert_eq!(r.sub.as_deref(), Some("scale"));
        let Route::Resource(r) = route("/api/v1/nodes/n1/proxy/metrics/resource", true) else {
            panic!("proxy route")
        };
        assert_eq!(r.rest, ["metrics", "resource"]);
        assert!(matches!(
            route("/apis/metrics.k8s.io/v1beta1/pods", false),
            Route::Unknown
        ));
        assert!(matches!(route("/api/v1/pods/name", true), Route::Unknown));
        assert!(matches!(
            route("/apis/apps/v1", true),
            Route::ResourceList(..)
        ));
    }

    #[test]
    fn accept_headers_choose_table_or_json() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(kubectl)), Some(Format::Table));
        assert_eq!(negotiate(Some("application/json")), Some(Format::Json));
        assert_eq!(negotiate(None), Some(Format::Json));
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*")),
            Some(Format::Json)
        );
        assert_eq!(negotiate(Some("application/vnd.kubernetes.protobuf")), None);
    }
}
