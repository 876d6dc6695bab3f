//! What the status page shows of a cluster's data beyond counters: pods per namespace and
//! phase, each HPA's replicas, and whether the sender reads its API server. Read at render
//! time from a view (labels parsed back from the series' pre-rendered labels), so the
//! store keeps nothing extra for a page that is rarely loaded. Only the families shown are
//! walked, and [`Detail::Source`] walks only the two small source-health families, so the
//! page can count frozen clusters among thousands without reading their pods.

use std::collections::BTreeMap;

use super::data::DataView;
use super::labels::label_value;

const POD_PHASE: &str = "kube_pod_status_phase";
const HPA_CURRENT: &str = "kube_horizontalpodautoscaler_status_current_replicas";
const HPA_DESIRED: &str = "kube_horizontalpodautoscaler_status_desired_replicas";
const HPA_MIN: &str = "kube_horizontalpodautoscaler_spec_min_replicas";
const HPA_MAX: &str = "kube_horizontalpodautoscaler_spec_max_replicas";
const API_UP: &str = "relay_sender_api_up";
const WATCH_UP: &str = "relay_sender_watch_up";

/// How much of a cluster's data to summarise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Only whether the source is up ([`ClusterSummary::api_up`] and `watches`).
    Source,
    /// Everything: pods and HPAs too.
    Full,
}

/// A cluster's data as the status page shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterSummary {
    /// Pods per namespace and phase (`kube_pod_status_phase` series at 1).
    pub pods: BTreeMap<String, BTreeMap<String, u64>>,
    /// The HPAs, by namespace and name.
    pub hpas: Vec<HpaSummary>,
    /// Whether the sender's API server answers (`relay_sender_api_up`); `None` when the
    /// sender does not say (an older sender).
    pub api_up: Option<bool>,
    /// Each watched resource and whether its watch is established
    /// (`relay_sender_watch_up`).
    pub watches: Vec<(String, bool)>,
}

impl ClusterSummary {
    /// Pods per phase, all namespaces together.
    pub fn pods_per_phase(&self) -> BTreeMap<&str, u64> {
        let mut total = BTreeMap::new();
        for (phase, n) in self.pods.values().flatten() {
            *total.entry(phase.as_str()).or_default() += n;
        }
        total
    }

    /// The resources whose watch is down.
    pub fn watches_down(&self) -> impl Iterator<Item = &str> {
        self.watches
            .iter()
            .filter(|(_, up)| !up)
            .map(|(resource, _)| resource.as_str())
    }

    /// True when the sender says its source is unreachable or a watch is down: the
    /// cluster's relayed state is (partly) frozen.
    pub fn source_down(&self) -> bool {
        self.api_up == Some(false) || self.watches_down().next().is_some()
    }
}

/// One HPA's replicas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HpaSummary {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `status.currentReplicas`.
    pub current: Option<f64>,
    /// `status.desiredReplicas`.
    pub desired: Option<f64>,
    /// `spec.minReplicas`.
    pub min: Option<f64>,
    /// `spec.maxReplicas`.
    pub max: Option<f64>,
}

