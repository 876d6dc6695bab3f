//! Resource usage: the kubelet's CPU accounting, metrics-server's scrapes, and what both
//! serve (`metrics.k8s.io/v1beta1` PodMetrics/NodeMetrics and the kubelet's
//! `/metrics/resource` Prometheus text).
//!
//! Once a second every running container's CPU rate comes from the load model and is added
//! to its cumulative CPU seconds (like cAdvisor's `cpu.usage`). Every metrics resolution
//! metrics-server turns two consecutive cumulative samples of the same container into a rate
//! over the window between them, so a freshly (re)started container has no metrics until its
//! second scrape — as on a real cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use k8s_metrics::v1beta1::{Container, NodeMetrics, PodMetrics, Usage};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::error::Result;
use crate::objects;
use crate::state::{Cluster, PodSample};
use crate::store::ObjKey;

/// CPU the node's system processes use (millicores).
const SYSTEM_CPU_MILLIS: f64 = 120.0;
/// Memory the node's system processes use.
const SYSTEM_MEMORY_BYTES: u64 = 900 << 20;

/// A metrics object with its key and its pod's or node's labels (for selectors).
pub(crate) type Labeled<T> = (ObjKey, BTreeMap<String, String>, T);

/// A typed object with its `apiVersion`/`kind`, for types that do not add them themselves.
#[derive(Serialize)]
pub(crate) struct Typed<'a, T> {
    #[serde(rename = "apiVersion")]
    pub api_version: &'a str,
    pub kind: &'a str,
    #[serde(flatten)]
    pub inner: T,
}

/// `nanocores` as metrics-server writes them (`123456789n`).
fn nanocores(n: u64) -> Quantity {
    Quantity(if n == 0 {
        "0".to_string()
    } else {
        format!("{n}n")
    })
}

/// Memory as metrics-server writes it (`12345Ki`).
fn kibibytes(bytes: u64) -> Quantity {
    Quantity(format!("{}Ki", bytes / 1024))
}

impl Cluster {
    /// Adds one second of CPU to every running container.
    pub(crate) fn integrate_usage(&mut self) {
        let now = self.now_ms;
        let mut serving: BTreeMap<ObjKey, usize> = BTreeMap::new();
        for p in self.pods.values() {
            if p.serving() {
                *serving.entry(p.deployment.clone()).or_default() += 1;
            }
        }
        for n in self.live_nodes_mut() {
            n.system_cpu_seconds += SYSTEM_CPU_MILLIS / 1000.0;
        }
        for (key, d) in self.deployments.iter_mut() {
            if d.load.clients_from.is_empty() {
                continue;
            }
            let clients = d
                .load
                .clients_from
                .iter()
                .map(|(name, weight)| {
                    let from = ObjKey::new(&key.namespace, name);
                    weight * serving.get(&from).copied().unwrap_or(0) as f64
                })
                .sum();
            d.load.set_derived_clients(clients);
        }
        for p in self.pods.values_mut() {
            if p.container_started_ms().is_none() {
                p.cpu_rate_millis = 0.0;
                continue;
            }
            let Some(d) = self.deployments.get(&p.deployment) else {
                continue;
            };
            let ready = serving.get(&p.deployment).copied().unwrap_or(0);
            let rate =
                d.load
                    .cpu_millis(now, p.serving(), ready, p.cpu_limit_millis, &mut self.rng);
            p.cpu_rate_millis = rate;
            p.cpu_seconds += rate / 1000.0;
            p.memory_bytes = d.load.memory_bytes(now, p.serving(), ready);
        }
    }

    /// metrics-server's scrape: a rate per container from consecutive samples.
    pub(crate) fn scrape_metrics(&mut self) {
        let now = self.now_ms;
        for (key, p) in self.pods.iter_mut() {
            let Some(start) = p.container_started_ms() else {
                p.last_scrape = None;
                self.pod_metrics.remove(key);
                continue;
            };
            match p.last_scrape {
                Some((t0, c0, s0)) if s0 == start && now > t0 => {
                    let window_ms = now - t0;
                    let cores = (p.cpu_seconds - c0).max(0.0) / (window_ms as f64 / 1000.0);
                    self.pod_metrics.insert(
                        key.clone(),
                        PodSample {
                            container: p.container_name(),
                            timestamp_ms: now,
                            window_ms,
                            cpu_nanocores: (cores * 1e9).round() as u64,
                            memory_bytes: p.memory_bytes,
                        },
                    );
                }
                _ => {
                    self.pod_metrics.remove(key);
                }
            }
            p.last_scrape = Some((now, p.cpu_seconds, start));
        }
    }

    fn pod_metrics_object(&self, key: &ObjKey, s: &PodSample) -> Result<PodMetrics> {
        let labels = self
            .pods
            .get(key)
            .and_then(|p| p.pod.metadata.labels.clone());
        Ok(PodMetrics {
            metadata: ObjectMeta {
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                creation_timestamp: Some(self.now()?),
                labels,
                ..ObjectMeta::default()
            },
            containers: vec![Container {
                name: s.container.clone(),
                usage: Usage {
                    cpu: nanocores(s.cpu_nanocores),
                    memory: kibibytes(s.memory_bytes),
                },
            }],
            timestamp: objects::time(self.wall_ms(s.timestamp_ms))?,
            window: Duration::from_millis(s.window_ms),
        })
    }

