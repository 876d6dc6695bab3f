//! The scheduler: binds a pending pod to the least-loaded untainted node whose allocatable
//! CPU, memory and pod count fit its requests, or leaves it `Unschedulable` with the real
//! scheduler's message (reasons counted per node, sorted) and a `FailedScheduling` event.

use std::collections::BTreeMap;

use tracing::debug;

use crate::error::Result;
use crate::pod::Stage;
use crate::state::Cluster;
use crate::store::ObjKey;

/// Delay from creation to the scheduler binding a pod.
pub(crate) const SCHEDULE_DELAY_MS: u64 = 200;

/// Retry interval for unschedulable pods.
pub(crate) const RESCHEDULE_MS: u64 = 5_000;

impl Cluster {
    /// Binds a pod to a node; false (and an Unschedulable condition) when none fits.
    pub(crate) fn schedule(&mut self, key: &ObjKey) -> Result<bool> {
        let Some(p) = self.pods.get(key) else {
            return Ok(false);
        };
        let (cpu_request, memory_request) = (p.cpu_request_millis, p.memory_request_bytes);
        let cap = u64::from(self.cfg.nodes.pods);
        let (cpu, memory) = self.cfg.nodes.allocatable();
        // Per failing node, the filters' reasons, as the scheduler counts them: a node
        // fails at its first filter (taints before resources).
        let mut failed: BTreeMap<String, usize> = BTreeMap::new();
        let mut not_helpful = 0;
        let mut best: Option<(u64, u32, usize)> = None;
        for n in self.live_nodes() {
            if let Some(taint) = n.no_schedule_taints().first() {
                *failed
                    .entry(format!("node(s) had untolerated taint {{{taint}: }}"))
                    .or_default() += 1;
                not_helpful += 1;
                continue;
            }
            let mut reasons = Vec::new();
            if u64::from(n.pods) >= cap {
                reasons.push("Too many pods");
            }
            if n.cpu_requested + cpu_request > cpu {
                reasons.push("Insufficient cpu");
            }
            if n.memory_requested + memory_request > memory {
                reasons.push("Insufficient memory");
            }
            if !reasons.is_empty() {
                for r in reasons {
                    *failed.entry(r.to_string()).or_default() += 1;
                }
                continue;
            }
            let score = (n.cpu_requested * 1000 / cpu.max(1), n.pods, n.index);
            if best.is_none_or(|b| score < b) {
                best = Some(score);
            }
        }
        let Some((_, _, index)) = best else {
            let total = self.live_nodes().count();
            let mut reasons: Vec<String> = failed
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            reasons.sort();
            let mut preemption = Vec::new();
            if not_helpful > 0 {
                preemption.push(format!(
                    "{not_helpful} Preemption is not helpful for scheduling"
                ));
            }
            if total > not_helpful {
                preemption.push(format!(
                    "{} No preemption victims found for incoming pod",
                    total - not_helpful
                ));
            }
            preemption.sort();
            let msg = format!(
                "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {}.",
                reasons.join(", "),
                preemption.join(", ")
            );
            let events = p.events;
            let reference = p.reference();
            let first = p.unschedulable.is_none();
            if let Some(p) = self.pods.get_mut(key) {
                p.unschedulable = Some(msg.clone());
            }
            if events && first {
                self.record_event(
                    reference,
                    "Warning",
                    "FailedScheduling",
                    msg,
                    "default-scheduler",
                    None,
                )?;
            }
            return Ok(false);
        };
        let now = self.now_ms;
        let node_name = self.nodes[index].name.clone();
        self.nodes[index].pods += 1;
        self.nodes[index].cpu_requested += cpu_request;
        self.nodes[index].memory_requested += memory_request;
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(false);
        };
        p.node = Some(index);
        p.on_node = true;
        p.stage = Stage::Scheduled;
        p.scheduled_ms = Some(now);
        p.unschedulable = None;
        if let Some(spec) = p.pod.spec.as_mut() {
            spec.node_name = Some(node_name.clone());
        }
        let (events, reference) = (p.events, p.reference());
        debug!(pod = %key, node = %node_name, "scheduled");
        if events {
            self.record_event(
                reference,
                "Normal",
                "Scheduled",
                format!(
                    "Successfully assigned {}/{} to {node_name}",
                    key.namespace, key.name
                ),
                "default-scheduler",
                None,
            )?;
        }
        Ok(true)
    }

    pub(crate) fn release_node(&mut self, key: &ObjKey) {
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        if !p.on_node {
            return;
        }
        p.on_node = false;
        if let Some(n) = p.node.and_then(|i| self.nodes.get_mut(i)) {
            n.pods = n.pods.saturating_sub(1);
            n.cpu_requested = n.cpu_requested.saturating_sub(p.cpu_request_millis);
            n.memory_requested = n.memory_requested.saturating_sub(p.memory_request_bytes);
        }
    }
}
