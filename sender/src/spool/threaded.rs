//! [`ThreadedSpool`]: a [`DiskSpool`] on a thread of its own, so the link, which runs on the
//! async runtime, never waits for the disk on a runtime thread.
//!
//! The handle keeps what the link asks synchronously in memory — which batches are kept (seq,
//! samples, length; never the batches themselves), their bytes and samples — and follows the
//! same [`Spool`] contract as the disk spool (the same bound, the same drops), so its answers
//! are the disk spool's. Every change (push, ack, clear, reset) is sent, in order, to the
//! `spool-io` thread, which applies it to the [`DiskSpool`]: appends, segment rolls and
//! hand-overs to the syncer, meta-file writes with their `fsync`, deletions. Reads for a
//! replay ([`Spool::replay`]) are answered by that thread too, after every change sent
//! before them.
//!
//! Durability is the disk spool's (`disk.rs`, "Durability"), and one ordering keeps a
//! `kill -9` as harmless as before: the link awaits [`Spool::pushed`] — the thread has
//! written the batch to its segment — before it sends the batch, so a batch the receiver may
//! hold is always in the spool after a crash. Acks and drops sent to the thread but not yet
//! applied when the process dies are lost like any trim point of the last second: those
//! batches come back on reopen, as documented there.
//!
//! [`Spool::close`] lets the thread finish (a final sync, the trim point) and waits for it
//! without blocking; dropping the handle unclosed does the same but waits on the dropping
//! thread.

use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};
use tracing::error;

use super::{DiskSpool, Run, Spool};
use crate::error::Error;

/// What the `spool-io` thread applies to the disk spool, in order.
enum Command {
    Push {
        seq: u64,
        payload: Bytes,
        samples: u64,
    },
    Ack(u64),
    Reserve(u64),
    Clear,
    Reset(u64),
    Read {
        after: u64,
        reply: Reply,
    },
    Close,
}

/// Where the batches read for a replay go.
type Reply = Box<dyn FnOnce(Vec<(u64, Bytes)>) + Send>;

/// A [`DiskSpool`] run by a thread of its own. See the [module docs](self).
pub struct ThreadedSpool {
    /// Which batches are kept, as the disk spool keeps them.
    run: Run<()>,
    commands: mpsc::Sender<Command>,
    /// Commands sent so far.
    sent: u64,
    /// Commands the thread has applied so far.
    applied: watch::Receiver<u64>,
    thread: Option<JoinHandle<()>>,
}

impl ThreadedSpool {
    /// Moves `spool` onto a new `spool-io` thread.
    ///
    /// # Errors
    /// [`Error::State`] naming the spool's directory when the thread cannot be started.
    pub fn start(spool: DiskSpool) -> Result<Self, Error> {
        let mut run = Run::new(spool.max_bytes());
        for (seq, samples, len) in spool.kept() {
            run.push(seq, len, samples, ());
        }
        let dir = spool.dir().to_owned();
        let (commands, queue) = mpsc::channel();
        let (applied_tx, applied) = watch::channel(0);
        let thread = std::thread::Builder::new()
            .name("spool-io".to_owned())
            .spawn(move || apply(spool, &queue, &applied_tx))
            .map_err(|e| Error::state(&dir, e))?;
        Ok(ThreadedSpool {
            run,
            commands,
            sent: 0,
            applied,
            thread: Some(thread),
        })
    }

    fn send(&mut self, command: Command) {
        if self.commands.send(command).is_ok() {
            self.sent += 1;
        }
    }

    /// Resolves once the thread has applied every command sent so far (or is gone).
    fn applied(&self) -> BoxFuture<'static, ()> {
        let target = self.sent;
        let mut applied = self.applied.clone();
        Box::pin(async move {
            // An error means the thread is gone: nothing more will be applied.
            let _ = applied.wait_for(|done| *done >= target).await;
        })
    }
}

