//! The HPA controller's sync (`reconcileAutoscaler`): read the target's scale, compute the
//! desired replicas from metrics.k8s.io with [`crate::hpa`], normalize, rescale, emit
//! `SuccessfulRescale` events with the real message text, and write the status with its
//! AbleToScale / ScalingActive / ScalingLimited conditions.

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::json;
use tracing::{debug, info};

use crate::error::Result;
use crate::hpa::{self, Behavior, CalcConfig, PodInfo, Sample};
use crate::objects;
use crate::state::{Cluster, HpaState, not_found};
use crate::store::ObjKey;

pub(crate) const NO_METRICS_API: &str = "unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)";
pub(crate) const NO_METRICS_RETURNED: &str =
    "unable to get metrics for resource cpu: no metrics returned from resource metrics API";

/// `setCondition`: replaces a condition, keeping its transition time if the status holds.
fn set_condition(
    conditions: &mut Vec<HorizontalPodAutoscalerCondition>,
    now: &Time,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
) {
    let status = if status { "True" } else { "False" }.to_string();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(now.clone());
            }
            c.status = status;
            c.reason = Some(reason.to_string());
            c.message = Some(message);
        }
        None => conditions.push(HorizontalPodAutoscalerCondition {
            type_: type_.to_string(),
            status,
            reason: Some(reason.to_string()),
            message: Some(message),
            last_transition_time: Some(now.clone()),
        }),
    }
}

