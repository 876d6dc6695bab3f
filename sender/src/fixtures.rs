//! Builder fixtures for Kubernetes objects in unit tests: `pod("web").phase("Running")`.
//!
//! Each builder starts from a minimal valid object in namespace `default` with uid
//! `uid-<name>` and sets only what a test names.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerSpec, HorizontalPodAutoscalerStatus, MetricIdentifier, MetricSpec,
    MetricStatus, MetricTarget, MetricValueStatus, PodsMetricSource, PodsMetricStatus,
    ResourceMetricSource, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Event, EventSeries, Namespace, NamespaceStatus, Node,
    NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, ObjectReference, Pod,
    PodCondition, PodSpec, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: namespace.map(str::to_owned),
        name: Some(name.to_owned()),
        uid: Some(format!("uid-{name}")),
        ..ObjectMeta::default()
    }
}

fn time(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).expect("valid time"))
}

fn quantities(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect(),
    )
}

/// A Pod under construction.
#[derive(Debug, Clone)]
pub struct PodFixture(pub Pod);

/// A pod named `name` in `default`, with an empty spec and status.
pub fn pod(name: &str) -> PodFixture {
    PodFixture(Pod {
        metadata: meta(Some("default"), name),
        spec: Some(PodSpec::default()),
        status: Some(PodStatus::default()),
    })
}

impl PodFixture {
    fn status(&mut self) -> &mut PodStatus {
        self.0.status.get_or_insert_with(PodStatus::default)
    }

    fn spec(&mut self) -> &mut PodSpec {
        self.0.spec.get_or_insert_with(PodSpec::default)
    }

    /// Sets `status.phase`.
    pub fn phase(mut self, phase: &str) -> Self {
        self.status().phase = Some(phase.to_owned());
        self
    }

    /// Schedules the pod: node name, host IP and pod IP.
    pub fn scheduled(mut self, node: &str, host_ip: &str, pod_ip: &str) -> Self {
        self.spec().node_name = Some(node.to_owned());
        self.status().host_ip = Some(host_ip.to_owned());
        self.status().pod_ip = Some(pod_ip.to_owned());
        self
    }

    /// Sets the `Ready` condition's status (`True`, `False`, `Unknown`).
    pub fn ready(mut self, status: &str) -> Self {
        let conditions = self.status().conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != "Ready");
        conditions.push(PodCondition {
            type_: "Ready".to_owned(),
            status: status.to_owned(),
            ..PodCondition::default()
        });
        self
    }

    /// Adds (or replaces) a condition of `type_` with `status` and an optional reason.
    pub fn condition(mut self, type_: &str, status: &str, reason: Option<&str>) -> Self {
        let conditions = self.status().conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != type_);
        conditions.push(PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.map(str::to_owned),
            ..PodCondition::default()
        });
        self
    }

    /// Sets `status.reason` (`Evicted`, ...).
    pub fn reason(mut self, reason: &str) -> Self {
        self.status().reason = Some(reason.to_owned());
        self
    }

    /// Sets the creation timestamp (Unix seconds).
    pub fn created(mut self, seconds: i64) -> Self {
        self.0.metadata.creation_timestamp = Some(time(seconds));
        self
    }

    /// Sets the deletion timestamp (Unix seconds): the pod is being deleted.
    pub fn deleting(mut self, seconds: i64) -> Self {
        self.0.metadata.deletion_timestamp = Some(time(seconds));
        self
    }

    /// Sets `status.qosClass`.
    pub fn qos(mut self, class: &str) -> Self {
        self.status().qos_class = Some(class.to_owned());
        self
    }

    /// Adds an owner reference.
    pub fn owner(mut self, kind: &str, name: &str, controller: bool) -> Self {
        self.0
            .metadata
            .owner_references
            .get_or_insert_with(Vec::new)
            .push(OwnerReference {
                api_version: "apps/v1".to_owned(),
                kind: kind.to_owned(),
                name: name.to_owned(),
                uid: format!("uid-{name}"),
                controller: Some(controller),
                ..OwnerReference::default()
            });
        self
    }

    /// Sets `spec.priorityClassName` and `spec.hostNetwork`.
    pub fn priority(mut self, class: &str, host_network: bool) -> Self {
        self.spec().priority_class_name = Some(class.to_owned());
        self.spec().host_network = Some(host_network);
        self
    }

    /// Adds a container (spec, and status when it has one).
    pub fn container(mut self, c: ContainerFixture) -> Self {
        self.spec().containers.push(c.spec);
        if let Some(status) = c.status {
            self.status()
                .container_statuses
                .get_or_insert_with(Vec::new)
                .push(status);
        }
        self
    }

    /// The pod.
    pub fn build(self) -> Pod {
        self.0
    }
}

