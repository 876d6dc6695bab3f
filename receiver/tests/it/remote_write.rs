//! Remote write, driven by a test sender that stamps its batches with chosen observation
//! times, into real backends: Debian's VictoriaMetrics (and Prometheus' remote-write
//! receiver) for what lands where, and a scripted backend for the retry and drop rules.
//!
//! The timeline every backend test uses (cluster time, `T` a recent multiple of 15 s):
//! a snapshot at `T` (pod `a` = 1, pod `b` = 5), `a` = 2 at `T+7s`, a heartbeat at
//! `T+20s`, `b` removed at `T+31s`, a heartbeat at `T+46s`. So `a` must hold exactly
//! `(T,1) (T+7,2) (T+15,2) (T+30,2) (T+45,2)` and `b` `(T,5) (T+15,5) (T+30,5)` and its
//! staleness marker at `T+31`.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use kube_relay_proto::{Batch, FamilyDef, MetricKind, SeriesDef, SnapshotPart};
use kube_relay_receiver::ReceiverConfig;
use kube_relay_receiver::remote_write::{Endpoint, wire};
use kube_relay_testkit::prometheus::PrometheusConfig;
use kube_relay_testkit::write_backend::{Answer, WriteBackend};
use kube_relay_testkit::{Prometheus, VictoriaMetrics, wait_until};

use crate::common::{Running, TestSender, hello, sample, values};

const S: u64 = 1000;

fn family() -> FamilyDef {
    FamilyDef {
        id: 0,
        name: "kube_horizontalpodautoscaler_status_current_replicas".into(),
        help: "Current replicas.".into(),
        kind: MetricKind::Gauge,
    }
}

fn series(id: u32, hpa: &str) -> SeriesDef {
    SeriesDef {
        id,
        family: 0,
        labels: vec![
            ("namespace".into(), "shop".into()),
            ("horizontalpodautoscaler".into(), hpa.into()),
        ],
    }
}

/// A recent multiple of 15 s, ten minutes ago (history the backends accept).
fn start_of_timeline() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (now - 600 * S) / (15 * S) * (15 * S)
}

fn config_writing_to(urls: &[String], state: &std::path::Path) -> ReceiverConfig {
    ReceiverConfig {
        state_dir: Some(state.to_owned()),
        remote_write: urls.iter().map(|u| Endpoint::new(u.clone())).collect(),
        ..ReceiverConfig::loopback()
    }
}

/// Plays the module's timeline from `t0` on `cluster`, waiting for each batch's ack.
async fn play_timeline(receiver: &Running, cluster: &str, t0: u64) -> Result<()> {
    let mut sender = TestSender::welcomed(receiver.ingest, hello(cluster, "s")).await?;
    sender
        .batch(Batch {
            seq: 1,
            snapshot: Some(SnapshotPart {
                first: true,
                last: true,
            }),
            families: vec![family()],
            series: vec![series(0, "a"), series(1, "b")],
            updates: values(&[(0, 1.0), (1, 5.0)]),
            removals: vec![],
            observed_at_ms: t0,
        })
        .await?;
    sender.ack_of(1).await?;
    sender
        .batch(Batch {
            seq: 2,
            updates: values(&[(0, 2.0)]),
            observed_at_ms: t0 + 7 * S,
            ..Batch::default()
        })
        .await?;
    sender.ack_of(2).await?;
    sender.heartbeat(t0 + 20 * S).await?;
    sender
        .batch(Batch {
            seq: 3,
            removals: vec![1],
            observed_at_ms: t0 + 31 * S,
            ..Batch::default()
        })
        .await?;
    sender.ack_of(3).await?;
    sender.heartbeat(t0 + 46 * S).await?;
    // An empty batch: acknowledged only once the heartbeat's re-sends are queued too.
    sender
        .batch(Batch {
            seq: 4,
            observed_at_ms: t0 + 46 * S,
            ..Batch::default()
        })
        .await?;
    sender.ack_of(4).await?;
    sender.goodbye().await?;
    Ok(())
}

