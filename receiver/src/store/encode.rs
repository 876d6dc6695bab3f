//! The clusters' series as one exposition: the [`DataView`]s taken from each cluster merged
//! family by family. Families of the same name from different clusters share one header
//! (both formats forbid repeating a family), in name order, clusters in name order.
//!
//! Family names never clash in the store (`names`), but views are taken one cluster after
//! another: a cluster may have let go of a name and another taken it in between. So the
//! encoder checks again and leaves out what would clash with what it writes (a family of
//! another kind under a name already written; a gauge `x_total` beside a counter `x`),
//! keeping the exposition valid for that one scrape.

use std::collections::BTreeMap;

use kube_relay_proto::MetricKind;

use super::data::{DataView, FamilyView};
use crate::exposition::{Format, PageWriter, ReaderGone, push_header, push_value};

/// Writes the series of `views` (one per cluster, in cluster order) to `out`.
///
/// # Errors
/// [`ReaderGone`] when `out`'s reader went away; the page is left unfinished.
pub(crate) fn encode(
    views: &[DataView],
    format: Format,
    out: &mut PageWriter<'_>,
) -> Result<(), ReaderGone> {
    let mut by_name: BTreeMap<&str, Vec<(&DataView, &FamilyView)>> = BTreeMap::new();
    for view in views {
        for family in &view.families {
            by_name
                .entry(&family.name)
                .or_default()
                .push((view, family));
        }
    }
    for (name, families) in &by_name {
        let (_, first) = families[0];
        let counter_named_like_its_samples = first.kind == MetricKind::Gauge
            && name.strip_suffix("_total").is_some_and(|stem| {
                by_name
                    .get(stem)
                    .is_some_and(|other| other[0].1.kind == MetricKind::Counter)
            });
        if counter_named_like_its_samples {
            continue;
        }
        push_header(out.text(), name, &first.help, first.kind, format);
        // A family another cluster defines with a different type cannot share the header;
        // its series are left out rather than mislabelled.
        for (view, family) in families.iter().filter(|(_, f)| f.kind == first.kind) {
            for (labels, sample) in view.samples(family) {
                let text = out.text();
                text.push_str(&family.head);
                text.push_str(labels);
                text.push_str("} ");
                push_value(text, sample);
                text.push('\n');
                out.line_done()?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::data::tests::one_family_snapshot;
    use crate::store::data::{ClusterData, Live};
    use crate::store::names::FamilyNames;

    /// Data of `cluster` holding one family, its name taken in a table of its own (as if
    /// the other clusters' names had been let go meanwhile).
    fn data(cluster: &str, name: &str, kind: MetricKind) -> ClusterData {
        let names = Mutex::new(FamilyNames::default());
        let mut data = ClusterData::default();
        let mut events = Vec::new();
        let live = Live {
            names: &names,
            events: &mut events,
        };
        data.apply(cluster, &one_family_snapshot(name, kind), 10, Some(live))
            .expect("apply");
        data
    }

    fn encoded(datas: &[ClusterData]) -> String {
        let views: Vec<_> = datas.iter().map(ClusterData::view).collect();
        let mut out = String::new();
        let mut deliver = |piece: String| {
            out.push_str(&piece);
            Ok(String::new())
        };
        let mut writer = PageWriter::in_pieces(8, &mut deliver);
        encode(&views, Format::Text, &mut writer).expect("nobody goes away");
        writer.finish().expect("nobody goes away");
        out
    }

    #[test]
    fn families_taken_between_two_views_never_clash_in_one_scrape() {
        let text = encoded(&[
            data("a", "x", MetricKind::Gauge),
            data("b", "x", MetricKind::Counter),
        ]);
        assert_eq!(
            text,
            "# HELP x x help\n# TYPE x gauge\nx{cluster=\"a\"} 1\n"
        );
        let text = encoded(&[
            data("a", "x_total", MetricKind::Gauge),
            data("b", "x", MetricKind::Counter),
        ]);
        assert_eq!(
            text,
            "# HELP x_total x help\n# TYPE x_total counter\nx_total{cluster=\"b\"} 1\n"
        );
    }
}
