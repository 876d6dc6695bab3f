//! The ReplicaSet controller: keeps each ReplicaSet at `spec.replicas` active pods (creating
//! them with the real naming and owner references, deleting the lowest-ranked first) and
//! writes ReplicaSet status.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ReplicaSetStatus;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use crate::error::Result;
use crate::objects;
use crate::pod::{PodState, Stage};
use crate::scenario::ExitReason;
use crate::scheduler::SCHEDULE_DELAY_MS;
use crate::state::{Cluster, ReplicaSetState, owner, reference};
use crate::store::ObjKey;

/// The ReplicaSet controller deletes the lowest-ranked pods first: unscheduled, pending,
/// not ready, ready for less time, more restarts (newer pods break ties).
type DeletionRank = (bool, u8, bool, u64, i32);

impl Cluster {
    /// Creates or deletes pods so each ReplicaSet has `spec.replicas` active pods.
    ///
    /// Only ReplicaSets whose spec or pods changed since its last run are looked at (those
    /// marked since, and those marked now and not yet through
    /// [`Cluster::update_replicaset_statuses`]): a pass over every ReplicaSet's pods on every
    /// tick was most of the tick at 100,000 pods.
    pub(crate) fn replicaset_controller(&mut self) -> Result<()> {
        let mut keys = std::mem::take(&mut self.rs_to_sync);
        keys.extend(self.dirty_rs.iter().cloned());
        for key in keys {
            let Some(rs) = self.replicasets.get(&key) else {
                continue;
            };
            let want = rs.obj.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let have = i32::try_from(self.owned_pods(rs).filter(|(_, p)| p.active()).count())
                .unwrap_or(i32::MAX);
            if have < want {
                for _ in have..want {
                    self.create_pod(&key)?;
                }
            } else if have > want {
                let mut ranked: Vec<(ObjKey, DeletionRank)> = self
                    .owned_pods(rs)
                    .filter(|(_, p)| p.active())
                    .map(|(k, p)| {
                        let phase_rank = match p.phase {
                            "Pending" => 0,
                            "Running" => 2,
                            _ => 1,
                        };
                        // Real ranking: unscheduled, pending, not ready, ready for less
                        // time, more restarts, newer first.
                        let rank = (
                            p.node.is_some(),
                            phase_rank,
                            p.pod_ready(),
                            u64::MAX - p.ready_changed_ms,
                            -p.restarts,
                        );
                        (k.clone(), rank)
                    })
                    .collect();
                ranked.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
                for (victim, _) in ranked
                    .into_iter()
                    .take(usize::try_from(have - want).unwrap_or(0))
                {
                    self.delete_pod(&victim, None)?;
                    let Some(rs) = self.replicasets.get(&key) else {
                        continue;
                    };
                    self.record_event(
                        reference("apps/v1", "ReplicaSet", &rs.obj.metadata),
                        "Normal",
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", victim.name),
                        "replicaset-controller",
                        None,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The pods of a ReplicaSet that exist, in key order. Its pod keys and the cluster's
    /// pods are both sorted by key, so one walk over the range they span finds them all:
    /// this runs for every ReplicaSet on every tick, and a map lookup per pod (a dozen
    /// string comparisons each) made it most of the tick at 100,000 pods.
    fn owned_pods<'a>(
        &'a self,
        rs: &'a ReplicaSetState,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a PodState)> + 'a {
        let span = match (rs.pods.first(), rs.pods.last()) {
            (Some(first), Some(last)) => Some(self.pods.range(first..=last)),
            _ => None,
        };
        let mut pods = span.into_iter().flatten().peekable();
        rs.pods.iter().filter_map(move |key| {
            while pods.next_if(|(k, _)| *k < key).is_some() {}
            pods.next_if(|(k, _)| *k == key)
        })
    }

    fn create_pod(&mut self, rs_key: &ObjKey) -> Result<()> {
        let now = self.now()?;
        let Some(rs) = self.replicasets.get(rs_key) else {
            return Ok(());
        };
        let Some(d) = self.deployments.get(&rs.deployment) else {
            return Ok(());
        };
        let template = &rs.template;
        let dkey = rs.deployment.clone();
        let name = loop {
            let candidate = format!("{}-{}", rs_key.name, objects::name_suffix(&mut self.rng, 5));
            if !self
                .pods
                .contains_key(&ObjKey::new(&rs_key.namespace, &candidate))
            {
                break candidate;
            }
        };
        let mut labels = template.labels.clone();
        labels.insert("pod-template-hash".to_string(), rs.hash.clone());
        let uid = objects::uid(&mut self.rng, self.uid_salt);
        let instant = d.instant;
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                generate_name: Some(format!("{}-", rs_key.name)),
                namespace: Some(rs_key.namespace.clone()),
                uid: Some(uid),
                generation: Some(1),
                creation_timestamp: Some(now.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner("apps/v1", "ReplicaSet", &rs.obj.metadata)]),
                managed_fields: Some(vec![objects::managed(
                    "kube-controller-manager",
                    "v1",
                    &now,
                    None,
                    json!({"f:metadata": {"f:generateName": {}, "f:labels": {}, "f:ownerReferences": {}}, "f:spec": {"f:containers": {}, "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:terminationGracePeriodSeconds": {}}}),
                )]),
                ..ObjectMeta::default()
            },
            spec: Some(template.pod_spec()),
            status: None,
        };
        let rs_ref = reference("apps/v1", "ReplicaSet", &rs.obj.metadata);
        let state = PodState {
            pod,
            deployment: dkey,
            rs: rs_key.clone(),
            stage: Stage::Unscheduled,
            due_ms: None,
            node: None,
            ready: false,
            ready_changed_ms: self.now_ms,
            ready_at_ms: None,
            crash_at_ms: None,
            crashes_left: 0,
            consecutive_crashes: 0,
            scheduled_ms: None,
            unschedulable: None,
            started_ms: None,
            sandbox_ms: None,
            container: None,
            last_terminated: None,
            restarts: 0,
            container_id: None,
            image_id: objects::image_digest(&template.image),
            pod_ip: None,
            phase: "Pending",
            failure: None,
            failed_ms: None,
            qos: template.qos_class(),
            cpu_request_millis: template.cpu_request_millis(),
            memory_request_bytes: template.memory_request_bytes(),
            cpu_limit_millis: template.limits.cpu.map(|c| c.0),
            fault: template.fault,
            crash_reason: ExitReason::Error,
            pull_failures: 0,
            node_not_ready: false,
            cpu_seconds: 0.0,
            cpu_rate_millis: 0.0,
            memory_bytes: 0,
            last_scrape: None,
            on_node: false,
            probe_failing: false,
            events: self.cfg.pod_events && !instant,
        };
        let key = ObjKey::new(&rs_key.namespace, &name);
        self.pods.insert(key.clone(), state);
        if let Some(rs) = self.replicasets.get_mut(rs_key) {
            rs.pods.insert(key.clone());
        }
        self.dirty_rs.insert(rs_key.clone());
        if instant {
            if self.schedule(&key)? {
                self.kubelet_start(&key)?;
                self.container_start(&key)?;
                self.become_ready(&key)?;
            }
            self.write_pod(&key)?;
            return Ok(());
        }
        self.write_pod(&key)?;
        self.record_event(
            rs_ref,
            "Normal",
            "SuccessfulCreate",
            format!("Created pod: {name}"),
            "replicaset-controller",
            None,
        )?;
        let due = self.now_ms + SCHEDULE_DELAY_MS;
        self.set_due(&key, Some(due));
        Ok(())
    }

    /// Rewrites the status of every ReplicaSet whose pods changed; returns their deployments.
    pub(crate) fn update_replicaset_statuses(&mut self) -> Result<BTreeSet<ObjKey>> {
        let dirty = std::mem::take(&mut self.dirty_rs);
        self.rs_to_sync.extend(dirty.iter().cloned());
        let now = self.now()?;
        let mut deployments = BTreeSet::new();
        for key in dirty {
            let Some(rs) = self.replicasets.get(&key) else {
                continue;
            };
            let (mut replicas, mut ready, mut terminating) = (0, 0, 0);
            for p in rs.pods.iter().filter_map(|k| self.pods.get(k)) {
                if p.terminating() {
                    terminating += 1;
                } else if p.active() {
                    replicas += 1;
                    if p.pod_ready() {
                        ready += 1;
                    }
                }
            }
            let nz = |v: i32| (v != 0).then_some(v);
            let status = ReplicaSetStatus {
                replicas,
                fully_labeled_replicas: nz(replicas),
                ready_replicas: nz(ready),
                available_replicas: nz(ready),
                observed_generation: rs.obj.metadata.generation,
                terminating_replicas: Some(terminating),
                conditions: None,
            };
            deployments.insert(rs.deployment.clone());
            if rs.obj.status.as_ref() != Some(&status)
                && let Some(rs) = self.replicasets.get_mut(&key)
            {
                rs.obj.status = Some(status);
                objects::touch_managed(
                    &mut rs.obj.metadata,
                    objects::managed(
                        "kube-controller-manager",
                        "apps/v1",
                        &now,
                        Some("status"),
                        json!({"f:status": {"f:availableReplicas": {}, "f:fullyLabeledReplicas": {}, "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}}}),
                    ),
                );
                self.store.upsert(&mut rs.obj)?;
            }
        }
        Ok(deployments)
    }
}
