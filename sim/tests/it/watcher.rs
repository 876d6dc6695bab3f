//! kube-rs against the simulator: paged lists, bookmarks, 410 → relist, dropped streams.
//! Each test checks that a client's view converges on the simulator's truth with no change
//! lost or seen twice.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube_relay_sim::{ClockMode, Fault, SimHandle};
use tokio::sync::mpsc;

use common::{client, pod_versions, start};

/// 3 bulk deployments × 5 pods, already Running; one normal deployment whose pods move
/// through their lifecycle when the clock advances; bookmarks every 200 ms.
const SCENARIO: &str = r#"
seed: 5
bulk: {deployments: 3, replicas: 5, namespace: bulk}
deployments:
  - {name: web, namespace: default, replicas: 2, image: nginx:1.27, startup: 2s, readiness: 1s}
api: {bookmark_interval: 200ms}
"#;

/// What a watcher consumer saw: the state it rebuilt and every change it applied.
#[derive(Debug, Default)]
struct View {
    state: BTreeMap<String, String>,
    /// (name, resourceVersion, deleted) per Apply/Delete event, in order.
    changes: Vec<(String, String, bool)>,
    inits: usize,
    errors: usize,
}

/// Runs a kube-rs watcher (with its default backoff) in the background and reports its
/// events through a channel, so tests can keep driving the simulator.
fn spawn_watcher(
    api: Api<Pod>,
    config: watcher::Config,
) -> mpsc::UnboundedReceiver<Result<watcher::Event<Pod>, String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            if tx.send(ev.map_err(|e| e.to_string())).is_err() {
                return;
            }
        }
    });
    rx
}

fn name_rv(p: &Pod) -> (String, String) {
    (
        p.metadata.name.clone().unwrap_or_default(),
        p.metadata.resource_version.clone().unwrap_or_default(),
    )
}

/// Applies every event received so far to `view`.
fn drain(
    rx: &mut mpsc::UnboundedReceiver<Result<watcher::Event<Pod>, String>>,
    view: &mut View,
    pending: &mut Option<BTreeMap<String, String>>,
) {
    while let Ok(ev) = rx.try_recv() {
        match ev {
            Ok(watcher::Event::Init) => {
                view.inits += 1;
                *pending = Some(BTreeMap::new());
            }
            Ok(watcher::Event::InitApply(p)) => {
                let (n, rv) = name_rv(&p);
                pending.get_or_insert_with(BTreeMap::new).insert(n, rv);
            }
            Ok(watcher::Event::InitDone) => view.state = pending.take().unwrap_or_default(),
            Ok(watcher::Event::Apply(p)) => {
                let (n, rv) = name_rv(&p);
                view.changes.push((n.clone(), rv.clone(), false));
                view.state.insert(n, rv);
            }
            Ok(watcher::Event::Delete(p)) => {
                let (n, rv) = name_rv(&p);
                view.changes.push((n.clone(), rv, true));
                view.state.remove(&n);
            }
            Err(_) => view.errors += 1,
        }
    }
}

/// Waits until the watcher's rebuilt state equals the simulator's pods.
async fn converge(
    rx: &mut mpsc::UnboundedReceiver<Result<watcher::Event<Pod>, String>>,
    view: &mut View,
    pending: &mut Option<BTreeMap<String, String>>,
    handle: &SimHandle,
) {
    let truth = pod_versions(handle);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        drain(rx, view, pending);
        if view.state == truth {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "watcher did not converge: has {:?}, truth {:?}",
            view.state,
            truth
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every change to pods after `from_rv`, read back from the simulator's watch history with a
/// fresh watch: the reference a watcher's change log must match.
async fn reference_changes(
    api: &Api<Pod>,
    from_rv: &str,
    until_rv: u64,
) -> Vec<(String, String, bool)> {
    // The server ends the watch after 5 s: `until_rv` is the whole cluster's version, so the
    // last pod change may come before it and the stream's end is what stops the loop. The
    // client waits longer than that (and than a loaded 2-core CI machine needs) so the
    // server's end always comes first; it only bounds a hang.
    let params = WatchParams::default().disable_bookmarks().timeout(5);
    let mut stream = api
        .watch(&params, from_rv)
        .await
        .expect("reference watch")
        .boxed();
    let mut out = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(60), stream.try_next())
        .await
        .expect("reference watch answers")
        .expect("reference watch event")
    {
        let (entry, rv) = match ev {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                let (n, rv) = name_rv(&p);
                ((n, rv.clone(), false), rv)
            }
            WatchEvent::Deleted(p) => {
                let (n, rv) = name_rv(&p);
                ((n, rv.clone(), true), rv)
            }
            other => panic!("unexpected reference event {other:?}"),
        };
        out.push(entry);
        if rv.parse::<u64>().unwrap_or(0) >= until_rv {
            break;
        }
    }
    out
}

#[tokio::test]
async fn lists_are_paged_with_consistent_continue_tokens() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    let api: Api<Pod> = Api::namespaced(client(&sim), "bulk");
    let first = api
        .list(&ListParams::default().limit(4))
        .await
        .expect("first page");
    assert_eq!(first.items.len(), 4);
    assert_eq!(first.metadata.remaining_item_count, Some(11));
    let snapshot_rv = first.metadata.resource_version.clone();
    // The cluster changes between pages; the pages still describe one snapshot.
    handle
        .scale_deployment("bulk", "bulk-000", 7)
        .expect("scale");
    handle.advance(Duration::from_secs(5)).expect("advance");
    let mut names: Vec<String> = first.items.iter().map(|p| name_rv(p).0).collect();
    let mut token = first.metadata.continue_.clone();
    let mut pages = 1;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(4).continue_token(&t))
            .await
            .expect("next page");
        assert_eq!(
            page.metadata.resource_version, snapshot_rv,
            "every page is from the first page's snapshot"
        );
        names.extend(page.items.iter().map(|p| name_rv(p).0));
        token = page.metadata.continue_.clone();
        pages += 1;
    }
    assert_eq!(pages, 4, "15 pods in pages of 4");
    let unique: BTreeSet<_> = names.iter().cloned().collect();
    assert_eq!(unique.len(), 15, "no pod twice, none missing: {names:?}");
    // A fresh list sees the scale-up.
    let all = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), 17);
}

