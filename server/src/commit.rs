//! Group commit: one flusher thread makes writes durable for every waiter at once.
//!
//! Two reasons, both about `Send` acknowledgements:
//! - sled 0.34's `flush_async` deadlocks when several tasks await it at the
//!   same time (spacejam/sled#1308, still open for 0.34; reproduced here: the
//!   benchmark's four concurrent senders hung for good). Only this thread
//!   flushes, with the blocking `flush`.
//! - Batching: every writer that queued before a flush starts is covered by it,
//!   so concurrent sends share one fsync instead of paying one each.
//!
//! A waiter must insert its data *before* calling [`GroupCommit::flush`]; the
//! flush that answers it starts only after it was queued.

use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Handle on the flusher thread. Dropping it stops the thread after the
/// flushes already queued, and releases its handle on the database.
pub(crate) struct GroupCommit {
    waiters: Mutex<Option<mpsc::Sender<Waiter>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the flusher for `db`.
    pub(crate) fn start(db: sled::Db) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("sotto-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    for waiter in batch {
                        // A waiter that gave up (its request was dropped) needs no answer.
                        let _ = waiter.send(result.clone());
                    }
                }
            })?;
        Ok(Self {
            waiters: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Resolves once everything written before this call is on disk.
    pub(crate) async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        {
            let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            let Some(waiters) = waiters.as_ref() else {
                return Err("the store is closing".into());
            };
            waiters
                .send(tx)
                .map_err(|_| "the flusher stopped".to_string())?;
        }
        rx.await.map_err(|_| "the flusher stopped".to_string())?
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; joining it means its
        // database handle is gone before whoever reopens the directory.
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The pattern that deadlocks with sled's own `flush_async`: many tasks
    /// inserting and waiting for durability at once. Every one must finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_waiters_all_complete_and_data_is_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("open");
        let commit = Arc::new(GroupCommit::start(db.clone()).expect("start"));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64u32 {
            let (db, commit) = (db.clone(), Arc::clone(&commit));
            tasks.spawn(async move {
                for j in 0..20u32 {
                    db.insert((i * 1000 + j).to_be_bytes(), vec![7u8; 1024])
                        .expect("insert");
                    commit.flush().await.expect("flush");
                }
            });
        }
        let all = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(done) = tasks.join_next().await {
                done.expect("task");
            }
        })
        .await;
        assert!(all.is_ok(), "group commit hung");
        drop(commit);
        drop(db);
        let reopened = sled::open(dir.path()).expect("reopen after the flusher let go");
        assert_eq!(reopened.len(), 64 * 20);
    }
}