impl Cluster {
    pub(crate) fn add_hpa(&mut self, h: &crate::scenario::HpaSpec) -> Result<()> {
        use k8s_openapi::api::autoscaling::v2::{
            CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscalerBehavior,
            HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget, ResourceMetricSource,
        };
        let now = self.now()?;
        let behavior = (h.scale_down_stabilization.is_some() || h.scale_up_stabilization.is_some())
            .then(|| {
                let to_rules = |s: Option<i32>, up: bool| {
                    let d = if up {
                        hpa::default_scale_up()
                    } else {
                        hpa::default_scale_down(0)
                    };
                    HPAScalingRules {
                        stabilization_window_seconds: if up { Some(s.unwrap_or(0)) } else { s },
                        select_policy: Some("Max".to_string()),
                        policies: Some(
                            d.policies
                                .iter()
                                .map(|p| match *p {
                                    hpa::Policy::Pods { value, period_s } => {
                                        k8s_openapi::api::autoscaling::v2::HPAScalingPolicy {
                                            type_: "Pods".to_string(),
                                            value,
                                            period_seconds: period_s,
                                        }
                                    }
                                    hpa::Policy::Percent { value, period_s } => {
                                        k8s_openapi::api::autoscaling::v2::HPAScalingPolicy {
                                            type_: "Percent".to_string(),
                                            value,
                                            period_seconds: period_s,
                                        }
                                    }
                                })
                                .collect(),
                        ),
                        tolerance: None,
                    }
                };
                let secs = |d: Option<crate::units::Dur>| {
                    d.map(|d| i32::try_from(d.0.as_secs()).unwrap_or(i32::MAX))
                };
                HorizontalPodAutoscalerBehavior {
                    scale_up: Some(to_rules(secs(h.scale_up_stabilization), true)),
                    scale_down: Some(to_rules(secs(h.scale_down_stabilization), false)),
                }
            });
        let uid = self.new_uid();
        let mut obj = HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some(h.name.clone()),
                namespace: Some(h.namespace.clone()),
                uid: Some(uid),
                creation_timestamp: Some(now.clone()),
                generation: Some(1),
                managed_fields: Some(vec![objects::managed(
                    "kubectl-autoscale",
                    "autoscaling/v2",
                    &now,
                    None,
                    serde_json::json!({"f:spec": {"f:maxReplicas": {}, "f:metrics": {}, "f:minReplicas": {}, "f:scaleTargetRef": {}}}),
                )]),
                ..ObjectMeta::default()
            },
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".to_string()),
                    kind: "Deployment".to_string(),
                    name: h.target.clone(),
                },
                min_replicas: Some(i32::try_from(h.min).unwrap_or(i32::MAX)),
                max_replicas: i32::try_from(h.max).unwrap_or(i32::MAX),
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".to_string(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".to_string(),
                        target: MetricTarget {
                            type_: "Utilization".to_string(),
                            average_utilization: Some(
                                i32::try_from(h.cpu_utilization).unwrap_or(i32::MAX),
                            ),
                            ..MetricTarget::default()
                        },
                    }),
                    ..MetricSpec::default()
                }]),
                behavior,
            }),
            status: Some(HorizontalPodAutoscalerStatus {
                desired_replicas: 0,
                current_replicas: Some(0),
                ..HorizontalPodAutoscalerStatus::default()
            }),
        };
        self.store.upsert(&mut obj)?;
        let key = ObjKey::new(&h.namespace, &h.name);
        self.hpas.insert(
            key,
            HpaState {
                obj,
                target: ObjKey::new(&h.namespace, &h.target),
                memory: hpa::Memory::default(),
            },
        );
        Ok(())
    }

    /// Deletes an HPA, as `kubectl delete hpa` does: it stops scaling its target (which keeps
    /// its current replicas); its events stay until their TTL.
    pub(crate) fn delete_hpa(&mut self, namespace: &str, name: &str) -> Result<()> {
        let key = ObjKey::new(namespace, name);
        let Some(mut h) = self.hpas.remove(&key) else {
            return Err(not_found("horizontalpodautoscaler", namespace, name));
        };
        h.obj.metadata.deletion_timestamp = Some(self.now()?);
        self.store.delete(&mut h.obj)?;
        debug!(hpa = %key, "hpa deleted");
        Ok(())
    }

    /// One sync of every HPA.
    pub(crate) fn hpa_controller(&mut self) -> Result<()> {
        let keys: Vec<ObjKey> = self.hpas.keys().cloned().collect();
        for key in keys {
            self.sync_hpa(&key)?;
        }
        Ok(())
    }

    fn hpa_reference(&self, key: &ObjKey) -> Option<ObjectReference> {
        let h = self.hpas.get(key)?;
        let m = &h.obj.metadata;
        Some(ObjectReference {
            api_version: Some("autoscaling/v2".to_string()),
            kind: Some("HorizontalPodAutoscaler".to_string()),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            field_path: None,
        })
    }

    /// What the replica calculator sees of the target's pods.
    fn pod_infos(&self, deployment: &ObjKey) -> Vec<PodInfo> {
        let wall = |ms: u64| self.wall_ms(ms);
        self.pods
            .iter()
            .filter(|(_, p)| &p.deployment == deployment)
            .map(|(k, p)| PodInfo {
                name: k.name.clone(),
                phase: p.phase().to_string(),
                deleting: p.terminating(),
                ready: p.ready_condition().map(|(s, at)| (s, wall(at))),
                start_ms: p.start_ms().map(wall),
                request_milli: (p.cpu_request_millis > 0)
                    .then(|| i64::try_from(p.cpu_request_millis).unwrap_or(i64::MAX)),
                sample: self.pod_metrics.get(k).map(|s| Sample {
                    value_milli: i64::try_from(s.cpu_nanocores.div_ceil(1_000_000))
                        .unwrap_or(i64::MAX),
                    timestamp_ms: wall(s.timestamp_ms),
                    window_ms: i64::try_from(s.window_ms).unwrap_or(i64::MAX),
                }),
            })
            .collect()
    }

    fn sync_hpa(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now()?;
        let now_ms = self.wall_ms(self.now_ms);
        let Some(h) = self.hpas.get(key) else {
            return Ok(());
        };
        let Some(reference) = self.hpa_reference(key) else {
            return Ok(());
        };
        let spec = h.obj.spec.clone().unwrap_or_default();
        let mut status = h.obj.status.clone().unwrap_or_default();
        let mut conditions = status.conditions.take().unwrap_or_default();
        let target = h.target.clone();
        let Some(current) = self
            .deployments
            .get(&target)
            .map(|d| d.obj.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
        else {
            set_condition(
                &mut conditions,
                &now,
                "AbleToScale",
                false,
                "FailedGetScale",
                format!(
                    "the HPA controller was unable to get the target's current scale: deployments.apps \"{}\" not found",
                    target.name
                ),
            );
            return self.write_hpa_status(key, status, conditions, &now);
        };
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        let target_util = spec
            .metrics
            .as_ref()
            .and_then(|m| m.first())
            .and_then(|m| m.resource.as_ref())
            .and_then(|r| r.target.average_utilization)
            .unwrap_or(80);
        let behavior = spec.behavior.as_ref().map(|b| {
            Behavior::from_spec(
                b,
                i32::try_from(self.cfg.hpa.downscale_stabilization.0.as_secs()).unwrap_or(300),
            )
        });
        if let Some(h) = self.hpas.get_mut(key) {
            hpa::record_initial(&mut h.memory, current, now_ms);
        }
        set_condition(
            &mut conditions,
            &now,
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".to_string(),
        );
        let mut metric_statuses = status.current_metrics.clone();
        let mut desired = 0;
        let mut rescale = true;
        let mut reason = String::new();
        if current == 0 && min != 0 {
            rescale = false;
            set_condition(
                &mut conditions,
                &now,
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".to_string(),
            );
        } else if current > max {
            reason = "Current number of replicas above Spec.MaxReplicas".to_string();
            desired = max;
        } else if current < min {
            reason = "Current number of replicas below Spec.MinReplicas".to_string();
            desired = min;
        } else {
            let calc = if !self.cfg.metrics_enabled {
                Err(NO_METRICS_API.to_string())
            } else {
                let pods = self.pod_infos(&target);
                if pods.iter().all(|p| p.sample.is_none()) && !pods.is_empty() {
                    Err(NO_METRICS_RETURNED.to_string())
                } else {
                    let cfg = CalcConfig {
                        tolerance: self.cfg.hpa.tolerance,
                        cpu_initialization_period_ms: i64::try_from(
                            self.cfg.hpa.cpu_initialization_period.ms(),
                        )
                        .unwrap_or(i64::MAX),
                        initial_readiness_delay_ms: i64::try_from(
                            self.cfg.hpa.initial_readiness_delay.ms(),
                        )
                        .unwrap_or(i64::MAX),
                    };
                    hpa::resource_replicas(current, target_util, &pods, now_ms, &cfg)
                        .map_err(|e| e.to_string())
                }
            };
            let calc = match calc {
                Ok(c) => c,
                Err(e) => {
                    let err = format!("failed to get cpu utilization: {e}");
                    self.record_event(
                        reference.clone(),
                        "Warning",
                        "FailedGetResourceMetric",
                        err.clone(),
                        "horizontal-pod-autoscaler",
                        None,
                    )?;
                    self.record_event(
                        reference,
                        "Warning",
                        "FailedComputeMetricsReplicas",
                        format!("invalid metrics (1 invalid out of 1), first error is: failed to get cpu resource metric value: {err}"),
                        "horizontal-pod-autoscaler",
                        None,
                    )?;
                    set_condition(
                        &mut conditions,
                        &now,
                        "ScalingActive",
                        false,
                        "FailedGetResourceMetric",
                        format!("the HPA was unable to compute the replica count: {err}"),
                    );
                    status.current_replicas = Some(current);
                    status.current_metrics = Some(vec![MetricStatus {
                        type_: String::new(),
                        ..MetricStatus::default()
                    }]);
                    return self.write_hpa_status(key, status, conditions, &now);
                }
            };
            set_condition(
                &mut conditions,
                &now,
                "ScalingActive",
                true,
                "ValidMetricFound",
                format!(
                    "the HPA was able to successfully calculate a replica count from {}",
                    hpa::CPU_UTILIZATION_METRIC
                ),
            );
            metric_statuses = Some(vec![MetricStatus {
                type_: "Resource".to_string(),
                resource: Some(ResourceMetricStatus {
                    name: "cpu".to_string(),
                    current: MetricValueStatus {
                        average_utilization: Some(calc.utilization),
                        average_value: Some(Quantity(format!("{}m", calc.average_milli))),
                        value: None,
                    },
                }),
                ..MetricStatus::default()
            }]);
            desired = calc.replicas;
            if desired > current {
                reason = format!("{} above target", hpa::CPU_UTILIZATION_METRIC);
            }
            if desired < current {
                reason = "All metrics below target".to_string();
            }
            let Some(h) = self.hpas.get_mut(key) else {
                return Ok(());
            };
            let normalized = match &behavior {
                Some(b) => hpa::normalize_with_behavior(
                    &mut h.memory,
                    now_ms,
                    current,
                    desired,
                    min,
                    max,
                    b,
                ),
                None => hpa::normalize_legacy(
                    &mut h.memory,
                    now_ms,
                    current,
                    desired,
                    min,
                    max,
                    i64::try_from(self.cfg.hpa.downscale_stabilization.ms()).unwrap_or(i64::MAX),
                ),
            };
            set_condition(
                &mut conditions,
                &now,
                "AbleToScale",
                true,
                normalized.able.0,
                normalized.able.1.to_string(),
            );
            set_condition(
                &mut conditions,
                &now,
                "ScalingLimited",
                normalized.limited.0,
                normalized.limited.1,
                normalized.limited.2.to_string(),
            );
            desired = normalized.replicas;
            rescale = desired != current;
        }
        if rescale {
            self.scale_deployment(
                &target.namespace,
                &target.name,
                desired,
                "kube-controller-manager",
            )?;
            set_condition(
                &mut conditions,
                &now,
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            let message = format!("New size: {desired}; reason: {reason}");
            info!(hpa = %key, from = current, to = desired, %reason, "rescaled");
            self.record_event(
                reference,
                "Normal",
                "SuccessfulRescale",
                message,
                "horizontal-pod-autoscaler",
                None,
            )?;
            if let Some(h) = self.hpas.get_mut(key) {
                hpa::store_scale_event(&mut h.memory, behavior.as_ref(), now_ms, current, desired);
            }
            status.last_scale_time = Some(now.clone());
        } else {
            desired = current;
        }
        status.current_replicas = Some(current);
        status.desired_replicas = desired;
        status.current_metrics = metric_statuses;
        self.write_hpa_status(key, status, conditions, &now)
    }

    fn write_hpa_status(
        &mut self,
        key: &ObjKey,
        mut status: HorizontalPodAutoscalerStatus,
        conditions: Vec<HorizontalPodAutoscalerCondition>,
        now: &Time,
    ) -> Result<()> {
        let Some(h) = self.hpas.get_mut(key) else {
            return Ok(());
        };
        status.conditions = Some(conditions);
        status.observed_generation = h.obj.metadata.generation;
        if h.obj.status.as_ref() == Some(&status) {
            return Ok(());
        }
        h.obj.status = Some(status);
        objects::touch_managed(
            &mut h.obj.metadata,
            objects::managed(
                "kube-controller-manager",
                "autoscaling/v2",
                now,
                Some("status"),
                json!({"f:status": {"f:conditions": {}, "f:currentMetrics": {}, "f:currentReplicas": {}, "f:desiredReplicas": {}}}),
            ),
        );
        self.store.upsert(&mut h.obj)
    }
}
