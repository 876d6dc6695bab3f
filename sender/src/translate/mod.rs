//! Translators: pure functions from one Kubernetes object to its [`SeriesSet`], one module
//! per kind. Label sets follow `docs/metrics.md` exactly; the helpers here are the parts of
//! kube-state-metrics' conventions more than one kind shares.
//!
//! [`SeriesSet`]: crate::series::SeriesSet

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub mod deployments;
pub mod hpa;
pub mod namespaces;
pub mod nodes;
pub mod pods;

/// A Kubernetes timestamp as Unix seconds (whole seconds, as kube-state-metrics reports).
pub fn unix_seconds(time: &Time) -> f64 {
    time.0.as_second() as f64
}

/// kube-state-metrics' `resource` and `unit` labels for a resource name, or `None` for a
/// name it does not report: `cpu`/`core`; `memory`, `storage`, `ephemeral-storage`,
/// `hugepages-*` and `attachable-volumes-*` in `byte`; extended resources (`vendor.com/gpu`)
/// and, for nodes (`pods_is_a_resource`), `pods` as `integer`. Names are sanitised to label
/// values the way kube-state-metrics does (`nvidia.com/gpu` → `nvidia_com_gpu`).
pub fn resource_label(
    resource: &str,
    pods_is_a_resource: bool,
) -> Option<(Cow<'_, str>, &'static str)> {
    let unit = match resource {
        "cpu" => "core",
        "memory" | "storage" | "ephemeral-storage" => "byte",
        "pods" if pods_is_a_resource => "integer",
        r if r.starts_with("hugepages-") || r.starts_with("attachable-volumes-") => "byte",
        r if is_extended_resource(r) => "integer",
        _ => return None,
    };
    Some((sanitize(resource), unit))
}

/// An extended resource: a domain-prefixed name outside `kubernetes.io/` (Kubernetes'
/// `IsExtendedResourceName`, whose quota form `requests.<name>` must also be a qualified
/// name: at most 63 characters after the prefix, alphanumeric at both ends).
fn is_extended_resource(name: &str) -> bool {
    let Some((prefix, rest)) = name.split_once('/') else {
        return false;
    };
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !name.contains("kubernetes.io/")
        && !name.starts_with("requests.")
        && !prefix.is_empty()
        && prefix.len() + "requests.".len() <= 253
        && (1..=63).contains(&rest.len())
        && rest.chars().all(valid_char)
        && rest.starts_with(|c: char| c.is_ascii_alphanumeric())
        && rest.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Replaces characters invalid in a Prometheus label name with `_` (kube-state-metrics'
/// `SanitizeLabelName`, applied to resource names such as `nvidia.com/gpu`).
fn sanitize(s: &str) -> Cow<'_, str> {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_labels_follow_kube_state_metrics() {
        let label = |r| resource_label(r, false);
        assert_eq!(label("cpu"), Some((Cow::Borrowed("cpu"), "core")));
        assert_eq!(
            label("ephemeral-storage"),
            Some((Cow::Owned("ephemeral_storage".to_owned()), "byte"))
        );
        assert_eq!(
            label("hugepages-2Mi"),
            Some((Cow::Owned("hugepages_2Mi".to_owned()), "byte"))
        );
        assert_eq!(
            label("example.com/foo"),
            Some((Cow::Owned("example_com_foo".to_owned()), "integer"))
        );
        // pods is a node resource only; unknown native names and kubernetes.io/ names are
        // not reported
        assert_eq!(label("pods"), None);
        assert_eq!(
            resource_label("pods", true),
            Some((Cow::Borrowed("pods"), "integer"))
        );
        assert_eq!(label("widgets"), None);
        assert_eq!(label("kubernetes.io/something"), None);
        assert_eq!(label("example.com/"), None);
    }

    #[test]
    fn timestamps_are_whole_unix_seconds() {
        let t = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("time"));
        assert_eq!(unix_seconds(&t), 1_700_000_000.0);
    }
}