/// What the timeline must leave in a store, per HPA: `(ms, value)`, NaN for staleness.
fn expected(t0: u64) -> [(&'static str, Vec<(i64, f64)>); 2] {
    let t = |s: u64| (t0 + s * S) as i64;
    [
        (
            "a",
            vec![
                (t(0), 1.0),
                (t(7), 2.0),
                (t(15), 2.0),
                (t(30), 2.0),
                (t(45), 2.0),
            ],
        ),
        (
            "b",
            vec![(t(0), 5.0), (t(15), 5.0), (t(30), 5.0), (t(31), f64::NAN)],
        ),
    ]
}

fn same(got: &[(i64, f64)], want: &[(i64, f64)]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| g.0 == w.0 && (g.1 == w.1 || (g.1.is_nan() && w.1.is_nan())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_lands_in_victoria_metrics_at_its_observation_time() -> Result<()> {
    let vm = match VictoriaMetrics::start().await {
        Ok(vm) => vm,
        Err(e) if kube_relay_testkit::prometheus::which("victoria-metrics").is_none() => {
            kube_relay_testkit::skip(&format!("needs VictoriaMetrics: {e}"));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let state = tempfile::tempdir()?;
    let receiver = Running::start(config_writing_to(&[vm.write_url()], state.path())).await?;
    let t0 = start_of_timeline();
    play_timeline(&receiver, "timeline", t0).await?;

    let want = expected(t0);
    let got = wait_until(
        "the timeline in VictoriaMetrics",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let series = vm.export(r#"{cluster="timeline"}"#).await?;
            let ok = want.iter().all(|(hpa, samples)| {
                series.iter().any(|s| {
                    s.label("horizontalpodautoscaler") == *hpa && same(&s.samples, samples)
                })
            });
            Ok(ok.then_some(series))
        },
    )
    .await
    .with_context(|| format!("victoria-metrics log:\n{}", vm.log()))?;
    ensure!(got.len() == 2, "two series, got {got:?}");
    for s in &got {
        ensure!(
            s.label("__name__") == "kube_horizontalpodautoscaler_status_current_replicas"
                && s.label("namespace") == "shop"
                && s.label("cluster") == "timeline",
            "labels: {:?}",
            s.metric
        );
    }
    let metrics = receiver.metrics().await?;
    let sent = sample(
        &metrics,
        &format!(
            "relay_remote_write_samples_sent_total{{url=\"{}\"}}",
            vm.write_url()
        ),
    );
    ensure!(
        sent == Some(9.0),
        "nine samples sent, the exposition says {sent:?}"
    );
    receiver.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_lands_in_prometheus_at_its_observation_time() -> Result<()> {
    // Prometheus as the remote-write backend, with the out-of-order window the shipped
    // prometheus.yml sets (the timeline is ten minutes old: history replayed late).
    let prometheus = Prometheus::start_with(PrometheusConfig {
        remote_write_receiver: Some(Duration::from_secs(7200)),
        ..PrometheusConfig::new(&[])
    })
    .await?;
    let url = format!("http://{}/api/v1/write", prometheus.addr());
    let state = tempfile::tempdir()?;
    let receiver = Running::start(config_writing_to(&[url], state.path())).await?;
    // Prometheus' head starts with newer samples, so the timeline arrives out of order.
    let t0 = start_of_timeline();
    play_timeline(&receiver, "prom", t0).await?;

    let want = expected(t0);
    let name = "kube_horizontalpodautoscaler_status_current_replicas";
    let at = (t0 + 60 * S) as f64 / 1000.0;
    let got = wait_until(
        "the timeline in Prometheus",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let series = prometheus
                .raw_samples(&format!(r#"{name}{{cluster="prom"}}[5m]"#), at)
                .await?;
            let ok = want.iter().all(|(hpa, samples)| {
                // Prometheus keeps the staleness marker but never returns it.
                let visible: Vec<(i64, f64)> = samples
                    .iter()
                    .copied()
                    .filter(|(_, v)| !v.is_nan())
                    .collect();
                series.iter().any(|s| {
                    let points: Vec<(i64, f64)> = s
                        .values
                        .iter()
                        .map(|(t, v)| ((t * 1000.0).round() as i64, *v))
                        .collect();
                    s.metric.get("horizontalpodautoscaler").map(String::as_str) == Some(*hpa)
                        && same(&points, &visible)
                })
            });
            Ok(ok.then_some(series))
        },
    )
    .await
    .with_context(|| format!("prometheus log:\n{}", prometheus.log()))?;
    ensure!(got.len() == 2, "{got:?}");
    // The staleness marker at T+31 s ends b at once: absent a millisecond later, while a
    // plain gap would keep its last value for five minutes of lookback.
    let b = format!(r#"{name}{{cluster="prom",horizontalpodautoscaler="b"}}"#);
    let before = (t0 + 31 * S - 1) as f64 / 1000.0;
    let after = (t0 + 31 * S + 1) as f64 / 1000.0;
    let value_at = |t: f64| {
        let b = b.clone();
        let prometheus = &prometheus;
        async move {
            prometheus
                .query_range(&b, t, t, 1.0)
                .await
                .map(|s| s.first().and_then(|s| s.values.first().map(|p| p.1)))
        }
    };
    ensure!(
        value_at(before).await? == Some(5.0),
        "b is 5 until its removal"
    );
    ensure!(
        value_at(after).await?.is_none(),
        "b is gone right after its staleness marker"
    );
    receiver.stop().await?;
    Ok(())
}

/// Samples of the timeline, all acknowledged (its last batch follows the last heartbeat).
const ACKNOWLEDGED: usize = 9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_survive_a_restart_while_the_backend_is_down() -> Result<()> {
    let vm_dead = kube_relay_testkit::prometheus::free_loopback_addr()?;
    let url = format!("http://{vm_dead}/api/v1/write");
    let state = tempfile::tempdir()?;
    let receiver =
        Running::start(config_writing_to(std::slice::from_ref(&url), state.path())).await?;
    let t0 = start_of_timeline();
    play_timeline(&receiver, "restart", t0).await?;
    receiver.stop().await?;

    // The backend comes up at the address the queue was written for.
    let backend = WriteBackend::start_at(vm_dead, vec![]).await?;
    let receiver = Running::start(config_writing_to(&[url], state.path())).await?;
    let received = wait_until(
        "the queued timeline delivered after the restart",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let n: usize = backend
                .received()
                .iter()
                .filter_map(|r| wire::decode_request(&r.body).ok())
                .map(|w| w.timeseries.iter().map(|t| t.samples.len()).sum::<usize>())
                .sum();
            Ok((n >= ACKNOWLEDGED).then_some(n))
        },
    )
    .await?;
    ensure!(
        received == ACKNOWLEDGED,
        "every acknowledged sample once, got {received}"
    );
    receiver.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_dropped_and_counted_and_throttling_is_retried() -> Result<()> {
    let backend = WriteBackend::start(vec![
        Answer::status(400),
        Answer::status(429).header("Retry-After", "1"),
        Answer::status(503),
    ])
    .await?;
    let state = tempfile::tempdir()?;
    let mut endpoint = Endpoint::new(backend.url());
    endpoint.headers.insert("X-Team".into(), "relay".into());
    endpoint.tenant_header = Some("X-Scope-OrgID".into());
    let receiver = Running::start(ReceiverConfig {
        state_dir: Some(state.path().to_owned()),
        remote_write: vec![endpoint],
        ..ReceiverConfig::loopback()
    })
    .await?;
    let t0 = start_of_timeline();
    let mut sender = TestSender::welcomed(receiver.ingest, hello("tenant-a", "s")).await?;
    sender
        .batch(Batch {
            seq: 1,
            snapshot: Some(SnapshotPart {
                first: true,
                last: true,
            }),
            families: vec![family()],
            series: vec![series(0, "a"), series(1, "b")],
            updates: values(&[(0, 1.0), (1, 5.0)]),
            removals: vec![],
            observed_at_ms: t0,
        })
        .await?;
    sender.ack_of(1).await?;
    wait_until(
        "the first request",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { Ok((!backend.received().is_empty()).then_some(())) },
    )
    .await?;
    sender
        .batch(Batch {
            seq: 2,
            updates: values(&[(0, 3.0)]),
            observed_at_ms: t0 + 2 * S,
            ..Batch::default()
        })
        .await?;
    sender.ack_of(2).await?;
    let received = wait_until(
        "429, 503, then accepted",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let r = backend.received();
            Ok((r.len() >= 4).then_some(r))
        },
    )
    .await?;
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    ensure!(statuses == [400, 429, 503, 204], "statuses {statuses:?}");
    // The refused batch was never sent again; the throttled one three times, unchanged.
    let first = wire::decode_request(&received[0].body).map_err(anyhow::Error::msg)?;
    ensure!(first.timeseries.len() == 2, "{first:?}");
    ensure!(received[1].body == received[2].body && received[2].body == received[3].body);
    let retried = wire::decode_request(&received[3].body).map_err(anyhow::Error::msg)?;
    ensure!(
        retried.timeseries.len() == 1 && retried.timeseries[0].samples[0].value == 3.0,
        "{retried:?}"
    );
    for r in &received {
        ensure!(r.header("content-encoding") == Some("snappy"));
        ensure!(r.header("content-type") == Some("application/x-protobuf"));
        ensure!(r.header("x-prometheus-remote-write-version") == Some("0.1.0"));
        ensure!(
            r.header("user-agent")
                .is_some_and(|ua| ua.starts_with("kube-relay-receiver/"))
        );
        ensure!(r.header("x-team") == Some("relay"));
        ensure!(
            r.header("x-scope-orgid") == Some("tenant-a"),
            "tenant from the cluster"
        );
    }
    let url = backend.url();
    let metrics = receiver
        .metrics_until("the counters", |m| {
            sample(
                m,
                &format!("relay_remote_write_samples_sent_total{{url=\"{url}\"}}"),
            ) == Some(1.0)
        })
        .await?;
    let get = |name: &str| sample(&metrics, name);
    ensure!(
        get(&format!(
            "relay_remote_write_samples_dropped_total{{url=\"{url}\",reason=\"http_4xx\"}}"
        )) == Some(2.0),
        "{metrics}"
    );
    ensure!(
        get(&format!(
            "relay_remote_write_samples_retried_total{{url=\"{url}\"}}"
        )) == Some(2.0)
    );
    ensure!(
        get(&format!(
            "relay_remote_write_samples_dropped_total{{url=\"{url}\",reason=\"queue_full\"}}"
        )) == Some(0.0)
    );
    receiver.stop().await?;
    Ok(())
}

/// Shards grow with the lag (issue 13: "shards grow with lag up to a maximum"): a backend
/// slower than the load (each answer takes 250 ms, 50 samples a request, so one shard
/// delivers at most 200 samples/s while 1,000/s arrive) makes the receiver double its
/// shards up to `max_shards` and no further; once the backlog is delivered they shrink.
/// Throughout, every sample arrives exactly once and each series' samples in time order,
/// across every resharding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_grow_to_the_maximum_while_a_slow_backend_falls_behind() -> Result<()> {
    const SERIES: u32 = 100;
    const MAX_SHARDS: usize = 4;
    let backend = WriteBackend::start(vec![]).await?;
    backend.set_latency(Duration::from_millis(250));
    let state = tempfile::tempdir()?;
    let mut endpoint = Endpoint::new(backend.url());
    endpoint.max_samples_per_send = 50;
    endpoint.min_shards = 1;
    endpoint.max_shards = MAX_SHARDS;
    let url = backend.url();
    let receiver = Running::start(ReceiverConfig {
        state_dir: Some(state.path().to_owned()),
        remote_write: vec![endpoint],
        ..ReceiverConfig::loopback()
    })
    .await?;
    let shards = |m: &str| sample(m, &format!("relay_remote_write_shards{{url=\"{url}\"}}"));
    let mut sender = TestSender::welcomed(receiver.ingest, hello("slow", "s")).await?;
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    sender
        .batch(Batch {
            seq: 1,
            snapshot: Some(SnapshotPart {
                first: true,
                last: true,
            }),
            families: vec![family()],
            series: (0..SERIES).map(|i| series(i, &format!("h{i}"))).collect(),
            updates: values(&(0..SERIES).map(|i| (i, f64::from(i))).collect::<Vec<_>>()),
            removals: vec![],
            observed_at_ms: t0,
        })
        .await?;
    sender.ack_of(1).await?;

    // 1,000 samples/s until the shards reach the maximum (two resharding windows of 10 s).
    let mut sent: Vec<(u32, i64, f64)> =
        (0..SERIES).map(|i| (i, t0 as i64, f64::from(i))).collect();
    let mut most = 1.0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let mut round: u32 = 0;
    while most < MAX_SHARDS as f64 {
        ensure!(
            started.elapsed() < Duration::from_secs(90),
            "shards still {most} after 90 s of a backlog"
        );
        tick.tick().await;
        round += 1;
        let at = t0 + u64::from(round) * 100;
        let pairs: Vec<(u32, f64)> = (0..SERIES)
            .map(|i| (i, f64::from(round * 1000 + i)))
            .collect();
        sent.extend(pairs.iter().map(|&(i, v)| (i, at as i64, v)));
        sender
            .batch(Batch {
                seq: u64::from(round) + 1,
                updates: values(&pairs),
                observed_at_ms: at,
                ..Batch::default()
            })
            .await?;
        sender.ack_of(u64::from(round) + 1).await?;
        if round.is_multiple_of(10) {
            let now = shards(&receiver.metrics().await?).unwrap_or(0.0);
            ensure!(
                now <= MAX_SHARDS as f64,
                "{now} shards, the maximum is {MAX_SHARDS}"
            );
            most = f64::max(most, now);
        }
    }
    let grew_after = started.elapsed();

    // Everything arrives, once, each series in order; then the idle shards shrink.
    let received = wait_until(
        "every sample delivered",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            let mut got: Vec<(u32, i64, f64)> = Vec::new();
            for r in backend.received() {
                let request = wire::decode_request(&r.body).map_err(anyhow::Error::msg)?;
                for ts in &request.timeseries {
                    let hpa = ts
                        .labels
                        .iter()
                        .find(|l| l.name == "horizontalpodautoscaler")
                        .context("the series' label")?;
                    let id: u32 = hpa.value.trim_start_matches('h').parse()?;
                    got.extend(ts.samples.iter().map(|s| (id, s.timestamp, s.value)));
                }
            }
            let seen: HashSet<(u32, i64, u64)> =
                got.iter().map(|&(i, t, v)| (i, t, v.to_bits())).collect();
            let delivered = sent
                .iter()
                .filter(|&&(i, t, v)| seen.contains(&(i, t, v.to_bits())))
                .count();
            Ok((delivered == sent.len()).then_some(got))
        },
    )
    .await?;
    for id in 0..SERIES {
        let times: Vec<i64> = received
            .iter()
            .filter(|(i, _, _)| *i == id)
            .map(|(_, t, _)| *t)
            .collect();
        ensure!(
            times.windows(2).all(|w| w[1] > w[0]),
            "series h{id} out of order or repeated: {times:?}"
        );
    }
    // Two resharding windows: the one the backlog drained in, then an idle one.
    let metrics = wait_until(
        "the shards shrinking once idle",
        Duration::from_secs(40),
        Duration::from_millis(200),
        || async {
            let m = receiver.metrics().await?;
            Ok(shards(&m)
                .is_some_and(|n| n < MAX_SHARDS as f64)
                .then_some(m))
        },
    )
    .await?;
    println!(
        "FIGURE remote-write resharding: 1 → {MAX_SHARDS} shards after {:.1} s behind a 250 ms \
         backend; {} samples delivered once and in order; {} shards once drained",
        grew_after.as_secs_f64(),
        received.len(),
        shards(&metrics).unwrap_or(0.0)
    );
    receiver.stop().await?;
    Ok(())
}