/// A container (spec and status) under construction.
#[derive(Debug, Clone)]
pub struct ContainerFixture {
    spec: Container,
    status: Option<ContainerStatus>,
}

/// A container `name` running `image`, with no status yet.
pub fn container(name: &str, image: &str) -> ContainerFixture {
    ContainerFixture {
        spec: Container {
            name: name.to_owned(),
            image: Some(image.to_owned()),
            ..Container::default()
        },
        status: None,
    }
}

impl ContainerFixture {
    fn status(&mut self) -> &mut ContainerStatus {
        let name = self.spec.name.clone();
        let image = self.spec.image.clone().unwrap_or_default();
        self.status.get_or_insert_with(|| ContainerStatus {
            name,
            image: format!("docker.io/library/{image}"),
            image_id: format!("docker.io/library/{image}@sha256:abc"),
            ..ContainerStatus::default()
        })
    }

    /// Sets requests, e.g. `&[("cpu", "250m"), ("memory", "64Mi")]`.
    pub fn requests(mut self, pairs: &[(&str, &str)]) -> Self {
        self.spec
            .resources
            .get_or_insert_with(ResourceRequirements::default)
            .requests = quantities(pairs);
        self
    }

    /// Sets limits.
    pub fn limits(mut self, pairs: &[(&str, &str)]) -> Self {
        self.spec
            .resources
            .get_or_insert_with(ResourceRequirements::default)
            .limits = quantities(pairs);
        self
    }

    /// Running, with a container id.
    pub fn running(mut self) -> Self {
        let id = format!("containerd://{}", self.spec.name);
        let s = self.status();
        s.container_id = Some(id);
        s.state = Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        });
        self
    }

    /// Waiting for `reason`.
    pub fn waiting(mut self, reason: &str) -> Self {
        self.status().state = Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_owned()),
                ..ContainerStateWaiting::default()
            }),
            ..ContainerState::default()
        });
        self
    }

    /// Terminated for `reason`.
    pub fn terminated(mut self, reason: &str) -> Self {
        self.status().state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some(reason.to_owned()),
                exit_code: 1,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        self
    }

    /// The previous run terminated for `reason` with `exit_code` (`lastState.terminated`).
    pub fn last_terminated(mut self, reason: &str, exit_code: i32) -> Self {
        self.status().last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some(reason.to_owned()),
                exit_code,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        self
    }

    /// Sets readiness.
    pub fn ready(mut self, ready: bool) -> Self {
        self.status().ready = ready;
        self
    }

    /// Sets the restart count.
    pub fn restarts(mut self, n: i32) -> Self {
        self.status().restart_count = n;
        self
    }
}

/// An HPA under construction.
#[derive(Debug, Clone)]
pub struct HpaFixture(pub HorizontalPodAutoscaler);

/// An HPA `name` in `default` scaling Deployment `name` between 1 and 10.
pub fn hpa(name: &str) -> HpaFixture {
    HpaFixture(HorizontalPodAutoscaler {
        metadata: meta(Some("default"), name),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: name.to_owned(),
            },
            min_replicas: Some(1),
            max_replicas: 10,
            ..HorizontalPodAutoscalerSpec::default()
        }),
        status: None,
    })
}

impl HpaFixture {
    fn spec(&mut self) -> &mut HorizontalPodAutoscalerSpec {
        self.0
            .spec
            .get_or_insert_with(HorizontalPodAutoscalerSpec::default)
    }

    fn status(&mut self) -> &mut HorizontalPodAutoscalerStatus {
        self.0
            .status
            .get_or_insert_with(HorizontalPodAutoscalerStatus::default)
    }

    /// Sets min (`None`: unset, defaults to 1) and max replicas.
    pub fn bounds(mut self, min: Option<i32>, max: i32) -> Self {
        self.spec().min_replicas = min;
        self.spec().max_replicas = max;
        self
    }

