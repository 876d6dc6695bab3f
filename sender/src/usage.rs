//! CPU and memory per container: `container_cpu_usage_seconds_total` and
//! `container_memory_working_set_bytes`, labelled like cAdvisor (`namespace, pod, container,
//! image`) so the common dashboards work.
//!
//! Two sources:
//! - **metrics.k8s.io** ([`UsageTracker::from_pod_metrics`]): PodMetrics gives, per container,
//!   a CPU *rate* in cores averaged over `window` ending at `timestamp`, and the memory working
//!   set in bytes. The counter is integrated from the rate: a container seen for the first
//!   time starts at `rate × window`; each later sample with a newer `timestamp` adds
//!   `rate × (timestamp − previous timestamp)`, which is `rate × window` exactly when
//!   consecutive windows abut (the usual case) and spreads the latest rate over any gap or
//!   overlap otherwise. A sample with the same or an older timestamp adds nothing, so polling
//!   faster than metrics-server scrapes never double counts. The counter never decreases;
//!   `rate(container_cpu_usage_seconds_total[1m])` recovers the PodMetrics rate, up to one poll
//!   interval late.
//! - **the kubelet** ([`parse_resource_metrics`], [`UsageTracker::from_kubelet`]):
//!   `/api/v1/nodes/{node}/proxy/metrics/resource` exposes real cumulative counters; they are
//!   relayed as they are.
//!
//! The `image` label is the container's image from the pod spec, learnt from the pod
//! watcher ([`UsageTracker::set_images`]); it is empty for a pod the sender does not watch.

use std::collections::{HashMap, HashSet};

use k8s_metrics::v1beta1::PodMetrics;

use crate::family::Family;
use crate::quantity::parse_quantity;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};

/// (namespace, pod)
type PodRef = (String, String);

#[derive(Debug, Clone, PartialEq)]
struct CpuCounter {
    container: String,
    seconds: f64,
    /// Timestamp of the last sample, in seconds since the Unix epoch.
    at: f64,
}

/// Per-container usage state: the integrated CPU counters and the image of each container.
#[derive(Debug, Default)]
pub struct UsageTracker {
    images: HashMap<PodRef, Vec<(String, String)>>,
    counters: HashMap<PodRef, Vec<CpuCounter>>,
}

/// One container's usage from the kubelet's `/metrics/resource`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KubeletContainerUsage {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// `container_cpu_usage_seconds_total`, when present.
    pub cpu_seconds: Option<f64>,
    /// `container_memory_working_set_bytes`, when present.
    pub memory_bytes: Option<f64>,
}

impl UsageTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        UsageTracker::default()
    }

    /// Records the images of a pod's containers (from its spec).
    pub fn set_images(&mut self, namespace: &str, pod: &str, images: Vec<(String, String)>) {
        let key = (namespace.to_owned(), pod.to_owned());
        match self.images.get_mut(&key) {
            Some(known) if *known == images => {}
            Some(known) => *known = images,
            None => {
                self.images.insert(key, images);
            }
        }
    }

    /// Forgets a deleted pod: its images and counters.
    pub fn forget_pod(&mut self, namespace: &str, pod: &str) {
        let key = (namespace.to_owned(), pod.to_owned());
        self.images.remove(&key);
        self.counters.remove(&key);
    }

    /// True when the pod watcher has reported this pod.
    pub fn knows_pod(&self, namespace: &str, pod: &str) -> bool {
        self.images
            .contains_key(&(namespace.to_owned(), pod.to_owned()))
    }

    /// Forgets the counters of pods not in `listed` (a poll no longer reports them).
    pub fn retain_counters(&mut self, listed: &HashSet<PodRef>) {
        self.counters.retain(|k, _| listed.contains(k));
    }

    fn image(&self, key: &PodRef, container: &str) -> String {
        self.images
            .get(key)
            .and_then(|cs| cs.iter().find(|(c, _)| c == container))
            .map(|(_, image)| image.clone())
            .unwrap_or_default()
    }

    /// Integrates one PodMetrics sample (see the [module docs](self)) and returns the pod's
    /// usage series, or `None` for a PodMetrics without a name or timestamp-less garbage.
    /// Containers whose quantities do not parse are skipped.
    pub fn from_pod_metrics(&mut self, pm: &PodMetrics) -> Option<(ObjectKey, SeriesSet<'static>)> {
        let name = pm.metadata.name.as_deref()?;
        let namespace = pm.metadata.namespace.as_deref().unwrap_or_default();
        let key = (namespace.to_owned(), name.to_owned());
        let at = pm.timestamp.0.as_nanosecond() as f64 / 1e9;
        let window = pm.window.as_secs_f64();
        let previous = self.counters.remove(&key).unwrap_or_default();
        let mut counters = Vec::with_capacity(pm.containers.len());
        let mut set = SeriesSet::new();
        for c in &pm.containers {
            let Some(cores) = parse_quantity(&c.usage.cpu.0) else {
                continue;
            };
            let cores = cores.max(0.0);
            let counter = match previous.iter().find(|p| p.container == c.name) {
                None => CpuCounter {
                    container: c.name.clone(),
                    seconds: cores * window,
                    at,
                },
                Some(p) if at > p.at => CpuCounter {
                    container: c.name.clone(),
                    seconds: p.seconds + cores * (at - p.at),
                    at,
                },
                Some(p) => p.clone(),
            };
            let labels = [
                namespace.to_owned(),
                name.to_owned(),
                c.name.clone(),
                self.image(&key, &c.name),
            ];
            set.push(
                Family::ContainerCpuUsageSeconds,
                labels.clone(),
                counter.seconds,
            );
            if let Some(bytes) = parse_quantity(&c.usage.memory.0) {
                set.push(Family::ContainerMemoryWorkingSetBytes, labels, bytes);
            }
            counters.push(counter);
        }
        self.counters.insert(key, counters);
        Some((ObjectKey::new(ObjectKind::PodUsage, namespace, name), set))
    }

    /// Groups kubelet samples by pod and returns each pod's usage series (values relayed as
    /// they are).
    pub fn from_kubelet(
        &self,
        samples: &[KubeletContainerUsage],
    ) -> Vec<(ObjectKey, SeriesSet<'static>)> {
        let mut by_pod: HashMap<PodRef, SeriesSet<'static>> = HashMap::new();
        for s in samples {
            let key = (s.namespace.clone(), s.pod.clone());
            let labels = [
                s.namespace.clone(),
                s.pod.clone(),
                s.container.clone(),
                self.image(&key, &s.container),
            ];
            let set = by_pod.entry(key).or_default();
            if let Some(cpu) = s.cpu_seconds {
                set.push(Family::ContainerCpuUsageSeconds, labels.clone(), cpu);
            }
            if let Some(bytes) = s.memory_bytes {
                set.push(Family::ContainerMemoryWorkingSetBytes, labels, bytes);
            }
        }
        by_pod
            .into_iter()
            .map(|((ns, pod), set)| (ObjectKey::new(ObjectKind::PodUsage, ns, pod), set))
            .collect()
    }
}

