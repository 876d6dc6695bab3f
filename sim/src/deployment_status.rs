//! A deployment's status as kube-controller-manager writes it (`calculateStatus`,
//! `syncRolloutStatus`): replicas summed over its ReplicaSets, `updatedReplicas` from the
//! new one, `unavailableReplicas` against the replicas the ReplicaSets are asked for,
//! `observedGeneration`, and the `Available` and `Progressing` conditions with the real
//! reasons and messages (`NewReplicaSetCreated`, `ReplicaSetUpdated`,
//! `NewReplicaSetAvailable`, and `ProgressDeadlineExceeded` once a rollout has made no
//! progress for `progressDeadlineSeconds`).

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use crate::error::Result;
use crate::objects;
use crate::state::Cluster;
use crate::store::ObjKey;

/// `maxSurge` and `maxUnavailable` of the default rolling update (25 % each) for `replicas`:
/// the surge rounds up, the unavailability down, and when both come to zero one pod may be
/// unavailable (`ResolveFenceposts`).
pub(crate) fn fenceposts(replicas: i32) -> (i32, i32) {
    let replicas = replicas.max(0);
    let surge = (replicas + 3) / 4;
    let unavailable = replicas / 4;
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// `progressDeadlineSeconds` of every simulated deployment.
const PROGRESS_DEADLINE_MS: u64 = 600_000;

impl Cluster {
    /// Rewrites the status of the deployments whose ReplicaSets changed (`touched`), of
    /// those whose spec changed since their controller last looked, and, once a second, of
    /// those with a rollout in flight (its deadline may pass).
    pub(crate) fn update_deployment_statuses(&mut self, touched: BTreeSet<ObjKey>) -> Result<()> {
        let now = self.now()?;
        let mut deployments = touched;
        let second = self.every(1000);
        for (key, d) in &self.deployments {
            let status = d.obj.status.as_ref();
            let observed = status.and_then(|s| s.observed_generation);
            let rolling = status.is_some_and(|s| {
                s.replicas.unwrap_or(0) != s.updated_replicas.unwrap_or(0)
                    || s.unavailable_replicas.unwrap_or(0) > 0
            });
            if observed != d.obj.metadata.generation || (second && rolling) {
                deployments.insert(key.clone());
            }
        }
        for key in deployments {
            self.update_deployment_status(&key, &now)?;
        }
        Ok(())
    }

    /// A new ReplicaSet was created: `Progressing` says so at once, as the controller does.
    pub(crate) fn note_new_replicaset(&mut self, key: &ObjKey, name: &str) -> Result<()> {
        let now = self.now()?;
        let Some(d) = self.deployments.get_mut(key) else {
            return Ok(());
        };
        let status = d.obj.status.get_or_insert_with(DeploymentStatus::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        let previous = conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .cloned();
        set_condition(
            conditions,
            previous.as_ref(),
            &now,
            "Progressing",
            true,
            "NewReplicaSetCreated",
            format!("Created new replica set \"{name}\""),
            true,
        );
        self.store.upsert(&mut d.obj)
    }

    fn update_deployment_status(&mut self, key: &ObjKey, now: &Time) -> Result<()> {
        let now_ms = self.now_ms;
        let Some(d) = self.deployments.get(key) else {
            return Ok(());
        };
        let Some(new_key) = d.rs.clone() else {
            return Ok(());
        };
        let want = d.replicas();
        let (mut replicas, mut spec_total, mut ready, mut available, mut terminating) =
            (0, 0, 0, 0, 0);
        let mut updated = 0;
        for k in self.replicasets_of(key) {
            let Some(rs) = self.replicasets.get(&k) else {
                continue;
            };
            let st = rs.obj.status.clone().unwrap_or_default();
            replicas += st.replicas;
            spec_total += rs.spec_replicas();
            ready += st.ready_replicas.unwrap_or(0);
            available += st.available_replicas.unwrap_or(0);
            terminating += st.terminating_replicas.unwrap_or(0);
            if k == new_key {
                updated = st.replicas;
            }
        }
        let old = d.obj.status.clone().unwrap_or_default();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let (_, max_unavailable) = fenceposts(want);
        let available_prev = conditions.iter().find(|c| c.type_ == "Available").cloned();
        if available >= want - max_unavailable.min(want) {
            set_condition(
                &mut conditions,
                available_prev.as_ref(),
                now,
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".to_string(),
                false,
            );
        } else {
            set_condition(
                &mut conditions,
                available_prev.as_ref(),
                now,
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".to_string(),
                false,
            );
        }
        let progressing = conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .cloned();
        let done = replicas == updated
            && progressing
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
        let complete = updated == want && replicas == want && available == want;
        let progress = updated > old.updated_replicas.unwrap_or(0)
            || replicas - updated < old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0)
            || ready > old.ready_replicas.unwrap_or(0)
            || available > old.available_replicas.unwrap_or(0);
        let mut progress_ms = d.progress_ms;
        if !done {
            let name = &new_key.name;
            if complete {
                set_condition(
                    &mut conditions,
                    progressing.as_ref(),
                    now,
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{name}\" has successfully progressed."),
                    false,
                );
            } else if progress {
                progress_ms = now_ms;
                set_condition(
                    &mut conditions,
                    progressing.as_ref(),
                    now,
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{name}\" is progressing."),
                    true,
                );
            } else if now_ms.saturating_sub(progress_ms) > PROGRESS_DEADLINE_MS {
                set_condition(
                    &mut conditions,
                    progressing.as_ref(),
                    now,
                    "Progressing",
                    false,
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{name}\" has timed out progressing."),
                    false,
                );
            }
        }
        // As a real deployment lists them (the order `calculateStatus` sets them in).
        conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        let nz = |v: i32| (v != 0).then_some(v);
        let status = DeploymentStatus {
            replicas: nz(replicas),
            updated_replicas: nz(updated),
            ready_replicas: nz(ready),
            available_replicas: nz(available),
            unavailable_replicas: nz((spec_total - available).max(0)),
            observed_generation: d.obj.metadata.generation,
            terminating_replicas: Some(terminating),
            conditions: Some(conditions),
            collision_count: None,
        };
        let Some(d) = self.deployments.get_mut(key) else {
            return Ok(());
        };
        d.progress_ms = progress_ms;
        if d.obj.status.as_ref() == Some(&status) {
            return Ok(());
        }
        d.obj.status = Some(status);
        objects::touch_managed(
            &mut d.obj.metadata,
            objects::managed(
                "kube-controller-manager",
                "apps/v1",
                now,
                Some("status"),
                json!({"f:status": {"f:availableReplicas": {}, "f:conditions": {}, "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}, "f:unavailableReplicas": {}, "f:updatedReplicas": {}}}),
            ),
        );
        self.store.upsert(&mut d.obj)
    }
}

/// `SetDeploymentCondition`: replaces a condition, keeping its transition time while the
/// status holds and its update time while nothing changes (`touch` moves the update time
/// on even then: `ReplicaSetUpdated` on every bit of progress).
#[allow(
    clippy::too_many_arguments,
    reason = "the fields of the condition, named"
)]
fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    previous: Option<&DeploymentCondition>,
    now: &Time,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    touch: bool,
) {
    let status = if ok { "True" } else { "False" }.to_string();
    let same = previous.is_some_and(|p| {
        p.status == status
            && p.reason.as_deref() == Some(reason)
            && p.message.as_ref() == Some(&message)
    });
    let transition = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    let condition = DeploymentCondition {
        type_: type_.to_string(),
        status,
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: if same && !touch {
            previous.and_then(|p| p.last_update_time.clone())
        } else {
            Some(now.clone())
        },
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_update_fenceposts_round_like_the_controller() {
        assert_eq!(fenceposts(4), (1, 1));
        assert_eq!(fenceposts(10), (3, 2));
        assert_eq!(fenceposts(3), (1, 0));
        assert_eq!(fenceposts(1), (1, 0));
        assert_eq!(fenceposts(0), (0, 1));
    }
}