/// The thread: applies the commands in order and counts them, until `Close` or until the
/// handle is gone; the disk spool is dropped then (a final sync and trim point).
fn apply(mut spool: DiskSpool, queue: &mpsc::Receiver<Command>, applied: &watch::Sender<u64>) {
    let mut done = 0;
    for command in queue {
        match command {
            Command::Push {
                seq,
                payload,
                samples,
            } => {
                spool.push(seq, payload, samples);
            }
            Command::Ack(seq) => spool.ack(seq),
            Command::Reserve(bytes) => spool.set_reserved(bytes),
            Command::Clear => spool.clear(),
            Command::Reset(epoch) => spool.reset(epoch),
            Command::Read { after, reply } => reply(spool.after(after)),
            Command::Close => {
                drop(spool);
                applied.send_replace(done + 1);
                return;
            }
        }
        done += 1;
        applied.send_replace(done);
    }
}

impl Spool for ThreadedSpool {
    fn push(&mut self, seq: u64, payload: Bytes, samples: u64) -> u64 {
        let dropped = self.run.push(seq, payload.len() as u64, samples, ());
        self.send(Command::Push {
            seq,
            payload,
            samples,
        });
        dropped
    }

    fn ack(&mut self, seq: u64) {
        self.run.ack(seq);
        // Sent even when nothing is kept: the disk spool records the trim point.
        self.send(Command::Ack(seq));
    }

    fn oldest(&self) -> Option<u64> {
        self.run.oldest()
    }

    fn newest(&self) -> Option<u64> {
        self.run.newest()
    }

    /// Blocks the calling thread until the `spool-io` thread has read the batches: for
    /// tests and tools. The link uses [`Spool::replay`].
    fn after(&self, seq: u64) -> Vec<(u64, Bytes)> {
        let (reply, batches) = mpsc::sync_channel(1);
        let reply: Reply = Box::new(move |read| {
            let _ = reply.send(read);
        });
        if self
            .commands
            .send(Command::Read { after: seq, reply })
            .is_err()
        {
            return Vec::new();
        }
        batches.recv().unwrap_or_default()
    }

    fn clear(&mut self) {
        self.run.clear();
        self.send(Command::Clear);
    }

    fn reset(&mut self, epoch: u64) {
        self.run.clear();
        self.send(Command::Reset(epoch));
    }

    fn bytes(&self) -> u64 {
        self.run.bytes
    }

    fn samples(&self) -> u64 {
        self.run.samples
    }

    fn set_reserved(&mut self, bytes: u64) {
        if self.run.reserved != bytes {
            // The disk spool must drop exactly what the handle drops: same bound, same order.
            self.run.reserved = bytes;
            self.send(Command::Reserve(bytes));
        }
    }

    fn pushed(&self) -> BoxFuture<'static, ()> {
        self.applied()
    }

    fn replay(&self, seq: u64) -> BoxFuture<'static, Vec<(u64, Bytes)>> {
        let (reply, batches) = oneshot::channel();
        let reply: Reply = Box::new(move |read| {
            let _ = reply.send(read);
        });
        let sent = self.commands.send(Command::Read { after: seq, reply });
        Box::pin(async move {
            if sent.is_err() {
                error!("the spool thread is gone; nothing to replay");
                return Vec::new();
            }
            batches.await.unwrap_or_default()
        })
    }

    fn close(&mut self) -> BoxFuture<'static, ()> {
        self.send(Command::Close);
        let closed = self.applied();
        // The thread ends right after `Close`; nothing is left to join.
        self.thread = None;
        closed
    }
}

impl Drop for ThreadedSpool {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.commands.send(Command::Close);
            // Unclosed: the disk work left is waited for here (see the module docs).
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::path::Path;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::spool::MemorySpool;
    use crate::spool::disk::META_FILE;

    const MAX_BYTES: u64 = 1_000;

