//! Node → `kube_node_info` (community dashboards list clusters and nodes with it).

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Node;

use crate::family::Family;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};

/// The store key of a node, or `None` when it has no name.
pub fn node_key(node: &Node) -> Option<ObjectKey> {
    let name = node.metadata.name.as_deref()?;
    Some(ObjectKey::new(ObjectKind::Node, "", name))
}

/// The series of a node. A node without a name yields nothing.
pub fn node_series(node: &Node) -> SeriesSet<'_> {
    let mut set = SeriesSet::new();
    let Some(name) = node.metadata.name.as_deref() else {
        return set;
    };
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    let info = status.and_then(|s| s.node_info.as_ref());
    let internal_ip = status
        .and_then(|s| s.addresses.as_deref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.as_str())
        .unwrap_or_default();
    set.push(
        Family::NodeInfo,
        [
            name,
            info.map(|i| i.kernel_version.as_str()).unwrap_or_default(),
            info.map(|i| i.os_image.as_str()).unwrap_or_default(),
            info.map(|i| i.container_runtime_version.as_str())
                .unwrap_or_default(),
            info.map(|i| i.kubelet_version.as_str()).unwrap_or_default(),
            info.map(|i| i.kube_proxy_version.as_str())
                .unwrap_or_default(),
            spec.and_then(|s| s.provider_id.as_deref())
                .unwrap_or_default(),
            spec.and_then(|s| s.pod_cidr.as_deref()).unwrap_or_default(),
            info.map(|i| i.system_uuid.as_str()).unwrap_or_default(),
            internal_ip,
        ]
        .map(Cow::Borrowed),
        1.0,
    );
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::node;

    #[test]
    fn node_info_carries_system_info_and_the_internal_ip() {
        assert_eq!(
            node_series(&node("node-a")).render(),
            [
                r#"kube_node_info{node="node-a",kernel_version="6.1.0",os_image="Debian GNU/Linux 12",container_runtime_version="containerd://1.7.0",kubelet_version="v1.35.0",kubeproxy_version="v1.35.0",provider_id="sim://node-a",pod_cidr="10.244.1.0/24",system_uuid="sys-uuid",internal_ip="10.0.0.11"} 1"#
            ]
        );
        assert_eq!(
            node_key(&node("node-a")),
            Some(ObjectKey::new(ObjectKind::Node, "", "node-a"))
        );
    }

    #[test]
    fn a_node_without_status_still_has_info() {
        let mut n = node("bare");
        n.status = None;
        n.spec = None;
        assert_eq!(
            node_series(&n).render(),
            [
                r#"kube_node_info{node="bare",kernel_version="",os_image="",container_runtime_version="",kubelet_version="",kubeproxy_version="",provider_id="",pod_cidr="",system_uuid="",internal_ip=""} 1"#
            ]
        );
    }
}
