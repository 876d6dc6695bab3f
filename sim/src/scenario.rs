//! Scenario files: what the simulated cluster contains and what happens to it over time.
//!
//! A scenario is YAML. Every section is optional; unknown fields are errors that name the
//! field (``deployments[0]: unknown field `replica` ``). Durations are Go durations (`30s`,
//! `1m30s`, `500ms`) or seconds; quantities are Kubernetes quantities (`250m`, `64Mi`).
//!
//! ```yaml
//! name: demo
//! seed: 42                      # RNG seed: pod names, uids, noise, jitter
//! jitter: 0.2                   # ± fraction applied to pod startup/readiness delays
//! nodes: {count: 3, cpu: "4", memory: 16Gi, pods: 110,
//!         reserved: {cpu: 200m, memory: 512Mi}}   # allocatable = capacity - reserved
//!                               # (default reserved: memory 100Mi, kubeadm's eviction threshold)
//! namespaces: [team-a]          # extra (empty) namespaces; used ones are created anyway
//! deployments:
//!   - name: php-apache
//!     namespace: default
//!     replicas: 1
//!     image: registry.k8s.io/hpa-example
//!     port: 80
//!     labels: {run: php-apache}  # selector labels (default app: NAME)
//!     requests: {cpu: 200m, memory: 64Mi}
//!     limits: {cpu: 500m, memory: 128Mi}
//!     startup: 2s               # created → container running
//!     readiness: 3s             # running → Ready
//!     termination: 1s           # delete → gone
//!     priority_class: high-priority   # spec.priorityClassName (system-node-critical and
//!     priority: 1000            # system-cluster-critical bring their own priority)
//!     fault: {kind: crash_loop, reason: OOMKilled, after: 5s}   # or Error (exit 1); or
//!                               # {kind: image_pull}: ErrImagePull / ImagePullBackOff
//!     load:
//!       idle_cpu: 1m            # per pod, without clients
//!       cpu_per_client: 10m     # spread across Ready pods
//!       memory: 20Mi            # working set per pod
//!       memory_per_client: 0
//!       noise: 0.05             # ±5 % per pod and second (seeded)
//!       interpolation: step     # or linear
//!       curve: [{at: 0s, clients: 0}, {at: 30s, clients: 50}, {at: 90s, clients: 0}]
//!       # or: the clients are other deployments' Ready pods (load generators), each worth
//!       # `weight` clients; replaces the curve
//!       # clients_from: [{deployment: php-client, weight: 1}]
//! hpas:
//!   - {name: php-apache, target: php-apache, min: 1, max: 10, cpu_utilization: 50,
//!      scale_down_stabilization: 30s}   # either stabilization sets spec.behavior
//! crashes:                      # action: crash (restarts: N in a row) | evict | delete
//!   - {at: 60s, deployment: php-apache, count: 1, action: crash, restarts: 3,
//!      reason: OOMKilled}       # how the crash terminates: Error (default) or OOMKilled
//! node_conditions:              # Ready, MemoryPressure, DiskPressure, PIDPressure:
//!   - {at: 90s, node: sim-worker-2, condition: Ready, status: Unknown}   # True/False/Unknown
//! rollouts:                     # kubectl set image: a new ReplicaSet, rolled 25 %/25 %
//!   - {at: 120s, deployment: php-apache, image: "registry.k8s.io/hpa-example:v2",
//!      fault: {kind: image_pull}}   # optional: the new pods' fault (a stuck rollout)
//! steps:                        # an experiment's named steps: scale deployments (like
//!   - {at: 0s, name: s2-c10, namespace: default, scale: {php-apache: 2}}   # kubectl scale),
//!                               # a ScenarioStep event, annotation kube-sim.dev/step
//! faults:                       # kind: drop_watches | expire | errors | slow
//!   - {at: 45s, kind: errors, requests: 5, resource: pods}
//!   - {at: 50s, kind: slow, requests: 3, delay: 2s}
//! metrics: {enabled: true, resolution: 15s}
//! hpa_controller: {sync_period: 15s, tolerance: 0.1, downscale_stabilization: 5m,
//!                  cpu_initialization_period: 5m, initial_readiness_delay: 30s}
//! events: {ttl: 1h, pod_events: true}
//! api: {watch_history: 10000, bookmark_interval: 60s}
//! bulk: {deployments: 100, replicas: 100}   # 10,000 Running pods for benchmarks
//! churn: {ready_flips_per_second: 1000, namespace: bulk}   # flapping readiness probes
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::units::{Cpu, Dur, Mem};

