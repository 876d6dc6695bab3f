//! The disk spool's cost against the memory spool, measured in the same run.
//!
//! A link spools every delta batch and frees them as acks come (the receiver acks every
//! 100 ms; at the default 10 ms flush interval that is about ten batches per ack). This
//! pushes `BATCHES` batches of `BATCH_BYTES` through each spool with an ack every
//! `ACK_EVERY` batches, then measures reopening a disk spool filled to the default 4 MiB
//! bound (what a restarted sender reads before it connects). Run with
//! `cargo bench -p kube-relay-sender --bench spool`; the figures are ratios to the memory
//! spool of the same run, plus absolute times for scale.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kube_relay_sender::spool::{DiskSpool, MemorySpool, Spool, ThreadedSpool};

const BATCHES: u64 = 50_000;
const BATCH_BYTES: usize = 256;
const ACK_EVERY: u64 = 10;
const MAX_BYTES: u64 = 4 << 20;

fn drive(spool: &mut dyn Spool) -> Duration {
    let payload = Bytes::from(vec![7u8; BATCH_BYTES]);
    let started = Instant::now();
    for seq in 1..=BATCHES {
        let dropped = spool.push(seq, payload.clone(), 20);
        assert_eq!(dropped, 0, "the bound is never reached here");
        if seq % ACK_EVERY == 0 {
            spool.ack(seq);
        }
    }
    started.elapsed()
}

/// [`drive`] as the link does it with the sender's spool: the disk spool on its own thread,
/// each push awaited until written before the next.
fn drive_threaded(spool: &mut ThreadedSpool) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let payload = Bytes::from(vec![7u8; BATCH_BYTES]);
    runtime.block_on(async {
        let started = Instant::now();
        for seq in 1..=BATCHES {
            let dropped = spool.push(seq, payload.clone(), 20);
            assert_eq!(dropped, 0, "the bound is never reached here");
            spool.pushed().await;
            if seq % ACK_EVERY == 0 {
                spool.ack(seq);
            }
        }
        started.elapsed()
    })
}

fn main() {
    let mut memory = MemorySpool::new(MAX_BYTES);
    let memory_time = drive(&mut memory);

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut disk, _) = DiskSpool::open(dir.path(), MAX_BYTES, "bench").expect("open");
    disk.reset(1);
    let disk_time = drive(&mut disk);
    drop(disk);

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut disk, _) = DiskSpool::open(dir.path(), MAX_BYTES, "bench").expect("open");
    disk.reset(1);
    let mut threaded = ThreadedSpool::start(disk).expect("spool thread");
    let threaded_time = drive_threaded(&mut threaded);
    drop(threaded);

    // A full spool, as a sender killed during a long stall leaves it.
    let full = tempfile::tempdir().expect("tempdir");
    let (mut disk, _) = DiskSpool::open(full.path(), MAX_BYTES, "bench").expect("open");
    disk.reset(1);
    let payload = Bytes::from(vec![7u8; BATCH_BYTES]);
    let mut seq = 0;
    while disk.bytes() + BATCH_BYTES as u64 <= MAX_BYTES {
        seq += 1;
        disk.push(seq, payload.clone(), 20);
    }
    std::mem::forget(disk);
    let started = Instant::now();
    let (reopened, recovery) = DiskSpool::open(full.path(), MAX_BYTES, "bench").expect("reopen");
    let reopen_time = started.elapsed();
    let started = Instant::now();
    let replay = reopened.after(0);
    let read_time = started.elapsed();
    assert_eq!(replay.len(), recovery.batches);

    let per = |d: Duration| d.as_secs_f64() * 1e6 / BATCHES as f64;
    println!(
        "FIGURE spool: {BATCHES} batches of {BATCH_BYTES} B, an ack every {ACK_EVERY}: memory \
         {:.2} µs/batch, disk {:.2} µs/batch ({:.1}× memory; fdatasync at most once a second)",
        per(memory_time),
        per(disk_time),
        disk_time.as_secs_f64() / memory_time.as_secs_f64()
    );
    println!(
        "FIGURE spool: the same on the spool-io thread, each push awaited until written (what \
         the link waits per batch): {:.2} µs/batch ({:.2}× the disk spool called inline)",
        per(threaded_time),
        threaded_time.as_secs_f64() / disk_time.as_secs_f64()
    );
    println!(
        "FIGURE spool: reopening a full {} MiB disk spool ({} batches) takes {:.1} ms, reading \
         every batch back for replay {:.1} ms",
        MAX_BYTES >> 20,
        recovery.batches,
        reopen_time.as_secs_f64() * 1e3,
        read_time.as_secs_f64() * 1e3
    );
}
