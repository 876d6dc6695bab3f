//! Kubernetes objects as the simulator writes them: the store's view of each kind
//! (selectable fields, the events.k8s.io rendering of events) and builders that fill the
//! fields a real control plane fills (uids, managedFields, node info, pod specs).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, DaemonEndpoint, Event, Namespace, NamespaceSpec, NamespaceStatus,
    Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
    Pod, PodSpec, PodTemplateSpec, ResourceRequirements, Toleration,
};
use k8s_openapi::api::events::v1 as events_v1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, ObjectMeta, Time,
};
use k8s_openapi::jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::error::{Error, Result};
use crate::resources::Kind;
use crate::scenario::{NodesSpec, PodFault, ResourcesSpec};
use crate::store::StoreObject;
use crate::units::{format_cpu_millis, format_memory_bytes};

/// A wall-clock instant in milliseconds since the Unix epoch as a `Time`.
pub(crate) fn time(wall_ms: i64) -> Result<Time> {
    Timestamp::from_millisecond(wall_ms)
        .map(Time)
        .map_err(|e| Error::Time(e.to_string()))
}

/// A version-4 UUID, as the API server assigns to every object: seeded, mixed with `salt`.
///
/// Pod names, crashes and timings follow the scenario's seed; uids must not. A real uid is
/// never issued twice, and clients rely on it (the sender counts each scaling Event by its
/// uid): a simulator restarted with the same scenario replays the same seeded choices, so
/// each run mixes in its own random salt.
pub(crate) fn uid(rng: &mut StdRng, salt: u128) -> String {
    let seeded: u128 = rng.random();
    let mut b = (seeded ^ salt).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// `n` random lower-case hex digits.
pub(crate) fn hex(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// The alphabet of generated name suffixes (no vowels, no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random name suffix like the ReplicaSet controller's (`-x7k2p`).
pub(crate) fn name_suffix(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(SAFE_ALPHABET[rng.random_range(0..SAFE_ALPHABET.len())]))
        .collect()
}

/// The deployment controller's `pod-template-hash`: an FNV-1a hash of the template,
/// rendered with `rand.SafeEncodeString` of its decimal form.
pub(crate) fn pod_template_hash(template: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in template.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|d| char::from(SAFE_ALPHABET[usize::from(d) % SAFE_ALPHABET.len()]))
        .collect()
}

/// A `managedFields` entry, as server-side field tracking records every writer.
pub(crate) fn managed(
    manager: &str,
    api_version: &str,
    time: &Time,
    subresource: Option<&str>,
    fields: serde_json::Value,
) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: Some(manager.to_string()),
        operation: Some("Update".to_string()),
        api_version: Some(api_version.to_string()),
        time: Some(time.clone()),
        fields_type: Some("FieldsV1".to_string()),
        fields_v1: Some(FieldsV1(fields)),
        subresource: subresource.map(str::to_string),
    }
}

/// Replaces (or adds) the entry of one manager/subresource, updating its time.
pub(crate) fn touch_managed(meta: &mut ObjectMeta, entry: ManagedFieldsEntry) {
    let fields = meta.managed_fields.get_or_insert_with(Vec::new);
    match fields
        .iter_mut()
        .find(|e| e.manager == entry.manager && e.subresource == entry.subresource)
    {
        Some(existing) => *existing = entry,
        None => fields.push(entry),
    }
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

impl StoreObject for Namespace {
    const KIND: Kind = Kind::Namespace;
    const NAME: &'static str = "namespace";
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("metadata.name", name_of(&self.metadata)),
            (
                "status.phase",
                self.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default(),
            ),
        ]
    }
}

impl StoreObject for Node {
    const KIND: Kind = Kind::Node;
    const NAME: &'static str = "node";
    fn fields(&self) -> Vec<(&'static str, String)> {
        let unschedulable = self
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        vec![
            ("metadata.name", name_of(&self.metadata)),
            ("spec.unschedulable", unschedulable.to_string()),
        ]
    }
}