/// Parses the kubelet's `/metrics/resource` Prometheus text into per-container usage.
/// Lines other than `container_cpu_usage_seconds_total` and
/// `container_memory_working_set_bytes` with `namespace`, `pod` and `container` labels are
/// ignored, as are malformed lines.
pub fn parse_resource_metrics(text: &str) -> Vec<KubeletContainerUsage> {
    let mut out: Vec<KubeletContainerUsage> = Vec::new();
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let (is_cpu, rest) =
            if let Some(rest) = line.strip_prefix("container_cpu_usage_seconds_total{") {
                (true, rest)
            } else if let Some(rest) = line.strip_prefix("container_memory_working_set_bytes{") {
                (false, rest)
            } else {
                continue;
            };
        let Some((labels, rest)) = parse_labels(rest) else {
            continue;
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let get = |name: &str| {
            labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let (Some(namespace), Some(pod), Some(container)) =
            (get("namespace"), get("pod"), get("container"))
        else {
            continue;
        };
        let i = *index
            .entry((namespace.clone(), pod.clone(), container.clone()))
            .or_insert_with(|| {
                out.push(KubeletContainerUsage {
                    namespace,
                    pod,
                    container,
                    ..KubeletContainerUsage::default()
                });
                out.len() - 1
            });
        if is_cpu {
            out[i].cpu_seconds = Some(value);
        } else {
            out[i].memory_bytes = Some(value);
        }
    }
    out
}

/// Parses `name="value",...}` and returns the pairs and the text after `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim().to_owned();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        labels.push((name, value));
        s = &s[end?..];
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_metrics::v1beta1::{Container, Usage};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn pod_metrics(at_seconds: i64, window_seconds: u64, cpu: &str, memory: &str) -> PodMetrics {
        PodMetrics {
            metadata: ObjectMeta {
                name: Some("web-1".to_owned()),
                namespace: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            containers: vec![Container {
                name: "app".to_owned(),
                usage: Usage {
                    cpu: Quantity(cpu.to_owned()),
                    memory: Quantity(memory.to_owned()),
                },
            }],
            timestamp: Time(Timestamp::from_second(at_seconds).expect("time")),
            window: Duration::from_secs(window_seconds),
        }
    }

    fn cpu_of(set: &SeriesSet<'_>) -> f64 {
        set.samples()
            .iter()
            .find(|s| s.family == Family::ContainerCpuUsageSeconds)
            .map(|s| s.value)
            .expect("cpu sample")
    }

    #[test]
    fn the_counter_starts_at_rate_times_window_and_labels_carry_the_image() {
        let mut t = UsageTracker::new();
        t.set_images(
            "default",
            "web-1",
            vec![("app".into(), "nginx:1.25".into())],
        );
        let (key, set) = t
            .from_pod_metrics(&pod_metrics(1_000, 15, "500m", "64Mi"))
            .expect("series");
        assert_eq!(
            key,
            ObjectKey::new(ObjectKind::PodUsage, "default", "web-1")
        );
        assert_eq!(
            set.render(),
            [
                r#"container_cpu_usage_seconds_total{namespace="default",pod="web-1",container="app",image="nginx:1.25"} 7.5"#,
                r#"container_memory_working_set_bytes{namespace="default",pod="web-1",container="app",image="nginx:1.25"} 67108864"#,
            ]
        );
    }

    #[test]
    fn abutting_windows_add_rate_times_window_and_gaps_spread_the_rate() {
        let mut t = UsageTracker::new();
        let mut cpu = |at, window, rate| {
            cpu_of(
                &t.from_pod_metrics(&pod_metrics(at, window, rate, "1Mi"))
                    .expect("s")
                    .1,
            )
        };
        assert_eq!(cpu(1_000, 15, "1"), 15.0);
        assert_eq!(cpu(1_015, 15, "2"), 45.0, "abutting: + 2 × 15");
        assert_eq!(cpu(1_045, 15, "1"), 75.0, "a 30 s gap: + 1 × 30");
        assert_eq!(cpu(1_050, 15, "3"), 90.0, "overlapping: + 3 × 5");
    }

    #[test]
    fn the_same_or_an_older_sample_adds_nothing() {
        let mut t = UsageTracker::new();
        let mut cpu = |at, rate| {
            cpu_of(
                &t.from_pod_metrics(&pod_metrics(at, 15, rate, "1Mi"))
                    .expect("s")
                    .1,
            )
        };
        assert_eq!(cpu(1_000, "1"), 15.0);
        assert_eq!(cpu(1_000, "1"), 15.0);
        assert_eq!(cpu(990, "4"), 15.0);
        assert_eq!(cpu(1_015, "1"), 30.0);
    }

    #[test]
    fn the_counter_never_decreases_over_many_samples() {
        let mut t = UsageTracker::new();
        let mut last = 0.0;
        for (i, rate) in ["0", "250m", "0", "1500m", "10m", "-1", "2"]
            .iter()
            .enumerate()
        {
            let at = 1_000 + 15 * i as i64;
            let v = cpu_of(
                &t.from_pod_metrics(&pod_metrics(at, 15, rate, "1Mi"))
                    .expect("s")
                    .1,
            );
            assert!(v >= last, "{v} < {last} at {i}");
            last = v;
        }
    }

    #[test]
    fn a_forgotten_pod_starts_afresh() {
        let mut t = UsageTracker::new();
        t.from_pod_metrics(&pod_metrics(1_000, 15, "1", "1Mi"));
        t.forget_pod("default", "web-1");
        let (_, set) = t
            .from_pod_metrics(&pod_metrics(1_015, 15, "1", "1Mi"))
            .expect("series");
        assert_eq!(cpu_of(&set), 15.0);
    }

    #[test]
    fn kubelet_text_is_parsed_and_relayed() {
        let text = r#"
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="default",pod="web-1"} 12.5 1700000000000
container_cpu_usage_seconds_total{container="side\"car",namespace="default",pod="web-1"} 0.25 1700000000000
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="default",pod="web-1"} 1.3e+07 1700000000000
node_cpu_usage_seconds_total 100 1700000000000
pod_cpu_usage_seconds_total{namespace="default",pod="web-1"} 12.75 1700000000000
container_cpu_usage_seconds_total{namespace="default",pod="broken"} 1
container_cpu_usage_seconds_total{container="app",namespace="default",pod="bad"} notanumber
"#;
        let usage = parse_resource_metrics(text);
        assert_eq!(
            usage,
            [
                KubeletContainerUsage {
                    namespace: "default".into(),
                    pod: "web-1".into(),
                    container: "app".into(),
                    cpu_seconds: Some(12.5),
                    memory_bytes: Some(13_000_000.0),
                },
                KubeletContainerUsage {
                    namespace: "default".into(),
                    pod: "web-1".into(),
                    container: "side\"car".into(),
                    cpu_seconds: Some(0.25),
                    memory_bytes: None,
                },
            ]
        );
        let mut t = UsageTracker::new();
        t.set_images(
            "default",
            "web-1",
            vec![("app".into(), "nginx:1.25".into())],
        );
        let pods = t.from_kubelet(&usage);
        assert_eq!(pods.len(), 1);
        assert_eq!(
            pods[0].1.render(),
            [
                r#"container_cpu_usage_seconds_total{namespace="default",pod="web-1",container="app",image="nginx:1.25"} 12.5"#,
                r#"container_cpu_usage_seconds_total{namespace="default",pod="web-1",container="side\"car",image=""} 0.25"#,
                r#"container_memory_working_set_bytes{namespace="default",pod="web-1",container="app",image="nginx:1.25"} 13000000"#,
            ]
        );
    }
}