/// The built-in scenarios, by name, shipped as files in `sim/scenarios/`.
const BUILTINS: &[(&str, &str)] = &[
    ("demo", include_str!("../scenarios/demo.yaml")),
    ("load-test", include_str!("../scenarios/load-test.yaml")),
    ("bulk", include_str!("../scenarios/bulk.yaml")),
    ("faults", include_str!("../scenarios/faults.yaml")),
    ("api-faults", include_str!("../scenarios/api-faults.yaml")),
    ("echo-matrix", include_str!("../scenarios/echo-matrix.yaml")),
    (
        "echo-matrix-hpa",
        include_str!("../scenarios/echo-matrix-hpa.yaml"),
    ),
    (
        "http-messages",
        include_str!("../scenarios/http-messages.yaml"),
    ),
    (
        "self-healing",
        include_str!("../scenarios/self-healing.yaml"),
    ),
    ("paxos", include_str!("../scenarios/paxos.yaml")),
];

/// A validated scenario: the initial cluster and its timeline of load, crashes and faults.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub(crate) spec: Spec,
}

impl Scenario {
    /// Parses and validates a scenario from YAML.
    ///
    /// # Errors
    /// [`Error::ScenarioParse`] for malformed YAML, unknown fields or bad values (the message
    /// names the field), [`Error::ScenarioInvalid`] for inconsistent content (an HPA whose
    /// target does not exist, `min > max`, ...).
    pub fn from_yaml(yaml: &str) -> Result<Self> {
        let spec: Spec =
            serde_yaml::from_str(yaml).map_err(|source| Error::ScenarioParse { source })?;
        spec.validate()?;
        Ok(Scenario { spec })
    }

    /// A built-in scenario: `demo` (the README demo), `load-test` (2–10 echo servers under
    /// 10/50/100 clients), `bulk` (10,000 running pods), `faults` (crash loops, image pull
    /// errors, unschedulable and evicted pods, node conditions, rollouts), `api-faults`
    /// (watch drops, 410s, 500s and slow responses), or the seed experiments:
    /// `echo-matrix` (2–10 servers × 10/50/100 clients, stepped), `echo-matrix-hpa` (the
    /// same clients, an HPA choosing the servers), `http-messages` (clients sending 1, 10
    /// or 100 messages), `self-healing` (pods lost under load) and `paxos` (a namespace of
    /// cooperating roles). Each file in `sim/scenarios/` says what happens when.
    ///
    /// # Errors
    /// [`Error::UnknownScenario`] for any other name.
    pub fn builtin(name: &str) -> Result<Self> {
        let yaml = BUILTINS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, yaml)| *yaml)
            .ok_or_else(|| Error::UnknownScenario {
                name: name.to_string(),
                known: Self::builtin_names().join(", "),
            })?;
        Self::from_yaml(yaml)
    }

    /// Names of the built-in scenarios.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTINS.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in scenario by name, or else a scenario file at that path.
    ///
    /// # Errors
    /// [`Error::NoSuchScenario`] (listing the built-ins) when a bare name is neither a
    /// built-in nor a file, [`Error::ScenarioRead`] when a path (it has a `/` or an extension)
    /// cannot be read, or any error of
    /// [`Scenario::from_yaml`].
    pub fn from_name_or_path(name_or_path: &str) -> Result<Self> {
        if BUILTINS.iter().any(|(n, _)| *n == name_or_path) {
            return Self::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        let yaml = std::fs::read_to_string(path).map_err(|source| {
            // A bare word that is neither a built-in nor a file is most likely a mistyped
            // built-in: list them. Something that looks like a path names the file instead.
            let looks_like_path = name_or_path.contains(std::path::MAIN_SEPARATOR)
                || name_or_path.contains('/')
                || path.extension().is_some();
            if source.kind() == std::io::ErrorKind::NotFound && !looks_like_path {
                Error::NoSuchScenario {
                    name: name_or_path.to_string(),
                    known: Self::builtin_names().join(", "),
                }
            } else {
                Error::ScenarioRead {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Self::from_yaml(&yaml)
    }

    /// The scenario's name (its `name:` field).
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// What the scenario shows (its `description:` field).
    pub fn description(&self) -> &str {
        &self.spec.description
    }

    /// The RNG seed.
    pub fn seed(&self) -> u64 {
        self.spec.seed
    }

    /// The same scenario with another RNG seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.spec.seed = seed;
        self
    }

    /// Whether the scenario serves `metrics.k8s.io`.
    pub fn serves_metrics(&self) -> bool {
        self.spec.metrics.enabled
    }
}

/// The YAML document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Spec {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    #[serde(default)]
    pub nodes: NodesSpec,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub deployments: Vec<DeploymentSpec>,
    #[serde(default)]
    pub hpas: Vec<HpaSpec>,
    #[serde(default)]
    pub crashes: Vec<CrashSpec>,
    #[serde(default)]
    pub node_conditions: Vec<NodeConditionSpec>,
    #[serde(default)]
    pub rollouts: Vec<RolloutSpec>,
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    #[serde(default)]
    pub metrics: MetricsSpec,
    #[serde(default)]
    pub hpa_controller: HpaControllerSpec,
    #[serde(default)]
    pub events: EventsSpec,
    #[serde(default)]
    pub api: ApiSpec,
    #[serde(default)]
    pub bulk: Option<BulkSpec>,
    #[serde(default)]
    pub churn: Option<ChurnSpec>,
}

/// Background churn: readiness probes flapping at a steady rate (API changes per second).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChurnSpec {
    pub ready_flips_per_second: f64,
    #[serde(default)]
    pub namespace: Option<String>,
}

fn default_name() -> String {
    "custom".to_string()
}
fn default_seed() -> u64 {
    1
}
fn default_jitter() -> f64 {
    0.2
}
fn default_namespace() -> String {
    "default".to_string()
}

/// The cluster's nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NodesSpec {
    pub count: u32,
    pub name_prefix: String,
    pub cpu: Cpu,
    pub memory: Mem,
    pub pods: u32,
    /// Held back from pods: allocatable = capacity - reserved (the kubelet's
    /// `--system-reserved`, `--kube-reserved` and hard eviction threshold together).
    pub reserved: ReservedSpec,
}