impl StoreObject for Pod {
    const KIND: Kind = Kind::Pod;
    const NAME: &'static str = "pod";
    fn fields(&self) -> Vec<(&'static str, String)> {
        let spec = self.spec.as_ref();
        let status = self.status.as_ref();
        let s = |v: Option<&String>| v.cloned().unwrap_or_default();
        vec![
            ("metadata.name", name_of(&self.metadata)),
            ("metadata.namespace", namespace_of(&self.metadata)),
            ("spec.nodeName", s(spec.and_then(|p| p.node_name.as_ref()))),
            (
                "spec.restartPolicy",
                s(spec.and_then(|p| p.restart_policy.as_ref())),
            ),
            (
                "spec.schedulerName",
                s(spec.and_then(|p| p.scheduler_name.as_ref())),
            ),
            (
                "spec.serviceAccountName",
                s(spec.and_then(|p| p.service_account_name.as_ref())),
            ),
            (
                "spec.hostNetwork",
                spec.and_then(|p| p.host_network)
                    .unwrap_or(false)
                    .to_string(),
            ),
            ("status.phase", s(status.and_then(|p| p.phase.as_ref()))),
            ("status.podIP", s(status.and_then(|p| p.pod_ip.as_ref()))),
            (
                "status.nominatedNodeName",
                s(status.and_then(|p| p.nominated_node_name.as_ref())),
            ),
        ]
    }
}

impl StoreObject for Deployment {
    const KIND: Kind = Kind::Deployment;
    const NAME: &'static str = "deployment";
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("metadata.name", name_of(&self.metadata)),
            ("metadata.namespace", namespace_of(&self.metadata)),
        ]
    }
}

impl StoreObject for ReplicaSet {
    const KIND: Kind = Kind::ReplicaSet;
    const NAME: &'static str = "replicaset";
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("metadata.name", name_of(&self.metadata)),
            ("metadata.namespace", namespace_of(&self.metadata)),
            (
                "status.replicas",
                self.status
                    .as_ref()
                    .map(|s| s.replicas)
                    .unwrap_or(0)
                    .to_string(),
            ),
        ]
    }
}

impl StoreObject for HorizontalPodAutoscaler {
    const KIND: Kind = Kind::Hpa;
    const NAME: &'static str = "horizontalpodautoscaler";
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("metadata.name", name_of(&self.metadata)),
            ("metadata.namespace", namespace_of(&self.metadata)),
        ]
    }
}

impl StoreObject for Event {
    const KIND: Kind = Kind::Event;
    const NAME: &'static str = "event";
    fn fields(&self) -> Vec<(&'static str, String)> {
        let o = &self.involved_object;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        vec![
            ("metadata.name", name_of(&self.metadata)),
            ("metadata.namespace", namespace_of(&self.metadata)),
            ("involvedObject.kind", s(&o.kind)),
            ("involvedObject.namespace", s(&o.namespace)),
            ("involvedObject.name", s(&o.name)),
            ("involvedObject.uid", s(&o.uid)),
            ("involvedObject.apiVersion", s(&o.api_version)),
            ("involvedObject.resourceVersion", s(&o.resource_version)),
            ("involvedObject.fieldPath", s(&o.field_path)),
            ("reason", s(&self.reason)),
            ("reportingComponent", s(&self.reporting_component)),
            (
                "source",
                self.source
                    .as_ref()
                    .and_then(|x| x.component.clone())
                    .unwrap_or_default(),
            ),
            ("type", s(&self.type_)),
        ]
    }

    fn alt_view(
        &self,
    ) -> Option<std::result::Result<Box<serde_json::value::RawValue>, serde_json::Error>> {
        Some(serde_json::value::to_raw_value(&events_v1_view(self)))
    }
}

/// The events.k8s.io/v1 rendering of a core/v1 event (the API server's conversion).
pub(crate) fn events_v1_view(e: &Event) -> events_v1::Event {
    events_v1::Event {
        metadata: e.metadata.clone(),
        action: e.action.clone(),
        deprecated_count: e.count,
        deprecated_first_timestamp: e.first_timestamp.clone(),
        deprecated_last_timestamp: e.last_timestamp.clone(),
        deprecated_source: e.source.clone(),
        event_time: e.event_time.clone(),
        note: e.message.clone(),
        reason: e.reason.clone(),
        regarding: Some(e.involved_object.clone()),
        related: e.related.clone(),
        reporting_controller: e.reporting_component.clone(),
        reporting_instance: e.reporting_instance.clone(),
        series: None,
        type_: e.type_.clone(),
    }
}