#[tokio::test]
async fn watcher_initial_list_uses_pages_and_matches_the_cluster() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    let api: Api<Pod> = Api::all(client(&sim));
    let mut rx = spawn_watcher(api, watcher::Config::default().page_size(4));
    let (mut view, mut pending) = (View::default(), None);
    converge(&mut rx, &mut view, &mut pending, &handle).await;
    assert_eq!(view.state.len(), 17);
    let list_pages = handle
        .requests()
        .iter()
        .filter(|r| !r.watch && r.path.starts_with("/api/v1/pods?") && r.path.contains("limit=4"))
        .count();
    assert_eq!(list_pages, 5, "17 pods listed in pages of 4");
    // Changes after the list arrive as watch events.
    handle.advance(Duration::from_secs(10)).expect("advance");
    converge(&mut rx, &mut view, &mut pending, &handle).await;
    assert_eq!(view.inits, 1);
}

#[tokio::test]
async fn bookmarks_carry_the_current_resource_version() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    let api: Api<Pod> = Api::namespaced(client(&sim), "default");
    let list = api.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("list has an rv");
    // Changes in another namespace move the global resourceVersion; only a bookmark can
    // tell this watch about them.
    handle
        .scale_deployment("bulk", "bulk-001", 6)
        .expect("scale");
    handle.advance(Duration::from_secs(3)).expect("advance");
    let current = handle.resource_version();
    let params = WatchParams::default().timeout(10);
    let mut stream = api.watch(&params, &rv).await.expect("watch").boxed();
    let bookmark = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Bookmark(b)))) => break b,
            Ok(Ok(Some(_))) => continue,
            other => panic!("no bookmark: {other:?}"),
        }
    };
    assert_eq!(bookmark.types.kind, "Pod");
    assert_eq!(bookmark.types.api_version, "v1");
    assert_eq!(bookmark.metadata.resource_version, current.to_string());
}

#[tokio::test]
async fn expired_resource_version_makes_the_watcher_relist() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    let api: Api<Pod> = Api::all(client(&sim));
    let mut rx = spawn_watcher(api.clone(), watcher::Config::default());
    let (mut view, mut pending) = (View::default(), None);
    converge(&mut rx, &mut view, &mut pending, &handle).await;
    // A plain watch from a compacted resourceVersion gets 410 Expired.
    let old_rv = "1";
    handle.inject_fault(Fault::ExpireResourceVersions);
    let mut stream = api
        .watch(&WatchParams::default(), old_rv)
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await {
        Ok(Some(WatchEvent::Error(status))) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // The watcher was cut too; while it is away the cluster changes.
    let victim = view
        .state
        .keys()
        .find(|n| n.starts_with("web-"))
        .cloned()
        .expect("a web pod");
    handle.delete_pod("default", &victim).expect("delete");
    handle.advance(Duration::from_secs(10)).expect("advance");
    converge(&mut rx, &mut view, &mut pending, &handle).await;
    assert!(!view.state.contains_key(&victim));
    assert_eq!(view.inits, 2, "the watcher relisted after 410 Gone");
}

#[tokio::test]
async fn a_dropped_watch_resumes_without_losing_or_repeating_events() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    let api: Api<Pod> = Api::all(client(&sim));
    let mut rx = spawn_watcher(api.clone(), watcher::Config::default());
    let (mut view, mut pending) = (View::default(), None);
    converge(&mut rx, &mut view, &mut pending, &handle).await;
    let start_rv = handle.resource_version().to_string();
    for round in 0..3 {
        handle.advance(Duration::from_secs(1)).expect("advance");
        handle.inject_fault(Fault::DropWatches);
        // Changes while the watcher reconnects: pods move on, one is deleted, one scaled.
        handle.advance(Duration::from_secs(2)).expect("advance");
        if round == 1 {
            let victim = view
                .state
                .keys()
                .find(|n| n.starts_with("web-"))
                .cloned()
                .expect("a web pod");
            handle.delete_pod("default", &victim).expect("delete");
        }
        handle
            .scale_deployment("bulk", "bulk-002", 5 + round)
            .expect("scale");
        handle.advance(Duration::from_secs(3)).expect("advance");
        converge(&mut rx, &mut view, &mut pending, &handle).await;
    }
    assert_eq!(
        view.inits, 1,
        "resumed from the last resourceVersion, never relisted"
    );
    let watches = handle.requests().iter().filter(|r| r.watch).count();
    assert!(
        watches >= 4,
        "re-watched after each of the 3 drops ({watches} watches): {:#?}",
        handle.requests()
    );
    let seen: BTreeSet<_> = view.changes.iter().collect();
    assert_eq!(seen.len(), view.changes.len(), "no change seen twice");
    let reference = reference_changes(&api, &start_rv, handle.resource_version()).await;
    let after_start: Vec<_> = view
        .changes
        .iter()
        .filter(|(_, rv, _)| rv.parse::<u64>().unwrap_or(0) > start_rv.parse::<u64>().unwrap_or(0))
        .cloned()
        .collect();
    assert!(!reference.is_empty());
    assert_eq!(
        after_start, reference,
        "exactly the changes the server recorded, in order"
    );
}
