//! Connection floods against the real `receiver` binary (a child process, so client and
//! server file descriptors are counted apart):
//! - 1,000 idle or trickling connections: the connection cap holds, the handshake timeout
//!   closes every admitted one (a trickling one while it still trickles: bytes do not extend
//!   it), an established sender keeps streaming, and a new sender is told `Busy` until a
//!   slot frees, then gets in;
//! - a 10,000-connection burst from ten addresses: the per-address handshake cap holds, and a
//!   legitimate sender from another address connects during the burst and streams.
//!
//! Timings are printed as figures, never asserted: what is asserted is what happened (who
//! was refused, who was closed by the receiver and when in the connection's life, what the
//! receiver counted).

use crate::common;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    ChildReceiver, Streamer, TestSender, connect_from, delta, fd_count, hello_with_token,
    rate_during, sample, small_snapshot,
};
use kube_relay_proto::RejectReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "flood-test-token";

/// One flood at a time: each measures rates on 2 shared cores and holds many descriptors.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// The flood test's handshake timeout: long enough that the flood is opened and the
/// newcomer's first try made before any flooding connection can time out.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a flooding connection waits to be closed before it gives up (then the test
/// fails: the receiver left it open).
const GIVE_UP: Duration = Duration::from_secs(120);

fn rejected(text: &str, reason: &str) -> f64 {
    sample(
        text,
        &format!("relay_receiver_handshakes_rejected_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// A `Hello` whose token is long enough that sending it a byte every 100 ms outlasts
/// [`HANDSHAKE_TIMEOUT`] five times over (about 100 s), and short enough to stay within
/// the handshake frame limit, so the receiver waits for the rest of it.
fn long_hello() -> bytes::BytesMut {
    use tokio_util::codec::Encoder;
    let token = "t".repeat(1000);
    let mut buf = bytes::BytesMut::new();
    kube_relay_proto::SenderCodec::new(1 << 20)
        .encode(
            kube_relay_proto::SenderMessage::Hello(hello_with_token(
                "flood",
                "flood",
                Some(&token),
            )),
            &mut buf,
        )
        .expect("encode");
    assert!(buf.len() <= kube_relay_proto::MAX_HANDSHAKE_FRAME_BYTES);
    buf
}

/// How a flooding connection ended.
#[derive(Debug, Clone, Copy)]
struct FloodEnd {
    /// How long it was open (a figure).
    open_for: Duration,
    /// The receiver closed it (rather than the test giving up after [`GIVE_UP`]).
    closed_by_receiver: bool,
    /// It was closed while it still had bytes of its `Hello` to trickle.
    while_trickling: bool,
}

/// Holds a connection open, sending nothing (idle) or one byte of a long `Hello` every
/// 100 ms (trickling), until the receiver closes it.
async fn flood_connection(mut stream: TcpStream, hello: &[u8], trickle: bool) -> FloodEnd {
    let opened = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 256];
    let end = |sent: usize, closed_by_receiver| FloodEnd {
        open_for: opened.elapsed(),
        closed_by_receiver,
        while_trickling: trickle && sent + 1 < hello.len(),
    };
    loop {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return end(sent, true),
            Ok(Ok(_)) => {} // a Reject: the close follows
            Err(_) if trickle && sent + 1 < hello.len() => {
                if stream.write_all(&hello[sent..=sent]).await.is_err() {
                    return end(sent, true);
                }
                sent += 1;
            }
            Err(_) => {}
        }
        if opened.elapsed() > GIVE_UP {
            return end(sent, false);
        }
    }
}

/// Samples the receiver's open file descriptors until `done` reaches `target`; the peak.
async fn peak_fds(pid: u32, done: &AtomicUsize, target: usize) -> usize {
    let mut peak = 0;
    while done.load(Ordering::Relaxed) < target {
        peak = peak.max(fd_count(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_or_trickling_connections_hold_the_cap_and_time_out() {
    const FLOOD: usize = 1000;
    const CAP: usize = 300;
    let _alone = ONE_AT_A_TIME.lock().await;
    let rx = ChildReceiver::start(&[
        "--token",
        TOKEN,
        "--max-connections",
        &CAP.to_string(),
        "--max-handshakes-per-ip",
        &CAP.to_string(),
        "--handshake-timeout",
        &format!("{}s", HANDSHAKE_TIMEOUT.as_secs()),
    ])
    .await
    .expect("receiver");
    let pid = rx.child.pid().expect("running");
    let legit = Streamer::start(rx.ingest, [127, 0, 0, 2], "legit", Some(TOKEN), 1000)
        .await
        .expect("established sender");
    let baseline_fds = fd_count(pid).expect("fds");
    let (rate_before, ()) = rate_during(
        rx.http,
        "legit",
        tokio::time::sleep(Duration::from_millis(1000)),
    )
    .await
    .expect("rate");

    // The flood: half idle, half trickling a Hello, all from 127.0.0.1.
    let closed = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let closed = closed.clone();
        tokio::spawn(async move { peak_fds(pid, &closed, FLOOD).await })
    };
    let started = Instant::now();
    let hello = Arc::new(long_hello());
    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let stream = TcpStream::connect(rx.ingest).await.expect("connect");
        let (closed, hello) = (closed.clone(), hello.clone());
        flood.push(tokio::spawn(async move {
            let end = flood_connection(stream, &hello, i % 2 == 1).await;
            closed.fetch_add(1, Ordering::Relaxed);
            end
        }));
    }
    let connect_secs = started.elapsed().as_secs_f64();

    let measure = async {
        // Once the receiver has seen the whole flood, and while it holds every slot (none
        // timed out yet), a new sender is told Busy ...
        let text = kube_relay_testkit::wait_until(
            "the receiver to see the whole flood",
            HANDSHAKE_TIMEOUT,
            Duration::from_millis(20),
            || async {
                let text = rx.metrics().await?;
                let seen = rejected(&text, "busy") + (CAP - 1) as f64;
                Ok((seen >= FLOOD as f64).then_some(text))
            },
        )
        .await
        .expect("flood seen");
        let newcomer = || hello_with_token("newcomer", "n", Some(TOKEN));
        assert_eq!(
            rejected(&text, "handshake_timeout"),
            0.0,
            "no flooding connection may have timed out yet ({HANDSHAKE_TIMEOUT:?} handshake \
             timeout), or the cap is no longer full for the check below:\n{text}"
        );
        let reject = TestSender::connect_from([127, 0, 0, 3], rx.ingest, newcomer())
            .await
            .expect("io")
            .expect_err("busy while the flood holds the cap");
        assert_eq!(reject.reason, RejectReason::Busy);
        // ... and gets in once the handshake timeout has freed slots, told Busy until then.
        let refusals = Cell::new(1);
        let mut newcomer_sender = kube_relay_testkit::wait_until(
            "the newcomer admitted once the handshake timeout frees slots",
            GIVE_UP,
            Duration::from_millis(50),
            || async {
                match TestSender::connect_from([127, 0, 0, 3], rx.ingest, newcomer()).await? {
                    Ok(sender) => Ok(Some(sender)),
                    Err(reject) => {
                        assert_eq!(reject.reason, RejectReason::Busy, "refused only as Busy");
                        refusals.set(refusals.get() + 1);
                        Ok(None)
                    }
                }
            },
        )
        .await
        .expect("the newcomer is admitted");
        let refusals = refusals.get();
        let admitted_after = started.elapsed();
        newcomer_sender
            .batch(small_snapshot(1))
            .await
            .expect("send");
        newcomer_sender.ack_of(1).await.expect("ack");
        (refusals, admitted_after, sampler.await.expect("sampler"))
    };
    let (rate_flood, (newcomer_refusals, admitted_after, peak)) =
        rate_during(rx.http, "legit", measure).await.expect("rate");
    let mut ends = Vec::with_capacity(FLOOD);
    for task in flood {
        ends.push(task.await.expect("flood task"));
    }
    legit
        .stop()
        .await
        .expect("the established sender streamed throughout");

    let longest = ends.iter().map(|e| e.open_for).max().unwrap_or_default();
    let text = rx.metrics().await.expect("scrape");
    let busy = rejected(&text, "busy");
    let timed_out = rejected(&text, "handshake_timeout");
    println!(
        "\nFIGURES idle/trickling flood: {FLOOD} connections opened in {connect_secs:.2} s \
         against --max-connections {CAP} (1 established sender): receiver fds peaked at \
         {peak} (baseline {baseline_fds}); {busy} answered Busy at once, {timed_out} closed by \
         the {HANDSHAKE_TIMEOUT:?} handshake timeout, the longest open {longest:?}; a new \
         sender was refused {newcomer_refusals} times and admitted {admitted_after:?} after \
         the flood began; the established sender streamed {rate_before:.0} updates/s before \
         and {rate_flood:.0} during (ratio {:.2}); {} build, clients and receiver on the \
         same 2 shared cores\n",
        rate_flood / rate_before,
        common::PROFILE
    );
    assert!(
        peak <= baseline_fds + CAP + 32,
        "the connection cap did not hold: {peak} fds (baseline {baseline_fds})"
    );
    let left_open = ends.iter().filter(|e| !e.closed_by_receiver).count();
    assert_eq!(
        left_open, 0,
        "flooding connections the receiver never closed"
    );
    // Odd connections trickled: each was closed (refused or timed out) before its Hello
    // was sent, which lasts far longer than the handshake timeout.
    let extended = ends
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|e| !e.while_trickling)
        .count();
    assert_eq!(
        extended, 0,
        "trickling connections that outlived their Hello: trickled bytes extended the \
         handshake timeout"
    );
    assert_eq!(
        busy + timed_out,
        (FLOOD + newcomer_refusals) as f64,
        "every flooding connection was refused or timed out:\n{text}"
    );
    assert!(timed_out >= (CAP - 1) as f64, "{text}");
}

/// The kernel's count of connections dropped because a listener's accept queue was full
/// (`TcpExt: ListenOverflows`, system-wide).
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Raises this process' limit on open files to at least `needed` where the hard limit or
/// root allows (with util-linux `prlimit`); the limit in effect.
fn ensure_open_files(needed: u64) -> u64 {
    let soft = || {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
                let fields: Vec<_> = line.split_whitespace().collect();
                Some((fields.get(3)?.parse().ok()?, fields.get(4)?.parse().ok()?))
            })
            .unwrap_or((0u64, 0u64))
    };
    let (current, hard) = soft();
    if current >= needed {
        return current;
    }
    // Up to the hard limit, or past it where allowed (root); the first that works.
    let pid = std::process::id().to_string();
    for limit in [needed.max(hard), hard] {
        let raised = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={limit}:{limit}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if raised {
            break;
        }
    }
    soft().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_connection_burst_holds_the_limits_and_a_sender_still_streams() {
    const BURST: usize = 10_000;
    const ADDRESSES: usize = 10;
    const PER_IP: usize = 150;
    const IN_FLIGHT: usize = 256;
    let _alone = ONE_AT_A_TIME.lock().await;
    let limit = ensure_open_files(BURST as u64 + 1024);
    if limit < BURST as u64 + 1024 {
        kube_relay_testkit::skip(&format!(
            "this test holds {BURST} client sockets but the open-files limit is {limit} and \
             the hard limit does not allow more (ulimit -n)"
        ));
        return;
    }
    // The handshake timeout is long enough that no burst connection times out during the
    // burst, so exactly ADDRESSES * PER_IP are admitted.
    let rx = ChildReceiver::start(&[
        "--token",
        TOKEN,
        "--max-handshakes-per-ip",
        &PER_IP.to_string(),
        "--handshake-timeout",
        "20s",
    ])
    .await
    .expect("receiver");
    let pid = rx.child.pid().expect("running");
    let established = Streamer::start(rx.ingest, [127, 0, 0, 2], "established", Some(TOKEN), 1000)
        .await
        .expect("established sender");
    let baseline_fds = fd_count(pid).expect("fds");
    let (rate_before, ()) = rate_during(
        rx.http,
        "established",
        tokio::time::sleep(Duration::from_millis(1000)),
    )
    .await
    .expect("rate");

    let opened = Arc::new(AtomicUsize::new(0));
    let overflows_before = listen_overflows();
    let started = Instant::now();
    let ingest = rx.ingest;
    let burst = {
        let opened = opened.clone();
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let mut tasks = Vec::with_capacity(BURST);
            for i in 0..BURST {
                let permit = permits.clone().acquire_owned().await.expect("semaphore");
                let opened = opened.clone();
                let from = [127, 0, 1, (i % ADDRESSES) as u8 + 1];
                tasks.push(tokio::spawn(async move {
                    let stream = connect_from(from, ingest).await.expect("connect");
                    drop(permit);
                    opened.fetch_add(1, Ordering::Relaxed);
                    stream
                }));
            }
            let mut streams = Vec::with_capacity(BURST);
            for t in tasks {
                streams.push(t.await.expect("connect task"));
            }
            streams
        })
    };

    let during = async {
        // Halfway through the burst, a new sender from its own address connects and streams.
        kube_relay_testkit::wait_until(
            "half of the burst",
            Duration::from_secs(60),
            Duration::from_millis(5),
            || {
                let n = opened.load(Ordering::Relaxed);
                async move { Ok((n >= BURST / 2).then_some(())) }
            },
        )
        .await
        .expect("burst progressing");
        let asked = Instant::now();
        let mut sender = TestSender::connect_from(
            [127, 0, 0, 3],
            ingest,
            hello_with_token("newcomer", "n", Some(TOKEN)),
        )
        .await
        .expect("io")
        .expect("welcomed during the burst");
        let welcomed_in = asked.elapsed();
        sender.batch(small_snapshot(1)).await.expect("send");
        for seq in 2..=20 {
            sender
                .batch(delta(seq, &[(1, seq as f64)]))
                .await
                .expect("send");
        }
        sender.ack_of(20).await.expect("acked");
        let opened_by_then = opened.load(Ordering::Relaxed);
        let streams = burst.await.expect("burst");
        let burst_secs = started.elapsed().as_secs_f64();
        // Let the receiver settle the last refusals, then read its descriptors.
        let text = kube_relay_testkit::wait_until(
            "every burst connection admitted or refused",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async {
                let text = rx.metrics().await?;
                let refused = rejected(&text, "per_ip_limit") + rejected(&text, "busy");
                let dropped = listen_overflows() - overflows_before;
                let expected = (BURST - ADDRESSES * PER_IP) as f64 - dropped as f64;
                Ok((refused >= expected).then_some(text))
            },
        )
        .await;
        let text = match text {
            Ok(text) => text,
            Err(e) => {
                let now = rx.metrics().await.unwrap_or_default();
                panic!(
                    "{e:#}: per_ip_limit {}, busy {}, handshake_timeout {}, fds {:?}",
                    rejected(&now, "per_ip_limit"),
                    rejected(&now, "busy"),
                    rejected(&now, "handshake_timeout"),
                    fd_count(pid)
                )
            }
        };
        let fds = fd_count(pid).expect("fds");
        (welcomed_in, opened_by_then, streams, burst_secs, text, fds)
    };
    let (rate_burst, (welcomed_in, opened_by_then, streams, burst_secs, text, fds)) =
        rate_during(rx.http, "established", during)
            .await
            .expect("rate");
    drop(streams);
    established
        .stop()
        .await
        .expect("the established sender streamed throughout");

    let overflows = listen_overflows() - overflows_before;
    let per_ip = rejected(&text, "per_ip_limit");
    let busy = rejected(&text, "busy");
    let held = fds.saturating_sub(baseline_fds);
    println!(
        "\nFIGURES burst: {BURST} connections from {ADDRESSES} addresses in {burst_secs:.2} s \
         ({:.0}/s, {IN_FLIGHT} connects in flight), --max-handshakes-per-ip {PER_IP}: {per_ip} \
         refused by the per-address cap, {busy} Busy, {overflows} dropped by the kernel's \
         accept queue (ListenOverflows, system-wide), the receiver held {held} more fds than \
         before (the newcomer and {} admitted burst connections); a new sender from another \
         address was welcomed in {welcomed_in:?} with {opened_by_then} burst connections \
         opened, and streamed; the established sender streamed {rate_before:.0} updates/s \
         before and {rate_burst:.0} during (ratio {:.2}); {} build, clients and receiver on \
         the same 2 shared cores\n",
        BURST as f64 / burst_secs,
        ADDRESSES * PER_IP,
        rate_burst / rate_before,
        common::PROFILE
    );
    // Exactly PER_IP per address were admitted; the rest were refused by the receiver,
    // except what the kernel dropped before the receiver could see it.
    let refusable = (BURST - ADDRESSES * PER_IP) as f64;
    assert!(
        per_ip <= refusable && per_ip >= refusable - overflows as f64,
        "{per_ip} refused, {overflows} kernel drops:\n{text}"
    );
    assert_eq!(busy, 0.0, "{text}");
    assert!(
        held <= ADDRESSES * PER_IP + 32,
        "the receiver holds {held} descriptors more than before"
    );
}