impl NodesSpec {
    /// What each node can allocate to pods: (CPU millicores, memory bytes).
    pub(crate) fn allocatable(&self) -> (u64, u64) {
        (
            self.cpu.0.saturating_sub(self.reserved.cpu.0),
            self.memory.0.saturating_sub(self.reserved.memory.0),
        )
    }
}

/// CPU and memory a node holds back from pods.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ReservedSpec {
    pub cpu: Cpu,
    pub memory: Mem,
}

impl Default for ReservedSpec {
    /// kubeadm's defaults: no CPU reserved, memory down by the 100Mi hard eviction threshold.
    fn default() -> Self {
        ReservedSpec {
            cpu: Cpu(0),
            memory: Mem(100 << 20),
        }
    }
}

impl Default for NodesSpec {
    fn default() -> Self {
        NodesSpec {
            count: 3,
            name_prefix: "sim-worker".to_string(),
            cpu: Cpu(4000),
            memory: Mem(16 << 30),
            pods: 110,
            reserved: ReservedSpec::default(),
        }
    }
}

/// CPU and memory amounts for requests or limits.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourcesSpec {
    pub cpu: Option<Cpu>,
    pub memory: Option<Mem>,
}

/// One deployment and its load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeploymentSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "one")]
    pub replicas: u32,
    pub image: String,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub requests: ResourcesSpec,
    #[serde(default)]
    pub limits: ResourcesSpec,
    #[serde(default = "default_startup")]
    pub startup: Dur,
    #[serde(default = "default_readiness")]
    pub readiness: Dur,
    #[serde(default = "default_termination")]
    pub termination: Dur,
    #[serde(default)]
    pub load: LoadSpec,
    /// What goes wrong with every pod of the deployment.
    #[serde(default)]
    pub fault: Option<PodFault>,
    /// `spec.priorityClassName` of its pods.
    #[serde(default)]
    pub priority_class: Option<String>,
    /// `spec.priority` of its pods (default: the built-in class's value, else 0).
    #[serde(default)]
    pub priority: Option<i32>,
}

/// What goes wrong with every pod of a deployment (or of a rollout's new ReplicaSet).
///
/// `{kind: image_pull}` or `{kind: crash_loop, reason: OOMKilled, after: 5s}`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum PodFault {
    /// The image never pulls: the container waits in `ErrImagePull`, then
    /// `ImagePullBackOff`, retried with the kubelet's back-off; the pod stays Pending.
    ImagePull,
    /// The container exits `after` it started, every time, for ever: restarts grow, it waits
    /// in `CrashLoopBackOff` between them, `lastState.terminated` says why.
    CrashLoop {
        #[serde(default)]
        reason: ExitReason,
        #[serde(default = "default_crash_after")]
        after: Dur,
    },
}

