//! [`Sender`]: wires the watchers, the usage poller, the self-metrics and the link around one
//! shared store, and persists what must survive a restart: the sender id, the scaling
//! ledger and (with a spool directory) the unacknowledged batches, whose epoch a restarted
//! sender resumes so the receiver can take their replay. Each directory is held by one
//! sender at a time (an exclusive lock on its `lock` file, released when the process ends,
//! `kill -9` included): two senders sharing one would interleave their spools and ledgers.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::Client;
use rand::Rng;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::Error;
use crate::events::ScalingLedger;
use crate::http::{self, HttpApp};
use crate::link::{Link, LinkConfig};
use crate::poll::UsagePoller;
use crate::shared::Shared;
use crate::source;
use crate::spool::{DiskSpool, MemorySpool, Spool, ThreadedSpool};
use crate::state_file::{StateWriter, write_atomically};
use crate::transport::Connector;
use crate::usage::UsageTracker;
use crate::watch::{Applier, WatchScope, watch_all};

/// File in the state directory holding the sender id.
pub const SENDER_ID_FILE: &str = "sender-id";
/// File in the state directory holding the scaling ledger.
pub const LEDGER_FILE: &str = "scaling-ledger.json";
/// File in the state and spool directories whose lock says which sender holds them.
pub const LOCK_FILE: &str = "lock";
/// How often self-metrics are refreshed and a changed ledger saved.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Where the scaling ledger is saved: its file, written by a thread off the runtime.
#[derive(Debug, Clone)]
struct LedgerFile {
    path: PathBuf,
    writer: StateWriter,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One sender: a cluster watched through `client`, streamed to the receivers of `config.targets`.
pub struct Sender {
    config: Config,
    client: Client,
    cluster: String,
    sender_id: String,
    shared: Arc<Shared>,
    usage: Arc<Mutex<UsageTracker>>,
    ledger: Arc<Mutex<ScalingLedger>>,
    ledger_file: Option<LedgerFile>,
    spool: Box<dyn Spool + Sync>,
    /// The bound `--http-listen` port, served while the sender runs.
    http: Option<TcpListener>,
    /// Locks on the state and spool directories, held until the sender is dropped.
    _held: Vec<File>,
}

/// Takes the exclusive lock on `dir`'s [`LOCK_FILE`] (creating both if missing) and writes
/// this process's id into it, for the message another sender gets.
///
/// # Errors
/// [`Error::State`] when the file cannot be created or another process holds the lock.
pub fn hold_dir(dir: &Path) -> Result<File, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::state(dir, e))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::state(&path, e))?;
    match file.try_lock() {
        Ok(()) => {
            // Only informative: a failure to record the pid does not matter.
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(Error::state(
                &path,
                format!(
                    "{} is in use by another sender (pid {}); give each sender its own \
                     --state-dir / --spool-dir",
                    dir.display(),
                    holder.trim()
                ),
            ))
        }
        Err(TryLockError::Error(e)) => Err(Error::state(&path, e)),
    }
}

/// [`hold_dir`] for each of `dirs`, once per directory: `--spool-dir` may name the state
/// directory itself (their files do not overlap), and a second lock on it by this same
/// process would be refused as if another sender held it.
///
/// # Errors
/// As [`hold_dir`], and [`Error::State`] when a directory's real path cannot be resolved.
fn hold_dirs<'a>(dirs: impl Iterator<Item = &'a PathBuf>) -> Result<Vec<File>, Error> {
    let mut held: Vec<(PathBuf, File)> = Vec::new();
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(|e| Error::state(dir, e))?;
        let real = dir.canonicalize().map_err(|e| Error::state(dir, e))?;
        if !held.iter().any(|(d, _)| *d == real) {
            held.push((real, hold_dir(dir)?));
        }
    }
    Ok(held.into_iter().map(|(_, lock)| lock).collect())
}

