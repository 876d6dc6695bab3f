//! The scheduler: binds a pending pod to the least-loaded node that fits its CPU request
//! and the node's pod limit, or leaves it `Unschedulable` with the real scheduler's message
//! and a `FailedScheduling` event.

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
        let request = p.cpu_request_millis;
        let cap = u64::from(self.cfg.nodes.pods);
        let cpu = self.cfg.nodes.cpu.0;
        let mut too_many = 0;
        let mut no_cpu = 0;
        let mut best: Option<(u64, u32, usize)> = None;
        for n in self.live_nodes() {
            let full = u64::from(n.pods) >= cap;
            let short = n.cpu_requested + request > cpu;
            too_many += usize::from(full);
            no_cpu += usize::from(short);
            if full || short {
                continue;
            }
            let score = (n.cpu_requested * 1000 / cpu.max(1), n.pods, n.index);
            if best.is_none_or(|b| score < b) {
                best = Some(score);
            }
        }
        let Some((_, _, index)) = best else {
            let total = self.live_nodes().count();
            let mut reasons = Vec::new();
            if no_cpu > 0 {
                reasons.push(format!("{no_cpu} Insufficient cpu"));
            }
            if too_many > 0 {
                reasons.push(format!("{too_many} Too many pods"));
            }
            let msg = format!(
                "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} No preemption victims found for incoming pod.",
                reasons.join(", ")
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
        self.nodes[index].cpu_requested += request;
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
        }
    }
}