/// A namespace, Active, with the `kubernetes.io/metadata.name` label.
pub(crate) fn namespace(name: &str, uid: String, created: &Time) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            uid: Some(uid),
            creation_timestamp: Some(created.clone()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                name.to_string(),
            )])),
            managed_fields: Some(vec![managed(
                "kube-apiserver",
                "v1",
                created,
                None,
                json!({"f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/metadata.name": {}}}}),
            )]),
            ..ObjectMeta::default()
        },
        spec: Some(NamespaceSpec {
            finalizers: Some(vec!["kubernetes".to_string()]),
        }),
        status: Some(NamespaceStatus {
            phase: Some("Active".to_string()),
            conditions: None,
        }),
    }
}

/// The simulated nodes' facts, shared by the Node objects and the kubelet endpoint.
pub(crate) const KUBELET_VERSION: &str = "v1.35.0";

/// A Ready worker node with realistic `nodeInfo`, capacity and addresses.
pub(crate) fn node(
    name: &str,
    index: usize,
    spec: &NodesSpec,
    created: &Time,
    rng: &mut StdRng,
    salt: u128,
) -> Node {
    let capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(format_cpu_millis(spec.cpu.0))),
        (
            "ephemeral-storage".to_string(),
            Quantity("102626232Ki".to_string()),
        ),
        ("hugepages-2Mi".to_string(), Quantity("0".to_string())),
        (
            "memory".to_string(),
            Quantity(format_memory_bytes(spec.memory.0)),
        ),
        ("pods".to_string(), Quantity(spec.pods.to_string())),
    ]);
    let mut allocatable = capacity.clone();
    let (cpu, memory) = spec.allocatable();
    allocatable.insert("cpu".to_string(), Quantity(format_cpu_millis(cpu)));
    allocatable.insert("memory".to_string(), Quantity(format_memory_bytes(memory)));
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(created.clone()),
        last_transition_time: Some(created.clone()),
    };
    let labels = BTreeMap::from([
        ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
    ]);
    let node_uid = uid(rng, salt);
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            uid: Some(node_uid.clone()),
            creation_timestamp: Some(created.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                ("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string()),
                (
                    "volumes.kubernetes.io/controller-managed-attach-detach".to_string(),
                    "true".to_string(),
                ),
            ])),
            managed_fields: Some(vec![
                managed(
                    "kubelet",
                    "v1",
                    created,
                    None,
                    json!({"f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/hostname": {}}}}),
                ),
                managed(
                    "kubelet",
                    "v1",
                    created,
                    Some("status"),
                    json!({"f:status": {"f:conditions": {}, "f:nodeInfo": {}}}),
                ),
            ]),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(format!("10.244.{index}.0/24")),
            pod_cidrs: Some(vec![format!("10.244.{index}.0/24")]),
            provider_id: Some(format!("kube-sim://{name}")),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".to_string(),
                    address: node_ip(index),
                },
                NodeAddress {
                    type_: "Hostname".to_string(),
                    address: name.to_string(),
                },
            ]),
            allocatable: Some(allocatable),
            capacity: Some(capacity),
            conditions: Some(vec![
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                condition(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "kubelet is posting ready status",
                ),
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".to_string(),
                boot_id: uid(rng, salt),
                container_runtime_version: "containerd://2.1.4".to_string(),
                kernel_version: "6.12.48+deb13-amd64".to_string(),
                kube_proxy_version: String::new(),
                kubelet_version: KUBELET_VERSION.to_string(),
                machine_id: hex(rng, 32),
                operating_system: "linux".to_string(),
                os_image: "Debian GNU/Linux 13 (trixie)".to_string(),
                swap: None,
                system_uuid: node_uid,
            }),
            ..NodeStatus::default()
        }),
    }
}

