//! History across outages (`docs/protocol.md`, "Time and history"): while no session is up
//! the link keeps taking changes into the spool at the flush cadence, each batch stamped with
//! the time of its changes, and replays them in order when a receiver is back. A receiver
//! that still holds our series table resumes after its ack; one that lost it (restarted, or
//! another one) first gets a *base* (the definitions, without values, of the series the spool
//! names but does not define, removed ones included), then the spool renumbered to follow it,
//! then, once that is acknowledged, a snapshot. A spooled batch larger than the next
//! receiver's frame limit ends the replay (a snapshot supersedes the rest) rather than being
//! refused on every reconnect. Against a scripted peer (exact frames) and against the real
//! receiver restarted under a sender (what it ends up holding, and the frames a tap saw, in
//! order). A sender killed with a spooled cut and restarted on the same disk spool: the
//! receiver that kept running gets the cut at its own times; a restarted one only the present
//! (the spool superseded, `docs/protocol.md`, "Sender restarts").

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube_relay_proto::{Batch, Resume, SeriesId};
use kube_relay_receiver::ReceiverConfig;
use kube_relay_sender::Error;
use kube_relay_sender::link::{Link, LinkConfig};
use kube_relay_sender::shared::Shared;
use kube_relay_sender::spool::{DiskSpool, ThreadedSpool};
use kube_relay_sender::transport::TcpConnector;
use kube_relay_testkit::wait_until;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use support::{
    PeerConn, RunningReceiver, Tap, accept, ack, next_batch, now_ms, phases, pod_key,
    receive_snapshot, stop_link, value, values, welcome, welcome_with_limit,
};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

fn start_link(
    target: SocketAddr,
    cluster: &str,
    shared: &Arc<Shared>,
) -> (CancellationToken, JoinHandle<Result<(), Error>>) {
    start_link_with(target, link_config(cluster), shared)
}

fn link_config(cluster: &str) -> LinkConfig {
    LinkConfig {
        flush_interval: Duration::from_millis(5),
        ..LinkConfig::new(cluster, format!("{cluster}-sender"))
    }
}

fn start_link_with(
    target: SocketAddr,
    config: LinkConfig,
    shared: &Arc<Shared>,
) -> (CancellationToken, JoinHandle<Result<(), Error>>) {
    let shutdown = CancellationToken::new();
    let link = Link::new(
        config,
        TcpConnector::new(target.to_string()),
        Arc::clone(shared),
    );
    (shutdown.clone(), tokio::spawn(link.run(shutdown)))
}

async fn wait_disconnected(shared: &Shared) {
    wait_until("the link noticed the cut", WAIT, POLL, || async {
        Ok((!shared.stats.connected.load(Ordering::Relaxed)).then_some(()))
    })
    .await
    .expect("disconnected");
}

/// Makes one change while no session is up and waits until the link spooled it as its own
/// batch; returns the wall-clock interval in which the change was made.
async fn change_offline(shared: &Shared, change: impl FnOnce(&Shared)) -> (u64, u64) {
    let before_batches = shared.stats.offline_batches.load(Ordering::Relaxed);
    let before = now_ms();
    change(shared);
    let after = now_ms();
    wait_until("the change spooled", WAIT, POLL, || async {
        let n = shared.stats.offline_batches.load(Ordering::Relaxed);
        Ok((n > before_batches).then_some(()))
    })
    .await
    .expect("spooled");
    // The next change must land in a later millisecond than this batch's stamp.
    tokio::time::sleep(Duration::from_millis(3)).await;
    (before, after)
}

fn set_phase(shared: &Shared, pod: &str, phase: &str) {
    shared.update(|s| s.apply(&pod_key(pod), &phases(pod, phase)));
}

/// Connects the link to a scripted peer, welcomes it with a snapshot request, acknowledges
/// the snapshot, then cuts the connection; returns the snapshot's last seq.
async fn snapshot_then_cut(listener: &TcpListener, shared: &Shared) -> u64 {
    let (mut conn, hello) = accept(listener).await;
    welcome(&mut conn, Resume::Snapshot, 60_000).await;
    let (_, last) = receive_snapshot(&mut conn).await;
    ack(&mut conn, hello.epoch, last).await;
    wait_until("snapshot acknowledged", WAIT, POLL, || async {
        Ok((shared.stats.acked_seq.load(Ordering::Relaxed) == last).then_some(()))
    })
    .await
    .expect("acknowledged");
    drop(conn);
    wait_disconnected(shared).await;
    last
}

