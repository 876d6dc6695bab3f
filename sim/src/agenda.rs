//! The pod agenda: every pod's next transition is due at a tick; each tick runs the due
//! ones in order and hands them to the scheduler, the kubelet (and its image puller) or pod
//! termination.

use crate::error::Result;
use crate::kubelet::KUBELET_DELAY_MS;
use crate::pod::{ContainerView, Stage};
use crate::scenario::PodFault;
use crate::scheduler::{RESCHEDULE_MS, SCHEDULE_DELAY_MS};
use crate::state::{Cluster, TICK_MS};
use crate::store::ObjKey;

impl Cluster {
    /// Runs every pod transition due by now.
    pub(crate) fn run_agenda(&mut self) -> Result<()> {
        while let Some((due, key)) = self.agenda.first().cloned() {
            if due > self.now_ms {
                break;
            }
            self.agenda.pop_first();
            let Some(p) = self.pods.get_mut(&key) else {
                continue;
            };
            if p.due_ms != Some(due) {
                continue;
            }
            p.due_ms = None;
            self.transition(&key)?;
        }
        Ok(())
    }

    pub(crate) fn transition(&mut self, key: &ObjKey) -> Result<()> {
        let Some(p) = self.pods.get(key) else {
            return Ok(());
        };
        match p.stage {
            Stage::Unscheduled => {
                if self.schedule(key)? {
                    let due = self.now_ms + KUBELET_DELAY_MS;
                    self.set_due(key, Some(due));
                } else {
                    let due = self.now_ms + RESCHEDULE_MS;
                    self.set_due(key, Some(due));
                }
                self.write_pod(key)
            }
            Stage::Scheduled => {
                let startup = self
                    .deployments
                    .get(&p.deployment)
                    .map(|d| d.timing.startup_ms)
                    .unwrap_or(1000);
                self.kubelet_start(key)?;
                let due = self.now_ms
                    + self.jitter(
                        startup
                            .saturating_sub(SCHEDULE_DELAY_MS + KUBELET_DELAY_MS)
                            .max(TICK_MS),
                    );
                self.set_due(key, Some(due));
                self.write_pod(key)
            }
            Stage::Creating if p.fault == Some(PodFault::ImagePull) => self.pull_failed(key),
            Stage::Creating | Stage::BackOff => {
                self.container_start(key)?;
                self.plan_running(key);
                self.write_pod(key)
            }
            Stage::ImagePull => match &p.container {
                Some(ContainerView::Waiting { reason, .. }) if reason == "ErrImagePull" => {
                    self.pull_back_off(key)
                }
                _ => self.pull_again(key),
            },
            Stage::Running => {
                let now = self.now_ms;
                if p.crash_at_ms.is_some_and(|t| t <= now) {
                    self.crash_now(key)?;
                } else if !p.ready && p.ready_at_ms.is_some_and(|t| t <= now) {
                    self.become_ready(key)?;
                    self.plan_running(key);
                    self.write_pod(key)?;
                } else {
                    self.plan_running(key);
                }
                Ok(())
            }
            Stage::Crashed => {
                if p.consecutive_crashes <= 1 {
                    self.container_start(key)?;
                    self.plan_running(key);
                } else {
                    self.back_off(key)?;
                }
                self.write_pod(key)
            }
            Stage::Terminating => self.finish_termination(key),
            Stage::Failed => Ok(()),
        }
    }
}
