//! Failover over several receivers (`--target a,b`): the link stays with a receiver until it
//! fails (a dead peer, a closed connection, a refusal) and then moves to the next at once; a
//! receiver that answers `ClusterInUse` (another sender of this cluster is live there) is not
//! left for another. Against two real receivers, the first going silent as a killed host does
//! (bytes stop, nothing closes): the second gets the spool on a base and ends with the
//! present; and against scripted peers for the refusals.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::SinkExt;
use kube_relay_proto::{ReceiverMessage, Reject, RejectReason, Resume};
use kube_relay_receiver::ReceiverConfig;
use kube_relay_sender::Error;
use kube_relay_sender::link::{Link, LinkConfig};
use kube_relay_sender::shared::Shared;
use kube_relay_sender::spool::MemorySpool;
use kube_relay_sender::transport::TcpConnector;
use kube_relay_testkit::proxy::LinkProxy;
use kube_relay_testkit::wait_until;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use support::{
    RunningReceiver, accept, metrics_text, phases, pod_key, receive_snapshot, stop_link, value,
    welcome,
};

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// Starts a link for `cluster` to `targets`, in failover order.
fn start_link(
    targets: &[SocketAddr],
    cluster: &str,
    shared: &Arc<Shared>,
) -> (CancellationToken, JoinHandle<Result<(), Error>>) {
    let config = LinkConfig {
        flush_interval: Duration::from_millis(5),
        ..LinkConfig::new(cluster, format!("{cluster}-sender"))
    };
    let connectors = targets
        .iter()
        .map(|t| TcpConnector::new(t.to_string()))
        .collect();
    let spool = MemorySpool::new(config.spool_max_bytes);
    let link = Link::with_targets(config, connectors, Arc::clone(shared), spool).expect("targets");
    let shutdown = CancellationToken::new();
    (shutdown.clone(), tokio::spawn(link.run(shutdown)))
}

fn set_phase(shared: &Shared, pod: &str, phase: &str) {
    shared.update(|s| s.apply(&pod_key(pod), &phases(pod, phase)));
}

