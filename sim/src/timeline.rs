//! The scenario's timeline: crashes, node conditions, rollouts, experiment steps and API
//! faults at fixed simulation times, in order.

use crate::faults::Fault;
use crate::scenario::{
    ConditionStatus, CrashAction, ExitReason, FaultKind, NodeConditionType, PodFault, Spec,
};

/// One scheduled scenario action.
#[derive(Debug, Clone)]
pub(crate) enum Timed {
    Crash {
        namespace: String,
        deployment: Option<String>,
        pod: Option<String>,
        count: u32,
        action: CrashAction,
        restarts: u32,
        reason: ExitReason,
    },
    NodeCondition {
        node: String,
        condition: NodeConditionType,
        status: ConditionStatus,
    },
    Rollout {
        namespace: String,
        deployment: String,
        image: String,
        fault: Option<PodFault>,
    },
    Step(Step),
    Fault(Fault),
}

/// A named step of an experiment (see `scenario::StepSpec`).
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub name: String,
    pub namespace: String,
    /// deployment → replicas.
    pub scale: Vec<(String, u32)>,
    /// Its place among the scenario's steps: (1-based index, count).
    pub index: (usize, usize),
}

/// The scheduled actions, sorted by time, and how far the clock has run through them.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    actions: Vec<(u64, Timed)>,
    next: usize,
}

impl Timeline {
    /// The actions a scenario schedules.
    pub(crate) fn from_spec(spec: &Spec) -> Self {
        let mut actions: Vec<(u64, Timed)> = Vec::new();
        for cr in &spec.crashes {
            actions.push((
                cr.at.ms(),
                Timed::Crash {
                    namespace: cr.namespace.clone(),
                    deployment: cr.deployment.clone(),
                    pod: cr.pod.clone(),
                    count: cr.count,
                    action: cr.action,
                    restarts: cr.restarts,
                    reason: cr.reason,
                },
            ));
        }
        for c in &spec.node_conditions {
            actions.push((
                c.at.ms(),
                Timed::NodeCondition {
                    node: c.node.clone(),
                    condition: c.condition,
                    status: c.status,
                },
            ));
        }
        for r in &spec.rollouts {
            actions.push((
                r.at.ms(),
                Timed::Rollout {
                    namespace: r.namespace.clone(),
                    deployment: r.deployment.clone(),
                    image: r.image.clone(),
                    fault: r.fault,
                },
            ));
        }
        for (i, st) in spec.steps.iter().enumerate() {
            actions.push((
                st.at.ms(),
                Timed::Step(Step {
                    name: st.name.clone(),
                    namespace: st.namespace.clone(),
                    scale: st.scale.iter().map(|(d, n)| (d.clone(), *n)).collect(),
                    index: (i + 1, spec.steps.len()),
                }),
            ));
        }
        for f in &spec.faults {
            let fault = match f.kind {
                FaultKind::DropWatches => Fault::DropWatches,
                FaultKind::Expire => Fault::ExpireResourceVersions,
                FaultKind::Errors => Fault::Errors {
                    requests: f.requests,
                    resource: f.resource.clone(),
                },
                FaultKind::Slow => Fault::Slow {
                    requests: f.requests,
                    delay: f.delay.0,
                },
            };
            actions.push((f.at.ms(), Timed::Fault(fault)));
        }
        // Stable: actions at the same time keep the scenario's order.
        actions.sort_by_key(|(at, _)| *at);
        Timeline { actions, next: 0 }
    }

    /// The next action due at or before `now_ms`, consumed.
    pub(crate) fn next_due(&mut self, now_ms: u64) -> Option<Timed> {
        let (at, action) = self.actions.get(self.next)?;
        if *at > now_ms {
            return None;
        }
        self.next += 1;
        Some(action.clone())
    }
}
