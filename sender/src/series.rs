//! What translators produce: an object's *series set*.
//!
//! A translator maps one Kubernetes object to every sample it stands for
//! ([`SeriesSet`]); the [`SeriesStore`](crate::store::SeriesStore) diffs that set against
//! the object's previous one. Label values borrow from the object where they can, so a
//! translation allocates little beyond the vector itself.

use std::borrow::Cow;
use std::fmt;

use crate::family::Family;

/// The kinds of things that own series in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A Pod (status, containers, resources).
    Pod,
    /// A HorizontalPodAutoscaler (spec, status, conditions).
    Hpa,
    /// A Node.
    Node,
    /// A Namespace.
    Namespace,
    /// A Deployment.
    Deployment,
    /// A ReplicaSet.
    ReplicaSet,
    /// The usage series of one pod (from metrics.k8s.io or the kubelet).
    PodUsage,
    /// The scaling-event counters of one HPA (from the scaling ledger).
    ScalingEvents,
    /// The sender's own metrics.
    SelfMetrics,
}

impl ObjectKind {
    /// A short, bounded label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Pod => "pods",
            ObjectKind::Hpa => "horizontalpodautoscalers",
            ObjectKind::Node => "nodes",
            ObjectKind::Namespace => "namespaces",
            ObjectKind::Deployment => "deployments",
            ObjectKind::ReplicaSet => "replicasets",
            ObjectKind::PodUsage => "podmetrics",
            ObjectKind::ScalingEvents => "events",
            ObjectKind::SelfMetrics => "self",
        }
    }
}

/// Identifies an owner of series: kind, namespace (empty when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// What kind of owner.
    pub kind: ObjectKind,
    /// Namespace, or empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(kind: ObjectKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
        }
    }
}

/// One sample: a family, its label values (in [`Family::label_names`] order) and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The family.
    pub family: Family,
    /// Label values, one per [`Family::label_names`] entry.
    pub labels: Vec<Cow<'a, str>>,
    /// The value.
    pub value: f64,
}

/// Every sample one object stands for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesSet<'a> {
    samples: Vec<Sample<'a>>,
}

impl<'a> SeriesSet<'a> {
    /// An empty set.
    pub fn new() -> Self {
        SeriesSet::default()
    }

    /// Adds a sample.
    ///
    /// # Panics
    /// In debug builds, when the number of label values does not match the family (a
    /// translator bug, never data-dependent).
    pub fn push<I, L>(&mut self, family: Family, labels: I, value: f64)
    where
        I: IntoIterator<Item = L>,
        L: Into<Cow<'a, str>>,
    {
        let labels: Vec<Cow<'a, str>> = labels.into_iter().map(Into::into).collect();
        debug_assert_eq!(
            labels.len(),
            family.label_names().len(),
            "label values of {family:?}"
        );
        self.samples.push(Sample {
            family,
            labels,
            value,
        });
    }

    /// Adds one sample per choice, 1 for the one equal to `actual` and 0 for the others
    /// (kube-state-metrics' one-hot encoding of an enum), with `prefix` labels before the
    /// choice label.
    pub fn push_one_hot(
        &mut self,
        family: Family,
        prefix: &[Cow<'a, str>],
        choices: &[&'static str],
        actual: &str,
    ) {
        for choice in choices {
            let labels = prefix.iter().cloned().chain([Cow::Borrowed(*choice)]);
            self.push(family, labels, f64::from(u8::from(*choice == actual)));
        }
    }

    /// The same set with every label owned.
    pub fn into_owned(self) -> SeriesSet<'static> {
        SeriesSet {
            samples: self
                .samples
                .into_iter()
                .map(|s| Sample {
                    family: s.family,
                    labels: s
                        .labels
                        .into_iter()
                        .map(|l| Cow::Owned(l.into_owned()))
                        .collect(),
                    value: s.value,
                })
                .collect(),
        }
    }

    /// The samples.
    pub fn samples(&self) -> &[Sample<'a>] {
        &self.samples
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when the object stands for no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Exposition-style lines (`name{label="value",...} value`), sorted: what tests compare.
    pub fn render(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .samples
            .iter()
            .map(|s| render_sample(s.family, s.labels.iter().map(|l| l.as_ref()), s.value))
            .collect();
        lines.sort();
        lines
    }
}

/// Renders one sample as an exposition line (sample name with `_total` for counters).
pub fn render_sample<'l>(
    family: Family,
    values: impl Iterator<Item = &'l str>,
    value: f64,
) -> String {
    let labels: Vec<String> = family
        .label_names()
        .iter()
        .zip(values)
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect();
    if labels.is_empty() {
        format!("{} {value}", family.sample_name())
    } else {
        format!("{}{{{}}} {value}", family.sample_name(), labels.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hot_marks_exactly_the_actual_choice() {
        let mut set = SeriesSet::new();
        let prefix = [Cow::Borrowed("ns"), Cow::Borrowed("p"), Cow::Borrowed("u")];
        set.push_one_hot(
            Family::PodStatusReady,
            &prefix,
            &["true", "false", "unknown"],
            "false",
        );
        assert_eq!(
            set.render(),
            [
                r#"kube_pod_status_ready{namespace="ns",pod="p",uid="u",condition="false"} 1"#,
                r#"kube_pod_status_ready{namespace="ns",pod="p",uid="u",condition="true"} 0"#,
                r#"kube_pod_status_ready{namespace="ns",pod="p",uid="u",condition="unknown"} 0"#,
            ]
        );
    }

    #[test]
    fn counters_render_with_total_and_label_free_families_without_braces() {
        let mut set = SeriesSet::new();
        set.push(Family::SenderReconnects, Vec::<&str>::new(), 3.0);
        set.push(Family::SenderDroppedUpdates, ["spool_full"], 2.5);
        assert_eq!(
            set.render(),
            [
                r#"relay_sender_dropped_updates_total{reason="spool_full"} 2.5"#,
                "relay_sender_reconnects_total 3",
            ]
        );
    }
}
