//! The deployment controller: one ReplicaSet per pod template. A deployment's first
//! ReplicaSet gets all its replicas; a rollout (a new template: `kubectl set image`) gets a
//! new ReplicaSet that is scaled up while the old ones are scaled down, within the rolling
//! update's `maxSurge` (25 %, rounded up) and `maxUnavailable` (25 %, rounded down), as
//! kube-controller-manager's `rolloutRolling` does. Without a rollout in flight it keeps
//! the current ReplicaSet at `spec.replicas` (the scale subresource, the HPA).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, DeploymentStrategy, ReplicaSet, ReplicaSetSpec,
    ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use tracing::info;

use crate::deployment_status::fenceposts;
use crate::error::Result;
use crate::load::LoadModel;
use crate::objects::{self, Template};
use crate::scenario::PodFault;
use crate::state::{
    Cluster, DeploymentState, REVISION, ReplicaSetState, Timing, not_found, owner, reference,
    revision_of,
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
        let hash = template.hash(namespace, name);
        let uid = self.new_uid();
        let mut obj = Deployment {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: Some(uid),
                generation: Some(1),
                creation_timestamp: Some(now.clone()),
                labels: Some(template.labels.clone()),
                annotations: Some(BTreeMap::from([(REVISION.to_string(), "1".to_string())])),
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
        let progress_ms = self.now_ms;
        self.deployments.insert(
            ObjKey::new(namespace, name),
            DeploymentState {
                obj,
                template,
                hash,
                timing,
                load,
                rs: None,
                revision: 0,
                progress_ms,
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

    /// Starts a rollout, as `kubectl set image` does: the pod template gets `image` (and
    /// the new pods `fault`), `metadata.generation` goes up, and the controller rolls the
    /// pods over to a new ReplicaSet from its next pass.
    pub(crate) fn rollout(
        &mut self,
        namespace: &str,
        name: &str,
        image: &str,
        fault: Option<PodFault>,
    ) -> Result<()> {
        let now = self.now()?;
        let d = self
            .deployments
            .get_mut(&ObjKey::new(namespace, name))
            .ok_or_else(|| not_found("deployment", namespace, name))?;
        d.template.image = image.to_string();
        d.template.fault = fault;
        d.hash = d.template.hash(namespace, name);
        let spec = d.obj.spec.get_or_insert_with(Default::default);
        spec.template = d.template.pod_template(None);
        let meta = &mut d.obj.metadata;
        meta.generation = Some(meta.generation.unwrap_or(1) + 1);
        objects::touch_managed(
            meta,
            objects::managed(
                "kubectl-set",
                "apps/v1",
                &now,
                None,
                json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}}),
            ),
        );
        d.progress_ms = self.now_ms;
        info!(deployment = %format!("{namespace}/{name}"), image, "rollout started");
        self.store.upsert(&mut d.obj)
    }

    /// One pass of the deployment controller over every deployment.
    pub(crate) fn deployment_controller(&mut self) -> Result<()> {
        let keys: Vec<ObjKey> = self.deployments.keys().cloned().collect();
        for key in keys {
            self.sync_deployment(&key)?;
        }
        Ok(())
    }

    fn sync_deployment(&mut self, key: &ObjKey) -> Result<()> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(());
        };
        let want = d.replicas();
        let hash = d.hash.clone();
        let owned = self.replicasets_of(key);
        let new = owned
            .iter()
            .find(|k| self.replicasets.get(*k).is_some_and(|rs| rs.hash == hash))
            .cloned();
        let old: Vec<ObjKey> = owned
            .iter()
            .filter(|k| Some(*k) != new.as_ref())
            .filter(|k| {
                self.replicasets
                    .get(*k)
                    .is_some_and(|rs| rs.spec_replicas() > 0)
            })
            .cloned()
            .collect();
        let spec_of = |c: &Cluster, k: &ObjKey| {
            c.replicasets
                .get(k)
                .map_or(0, ReplicaSetState::spec_replicas)
        };
        let available_of =
            |c: &Cluster, k: &ObjKey| c.replicasets.get(k).map_or(0, ReplicaSetState::available);
        let (surge, unavailable) = fenceposts(want);
        // The new ReplicaSet: created (with all replicas when nothing else runs, else with
        // what the surge allows), or adopted again on a rollback to its template.
        let new = match new {
            Some(new) => {
                if self.deployments.get(key).and_then(|d| d.rs.as_ref()) != Some(&new) {
                    self.adopt_replicaset(key, &new)?;
                }
                new
            }
            None => {
                let running: i32 = old.iter().map(|k| spec_of(self, k)).sum();
                let initial = if old.is_empty() {
                    want
                } else {
                    (want + surge - running).clamp(0, want)
                };
                self.create_replicaset(key, initial)?
            }
        };
        let have = spec_of(self, &new);
        if old.is_empty() {
            if have != want {
                self.resize_replicaset(key, &new, have, want)?;
            }
            return Ok(());
        }
        // Rolling update, step 1: scale the new ReplicaSet up within the surge.
        let total: i32 = have + old.iter().map(|k| spec_of(self, k)).sum::<i32>();
        if have > want {
            self.resize_replicaset(key, &new, have, want)?;
        } else if have < want && total < want + surge {
            let to = have + (want + surge - total).min(want - have);
            self.resize_replicaset(key, &new, have, to)?;
        }
        // Step 2: scale old ReplicaSets down, unhealthy replicas first, never below the
        // availability the deployment promises.
        let new_spec = spec_of(self, &new);
        let total: i32 = new_spec + old.iter().map(|k| spec_of(self, k)).sum::<i32>();
        let min_available = want - unavailable;
        let new_unavailable = new_spec - available_of(self, &new);
        let max_scaled_down = total - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(());
        }
        let mut cleaned = 0;
        for k in &old {
            let (spec, available) = (spec_of(self, k), available_of(self, k));
            let unhealthy = spec - available;
            if unhealthy <= 0 || cleaned >= max_scaled_down {
                continue;
            }
            let n = unhealthy.min(max_scaled_down - cleaned);
            self.resize_replicaset(key, k, spec, spec - n)?;
            cleaned += n;
        }
        let available: i32 =
            available_of(self, &new) + old.iter().map(|k| available_of(self, k)).sum::<i32>();
        let mut budget = available - min_available;
        for k in &old {
            if budget <= 0 {
                break;
            }
            let spec = spec_of(self, k);
            if spec == 0 {
                continue;
            }
            let n = spec.min(budget);
            self.resize_replicaset(key, k, spec, spec - n)?;
            budget -= n;
        }
        Ok(())
    }

    /// Creates the ReplicaSet of a deployment's current template, with the next revision.
    fn create_replicaset(&mut self, dkey: &ObjKey, replicas: i32) -> Result<ObjKey> {
        let now = self.now()?;
        let uid = self.new_uid();
        let revision = self.next_revision(dkey);
        let Some(d) = self.deployments.get(dkey) else {
            return Ok(ObjKey::default());
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
                        d.replicas().to_string(),
                    ),
                    (
                        "deployment.kubernetes.io/max-replicas".to_string(),
                        (d.replicas() + max_surge).to_string(),
                    ),
                    (REVISION.to_string(), revision.to_string()),
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
        let (instant, template, hash) = (d.instant, d.template.clone(), d.hash.clone());
        self.replicasets.insert(
            rs_key.clone(),
            ReplicaSetState {
                obj,
                deployment: dkey.clone(),
                template,
                hash,
                pods: Default::default(),
            },
        );
        self.dirty_rs.insert(rs_key.clone());
        self.set_revision(dkey, &rs_key, revision, true)?;
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
        Ok(rs_key)
    }

    /// A rollback to an old template: its ReplicaSet becomes the new one again, with the
    /// next revision.
    fn adopt_replicaset(&mut self, dkey: &ObjKey, rs_key: &ObjKey) -> Result<()> {
        let revision = self.next_revision(dkey);
        if let Some(rs) = self.replicasets.get_mut(rs_key) {
            rs.obj
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(REVISION.to_string(), revision.to_string());
            self.store.upsert(&mut rs.obj)?;
        }
        self.set_revision(dkey, rs_key, revision, false)
    }

    fn next_revision(&self, dkey: &ObjKey) -> u64 {
        self.replicasets_of(dkey)
            .iter()
            .filter_map(|k| self.replicasets.get(k))
            .map(|rs| revision_of(&rs.obj.metadata))
            .max()
            .unwrap_or(0)
            + 1
    }

    /// Makes `rs_key` the deployment's new ReplicaSet at `revision`; `created` notes a new
    /// ReplicaSet in the Progressing condition (`NewReplicaSetCreated`).
    fn set_revision(
        &mut self,
        dkey: &ObjKey,
        rs_key: &ObjKey,
        revision: u64,
        created: bool,
    ) -> Result<()> {
        let now_ms = self.now_ms;
        let Some(d) = self.deployments.get_mut(dkey) else {
            return Ok(());
        };
        d.rs = Some(rs_key.clone());
        d.revision = revision;
        d.progress_ms = now_ms;
        d.obj
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REVISION.to_string(), revision.to_string());
        self.store.upsert(&mut d.obj)?;
        if created {
            self.note_new_replicaset(dkey, &rs_key.name)?;
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
        let want = self
            .deployments
            .get(dkey)
            .map_or(to, DeploymentState::replicas);
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
            want.to_string(),
        );
        annotations.insert(
            "deployment.kubernetes.io/max-replicas".to_string(),
            (want + fenceposts(want).0).to_string(),
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
}