/// The value `updates` give series `id`.
fn update_of(batch: &Batch, id: SeriesId) -> Option<f64> {
    batch
        .updates
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, v)| v.as_f64())
}

#[tokio::test]
async fn changes_during_a_cut_are_spooled_at_their_own_time_and_replayed_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shared = Arc::new(Shared::new(1));
    set_phase(&shared, "web", "Pending");
    let (shutdown, running) = start_link(listener.local_addr().expect("addr"), "b1", &shared);
    let snapshot_last = snapshot_then_cut(&listener, &shared).await;

    let mut made = Vec::new();
    for phase in ["Running", "Failed", "Running"] {
        let when = change_offline(&shared, |s| set_phase(s, "web", phase)).await;
        made.push((phase, when));
    }

    let (mut conn, hello) = accept(&listener).await;
    assert_eq!(
        hello.resume_from,
        Some(snapshot_last + 1),
        "the spooled cut"
    );
    welcome(
        &mut conn,
        Resume::After {
            acked: snapshot_last,
        },
        60_000,
    )
    .await;
    for (i, (phase, (before, after))) in made.iter().enumerate() {
        let batch = next_batch(&mut conn).await;
        assert_eq!(batch.seq, snapshot_last + 1 + i as u64, "in order");
        assert!(batch.snapshot.is_none());
        assert!(
            (*before..=*after).contains(&batch.observed_at_ms),
            "{phase}: stamped {} when it happened ({before}..={after}), not when replayed",
            batch.observed_at_ms
        );
        // Phases are Pending, Running, Failed: ids 0, 1, 2; one is 1.
        let hot = match *phase {
            "Running" => 1,
            _ => 2,
        };
        assert_eq!(update_of(&batch, hot), Some(1.0), "{phase}: {batch:?}");
    }
    // Resumed: the next change is a delta, no snapshot.
    set_phase(&shared, "web", "Pending");
    let live = next_batch(&mut conn).await;
    assert!(live.snapshot.is_none());
    assert_eq!(live.seq, snapshot_last + 4);
    let stats = &shared.stats;
    assert_eq!(stats.replayed_batches.load(Ordering::Relaxed), 3);
    assert_eq!(stats.snapshots_sent.load(Ordering::Relaxed), 1);
    assert_eq!(stats.superseded_samples.load(Ordering::Relaxed), 0);
    stop_link(shutdown, running).await;
}

