//! Pod deletion: graceful (`deletionTimestamp`, the kubelet stops the container, the pod is
//! gone after its termination delay) or immediate (grace 0, never scheduled, already
//! failed), and the removal that frees its node and tells its ReplicaSet.

use k8s_openapi::api::core::v1::Pod;
use tracing::debug;

use crate::error::Result;
use crate::objects;
use crate::pod::{ContainerView, Stage};
use crate::state::{Cluster, TICK_MS, not_found};
use crate::store::ObjKey;

/// Longest termination grace period honoured (a year).
pub(crate) const MAX_GRACE_SECONDS: i64 = 365 * 24 * 3600;

impl Cluster {
    /// Deletes a pod: gracefully (deletionTimestamp, then gone after its termination delay)
    /// unless `grace_seconds` is 0 or the pod never ran or already terminated. Returns the
    /// pod as it is after the call.
    pub(crate) fn delete_pod(&mut self, key: &ObjKey, grace_seconds: Option<i64>) -> Result<Pod> {
        let now_ms = self.now_ms;
        let now = self.now()?;
        let Some(p) = self.pods.get(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        let default_grace = p
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        let grace = grace_seconds
            .unwrap_or(default_grace)
            .clamp(0, MAX_GRACE_SECONDS);
        let immediate =
            grace == 0 || matches!(p.stage, Stage::Unscheduled | Stage::Failed) || p.node.is_none();
        if immediate {
            return self.remove_pod(key);
        }
        if p.terminating() {
            return Ok(p.pod.clone());
        }
        let termination = self
            .deployments
            .get(&p.deployment)
            .map(|d| d.timing.termination_ms)
            .unwrap_or(1000)
            .min(u64::try_from(grace).unwrap_or(30) * 1000);
        let deletion_at =
            objects::time(self.wall_ms(now_ms + u64::try_from(grace).unwrap_or(30) * 1000))?;
        let Some(p) = self.pods.get_mut(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        p.pod.metadata.deletion_timestamp = Some(deletion_at);
        p.pod.metadata.deletion_grace_period_seconds = Some(grace);
        p.stage = Stage::Terminating;
        p.crash_at_ms = None;
        let (events, reference, container, host) = (
            p.events,
            p.container_reference(),
            p.container_name(),
            p.node_name().map(str::to_string),
        );
        let _ = now;
        let due = now_ms + termination.max(TICK_MS).div_ceil(TICK_MS) * TICK_MS;
        self.set_due(key, Some(due));
        self.write_pod(key)?;
        if events {
            self.record_event(
                reference,
                "Normal",
                "Killing",
                format!("Stopping container {container}"),
                "kubelet",
                host.as_deref(),
            )?;
        }
        self.pods
            .get(key)
            .map(|p| p.pod.clone())
            .ok_or_else(|| not_found("pod", &key.namespace, &key.name))
    }

    pub(crate) fn finish_termination(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        if let Some(started) = p.container_started_ms() {
            p.container = Some(ContainerView::Terminated {
                exit_code: 0,
                reason: "Completed".to_string(),
                message: None,
                started_ms: started,
                finished_ms: now,
            });
        }
        if p.ready {
            p.ready = false;
            p.ready_changed_ms = now;
        }
        self.write_pod(key)?;
        self.remove_pod(key).map(|_| ())
    }

    pub(crate) fn remove_pod(&mut self, key: &ObjKey) -> Result<Pod> {
        self.release_node(key);
        self.set_due(key, None);
        let Some(mut p) = self.pods.remove(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        self.pod_metrics.remove(key);
        if let Some(rs) = self.replicasets.get_mut(&p.rs) {
            rs.pods.remove(key);
        }
        self.dirty_rs.insert(p.rs.clone());
        if p.pod.metadata.deletion_timestamp.is_none() {
            p.pod.metadata.deletion_timestamp = Some(self.now()?);
            p.pod.metadata.deletion_grace_period_seconds = Some(0);
        }
        self.store.delete(&mut p.pod)?;
        debug!(pod = %key, "pod deleted");
        Ok(p.pod)
    }
}