fn default_crash_after() -> Dur {
    Dur(Duration::from_secs(5))
}

/// Why a container terminated.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub(crate) enum ExitReason {
    /// Exit code 1, reason `Error`.
    #[default]
    Error,
    /// Killed for exceeding its memory limit: exit code 137, reason `OOMKilled`.
    #[serde(rename = "OOMKilled")]
    OomKilled,
}

impl ExitReason {
    /// `(reason, exit code)` as the kubelet reports them.
    pub(crate) fn as_terminated(self) -> (&'static str, i32) {
        match self {
            ExitReason::Error => ("Error", 1),
            ExitReason::OomKilled => ("OOMKilled", 137),
        }
    }
}

/// The priority of a built-in PriorityClass.
pub(crate) fn builtin_priority(class: &str) -> Option<i32> {
    match class {
        "system-node-critical" => Some(2_000_001_000),
        "system-cluster-critical" => Some(2_000_000_000),
        _ => None,
    }
}

fn one() -> u32 {
    1
}
fn default_startup() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_readiness() -> Dur {
    Dur(Duration::from_secs(3))
}
fn default_termination() -> Dur {
    Dur(Duration::from_secs(1))
}

/// How a load curve is read between its points.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Interpolation {
    /// Each point holds until the next one.
    #[default]
    Step,
    /// Straight lines between points.
    Linear,
}

/// The load model of one deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LoadSpec {
    pub idle_cpu: Cpu,
    pub cpu_per_client: Cpu,
    pub memory: Mem,
    pub memory_per_client: Mem,
    pub noise: f64,
    pub interpolation: Interpolation,
    pub curve: Vec<LoadPoint>,
    /// The clients are other deployments' Ready pods (the load generators of the seed
    /// experiments): each counts `weight` clients. Replaces the curve.
    pub clients_from: Vec<ClientsFrom>,
}

/// Client pods that load a deployment: the Ready pods of `deployment` (same namespace),
/// each worth `weight` clients (messages per client, say).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientsFrom {
    pub deployment: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    1.0
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            idle_cpu: Cpu(1),
            cpu_per_client: Cpu(10),
            memory: Mem(20 << 20),
            memory_per_client: Mem(0),
            noise: 0.05,
            interpolation: Interpolation::Step,
            curve: Vec::new(),
            clients_from: Vec::new(),
        }
    }
}

/// One point of a load curve.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadPoint {
    pub at: Dur,
    pub clients: f64,
}

/// One HorizontalPodAutoscaler (autoscaling/v2, CPU utilization target).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HpaSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub target: String,
    #[serde(default = "one")]
    pub min: u32,
    pub max: u32,
    #[serde(default = "default_cpu_target")]
    pub cpu_utilization: u32,
    #[serde(default)]
    pub scale_down_stabilization: Option<Dur>,
    #[serde(default)]
    pub scale_up_stabilization: Option<Dur>,
}

fn default_cpu_target() -> u32 {
    80
}

/// What a crash does to the chosen pods.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CrashAction {
    /// The container exits with an error and is restarted (`restarts` times in a row, with
    /// the kubelet's back-off: `CrashLoopBackOff`).
    #[default]
    Crash,
    /// The kubelet evicts the pod under memory pressure (phase `Failed`, reason `Evicted`,
    /// condition `DisruptionTarget`); its ReplicaSet replaces it. `fail` is the older name.
    #[serde(alias = "fail")]
    Evict,
    /// The pod is deleted; its ReplicaSet replaces it.
    Delete,
}

/// A crash at a point in time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CrashSpec {
    pub at: Dur,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub deployment: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub action: CrashAction,
    #[serde(default = "one")]
    pub restarts: u32,
    /// How a crashing container terminates.
    #[serde(default)]
    pub reason: ExitReason,
}

/// A node condition changing at a point in time, as the kubelet (or, for `Unknown`, the
/// node lifecycle controller) reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeConditionSpec {
    pub at: Dur,
    pub node: String,
    pub condition: NodeConditionType,
    pub status: ConditionStatus,
}

/// The node conditions a scenario can change.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum NodeConditionType {
    Ready,
    MemoryPressure,
    DiskPressure,
    #[serde(rename = "PIDPressure")]
    PidPressure,
}

impl NodeConditionType {
    /// The condition's `type`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NodeConditionType::Ready => "Ready",
            NodeConditionType::MemoryPressure => "MemoryPressure",
            NodeConditionType::DiskPressure => "DiskPressure",
            NodeConditionType::PidPressure => "PIDPressure",
        }
    }
}

