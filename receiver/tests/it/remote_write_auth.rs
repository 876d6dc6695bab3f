//! Remote write's authentication, headers and TLS, as a backend sees them on the wire: the
//! receiver is configured through its config file's per-URL `remote_write` settings (the
//! path an operator uses) and writes to testkit's scripted backend, which records every
//! request's headers and, over HTTPS, whether a client certificate came with it.
//!
//! What must hold: `Authorization: Bearer <token>` from the token file and `Basic
//! base64(user:password)` from the username and password file (a file's trailing newline is
//! not part of the secret), custom headers and the tenant from the cluster label on every
//! request; over TLS, the configured CA is what verifies the backend, the client
//! certificate is presented when configured, and a backend that refuses the receiver's TLS
//! leaves the data queued, counted as retried and logged, never dropped.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use kube_relay_proto::{Batch, FamilyDef, MetricKind, SeriesDef, SnapshotPart};
use kube_relay_receiver::ReceiverConfig;
use kube_relay_testkit::pki::Pki;
use kube_relay_testkit::wait_until;
use kube_relay_testkit::write_backend::{Received, WriteBackend};

use crate::common::{Running, TestSender, capture_logs, hello, logged, sample, values};

/// The receiver's configuration from `yaml` (the `receiver:` section's body, indented by
/// two), loaded the way `receiver --config FILE` loads it, listening on loopback.
fn config_from_file(dir: &Path, yaml: &str) -> Result<ReceiverConfig> {
    let file = dir.join("receiver.yaml");
    std::fs::write(&file, format!("receiver:\n{yaml}"))?;
    let file = file.to_str().context("utf-8 path")?;
    let args = [
        "receiver",
        "--config",
        file,
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    ReceiverConfig::load(args, Vec::new()).map_err(|e| anyhow::anyhow!("config: {e}"))
}

/// Writes `text` to `name` in `dir`, returning the path as the YAML will name it.
fn secret(dir: &Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_str().context("utf-8 path")?.to_owned())
}

/// One cluster's snapshot of one gauge, acknowledged (so it is in every URL's queue).
async fn send_one_snapshot(receiver: &Running, cluster: &str) -> Result<()> {
    let mut sender = TestSender::welcomed(receiver.ingest, hello(cluster, "s")).await?;
    sender
        .batch(Batch {
            seq: 1,
            snapshot: Some(SnapshotPart {
                first: true,
                last: true,
            }),
            families: vec![FamilyDef {
                id: 0,
                name: "kube_deployment_status_replicas".into(),
                help: "Replicas.".into(),
                kind: MetricKind::Gauge,
            }],
            series: vec![SeriesDef {
                id: 0,
                family: 0,
                labels: vec![("deployment".into(), "web".into())],
            }],
            updates: values(&[(0, 3.0)]),
            removals: vec![],
            observed_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        })
        .await?;
    sender.ack_of(1).await?;
    sender.goodbye().await?;
    Ok(())
}

