//! The HTTP port's protection on real sockets: basic auth on `/metrics` and the status page
//! (401 with a `Basic realm="kube-relay"` challenge otherwise, health endpoints open) and
//! HTTPS with a certificate generated at test time.

use crate::common;

use base64::Engine as _;
use common::{Running, TlsClient, https_get, sample};
use kube_relay_receiver::{BasicAuth, ReceiverConfig};
use kube_relay_testkit::http;
use kube_relay_testkit::pki::Pki;

fn auth() -> BasicAuth {
    BasicAuth {
        user: "prometheus".into(),
        password: "open sesame".into(),
    }
}

fn authorization(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

#[tokio::test]
async fn basic_auth_guards_metrics_and_the_status_page_but_not_health() {
    let rx = Running::start(ReceiverConfig {
        http_basic_auth: Some(auth()),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver");
    let good = authorization("prometheus:open sesame");
    let wrong = authorization("prometheus:open sesam");

    for path in ["/metrics", "/"] {
        for headers in [vec![], vec![("Authorization", wrong.as_str())]] {
            let r = http::get(rx.http, path, &headers).await.expect("get");
            assert_eq!(r.status, 401, "{path} with {headers:?}");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Basic realm=\"kube-relay\"")
            );
            assert!(
                !r.text().expect("utf-8").contains("relay_"),
                "nothing leaks in a 401"
            );
        }
        let r = http::get(rx.http, path, &[("Authorization", &good)])
            .await
            .expect("get");
        assert_eq!(r.status, 200, "{path}");
    }
    for path in ["/healthz", "/readyz"] {
        let r = http::get(rx.http, path, &[]).await.expect("get");
        assert_eq!(r.status, 200, "{path} stays open for probes");
    }
    let r = http::get(rx.http, "/metrics", &[("Authorization", &good)])
        .await
        .expect("get");
    let text = r.text().expect("utf-8");
    assert_eq!(
        sample(
            text,
            r#"relay_receiver_auth_failures_total{kind="http_basic_auth"}"#
        ),
        Some(4.0),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_are_served_over_https_only() {
    let pki = Pki::generate().expect("test PKI");
    let rx = Running::start(ReceiverConfig {
        http_tls: Some(common::tls_files(&pki.server)),
        http_basic_auth: Some(auth()),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver");
    let client = TlsClient::new(&pki.ca, None);
    let good = authorization("prometheus:open sesame");
    let (status, _, body) = https_get(rx.http, &client, "/metrics", &[("Authorization", &good)])
        .await
        .expect("https");
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE relay_receiver_connected_senders gauge"),
        "{body}"
    );
    let (status, headers, _) = https_get(rx.http, &client, "/metrics", &[])
        .await
        .expect("https");
    assert_eq!(status, 401);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v == "Basic realm=\"kube-relay\""),
        "{headers:?}"
    );
    let (status, _, _) = https_get(rx.http, &client, "/healthz", &[])
        .await
        .expect("https");
    assert_eq!(status, 200);

    // Plain HTTP on the HTTPS port gets no HTTP answer; a client trusting another CA
    // refuses the server.
    assert!(
        http::get(rx.http, "/healthz", &[]).await.is_err(),
        "plain HTTP must not be answered"
    );
    let wrong_ca = TlsClient::new(&pki.other_ca, None);
    let err = https_get(rx.http, &wrong_ca, "/healthz", &[])
        .await
        .expect_err("unknown CA");
    assert!(format!("{err:#}").contains("UnknownIssuer"), "{err:#}");
}
