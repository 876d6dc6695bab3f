//! The API surface: which resources exist in which group/version, their verbs and selectable
//! fields, and the legacy discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/G/V`,
//! `/version`) built from that one table.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ServerAddressByClientCIDR,
};
use k8s_openapi::apimachinery::pkg::version::Info;

/// The kinds the store holds (one map and one watch history each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Namespace,
    Node,
    Pod,
    Deployment,
    ReplicaSet,
    Hpa,
    Event,
}

impl Kind {
    /// Every stored kind, in index order.
    pub(crate) const ALL: [Kind; 7] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::Hpa,
        Kind::Event,
    ];

    /// Position in [`Kind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Which serialization of a stored object a resource serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// The object as stored (core/v1 for events).
    Primary,
    /// `events.k8s.io/v1` for core events.
    EventsV1,
}

/// Where a resource's objects come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The store, in one of its views.
    Store(Kind, View),
    /// metrics.k8s.io PodMetrics, computed from the load model.
    PodMetrics,
    /// metrics.k8s.io NodeMetrics, computed from the load model.
    NodeMetrics,
}

/// One REST resource.
#[derive(Debug)]
pub(crate) struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub source: Source,
    /// Field selectors accepted besides `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
    /// Subresources served: (name, verbs).
    pub subresources: &'static [(&'static str, &'static [&'static str])],
}

impl ResourceDef {
    /// `v1` or `group/version`.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `PodList`, `EventList`, ...
    pub(crate) fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether `field` may be used in a field selector on this resource.
    pub(crate) fn selectable(&self, field: &str) -> bool {
        field == "metadata.name"
            || (self.namespaced && field == "metadata.namespace")
            || self.fields.contains(&field)
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const STATUS: (&str, &[&str]) = ("status", &["get"]);
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Every resource served, in discovery order.
pub(crate) static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        verbs: READ,
        short_names: &["ev"],
        categories: &[],
        source: Source::Store(Kind::Event, View::Primary),
        fields: EVENT_FIELDS,
        subresources: &[],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        verbs: READ,
        short_names: &["ns"],
        categories: &[],
        source: Source::Store(Kind::Namespace, View::Primary),
        fields: &["status.phase"],
        subresources: &[STATUS],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        verbs: READ,
        short_names: &["no"],
        categories: &[],
        source: Source::Store(Kind::Node, View::Primary),
        fields: &["spec.unschedulable"],
        subresources: &[("proxy", &["get"]), STATUS],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        verbs: &["delete", "get", "list", "watch"],
        short_names: &["po"],
        categories: &["all"],
        source: Source::Store(Kind::Pod, View::Primary),
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        subresources: &[STATUS],
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        verbs: READ,
        short_names: &["deploy"],
        categories: &["all"],
        source: Source::Store(Kind::Deployment, View::Primary),
        fields: &[],
        subresources: &[("scale", &["get", "patch", "update"]), STATUS],
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        verbs: READ,
        short_names: &["rs"],
        categories: &["all"],
        source: Source::Store(Kind::ReplicaSet, View::Primary),
        fields: &["status.replicas"],
        subresources: &[STATUS],
    },
    ResourceDef {
        group: "autoscaling",
        version: "v2",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        verbs: READ,
        short_names: &["hpa"],
        categories: &["all"],
        source: Source::Store(Kind::Hpa, View::Primary),
        fields: &[],
        subresources: &[STATUS],
    },
    ResourceDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        verbs: READ,
        short_names: &["ev"],
        categories: &[],
        source: Source::Store(Kind::Event, View::EventsV1),
        fields: EVENT_FIELDS,
        subresources: &[],
    },
    ResourceDef {
        group: "metrics.k8s.io",
        version: "v1beta1",
        plural: "pods",
        singular: "",
        kind: "PodMetrics",
        namespaced: true,
        verbs: &["get", "list"],
        short_names: &[],
        categories: &[],
        source: Source::PodMetrics,
        fields: &[],
        subresources: &[],
    },
    ResourceDef {
        group: "metrics.k8s.io",
        version: "v1beta1",
        plural: "nodes",
        singular: "",
        kind: "NodeMetrics",
        namespaced: false,
        verbs: &["get", "list"],
        short_names: &[],
        categories: &[],
        source: Source::NodeMetrics,
        fields: &[],
        subresources: &[],
    },
];

/// The groups besides the legacy core group, in discovery order: (group, version).
const GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("events.k8s.io", "v1"),
    ("autoscaling", "v2"),
    ("metrics.k8s.io", "v1beta1"),
];

/// Looks a resource up by group, version and plural.
pub(crate) fn find(
    group: &str,
    version: &str,
    plural: &str,
    metrics: bool,
) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| {
        r.group == group
            && r.version == version
            && r.plural == plural
            && (metrics || r.group != "metrics.k8s.io")
    })
}

/// Looks a resource up by plural name alone (first match: core before groups).
pub(crate) fn find_by_plural(plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.plural == plural)
}

/// The resource serving a stored kind in its primary view.
pub(crate) fn for_kind(kind: Kind) -> &'static ResourceDef {
    RESOURCES
        .iter()
        .find(|r| r.source == Source::Store(kind, View::Primary))
        .unwrap_or(&RESOURCES[0])
}

