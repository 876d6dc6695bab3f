//! The public face: start a simulated cluster on a listener, drive and inspect it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus;
use k8s_openapi::api::core::v1::{Event, Pod};
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::error::{Error, Result};
use crate::faults::Fault;
use crate::scenario::{ExitReason, Scenario};
use crate::server;
use crate::shared::{RequestRecord, Shared};
use crate::state::Cluster;
use crate::store::ObjKey;

/// How simulation time moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockMode {
    /// Time follows the wall clock, multiplied by `speed` (1.0 = real time).
    RealTime {
        /// Simulated seconds per real second.
        speed: f64,
    },
    /// Time moves only through [`SimHandle::advance`]: deterministic for a seed.
    Manual,
}

/// Starts simulated clusters.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Builds the scenario's cluster and serves its API on `listener` (plain HTTP).
    ///
    /// # Errors
    /// [`Error::Io`] when the listener has no local address; [`Error::Encode`] or
    /// [`Error::Time`] if the initial objects cannot be built.
    pub async fn start(
        scenario: Scenario,
        listener: TcpListener,
        clock: ClockMode,
    ) -> Result<RunningSim> {
        let mut addr = listener.local_addr().map_err(Error::Io)?;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
            .unwrap_or(0);
        let cluster = Cluster::new(&scenario, epoch_ms)?;
        info!(
            scenario = scenario.name(),
            seed = scenario.seed(),
            %addr,
            objects = %cluster.summary(),
            "simulated cluster started"
        );
        let shared = Arc::new(Shared::new(cluster, addr));
        shared
            .tracker
            .spawn(server::serve(listener, shared.clone()));
        let manual = match clock {
            ClockMode::Manual => true,
            ClockMode::RealTime { speed } => {
                shared
                    .tracker
                    .spawn(tick_real_time(shared.clone(), speed.max(0.0)));
                false
            }
        };
        Ok(RunningSim {
            handle: SimHandle { shared, manual },
        })
    }
}

/// Advances the clock with the wall clock, ten times a second.
async fn tick_real_time(shared: Arc<Shared>, speed: f64) {
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = Instant::now();
    let mut carry = 0.0f64;
    let mut next_summary = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        let now = Instant::now();
        let sim_ms = now.duration_since(last).as_secs_f64() * 1000.0 * speed + carry;
        last = now;
        let whole = sim_ms.floor();
        carry = sim_ms - whole;
        if let Err(e) = advance(&shared, whole as u64) {
            error!(cause = %e, "simulation step failed");
        }
        if now >= next_summary {
            next_summary = now + Duration::from_secs(30);
            let summary = shared.lock().summary();
            info!(objects = %summary, "simulated cluster");
        }
    }
}

/// Moves the clock by `ms`, one tick per lock so requests interleave: at 100,000 pods a
/// tick is tens of milliseconds of work, and a second's worth of ticks under one lock kept
/// list requests waiting for seconds.
fn advance(shared: &Shared, ms: u64) -> Result<()> {
    let target = shared.with(|c| {
        c.clock_ms += ms;
        c.clock_ms
    });
    loop {
        let done = shared.with(|c| {
            let step = target.min(c.next_tick_ms());
            c.advance_to(step).map(|()| c.next_tick_ms() > target)
        })?;
        if done {
            return Ok(());
        }
    }
}

/// A running simulated cluster. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningSim {
    handle: SimHandle,
}

impl RunningSim {
    /// The address the API is served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.addr
    }

    /// `http://127.0.0.1:PORT`, for `kube::Config::new`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr())
    }

    /// A kubeconfig whose cluster, user and context are named `kube-sim`, pointing at
    /// [`base_url`](Self::base_url) with namespace `default`.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: kube-sim
  cluster:
    server: {}
contexts:
- name: kube-sim
  context:
    cluster: kube-sim
    user: kube-sim
    namespace: default
current-context: kube-sim
preferences: {{}}
users:
- name: kube-sim
  user: {{}}
",
            self.base_url()
        )
    }

    /// A handle to drive and inspect the cluster.
    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }

    /// Stops serving: open watches end, connections close (bounded by 5 seconds).
    pub async fn shutdown(self) {
        let shared = self.handle.shared.clone();
        shared.shutdown.cancel();
        shared.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), shared.tracker.wait())
            .await
            .is_err()
        {
            error!("simulated cluster did not stop within 5s");
        }
        info!("simulated cluster stopped");
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.handle.shared.shutdown.cancel();
    }
}

/// A cheap, cloneable handle to a running simulated cluster.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    manual: bool,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.shared.addr)
            .field("manual", &self.manual)
            .finish()
    }
}

impl SimHandle {
    /// Whether the clock is manual.
    pub fn is_manual(&self) -> bool {
        self.manual
    }

