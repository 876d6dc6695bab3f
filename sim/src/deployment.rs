//! The deployment controller: creates a deployment's ReplicaSet, resizes it when
//! `spec.replicas` changes (the scale subresource, the HPA), and writes the deployment's
//! status and conditions as kube-controller-manager does.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, DeploymentStrategy,
    ReplicaSet, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use crate::error::Result;
use crate::load::LoadModel;
use crate::objects::{self, Template};
use crate::state::{
    Cluster, DeploymentState, ReplicaSetState, Timing, not_found, owner, reference,
};
use crate::store::ObjKey;

impl Cluster {
    /// Adds a deployment (its ReplicaSet follows on the next controller pass).
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per kind of workload"
    )]
    pub(crate) fn add_deployment(
        &mut self,
        namespace: &str,
        name: &str,
        replicas: u32,
        template: Template,
        timing: Timing,
        load: LoadModel,
        instant: bool,
    ) -> Result<()> {
        let now = self.now()?;
        let hash = objects::pod_template_hash(&format!("{namespace}/{name}/{}", template.image));
        let uid = self.new_uid();
        let mut obj = Deployment {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: Some(uid),
                generation: Some(1),
                creation_timestamp: Some(now.clone()),
                labels: Some(template.labels.clone()),
                annotations: Some(BTreeMap::from([(
                    "deployment.kubernetes.io/revision".to_string(),
                    "1".to_string(),
                )])),
                managed_fields: Some(vec![objects::managed(
                    "kubectl-create",
                    "apps/v1",
                    &now,
                    None,
                    json!({"f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {}}}),
                )]),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
                selector: LabelSelector {
                    match_labels: Some(template.labels.clone()),
                    match_expressions: None,
                },
                template: template.pod_template(None),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".to_string()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::String("25%".to_string())),
                        max_unavailable: Some(IntOrString::String("25%".to_string())),
                    }),
                }),
                revision_history_limit: Some(10),
                progress_deadline_seconds: Some(600),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus::default()),
        };
        self.store.upsert(&mut obj)?;
        self.deployments.insert(
            ObjKey::new(namespace, name),
            DeploymentState {
                obj,
                template,
                timing,
                load,
                hash,
                rs: None,
                instant,
            },
        );
        Ok(())
    }

    /// Sets a deployment's `spec.replicas` (the scale subresource). Returns the deployment.
    pub(crate) fn scale_deployment(
        &mut self,
        namespace: &str,
        name: &str,
        replicas: i32,
        manager: &str,
    ) -> Result<Deployment> {
        let now = self.now()?;
        let d = self
            .deployments
            .get_mut(&ObjKey::new(namespace, name))
            .ok_or_else(|| not_found("deployment", namespace, name))?;
        let spec = d.obj.spec.get_or_insert_with(Default::default);
        if spec.replicas != Some(replicas) {
            spec.replicas = Some(replicas);
            let meta = &mut d.obj.metadata;
            meta.generation = Some(meta.generation.unwrap_or(1) + 1);
            objects::touch_managed(
                meta,
                objects::managed(
                    manager,
                    "apps/v1",
                    &now,
                    Some("scale"),
                    json!({"f:spec": {"f:replicas": {}}}),
                ),
            );
            self.store.upsert(&mut d.obj)?;
        }
        Ok(d.obj.clone())
    }

    /// Keeps each deployment's ReplicaSet at the deployment's replica count.
    pub(crate) fn deployment_controller(&mut self) -> Result<()> {
        let keys: Vec<ObjKey> = self.deployments.keys().cloned().collect();
        for key in keys {
            let Some(d) = self.deployments.get(&key) else {
                continue;
            };
            let want = d.replicas();
            match d.rs.clone() {
                None => self.create_replicaset(&key, want)?,
                Some(rs_key) => {
                    let Some(rs) = self.replicasets.get(&rs_key) else {
                        continue;
                    };
                    let have = rs.obj.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    if have != want {
                        self.resize_replicaset(&key, &rs_key, have, want)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn create_replicaset(&mut self, dkey: &ObjKey, replicas: i32) -> Result<()> {
        let now = self.now()?;
        let uid = self.new_uid();
        let Some(d) = self.deployments.get(dkey) else {
            return Ok(());
        };
        let name = format!("{}-{}", dkey.name, d.hash);
        let mut labels = d.template.labels.clone();
        labels.insert("pod-template-hash".to_string(), d.hash.clone());
        let max_surge = (replicas + 3) / 4;
        let mut obj = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(dkey.namespace.clone()),
                uid: Some(uid),
                generation: Some(1),
                creation_timestamp: Some(now.clone()),
                labels: Some(labels.clone()),
                annotations: Some(BTreeMap::from([
                    (
                        "deployment.kubernetes.io/desired-replicas".to_string(),
                        replicas.to_string(),
                    ),
                    (
                        "deployment.kubernetes.io/max-replicas".to_string(),
                        (replicas + max_surge).to_string(),
                    ),
                    (
                        "deployment.kubernetes.io/revision".to_string(),
                        "1".to_string(),
                    ),
                ])),
                owner_references: Some(vec![owner("apps/v1", "Deployment", &d.obj.metadata)]),
                managed_fields: Some(vec![objects::managed(
                    "kube-controller-manager",
                    "apps/v1",
                    &now,
                    None,
                    json!({"f:metadata": {"f:annotations": {}, "f:labels": {}, "f:ownerReferences": {}}, "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {}}}),
                )]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels),
                    match_expressions: None,
                },
                template: Some(
                    d.template
                        .pod_template(Some(("pod-template-hash", d.hash.as_str()))),
                ),
                min_ready_seconds: None,
            }),
            status: Some(ReplicaSetStatus {
                replicas: 0,
                ..ReplicaSetStatus::default()
            }),
        };
        self.store.upsert(&mut obj)?;
        let rs_key = ObjKey::new(&dkey.namespace, &name);
        let dep_ref = reference("apps/v1", "Deployment", &d.obj.metadata);
        let instant = d.instant;
        if let Some(d) = self.deployments.get_mut(dkey) {
            d.rs = Some(rs_key.clone());
        }
        self.replicasets.insert(
            rs_key.clone(),
            ReplicaSetState {
                obj,
                deployment: dkey.clone(),
                pods: BTreeSet::new(),
            },
        );
        self.dirty_rs.insert(rs_key);
        if !instant {
            self.record_event(
                dep_ref,
                "Normal",
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
                "deployment-controller",
                None,
            )?;
        }
        Ok(())
    }

    fn resize_replicaset(
        &mut self,
        dkey: &ObjKey,
        rs_key: &ObjKey,
        from: i32,
        to: i32,
    ) -> Result<()> {
        let now = self.now()?;
        let Some(rs) = self.replicasets.get_mut(rs_key) else {
            return Ok(());
        };
        let name = rs_key.name.clone();
        if let Some(spec) = rs.obj.spec.as_mut() {
            spec.replicas = Some(to);
        }
        let meta = &mut rs.obj.metadata;
        meta.generation = Some(meta.generation.unwrap_or(1) + 1);
        let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(
            "deployment.kubernetes.io/desired-replicas".to_string(),
            to.to_string(),
        );
        annotations.insert(
            "deployment.kubernetes.io/max-replicas".to_string(),
            (to + (to + 3) / 4).to_string(),
        );
        objects::touch_managed(
            meta,
            objects::managed(
                "kube-controller-manager",
                "apps/v1",
                &now,
                None,
                json!({"f:metadata": {"f:annotations": {}}, "f:spec": {"f:replicas": {}}}),
            ),
        );
        self.store.upsert(&mut rs.obj)?;
        self.dirty_rs.insert(rs_key.clone());
        let Some(d) = self.deployments.get(dkey) else {
            return Ok(());
        };
        let direction = if to > from { "up" } else { "down" };
        self.record_event(
            reference("apps/v1", "Deployment", &d.obj.metadata),
            "Normal",
            "ScalingReplicaSet",
            format!("Scaled {direction} replica set {name} from {from} to {to}"),
            "deployment-controller",
            None,
        )
    }

    /// Rewrites the status of the deployments whose ReplicaSets changed (`touched`) and of
    /// those whose spec changed since their controller last looked.
    pub(crate) fn update_deployment_statuses(&mut self, touched: BTreeSet<ObjKey>) -> Result<()> {
        let now = self.now()?;
        let mut deployments = touched;
        for (key, d) in &self.deployments {
            let observed = d.obj.status.as_ref().and_then(|s| s.observed_generation);
            if observed != d.obj.metadata.generation {
                deployments.insert(key.clone());
            }
        }
        for key in deployments {
            self.update_deployment_status(&key, &now)?;
        }
        Ok(())
    }

    fn update_deployment_status(
        &mut self,
        key: &ObjKey,
        now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    ) -> Result<()> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(());
        };
        let Some(rs_key) = d.rs.clone() else {
            return Ok(());
        };
        let Some(rs) = self.replicasets.get(&rs_key) else {
            return Ok(());
        };
        let rs_status = rs.obj.status.clone().unwrap_or_default();
        let want = d.replicas();
        let replicas = rs_status.replicas;
        let available = rs_status.available_replicas.unwrap_or(0);
        let ready = rs_status.ready_replicas.unwrap_or(0);
        let max_unavailable = want / 4;
        let old = d.obj.status.clone().unwrap_or_default();
        let old_conditions = old.conditions.clone().unwrap_or_default();
        let condition = |type_: &str, ok: bool, reason: &str, message: String| {
            let prev = old_conditions.iter().find(|c| c.type_ == type_);
            let status = if ok { "True" } else { "False" }.to_string();
            let same =
                prev.is_some_and(|p| p.status == status && p.reason.as_deref() == Some(reason));
            let transition = match prev {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
            DeploymentCondition {
                type_: type_.to_string(),
                status,
                reason: Some(reason.to_string()),
                message: Some(message),
                last_update_time: if same {
                    prev.and_then(|p| p.last_update_time.clone())
                } else {
                    Some(now.clone())
                },
                last_transition_time: transition,
            }
        };
        let available_ok = available >= want - max_unavailable;
        let complete = available >= want && replicas == want;
        let conditions = vec![
            if available_ok {
                condition(
                    "Available",
                    true,
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".to_string(),
                )
            } else {
                condition(
                    "Available",
                    false,
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".to_string(),
                )
            },
            if complete
                || old_conditions.iter().any(|c| {
                    c.type_ == "Progressing"
                        && c.reason.as_deref() == Some("NewReplicaSetAvailable")
                })
            {
                condition(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    format!(
                        "ReplicaSet \"{}\" has successfully progressed.",
                        rs_key.name
                    ),
                )
            } else {
                condition(
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{}\" is progressing.", rs_key.name),
                )
            },
        ];
        let nz = |v: i32| (v != 0).then_some(v);
        let status = DeploymentStatus {
            replicas: nz(replicas),
            updated_replicas: nz(replicas),
            ready_replicas: nz(ready),
            available_replicas: nz(available),
            unavailable_replicas: nz((want - available).max(0)),
            observed_generation: d.obj.metadata.generation,
            terminating_replicas: rs_status.terminating_replicas,
            conditions: Some(conditions),
            collision_count: None,
        };
        if d.obj.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let Some(d) = self.deployments.get_mut(key) else {
            return Ok(());
        };
        d.obj.status = Some(status);
        objects::touch_managed(
            &mut d.obj.metadata,
            objects::managed(
                "kube-controller-manager",
                "apps/v1",
                now,
                Some("status"),
                json!({"f:status": {"f:availableReplicas": {}, "f:conditions": {}, "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}, "f:updatedReplicas": {}}}),
            ),
        );
        self.store.upsert(&mut d.obj)
    }
}
