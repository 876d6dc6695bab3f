//! The Prometheus runner works against a real `prometheus`: it scrapes a loopback target and
//! answers queries.

use std::time::Duration;

use kube_relay_testkit::Prometheus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves a fixed exposition on every connection.
async fn serve_fixed(listener: TcpListener, body: &'static str) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

#[tokio::test]
async fn scrapes_a_target_and_answers_queries() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = listener.local_addr().expect("addr");
    tokio::spawn(serve_fixed(
        listener,
        "# TYPE testkit_answer gauge\ntestkit_answer{kind=\"x\"} 42\n",
    ));
    let prom = Prometheus::start(&[target])
        .await
        .expect("prometheus starts");
    let samples = prom
        .wait_for("testkit_answer", Duration::from_secs(30), |s| !s.is_empty())
        .await
        .expect("scraped");
    assert_eq!(samples[0].value, 42.0);
    assert_eq!(samples[0].label("kind"), "x");
    assert_eq!(samples[0].label("job"), "kube-relay");
    let err = prom
        .query("sum(")
        .await
        .expect_err("bad PromQL is an error");
    assert!(format!("{err:#}").contains("parse error"), "{err:#}");
}