    /// Moves simulation time forward by `by` (in 100 ms ticks; remainders carry over to
    /// the next call). Deterministic in [`ClockMode::Manual`]; in real-time mode it jumps
    /// ahead of the wall clock.
    ///
    /// # Errors
    /// [`Error::Encode`] or [`Error::Time`] if an object cannot be written.
    pub fn advance(&self, by: Duration) -> Result<()> {
        advance(
            &self.shared,
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX / 4),
        )
    }

    /// Simulation time since start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.shared.lock().now_ms)
    }

    /// The store's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().store.rv()
    }

    /// Deletes a pod gracefully, as `kubectl delete pod` does; its ReplicaSet replaces it.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such pod.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<()> {
        self.shared
            .with(|c| c.delete_pod(&ObjKey::new(namespace, name), None))
            .map(|_| ())
    }

    /// Deletes an HPA, as `kubectl delete hpa` does; its target keeps its replicas.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such HPA.
    pub fn delete_hpa(&self, namespace: &str, name: &str) -> Result<()> {
        self.shared.with(|c| c.delete_hpa(namespace, name))
    }

    /// Deletes a node, as `kubectl delete node` does; the pods bound to it are deleted too
    /// (the pod garbage collector) and replaced on the other nodes.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such node.
    pub fn delete_node(&self, name: &str) -> Result<()> {
        self.shared.with(|c| c.delete_node(name))
    }

    /// Deletes a namespace: an empty one goes at once (returns `true`); one still holding
    /// workloads turns `Terminating` and stays (returns `false`; the simulator has no
    /// namespace controller to empty it).
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such namespace.
    pub fn delete_namespace(&self, name: &str) -> Result<bool> {
        self.shared.with(|c| c.delete_namespace(name))
    }

    /// Crashes a pod's container now and `restarts - 1` more times after it restarts.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such pod.
    pub fn crash_pod(&self, namespace: &str, name: &str, restarts: u32) -> Result<()> {
        self.shared.with(|c| {
            c.crash_pod(
                &ObjKey::new(namespace, name),
                restarts.max(1),
                ExitReason::Error,
            )
        })
    }

    /// Makes a pod's readiness probe fail (`false`) or pass again (`true`): its Ready
    /// condition changes at once, as with a flapping probe. For freshness measurements.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such pod.
    pub fn set_pod_ready(&self, namespace: &str, name: &str, ready: bool) -> Result<()> {
        self.shared
            .with(|c| c.set_pod_ready(&ObjKey::new(namespace, name), ready))
    }

    /// Fails a pod (phase `Failed`, reason `Evicted`); its ReplicaSet replaces it.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such pod.
    pub fn fail_pod(&self, namespace: &str, name: &str) -> Result<()> {
        self.shared
            .with(|c| c.fail_pod(&ObjKey::new(namespace, name)))
    }

    /// Sets a deployment's `spec.replicas`, as `kubectl scale` does.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such deployment.
    pub fn scale_deployment(&self, namespace: &str, name: &str, replicas: u32) -> Result<()> {
        let replicas = i32::try_from(replicas).unwrap_or(i32::MAX);
        self.shared
            .with(|c| c.scale_deployment(namespace, name, replicas, "kube-sim"))
            .map(|_| ())
    }

    /// Replaces a deployment's load curve with a constant number of clients from now on.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such deployment.
    pub fn set_load(&self, namespace: &str, deployment: &str, clients: f64) -> Result<()> {
        self.shared
            .with(|c| c.set_load(namespace, deployment, clients))
    }

    /// Injects an API fault now.
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.with(|c| c.inject_fault(fault));
    }

    /// Every pod, as the API serves it.
    pub fn pods(&self) -> Vec<Pod> {
        self.shared.lock().pod_list()
    }

    /// A deployment's pods in phase Running that are not being deleted.
    pub fn running_pods(&self, namespace: &str, deployment: &str) -> Vec<Pod> {
        self.shared.lock().running_pods(namespace, deployment)
    }

    /// A deployment, as the API serves it.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        self.shared.lock().deployment(namespace, name)
    }

    /// An HPA's status.
    pub fn hpa_status(&self, namespace: &str, name: &str) -> Option<HorizontalPodAutoscalerStatus> {
        self.shared.lock().hpa_status(namespace, name)
    }

    /// The current `SuccessfulRescale` events, oldest first.
    pub fn scaling_events(&self) -> Vec<Event> {
        self.events_with_reason("SuccessfulRescale")
    }

    /// The current events with a reason, oldest first.
    pub fn events_with_reason(&self, reason: &str) -> Vec<Event> {
        self.shared.lock().events_with_reason(reason)
    }

    /// The most recent requests the API served (up to 2000), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests()
    }
}