impl Sender {
    /// A sender for `cluster`. With a state directory, the sender id and the scaling ledger
    /// are read from it (and created if missing). With a spool directory
    /// ([`Config::spool_path`]) the spool is reopened: if it holds unacknowledged batches of
    /// this sender id, the sender continues their epoch, so the link can replay them (a
    /// sender without a state directory takes its id from the spool).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, [`Error::State`] when the state or
    /// spool directory cannot be used.
    pub fn new(
        config: Config,
        client: Client,
        cluster: impl Into<String>,
    ) -> Result<Sender, Error> {
        let cluster = cluster.into();
        Config {
            cluster: Some(cluster.clone()),
            ..config.clone()
        }
        .validate()?;
        let spool_path = config.spool_path();
        let held = hold_dirs(config.state_dir.iter().chain(spool_path.iter()))?;
        let (sender_id, ledger, ledger_file) = match &config.state_dir {
            Some(dir) => {
                let path = dir.join(LEDGER_FILE);
                let ledger = ScalingLedger::load(&path)?;
                let writer = StateWriter::start(dir)?;
                (
                    load_sender_id(dir)?,
                    ledger,
                    Some(LedgerFile { path, writer }),
                )
            }
            None => {
                let id = spool_path.as_deref().and_then(DiskSpool::stored_sender_id);
                (id.unwrap_or_else(random_id), ScalingLedger::new(), None)
            }
        };
        let (spool, recovered_epoch, recovery): (Box<dyn Spool + Sync>, _, _) = match &spool_path {
            Some(dir) => {
                let (spool, recovery) = DiskSpool::open(dir, config.spool_max_bytes, &sender_id)?;
                // Its file I/O runs on a thread of its own, never on the runtime.
                let spool = ThreadedSpool::start(spool)?;
                (Box::new(spool), recovery.epoch, Some(recovery))
            }
            None => (
                Box::new(MemorySpool::new(config.spool_max_bytes)),
                None,
                None,
            ),
        };
        // Each run numbers its series afresh under a new epoch, unless unacknowledged
        // batches of the previous run's epoch wait in the spool: then the receiver may still
        // hold that epoch's series ids and take their replay before our snapshot.
        let epoch = recovered_epoch.unwrap_or_else(|| rand::rng().random_range(1..u64::MAX));
        let shared = Arc::new(Shared::new(epoch));
        if let Some(r) = &recovery {
            let stats = &shared.stats;
            stats
                .dropped_spool_corrupt
                .fetch_add(r.corrupt_samples, Ordering::Relaxed);
            stats
                .dropped_spool_full
                .fetch_add(r.dropped_samples, Ordering::Relaxed);
            stats
                .superseded_samples
                .fetch_add(r.superseded_samples, Ordering::Relaxed);
            if r.corrupt_records > 0 {
                warn!(
                    corrupt_records = r.corrupt_records,
                    lost_samples = r.corrupt_samples,
                    skipped_bytes = r.skipped_bytes,
                    "the spool had a torn or corrupt tail; cut off"
                );
            }
            if let Some(epoch) = recovered_epoch {
                info!(
                    epoch,
                    batches = r.batches,
                    samples = r.samples,
                    "resuming the previous run's epoch to replay its spool"
                );
            }
        }
        // Counts continue from the saved ledger; the HPA watcher's first list drops HPAs that
        // were deleted meanwhile.
        let hpas: Vec<(String, String)> = ledger
            .hpas()
            .map(|(ns, n)| (ns.to_owned(), n.to_owned()))
            .collect();
        for (ns, hpa) in hpas {
            let (key, set) = ledger.series(&ns, &hpa);
            shared.update(|s| s.apply(&key, &set));
        }
        shared.refresh_self_metrics();
        Ok(Sender {
            _held: held,
            config,
            client,
            cluster,
            sender_id,
            shared,
            usage: Arc::new(Mutex::new(UsageTracker::new())),
            ledger: Arc::new(Mutex::new(ledger)),
            ledger_file,
            spool,
            http: None,
        })
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` ([`crate::http`]) on `listener` while
    /// the sender runs (the binary binds `--http-listen`).
    pub fn with_http(mut self, listener: TcpListener) -> Self {
        self.http = Some(listener);
        self
    }

    /// The shared state, for tests and diagnostics: the store's series and the counters.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// The cluster name sent in the handshake.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The sender id sent in the handshake.
    pub fn sender_id(&self) -> &str {
        &self.sender_id
    }

    /// Runs until `shutdown`, then flushes and says goodbye: over TLS when the config has
    /// `tls_ca` (its files are read now), else over plain TCP.
    ///
    /// # Errors
    /// An unusable TLS file; fatal link errors (the receiver does not speak our protocol
    /// version). A refused token or certificate is retried with backoff, not fatal.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let connectors = crate::tls::connectors(&self.config)?;
        self.run_with_targets(connectors, shutdown).await
    }

    /// Runs over the transport `connector` opens until `shutdown`.
    ///
    /// # Errors
    /// Fatal link errors (the receiver does not speak our protocol version).
    pub async fn run_with<C: Connector>(
        self,
        connector: C,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        self.run_with_targets(vec![connector], shutdown).await
    }

    /// Runs until `shutdown` over the transports `connectors` open, one receiver at a time,
    /// in failover order (`--target a,b`).
    ///
    /// # Errors
    /// Fatal link errors (the receiver does not speak our protocol version), or no
    /// connector at all.
    pub async fn run_with_targets<C: Connector>(
        self,
        connectors: Vec<C>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let targets: Vec<&str> = connectors.iter().map(Connector::target).collect();
        let targets = targets.join(",");
        let link_config =
            LinkConfig::from_config(&self.config, self.cluster.clone(), self.sender_id.clone());
        let link = Link::with_targets(
            link_config,
            connectors,
            Arc::clone(&self.shared),
            self.spool,
        )?;
        let scope = WatchScope {
            namespaces: self.config.namespaces.clone(),
            selector: self.config.selector.clone(),
        };
        info!(
            cluster = %self.cluster,
            target = %targets,
            namespaces = ?scope.namespaces,
            selector = ?scope.selector,
            usage = %self.config.usage_source,
            "sender starting"
        );
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();

        let applier = Applier::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.usage),
            Arc::clone(&self.ledger),
        );
        let watchers = watch_all(&self.client, &scope, &self.shared);
        self.shared
            .stats
            .watchers
            .store(watchers.len() as u64, Ordering::Relaxed);
        tasks.spawn(applier.run(watchers, stop.clone()));
        tasks.spawn(source::probe(
            self.client.clone(),
            Arc::clone(&self.shared.source),
            stop.clone(),
        ));
        if let Some(listener) = self.http {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "serving /metrics, /healthz and /readyz");
            }
            let app = HttpApp::new(Arc::clone(&self.shared));
            tasks.spawn(http::serve(listener, app, stop.clone()));
        }

        let poller = UsagePoller::new(
            self.client.clone(),
            self.config.usage_source,
            self.config.usage_interval,
            scope,
            Arc::clone(&self.shared),
            Arc::clone(&self.usage),
        );
        tasks.spawn(poller.run(stop.clone()));

        tasks.spawn({
            let shared = Arc::clone(&self.shared);
            let stop = stop.clone();
            async move {
                loop {
                    shared.refresh_self_metrics();
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(HOUSEKEEPING_INTERVAL) => {}
                    }
                }
            }
        });
        // Its own task: a slow disk delays the next save, not the self-metrics.
        tasks.spawn({
            let ledger = Arc::clone(&self.ledger);
            let file = self.ledger_file.clone();
            let stop = stop.clone();
            async move {
                loop {
                    save_ledger(&ledger, file.as_ref()).await;
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(HOUSEKEEPING_INTERVAL) => {}
                    }
                }
            }
        });
        tasks.close();

        let result = link.run(shutdown).await;

        stop.cancel();
        if tokio::time::timeout(self.config.shutdown_timeout, tasks.wait())
            .await
            .is_err()
        {
            warn!("background tasks did not stop in time");
        }
        // What the watchers counted last; queued behind any save still in flight.
        let last_save = save_ledger(&self.ledger, self.ledger_file.as_ref());
        if tokio::time::timeout(self.config.shutdown_timeout, last_save)
            .await
            .is_err()
        {
            warn!("the scaling ledger could not be saved in time (slow disk?)");
        }
        let stats = &self.shared.stats;
        info!(
            cluster = %self.cluster,
            bytes_sent = stats.bytes_sent.load(Ordering::Relaxed),
            delta_bytes = stats.delta_bytes_sent.load(Ordering::Relaxed),
            delta_samples = stats.delta_samples_sent.load(Ordering::Relaxed),
            snapshots = stats.snapshots_sent.load(Ordering::Relaxed),
            "sender stopped"
        );
        result
    }
}

/// Saves the ledger if it changed: encoded under its lock, written without it by the state
/// writer's thread, then marked saved at the version written (a change made meanwhile keeps
/// it unsaved for the next round). A failure is logged; the next round retries.
async fn save_ledger(ledger: &Mutex<ScalingLedger>, file: Option<&LedgerFile>) {
    let Some(file) = file else {
        lock(ledger).mark_saved();
        return;
    };
    let unsaved = lock(ledger).unsaved(&file.path);
    let result = match unsaved {
        Ok(None) => return,
        Ok(Some(unsaved)) => file
            .writer
            .write(file.path.clone(), unsaved.bytes)
            .await
            .map(|()| unsaved.version),
        Err(e) => Err(e),
    };
    match result {
        Ok(version) => lock(ledger).saved(version),
        Err(e) => warn!(cause = %e, "failed to save the scaling ledger"),
    }
}

fn random_id() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// The sender id stored in `dir`, created on first use.
fn load_sender_id(dir: &Path) -> Result<String, Error> {
    let path = dir.join(SENDER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Ok(_) => create_sender_id(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_sender_id(&path),
        Err(e) => Err(Error::state(&path, e)),
    }
}

fn create_sender_id(path: &Path) -> Result<String, Error> {
    let id = random_id();
    write_atomically(path, id.as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_id_persists_in_the_state_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_sender_id(dir.path()).expect("created");
        let second = load_sender_id(dir.path()).expect("read");
        assert_eq!(first, second);
        assert_eq!(first.len(), 16);
        assert_ne!(random_id(), random_id());
    }

    #[tokio::test]
    async fn a_state_directory_is_held_by_one_sender_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            state_dir: Some(dir.path().to_owned()),
            ..Config::new("127.0.0.1:9000")
        };
        let client = || crate::kubeclient::plain_client("http://127.0.0.1:1").expect("client");
        let first = Sender::new(config.clone(), client(), "a").expect("first");
        let Err(err) = Sender::new(config.clone(), client(), "b") else {
            panic!("a second sender on the same state directory must be refused");
        };
        let text = err.to_string();
        assert!(
            text.contains("in use by another sender")
                && text.contains(&format!("pid {}", std::process::id()))
                && text.contains(&dir.path().display().to_string()),
            "{text}"
        );
        // One sender may keep its spool in its state directory itself.
        let shared_dir = tempfile::tempdir().expect("tempdir");
        let same = Config {
            state_dir: Some(shared_dir.path().to_owned()),
            spool_dir: Some(shared_dir.path().join(".")),
            ..Config::new("127.0.0.1:9000")
        };
        let sharing = Sender::new(same, client(), "c").expect("spool in the state directory");
        drop(sharing);
        // The spool directory is held too, also when it is elsewhere.
        let spool = dir.path().join("spool");
        let held = hold_dir(&spool).expect_err("the spool directory is held");
        assert!(held.to_string().contains("in use"), "{held}");
        drop(first);
        let _again = Sender::new(config, client(), "c").expect("free once the first is gone");
    }

    /// The ledger's temporary file made a FIFO: opening it for writing blocks until someone
    /// reads it, as a write to a hung disk or a dead network file system blocks. One
    /// runtime thread must keep running other tasks meanwhile, and the ledger's lock must
    /// stay free; once the write fails (a FIFO cannot be fsynced), the ledger is still
    /// unsaved and the next save persists the newer version.
    #[test]
    fn a_hung_ledger_write_blocks_neither_the_runtime_nor_the_ledger() {
        use crate::fixtures::rescale_event;
        use std::io::Read;
        use std::sync::mpsc;

        const UP: &str = "New size: 4; reason: cpu resource utilization above target";
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(LEDGER_FILE);
        let tmp = dir
            .path()
            .join(format!(".{LEDGER_FILE}.tmp.{}", std::process::id()));
        let made = std::process::Command::new("mkfifo").arg(&tmp).status();
        if !made.is_ok_and(|s| s.success()) {
            kube_relay_testkit::skip("mkfifo (coreutils) is needed to simulate a hung write");
            return;
        }
        let ledger = Arc::new(Mutex::new(ScalingLedger::new()));
        lock(&ledger).observe(&rescale_event("e1", "web", UP, 1, 1_000));
        let file = LedgerFile {
            path: path.clone(),
            writer: StateWriter::start(dir.path()).expect("writer"),
        };

        let (progress, seen) = mpsc::channel::<&str>();
        let runtime = std::thread::spawn({
            let ledger = Arc::clone(&ledger);
            let file = file.clone();
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let save = tokio::spawn({
                        let ledger = Arc::clone(&ledger);
                        let file = file.clone();
                        async move { save_ledger(&ledger, Some(&file)).await }
                    });
                    // Other tasks run, timers fire, the ledger can be changed.
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    lock(&ledger).observe(&rescale_event("e2", "web", UP, 1, 1_100));
                    let _ = progress.send("responsive");
                    save.await.expect("save task");
                    assert!(lock(&ledger).is_dirty(), "a failed save keeps it unsaved");
                    save_ledger(&ledger, Some(&file)).await;
                    let _ = progress.send("saved");
                });
            }
        });
        let responsive = seen.recv_timeout(Duration::from_secs(30));
        // Unblock the write either way, so a regression fails instead of hanging (the read
        // has its own thread: opening a FIFO nobody writes to would block this one).
        let (read, written) = mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = std::fs::File::open(&tmp).and_then(|mut fifo| fifo.read_to_end(&mut bytes));
            let _ = read.send(bytes);
        });
        let written = written
            .recv_timeout(Duration::from_secs(30))
            .expect("the ledger was written to its temporary file");
        assert_eq!(
            responsive,
            Ok("responsive"),
            "the runtime stalled while the ledger was being written"
        );
        assert!(
            String::from_utf8_lossy(&written).contains("\"e1\""),
            "the hung write carried the ledger"
        );
        assert_eq!(
            seen.recv_timeout(Duration::from_secs(30)),
            Ok("saved"),
            "the next save went through"
        );
        runtime.join().expect("runtime thread");
        assert!(!lock(&ledger).is_dirty());
        let saved = ScalingLedger::load(&path).expect("load");
        assert_eq!(
            saved.total("default", "web", crate::events::Direction::Up),
            2
        );
    }
}
