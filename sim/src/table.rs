//! Server-side printing: `meta.k8s.io/v1` Tables, which `kubectl get` asks for.
//!
//! Columns, their priorities and cell texts follow the API server's printers
//! (`pkg/printers/internalversion/printers.go`): pods show READY, STATUS (the waiting or
//! terminated reason, `Terminating`, ...), RESTARTS with "(45s ago)", AGE; HPAs show TARGETS
//! as `cpu: 45%/50%`; events show LAST SEEN, TYPE, REASON, OBJECT, MESSAGE. Columns with
//! priority 1 appear with `kubectl get -o wide`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Time};
use serde::Serialize;
use serde_json::{Value, json};

use crate::resources::{Kind, ResourceDef, Source, View};
use crate::store::Stored;
use crate::units::human_duration;

/// A Table.
#[derive(Debug, Serialize)]
pub(crate) struct Table {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    metadata: ListMeta,
    #[serde(rename = "columnDefinitions")]
    columns: Vec<Column>,
    rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct Column {
    name: &'static str,
    #[serde(rename = "type")]
    type_: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

#[derive(Debug, Serialize)]
struct Row {
    cells: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<Value>,
}

const fn col(name: &'static str, type_: &'static str, priority: i32) -> Column {
    Column {
        name,
        type_,
        format: if matches!(name.as_bytes(), b"Name") {
            "name"
        } else {
            ""
        },
        description: "",
        priority,
    }
}

fn age(now_ms: i64, t: Option<&Time>) -> String {
    match t {
        Some(t) => {
            let ms = now_ms - t.0.as_millisecond();
            if ms < -1000 {
                "<invalid>".to_string()
            } else {
                human_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
            }
        }
        None => "<unknown>".to_string(),
    }
}

fn or_none(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "<none>".to_string(),
    }
}

fn containers_images(spec: Option<&PodSpec>) -> (String, String) {
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    (
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        containers
            .iter()
            .map(|c| c.image.as_deref().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn selector_text(labels: Option<&std::collections::BTreeMap<String, String>>) -> String {
    match labels {
        Some(l) if !l.is_empty() => l
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".to_string(),
    }
}

fn pod_row(p: &Pod, now_ms: i64) -> Vec<Value> {
    let status = p.status.clone().unwrap_or_default();
    let statuses = status.container_statuses.clone().unwrap_or_default();
    let total = p.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
    let ready = statuses.iter().filter(|c| c.ready).count();
    let mut reason = status
        .reason
        .clone()
        .or(status.phase.clone())
        .unwrap_or_default();
    let mut restarts = 0;
    let mut last_restart: Option<Time> = None;
    let mut has_running = false;
    for c in statuses.iter().rev() {
        restarts += c.restart_count;
        if let Some(t) = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.clone())
            && last_restart.as_ref().is_none_or(|l| t.0 > l.0)
        {
            last_restart = Some(t);
        }
        let state = c.state.clone().unwrap_or_default();
        if let Some(w) = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.clone())
            .filter(|r| !r.is_empty())
        {
            reason = w;
        } else if let Some(t) = state.terminated.as_ref() {
            reason = match &t.reason {
                Some(r) if !r.is_empty() => r.clone(),
                _ if t.signal.unwrap_or(0) != 0 => format!("Signal:{}", t.signal.unwrap_or(0)),
                _ => format!("ExitCode:{}", t.exit_code),
            };
        } else if c.ready && state.running.is_some() {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        reason = "Running".to_string();
    }
    if p.metadata.deletion_timestamp.is_some() {
        reason = "Terminating".to_string();
    }
    let restarts = match (restarts, last_restart) {
        (0, _) | (_, None) => restarts.to_string(),
        (n, Some(t)) => format!("{n} ({} ago)", age(now_ms, Some(&t))),
    };
    let spec = p.spec.as_ref();
    vec![
        json!(p.metadata.name),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age(now_ms, p.metadata.creation_timestamp.as_ref())),
        json!(or_none(status.pod_ip.as_deref())),
        json!(or_none(spec.and_then(|s| s.node_name.as_deref()))),
        json!(or_none(status.nominated_node_name.as_deref())),
        json!("<none>"),
    ]
}

fn deployment_row(d: &Deployment, now_ms: i64) -> Vec<Value> {
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let (containers, images) = containers_images(spec.template.spec.as_ref());
    vec![
        json!(d.metadata.name),
        json!(format!(
            "{}/{}",
            status.ready_replicas.unwrap_or(0),
            spec.replicas.unwrap_or(1)
        )),
        json!(status.updated_replicas.unwrap_or(0)),
        json!(status.available_replicas.unwrap_or(0)),
        json!(age(now_ms, d.metadata.creation_timestamp.as_ref())),
        json!(containers),
        json!(images),
        json!(selector_text(spec.selector.match_labels.as_ref())),
    ]
}

fn replicaset_row(r: &ReplicaSet, now_ms: i64) -> Vec<Value> {
    let spec = r.spec.clone().unwrap_or_default();
    let status = r.status.clone().unwrap_or_default();
    let (containers, images) =
        containers_images(spec.template.as_ref().and_then(|t| t.spec.as_ref()));
    vec![
        json!(r.metadata.name),
        json!(spec.replicas.unwrap_or(1)),
        json!(status.replicas),
        json!(status.ready_replicas.unwrap_or(0)),
        json!(age(now_ms, r.metadata.creation_timestamp.as_ref())),
        json!(containers),
        json!(images),
        json!(selector_text(spec.selector.match_labels.as_ref())),
    ]
}

fn hpa_row(h: &HorizontalPodAutoscaler, now_ms: i64) -> Vec<Value> {
    let spec = h.spec.clone().unwrap_or_default();
    let status = h.status.clone().unwrap_or_default();
    let targets = spec
        .metrics
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.resource.as_ref())
        .map(|r| {
            let current = status
                .current_metrics
                .iter()
                .flatten()
                .filter_map(|s| s.resource.as_ref())
                .find(|s| s.name == r.name)
                .and_then(|s| s.current.average_utilization)
                .map(|u| format!("{u}%"))
                .unwrap_or_else(|| "<unknown>".to_string());
            let target = r
                .target
                .average_utilization
                .map(|u| format!("{u}%"))
                .unwrap_or_else(|| "<auto>".to_string());
            format!("{}: {current}/{target}", r.name)
        })
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        json!(h.metadata.name),
        json!(format!(
            "{}/{}",
            spec.scale_target_ref.kind, spec.scale_target_ref.name
        )),
        json!(if targets.is_empty() {
            "<none>".to_string()
        } else {
            targets
        }),
        json!(spec.min_replicas.unwrap_or(1)),
        json!(spec.max_replicas),
        json!(status.current_replicas.unwrap_or(0)),
        json!(age(now_ms, h.metadata.creation_timestamp.as_ref())),
    ]
}

