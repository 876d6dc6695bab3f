//! Deleting HPAs, nodes and namespaces through the handle: the API stops listing them and
//! open watches see `DELETED`, as after `kubectl delete`.

use crate::common;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube_relay_sim::{ClockMode, Error};

use common::{client, start};

const SCENARIO: &str = r#"
seed: 5
jitter: 0
nodes: {count: 2, pods: 10}
namespaces: [spare]
deployments:
  - name: web
    namespace: shop
    replicas: 4
    image: nginx:1.27
    startup: 1s
    readiness: 1s
hpas:
  - {name: web, namespace: shop, target: web, min: 1, max: 6, cpu_utilization: 80}
"#;

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    items.iter().filter_map(|o| o.meta().name.clone()).collect()
}

/// The names of `K` objects a watch from the current resourceVersion reports deleted while
/// `act` runs.
async fn deleted_while<K>(api: &Api<K>, act: impl FnOnce()) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let rv = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list resourceVersion");
    let stream = api
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .expect("watch");
    act();
    let mut stream = std::pin::pin!(stream);
    let mut deleted = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        if let Ok(WatchEvent::Deleted(obj)) = event {
            deleted.extend(obj.meta().name.clone());
        }
    }
    deleted
}

#[tokio::test]
async fn deleted_hpas_nodes_and_namespaces_leave_the_api() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(10)).expect("advance");
    let c = client(&sim);

    // An HPA.
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(c.clone());
    let gone = deleted_while(&hpas, || handle.delete_hpa("shop", "web").expect("delete")).await;
    assert_eq!(gone, ["web"]);
    let left = hpas.list(&ListParams::default()).await.expect("hpas");
    assert!(left.items.is_empty());
    assert!(matches!(
        handle.delete_hpa("shop", "web"),
        Err(Error::NotFound { .. })
    ));
    assert!(handle.hpa_status("shop", "web").is_none());

    // A node: its pods go with it and are replaced on the other node.
    let nodes: Api<Node> = Api::all(c.clone());
    let before = names(
        &nodes
            .list(&ListParams::default())
            .await
            .expect("nodes")
            .items,
    );
    assert_eq!(before.len(), 2);
    let victim = before[0].clone();
    let on_victim = |pods: &[Pod]| {
        pods.iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&victim))
            .count()
    };
    assert!(on_victim(&handle.pods()) > 0, "pods spread over both nodes");
    let gone = deleted_while(&nodes, || handle.delete_node(&victim).expect("delete")).await;
    assert_eq!(gone, std::slice::from_ref(&victim));
    let after = names(
        &nodes
            .list(&ListParams::default())
            .await
            .expect("nodes")
            .items,
    );
    assert_eq!(after, [before[1].clone()]);
    assert_eq!(on_victim(&handle.pods()), 0, "the pod GC removed its pods");
    handle.advance(Duration::from_secs(10)).expect("advance");
    let pods = handle.pods();
    assert_eq!(pods.len(), 4, "replaced");
    assert_eq!(
        on_victim(&pods),
        0,
        "nothing is scheduled on a deleted node"
    );
    assert!(matches!(
        handle.delete_node(&victim),
        Err(Error::NotFound { .. })
    ));

    // An empty namespace goes at once; one with workloads turns Terminating and stays.
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let mut gone_now = None;
    let gone = deleted_while(&namespaces, || {
        gone_now = Some(handle.delete_namespace("spare").expect("delete"));
    })
    .await;
    assert_eq!(gone_now, Some(true));
    assert_eq!(gone, ["spare"]);
    assert!(
        !handle.delete_namespace("shop").expect("delete"),
        "still holds the deployment"
    );
    let shop = namespaces.get("shop").await.expect("still listed");
    assert_eq!(
        shop.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert!(shop.metadata.deletion_timestamp.is_some());
    let listed = names(
        &namespaces
            .list(&ListParams::default())
            .await
            .expect("namespaces")
            .items,
    );
    assert!(!listed.contains(&"spare".to_owned()), "{listed:?}");
    assert!(matches!(
        handle.delete_namespace("spare"),
        Err(Error::NotFound { .. })
    ));
    sim.shutdown().await;
}
