//! Hostile lengths against the real `receiver` binary (a child process, so its memory is its
//! own): a 4-byte header claiming 1 GiB and a valid frame whose inner length claims 2^40,
//! each before and after authentication. Every such connection is closed at once, counted
//! under the right kind, the receiver's RSS does not grow, and a legitimate sender keeps
//! streaming throughout. The figures (close latency, RSS, the legitimate sender's update rate
//! during the abuse against before it) are printed for the issue note.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    ChildReceiver, Streamer, TestSender, hello_with_token, proc_status_kib, rate_during, sample,
    wait_closed,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TOKEN: &str = "abuse-test-token";
/// Series the legitimate sender keeps updating, all of them in every batch.
const SERIES: u32 = 1000;
/// Abusive connections run at once.
const ABUSERS: usize = 8;
/// Abusive connections of each kind after the warm-up.
const ROUNDS_PER_KIND: usize = 400;
/// Generous bound on closing an abusive connection (the issue asks for 1 s; the real figure
/// is printed).
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// The four hostile inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HugeClaim {
    /// A length prefix of 1 GiB, as the first bytes of a connection.
    PreAuthHeader,
    /// A 20-byte `Hello` frame whose cluster name claims 2^40 bytes.
    PreAuthInnerLength,
    /// A length prefix of 1 GiB from an authenticated sender.
    PostAuthHeader,
    /// A `Batch` frame from an authenticated sender whose family list claims 2^40 entries.
    PostAuthInnerLength,
}

const KINDS: [HugeClaim; 4] = [
    HugeClaim::PreAuthHeader,
    HugeClaim::PreAuthInnerLength,
    HugeClaim::PostAuthHeader,
    HugeClaim::PostAuthInnerLength,
];

