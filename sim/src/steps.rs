//! Experiment steps: at each step of a scenario (the load matrix's "2 servers, 10 clients",
//! say) the named deployments are scaled as `kubectl scale` would, every deployment the step
//! scales is annotated `kube-sim.dev/step: <name>`, and a `ScenarioStep` event says which
//! step began (`Step 3/15 s2-c100: echo-client 100, echo-server 2`). Scaling is what a
//! report reading Prometheus sees (`kube_deployment_spec_replicas`); the event and the
//! annotation are for people reading kubectl.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use tracing::info;

use crate::error::Result;
use crate::state::{Cluster, not_found, reference};
use crate::store::ObjKey;
use crate::timeline::Step;

/// The annotation naming the step a deployment was last scaled by.
pub(crate) const STEP_ANNOTATION: &str = "kube-sim.dev/step";

impl Cluster {
    /// Runs one step: scales its deployments, annotates them, records the event.
    pub(crate) fn run_step(&mut self, step: &Step) -> Result<()> {
        let (index, total) = step.index;
        let what: Vec<String> = step.scale.iter().map(|(d, n)| format!("{d} {n}")).collect();
        let message = if what.is_empty() {
            format!("Step {index}/{total} {}", step.name)
        } else {
            format!("Step {index}/{total} {}: {}", step.name, what.join(", "))
        };
        info!(step = %step.name, index, total, scale = %what.join(", "), "scenario step");
        let mut involved = Vec::new();
        for (name, replicas) in &step.scale {
            let replicas = i32::try_from(*replicas).unwrap_or(i32::MAX);
            self.scale_deployment(&step.namespace, name, replicas, "kube-sim")?;
            let key = ObjKey::new(&step.namespace, name);
            let Some(d) = self.deployments.get_mut(&key) else {
                return Err(not_found("deployment", &step.namespace, name));
            };
            d.obj
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(STEP_ANNOTATION.to_string(), step.name.clone());
            self.store.upsert(&mut d.obj)?;
            involved.push(reference("apps/v1", "Deployment", &d.obj.metadata));
        }
        if involved.is_empty() {
            // A step that scales nothing marks a phase of the namespace.
            let ns = self.namespaces.get(&step.namespace);
            involved.push(ObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Namespace".to_string()),
                name: Some(step.namespace.clone()),
                namespace: Some(step.namespace.clone()),
                uid: ns.and_then(|n| n.metadata.uid.clone()),
                ..ObjectReference::default()
            });
        }
        for r in involved {
            self.record_event(
                r,
                "Normal",
                "ScenarioStep",
                message.clone(),
                "kube-sim",
                None,
            )?;
        }
        Ok(())
    }
}