/// Summarises one cluster's view to `detail`.
pub(crate) fn summarise(view: &DataView, detail: Detail) -> ClusterSummary {
    let mut summary = ClusterSummary::default();
    let mut hpas: BTreeMap<(String, String), HpaSummary> = BTreeMap::new();
    let shown = |name: &str| match detail {
        Detail::Source => matches!(name, API_UP | WATCH_UP),
        Detail::Full => matches!(
            name,
            API_UP | WATCH_UP | POD_PHASE | HPA_CURRENT | HPA_DESIRED | HPA_MIN | HPA_MAX
        ),
    };
    for family in view.families.iter().filter(|f| shown(&f.name)) {
        let name = &*family.name;
        for (labels, value) in view.samples(family) {
            let label = |key: &str| label_value(labels, key).unwrap_or_default();
            match name {
                POD_PHASE if value == 1.0 => {
                    *summary
                        .pods
                        .entry(label("namespace"))
                        .or_default()
                        .entry(label("phase"))
                        .or_default() += 1;
                }
                HPA_CURRENT | HPA_DESIRED | HPA_MIN | HPA_MAX => {
                    let (namespace, hpa) = (label("namespace"), label("horizontalpodautoscaler"));
                    let entry = hpas
                        .entry((namespace.clone(), hpa.clone()))
                        .or_insert_with(|| HpaSummary {
                            namespace,
                            name: hpa,
                            ..HpaSummary::default()
                        });
                    let field = match name {
                        HPA_CURRENT => &mut entry.current,
                        HPA_DESIRED => &mut entry.desired,
                        HPA_MIN => &mut entry.min,
                        _ => &mut entry.max,
                    };
                    *field = Some(value);
                }
                API_UP => summary.api_up = Some(value == 1.0),
                WATCH_UP => summary.watches.push((label("resource"), value == 1.0)),
                _ => {}
            }
        }
    }
    summary.watches.sort();
    summary.hpas = hpas.into_values().collect();
    summary
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kube_relay_proto::{Batch, MetricKind};

    use super::*;
    use crate::store::data::tests::{family, series, snapshot, updates};
    use crate::store::data::{ClusterData, Live};
    use crate::store::names::FamilyNames;

    #[test]
    fn pods_hpas_and_source_health_are_summarised() {
        let batch = Batch {
            families: vec![
                family(0, POD_PHASE, MetricKind::Gauge),
                family(1, HPA_CURRENT, MetricKind::Gauge),
                family(2, HPA_DESIRED, MetricKind::Gauge),
                family(3, API_UP, MetricKind::Gauge),
                family(4, WATCH_UP, MetricKind::Gauge),
            ],
            series: vec![
                series(
                    0,
                    0,
                    &[("namespace", "shop"), ("pod", "a"), ("phase", "Running")],
                ),
                series(
                    1,
                    0,
                    &[("namespace", "shop"), ("pod", "a"), ("phase", "Pending")],
                ),
                series(
                    2,
                    0,
                    &[("namespace", "shop"), ("pod", "b"), ("phase", "Running")],
                ),
                series(
                    3,
                    0,
                    &[("namespace", "ops"), ("pod", "c"), ("phase", "Pending")],
                ),
                series(
                    4,
                    1,
                    &[("namespace", "shop"), ("horizontalpodautoscaler", "web")],
                ),
                series(
                    5,
                    2,
                    &[("namespace", "shop"), ("horizontalpodautoscaler", "web")],
                ),
                series(6, 3, &[]),
                series(7, 4, &[("resource", "pods")]),
                series(8, 4, &[("resource", "nodes")]),
            ],
            updates: updates(&[
                (0, 1.0),
                (1, 0.0),
                (2, 1.0),
                (3, 1.0),
                (4, 2.0),
                (5, 3.0),
                (6, 1.0),
                (7, 0.0),
                (8, 1.0),
            ]),
            ..snapshot(1, 0)
        };
        let names = Mutex::new(FamilyNames::default());
        let mut events = Vec::new();
        let mut data = ClusterData::default();
        let live = Live {
            names: &names,
            events: &mut events,
        };
        data.apply("c", &batch, 100, Some(live)).expect("apply");
        let summary = summarise(&data.view(), Detail::Full);
        assert_eq!(
            summary.pods,
            BTreeMap::from([
                (
                    "ops".to_owned(),
                    BTreeMap::from([("Pending".to_owned(), 1)])
                ),
                (
                    "shop".to_owned(),
                    BTreeMap::from([("Running".to_owned(), 2)])
                ),
            ])
        );
        assert_eq!(
            summary.pods_per_phase(),
            BTreeMap::from([("Pending", 1), ("Running", 2)])
        );
        assert_eq!(
            summary.hpas,
            vec![HpaSummary {
                namespace: "shop".into(),
                name: "web".into(),
                current: Some(2.0),
                desired: Some(3.0),
                min: None,
                max: None,
            }]
        );
        assert_eq!(summary.api_up, Some(true));
        assert_eq!(
            summary.watches,
            vec![("nodes".to_owned(), true), ("pods".to_owned(), false)]
        );
        assert!(summary.source_down());
        assert_eq!(summary.watches_down().collect::<Vec<_>>(), ["pods"]);

        let source = summarise(&data.view(), Detail::Source);
        assert!(
            source.pods.is_empty() && source.hpas.is_empty(),
            "{source:?}"
        );
        assert_eq!(
            (source.api_up, source.watches),
            (summary.api_up, summary.watches)
        );
    }
}
