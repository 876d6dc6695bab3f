//! A restarted link and its disk spool, against a scripted peer speaking the receiver's side
//! of the protocol (so the test decides what the receiver still holds).
//!
//! A first link sends a snapshot and deltas that are never acknowledged, then dies without
//! any clean-up. A second link opened on the same spool directory continues the epoch, offers
//! the oldest unacknowledged batch in its `Hello`, and then either replays exactly the
//! batches after the receiver's ack, byte for byte, followed by a fresh snapshot once they
//! are acknowledged (`Welcome{After}`), or supersedes them with a snapshot (`Welcome{Snapshot}`), counting
//! them as superseded, not dropped. A spooled batch that does not decode ends the replay:
//! it and the batches after it are superseded by the snapshot and counted so. A full spool drops exactly the samples it cannot keep
//! (checked against what the peer received) and reopens with exactly the rest.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use kube_relay_proto::frame::encode_payload;
use kube_relay_proto::{Batch, Resume, SenderMessage};
use kube_relay_sender::family::Family;
use kube_relay_sender::link::{Link, LinkConfig};
use kube_relay_sender::series::{ObjectKey, ObjectKind, SeriesSet};
use kube_relay_sender::shared::Shared;
use kube_relay_sender::spool::{DiskSpool, MemorySpool, Spool, ThreadedSpool};
use kube_relay_sender::transport::TcpConnector;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use support::{
    PeerConn, accept, ack, kept_or_dropped, next_batch, now_ms, receive_snapshot, welcome,
};

const SENDER_ID: &str = "restart-sender";
const EPOCH: u64 = 4242;
const DELTAS: usize = 6;

fn pod(name: &'static str, phase: &str) -> (ObjectKey, SeriesSet<'static>) {
    let mut set = SeriesSet::new();
    for p in ["Pending", "Running", "Failed"] {
        set.push(
            Family::PodStatusPhase,
            ["default", name, "uid-1", p],
            f64::from(u8::from(p == phase)),
        );
    }
    (ObjectKey::new(ObjectKind::Pod, "default", name), set)
}

fn set_phase(shared: &Shared, phase: &str) {
    let (key, set) = pod("web", phase);
    shared.update(|s| s.apply(&key, &set));
}

fn start_link(dir: &Path, listener: &TcpListener) -> (Arc<Shared>, JoinHandle<()>) {
    start_link_bounded(dir, listener, 1 << 20)
}

fn start_link_bounded(
    dir: &Path,
    listener: &TcpListener,
    max_bytes: u64,
) -> (Arc<Shared>, JoinHandle<()>) {
    let (spool, recovery) = DiskSpool::open(dir, max_bytes, SENDER_ID).expect("spool");
    let spool = ThreadedSpool::start(spool).expect("spool thread");
    // What `Sender::new` does: continue the spooled epoch if there is one.
    let shared = Arc::new(Shared::new(recovery.epoch.unwrap_or(EPOCH)));
    set_phase(&shared, "Pending");
    let config = LinkConfig {
        flush_interval: Duration::from_millis(5),
        spool_max_bytes: max_bytes,
        ack_patience: Duration::from_millis(1),
        ..LinkConfig::new("restart", SENDER_ID)
    };
    let connector = TcpConnector::new(listener.local_addr().expect("addr").to_string());
    let link = Link::with_spool(config, connector, Arc::clone(&shared), spool);
    let task = tokio::spawn(async move {
        let _ = link.run(CancellationToken::new()).await;
    });
    (shared, task)
}

/// Welcomes the sender to a fresh session and acknowledges its whole snapshot.
async fn welcome_and_ack_snapshot(conn: &mut PeerConn) {
    welcome(conn, Resume::Snapshot, 60_000).await;
    let (_, snapshot_last) = receive_snapshot(conn).await;
    ack(conn, EPOCH, snapshot_last).await;
}

/// Flips the pod's phase `n` times; returns the delta batches as the peer received them
/// (never acknowledged).
async fn unacked_deltas(shared: &Shared, conn: &mut PeerConn, n: usize) -> Vec<Batch> {
    let mut deltas = Vec::new();
    for i in 0..n {
        set_phase(shared, if i % 2 == 0 { "Running" } else { "Failed" });
        deltas.push(next_batch(conn).await);
    }
    deltas
}

/// A first run: snapshot acked, then `DELTAS` delta batches never acked; the link is then
/// aborted (no goodbye, no flush). Returns the deltas as the peer received them.
async fn first_run(dir: &Path, listener: &TcpListener) -> Vec<Batch> {
    let (shared, task) = start_link(dir, listener);
    let (mut conn, hello) = accept(listener).await;
    assert_eq!((hello.epoch, hello.resume_from), (EPOCH, None));
    welcome_and_ack_snapshot(&mut conn).await;
    let deltas = unacked_deltas(&shared, &mut conn, DELTAS).await;
    task.abort();
    let _ = task.await;
    deltas
}

