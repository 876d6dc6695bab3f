//! Namespace → `kube_namespace_status_phase`, one-hot over `Active` and `Terminating`, and
//! `kube_namespace_created` (dashboards count namespaces with it).

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Namespace;

use crate::family::Family;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};
use crate::translate::unix_seconds;

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
    if let Some(created) = ns.metadata.creation_timestamp.as_ref() {
        set.push(Family::NamespaceCreated, [name], unix_seconds(created));
    }
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

    #[test]
    fn creation_time_when_the_server_set_one() {
        let mut ns = namespace("team-b", "Active");
        ns.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("time"),
            ));
        assert!(
            namespace_series(&ns)
                .render()
                .contains(&r#"kube_namespace_created{namespace="team-b"} 1700000000"#.to_owned())
        );
    }
}