/// A condition's status.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub(crate) enum ConditionStatus {
    #[serde(rename = "True", alias = "true")]
    True,
    #[serde(rename = "False", alias = "false")]
    False,
    /// The kubelet stopped posting status (for `Ready`: the node is unreachable).
    Unknown,
}

impl ConditionStatus {
    /// The condition's `status`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// A named step of an experiment at a point in time: deployments scaled to the step's
/// replicas (as `kubectl scale` does), the step announced by a `ScenarioStep` event and a
/// `kube-sim.dev/step` annotation on each deployment it scales.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepSpec {
    pub at: Dur,
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// deployment → replicas.
    #[serde(default)]
    pub scale: BTreeMap<String, u32>,
}

/// A rollout at a point in time: the deployment's pod template gets a new image (and,
/// optionally, a fault for the new pods), as `kubectl set image` does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutSpec {
    pub at: Dur,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub deployment: String,
    pub image: String,
    /// What goes wrong with the new pods (a rollout that gets stuck).
    #[serde(default)]
    pub fault: Option<PodFault>,
}

/// The kinds of API fault a scenario can inject.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FaultKind {
    DropWatches,
    Expire,
    Errors,
    Slow,
}

/// An API fault at a point in time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    pub at: Dur,
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub requests: u32,
    #[serde(default = "default_slow_delay")]
    pub delay: Dur,
    #[serde(default)]
    pub resource: Option<String>,
}

fn default_slow_delay() -> Dur {
    Dur(Duration::from_secs(2))
}

/// metrics.k8s.io (metrics-server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsSpec {
    pub enabled: bool,
    pub resolution: Dur,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        MetricsSpec {
            enabled: true,
            resolution: Dur(Duration::from_secs(15)),
        }
    }
}

/// kube-controller-manager's HPA flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HpaControllerSpec {
    pub sync_period: Dur,
    pub tolerance: f64,
    pub downscale_stabilization: Dur,
    pub cpu_initialization_period: Dur,
    pub initial_readiness_delay: Dur,
}

impl Default for HpaControllerSpec {
    fn default() -> Self {
        HpaControllerSpec {
            sync_period: Dur(Duration::from_secs(15)),
            tolerance: 0.1,
            downscale_stabilization: Dur(Duration::from_secs(300)),
            cpu_initialization_period: Dur(Duration::from_secs(300)),
            initial_readiness_delay: Dur(Duration::from_secs(30)),
        }
    }
}

/// Events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EventsSpec {
    pub ttl: Dur,
    pub pod_events: bool,
}

impl Default for EventsSpec {
    fn default() -> Self {
        EventsSpec {
            ttl: Dur(Duration::from_secs(3600)),
            pod_events: true,
        }
    }
}

/// API server behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ApiSpec {
    pub watch_history: usize,
    pub bookmark_interval: Dur,
}

impl Default for ApiSpec {
    fn default() -> Self {
        ApiSpec {
            watch_history: 10_000,
            bookmark_interval: Dur(Duration::from_secs(60)),
        }
    }
}

/// A generator of many identical deployments whose pods start out Running and Ready.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkSpec {
    pub deployments: u32,
    pub replicas: u32,
    #[serde(default = "default_bulk_namespace")]
    pub namespace: String,
    #[serde(default = "default_bulk_prefix")]
    pub name_prefix: String,
    #[serde(default = "default_bulk_image")]
    pub image: String,
    #[serde(default)]
    pub requests: ResourcesSpec,
}

fn default_bulk_namespace() -> String {
    "bulk".to_string()
}
fn default_bulk_prefix() -> String {
    "bulk".to_string()
}
fn default_bulk_image() -> String {
    "registry.k8s.io/pause:3.10".to_string()
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::ScenarioInvalid {
        field: field.into(),
        message: message.into(),
    }
}