#[tokio::test]
async fn a_restarted_link_replays_the_unacked_spool_then_sends_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let deltas = first_run(dir.path(), &listener).await;
    let first = deltas[0].seq;

    // The restart happens later than every spooled change (stamps are in milliseconds).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let restarted_at = now_ms();
    let (shared, task) = start_link(dir.path(), &listener);
    let (mut conn, hello) = accept(&listener).await;
    assert_eq!(hello.epoch, EPOCH, "the spooled epoch continues");
    assert_eq!(hello.resume_from, Some(first), "the oldest unacked batch");
    // The receiver had applied the first two deltas (their acks were lost).
    let acked = first + 1;
    welcome(&mut conn, Resume::After { acked }, 60_000).await;
    for want in &deltas[2..] {
        let got = next_batch(&mut conn).await;
        assert_eq!(&got, want, "replayed byte for byte");
        assert!(
            got.observed_at_ms < restarted_at,
            "replayed with the time it was observed, {} < {restarted_at}",
            got.observed_at_ms
        );
    }
    // The snapshot follows once the replay is acknowledged (a cut before then replays the
    // rest again rather than losing it).
    ack(&mut conn, EPOCH, deltas[DELTAS - 1].seq).await;
    let snapshot = next_batch(&mut conn).await;
    assert!(snapshot.snapshot.is_some_and(|p| p.first));
    assert!(
        snapshot.observed_at_ms >= restarted_at,
        "the snapshot is of now"
    );
    let snapshot_first = snapshot.seq;
    let newest = deltas[DELTAS - 1].seq;
    assert_eq!(
        snapshot_first,
        newest + 1,
        "numbering goes on after the spool"
    );
    let stats = &shared.stats;
    assert_eq!(
        stats.replayed_batches.load(Ordering::Relaxed),
        (DELTAS - 2) as u64
    );
    assert_eq!(stats.superseded_samples.load(Ordering::Relaxed), 0);
    assert_eq!(stats.dropped_spool_full.load(Ordering::Relaxed), 0);
    task.abort();
    let _ = task.await;
    // The snapshot superseded the spool: a third run has nothing to replay.
    let (_, recovery) = DiskSpool::open(dir.path(), 1 << 20, SENDER_ID).expect("spool");
    assert_eq!(recovery.batches, 0);
}

#[tokio::test]
async fn a_receiver_that_lost_the_epoch_gets_a_snapshot_and_the_spool_counts_as_superseded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let deltas = first_run(dir.path(), &listener).await;
    let spooled: u64 = deltas.iter().map(|b| b.changed_samples() as u64).sum();

    let (shared, task) = start_link(dir.path(), &listener);
    let (mut conn, hello) = accept(&listener).await;
    assert_eq!(hello.resume_from, Some(deltas[0].seq));
    welcome(&mut conn, Resume::Snapshot, 60_000).await;
    let (snapshot_first, _) = receive_snapshot(&mut conn).await;
    assert!(snapshot_first > deltas[DELTAS - 1].seq);
    let stats = &shared.stats;
    assert_eq!(stats.replayed_batches.load(Ordering::Relaxed), 0);
    assert_eq!(stats.superseded_samples.load(Ordering::Relaxed), spooled);
    assert_eq!(stats.dropped_spool_full.load(Ordering::Relaxed), 0);
    task.abort();
    let _ = task.await;
}

#[tokio::test]
async fn a_full_disk_spool_drops_exactly_what_it_cannot_keep_and_reopens_with_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (shared, task) = start_link_bounded(dir.path(), &listener, 300);
    let (mut conn, _) = accept(&listener).await;
    welcome_and_ack_snapshot(&mut conn).await;
    // Deltas the peer receives and never acknowledges: the 300-byte bound must drop.
    let received = unacked_deltas(&shared, &mut conn, 30).await;
    let sent: u64 = received.iter().map(|b| b.changed_samples() as u64).sum();
    let kept = kept_or_dropped(&shared, sent);
    task.abort();
    let _ = task.await;

    // What a restarted sender finds: exactly the kept samples, the newest batches, in order.
    let (spool, recovery) = DiskSpool::open(dir.path(), 300, SENDER_ID).expect("reopen");
    assert_eq!(recovery.samples, kept);
    let seqs: Vec<u64> = spool.after(0).iter().map(|(seq, _)| *seq).collect();
    assert!(!seqs.is_empty(), "the newest batches are kept");
    let newest: Vec<u64> = received[received.len() - seqs.len()..]
        .iter()
        .map(|b| b.seq)
        .collect();
    assert_eq!(seqs, newest);
}

#[tokio::test]
async fn a_spooled_batch_that_does_not_decode_ends_the_replay_and_the_rest_counts_as_superseded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let batch = |seq: u64| {
        let msg = SenderMessage::Batch(Batch {
            seq,
            ..Batch::default()
        });
        Bytes::from(encode_payload(&msg).expect("encode"))
    };
    // A restarted sender's spool: batch 2 is damaged.
    let mut spool = MemorySpool::new(1 << 20);
    spool.push(1, batch(1), 3);
    spool.push(2, Bytes::from_static(&[0xff; 16]), 5);
    spool.push(3, batch(3), 7);
    let shared = Arc::new(Shared::new(EPOCH));
    set_phase(&shared, "Pending");
    let connector = TcpConnector::new(listener.local_addr().expect("addr").to_string());
    let link = Link::with_spool(
        LinkConfig::new("restart", SENDER_ID),
        connector,
        Arc::clone(&shared),
        spool,
    );
    let task = tokio::spawn(async move {
        let _ = link.run(CancellationToken::new()).await;
    });

    let (mut conn, hello) = accept(&listener).await;
    assert_eq!(hello.resume_from, Some(1));
    welcome(&mut conn, Resume::After { acked: 0 }, 60_000).await;
    assert_eq!(
        next_batch(&mut conn).await.seq,
        1,
        "replayed up to the damage"
    );
    let (snapshot_first, _) = receive_snapshot(&mut conn).await;
    assert_eq!(snapshot_first, 4, "numbering goes on after the spool");
    let stats = &shared.stats;
    assert_eq!(stats.replayed_batches.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.superseded_samples.load(Ordering::Relaxed),
        5 + 7,
        "the damaged batch and the one after it"
    );
    assert_eq!(stats.dropped_spool_full.load(Ordering::Relaxed), 0);
    task.abort();
    let _ = task.await;
}