    fn open(dir: &Path) -> DiskSpool {
        DiskSpool::open_with_segments(dir, MAX_BYTES, 300, "s1")
            .expect("open")
            .0
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Ack(f64),
        Clear,
        Reset,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (1usize..1_200).prop_map(Op::Push),
            3 => (0.0f64..1.0).prop_map(Op::Ack),
            1 => Just(Op::Clear),
            1 => Just(Op::Reset),
        ]
    }

    fn view(spool: &dyn Spool) -> (Option<u64>, Option<u64>, u64, u64) {
        (
            spool.oldest(),
            spool.newest(),
            spool.bytes(),
            spool.samples(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

        /// The handle answers from memory what the disk spool on its thread holds: the same
        /// drops, the same kept run, the same batches read back and found after a reopen
        /// (checked against the memory spool, which follows the same contract).
        #[test]
        fn the_handle_answers_as_the_disk_spool_holds(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut threaded = ThreadedSpool::start(open(dir.path())).expect("start");
            let mut model = MemorySpool::new(MAX_BYTES);
            threaded.reset(1);
            let mut seq = 0;
            for op in ops {
                match op {
                    Op::Push(len) => {
                        seq += 1;
                        let payload = Bytes::from(vec![seq as u8; len]);
                        let samples = len as u64 % 7;
                        let dropped = model.push(seq, payload.clone(), samples);
                        prop_assert_eq!(threaded.push(seq, payload, samples), dropped);
                    }
                    Op::Ack(at) => {
                        let kept = model.after(0);
                        let acked = kept.get((kept.len() as f64 * at) as usize).map_or(seq, |b| b.0);
                        model.ack(acked);
                        threaded.ack(acked);
                    }
                    Op::Clear => {
                        model.clear();
                        threaded.clear();
                    }
                    Op::Reset => {
                        model.clear();
                        threaded.reset(2);
                        seq = 0;
                    }
                }
                prop_assert_eq!(view(&threaded), view(&model));
            }
            prop_assert_eq!(threaded.after(0), model.after(0));
            drop(threaded);
            let reopened = open(dir.path());
            prop_assert_eq!(reopened.after(0), model.after(0));
        }
    }

    /// The spool's meta file made unwritable for a while: its temporary file is a FIFO, so
    /// opening it blocks until someone reads, as a write to a hung disk blocks. The link's
    /// calls must return at once and a one-thread runtime keep running meanwhile; the batch
    /// is written once the disk answers, and nothing is lost although that meta write
    /// failed (a FIFO cannot be fsynced).
    #[test]
    fn a_hung_meta_write_blocks_neither_the_runtime_nor_the_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path());
        let tmp = dir
            .path()
            .join(format!(".{META_FILE}.tmp.{}", std::process::id()));
        let made = std::process::Command::new("mkfifo").arg(&tmp).status();
        if !made.is_ok_and(|s| s.success()) {
            kube_relay_testkit::skip("mkfifo (coreutils) is needed to simulate a hung write");
            return;
        }
        let mut spool = ThreadedSpool::start(disk).expect("start");

        let (progress, seen) = mpsc::channel::<&str>();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // A new epoch writes the meta file at once: that write hangs.
                spool.reset(9);
                assert_eq!(spool.push(1, Bytes::from_static(b"batch one"), 3), 0);
                assert_eq!(
                    (spool.oldest(), spool.bytes(), spool.samples()),
                    (Some(1), 9, 3)
                );
                let pushed = spool.pushed();
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = progress.send("responsive");
                pushed.await;
                spool.close().await;
                let _ = progress.send("closed");
            });
        });
        let responsive = seen.recv_timeout(Duration::from_secs(30));
        // Unblock the write either way, so a regression fails instead of hanging.
        let (read, written) = mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = std::fs::File::open(&tmp).and_then(|mut fifo| fifo.read_to_end(&mut bytes));
            let _ = read.send(bytes);
        });
        let written = written
            .recv_timeout(Duration::from_secs(30))
            .expect("the meta file was being written");
        assert_eq!(
            responsive,
            Ok("responsive"),
            "the runtime stalled while the spool wrote"
        );
        assert!(
            String::from_utf8_lossy(&written).contains("\"epoch\":9"),
            "{written:?}"
        );
        assert_eq!(seen.recv_timeout(Duration::from_secs(30)), Ok("closed"));
        runtime.join().expect("runtime thread");
        let (reopened, recovery) =
            DiskSpool::open_with_segments(dir.path(), MAX_BYTES, 300, "s1").expect("reopen");
        assert_eq!(recovery.epoch, Some(9), "the failed meta write was redone");
        assert_eq!(reopened.after(0), [(1, Bytes::from_static(b"batch one"))]);
    }
}