/// A node's InternalIP (as kind assigns them).
pub(crate) fn node_ip(index: usize) -> String {
    format!("172.18.0.{}", 2 + index % 250)
}

/// A deployment's pod template, as the scenario defines it.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub container: String,
    pub image: String,
    pub port: Option<u16>,
    /// Selector labels (the template adds nothing else but `pod-template-hash`).
    pub labels: BTreeMap<String, String>,
    pub requests: ResourcesSpec,
    pub limits: ResourcesSpec,
    /// `priorityClassName` and the class's priority.
    pub priority: Option<(String, i32)>,
    /// What goes wrong with the pods (not part of the spec: how the simulated image behaves).
    pub fault: Option<PodFault>,
}

fn quantities(r: &ResourcesSpec) -> Option<BTreeMap<String, Quantity>> {
    let mut m = BTreeMap::new();
    if let Some(cpu) = r.cpu {
        m.insert("cpu".to_string(), Quantity(format_cpu_millis(cpu.0)));
    }
    if let Some(mem) = r.memory {
        m.insert("memory".to_string(), Quantity(format_memory_bytes(mem.0)));
    }
    (!m.is_empty()).then_some(m)
}

impl Template {
    /// The pod spec every replica gets (before scheduling).
    pub(crate) fn pod_spec(&self) -> PodSpec {
        let pull = if self.image.contains(':') && !self.image.ends_with(":latest") {
            "IfNotPresent"
        } else {
            "Always"
        };
        PodSpec {
            containers: vec![Container {
                name: self.container.clone(),
                image: Some(self.image.clone()),
                image_pull_policy: Some(pull.to_string()),
                ports: self.port.map(|p| {
                    vec![ContainerPort {
                        container_port: i32::from(p),
                        protocol: Some("TCP".to_string()),
                        ..ContainerPort::default()
                    }]
                }),
                resources: Some(ResourceRequirements {
                    requests: quantities(&self.requests),
                    limits: quantities(&self.limits),
                    claims: None,
                }),
                termination_message_path: Some("/dev/termination-log".to_string()),
                termination_message_policy: Some("File".to_string()),
                ..Container::default()
            }],
            dns_policy: Some("ClusterFirst".to_string()),
            enable_service_links: Some(true),
            preemption_policy: Some("PreemptLowerPriority".to_string()),
            priority: Some(self.priority.as_ref().map_or(0, |(_, p)| *p)),
            priority_class_name: self.priority.as_ref().map(|(c, _)| c.clone()),
            restart_policy: Some("Always".to_string()),
            scheduler_name: Some("default-scheduler".to_string()),
            security_context: Some(Default::default()),
            service_account: Some("default".to_string()),
            service_account_name: Some("default".to_string()),
            termination_grace_period_seconds: Some(30),
            tolerations: Some(
                [
                    "node.kubernetes.io/not-ready",
                    "node.kubernetes.io/unreachable",
                ]
                .iter()
                .map(|key| Toleration {
                    key: Some(key.to_string()),
                    operator: Some("Exists".to_string()),
                    effect: Some("NoExecute".to_string()),
                    toleration_seconds: Some(300),
                    value: None,
                })
                .collect(),
            ),
            ..PodSpec::default()
        }
    }