impl Spec {
    fn validate(&self) -> Result<()> {
        check_name("name", &self.name)?;
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(invalid("jitter", "must be a fraction between 0 and 0.5"));
        }
        if self.nodes.count == 0 {
            return Err(invalid("nodes.count", "must be at least 1"));
        }
        check_name("nodes.name_prefix", &self.nodes.name_prefix)?;
        for (i, ns) in self.namespaces.iter().enumerate() {
            check_name(&format!("namespaces[{i}]"), ns)?;
        }
        let mut deployments = BTreeSet::new();
        for (i, d) in self.deployments.iter().enumerate() {
            self.validate_deployment(i, d, &mut deployments)?;
        }
        let mut hpas = BTreeSet::new();
        for (i, h) in self.hpas.iter().enumerate() {
            let field = |f: &str| format!("hpas[{i}].{f}");
            check_name(&field("name"), &h.name)?;
            if !hpas.insert((h.namespace.clone(), h.name.clone())) {
                return Err(invalid(
                    field("name"),
                    format!("HPA {}/{} is defined twice", h.namespace, h.name),
                ));
            }
            if !deployments.contains(&(h.namespace.clone(), h.target.clone())) {
                return Err(invalid(
                    field("target"),
                    format!(
                        "no deployment named `{}` in namespace `{}`",
                        h.target, h.namespace
                    ),
                ));
            }
            if h.min == 0 {
                return Err(invalid(field("min"), "must be at least 1"));
            }
            if h.min > h.max {
                return Err(invalid(
                    field("min"),
                    format!("min ({}) exceeds max ({})", h.min, h.max),
                ));
            }
            if h.cpu_utilization == 0 {
                return Err(invalid(
                    field("cpu_utilization"),
                    "must be a positive percentage",
                ));
            }
        }
        for (i, c) in self.crashes.iter().enumerate() {
            let field = |f: &str| format!("crashes[{i}].{f}");
            match (&c.deployment, &c.pod) {
                (Some(d), None) => {
                    if !deployments.contains(&(c.namespace.clone(), d.clone())) {
                        return Err(invalid(
                            field("deployment"),
                            format!("no deployment named `{d}` in namespace `{}`", c.namespace),
                        ));
                    }
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(invalid(
                        field("deployment"),
                        "name exactly one of `deployment` or `pod`",
                    ));
                }
            }
            if c.count == 0 {
                return Err(invalid(field("count"), "must be at least 1"));
            }
            if c.restarts == 0 {
                return Err(invalid(field("restarts"), "must be at least 1"));
            }
        }
        let nodes: BTreeSet<String> = (1..=self.nodes.count)
            .map(|n| format!("{}-{n}", self.nodes.name_prefix))
            .collect();
        for (i, c) in self.node_conditions.iter().enumerate() {
            if !nodes.contains(&c.node) {
                return Err(invalid(
                    format!("node_conditions[{i}].node"),
                    format!(
                        "no node named `{}` (the nodes are {}-1 to {}-{})",
                        c.node, self.nodes.name_prefix, self.nodes.name_prefix, self.nodes.count
                    ),
                ));
            }
        }
        for (i, r) in self.rollouts.iter().enumerate() {
            let field = |f: &str| format!("rollouts[{i}].{f}");
            if !deployments.contains(&(r.namespace.clone(), r.deployment.clone())) {
                return Err(invalid(
                    field("deployment"),
                    format!(
                        "no deployment named `{}` in namespace `{}`",
                        r.deployment, r.namespace
                    ),
                ));
            }
            if r.image.trim().is_empty() {
                return Err(invalid(field("image"), "must not be empty"));
            }
            check_fault(&field("fault"), r.fault.as_ref())?;
        }
        let mut step_names = BTreeSet::new();
        let mut last_step = None;
        for (i, st) in self.steps.iter().enumerate() {
            let field = |f: &str| format!("steps[{i}].{f}");
            if st.name.trim().is_empty() || st.name.len() > 63 {
                return Err(invalid(field("name"), "must be 1 to 63 characters"));
            }
            if !step_names.insert(st.name.clone()) {
                return Err(invalid(
                    field("name"),
                    format!("step `{}` is defined twice", st.name),
                ));
            }
            if last_step.is_some_and(|l| st.at < l) {
                return Err(invalid(field("at"), "steps must be in time order"));
            }
            last_step = Some(st.at);
            for d in st.scale.keys() {
                if !deployments.contains(&(st.namespace.clone(), d.clone())) {
                    return Err(invalid(
                        field("scale"),
                        format!("no deployment named `{d}` in namespace `{}`", st.namespace),
                    ));
                }
            }
        }
        for d in &self.deployments {
            for (j, c) in d.load.clients_from.iter().enumerate() {
                if !deployments.contains(&(d.namespace.clone(), c.deployment.clone())) {
                    return Err(invalid(
                        format!("deployments[{}].load.clients_from[{j}].deployment", d.name),
                        format!(
                            "no deployment named `{}` in namespace `{}`",
                            c.deployment, d.namespace
                        ),
                    ));
                }
                if !(c.weight >= 0.0 && c.weight.is_finite()) {
                    return Err(invalid(
                        format!("deployments[{}].load.clients_from[{j}].weight", d.name),
                        "must be a non-negative number",
                    ));
                }
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            if let Some(r) = &f.resource
                && crate::resources::find_by_plural(r).is_none()
            {
                return Err(invalid(
                    format!("faults[{i}].resource"),
                    format!("unknown resource `{r}` (use a plural such as pods, events)"),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.hpa_controller.tolerance) {
            return Err(invalid(
                "hpa_controller.tolerance",
                "must be a fraction between 0 and 1",
            ));
        }
        for (name, d) in [
            (
                "hpa_controller.sync_period",
                self.hpa_controller.sync_period,
            ),
            ("metrics.resolution", self.metrics.resolution),
            ("api.bookmark_interval", self.api.bookmark_interval),
        ] {
            if d.0 < Duration::from_millis(100) {
                return Err(invalid(name, "must be at least 100ms"));
            }
        }
        if self.api.watch_history == 0 {
            return Err(invalid("api.watch_history", "must be at least 1"));
        }
        if let Some(c) = &self.churn
            && !(c.ready_flips_per_second >= 0.0 && c.ready_flips_per_second <= 100_000.0)
        {
            return Err(invalid(
                "churn.ready_flips_per_second",
                "must be between 0 and 100000",
            ));
        }
        if let Some(b) = &self.bulk {
            check_name("bulk.namespace", &b.namespace)?;
            check_name("bulk.name_prefix", &b.name_prefix)?;
        }
        Ok(())
    }

    fn validate_deployment(
        &self,
        i: usize,
        d: &DeploymentSpec,
        seen: &mut BTreeSet<(String, String)>,
    ) -> Result<()> {
        let field = |f: &str| format!("deployments[{i}].{f}");
        check_name(&field("name"), &d.name)?;
        check_name(&field("namespace"), &d.namespace)?;
        if let Some(c) = &d.container {
            check_name(&field("container"), c)?;
        }
        if d.image.trim().is_empty() {
            return Err(invalid(field("image"), "must not be empty"));
        }
        check_fault(&field("fault"), d.fault.as_ref())?;
        if let Some(class) = &d.priority_class {
            check_name(&field("priority_class"), class)?;
        }
        if d.priority.is_some() && d.priority_class.is_none() {
            return Err(invalid(
                field("priority"),
                "a priority needs a priority_class to come from",
            ));
        }
        if !seen.insert((d.namespace.clone(), d.name.clone())) {
            return Err(invalid(
                field("name"),
                format!("deployment {}/{} is defined twice", d.namespace, d.name),
            ));
        }
        for (k, v) in &d.labels {
            check_label(&field("labels"), k, v)?;
        }
        for (which, r) in [("requests", &d.requests), ("limits", &d.limits)] {
            if r.cpu == Some(Cpu(0)) || r.memory == Some(Mem(0)) {
                return Err(invalid(field(which), "amounts must be positive"));
            }
        }
        if let (Some(req), Some(lim)) = (d.requests.cpu, d.limits.cpu)
            && req.0 > lim.0
        {
            return Err(invalid(field("requests.cpu"), "must not exceed limits.cpu"));
        }
        if !(0.0..=1.0).contains(&d.load.noise) {
            return Err(invalid(
                field("load.noise"),
                format!("{} is not a fraction between 0 and 1", d.load.noise),
            ));
        }
        let mut last = None;
        for (j, p) in d.load.curve.iter().enumerate() {
            if !(p.clients >= 0.0 && p.clients.is_finite()) {
                return Err(invalid(
                    field(&format!("load.curve[{j}].clients")),
                    "must be a non-negative number",
                ));
            }
            if last.is_some_and(|l| p.at < l) {
                return Err(invalid(
                    field(&format!("load.curve[{j}].at")),
                    "points must be in time order",
                ));
            }
            last = Some(p.at);
        }
        Ok(())
    }
}

fn check_fault(field: &str, fault: Option<&PodFault>) -> Result<()> {
    if let Some(PodFault::CrashLoop { after, .. }) = fault
        && after.0 < Duration::from_millis(100)
    {
        return Err(invalid(
            format!("{field}.crash_loop.after"),
            "must be at least 100ms",
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 label (namespaces, deployments, containers).
fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "`{name}` is not a valid name (lower-case letters, digits and '-', at most 63)"
            ),
        ))
    }
}

fn check_label(field: &str, key: &str, value: &str) -> Result<()> {
    let valid = |s: &str, allow_empty: bool| {
        (allow_empty && s.is_empty())
            || (s.len() <= 63
                && !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
    };
    let name = key.rsplit('/').next().unwrap_or(key);
    if valid(name, false) && valid(value, true) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{key}: {value}` is not a valid label"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_is_neither_a_builtin_nor_a_file_lists_the_builtins() {
        let err = Scenario::from_name_or_path("nosuch").expect_err("no such scenario");
        let text = err.to_string();
        assert!(text.contains("`nosuch`"), "{text}");
        for name in Scenario::builtin_names() {
            assert!(text.contains(name), "{text} lacks {name}");
        }
        // A file that exists but cannot be read is a read error, with the OS's reason.
        let dir = std::env::temp_dir();
        let err = Scenario::from_name_or_path(dir.to_str().expect("utf-8"))
            .expect_err("a directory is no scenario file");
        assert!(
            matches!(err, Error::ScenarioRead { .. }),
            "{err}: a directory is read, not looked up"
        );
    }

    #[test]
    fn every_builtin_parses() {
        for name in Scenario::builtin_names() {
            let s = Scenario::builtin(name).expect("builtin parses");
            assert_eq!(s.name(), name);
        }
    }

    #[test]
    fn faults_rollouts_and_node_conditions_parse() {
        let s = Scenario::from_yaml(
            r#"
nodes: {count: 2, reserved: {cpu: 100m, memory: 512Mi}}
deployments:
  - {name: a, image: "x:1", fault: {kind: image_pull}}
  - {name: b, image: "x:1", fault: {kind: crash_loop, reason: OOMKilled, after: 3s},
     priority_class: high, priority: 1000}
  - {name: c, image: "x:1", priority_class: system-cluster-critical}
crashes:
  - {at: 1s, deployment: a, action: evict}
  - {at: 2s, deployment: a, action: fail}
  - {at: 3s, deployment: b, reason: OOMKilled}
node_conditions:
  - {at: 5s, node: sim-worker-2, condition: MemoryPressure, status: True}
  - {at: 6s, node: sim-worker-1, condition: Ready, status: Unknown}
rollouts: [{at: 10s, deployment: c, image: "x:2", fault: {kind: crash_loop}}]
"#,
        )
        .expect("parses");
        let d = &s.spec.deployments;
        assert_eq!(d[0].fault, Some(PodFault::ImagePull));
        assert_eq!(
            d[1].fault,
            Some(PodFault::CrashLoop {
                reason: ExitReason::OomKilled,
                after: Dur(Duration::from_secs(3))
            })
        );
        assert_eq!(s.spec.crashes[1].action, CrashAction::Evict);
        assert_eq!(s.spec.crashes[2].reason, ExitReason::OomKilled);
        assert_eq!(s.spec.node_conditions[0].status, ConditionStatus::True);
        assert_eq!(s.spec.node_conditions[1].status, ConditionStatus::Unknown);
        assert_eq!(s.spec.nodes.reserved.memory, Mem(512 << 20));
        assert!(matches!(
            s.spec.rollouts[0].fault,
            Some(PodFault::CrashLoop {
                reason: ExitReason::Error,
                ..
            })
        ));
        let unknown_step_target = Scenario::from_yaml(
            "deployments: [{name: a, image: x}]\nsteps: [{at: 1s, name: one, scale: {b: 2}}]",
        )
        .expect_err("no deployment b");
        assert!(
            unknown_step_target
                .to_string()
                .contains("steps[0].scale: no deployment named `b`")
        );
        let unknown_client = Scenario::from_yaml(
            "deployments: [{name: a, image: x, load: {clients_from: [{deployment: c}]}}]",
        )
        .expect_err("no deployment c");
        assert!(
            unknown_client
                .to_string()
                .contains("clients_from[0].deployment")
        );
        let unknown_node = Scenario::from_yaml(
            "node_conditions: [{at: 1s, node: nope, condition: Ready, status: False}]",
        )
        .expect_err("no such node");
        assert!(unknown_node.to_string().contains("node_conditions[0].node"));
    }

    #[test]
    fn defaults_fill_a_minimal_scenario() {
        let s = Scenario::from_yaml("deployments: [{name: web, image: nginx}]").expect("parses");
        assert_eq!(s.spec.nodes.count, 3);
        assert_eq!(s.spec.deployments[0].namespace, "default");
        assert_eq!(s.spec.deployments[0].replicas, 1);
        assert_eq!(s.spec.hpa_controller.tolerance, 0.1);
        assert!(s.serves_metrics());
    }
}
