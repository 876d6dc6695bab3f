//! Node conditions the scenario changes, and what follows from them, as the kubelet and the
//! node lifecycle controller do it: the condition with the real reason and message, the
//! taint (`node.kubernetes.io/memory-pressure:NoSchedule`, `not-ready` and `unreachable`
//! with `NoSchedule` and `NoExecute`), an event, and for a node that is not Ready its pods
//! marked not Ready. A node whose kubelet stops posting status (`Ready: Unknown`) has every
//! condition `Unknown` (`NodeStatusUnknown`). The scheduler keeps new pods off tainted
//! nodes. (Pods are not evicted from a lost node after the 300 s toleration: they stay.)

use k8s_openapi::api::core::v1::{NodeCondition, Taint};
use tracing::debug;

use crate::error::Result;
use crate::scenario::{ConditionStatus, NodeConditionType};
use crate::state::{Cluster, not_found};
use crate::store::ObjKey;

/// Every condition a node reports, in the order the kubelet lists them.
const CONDITIONS: [NodeConditionType; 4] = [
    NodeConditionType::MemoryPressure,
    NodeConditionType::DiskPressure,
    NodeConditionType::PidPressure,
    NodeConditionType::Ready,
];

/// The reason and message a condition's status comes with.
fn describe(type_: NodeConditionType, status: ConditionStatus) -> (&'static str, &'static str) {
    use ConditionStatus::{False, True, Unknown};
    use NodeConditionType::{DiskPressure, MemoryPressure, PidPressure, Ready};
    match (type_, status) {
        (_, Unknown) => ("NodeStatusUnknown", "Kubelet stopped posting node status."),
        (Ready, True) => ("KubeletReady", "kubelet is posting ready status"),
        (Ready, False) => (
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
        ),
        (MemoryPressure, True) => (
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        (MemoryPressure, False) => (
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (DiskPressure, True) => ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        (DiskPressure, False) => ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        (PidPressure, True) => (
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        ),
        (PidPressure, False) => (
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    }
}

impl Cluster {
    /// Sets one condition of a node (its kubelet reports it; `Ready: Unknown` is the node
    /// lifecycle controller finding the kubelet silent).
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when there is no such (live) node.
    pub(crate) fn set_node_condition(
        &mut self,
        name: &str,
        type_: NodeConditionType,
        status: ConditionStatus,
    ) -> Result<()> {
        let now_ms = self.now_ms;
        let now = self.now()?;
        let Some(index) = self.live_nodes().find(|n| n.name == name).map(|n| n.index) else {
            return Err(not_found("node", "", name));
        };
        let n = &mut self.nodes[index];
        let was_ready = n.ready();
        let before = n.condition(type_);
        if before == status {
            return Ok(());
        }
        n.conditions.insert(type_, (status, now_ms));
        let lost = n.condition(NodeConditionType::Ready) == ConditionStatus::Unknown;
        let previous = n
            .node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let mut conditions = Vec::new();
        for t in CONDITIONS {
            let shown = if lost {
                ConditionStatus::Unknown
            } else {
                n.condition(t)
            };
            let (reason, message) = describe(t, shown);
            let old = previous.iter().find(|c| c.type_ == t.as_str());
            let transition = match old {
                Some(c) if c.status == shown.as_str() => c.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
            // A silent kubelet posts no heartbeat: the last one stays.
            let heartbeat = if lost {
                old.and_then(|c| c.last_heartbeat_time.clone())
            } else {
                Some(now.clone())
            };
            conditions.push(NodeCondition {
                type_: t.as_str().to_string(),
                status: shown.as_str().to_string(),
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
                last_heartbeat_time: heartbeat,
                last_transition_time: transition,
            });
        }
        let previous_taints = n
            .node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let new_taints: Vec<Taint> = n
            .taints()
            .into_iter()
            .map(|(key, effect)| {
                let kept = previous_taints
                    .iter()
                    .find(|t| t.key == key && t.effect == effect);
                Taint {
                    key: key.to_string(),
                    effect: effect.to_string(),
                    value: None,
                    time_added: match (effect, kept) {
                        ("NoExecute", Some(t)) => t.time_added.clone(),
                        ("NoExecute", None) => Some(now.clone()),
                        _ => None,
                    },
                }
            })
            .collect();
        if let Some(s) = n.node.status.as_mut() {
            s.conditions = Some(conditions);
        }
        let spec = n.node.spec.get_or_insert_with(Default::default);
        spec.taints = (!new_taints.is_empty()).then_some(new_taints);
        let mut node = n.node.clone();
        let ready = n.ready();
        self.store.upsert(&mut node)?;
        self.nodes[index].node = node;
        debug!(
            node = name,
            condition = type_.as_str(),
            status = status.as_str(),
            "node condition"
        );
        let event = match (type_, status) {
            (NodeConditionType::Ready, ConditionStatus::True) => Some("NodeReady"),
            (NodeConditionType::Ready, _) => Some("NodeNotReady"),
            (NodeConditionType::MemoryPressure, ConditionStatus::True) => {
                Some("NodeHasInsufficientMemory")
            }
            (NodeConditionType::MemoryPressure, ConditionStatus::False) => {
                Some("NodeHasSufficientMemory")
            }
            (NodeConditionType::DiskPressure, ConditionStatus::True) => Some("NodeHasDiskPressure"),
            (NodeConditionType::DiskPressure, ConditionStatus::False) => {
                Some("NodeHasNoDiskPressure")
            }
            (NodeConditionType::PidPressure, ConditionStatus::True) => {
                Some("NodeHasInsufficientPID")
            }
            (NodeConditionType::PidPressure, ConditionStatus::False) => {
                Some("NodeHasSufficientPID")
            }
            _ => None,
        };
        if let Some(reason) = event {
            let component = if status == ConditionStatus::Unknown {
                "node-controller"
            } else {
                "kubelet"
            };
            let meta = &self.nodes[index].node.metadata;
            // The kubelet's node reference: its uid is the node's name.
            let involved = k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Node".to_string()),
                name: meta.name.clone(),
                uid: meta.name.clone(),
                ..Default::default()
            };
            self.record_event(
                involved,
                "Normal",
                reason,
                format!("Node {name} status is now: {reason}"),
                component,
                Some(name),
            )?;
        }
        if ready != was_ready {
            self.node_readiness_changed(index, ready)?;
        }
        Ok(())
    }

    /// A node became (not) Ready: the node lifecycle controller marks its pods not Ready,
    /// and they are Ready again as soon as the node is.
    fn node_readiness_changed(&mut self, index: usize, ready: bool) -> Result<()> {
        let now = self.now_ms;
        let on_node: Vec<ObjKey> = self
            .pods
            .iter()
            .filter(|(_, p)| p.node == Some(index))
            .map(|(k, _)| k.clone())
            .collect();
        for key in on_node {
            let Some(p) = self.pods.get_mut(&key) else {
                continue;
            };
            let before = p.pod_ready();
            p.node_not_ready = !ready;
            if p.pod_ready() != before {
                p.ready_changed_ms = now;
            }
            self.write_pod(&key)?;
        }
        Ok(())
    }
}
