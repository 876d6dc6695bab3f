//! Small state files (the scaling ledger, the sender id, the spool's meta file) written whole
//! and atomically, and a thread that writes them off the async runtime.
//!
//! [`write_atomically`] writes a temporary file in the same directory, `fsync`s it, renames
//! it over the old file and `fsync`s the directory, so after a crash or a power cut the file
//! holds either the old or the new content, never a mix, and a completed write survives.
//! It blocks: an `fsync` takes milliseconds on a healthy disk and can take seconds or hang
//! on a sick one. So a task on the runtime never calls it: it hands the bytes to a
//! [`StateWriter`], whose thread writes them one after another in the order given (a later
//! state never lands before an earlier one), and awaits the outcome without holding any lock.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::error::Error;

/// Writes `bytes` to `path` through a synced temporary file and a rename, then syncs the
/// directory so the rename itself is durable. Blocking: see the [module docs](self).
///
/// # Errors
/// [`Error::State`] naming the file on any I/O failure (the old content is left intact).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".to_owned());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::state(&tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::state(path, e));
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::state(dir, e))
}

/// One file to write, and where to say how it went.
struct Job {
    path: PathBuf,
    bytes: Vec<u8>,
    done: oneshot::Sender<Result<(), Error>>,
}

/// A thread that writes state files with [`write_atomically`], in the order they are given.
/// It ends when the last clone of its writer is dropped, after the writes already given.
#[derive(Debug, Clone)]
pub struct StateWriter {
    jobs: mpsc::Sender<Job>,
}

impl StateWriter {
    /// Starts the thread (named `state-writer`).
    ///
    /// # Errors
    /// [`Error::State`] naming `dir` (the directory it will write in) when the thread
    /// cannot be started.
    pub fn start(dir: &Path) -> Result<Self, Error> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("state-writer".to_owned())
            .spawn(move || {
                for job in queue {
                    // The caller may have stopped waiting (shutdown): the write still happens.
                    let _ = job.done.send(write_atomically(&job.path, &job.bytes));
                }
            })
            .map_err(|e| Error::state(dir, e))?;
        Ok(StateWriter { jobs })
    }

    /// Queues `bytes` for `path` now, behind every write queued before, and returns a future
    /// that resolves once the file is durable (or the write failed). Never blocks.
    ///
    /// # Errors
    /// The future yields what [`write_atomically`] returned, or [`Error::State`] when the
    /// thread is gone.
    pub fn write(
        &self,
        path: PathBuf,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let (done, outcome) = oneshot::channel();
        let gone = Error::state(&path, "the state-writer thread is gone");
        // A send fails only when the thread is gone; the job, `done` with it, is dropped then.
        let _ = self.jobs.send(Job { path, bytes, done });
        async move { outcome.await.unwrap_or(Err(gone)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_whole_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomically(&path, b"first, and longer").expect("write");
        write_atomically(&path, b"second").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_failed_write_names_the_file_and_keeps_the_old_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomically(&path, b"old").expect("write");
        // The rename cannot replace a non-empty directory.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).expect("mkdir");
        let err = write_atomically(&blocked, b"new").expect_err("refused");
        assert!(err.to_string().contains("blocked"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_writer_keeps_the_order_it_was_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.json");
        let writer = StateWriter::start(dir.path()).expect("thread");
        let writes: Vec<_> = (0..20)
            .map(|i| writer.write(path.clone(), format!("state {i}").into_bytes()))
            .collect();
        for outcome in futures::future::join_all(writes).await {
            outcome.expect("written");
        }
        assert_eq!(std::fs::read(&path).expect("read"), b"state 19");
    }
}
