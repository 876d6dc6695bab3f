//! The HorizontalPodAutoscaler algorithm, as kube-controller-manager implements it
//! (`pkg/controller/podautoscaler`: `replica_calculator.go`, `horizontal.go`).
//!
//! - Replica calculation for a CPU utilization target: pods are grouped into ready, unready
//!   (Pending, or not Ready / without a full metrics window inside the CPU initialization
//!   period), missing (no metrics) and ignored (deleted or Failed);
//!   `utilization = Σusage × 100 / Σrequests` (integer percent) over ready pods with metrics,
//!   `ratio = utilization / target`; within the tolerance (10 %) nothing changes, otherwise
//!   `desired = ceil(ratio × readyPods)`, with missing pods counted at 100 % of their request
//!   on a scale-down and 0 % on a scale-up, unready pods at 0 % on a scale-up, and no change
//!   if that reverses the direction.
//! - Normalization without `spec.behavior`: the highest recommendation within the downscale
//!   stabilization window (default 5 min), then `[min, max]` and the scale-up limit
//!   `max(2 × current, 4)`.
//! - Normalization with `spec.behavior`: stabilization windows for both directions, then the
//!   scaling policies (default up: max(4 pods, 100 %) per 15 s; down: 100 % per 15 s).
//!
//! Everything here is pure: times are milliseconds on the simulation clock.

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// The `reason` of a scale-up on a CPU utilization target, as the controller words it.
pub(crate) const CPU_UTILIZATION_METRIC: &str = "cpu resource utilization (percentage of request)";

/// A pod's metric sample: usage in millicores at `timestamp_ms`, averaged over `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub value_milli: i64,
    pub timestamp_ms: i64,
    pub window_ms: i64,
}

/// What the replica calculator knows about one pod.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PodInfo {
    pub name: String,
    /// `Pending`, `Running`, `Failed`, ...
    pub phase: String,
    pub deleting: bool,
    /// The Ready condition: status and last transition time.
    pub ready: Option<(bool, i64)>,
    pub start_ms: Option<i64>,
    /// Σ CPU requests of its containers (millicores), `None` if any container has none.
    pub request_milli: Option<i64>,
    pub sample: Option<Sample>,
}

/// Controller flags used by the calculation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CalcConfig {
    pub tolerance: f64,
    pub cpu_initialization_period_ms: i64,
    pub initial_readiness_delay_ms: i64,
}

/// Why no replica count could be computed (messages as the controller words them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CalcError {
    NoPods,
    NoMetrics,
    MissingRequest(String),
}

impl std::fmt::Display for CalcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalcError::NoPods => {
                f.write_str("no pods returned by selector while calculating replica count")
            }
            CalcError::NoMetrics => {
                f.write_str("did not receive metrics for targeted pods (pods might be unready)")
            }
            CalcError::MissingRequest(pod) => {
                write!(f, "missing request for cpu in container of Pod {pod}")
            }
        }
    }
}

/// The result of a replica calculation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Calc {
    pub replicas: i32,
    /// Current utilization, integer percent of request.
    pub utilization: i32,
    /// Average usage per pod with metrics, millicores.
    pub average_milli: i64,
}

fn within_tolerance(ratio: f64, tolerance: f64) -> bool {
    (1.0 - tolerance) <= ratio && ratio <= (1.0 + tolerance)
}

/// `GetResourceUtilizationRatio`: (ratio, utilization %, average usage).
fn utilization_ratio(
    metrics: &[(usize, i64)],
    requests: &[i64],
    target: i32,
) -> Option<(f64, i32, i64)> {
    let mut total = 0i64;
    let mut requested = 0i64;
    for &(pod, value) in metrics {
        total += value;
        requested += requests[pod];
    }
    if requested == 0 || metrics.is_empty() {
        return None;
    }
    let utilization = (total * 100 / requested) as i32;
    Some((
        f64::from(utilization) / f64::from(target),
        utilization,
        total / metrics.len() as i64,
    ))
}