/// `GET /api`.
pub(crate) fn api_versions(server_address: &str) -> APIVersions {
    APIVersions {
        versions: vec!["v1".to_string()],
        server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
            client_cidr: "0.0.0.0/0".to_string(),
            server_address: server_address.to_string(),
        }],
    }
}

fn group_doc(group: &str, version: &str) -> APIGroup {
    let gv = GroupVersionForDiscovery {
        group_version: format!("{group}/{version}"),
        version: version.to_string(),
    };
    APIGroup {
        name: group.to_string(),
        versions: vec![gv.clone()],
        preferred_version: Some(gv),
        server_address_by_client_cidrs: None,
    }
}

/// `GET /apis`.
pub(crate) fn api_group_list(metrics: bool) -> APIGroupList {
    APIGroupList {
        groups: GROUPS
            .iter()
            .filter(|(g, _)| metrics || *g != "metrics.k8s.io")
            .map(|(g, v)| group_doc(g, v))
            .collect(),
    }
}

/// `GET /apis/{group}`.
pub(crate) fn api_group(group: &str, metrics: bool) -> Option<APIGroup> {
    GROUPS
        .iter()
        .filter(|(g, _)| metrics || *g != "metrics.k8s.io")
        .find(|(g, _)| *g == group)
        .map(|(g, v)| group_doc(g, v))
}

fn strings(items: &[&str]) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| items.iter().map(|s| s.to_string()).collect())
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`.
pub(crate) fn api_resource_list(
    group: &str,
    version: &str,
    metrics: bool,
) -> Option<APIResourceList> {
    let known = (group.is_empty() && version == "v1")
        || GROUPS
            .iter()
            .any(|(g, v)| *g == group && *v == version && (metrics || *g != "metrics.k8s.io"));
    if !known {
        return None;
    }
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(APIResource {
            name: r.plural.to_string(),
            singular_name: r.singular.to_string(),
            namespaced: r.namespaced,
            kind: r.kind.to_string(),
            verbs: r.verbs.iter().map(|s| s.to_string()).collect(),
            short_names: strings(r.short_names),
            categories: strings(r.categories),
            group: None,
            version: None,
            storage_version_hash: None,
        });
        for (sub, verbs) in r.subresources {
            let (kind, group, version) = match *sub {
                "scale" => (
                    "Scale",
                    Some("autoscaling".to_string()),
                    Some("v1".to_string()),
                ),
                "proxy" => ("NodeProxyOptions", None, None),
                _ => (r.kind, None, None),
            };
            resources.push(APIResource {
                name: format!("{}/{sub}", r.plural),
                singular_name: String::new(),
                namespaced: r.namespaced,
                kind: kind.to_string(),
                verbs: verbs.iter().map(|s| s.to_string()).collect(),
                short_names: None,
                categories: None,
                group,
                version,
                storage_version_hash: None,
            });
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(APIResourceList {
        group_version,
        resources,
    })
}

/// `GET /version`: a v1.35 server, marked as the simulator in its build metadata.
pub(crate) fn version_info() -> Info {
    Info {
        major: "1".to_string(),
        minor: "35".to_string(),
        git_version: "v1.35.0+kube-sim".to_string(),
        git_commit: "0000000000000000000000000000000000000000".to_string(),
        git_tree_state: "clean".to_string(),
        build_date: "2025-12-17T00:00:00Z".to_string(),
        go_version: "go1.25.5".to_string(),
        compiler: "gc".to_string(),
        platform: "linux/amd64".to_string(),
        emulation_major: Some("1".to_string()),
        emulation_minor: Some("35".to_string()),
        min_compatibility_major: Some("1".to_string()),
        min_compatibility_minor: Some("34".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_hides_metrics_when_disabled() {
        let with: Vec<_> = api_group_list(true)
            .groups
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert!(with.contains(&"metrics.k8s.io".to_string()));
        let without: Vec<_> = api_group_list(false)
            .groups
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert!(!without.contains(&"metrics.k8s.io".to_string()));
        assert!(api_resource_list("metrics.k8s.io", "v1beta1", false).is_none());
        assert!(find("metrics.k8s.io", "v1beta1", "pods", false).is_none());
    }

    #[test]
    fn deployments_list_their_scale_subresource() {
        let apps = api_resource_list("apps", "v1", true).expect("apps/v1 exists");
        let scale = apps
            .resources
            .iter()
            .find(|r| r.name == "deployments/scale")
            .expect("scale subresource listed");
        assert_eq!(scale.kind, "Scale");
        assert_eq!(scale.group.as_deref(), Some("autoscaling"));
        assert!(scale.verbs.contains(&"patch".to_string()));
    }

    #[test]
    fn event_fields_are_selectable() {
        let events = find("", "v1", "events", true).expect("events exist");
        assert!(events.selectable("involvedObject.name"));
        assert!(events.selectable("reason"));
        assert!(events.selectable("metadata.namespace"));
        assert!(!events.selectable("spec.nodeName"));
        let nodes = find("", "v1", "nodes", true).expect("nodes exist");
        assert!(!nodes.selectable("metadata.namespace"));
    }
}