#[tokio::test]
async fn a_receiver_without_our_table_gets_a_base_then_the_spool_renumbered_then_a_snapshot() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shared = Arc::new(Shared::new(1));
    for pod in ["a", "b", "c"] {
        set_phase(&shared, pod, "Pending");
    }
    let (shutdown, running) = start_link(listener.local_addr().expect("addr"), "b2", &shared);
    let snapshot_last = snapshot_then_cut(&listener, &shared).await;

    // During the outage: `a` changes, `b` goes away, `d` is born and changes.
    let (first_before, first_after) =
        change_offline(&shared, |s| set_phase(s, "a", "Running")).await;
    change_offline(&shared, |s| {
        s.update(|store| store.remove(&pod_key("b")));
    })
    .await;
    change_offline(&shared, |s| set_phase(s, "d", "Pending")).await;
    change_offline(&shared, |s| set_phase(s, "d", "Running")).await;
    assert_eq!(
        shared.store().tombstones(),
        3,
        "b's series, until acknowledged"
    );

    // The receiver lost our table (it restarted, or it is another one).
    let (mut conn, hello) = accept(&listener).await;
    assert_eq!(hello.resume_from, Some(snapshot_last + 1));
    welcome(&mut conn, Resume::Snapshot, 60_000).await;
    let base = receive_parts(&mut conn).await;
    assert_eq!(
        base[0].seq,
        snapshot_last + 5,
        "numbered after the spooled batches"
    );
    assert!(!base[0].families.is_empty(), "the families first");
    let mut described: Vec<(String, String)> = Vec::new();
    for part in &base {
        assert!(
            part.updates.is_empty() && part.removals.is_empty(),
            "no values"
        );
        assert!(
            (first_before..=first_after).contains(&part.observed_at_ms),
            "stamped with the oldest spooled batch's time"
        );
        for s in &part.series {
            described.push((s.labels[1].1.clone(), s.labels[3].1.clone()));
        }
    }
    described.sort();
    let want: Vec<(String, String)> = [
        ("a", "Pending"),
        ("a", "Running"),
        ("b", "Failed"),
        ("b", "Pending"),
        ("b", "Running"),
    ]
    .iter()
    .map(|(p, l)| ((*p).to_owned(), (*l).to_owned()))
    .collect();
    assert_eq!(
        described, want,
        "what the spool names and does not define: a's changed series, b's removed ones; \
         not d, which the spool defines"
    );

    // The spool, renumbered to follow the base, in order.
    let base_last = base[base.len() - 1].seq;
    let replayed: Vec<Batch> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(next_batch(&mut conn).await);
        }
        out
    };
    let seqs: Vec<u64> = replayed.iter().map(|b| b.seq).collect();
    assert_eq!(seqs, (base_last + 1..=base_last + 4).collect::<Vec<_>>());
    assert!(replayed.iter().all(|b| b.snapshot.is_none()));
    assert_eq!(replayed[1].removals.len(), 3, "b removed");
    assert_eq!(replayed[2].series.len(), 3, "d defined with its values");
    assert_eq!(replayed[2].updates.len(), 3);
    let times: Vec<u64> = replayed.iter().map(|b| b.observed_at_ms).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");

    // Once the replay is acknowledged, the present.
    ack(&mut conn, hello.epoch, base_last + 4).await;
    let snapshot = next_batch(&mut conn).await;
    assert!(snapshot.snapshot.is_some_and(|p| p.first), "{snapshot:?}");
    assert_eq!(snapshot.seq, base_last + 5);
    assert_eq!(shared.store().tombstones(), 0, "b's removal acknowledged");
    let stats = &shared.stats;
    assert_eq!(stats.bases_sent.load(Ordering::Relaxed), 1);
    assert_eq!(stats.replayed_batches.load(Ordering::Relaxed), 4);
    assert_eq!(stats.superseded_samples.load(Ordering::Relaxed), 0);
    stop_link(shutdown, running).await;
}

/// The parts of one snapshot (or base), first to last.
async fn receive_parts(conn: &mut PeerConn) -> Vec<Batch> {
    let first = next_batch(conn).await;
    assert!(first.snapshot.is_some_and(|p| p.first), "{first:?}");
    let mut parts = vec![first];
    while !parts[parts.len() - 1].snapshot.is_some_and(|p| p.last) {
        let part = next_batch(conn).await;
        assert!(part.snapshot.is_some(), "only parts until the last");
        parts.push(part);
    }
    parts
}

