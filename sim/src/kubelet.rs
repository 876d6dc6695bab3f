//! The kubelet: admits a bound pod (`ContainerCreating`), starts its container, marks it
//! Ready after its readiness delay, crashes and restarts it (at once the first time, then
//! with back-off: 10 s doubling to 5 min, `CrashLoopBackOff`), fails it (`Evicted`) and
//! writes the pod's status with the `managedFields` a real kubelet leaves.

use rand::Rng;
use serde_json::json;
use tracing::debug;

use crate::error::Result;
use crate::objects;
use crate::pod::{ContainerView, PodState, Stage};
use crate::scenario::{ExitReason, PodFault};
use crate::state::{Cluster, TICK_MS, not_found};
use crate::store::ObjKey;

/// Delay from binding to the kubelet's first status update.
pub(crate) const KUBELET_DELAY_MS: u64 = 300;

/// How long a crash-looping container runs before it crashes again.
pub(crate) const CRASH_AFTER_MS: u64 = 3_000;

/// How long the kubelet takes to notice a crash and restart the container.
pub(crate) const RESTART_DELAY_MS: u64 = 1_000;

impl Cluster {
    /// Renders a pod's status and writes it to the store.
    pub(crate) fn write_pod(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now()?;
        let Some(p) = self.pods.get(key) else {
            return Ok(());
        };
        let status = p.render(self.epoch_ms)?;
        let kubelet = p.started_ms.is_some();
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        p.pod.status = Some(status);
        if kubelet {
            objects::touch_managed(
                &mut p.pod.metadata,
                objects::managed(
                    "kubelet",
                    "v1",
                    &now,
                    Some("status"),
                    json!({"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:hostIP": {}, "f:phase": {}, "f:podIP": {}, "f:startTime": {}}}),
                ),
            );
        }
        self.store.upsert(&mut p.pod)?;
        self.dirty_rs.insert(p.rs.clone());
        Ok(())
    }

    pub(crate) fn set_due(&mut self, key: &ObjKey, due: Option<u64>) {
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        if let Some(old) = p.due_ms.take() {
            self.agenda.remove(&(old, key.clone()));
        }
        p.due_ms = due;
        if let Some(d) = due {
            self.agenda.insert((d, key.clone()));
        }
    }

    pub(crate) fn jitter(&mut self, ms: u64) -> u64 {
        let j = self.cfg.jitter;
        let f: f64 = if j > 0.0 {
            self.rng.random_range(1.0 - j..1.0 + j)
        } else {
            1.0
        };
        let ms = (ms as f64 * f) as u64;
        ms.div_ceil(TICK_MS).max(1) * TICK_MS
    }

    /// The kubelet admits the pod: start time, sandbox, ContainerCreating.
    pub(crate) fn kubelet_start(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get(key) else {
            return Ok(());
        };
        let Some(index) = p.node else { return Ok(()) };
        let ip = {
            let n = &mut self.nodes[index];
            let ip = format!("10.244.{}.{}", n.index, n.next_ip);
            n.next_ip = if n.next_ip >= 254 { 2 } else { n.next_ip + 1 };
            ip
        };
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        p.stage = Stage::Creating;
        p.started_ms = Some(now);
        p.sandbox_ms = Some(now);
        p.pod_ip = Some(ip);
        p.ready_changed_ms = now;
        p.container = Some(ContainerView::Waiting {
            reason: "ContainerCreating".to_string(),
            message: None,
        });
        let (events, reference, image, host) = (
            p.events,
            p.container_reference(),
            p.image(),
            p.node_name().map(str::to_string),
        );
        if events {
            self.record_event(
                reference,
                "Normal",
                "Pulling",
                format!("Pulling image \"{image}\""),
                "kubelet",
                host.as_deref(),
            )?;
        }
        Ok(())
    }

    /// A (new) container starts running.
    pub(crate) fn container_start(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let container_id = format!("containerd://{}", objects::hex(&mut self.rng, 64));
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        let first = p.container_id.is_none();
        if !first {
            p.restarts += 1;
        }
        p.stage = Stage::Running;
        p.phase = "Running";
        p.container = Some(ContainerView::Running { started_ms: now });
        p.container_id = Some(container_id);
        p.cpu_seconds = 0.0;
        let (events, reference, image, container, host) = (
            p.events,
            p.container_reference(),
            p.image(),
            p.container_name(),
            p.node_name().map(str::to_string),
        );
        if events {
            let host = host.as_deref();
            if first {
                let pull_ms = now.saturating_sub(p.started_ms.unwrap_or(now));
                self.record_event(
                    reference.clone(),
                    "Normal",
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {} ({} including waiting). Image size: 73519512 bytes.",
                        crate::units::format_go_duration(std::time::Duration::from_millis(pull_ms)),
                        crate::units::format_go_duration(std::time::Duration::from_millis(pull_ms)),
                    ),
                    "kubelet",
                    host,
                )?;
            } else {
                self.record_event(
                    reference.clone(),
                    "Normal",
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                    "kubelet",
                    host,
                )?;
            }
            self.record_event(
                reference.clone(),
                "Normal",
                "Created",
                format!("Created container: {container}"),
                "kubelet",
                host,
            )?;
            self.record_event(
                reference,
                "Normal",
                "Started",
                format!("Started container {container}"),
                "kubelet",
                host,
            )?;
        }
        Ok(())
    }

    /// Schedules readiness and the next crash of a running container.
    pub(crate) fn plan_running(&mut self, key: &ObjKey) {
        let now = self.now_ms;
        let readiness = self
            .pods
            .get(key)
            .and_then(|p| self.deployments.get(&p.deployment))
            .map(|d| d.timing.readiness_ms)
            .unwrap_or(0);
        let jittered = if readiness > 0 {
            self.jitter(readiness)
        } else {
            0
        };
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        if p.stage != Stage::Running {
            return;
        }
        if !p.ready && p.ready_at_ms.is_none() {
            p.ready_at_ms = Some(now + jittered);
        }
        if p.crash_at_ms.is_none() {
            let started = p.container_started_ms().unwrap_or(now);
            if let Some(PodFault::CrashLoop { after, .. }) = p.fault {
                p.crash_at_ms = Some(started + after.ms());
            } else if p.crashes_left > 0 {
                p.crash_at_ms = Some(started + CRASH_AFTER_MS);
            }
        }
        let mut due = p.crash_at_ms;
        if !p.ready {
            due = match (due, p.ready_at_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let due = due.map(|d| d.max(now + TICK_MS).div_ceil(TICK_MS) * TICK_MS);
        self.set_due(key, due);
    }

    pub(crate) fn become_ready(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        if p.stage != Stage::Running || p.ready || p.probe_failing {
            return Ok(());
        }
        p.ready = true;
        p.ready_changed_ms = now;
        p.ready_at_ms = None;
        // A container that keeps crashing keeps its back-off (the kubelet resets it only
        // after the container ran for a while).
        if p.crashes_left == 0 && !matches!(p.fault, Some(PodFault::CrashLoop { .. })) {
            p.consecutive_crashes = 0;
        }
        Ok(())
    }

    /// Makes a pod's readiness probe fail (`ready = false`) or pass again, as a flapping
    /// probe does: Ready changes at once and is written to the store.
    pub(crate) fn set_pod_ready(&mut self, key: &ObjKey, ready: bool) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get_mut(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        p.probe_failing = !ready;
        if p.stage != Stage::Running || p.ready == ready {
            return Ok(());
        }
        p.ready = ready;
        p.ready_changed_ms = now;
        p.ready_at_ms = None;
        self.write_pod(key)
    }

    /// Flips the readiness of `n` random Running pods (in `namespace`, if given).
    pub(crate) fn flip_readiness(&mut self, n: usize, namespace: Option<&str>) -> Result<()> {
        use rand::seq::IndexedRandom;
        if n == 0 {
            return Ok(());
        }
        // Borrowed keys: this runs every tick, and cloning every candidate's key (two
        // strings each) was a third of the tick at 100,000 pods.
        let in_scope: Box<dyn Iterator<Item = (&ObjKey, &PodState)>> = match namespace {
            // Keys of namespace `ns` sort between (ns, "") and (ns + NUL, ""): a range with
            // both ends, so no key is compared while walking it.
            Some(ns) => Box::new(
                self.pods
                    .range(ObjKey::new(ns, "")..ObjKey::new(&format!("{ns}\0"), "")),
            ),
            None => Box::new(self.pods.iter()),
        };
        let candidates: Vec<&ObjKey> = in_scope
            .filter(|(_, p)| p.stage == Stage::Running && !p.terminating())
            .map(|(k, _)| k)
            .collect();
        let chosen: Vec<ObjKey> = candidates
            .choose_multiple(&mut self.rng, n)
            .map(|k| (*k).clone())
            .collect();
        for key in chosen {
            let ready = self.pods.get(&key).is_some_and(|p| p.ready);
            self.set_pod_ready(&key, !ready)?;
        }
        Ok(())
    }

    /// Makes a running container crash now and `restarts - 1` more times after restarts,
    /// terminating with `reason`.
    pub(crate) fn crash_pod(
        &mut self,
        key: &ObjKey,
        restarts: u32,
        reason: ExitReason,
    ) -> Result<()> {
        let Some(p) = self.pods.get_mut(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        p.crashes_left = restarts;
        p.crash_reason = reason;
        if p.stage == Stage::Running {
            self.crash_now(key)?;
        }
        Ok(())
    }

    pub(crate) fn crash_now(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        let started = p.container_started_ms().unwrap_or(now);
        let reason = match p.fault {
            Some(PodFault::CrashLoop { reason, .. }) => reason,
            _ => p.crash_reason,
        };
        let (reason, exit_code) = reason.as_terminated();
        let terminated = ContainerView::Terminated {
            exit_code,
            reason: reason.to_string(),
            message: None,
            started_ms: started,
            finished_ms: now,
        };
        p.container = Some(terminated.clone());
        p.last_terminated = Some(terminated);
        p.stage = Stage::Crashed;
        p.crashes_left = p.crashes_left.saturating_sub(1);
        p.consecutive_crashes += 1;
        p.crash_at_ms = None;
        p.ready_at_ms = None;
        p.last_scrape = None;
        if p.ready {
            p.ready = false;
            p.ready_changed_ms = now;
        }
        debug!(pod = %key, restarts = p.restarts, "container crashed");
        let due = now + RESTART_DELAY_MS;
        self.set_due(key, Some(due));
        self.pod_metrics.remove(key);
        self.write_pod(key)
    }

    /// The kubelet evicts the pod under memory pressure: phase `Failed`, reason `Evicted`,
    /// the `DisruptionTarget` condition, its container gone (`ContainerStatusUnknown`, as a
    /// 1.22+ kubelet reports it, so `kubectl get pods` shows that); it stays in the API and
    /// its ReplicaSet replaces it.
    pub(crate) fn fail_pod(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get_mut(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        if matches!(p.stage, Stage::Failed | Stage::Terminating) {
            return Ok(());
        }
        let started = p.container_started_ms().unwrap_or(now);
        if p.container.is_some() {
            p.container = Some(ContainerView::Terminated {
                exit_code: 137,
                reason: "ContainerStatusUnknown".to_string(),
                message: Some(
                    "The container could not be located when the pod was terminated".to_string(),
                ),
                started_ms: started,
                finished_ms: now,
            });
        }
        let used_kib = (p.memory_bytes / 1024).max(1);
        let request = match p.memory_request_bytes {
            0 => "0".to_string(),
            bytes => crate::units::format_memory_bytes(bytes),
        };
        let message = format!(
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Container {} was using {used_kib}Ki, request is {request}, has larger consumption of memory. ",
            p.container_name()
        );
        p.stage = Stage::Failed;
        p.phase = "Failed";
        p.failure = Some(("Evicted", message.clone()));
        p.failed_ms = Some(now);
        if p.ready {
            p.ready = false;
            p.ready_changed_ms = now;
        }
        let (events, reference, host) =
            (p.events, p.reference(), p.node_name().map(str::to_string));
        self.release_node(key);
        self.set_due(key, None);
        self.pod_metrics.remove(key);
        self.write_pod(key)?;
        if events {
            self.record_event(
                reference,
                "Warning",
                "Evicted",
                message,
                "kubelet",
                host.as_deref(),
            )?;
        }
        Ok(())
    }

    /// After a second crash in a row the kubelet waits before restarting: 10 s doubling
    /// to 5 min, the container `Waiting` in `CrashLoopBackOff`, a `BackOff` event.
    pub(crate) fn back_off(&mut self, key: &ObjKey) -> Result<()> {
        let Some(p) = self.pods.get(key) else {
            return Ok(());
        };
        let n = p.consecutive_crashes;
        let backoff_s = (10u64 << n.saturating_sub(2).min(5)).min(300);
        let container = p.container_name();
        let pod_name = key.name.clone();
        let uid = p.pod.metadata.uid.clone().unwrap_or_default();
        let events = p.events;
        let reference = p.container_reference();
        let host = p.node_name().map(str::to_string);
        if let Some(p) = self.pods.get_mut(key) {
            p.stage = Stage::BackOff;
            p.container = Some(ContainerView::Waiting {
                reason: "CrashLoopBackOff".to_string(),
                message: Some(format!(
                    "back-off {backoff_s}s restarting failed container={container} pod={pod_name}_{}({uid})",
                    key.namespace
                )),
            });
        }
        let due = self.now_ms + backoff_s * 1000;
        self.set_due(key, Some(due));
        if events {
            self.record_event(
                reference,
                "Warning",
                "BackOff",
                format!(
                    "Back-off restarting failed container {container} in pod {pod_name}_{}({uid})",
                    key.namespace
                ),
                "kubelet",
                host.as_deref(),
            )?;
        }
        Ok(())
    }
}