/// A bincode varint claiming 2^40 (marker 253, then a little-endian u64).
fn claim_2_pow_40() -> Vec<u8> {
    let mut v = vec![253];
    v.extend_from_slice(&(1u64 << 40).to_le_bytes());
    v
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = u32::try_from(payload.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    f.extend_from_slice(payload);
    f
}

impl HugeClaim {
    fn bytes(self) -> Vec<u8> {
        match self {
            HugeClaim::PreAuthHeader | HugeClaim::PostAuthHeader => {
                vec![0x40, 0, 0, 0, 1, 2, 3, 4]
            }
            HugeClaim::PreAuthInnerLength => {
                // SenderMessage::Hello (variant 0), version 1, cluster: length 2^40, bytes.
                let mut payload = vec![0, 1];
                payload.extend(claim_2_pow_40());
                payload.extend_from_slice(b"prod-and-more");
                frame(&payload)
            }
            HugeClaim::PostAuthInnerLength => {
                // SenderMessage::Batch (variant 1), seq 1, no snapshot part, families: 2^40.
                let mut payload = vec![1, 1, 0];
                payload.extend(claim_2_pow_40());
                payload.extend_from_slice(&[0; 12]);
                frame(&payload)
            }
        }
    }

    fn after_hello(self) -> bool {
        matches!(
            self,
            HugeClaim::PostAuthHeader | HugeClaim::PostAuthInnerLength
        )
    }
}

/// One abusive connection; returns the time from the hostile bytes to the close.
async fn abuse_once(rx: &ChildReceiver, evil: HugeClaim, abuser: usize) -> Duration {
    if evil.after_hello() {
        let hello = hello_with_token(&format!("abuser-{abuser}"), "abuser", Some(TOKEN));
        let mut sender = TestSender::welcomed(rx.ingest, hello)
            .await
            .expect("abuser welcomed");
        let started = Instant::now();
        sender.send_raw(&evil.bytes()).await.expect("write");
        sender.closed().await.expect("closed");
        started.elapsed()
    } else {
        let mut stream = TcpStream::connect(rx.ingest).await.expect("connect");
        let started = Instant::now();
        stream.write_all(&evil.bytes()).await.expect("write");
        wait_closed(&mut stream).await.expect("closed");
        started.elapsed()
    }
}

/// A well-behaved short session (Hello, Goodbye), the control for the churn itself.
async fn benign_once(rx: &ChildReceiver, abuser: usize) {
    let hello = hello_with_token(&format!("benign-{abuser}"), "benign", Some(TOKEN));
    let mut sender = TestSender::welcomed(rx.ingest, hello)
        .await
        .expect("welcomed");
    sender.goodbye().await.expect("goodbye");
    sender.closed().await.expect("closed");
}

/// `connections` benign sessions from [`ABUSERS`] concurrent tasks.
async fn churn(rx: &Arc<ChildReceiver>, connections: usize) {
    let tasks: Vec<_> = (0..ABUSERS)
        .map(|abuser| {
            let rx = rx.clone();
            tokio::spawn(async move {
                for _ in (abuser..connections).step_by(ABUSERS) {
                    benign_once(&rx, abuser).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("churn task");
    }
}

/// `rounds` connections of every kind from [`ABUSERS`] concurrent tasks; the close latencies.
async fn abuse(rx: &Arc<ChildReceiver>, rounds: usize) -> Vec<Duration> {
    let tasks: Vec<_> = (0..ABUSERS)
        .map(|abuser| {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (abuser..rounds * KINDS.len()).step_by(ABUSERS) {
                    latencies.push(abuse_once(&rx, KINDS[i % KINDS.len()], abuser).await);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("abuser task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lengths_are_closed_at_once_without_memory_growth_or_slowing_other_senders() {
    let rx = Arc::new(
        ChildReceiver::start(&["--token", TOKEN])
            .await
            .expect("receiver"),
    );
    let pid = rx.child.pid().expect("running");

    // A legitimate sender (its own address) streams full updates of SERIES series.
    let legit = Streamer::start(rx.ingest, [127, 0, 0, 2], "legit", Some(TOKEN), SERIES)
        .await
        .expect("legitimate sender");

    // Baseline: the legitimate sender alone, over a fixed window.
    let (rate_before, ()) = rate_during(
        rx.http,
        "legit",
        tokio::time::sleep(Duration::from_millis(1500)),
    )
    .await
    .expect("rate");
    // Control: as many well-behaved short sessions as there will be hostile connections, so
    // the cost of connection churn on 2 shared cores is told apart from the hostile lengths.
    let started = Instant::now();
    let (rate_churn, ()) = rate_during(rx.http, "legit", churn(&rx, ROUNDS_PER_KIND * KINDS.len()))
        .await
        .expect("rate");
    let churn_secs = started.elapsed().as_secs_f64();

    // Warm-up, so allocator arenas and buffers exist before the memory is measured.
    abuse(&rx, ABUSERS).await;
    let rss_before = rx.rss_kib().expect("rss");
    let started = Instant::now();
    let (rate_during_abuse, mut latencies) =
        rate_during(rx.http, "legit", abuse(&rx, ROUNDS_PER_KIND))
            .await
            .expect("rate");
    let abuse_secs = started.elapsed().as_secs_f64();
    let rss_after = rx.rss_kib().expect("rss");
    let rss_peak = proc_status_kib(pid, "VmHWM:").expect("hwm");
    legit
        .stop()
        .await
        .expect("the legitimate sender is still served");

    latencies.sort();
    let n = latencies.len();
    let median = latencies[n / 2];
    let p99 = latencies[n * 99 / 100];
    let max = latencies[n - 1];
    let ratio = rate_during_abuse / rate_before;
    let rss_growth = rss_after as i64 - rss_before as i64;
    println!(
        "\nFIGURES abuse: {n} hostile connections ({ROUNDS_PER_KIND} of each of 4 kinds, \
         {ABUSERS} at once, {abuse_secs:.2} s): closed after median {median:?}, p99 {p99:?}, \
         max {max:?}; receiver RSS {rss_before} KiB -> {rss_after} KiB ({rss_growth:+} KiB), \
         peak {rss_peak} KiB; legitimate sender {rate_before:.0} updates/s alone, \
         {rate_during_abuse:.0} during the abuse (ratio {ratio:.2}), {rate_churn:.0} during as many \
         well-behaved sessions ({churn_secs:.2} s, ratio {:.2}); {} build, clients and \
         receiver on the same 2 shared cores\n",
        rate_churn / rate_before,
        common::PROFILE
    );

    assert!(
        max < CLOSE_BOUND,
        "an abusive connection stayed open {max:?}"
    );
    assert!(
        rss_growth < 1024,
        "RSS grew by {rss_growth} KiB over {n} hostile connections"
    );
    assert!(rate_during_abuse > 0.0, "the legitimate sender stalled");

    // Every hostile connection was refused for exactly its own reason.
    let text = rx.metrics().await.expect("scrape");
    let total = (ROUNDS_PER_KIND + ABUSERS) * 2;
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_decode_errors_total{kind="frame_too_large"}"#
        ),
        Some(total as f64),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_decode_errors_total{kind="decode"}"#
        ),
        Some(total as f64),
        "{text}"
    );
    let log = rx.child.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("refused connection"))
            .count()
            <= 4,
        "refusals before authentication are logged once per peer and kind:\n{log}"
    );
}
