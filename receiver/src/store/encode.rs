//! The clusters' series as one exposition: the [`DataView`]s taken from each cluster merged
//! family by family. Families of the same name from different clusters share one header
//! (both formats forbid repeating a family), in name order, clusters in name order.

use std::collections::BTreeMap;

use super::data::{DataView, FamilyView};
use crate::exposition::{Format, push_header, push_value};

/// Appends the series of `views` (one per cluster, in cluster order) to `out`.
pub(crate) fn encode(views: &[DataView], format: Format, out: &mut String) {
    let mut by_name: BTreeMap<&str, Vec<(&DataView, &FamilyView)>> = BTreeMap::new();
    for view in views {
        for family in &view.families {
            by_name
                .entry(&family.name)
                .or_default()
                .push((view, family));
        }
    }
    let mut value = String::with_capacity(32);
    for (name, families) in by_name {
        let (_, first) = families[0];
        push_header(out, name, &first.help, first.kind, format);
        // A family another cluster defines with a different type cannot share the header;
        // its series are left out rather than mislabelled.
        for (view, family) in families.iter().filter(|(_, f)| f.kind == first.kind) {
            for (prefix, sample) in view.samples(family) {
                value.clear();
                push_value(&mut value, sample);
                out.reserve(prefix.len() + value.len() + 2);
                out.push_str(prefix);
                out.push(' ');
                out.push_str(&value);
                out.push('\n');
            }
        }
    }
}