/// `GetResourceReplicas` for a CPU utilization target.
pub(crate) fn resource_replicas(
    current: i32,
    target_utilization: i32,
    pods: &[PodInfo],
    now_ms: i64,
    cfg: &CalcConfig,
) -> Result<Calc, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let mut ready = Vec::new();
    let mut unready = Vec::new();
    let mut missing = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        if pod.deleting || pod.phase == "Failed" {
            continue;
        }
        if pod.phase == "Pending" {
            unready.push(i);
            continue;
        }
        let Some(sample) = pod.sample else {
            missing.push(i);
            continue;
        };
        let is_unready = match (pod.ready, pod.start_ms) {
            (Some((status, transition)), Some(start)) => {
                if start + cfg.cpu_initialization_period_ms > now_ms {
                    !status || sample.timestamp_ms < transition + sample.window_ms
                } else {
                    !status && start + cfg.initial_readiness_delay_ms > transition
                }
            }
            _ => true,
        };
        if is_unready {
            unready.push(i);
        } else {
            ready.push((i, sample.value_milli));
        }
    }
    if ready.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let mut requests = Vec::with_capacity(pods.len());
    for pod in pods {
        match pod.request_milli {
            Some(r) => requests.push(r),
            None if pod.deleting || pod.phase == "Failed" => requests.push(0),
            None => return Err(CalcError::MissingRequest(pod.name.clone())),
        }
    }
    let (ratio, utilization, average_milli) =
        utilization_ratio(&ready, &requests, target_utilization).ok_or(CalcError::NoMetrics)?;
    let calc = |replicas| Calc {
        replicas,
        utilization,
        average_milli,
    };
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if within_tolerance(ratio, cfg.tolerance) {
            return Ok(calc(current));
        }
        return Ok(calc((ratio * ready.len() as f64).ceil() as i32));
    }
    let mut metrics = ready.clone();
    if !missing.is_empty() {
        if ratio < 1.0 {
            let fallback = i64::from(target_utilization.max(100));
            metrics.extend(missing.iter().map(|&i| (i, requests[i] * fallback / 100)));
        } else if ratio > 1.0 {
            metrics.extend(missing.iter().map(|&i| (i, 0)));
        }
    }
    if scale_up_with_unready {
        metrics.extend(unready.iter().map(|&i| (i, 0)));
    }
    let (new_ratio, _, _) =
        utilization_ratio(&metrics, &requests, target_utilization).ok_or(CalcError::NoMetrics)?;
    if within_tolerance(new_ratio, cfg.tolerance)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(calc(current));
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(calc(current));
    }
    Ok(calc(replicas))
}

/// A recommendation the controller remembers for stabilization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recommendation {
    pub replicas: i32,
    pub at_ms: i64,
}

/// A past rescale, for the scaling policies' rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScaleEvent {
    pub change: i32,
    pub at_ms: i64,
}

/// What the controller remembers per HPA between syncs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Memory {
    pub recommendations: Vec<Recommendation>,
    pub up_events: Vec<ScaleEvent>,
    pub down_events: Vec<ScaleEvent>,
}

/// How several policies combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Select {
    Max,
    Min,
    Disabled,
}

/// One scaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Pods { value: i32, period_s: i32 },
    Percent { value: i32, period_s: i32 },
}

impl Policy {
    fn period_ms(self) -> i64 {
        match self {
            Policy::Pods { period_s, .. } | Policy::Percent { period_s, .. } => {
                i64::from(period_s) * 1000
            }
        }
    }
}

/// The rules for one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rules {
    pub stabilization_s: i32,
    pub select: Select,
    pub policies: Vec<Policy>,
}

/// `spec.behavior` with the API server's defaults and the controller's downscale window
/// filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

fn rules(r: Option<&HPAScalingRules>, default: Rules) -> Rules {
    let Some(r) = r else { return default };
    let select = match r.select_policy.as_deref() {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        Some(_) => Select::Max,
        None => default.select,
    };
    let policies = match &r.policies {
        Some(p) if !p.is_empty() => p
            .iter()
            .map(|p| match p.type_.as_str() {
                "Pods" => Policy::Pods {
                    value: p.value,
                    period_s: p.period_seconds,
                },
                _ => Policy::Percent {
                    value: p.value,
                    period_s: p.period_seconds,
                },
            })
            .collect(),
        _ => default.policies,
    };
    Rules {
        stabilization_s: r
            .stabilization_window_seconds
            .unwrap_or(default.stabilization_s),
        select,
        policies,
    }
}

