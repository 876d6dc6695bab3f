//! Family names across clusters: every name a family puts into `/metrics` belongs to one
//! definition, so no cluster can corrupt or hide another's exposition.
//!
//! A gauge `x` writes samples named `x`; a counter `x` writes `x_total` under family `x`
//! (OpenMetrics) or `x_total` (Prometheus text). So a family clashes with another when they
//! share the name with another kind, or when a gauge is named like a counter's samples
//! (gauge `x_total` against counter `x`): both would put `x_total` under two headers, an
//! invalid exposition Prometheus refuses whole. The first definition of a name wins; a
//! clashing one is refused (its series are kept, so the sender's ids stay valid, but never
//! exposed) until the sender's next snapshot finds the name free.
//!
//! Families of one name and kind from many clusters share one header. Their help texts may
//! differ (senders of two versions during a rolling upgrade): that is no clash, the header
//! shows one of them.
//!
//! Only live data holds names: a snapshot being staged takes its names when it replaces the
//! live data, after the data it replaces gave theirs back, so a sender may change a
//! family's kind from one snapshot to the next.

use std::collections::HashMap;

use kube_relay_proto::MetricKind;

/// Who holds a family name, and how many live families (of any clusters) share it.
#[derive(Debug)]
struct Holder {
    kind: MetricKind,
    /// The cluster whose definition took the name (named in clash messages).
    first_cluster: Box<str>,
    families: usize,
}

/// The family names held by live data, across all clusters.
#[derive(Debug, Default)]
pub(crate) struct FamilyNames {
    names: HashMap<Box<str>, Holder>,
}

impl FamilyNames {
    /// Takes `name` for a family of `kind` defined by `cluster`.
    ///
    /// # Errors
    /// Why the definition clashes with a family already exposed.
    pub(crate) fn acquire(
        &mut self,
        name: &str,
        kind: MetricKind,
        cluster: &str,
    ) -> Result<(), String> {
        if let Some(clash) = self.clash(name, kind) {
            return Err(clash);
        }
        self.names
            .entry(name.into())
            .or_insert_with(|| Holder {
                kind,
                first_cluster: cluster.into(),
                families: 0,
            })
            .families += 1;
        Ok(())
    }

    /// Gives back a name taken by [`FamilyNames::acquire`].
    pub(crate) fn release(&mut self, name: &str) {
        if let Some(holder) = self.names.get_mut(name) {
            holder.families = holder.families.saturating_sub(1);
            if holder.families == 0 {
                self.names.remove(name);
            }
        }
    }

    fn clash(&self, name: &str, kind: MetricKind) -> Option<String> {
        if let Some(holder) = self.names.get(name)
            && holder.kind != kind
        {
            return Some(format!(
                "{} {name:?} clashes with the {} {name:?} cluster {:?} defined first",
                kind_name(kind),
                kind_name(holder.kind),
                holder.first_cluster
            ));
        }
        let (counter, gauge) = match kind {
            MetricKind::Counter => (name.to_owned(), format!("{name}_total")),
            MetricKind::Gauge => (name.strip_suffix("_total")?.to_owned(), name.to_owned()),
        };
        let (other_name, other_kind) = match kind {
            MetricKind::Counter => (gauge.as_str(), MetricKind::Gauge),
            MetricKind::Gauge => (counter.as_str(), MetricKind::Counter),
        };
        let holder = self.names.get(other_name)?;
        (holder.kind == other_kind).then(|| {
            format!(
                "{} {name:?} and the {} {other_name:?} cluster {:?} defined first would both \
                 write samples named {gauge:?}",
                kind_name(kind),
                kind_name(other_kind),
                holder.first_cluster
            )
        })
    }
}

fn kind_name(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_one_kind_across_clusters() {
        let mut names = FamilyNames::default();
        names.acquire("x", MetricKind::Gauge, "a").expect("first");
        names
            .acquire("x", MetricKind::Gauge, "b")
            .expect("same kind shares");
        let err = names
            .acquire("x", MetricKind::Counter, "c")
            .expect_err("other kind");
        assert_eq!(
            err,
            "counter \"x\" clashes with the gauge \"x\" cluster \"a\" defined first"
        );
        names.release("x");
        names.release("x");
        names
            .acquire("x", MetricKind::Counter, "c")
            .expect("free again");
    }

    #[test]
    fn a_gauge_named_like_a_counters_samples_clashes_either_way() {
        let mut names = FamilyNames::default();
        names
            .acquire("x", MetricKind::Counter, "a")
            .expect("counter");
        let err = names
            .acquire("x_total", MetricKind::Gauge, "b")
            .expect_err("gauge x_total");
        assert!(err.contains("samples named \"x_total\""), "{err}");
        names.release("x");
        names
            .acquire("x_total", MetricKind::Gauge, "b")
            .expect("gauge");
        let err = names
            .acquire("x", MetricKind::Counter, "a")
            .expect_err("counter x");
        assert_eq!(
            err,
            "counter \"x\" and the gauge \"x_total\" cluster \"b\" defined first would both \
             write samples named \"x_total\""
        );
        names
            .acquire("y_total", MetricKind::Gauge, "a")
            .expect("no counter y");
    }
}
