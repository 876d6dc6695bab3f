//! Node → `kube_node_info` (community dashboards list clusters and nodes with it),
//! capacity and allocatable per resource, conditions, cordon and taints (the
//! kubernetes-mixin's node alerts read them), and cAdvisor's `machine_cpu_cores` /
//! `machine_memory_bytes` (what dashboards divide requests and usage by), taken from the
//! capacity because the relay has no cAdvisor.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::family::Family;
use crate::quantity::parse_quantity;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};
use crate::translate::pods::{CONDITION_STATUSES, condition_label};
use crate::translate::resource_label;

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
    set.push(
        Family::NodeSpecUnschedulable,
        [name],
        f64::from(u8::from(
            spec.and_then(|s| s.unschedulable).unwrap_or(false),
        )),
    );
    for taint in spec.and_then(|s| s.taints.as_deref()).unwrap_or_default() {
        set.push(
            Family::NodeSpecTaint,
            [
                name,
                taint.key.as_str(),
                taint.value.as_deref().unwrap_or_default(),
                taint.effect.as_str(),
            ],
            1.0,
        );
    }
    let Some(status) = status else {
        return set;
    };
    for (family, amounts) in [
        (Family::NodeStatusCapacity, &status.capacity),
        (Family::NodeStatusAllocatable, &status.allocatable),
    ] {
        for (resource, quantity) in amounts.iter().flatten() {
            let (Some((resource, unit)), Some(amount)) =
                (resource_label(resource, true), parse_quantity(&quantity.0))
            else {
                continue;
            };
            set.push(
                family,
                [Cow::Borrowed(name), resource, Cow::Borrowed(unit)],
                amount,
            );
        }
    }
    for (family, resource) in [
        (Family::MachineCpuCores, "cpu"),
        (Family::MachineMemoryBytes, "memory"),
    ] {
        if let Some(amount) = capacity(status.capacity.as_ref(), resource) {
            set.push(family, [name], amount);
        }
    }
    for condition in status.conditions.iter().flatten() {
        let prefix = [Cow::Borrowed(name), Cow::Borrowed(condition.type_.as_str())];
        set.push_one_hot(
            Family::NodeStatusCondition,
            &prefix,
            &CONDITION_STATUSES,
            condition_label(&condition.status),
        );
    }
    set
}

fn capacity(capacity: Option<&BTreeMap<String, Quantity>>, resource: &str) -> Option<f64> {
    parse_quantity(&capacity?.get(resource)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{node, with_condition, with_resources};

    #[test]
    fn node_info_carries_system_info_and_the_internal_ip() {
        assert_eq!(
            node_series(&node("node-a")).render(),
            [
                r#"kube_node_info{node="node-a",kernel_version="6.1.0",os_image="Debian GNU/Linux 12",container_runtime_version="containerd://1.7.0",kubelet_version="v1.35.0",kubeproxy_version="v1.35.0",provider_id="sim://node-a",pod_cidr="10.244.1.0/24",system_uuid="sys-uuid",internal_ip="10.0.0.11"} 1"#,
                r#"kube_node_spec_unschedulable{node="node-a"} 0"#,
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
                r#"kube_node_info{node="bare",kernel_version="",os_image="",container_runtime_version="",kubelet_version="",kubeproxy_version="",provider_id="",pod_cidr="",system_uuid="",internal_ip=""} 1"#,
                r#"kube_node_spec_unschedulable{node="bare"} 0"#,
            ]
        );
    }

    #[test]
    fn capacity_allocatable_conditions_and_machine_size() {
        let n = with_condition(
            with_condition(
                with_resources(
                    node("node-a"),
                    &[
                        ("cpu", "4"),
                        ("memory", "16Gi"),
                        ("pods", "110"),
                        ("example.com/gpu", "2"),
                        ("widgets", "3"),
                    ],
                    &[("cpu", "3500m"), ("memory", "15Gi"), ("pods", "110")],
                ),
                "Ready",
                "False",
            ),
            "MemoryPressure",
            "Unknown",
        );
        let lines: Vec<String> = node_series(&n)
            .render()
            .into_iter()
            .filter(|l| !l.starts_with("kube_node_info") && !l.starts_with("kube_node_spec"))
            .collect();
        assert_eq!(
            lines,
            [
                r#"kube_node_status_allocatable{node="node-a",resource="cpu",unit="core"} 3.5"#,
                r#"kube_node_status_allocatable{node="node-a",resource="memory",unit="byte"} 16106127360"#,
                r#"kube_node_status_allocatable{node="node-a",resource="pods",unit="integer"} 110"#,
                r#"kube_node_status_capacity{node="node-a",resource="cpu",unit="core"} 4"#,
                r#"kube_node_status_capacity{node="node-a",resource="example_com_gpu",unit="integer"} 2"#,
                r#"kube_node_status_capacity{node="node-a",resource="memory",unit="byte"} 17179869184"#,
                r#"kube_node_status_capacity{node="node-a",resource="pods",unit="integer"} 110"#,
                r#"kube_node_status_condition{node="node-a",condition="MemoryPressure",status="false"} 0"#,
                r#"kube_node_status_condition{node="node-a",condition="MemoryPressure",status="true"} 0"#,
                r#"kube_node_status_condition{node="node-a",condition="MemoryPressure",status="unknown"} 1"#,
                r#"kube_node_status_condition{node="node-a",condition="Ready",status="false"} 1"#,
                r#"kube_node_status_condition{node="node-a",condition="Ready",status="true"} 0"#,
                r#"kube_node_status_condition{node="node-a",condition="Ready",status="unknown"} 0"#,
                r#"machine_cpu_cores{node="node-a"} 4"#,
                r#"machine_memory_bytes{node="node-a"} 17179869184"#,
            ]
        );
    }

    #[test]
    fn a_node_without_capacity_has_no_machine_size() {
        let n = with_resources(node("small"), &[("cpu", "lots")], &[]);
        let lines = node_series(&n).render();
        assert_eq!(lines.len(), 2, "info and cordon only: {lines:?}");
    }

    #[test]
    fn a_cordoned_tainted_node() {
        let mut n = node("sick");
        let spec = n.spec.get_or_insert_with(Default::default);
        spec.unschedulable = Some(true);
        spec.taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: "node.kubernetes.io/unreachable".to_owned(),
            effect: "NoSchedule".to_owned(),
            ..Default::default()
        }]);
        let lines = node_series(&n).render();
        assert!(lines.contains(&r#"kube_node_spec_unschedulable{node="sick"} 1"#.to_owned()));
        assert!(lines.contains(
            &r#"kube_node_spec_taint{node="sick",key="node.kubernetes.io/unreachable",value="",effect="NoSchedule"} 1"#
                .to_owned()
        ));
    }
}