    /// The Deployment's `spec.template` (labels without the hash).
    pub(crate) fn pod_template(&self, extra_labels: Option<(&str, &str)>) -> PodTemplateSpec {
        let mut labels = self.labels.clone();
        if let Some((k, v)) = extra_labels {
            labels.insert(k.to_string(), v.to_string());
        }
        let mut spec = self.pod_spec();
        spec.service_account = None;
        spec.tolerations = None;
        spec.enable_service_links = None;
        spec.preemption_policy = None;
        spec.priority = None;
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..ObjectMeta::default()
            }),
            spec: Some(spec),
        }
    }

    /// The pod's QoS class from its requests and limits.
    pub(crate) fn qos_class(&self) -> &'static str {
        let none =
            self.requests == ResourcesSpec::default() && self.limits == ResourcesSpec::default();
        let guaranteed = self.limits.cpu.is_some()
            && self.limits.memory.is_some()
            && self.requests.cpu.is_none_or(|r| Some(r) == self.limits.cpu)
            && self
                .requests
                .memory
                .is_none_or(|r| Some(r) == self.limits.memory);
        if none {
            "BestEffort"
        } else if guaranteed {
            "Guaranteed"
        } else {
            "Burstable"
        }
    }

    /// Requested CPU in millicores (0 when none).
    pub(crate) fn cpu_request_millis(&self) -> u64 {
        self.requests.cpu.map(|c| c.0).unwrap_or(0)
    }

    /// Requested memory in bytes (0 when none).
    pub(crate) fn memory_request_bytes(&self) -> u64 {
        self.requests.memory.map(|m| m.0).unwrap_or(0)
    }

    /// The `pod-template-hash` of this template in deployment `namespace/name`: it changes
    /// with the image (and the simulated behaviour), so a rollout gets a new ReplicaSet and
    /// a rollback finds its old one again.
    pub(crate) fn hash(&self, namespace: &str, name: &str) -> String {
        let behaviour = match self.fault {
            None => String::new(),
            Some(f) => format!("/{f:?}"),
        };
        pod_template_hash(&format!("{namespace}/{name}/{}{behaviour}", self.image))
    }
}

/// Wall-clock milliseconds of a simulation time, given the wall clock at time zero.
pub(crate) fn wall_ms(epoch_ms: i64, sim_ms: u64) -> i64 {
    epoch_ms + i64::try_from(sim_ms).unwrap_or(i64::MAX / 2)
}

/// A deterministic `sha256:`-looking digest for an image.
pub(crate) fn image_digest(image: &str) -> String {
    let seed = image.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let repo = image.split(':').next().unwrap_or(image);
    format!("{repo}@sha256:{}", hex(&mut rng, 64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn uids_look_like_uuid_v4_and_differ_between_runs() {
        let mut a = StdRng::seed_from_u64(1);
        let mut b = StdRng::seed_from_u64(1);
        let u = uid(&mut a, 7);
        assert_eq!(u.len(), 36);
        assert_eq!((&u[14..15], &u[8..9], &u[13..14]), ("4", "-", "-"));
        assert!(
            matches!(&u[19..20], "8" | "9" | "a" | "b"),
            "RFC 4122 variant: {u}"
        );
        assert_ne!(u, uid(&mut b, 8), "another run, another salt");
    }

    #[test]
    fn template_hashes_are_stable_and_safe() {
        let h = pod_template_hash("default/php-apache");
        assert_eq!(h, pod_template_hash("default/php-apache"));
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_ne!(h, pod_template_hash("default/other"));
    }

    #[test]
    fn events_render_in_both_groups() {
        let e = Event {
            metadata: ObjectMeta {
                name: Some("php-apache.1".to_string()),
                namespace: Some("default".to_string()),
                ..ObjectMeta::default()
            },
            reason: Some("SuccessfulRescale".to_string()),
            message: Some("New size: 4".to_string()),
            count: Some(2),
            ..Event::default()
        };
        let v1 = serde_json::to_value(events_v1_view(&e)).expect("encodes");
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["note"], "New size: 4");
        assert_eq!(v1["deprecatedCount"], 2);
        let fields = e.fields();
        assert!(fields.contains(&("reason", "SuccessfulRescale".to_string())));
    }

    #[test]
    fn qos_classes_follow_requests_and_limits() {
        use crate::units::{Cpu, Mem};
        let mut t = Template {
            container: "c".into(),
            image: "i".into(),
            port: None,
            labels: BTreeMap::new(),
            requests: ResourcesSpec::default(),
            limits: ResourcesSpec::default(),
            priority: None,
            fault: None,
        };
        assert_eq!(t.qos_class(), "BestEffort");
        t.requests.cpu = Some(Cpu(100));
        assert_eq!(t.qos_class(), "Burstable");
        t.limits = ResourcesSpec {
            cpu: Some(Cpu(100)),
            memory: Some(Mem(1 << 20)),
        };
        assert_eq!(t.qos_class(), "Guaranteed");
    }
}