/// Waits until `check` holds on the `/metrics` of the receiver at `http`.
async fn wait_metrics(what: &str, http: SocketAddr, check: impl Fn(&str) -> bool) -> String {
    let check = &check;
    wait_until(what, WAIT, POLL, || async move {
        let text = metrics_text(http).await?;
        Ok(check(&text).then_some(text))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test]
async fn a_dead_receiver_is_left_for_the_next_which_gets_the_spool_on_a_base() {
    // Heartbeats every 200 ms: a dead peer is seen after 600 ms.
    let receiver = || ReceiverConfig {
        heartbeat_interval: Duration::from_millis(200),
        ..ReceiverConfig::loopback()
    };
    let rx_a = RunningReceiver::start(receiver())
        .await
        .expect("receiver starts");
    let rx_b = RunningReceiver::start(receiver())
        .await
        .expect("receiver starts");
    let proxy_a = LinkProxy::start(rx_a.ingest).await.expect("proxy");
    let shared = Arc::new(Shared::new(1));
    set_phase(&shared, "web", "Pending");
    set_phase(&shared, "old", "Running");
    let (shutdown, running) = start_link(&[proxy_a.addr(), rx_b.ingest], "f1", &shared);
    let labels = |pod: &'static str, phase: &'static str| {
        [("cluster", "f1"), ("pod", pod), ("phase", phase)]
    };
    wait_metrics("A has the cluster", rx_a.http, |t| {
        value(t, "kube_pod_status_phase", &labels("web", "Pending")) == Some(1.0)
    })
    .await;
    assert_eq!(
        shared.stats.current_target().as_deref(),
        Some(proxy_a.addr().to_string().as_str())
    );

    // A dies the way a killed host does: bytes stop, nothing closes.
    proxy_a.stall(true);
    let died = Instant::now();
    set_phase(&shared, "web", "Running");
    shared.update(|s| s.remove(&pod_key("old")));
    set_phase(&shared, "new", "Pending");
    wait_until("the link moved to B", WAIT, POLL, || async {
        Ok((shared.stats.sessions.load(Ordering::Relaxed) >= 2).then_some(()))
    })
    .await
    .expect("failed over");
    let moved = died.elapsed();
    set_phase(&shared, "web", "Failed");
    shared.refresh_self_metrics();
    let b = rx_b.ingest.to_string();
    let text = wait_metrics("B has the present", rx_b.http, |t| {
        value(t, "kube_pod_status_phase", &labels("web", "Failed")) == Some(1.0)
            && value(t, "kube_pod_status_phase", &labels("new", "Pending")) == Some(1.0)
            && value(t, "relay_sender_target", &[("target", &b)]) == Some(1.0)
    })
    .await;
    println!(
        "FIGURE failover: streaming to B {:.2} s after A went silent (dead-peer interval 0.6 s \
         plus backoff)",
        moved.as_secs_f64()
    );
    assert!(
        value(&text, "kube_pod_status_phase", &[("pod", "old")]).is_none(),
        "old is gone at B"
    );
    assert_eq!(
        value(&text, "relay_sender_failovers_total", &[("cluster", "f1")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "relay_sender_target",
            &[("target", &proxy_a.addr().to_string())]
        ),
        Some(0.0)
    );
    let stats = &shared.stats;
    assert_eq!(stats.current_target().as_deref(), Some(b.as_str()));
    assert_eq!(stats.failovers.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.bases_sent.load(Ordering::Relaxed),
        1,
        "what A never acknowledged reached B on a base"
    );
    assert!(stats.replayed_batches.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.superseded_samples.load(Ordering::Relaxed), 0);

    // A comes back: the sender stays with B.
    proxy_a.stall(false);
    set_phase(&shared, "web", "Running");
    wait_metrics("B keeps getting the changes", rx_b.http, |t| {
        value(t, "kube_pod_status_phase", &labels("web", "Running")) == Some(1.0)
    })
    .await;
    assert_eq!(stats.failovers.load(Ordering::Relaxed), 1, "no return");

    stop_link(shutdown, running).await;
    rx_a.stop().await.expect("receiver stops");
    rx_b.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn a_busy_receiver_is_left_at_once_but_not_one_where_the_cluster_is_in_use() {
    let a = TcpListener::bind("127.0.0.1:0").await.expect("bind a");
    let b = TcpListener::bind("127.0.0.1:0").await.expect("bind b");
    let shared = Arc::new(Shared::new(1));
    set_phase(&shared, "web", "Pending");
    let targets = [
        a.local_addr().expect("addr a"),
        b.local_addr().expect("addr b"),
    ];
    let (shutdown, running) = start_link(&targets, "f2", &shared);
    let reject = |reason| {
        ReceiverMessage::Reject(Reject {
            reason,
            message: "scripted".to_owned(),
        })
    };

    // Another sender of this cluster is live at A: moving would make two receivers report
    // it, so the sender waits and tries A again.
    let (mut conn, _) = accept(&a).await;
    conn.send(reject(RejectReason::ClusterInUse))
        .await
        .expect("reject");
    drop(conn);
    let (mut conn, _) = accept(&a).await;
    assert_eq!(shared.stats.failovers.load(Ordering::Relaxed), 0);
    // A is full: B at once, without waiting out a backoff.
    conn.send(reject(RejectReason::Busy)).await.expect("reject");
    drop(conn);
    let refused = Instant::now();
    let (mut conn, _) = accept(&b).await;
    println!(
        "FIGURE failover: B tried {:.3} s after A refused as busy",
        refused.elapsed().as_secs_f64()
    );
    assert_eq!(shared.stats.failovers.load(Ordering::Relaxed), 1);
    welcome(&mut conn, Resume::Snapshot, 60_000).await;
    receive_snapshot(&mut conn).await;
    stop_link(shutdown, running).await;
}
