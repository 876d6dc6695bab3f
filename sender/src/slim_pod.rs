//! A Pod as the pod watcher decodes it: everything but `metadata.managedFields`.
//!
//! The API server sends every Pod with its managed fields: a list of field sets, each a
//! tree of JSON objects that k8s-openapi decodes into `serde_json::Value` maps, one
//! allocation per key. No translator reads them, yet at 100,000 pods and 1,000 readiness
//! changes a second their decoding was the sender's largest single cost (perf: ~15 % of its
//! CPU, most of it in malloc). [`SlimPod`] decodes the same JSON into a
//! [`Pod`], skipping that one field without allocating (serde ignores a field it does not
//! name), so the watcher's lists and events arrive lighter and the translators are
//! unchanged.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::runtime::watcher::Event;
use serde::{Deserialize, Deserializer};

/// A [`Pod`] without managed fields; watched as `pods` like a Pod.
#[derive(Debug, Clone, PartialEq)]
pub struct SlimPod(pub Pod);

/// `ObjectMeta`'s fields, all but `managedFields`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

/// A Pod's top level (`apiVersion` and `kind` are the type's own).
#[derive(Deserialize)]
struct Wire {
    metadata: Option<Meta>,
    spec: Option<PodSpec>,
    status: Option<PodStatus>,
}

impl<'de> Deserialize<'de> for SlimPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let metadata = wire
            .metadata
            .map_or_else(ObjectMeta::default, |m| ObjectMeta {
                annotations: m.annotations,
                creation_timestamp: m.creation_timestamp,
                deletion_grace_period_seconds: m.deletion_grace_period_seconds,
                deletion_timestamp: m.deletion_timestamp,
                finalizers: m.finalizers,
                generate_name: m.generate_name,
                generation: m.generation,
                labels: m.labels,
                managed_fields: None,
                name: m.name,
                namespace: m.namespace,
                owner_references: m.owner_references,
                resource_version: m.resource_version,
                self_link: m.self_link,
                uid: m.uid,
            });
        Ok(SlimPod(Pod {
            metadata,
            spec: wire.spec,
            status: wire.status,
        }))
    }
}

impl kube::Resource for SlimPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// A watch event of slim pods as one of Pods.
pub fn into_pod_event(event: Event<SlimPod>) -> Event<Pod> {
    match event {
        Event::Init => Event::Init,
        Event::InitApply(p) => Event::InitApply(p.0),
        Event::InitDone => Event::InitDone,
        Event::Apply(p) => Event::Apply(p.0),
        Event::Delete(p) => Event::Delete(p.0),
    }
}

#[cfg(test)]
mod tests {
    use kube::Resource;
    use serde_json::json;

    use super::*;
    use crate::fixtures::{container, pod};

    /// A pod as the API server sends it: every metadata field, managed fields included.
    fn full_pod_json() -> serde_json::Value {
        let p = pod("web")
            .phase("Running")
            .scheduled("node-1", "10.0.0.1", "10.1.0.7")
            .ready("True")
            .owner("ReplicaSet", "web-7d4b9", true)
            .created(1_700_000_000)
            .deleting(1_700_000_100)
            .container(
                container("app", "nginx:1.27")
                    .requests(&[("cpu", "100m")])
                    .running(),
            )
            .build();
        let mut value = serde_json::to_value(&p).expect("a pod serializes");
        let meta = value["metadata"].as_object_mut().expect("metadata");
        for (field, v) in [
            ("annotations", json!({"a": "1"})),
            ("deletionGracePeriodSeconds", json!(30)),
            ("finalizers", json!(["f"])),
            ("generateName", json!("web-")),
            ("generation", json!(2)),
            ("labels", json!({"app": "web"})),
            ("resourceVersion", json!("42")),
            ("selfLink", json!("/api/v1/namespaces/default/pods/web")),
            ("uid", json!("u-1")),
            (
                "managedFields",
                json!([{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}}}}}}]),
            ),
        ] {
            meta.insert(field.to_owned(), v);
        }
        value
    }

    #[test]
    fn decodes_as_a_pod_does_without_its_managed_fields() {
        let json = serde_json::to_string(&full_pod_json()).expect("json");
        let mut full: Pod = serde_json::from_str(&json).expect("a pod");
        assert!(
            full.metadata.managed_fields.is_some(),
            "the fixture has them"
        );
        full.metadata.managed_fields = None;
        let slim: SlimPod = serde_json::from_str(&json).expect("a slim pod");
        assert_eq!(slim.0, full);
    }

    #[test]
    fn a_sparse_pod_decodes_too() {
        for json in [r#"{}"#, r#"{"metadata":{"name":"p"},"spec":null}"#] {
            let full: Pod = serde_json::from_str(json).expect("a pod");
            let slim: SlimPod = serde_json::from_str(json).expect("a slim pod");
            assert_eq!(slim.0, full, "{json}");
        }
    }

    #[test]
    fn it_is_watched_where_pods_are() {
        assert_eq!(
            SlimPod::url_path(&(), Some("ns")),
            Pod::url_path(&(), Some("ns"))
        );
        assert_eq!(SlimPod::url_path(&(), None), "/api/v1/pods");
        assert_eq!(SlimPod::api_version(&()), "v1");
        assert_eq!(SlimPod::kind(&()), "Pod");
    }
}
