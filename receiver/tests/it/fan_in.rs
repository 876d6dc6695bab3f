//! Fan-in: a thousand senders connected at once to one receiver, each with its own cluster.

use crate::common;

use common::{Running, TestSender, delta, hello, sample, small_snapshot};

const SENDERS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_senders_are_served_by_one_receiver() {
    let rx = Running::loopback().await.expect("receiver");
    let ingest = rx.ingest;
    let tasks: Vec<_> = (0..SENDERS)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = TestSender::welcomed(ingest, hello(&format!("c{i:04}"), "s"))
                    .await
                    .expect("welcome");
                s.batch(small_snapshot(1)).await.expect("send");
                s.batch(delta(2, &[(1, i as f64)])).await.expect("send");
                s.ack_of(2).await.expect("ack");
                s
            })
        })
        .collect();
    let mut senders = Vec::with_capacity(SENDERS);
    for t in tasks {
        senders.push(t.await.expect("sender task"));
    }
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        sample(&text, "relay_receiver_connected_senders"),
        Some(SENDERS as f64)
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("relay_cluster_up{") && l.ends_with(" 1"))
            .count(),
        SENDERS
    );
    let line = r#"kube_pod_container_status_restarts_total{cluster="c0777",namespace="default",pod="web-1",container="app"}"#;
    assert_eq!(sample(&text, line), Some(777.0));
    // Every one of them is still live: a heartbeat is echoed on the last connection.
    let last = senders.last_mut().expect("senders");
    last.heartbeat(1).await.expect("heartbeat");
    assert!(matches!(
        last.recv().await.expect("echo"),
        Some(kube_relay_proto::ReceiverMessage::Heartbeat(_))
    ));
}
