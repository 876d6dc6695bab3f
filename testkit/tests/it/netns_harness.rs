//! The two-host harness itself: a receiver in host B is reachable from host A over the veth
//! link, unreachable while the link is cut or drops every packet, and reachable again after.

use std::time::Duration;

use anyhow::Result;
use kube_relay_testkit::http;
use kube_relay_testkit::netns::{self, HostB};
use kube_relay_testkit::wait_until;

async fn healthy(addr: std::net::SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(500), http::get(addr, "/healthz", &[])).await,
        Ok(Ok(r)) if r.status == 200
    )
}

#[tokio::test]
async fn link_can_be_cut_made_lossy_and_restored() -> Result<()> {
    if let Some(why) = netns::unavailable() {
        kube_relay_testkit::skip(&format!("two-host harness unavailable here: {why}"));
        return Ok(());
    }
    let host_b = HostB::create()?;
    let http_addr = host_b.addr(9100);
    let receiver = host_b.spawn(
        "receiver",
        &["--listen", "0.0.0.0:9000", "--http-listen", "0.0.0.0:9100"],
        &[],
    )?;
    let up = || async { Ok(healthy(http_addr).await.then_some(())) };
    wait_until(
        "receiver in host B",
        Duration::from_secs(20),
        Duration::from_millis(50),
        up,
    )
    .await
    .map_err(|e| e.context(receiver.log()))?;

    host_b.cut()?;
    assert!(
        !healthy(http_addr).await,
        "unreachable while the link is down"
    );
    host_b.restore()?;
    wait_until(
        "link restored",
        Duration::from_secs(10),
        Duration::from_millis(50),
        up,
    )
    .await?;

    host_b.set_loss(100)?;
    assert!(
        !healthy(http_addr).await,
        "unreachable when every packet is dropped"
    );
    host_b.set_loss(0)?;
    wait_until(
        "loss removed",
        Duration::from_secs(10),
        Duration::from_millis(50),
        up,
    )
    .await?;

    // Commands run inside host B see its own loopback.
    let inside = host_b.exec(&["curl", "-fsS", "http://127.0.0.1:9100/healthz"])?;
    assert!(!inside.is_empty());
    Ok(())
}