#[tokio::test]
async fn a_restarted_receiver_gets_the_outage_from_the_spool_on_a_base() {
    let rx = RunningReceiver::start(ReceiverConfig::loopback())
        .await
        .expect("receiver starts");
    let (ingest, http) = (rx.ingest, rx.http);
    let tap = Tap::start(ingest).await;
    let shared = Arc::new(Shared::new(1));
    set_phase(&shared, "web", "Pending");
    set_phase(&shared, "old", "Running");
    // The smallest frames allowed: snapshots and the base spread the families over parts.
    let config = LinkConfig {
        max_frame_bytes: 4096,
        ..link_config("b3")
    };
    let (shutdown, running) = start_link_with(tap.addr(), config, &shared);
    let line = |pod: &str, phase: &str| {
        format!(
            r#"kube_pod_status_phase{{cluster="b3",namespace="default",pod="{pod}",uid="uid-{pod}",phase="{phase}"}}"#
        )
    };
    let labels = |pod: &'static str, phase: &'static str| {
        [("cluster", "b3"), ("pod", pod), ("phase", phase)]
    };
    wait_until("first snapshot", WAIT, POLL, || async {
        let text = support::metrics_text(http).await?;
        Ok(text
            .contains(&format!("{} 1", line("web", "Pending")))
            .then_some(()))
    })
    .await
    .expect("relayed");

    // The receiver goes away, losing everything; the outage happens.
    rx.stop().await.expect("receiver stops");
    wait_disconnected(&shared).await;
    change_offline(&shared, |s| set_phase(s, "web", "Running")).await;
    change_offline(&shared, |s| {
        s.update(|store| store.remove(&pod_key("old")));
    })
    .await;
    change_offline(&shared, |s| set_phase(s, "new", "Pending")).await;
    change_offline(&shared, |s| set_phase(s, "web", "Failed")).await;
    let spooled = shared.stats.offline_batches.load(Ordering::Relaxed);

    // It comes back on the same ports.
    let rx = RunningReceiver::start(ReceiverConfig {
        listen: ingest,
        http_listen: http,
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver starts");
    wait_until(
        "the base, the spool and the snapshot applied",
        WAIT,
        POLL,
        || async { Ok((shared.stats.snapshots_sent.load(Ordering::Relaxed) == 2).then_some(())) },
    )
    .await
    .expect("snapshot after the replay");
    let text = wait_until("the present at the receiver", WAIT, POLL, || async {
        let text = support::metrics_text(http).await?;
        let done = value(&text, "kube_pod_status_phase", &labels("web", "Failed")) == Some(1.0)
            && value(&text, "kube_pod_status_phase", &labels("new", "Pending")) == Some(1.0);
        Ok(done.then_some(text))
    })
    .await
    .expect("present");
    assert!(
        values(&text, "kube_pod_status_phase", &[("pod", "old")]).is_empty(),
        "old is gone"
    );
    assert_eq!(
        value(
            &text,
            "relay_receiver_decode_errors_total",
            &[("kind", "violation")]
        )
        .unwrap_or(0.0),
        0.0,
        "every replayed batch named series the receiver knew"
    );
    let stats = &shared.stats;
    assert_eq!(stats.bases_sent.load(Ordering::Relaxed), 1);
    assert_eq!(stats.replayed_batches.load(Ordering::Relaxed), spooled);
    assert_eq!(stats.superseded_samples.load(Ordering::Relaxed), 0);
    assert_eq!(stats.dropped_spool_full.load(Ordering::Relaxed), 0);

    // On the wire after the restart: the base, the outage in order, then the snapshot.
    let connections = tap.connections();
    let after = connections.last().expect("a connection after the restart");
    let base_end = after
        .iter()
        .position(|b| b.snapshot.is_some_and(|p| p.last))
        .expect("a base");
    assert!(after[0].snapshot.is_some_and(|p| p.first));
    assert!(base_end > 0, "families over more than one part");
    assert!(after[..=base_end].iter().all(|b| b.updates.is_empty()));
    let outage = &after[base_end + 1..base_end + 1 + spooled as usize];
    assert!(outage.iter().all(|b| b.snapshot.is_none()));
    let web_running = outage
        .iter()
        .position(|b| b.updates.iter().any(|(_, v)| v.as_f64() == 1.0))
        .expect("web Running");
    let web_failed = outage
        .iter()
        .rposition(|b| b.updates.len() == 2)
        .expect("web Failed");
    assert!(web_running < web_failed, "in the order they happened");
    assert!(outage.iter().any(|b| b.removals.len() == 3), "old removed");
    let times: Vec<u64> = outage.iter().map(|b| b.observed_at_ms).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let rest = &after[base_end + 1 + spooled as usize..];
    assert!(
        rest.first()
            .is_some_and(|b| b.snapshot.is_some_and(|p| p.first)),
        "the snapshot follows the replay"
    );

    stop_link(shutdown, running).await;
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn a_spooled_batch_too_large_for_the_next_receiver_ends_the_replay_instead_of_looping() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shared = Arc::new(Shared::new(1));
    set_phase(&shared, "web", "Pending");
    let (shutdown, running) = start_link(listener.local_addr().expect("addr"), "b4", &shared);
    let snapshot_last = snapshot_then_cut(&listener, &shared).await;
    // During the outage a burst spooled at the first receiver's 1 MiB frames.
    let names: Vec<String> = (0..3000).map(|i| format!("pod-{i:04}")).collect();
    change_offline(&shared, |s| {
        s.update(|store| {
            for name in &names {
                store.apply(&pod_key(name), &phases(name, "Running"));
            }
            true
        });
    })
    .await;
    let spooled = shared.stats.spooled_samples.load(Ordering::Relaxed);
    assert!(spooled >= 9000);

    // The next receiver takes 64 KiB frames: the burst cannot be replayed to it.
    let limit = 64 << 10;
    let (mut conn, _) = accept(&listener).await;
    welcome_with_limit(
        &mut conn,
        Resume::After {
            acked: snapshot_last,
        },
        60_000,
        limit,
    )
    .await;
    let parts = receive_parts(&mut conn).await;
    for part in &parts {
        let len = kube_relay_proto::frame::encode_payload(&kube_relay_proto::SenderMessage::Batch(
            part.clone(),
        ))
        .expect("encode")
        .len();
        assert!(len <= limit, "{len} > {limit}");
    }
    let stats = &shared.stats;
    assert_eq!(stats.superseded_samples.load(Ordering::Relaxed), spooled);
    assert_eq!(stats.replayed_batches.load(Ordering::Relaxed), 0);
    stop_link(shutdown, running).await;
}

/// One connection relayed to `upstream`; aborting the returned task drops both sockets (a
/// cut link, the receiver keeps running).
async fn cuttable_relay(upstream: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("relay address");
    let task = tokio::spawn(async move {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    (addr, task)
}

/// A sender process's link on the disk spool in `dir`, as `Sender::new` builds it: the
/// spooled epoch continues (or `1` on an empty spool).
fn start_spooled_link(
    dir: &std::path::Path,
    target: SocketAddr,
    cluster: &str,
) -> (Arc<Shared>, JoinHandle<Result<(), Error>>) {
    let config = link_config(cluster);
    let (spool, recovery) =
        DiskSpool::open(dir, config.spool_max_bytes, &config.sender_id).expect("spool");
    let spool = ThreadedSpool::start(spool).expect("spool thread");
    let shared = Arc::new(Shared::new(recovery.epoch.unwrap_or(1)));
    set_phase(&shared, "web", "Pending");
    let link = Link::with_spool(
        config,
        TcpConnector::new(target.to_string()),
        Arc::clone(&shared),
        spool,
    );
    (shared, tokio::spawn(link.run(CancellationToken::new())))
}

/// A first sender run on `dir`: connected to the receiver at `ingest` through a relay, its
/// snapshot applied, then the link cut and three changes spooled offline, then the sender
/// killed (task aborted: no goodbye, no flush). Returns the intervals the changes were made
/// in, oldest first.
async fn sender_spools_a_cut_then_dies(
    dir: &std::path::Path,
    ingest: SocketAddr,
    http: SocketAddr,
    cluster: &str,
) -> Vec<(u64, u64)> {
    let (relay, cut) = cuttable_relay(ingest).await;
    let (shared, task) = start_spooled_link(dir, relay, cluster);
    wait_until("the first snapshot applied", WAIT, POLL, || async {
        let text = support::metrics_text(http).await?;
        let labels = [("cluster", cluster), ("pod", "web"), ("phase", "Pending")];
        Ok((value(&text, "kube_pod_status_phase", &labels) == Some(1.0)).then_some(()))
    })
    .await
    .expect("relayed");
    cut.abort();
    let _ = cut.await;
    wait_disconnected(&shared).await;
    let mut made = Vec::new();
    for phase in ["Running", "Failed", "Running"] {
        made.push(change_offline(&shared, |s| set_phase(s, "web", phase)).await);
    }
    task.abort();
    let _ = task.await;
    made
}

/// The batches of a restarted sender's first connection (through `tap`) stamped inside one
/// of the intervals the first run's spooled changes were made in.
fn spooled_history(tap: &Tap, made: &[(u64, u64)]) -> Vec<u64> {
    let connections = tap.connections();
    let first = connections.first().expect("the restarted sender connected");
    first
        .iter()
        .filter(|b| b.snapshot.is_none())
        .map(|b| b.observed_at_ms)
        .filter(|t| {
            made.iter()
                .any(|(before, after)| (before..=after).contains(&t))
        })
        .collect()
}

#[tokio::test]
async fn a_restarted_sender_replays_its_disk_spool_at_the_original_times_to_the_same_receiver() {
    let rx = RunningReceiver::start(ReceiverConfig::loopback())
        .await
        .expect("receiver starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let made = sender_spools_a_cut_then_dies(dir.path(), rx.ingest, rx.http, "r1").await;

    // The sender comes back on the same state dir; the receiver kept running.
    let tap = Tap::start(rx.ingest).await;
    let (shared, task) = start_spooled_link(dir.path(), tap.addr(), "r1");
    wait_until(
        "the replay acknowledged, then the snapshot",
        WAIT,
        POLL,
        || async { Ok((shared.stats.snapshots_sent.load(Ordering::Relaxed) == 1).then_some(())) },
    )
    .await
    .expect("snapshot after the replay");
    let stats = &shared.stats;
    assert_eq!(stats.replayed_batches.load(Ordering::Relaxed), 3);
    assert_eq!(stats.superseded_samples.load(Ordering::Relaxed), 0);
    let times = spooled_history(&tap, &made);
    assert_eq!(
        times.len(),
        3,
        "each spooled change, at its own time: {times:?}"
    );
    assert!(times.windows(2).all(|w| w[0] < w[1]), "in order: {times:?}");
    let text = wait_until("the present at the receiver", WAIT, POLL, || async {
        let text = support::metrics_text(rx.http).await?;
        let labels = [("cluster", "r1"), ("pod", "web"), ("phase", "Pending")];
        Ok((value(&text, "kube_pod_status_phase", &labels) == Some(1.0)).then_some(text))
    })
    .await
    .expect("present");
    assert_eq!(
        value(
            &text,
            "relay_receiver_decode_errors_total",
            &[("kind", "violation")]
        )
        .unwrap_or(0.0),
        0.0,
        "the replay named series the receiver knew"
    );
    task.abort();
    let _ = task.await;
    rx.stop().await.expect("receiver stops");
}

/// The limitation `docs/protocol.md` states ("Sender restarts"): the previous run's spooled
/// batches name series ids whose definitions died with that run, so a receiver without that
/// table (restarted) cannot be given a base for them; the snapshot supersedes them (counted)
/// and only the present arrives.
#[tokio::test]
async fn a_restarted_sender_to_a_restarted_receiver_sends_the_present_and_counts_its_spool_superseded()
 {
    let rx = RunningReceiver::start(ReceiverConfig::loopback())
        .await
        .expect("receiver starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let made = sender_spools_a_cut_then_dies(dir.path(), rx.ingest, rx.http, "r2").await;
    rx.stop().await.expect("receiver stops");

    let rx = RunningReceiver::start(ReceiverConfig::loopback())
        .await
        .expect("receiver starts");
    let tap = Tap::start(rx.ingest).await;
    let (shared, task) = start_spooled_link(dir.path(), tap.addr(), "r2");
    wait_until("the present at the receiver", WAIT, POLL, || async {
        let text = support::metrics_text(rx.http).await?;
        let labels = [("cluster", "r2"), ("pod", "web"), ("phase", "Pending")];
        Ok((value(&text, "kube_pod_status_phase", &labels) == Some(1.0)).then_some(()))
    })
    .await
    .expect("present");
    let stats = &shared.stats;
    assert_eq!(stats.replayed_batches.load(Ordering::Relaxed), 0);
    assert_eq!(stats.bases_sent.load(Ordering::Relaxed), 0);
    assert!(
        stats.superseded_samples.load(Ordering::Relaxed) > 0,
        "the spool is counted as superseded"
    );
    assert_eq!(
        spooled_history(&tap, &made),
        Vec::<u64>::new(),
        "no spooled change reaches the restarted receiver"
    );
    task.abort();
    let _ = task.await;
    rx.stop().await.expect("receiver stops");
}