    /// PodMetrics of pods (in a namespace, or all) that have a sample, in key order.
    pub(crate) fn pod_metrics_list(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<Labeled<PodMetrics>>> {
        self.pod_metrics
            .iter()
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(k, s)| {
                let labels = self
                    .pods
                    .get(k)
                    .and_then(|p| p.pod.metadata.labels.clone())
                    .unwrap_or_default();
                Ok((k.clone(), labels, self.pod_metrics_object(k, s)?))
            })
            .collect()
    }

    /// NodeMetrics of every node: its pods' usage plus the system's.
    pub(crate) fn node_metrics_list(&self) -> Result<Vec<Labeled<NodeMetrics>>> {
        let window = self.cfg.resolution_ms;
        let ts = objects::time(self.wall_ms(self.now_ms - self.now_ms % window))?;
        let mut out = Vec::new();
        for n in self.live_nodes() {
            let mut nanos = (SYSTEM_CPU_MILLIS * 1e6) as u64;
            let mut memory = SYSTEM_MEMORY_BYTES;
            for (k, s) in &self.pod_metrics {
                if self.pods.get(k).and_then(|p| p.node) == Some(n.index) {
                    nanos += s.cpu_nanocores;
                    memory += s.memory_bytes;
                }
            }
            let labels = n.node.metadata.labels.clone().unwrap_or_default();
            out.push((
                ObjKey::cluster(&n.name),
                labels.clone(),
                NodeMetrics {
                    metadata: ObjectMeta {
                        name: Some(n.name.clone()),
                        creation_timestamp: Some(self.now()?),
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    },
                    timestamp: ts.clone(),
                    window: Duration::from_millis(window),
                    usage: Usage {
                        cpu: nanocores(nanos),
                        memory: kibibytes(memory),
                    },
                },
            ));
        }
        Ok(out)
    }

    /// The kubelet's `/metrics/resource` for one node, or `None` for an unknown node.
    pub(crate) fn kubelet_resource_metrics(&self, node: &str) -> Option<String> {
        let n = self.live_nodes().find(|n| n.name == node)?;
        let ts = self.wall_ms(self.now_ms);
        let pods: Vec<_> = self
            .pods
            .iter()
            .filter(|(_, p)| p.node == Some(n.index) && p.container_started_ms().is_some())
            .collect();
        let mut out = String::new();
        let family = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the container in core-seconds",
            "counter",
        );
        for (k, p) in &pods {
            let _ = writeln!(
                out,
                "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {ts}",
                p.container_name(),
                k.namespace,
                k.name,
                p.cpu_seconds
            );
        }
        family(
            &mut out,
            "container_memory_working_set_bytes",
            "Current working set of the container in bytes",
            "gauge",
        );
        for (k, p) in &pods {
            let _ = writeln!(
                out,
                "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {ts}",
                p.container_name(),
                k.namespace,
                k.name,
                p.memory_bytes
            );
        }
        family(
            &mut out,
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds",
            "gauge",
        );
        for (k, p) in &pods {
            let start = p.container_started_ms().unwrap_or(0);
            let _ = writeln!(
                out,
                "container_start_time_seconds{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {ts}",
                p.container_name(),
                k.namespace,
                k.name,
                self.wall_ms(start) as f64 / 1000.0
            );
        }
        let node_cpu: f64 =
            n.system_cpu_seconds + pods.iter().map(|(_, p)| p.cpu_seconds).sum::<f64>();
        let node_mem: u64 =
            SYSTEM_MEMORY_BYTES + pods.iter().map(|(_, p)| p.memory_bytes).sum::<u64>();
        family(
            &mut out,
            "node_cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the node in core-seconds",
            "counter",
        );
        let _ = writeln!(out, "node_cpu_usage_seconds_total {node_cpu} {ts}");
        family(
            &mut out,
            "node_memory_working_set_bytes",
            "Current working set of the node in bytes",
            "gauge",
        );
        let _ = writeln!(out, "node_memory_working_set_bytes {node_mem} {ts}");
        family(
            &mut out,
            "pod_cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the pod in core-seconds",
            "counter",
        );
        for (k, p) in &pods {
            let _ = writeln!(
                out,
                "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {} {ts}",
                k.namespace, k.name, p.cpu_seconds
            );
        }
        family(
            &mut out,
            "pod_memory_working_set_bytes",
            "Current working set of the pod in bytes",
            "gauge",
        );
        for (k, p) in &pods {
            let _ = writeln!(
                out,
                "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {} {ts}",
                k.namespace, k.name, p.memory_bytes
            );
        }
        family(
            &mut out,
            "resource_scrape_error",
            "1 if there was an error while getting container metrics, 0 otherwise",
            "gauge",
        );
        let _ = writeln!(out, "resource_scrape_error 0");
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::Scenario;
    use crate::state::Cluster;

    #[test]
    fn a_deleted_node_accrues_no_system_cpu() {
        let scenario =
            Scenario::from_yaml("seed: 1\nnodes: {count: 2, pods: 10}\n").expect("scenario");
        let mut cluster = Cluster::new(&scenario, 0).expect("cluster");
        let gone = cluster.nodes[1].name.clone();
        cluster.delete_node(&gone).expect("delete");
        let before: Vec<f64> = cluster.nodes.iter().map(|n| n.system_cpu_seconds).collect();
        cluster.integrate_usage();
        assert!(cluster.nodes[0].system_cpu_seconds > before[0], "live");
        assert_eq!(cluster.nodes[1].system_cpu_seconds, before[1], "deleted");
    }
}
