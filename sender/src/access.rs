//! The Kubernetes access the sender uses, for RBAC: the deployment's ClusterRole is checked
//! against [`required_access`].

use crate::config::UsageSource;

/// One RBAC rule the sender needs: API group (`""` for core), resource, verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// Resource (plural, or `resource/subresource`).
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
}

const LIST_WATCH: &[&str] = &["list", "watch"];

/// Everything the sender calls with `usage` as its usage source: list and watch of pods,
/// nodes, namespaces, events, HPAs, Deployments and ReplicaSets; plus `list` of metrics.k8s.io pods (`metrics-api`)
/// or `get` of `nodes/proxy` (`kubelet`).
pub fn required_access(usage: UsageSource) -> Vec<Access> {
    let mut access = vec![
        Access {
            group: "",
            resource: "pods",
            verbs: LIST_WATCH,
        },
        Access {
            group: "",
            resource: "nodes",
            verbs: LIST_WATCH,
        },
        Access {
            group: "",
            resource: "namespaces",
            verbs: LIST_WATCH,
        },
        Access {
            group: "",
            resource: "events",
            verbs: LIST_WATCH,
        },
        Access {
            group: "autoscaling",
            resource: "horizontalpodautoscalers",
            verbs: LIST_WATCH,
        },
        Access {
            group: "apps",
            resource: "deployments",
            verbs: LIST_WATCH,
        },
        Access {
            group: "apps",
            resource: "replicasets",
            verbs: LIST_WATCH,
        },
    ];
    match usage {
        UsageSource::MetricsApi => access.push(Access {
            group: "metrics.k8s.io",
            resource: "pods",
            verbs: &["list"],
        }),
        UsageSource::Kubelet => access.push(Access {
            group: "",
            resource: "nodes/proxy",
            verbs: &["get"],
        }),
        UsageSource::None => {}
    }
    access
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_source_decides_the_extra_rule() {
        let has = |usage, group, resource| {
            required_access(usage)
                .iter()
                .any(|a| a.group == group && a.resource == resource)
        };
        assert!(has(UsageSource::MetricsApi, "metrics.k8s.io", "pods"));
        assert!(!has(UsageSource::MetricsApi, "", "nodes/proxy"));
        assert!(has(UsageSource::Kubelet, "", "nodes/proxy"));
        assert!(!has(UsageSource::Kubelet, "metrics.k8s.io", "pods"));
        assert_eq!(required_access(UsageSource::None).len(), 7);
    }
}
