//! A real Prometheus (Debian's `prometheus`) scraping the receiver: it negotiates the format,
//! ingests every relayed series with its `cluster` label, and sees the self-metrics.

use crate::common;

use std::time::Duration;

use common::{Running, TestSender, delta, hello, small_snapshot};
use kube_relay_testkit::Prometheus;
use kube_relay_testkit::prometheus::PrometheusConfig;

/// The started Prometheus; `None` (the test is skipped, loudly) only when Debian's
/// `prometheus` is not installed, any other failure fails the test.
fn started(result: anyhow::Result<Prometheus>) -> Option<Prometheus> {
    match result {
        Ok(prom) => Some(prom),
        Err(e) if format!("{e:#}").contains("install Debian's `prometheus`") => {
            kube_relay_testkit::skip(&format!("{e:#}"));
            None
        }
        Err(e) => panic!("prometheus did not start: {e:#}"),
    }
}

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn prometheus_scrapes_every_cluster_with_its_label() {
    let rx = Running::loopback().await.expect("receiver");
    let mut prod = TestSender::welcomed(rx.ingest, hello("prod", "a"))
        .await
        .expect("welcome");
    prod.batch(small_snapshot(1)).await.expect("send");
    prod.batch(delta(2, &[(1, 4.0)])).await.expect("send");
    prod.ack_of(2).await.expect("ack");
    let mut staging = TestSender::welcomed(rx.ingest, hello("staging", "b"))
        .await
        .expect("welcome");
    staging.batch(small_snapshot(1)).await.expect("send");
    staging.ack_of(1).await.expect("ack");

    let Some(prom) = started(Prometheus::start(&[rx.http]).await) else {
        return;
    };
    let restarts = prom
        .wait_for("kube_pod_container_status_restarts_total", WAIT, |s| {
            s.len() == 2
        })
        .await
        .expect("both clusters scraped");
    let value_of = |cluster: &str| {
        restarts
            .iter()
            .find(|s| s.label("cluster") == cluster)
            .map(|s| s.value)
    };
    assert_eq!(value_of("prod"), Some(4.0));
    assert_eq!(value_of("staging"), Some(2.0));
    assert!(
        restarts
            .iter()
            .all(|s| s.label("pod") == "web-1" && s.label("container") == "app")
    );

    let up = prom
        .wait_for("relay_cluster_up", WAIT, |s| s.len() == 2)
        .await
        .expect("self-metrics scraped");
    assert!(up.iter().all(|s| s.value == 1.0), "{up:?}");

    // A change reaches Prometheus on a later scrape.
    prod.batch(delta(3, &[(1, 9.0)])).await.expect("send");
    prod.ack_of(3).await.expect("ack");
    prom.wait_for(
        "kube_pod_container_status_restarts_total{cluster=\"prod\"}",
        WAIT,
        |s| s.first().is_some_and(|s| s.value == 9.0),
    )
    .await
    .expect("update scraped");
    let scraped = prom
        .query("up{job=\"kube-relay\"}")
        .await
        .expect("query up");
    assert_eq!(
        scraped.first().map(|s| s.value),
        Some(1.0),
        "{}",
        prom.log()
    );
}

#[tokio::test]
async fn prometheus_scrapes_over_tls_with_basic_auth() {
    use kube_relay_receiver::{BasicAuth, ReceiverConfig};
    use kube_relay_testkit::pki::Pki;
    use kube_relay_testkit::prometheus::{self, TlsConfig};

    let pki = Pki::generate().expect("test PKI");
    let password_file = pki.dir().join("scrape-password");
    std::fs::write(&password_file, "s3cret scrape pass\n").expect("write");
    let rx = common::Running::start(ReceiverConfig {
        http_tls: Some(common::tls_files(&pki.server)),
        http_basic_auth: Some(BasicAuth {
            user: "prometheus".into(),
            password: "s3cret scrape pass".into(),
        }),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver");
    let mut prod = TestSender::welcomed(rx.ingest, hello("prod", "a"))
        .await
        .expect("welcome");
    prod.batch(small_snapshot(1)).await.expect("send");
    prod.ack_of(1).await.expect("ack");

    let config = PrometheusConfig {
        scheme: "https".into(),
        basic_auth: Some(prometheus::BasicAuth {
            username: "prometheus".into(),
            password_file,
        }),
        tls_config: Some(TlsConfig {
            ca_file: Some(pki.ca.clone()),
            ..TlsConfig::default()
        }),
        ..PrometheusConfig::new(&[rx.http])
    };
    let Some(prom) = started(Prometheus::start_with(config).await) else {
        return;
    };
    let restarts = prom
        .wait_for(
            "kube_pod_container_status_restarts_total{cluster=\"prod\"}",
            WAIT,
            |s| s.len() == 1,
        )
        .await
        .expect("scraped over HTTPS with basic auth");
    assert_eq!(restarts[0].value, 2.0);
    let up = prom
        .query("up{job=\"kube-relay\"}")
        .await
        .expect("query up");
    assert_eq!(up.first().map(|s| s.value), Some(1.0), "{}", prom.log());
    // Every scrape carried the credentials: no 401 was ever answered.
    let failures = prom
        .query("sum(relay_receiver_auth_failures_total) or vector(0)")
        .await
        .expect("query");
    assert_eq!(failures.first().map(|s| s.value), Some(0.0), "{failures:?}");
}