fn event_row(e: &Event, now_ms: i64) -> Vec<Value> {
    let first = age(now_ms, e.first_timestamp.as_ref());
    let last = match &e.last_timestamp {
        Some(t) => age(now_ms, Some(t)),
        None => first.clone(),
    };
    let o = &e.involved_object;
    let kind = o.kind.clone().unwrap_or_default().to_lowercase();
    let target = match o.name.as_deref() {
        Some(n) if !n.is_empty() => format!("{kind}/{n}"),
        _ => kind,
    };
    let source = e
        .source
        .as_ref()
        .map(|s| match s.host.as_deref() {
            Some(h) if !h.is_empty() => format!("{}, {h}", s.component.clone().unwrap_or_default()),
            _ => s.component.clone().unwrap_or_default(),
        })
        .unwrap_or_default();
    vec![
        json!(last),
        json!(e.type_),
        json!(e.reason),
        json!(target),
        json!(o.field_path.clone().unwrap_or_default()),
        json!(source),
        json!(e.message.clone().unwrap_or_default().trim()),
        json!(first),
        json!(e.count.unwrap_or(1)),
        json!(e.metadata.name),
    ]
}

fn node_row(n: &Node, now_ms: i64) -> Vec<Value> {
    let status = n.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            if c.status == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .unwrap_or("Unknown");
    let roles: Vec<String> = n
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .keys()
        .filter_map(|k| {
            k.strip_prefix("node-role.kubernetes.io/")
                .map(str::to_string)
        })
        .collect();
    let info = status.node_info.clone().unwrap_or_default();
    let address = |t: &str| {
        status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == t)
            .map(|a| a.address.clone())
            .unwrap_or_else(|| "<none>".to_string())
    };
    vec![
        json!(n.metadata.name),
        json!(ready),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        json!(age(now_ms, n.metadata.creation_timestamp.as_ref())),
        json!(info.kubelet_version),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info.os_image),
        json!(info.kernel_version),
        json!(info.container_runtime_version),
    ]
}