/// Waits for `backend` to have accepted at least one request.
async fn accepted(what: &str, backend: &WriteBackend) -> Result<Vec<Received>> {
    wait_until(
        what,
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            let r = backend.received();
            Ok(r.iter().any(|r| r.status == 204).then_some(r))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_basic_auth_and_custom_headers_reach_the_backend() -> Result<()> {
    let bearer = WriteBackend::start(vec![]).await?;
    let basic = WriteBackend::start(vec![]).await?;
    let dir = tempfile::tempdir()?;
    // Both files end in a newline, as `echo secret > file` and most editors leave them.
    let token = secret(dir.path(), "token", "s3cret-token\n")?;
    let password = secret(dir.path(), "password", "pa55word\n")?;
    let config = config_from_file(
        dir.path(),
        &format!(
            "  state_dir: {state}\n  remote_write:\n    - url: {bearer}\n      \
             bearer_token_file: {token}\n      \
             headers: {{X-Scope-OrgID: team-a, X-Extra: one}}\n    - url: {basic}\n      \
             basic_auth_username: relay\n      basic_auth_password_file: {password}\n      \
             tenant_header: X-Scope-OrgID\n",
            state = dir.path().join("state").display(),
            bearer = bearer.url(),
            basic = basic.url(),
        ),
    )?;
    let receiver = Running::start(config).await?;
    send_one_snapshot(&receiver, "cluster-7").await?;

    let to_bearer = accepted("a request with the bearer token", &bearer).await?;
    for r in &to_bearer {
        ensure!(
            r.header("authorization") == Some("Bearer s3cret-token"),
            "bearer: {:?}",
            r.headers
        );
        ensure!(
            r.header("x-scope-orgid") == Some("team-a"),
            "{:?}",
            r.headers
        );
        ensure!(r.header("x-extra") == Some("one"), "{:?}", r.headers);
    }
    let to_basic = accepted("a request with basic auth", &basic).await?;
    for r in &to_basic {
        // base64("relay:pa55word"), computed outside the product (`printf relay:pa55word |
        // base64`).
        ensure!(
            r.header("authorization") == Some("Basic cmVsYXk6cGE1NXdvcmQ="),
            "basic: {:?}",
            r.headers
        );
        ensure!(
            r.header("x-scope-orgid") == Some("cluster-7"),
            "tenant from the cluster: {:?}",
            r.headers
        );
        ensure!(r.header("x-extra").is_none(), "headers are per URL");
    }
    receiver.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_backend_with_the_ca_and_presents_the_client_certificate() -> Result<()> {
    capture_logs();
    let pki = Pki::generate()?;
    // Requires a client certificate from the test CA; the receiver presents one.
    let mutual = WriteBackend::start_tls(vec![], &pki.server, Some(&pki.ca)).await?;
    // Requires one too; the receiver has none for it.
    let no_client_cert = WriteBackend::start_tls(vec![], &pki.server, Some(&pki.ca)).await?;
    // Asks for none, but the receiver trusts an unrelated CA for it.
    let wrong_ca = WriteBackend::start_tls(vec![], &pki.server, None).await?;
    let dir = tempfile::tempdir()?;
    let config = config_from_file(
        dir.path(),
        &format!(
            "  state_dir: {state}\n  remote_write:\n    - url: {mutual}\n      \
             tls_ca_file: {ca}\n      tls_cert_file: {cert}\n      tls_key_file: {key}\n    \
             - url: {no_client_cert}\n      tls_ca_file: {ca}\n    \
             - url: {wrong_ca}\n      tls_ca_file: {other_ca}\n",
            state = dir.path().join("state").display(),
            mutual = mutual.url(),
            no_client_cert = no_client_cert.url(),
            wrong_ca = wrong_ca.url(),
            ca = pki.ca.display(),
            other_ca = pki.other_ca.display(),
            cert = pki.client.cert.display(),
            key = pki.client.key.display(),
        ),
    )?;
    let receiver = Running::start(config).await?;
    send_one_snapshot(&receiver, "tls").await?;

    let received = accepted("a request over mutual TLS", &mutual).await?;
    ensure!(
        received.iter().all(|r| r.client_certificate),
        "the client certificate is presented"
    );
    ensure!(mutual.failed_handshakes() == 0);

    // Both refused URLs: the failure is retried (counted), logged with its cause, and
    // nothing is dropped; the data waits in the queue.
    let refused = [
        (
            &no_client_cert,
            "the backend refuses a receiver without a client certificate",
        ),
        (
            &wrong_ca,
            "the receiver refuses a backend its CA did not sign",
        ),
    ];
    for (backend, what) in refused {
        let url = backend.url();
        let retried = format!("relay_remote_write_samples_retried_total{{url=\"{url}\"}}");
        let metrics = receiver
            .metrics_until(what, |m| sample(m, &retried).is_some_and(|n| n >= 1.0))
            .await?;
        ensure!(backend.received().is_empty(), "{what}: nothing got through");
        let dropped: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("relay_remote_write_samples_dropped_total")
                    && l.contains(&format!("url=\"{url}\""))
            })
            .collect();
        ensure!(
            !dropped.is_empty() && dropped.iter().all(|l| l.ends_with(" 0")),
            "{what}: nothing dropped: {dropped:?}"
        );
        let queued = sample(
            &metrics,
            &format!("relay_remote_write_queue_bytes{{url=\"{url}\"}}"),
        );
        ensure!(
            queued.is_some_and(|b| b > 0.0),
            "{what}: the data waits in the queue ({queued:?})"
        );
        wait_until(
            "the failure in the log",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async {
                Ok(logged()
                    .lines()
                    .any(|l| l.contains("remote write failed; retrying") && l.contains(&url))
                    .then_some(()))
            },
        )
        .await?;
    }
    ensure!(
        no_client_cert.failed_handshakes() >= 1,
        "the backend saw (and refused) the handshake"
    );
    let log = logged();
    let wrong_ca_line = log
        .lines()
        .find(|l| l.contains("remote write failed; retrying") && l.contains(&wrong_ca.url()))
        .unwrap_or_default();
    ensure!(
        wrong_ca_line.contains("certificate") || wrong_ca_line.contains("UnknownIssuer"),
        "the log names the certificate problem: {wrong_ca_line}"
    );
    receiver.stop().await?;
    Ok(())
}