    /// Sets current and desired replicas.
    pub fn replicas(mut self, current: i32, desired: i32) -> Self {
        self.status().current_replicas = Some(current);
        self.status().desired_replicas = desired;
        self
    }

    /// Targets average CPU utilization (percent) and reports the current one.
    pub fn cpu_utilization(mut self, target: i32, current: Option<i32>) -> Self {
        self.spec()
            .metrics
            .get_or_insert_with(Vec::new)
            .push(MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(target),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            });
        if let Some(current) = current {
            self.status()
                .current_metrics
                .get_or_insert_with(Vec::new)
                .push(MetricStatus {
                    type_: "Resource".to_owned(),
                    resource: Some(ResourceMetricStatus {
                        name: "cpu".to_owned(),
                        current: MetricValueStatus {
                            average_utilization: Some(current),
                            average_value: Some(Quantity("120m".to_owned())),
                            ..MetricValueStatus::default()
                        },
                    }),
                    ..MetricStatus::default()
                });
        }
        self
    }

    /// Targets a pods metric's average value.
    pub fn pods_metric(mut self, metric: &str, target: &str, current: &str) -> Self {
        let id = MetricIdentifier {
            name: metric.to_owned(),
            selector: None,
        };
        self.spec()
            .metrics
            .get_or_insert_with(Vec::new)
            .push(MetricSpec {
                type_: "Pods".to_owned(),
                pods: Some(PodsMetricSource {
                    metric: id.clone(),
                    target: MetricTarget {
                        type_: "AverageValue".to_owned(),
                        average_value: Some(Quantity(target.to_owned())),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            });
        self.status()
            .current_metrics
            .get_or_insert_with(Vec::new)
            .push(MetricStatus {
                type_: "Pods".to_owned(),
                pods: Some(PodsMetricStatus {
                    metric: id,
                    current: MetricValueStatus {
                        average_value: Some(Quantity(current.to_owned())),
                        ..MetricValueStatus::default()
                    },
                }),
                ..MetricStatus::default()
            });
        self
    }

    /// Adds a status condition.
    pub fn condition(mut self, type_: &str, status: &str) -> Self {
        self.status().conditions.get_or_insert_with(Vec::new).push(
            HorizontalPodAutoscalerCondition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                ..HorizontalPodAutoscalerCondition::default()
            },
        );
        self
    }

    /// The HPA.
    pub fn build(self) -> HorizontalPodAutoscaler {
        self.0
    }
}

/// A node with system info and an internal IP.
pub fn node(name: &str) -> Node {
    Node {
        metadata: meta(None, name),
        spec: Some(NodeSpec {
            pod_cidr: Some("10.244.1.0/24".to_owned()),
            provider_id: Some(format!("sim://{name}")),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "Hostname".to_owned(),
                    address: name.to_owned(),
                },
                NodeAddress {
                    type_: "InternalIP".to_owned(),
                    address: "10.0.0.11".to_owned(),
                },
            ]),
            node_info: Some(NodeSystemInfo {
                kernel_version: "6.1.0".to_owned(),
                os_image: "Debian GNU/Linux 12".to_owned(),
                container_runtime_version: "containerd://1.7.0".to_owned(),
                kubelet_version: "v1.35.0".to_owned(),
                kube_proxy_version: "v1.35.0".to_owned(),
                system_uuid: "sys-uuid".to_owned(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    }
}

/// `node` with this capacity and allocatable, e.g. `&[("cpu", "4"), ("memory", "16Gi")]`.
pub fn with_resources(
    mut node: Node,
    capacity: &[(&str, &str)],
    allocatable: &[(&str, &str)],
) -> Node {
    let status = node.status.get_or_insert_with(NodeStatus::default);
    status.capacity = quantities(capacity);
    status.allocatable = quantities(allocatable);
    node
}

/// `node` with a condition of `type_` in `status` (`True`, `False`, `Unknown`).
pub fn with_condition(mut node: Node, type_: &str, status: &str) -> Node {
    node.status
        .get_or_insert_with(NodeStatus::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(NodeCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            ..NodeCondition::default()
        });
    node
}

/// A Deployment under construction.
#[derive(Debug, Clone)]
pub struct DeploymentFixture(pub Deployment);

/// A Deployment `name` in `default` at generation 1, with an empty spec and status.
pub fn deployment(name: &str) -> DeploymentFixture {
    let mut metadata = meta(Some("default"), name);
    metadata.generation = Some(1);
    DeploymentFixture(Deployment {
        metadata,
        spec: Some(DeploymentSpec::default()),
        status: Some(DeploymentStatus::default()),
    })
}

impl DeploymentFixture {
    fn status_mut(&mut self) -> &mut DeploymentStatus {
        self.0.status.get_or_insert_with(DeploymentStatus::default)
    }

    /// Sets `spec.replicas`.
    pub fn replicas(mut self, n: i32) -> Self {
        self.0
            .spec
            .get_or_insert_with(DeploymentSpec::default)
            .replicas = Some(n);
        self
    }

    /// Sets `metadata.generation` and `status.observedGeneration`.
    pub fn generation(mut self, generation: i64, observed: Option<i64>) -> Self {
        self.0.metadata.generation = Some(generation);
        self.status_mut().observed_generation = observed;
        self
    }

    /// Sets the status counts: replicas, ready, available, updated, unavailable.
    pub fn counts(
        mut self,
        replicas: i32,
        ready: i32,
        available: i32,
        updated: i32,
        unavailable: i32,
    ) -> Self {
        let s = self.status_mut();
        s.replicas = Some(replicas);
        s.ready_replicas = Some(ready);
        s.available_replicas = Some(available);
        s.updated_replicas = Some(updated);
        s.unavailable_replicas = Some(unavailable);
        self
    }

    /// Adds a status condition.
    pub fn condition(mut self, type_: &str, status: &str, reason: &str) -> Self {
        self.status_mut()
            .conditions
            .get_or_insert_with(Vec::new)
            .push(DeploymentCondition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: Some(reason.to_owned()),
                ..DeploymentCondition::default()
            });
        self
    }

    /// The Deployment.
    pub fn build(self) -> Deployment {
        self.0
    }
}

/// A ReplicaSet `name` in `default`, controlled by Deployment `owner` when given.
pub fn replicaset(name: &str, owner: Option<&str>) -> ReplicaSet {
    let mut metadata = meta(Some("default"), name);
    metadata.owner_references = owner.map(|owner| {
        vec![OwnerReference {
            api_version: "apps/v1".to_owned(),
            kind: "Deployment".to_owned(),
            name: owner.to_owned(),
            uid: format!("uid-{owner}"),
            controller: Some(true),
            ..OwnerReference::default()
        }]
    });
    ReplicaSet {
        metadata,
        spec: None,
        status: None,
    }
}

/// A namespace in `phase`.
pub fn namespace(name: &str, phase: &str) -> Namespace {
    Namespace {
        metadata: meta(None, name),
        spec: None,
        status: Some(NamespaceStatus {
            phase: Some(phase.to_owned()),
            ..NamespaceStatus::default()
        }),
    }
}

/// A `SuccessfulRescale` event about HPA `hpa` in `default`, uid `uid`, seen `count` times,
/// last at `last_seconds` (Unix time).
pub fn rescale_event(uid: &str, hpa: &str, message: &str, count: i32, last_seconds: i64) -> Event {
    let at = time(last_seconds);
    Event {
        metadata: ObjectMeta {
            namespace: Some("default".to_owned()),
            name: Some(format!("{hpa}.{uid}")),
            uid: Some(uid.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("autoscaling/v2".to_owned()),
            kind: Some("HorizontalPodAutoscaler".to_owned()),
            name: Some(hpa.to_owned()),
            namespace: Some("default".to_owned()),
            ..ObjectReference::default()
        },
        reason: Some("SuccessfulRescale".to_owned()),
        message: Some(message.to_owned()),
        count: Some(count),
        first_timestamp: Some(at.clone()),
        last_timestamp: Some(at),
        type_: Some("Normal".to_owned()),
        ..Event::default()
    }
}

/// The same event reported through `series` (events.k8s.io style) instead of `count`.
pub fn with_series_count(mut event: Event, count: i32) -> Event {
    event.count = None;
    event.series = Some(EventSeries {
        count: Some(count),
        last_observed_time: None,
    });
    event
}
