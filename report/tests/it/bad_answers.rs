//! The report against query APIs that answer badly: the error names what went wrong and
//! nothing is written. A loopback server gives the same canned answer to every request.

use std::path::PathBuf;
use std::time::Duration;

use kube_relay_report::report::Options;
use kube_relay_report::window::Window;
use kube_relay_report::{Error, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `status` and `body` to every request on a loopback port; returns its URL.
async fn canned(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // the whole request fits in one read for these small forms; the answer
                // closes the connection, so nothing else is read
                let mut request = vec![0; 64 * 1024];
                let _ = stream.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

fn options(url: String, out: PathBuf) -> Options {
    Options {
        prometheus: url,
        cluster: "nowhere".to_owned(),
        namespace: None,
        window: Window {
            from: 1_800_000_000.0,
            to: 1_800_000_600.0,
            resolution: 1.0,
        },
        speed: 1.0,
        rate_window: 60.0,
        settle: 3.0,
        scenario: None,
        plot_deployments: Vec::new(),
        out,
        font: None,
        size: (800, 600),
        timeout: Duration::from_secs(10),
        max_answer_bytes: 1 << 20,
    }
}

#[tokio::test]
async fn empty_refused_and_unreachable_apis_are_named() {
    if kube_relay_report::plot::load_font(None).is_err() {
        kube_relay_testkit::skip::skip("the report needs a TrueType font (fonts-dejavu-core)");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("report");

    let empty = canned(
        "200 OK",
        r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
    )
    .await;
    let err = run(&options(empty, out.clone())).await.map(|_| ());
    assert!(
        matches!(&err, Err(Error::NoData { cluster, .. }) if cluster == "nowhere"),
        "{err:?}"
    );
    let text = err.map_err(|e| e.to_string()).expect_err("an error");
    assert!(text.contains("2027-01-15T08:00:00"), "{text}");

    let refused = canned(
        "400 Bad Request",
        r#"{"status":"error","errorType":"bad_data","error":"unknown function"}"#,
    )
    .await;
    let err = run(&options(refused, out.clone())).await.map(|_| ());
    assert!(
        matches!(&err, Err(Error::Refused { query, error_type, .. })
            if query.contains("kube_horizontalpodautoscaler_status_desired_replicas") && error_type == "bad_data"),
        "{err:?}"
    );

    let broken = canned("502 Bad Gateway", "upstream down").await;
    let err = run(&options(broken.clone(), out.clone())).await.map(|_| ());
    assert!(
        matches!(&err, Err(Error::Status { status: 502, url, body })
            if url.starts_with(&broken) && body == "upstream down"),
        "{err:?}"
    );

    // a port nobody listens on (bound, then closed)
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address")
    };
    let err = run(&options(format!("http://{closed}"), out.clone()))
        .await
        .map(|_| ());
    assert!(
        matches!(&err, Err(Error::Unreachable { url, .. }) if url.contains(&closed.to_string())),
        "{err:?}"
    );
    assert!(!out.exists(), "nothing is written when the report fails");
}