impl Behavior {
    /// The effective behavior of an HPA whose `spec.behavior` is set.
    pub(crate) fn from_spec(b: &HorizontalPodAutoscalerBehavior, downscale_window_s: i32) -> Self {
        Behavior {
            up: rules(b.scale_up.as_ref(), default_scale_up()),
            down: rules(
                b.scale_down.as_ref(),
                default_scale_down(downscale_window_s),
            ),
        }
    }
}

/// `GenerateHPAScaleUpRules` defaults.
pub(crate) fn default_scale_up() -> Rules {
    Rules {
        stabilization_s: 0,
        select: Select::Max,
        policies: vec![
            Policy::Pods {
                value: 4,
                period_s: 15,
            },
            Policy::Percent {
                value: 100,
                period_s: 15,
            },
        ],
    }
}

/// `GenerateHPAScaleDownRules` defaults, with the controller's stabilization window.
pub(crate) fn default_scale_down(window_s: i32) -> Rules {
    Rules {
        stabilization_s: window_s,
        select: Select::Max,
        policies: vec![Policy::Percent {
            value: 100,
            period_s: 15,
        }],
    }
}

/// A condition the normalization sets: (reason, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Normalized {
    pub replicas: i32,
    /// AbleToScale (always True here).
    pub able: (&'static str, &'static str),
    /// ScalingLimited: status, reason, message.
    pub limited: (bool, &'static str, &'static str),
}

/// Records a recommendation, replacing the oldest sample outside `cutoff` if any.
fn record(mem: &mut Memory, rec: Recommendation, is_old: impl Fn(&Recommendation) -> bool) {
    match mem.recommendations.iter().rposition(is_old) {
        Some(i) => mem.recommendations[i] = rec,
        None => mem.recommendations.push(rec),
    }
}

/// `recordInitialRecommendation`: the first sync remembers the current size.
pub(crate) fn record_initial(mem: &mut Memory, current: i32, now_ms: i64) {
    if mem.recommendations.is_empty() {
        mem.recommendations.push(Recommendation {
            replicas: current,
            at_ms: now_ms,
        });
    }
}