fn namespace_row(n: &Namespace, now_ms: i64) -> Vec<Value> {
    vec![
        json!(n.metadata.name),
        json!(
            n.status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default()
        ),
        json!(age(now_ms, n.metadata.creation_timestamp.as_ref())),
    ]
}

fn columns(kind: Kind) -> Vec<Column> {
    match kind {
        Kind::Pod => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            col("Age", "string", 0),
            col("IP", "string", 1),
            col("Node", "string", 1),
            col("Nominated Node", "string", 1),
            col("Readiness Gates", "string", 1),
        ],
        Kind::Deployment => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            col("Age", "string", 0),
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        Kind::ReplicaSet => vec![
            col("Name", "string", 0),
            col("Desired", "integer", 0),
            col("Current", "integer", 0),
            col("Ready", "integer", 0),
            col("Age", "string", 0),
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        Kind::Hpa => vec![
            col("Name", "string", 0),
            col("Reference", "string", 0),
            col("Targets", "string", 0),
            col("MinPods", "string", 0),
            col("MaxPods", "integer", 0),
            col("Replicas", "integer", 0),
            col("Age", "string", 0),
        ],
        Kind::Event => vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Subobject", "string", 1),
            col("Source", "string", 1),
            col("Message", "string", 0),
            col("First Seen", "string", 1),
            col("Count", "integer", 1),
            col("Name", "string", 1),
        ],
        Kind::Node => vec![
            col("Name", "string", 0),
            col("Status", "string", 0),
            col("Roles", "string", 0),
            col("Age", "string", 0),
            col("Version", "string", 0),
            col("Internal-IP", "string", 1),
            col("External-IP", "string", 1),
            col("OS-Image", "string", 1),
            col("Kernel-Version", "string", 1),
            col("Container-Runtime", "string", 1),
        ],
        Kind::Namespace => vec![
            col("Name", "string", 0),
            col("Status", "string", 0),
            col("Age", "string", 0),
        ],
    }
}

fn cells(
    kind: Kind,
    json: &str,
    now_ms: i64,
) -> Result<(Vec<Value>, ObjectMeta), serde_json::Error> {
    Ok(match kind {
        Kind::Pod => {
            let o: Pod = serde_json::from_str(json)?;
            (pod_row(&o, now_ms), o.metadata)
        }
        Kind::Deployment => {
            let o: Deployment = serde_json::from_str(json)?;
            (deployment_row(&o, now_ms), o.metadata)
        }
        Kind::ReplicaSet => {
            let o: ReplicaSet = serde_json::from_str(json)?;
            (replicaset_row(&o, now_ms), o.metadata)
        }
        Kind::Hpa => {
            let o: HorizontalPodAutoscaler = serde_json::from_str(json)?;
            (hpa_row(&o, now_ms), o.metadata)
        }
        Kind::Event => {
            let o: Event = serde_json::from_str(json)?;
            (event_row(&o, now_ms), o.metadata)
        }
        Kind::Node => {
            let o: Node = serde_json::from_str(json)?;
            (node_row(&o, now_ms), o.metadata)
        }
        Kind::Namespace => {
            let o: Namespace = serde_json::from_str(json)?;
            (namespace_row(&o, now_ms), o.metadata)
        }
    })
}

/// The Table for some stored objects, or `None` when the resource has no printer.
/// `include_object` is the `includeObject` parameter: `None`, `Object` or (default)
/// `Metadata`.
pub(crate) fn table(
    def: &ResourceDef,
    items: &[Arc<Stored>],
    view: View,
    now_ms: i64,
    metadata: ListMeta,
    include_object: Option<&str>,
) -> Option<Result<Table, serde_json::Error>> {
    let Source::Store(kind, _) = def.source else {
        return None;
    };
    let rows = items
        .iter()
        .map(|s| {
            // Rows are computed from the core rendering; the object is the requested view.
            let (cells, meta) = cells(kind, s.json.get(), now_ms)?;
            let object = match include_object {
                Some("None") => None,
                Some("Object") => Some(serde_json::from_str(s.view(view).get())?),
                _ => Some(json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": serde_json::to_value(&meta)?,
                })),
            };
            Ok(Row { cells, object })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>();
    Some(rows.map(|rows| Table {
        api_version: "meta.k8s.io/v1",
        kind: "Table",
        metadata,
        columns: columns(kind),
        rows,
    }))
}
