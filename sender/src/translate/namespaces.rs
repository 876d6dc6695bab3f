//! Namespace → `kube_namespace_status_phase`, one-hot over `Active` and `Terminating`.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Namespace;

use crate::family::Family;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};

/// Namespace phases.
pub const NAMESPACE_PHASES: [&str; 2] = ["Active", "Terminating"];

/// The store key of a namespace, or `None` when it has no name.
pub fn namespace_key(ns: &Namespace) -> Option<ObjectKey> {
    let name = ns.metadata.name.as_deref()?;
    Some(ObjectKey::new(ObjectKind::Namespace, "", name))
}

/// The series of a namespace. A namespace without a name yields nothing.
pub fn namespace_series(ns: &Namespace) -> SeriesSet<'_> {
    let mut set = SeriesSet::new();
    let Some(name) = ns.metadata.name.as_deref() else {
        return set;
    };
    let phase = ns
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default();
    set.push_one_hot(
        Family::NamespaceStatusPhase,
        &[Cow::Borrowed(name)],
        &NAMESPACE_PHASES,
        phase,
    );
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::namespace;

    #[test]
    fn phase_is_one_hot() {
        assert_eq!(
            namespace_series(&namespace("team-a", "Terminating")).render(),
            [
                r#"kube_namespace_status_phase{namespace="team-a",phase="Active"} 0"#,
                r#"kube_namespace_status_phase{namespace="team-a",phase="Terminating"} 1"#,
            ]
        );
    }
}