/// `normalizeDesiredReplicas`: the algorithm without `spec.behavior`.
pub(crate) fn normalize_legacy(
    mem: &mut Memory,
    now_ms: i64,
    current: i32,
    prenormalized: i32,
    min: i32,
    max: i32,
    downscale_window_ms: i64,
) -> Normalized {
    let cutoff = now_ms - downscale_window_ms;
    let mut stabilized = prenormalized;
    for r in &mem.recommendations {
        if r.at_ms >= cutoff && r.replicas > stabilized {
            stabilized = r.replicas;
        }
    }
    record(
        mem,
        Recommendation {
            replicas: prenormalized,
            at_ms: now_ms,
        },
        |r| r.at_ms < cutoff,
    );
    let able = if stabilized != prenormalized {
        (
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )
    } else {
        ("ReadyForNewScale", "recommended size matches current size")
    };
    let scale_up_limit = (2 * current).max(4);
    let (max_allowed, limit_reason, limit_message) = if max > scale_up_limit {
        (
            scale_up_limit,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        )
    } else {
        (
            max,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    };
    let (replicas, reason, message) = if stabilized < min {
        (
            min,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    } else if stabilized > max_allowed {
        (max_allowed, limit_reason, limit_message)
    } else {
        (
            stabilized,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    };
    Normalized {
        replicas,
        able,
        limited: (replicas != stabilized, reason, message),
    }
}

fn change_in_period(events: &[ScaleEvent], now_ms: i64, period_ms: i64) -> i32 {
    let cutoff = now_ms - period_ms;
    events
        .iter()
        .filter(|e| e.at_ms > cutoff)
        .map(|e| e.change)
        .sum()
}

fn scale_up_limit(mem: &Memory, now_ms: i64, current: i32, rules: &Rules) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select {
        Select::Disabled => return current,
        Select::Min => (i32::MAX, std::cmp::min),
        Select::Max => (i32::MIN, std::cmp::max),
    };
    for p in &rules.policies {
        let added = change_in_period(&mem.up_events, now_ms, p.period_ms());
        let deleted = change_in_period(&mem.down_events, now_ms, p.period_ms());
        let start = current - added + deleted;
        let proposed = match *p {
            Policy::Pods { value, .. } => start + value,
            Policy::Percent { value, .. } => {
                (f64::from(start) * (1.0 + f64::from(value) / 100.0)).ceil() as i32
            }
        };
        result = pick(result, proposed);
    }
    result
}

fn scale_down_limit(mem: &Memory, now_ms: i64, current: i32, rules: &Rules) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select {
        Select::Disabled => return current,
        Select::Min => (i32::MIN, std::cmp::max),
        Select::Max => (i32::MAX, std::cmp::min),
    };
    for p in &rules.policies {
        let added = change_in_period(&mem.up_events, now_ms, p.period_ms());
        let deleted = change_in_period(&mem.down_events, now_ms, p.period_ms());
        let start = current - added + deleted;
        let proposed = match *p {
            Policy::Pods { value, .. } => start - value,
            Policy::Percent { value, .. } => {
                (f64::from(start) * (1.0 - f64::from(value) / 100.0)) as i32
            }
        };
        result = pick(result, proposed);
    }
    result
}

/// `normalizeDesiredReplicasWithBehaviors`.
pub(crate) fn normalize_with_behavior(
    mem: &mut Memory,
    now_ms: i64,
    current: i32,
    prenormalized: i32,
    min: i32,
    max: i32,
    behavior: &Behavior,
) -> Normalized {
    // stabilizeRecommendationWithBehaviors
    let up_cutoff = now_ms - i64::from(behavior.up.stabilization_s) * 1000;
    let down_cutoff = now_ms - i64::from(behavior.down.stabilization_s) * 1000;
    let mut up = prenormalized;
    let mut down = prenormalized;
    for r in &mem.recommendations {
        if r.at_ms > up_cutoff {
            up = up.min(r.replicas);
        }
        if r.at_ms > down_cutoff {
            down = down.max(r.replicas);
        }
    }
    let stabilized = current.max(up).min(down);
    record(
        mem,
        Recommendation {
            replicas: prenormalized,
            at_ms: now_ms,
        },
        |r| r.at_ms < up_cutoff && r.at_ms < down_cutoff,
    );
    let able = if stabilized != prenormalized {
        if prenormalized >= current {
            (
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        }
    } else {
        ("ReadyForNewScale", "recommended size matches current size")
    };
    // convertDesiredReplicasWithBehaviorRate
    let mut result = (
        stabilized,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    );
    if stabilized > current {
        let limit = scale_up_limit(mem, now_ms, current, &behavior.up).max(current);
        let (allowed, reason, message) = if max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if stabilized > allowed {
            result = (allowed, reason, message);
        }
    } else if stabilized < current {
        let limit = scale_down_limit(mem, now_ms, current, &behavior.down).min(current);
        let (allowed, reason, message) = if min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if stabilized < allowed {
            result = (allowed, reason, message);
        }
    }
    Normalized {
        replicas: result.0,
        able,
        limited: (result.0 != stabilized, result.1, result.2),
    }
}

/// `storeScaleEvent`: remembers a rescale for the policies' periods (behavior only).
pub(crate) fn store_scale_event(
    mem: &mut Memory,
    behavior: Option<&Behavior>,
    now_ms: i64,
    previous: i32,
    new: i32,
) {
    let Some(b) = behavior else { return };
    let (events, rules) = if new > previous {
        (&mut mem.up_events, &b.up)
    } else {
        (&mut mem.down_events, &b.down)
    };
    let longest = rules
        .policies
        .iter()
        .map(|p| p.period_ms())
        .max()
        .unwrap_or(0);
    let cutoff = now_ms - longest;
    let event = ScaleEvent {
        change: (new - previous).abs(),
        at_ms: now_ms,
    };
    match events.iter().rposition(|e| e.at_ms < cutoff) {
        Some(i) => events[i] = event,
        None => events.push(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: CalcConfig = CalcConfig {
        tolerance: 0.1,
        cpu_initialization_period_ms: 300_000,
        initial_readiness_delay_ms: 30_000,
    };
    const NOW: i64 = 1_000_000;

    /// A pod Ready long ago (outside the CPU initialization period) using `milli` of a
    /// 200m request.
    fn pod(name: &str, milli: Option<i64>) -> PodInfo {
        PodInfo {
            name: name.to_string(),
            phase: "Running".to_string(),
            deleting: false,
            ready: Some((true, 0)),
            start_ms: Some(0),
            request_milli: Some(200),
            sample: milli.map(|v| Sample {
                value_milli: v,
                timestamp_ms: NOW - 1000,
                window_ms: 15_000,
            }),
        }
    }

    #[test]
    fn desired_is_ceil_of_current_times_ratio() {
        // The docs' example: 200m current against a 100m target doubles the replicas.
        let pods = [pod("a", Some(200)), pod("b", Some(200))];
        let c = resource_replicas(2, 50, &pods, NOW, &CFG).expect("computes");
        assert_eq!(c.utilization, 100);
        assert_eq!(c.replicas, 4);
        assert_eq!(c.average_milli, 200);
        // 50m against 100m halves them.
        let pods = [pod("a", Some(50)), pod("b", Some(50))];
        assert_eq!(
            resource_replicas(2, 50, &pods, NOW, &CFG).map(|c| c.replicas),
            Ok(1)
        );
        // ceil: 3 pods at 70 % of a 50 % target → ceil(3 × 1.4) = 5.
        let pods = [
            pod("a", Some(140)),
            pod("b", Some(140)),
            pod("c", Some(140)),
        ];
        assert_eq!(
            resource_replicas(3, 50, &pods, NOW, &CFG).map(|c| c.replicas),
            Ok(5)
        );
    }

    #[test]
    fn ratios_within_ten_percent_change_nothing() {
        // 54 % against 50 % is a ratio of 1.08: within tolerance.
        let pods = [pod("a", Some(108)), pod("b", Some(108))];
        assert_eq!(
            resource_replicas(2, 50, &pods, NOW, &CFG).map(|c| c.replicas),
            Ok(2)
        );
        // 56 % is 1.12: outside, ceil(2 × 1.12) = 3.
        let pods = [pod("a", Some(112)), pod("b", Some(112))];
        assert_eq!(
            resource_replicas(2, 50, &pods, NOW, &CFG).map(|c| c.replicas),
            Ok(3)
        );
    }

    #[test]
    fn missing_pods_dampen_both_directions() {
        // Scale-up: the pod without metrics counts as 0 %: (300+0)/400 = 75 % → 1.5 → 3.
        let pods = [pod("a", Some(300)), pod("b", None)];
        assert_eq!(
            resource_replicas(2, 50, &pods, NOW, &CFG).map(|c| c.replicas),
            Ok(3)
        );
        // Scale-down: counts as 100 %: (20+200)/400 = 55 % → 1.1 → within tolerance.
        let pods = [pod("a", Some(20)), pod("b", None)];
        assert_eq!(
            resource_replicas(2, 50, &pods, NOW, &CFG).map(|c| c.replicas),
            Ok(2)
        );
    }

    #[test]
    fn pending_pods_count_as_unready_on_scale_up() {
        let mut pending = pod("b", None);
        pending.phase = "Pending".to_string();
        // ready pod at 150 % (ratio 3) but one pending pod at 0 %: 75 % → ceil(1.5 × 2) = 3.
        let pods = [pod("a", Some(300)), pending];
        assert_eq!(
            resource_replicas(1, 50, &pods, NOW, &CFG).map(|c| c.replicas),
            Ok(3)
        );
    }

    #[test]
    fn fresh_samples_of_recently_ready_pods_are_ignored() {
        let mut young = pod("b", Some(200));
        young.start_ms = Some(NOW - 10_000);
        young.ready = Some((true, NOW - 5_000));
        // Its sample (NOW-1s) predates ready + window (NOW+10s): unready, ignored.
        let pods = [pod("a", Some(100)), young];
        let c = resource_replicas(2, 50, &pods, NOW, &CFG).expect("computes");
        assert_eq!(c.utilization, 50);
        assert_eq!(c.replicas, 2);
    }

    #[test]
    fn no_ready_metrics_is_an_error() {
        assert_eq!(
            resource_replicas(1, 50, &[], NOW, &CFG),
            Err(CalcError::NoPods)
        );
        // A pod still in its CPU initialization period and not Ready is ignored...
        let mut young = pod("a", Some(100));
        young.start_ms = Some(NOW - 10_000);
        young.ready = Some((false, NOW - 10_000));
        assert_eq!(
            resource_replicas(1, 50, &[young], NOW, &CFG),
            Err(CalcError::NoMetrics)
        );
        // ...but one that became unready long after starting still counts (groupPods).
        let mut old = pod("a", Some(100));
        old.ready = Some((false, NOW));
        assert_eq!(
            resource_replicas(1, 50, &[old], NOW, &CFG).map(|c| c.replicas),
            Ok(1)
        );
    }

    #[test]
    fn legacy_normalization_limits_scale_up_and_stabilizes_scale_down() {
        let mut mem = Memory::default();
        record_initial(&mut mem, 1, 0);
        // 1 → 10 wanted: limited to max(2×1, 4) = 4.
        let n = normalize_legacy(&mut mem, 15_000, 1, 10, 1, 10, 300_000);
        assert_eq!(n.replicas, 4);
        assert_eq!(
            n.limited,
            (
                true,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate"
            )
        );
        // Load gone: recommendation 1, but 10 was recommended within 5 minutes, so 10 it
        // is, again limited to 2 × 4 = 8.
        let n = normalize_legacy(&mut mem, 30_000, 4, 1, 1, 10, 300_000);
        assert_eq!(n.replicas, 8);
        assert_eq!(n.able.0, "ScaleDownStabilized");
        // After the window only the low recommendations remain.
        let n = normalize_legacy(&mut mem, 400_000, 8, 1, 1, 10, 300_000);
        assert_eq!(n.replicas, 1);
        assert_eq!(n.able.0, "ReadyForNewScale");
    }

    #[test]
    fn default_behavior_allows_four_pods_or_double_per_period() {
        let b = Behavior {
            up: default_scale_up(),
            down: default_scale_down(30),
        };
        let mut mem = Memory::default();
        record_initial(&mut mem, 1, 0);
        let n = normalize_with_behavior(&mut mem, 15_000, 1, 10, 1, 10, &b);
        assert_eq!(n.replicas, 5, "max(1 + 4, 1 × 200 %)");
        store_scale_event(&mut mem, Some(&b), 15_000, 1, 5);
        // Within the same 15 s period the start is still 1: no more room.
        let n = normalize_with_behavior(&mut mem, 20_000, 5, 10, 1, 10, &b);
        assert_eq!(n.replicas, 5);
        // Next period: max(5 + 4, 10) = 10.
        let n = normalize_with_behavior(&mut mem, 30_001, 5, 10, 1, 10, &b);
        assert_eq!(n.replicas, 10);
        store_scale_event(&mut mem, Some(&b), 30_001, 5, 10);
        // Scale-down waits out the 30 s window of higher recommendations.
        let n = normalize_with_behavior(&mut mem, 45_000, 10, 1, 1, 10, &b);
        assert_eq!(n.replicas, 10);
        assert_eq!(n.able.0, "ScaleDownStabilized");
        let n = normalize_with_behavior(&mut mem, 61_000, 10, 1, 1, 10, &b);
        assert_eq!(n.replicas, 1, "100 % per 15 s allows going straight to min");
    }

    #[test]
    fn behavior_defaults_fill_unset_rules() {
        let b = Behavior::from_spec(
            &HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(30),
                    ..HPAScalingRules::default()
                }),
                scale_up: None,
            },
            300,
        );
        assert_eq!(b.up, default_scale_up());
        assert_eq!(b.down, default_scale_down(30));
    }
}
