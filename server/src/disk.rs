//! Keeps the relay from filling its disk.
//!
//! sled is log-structured: a write that meets a full disk fails, and the
//! database may refuse further writes until the process restarts. So the
//! relay stops *before* that point: a watcher reads the free space of the
//! database's filesystem twice a second, and while it is below
//! `min_free_disk_bytes` the shell refuses requests that would grow the
//! database (sends, registrations, prekey uploads, group writes) with
//! `UNAVAILABLE` and a retry time; clients keep what was refused and send it
//! later. Fetches and acknowledgements still work, so members can drain their
//! mailboxes, and the relay takes new messages again as soon as space is back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sotto_wire::relay::request;
use tokio_util::sync::CancellationToken;

/// How often free space is read.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What clients are told to wait before retrying.
pub const RETRY_AFTER_MS: u64 = 30_000;

/// Free space of the filesystem holding the database, against a reserve.
pub struct DiskGuard {
    dir: PathBuf,
    reserve: u64,
    free: AtomicU64,
    low: AtomicBool,
}

impl DiskGuard {
    /// Watches the filesystem of `dir`, keeping `reserve` bytes free.
    pub fn new(dir: &Path, reserve: u64) -> Self {
        let guard = Self {
            dir: dir.to_path_buf(),
            reserve,
            free: AtomicU64::new(u64::MAX),
            low: AtomicBool::new(false),
        };
        guard.refresh();
        guard
    }

    /// Bytes free for the relay's user at the last check.
    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// True while free space is below the reserve.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// Reads free space now; returns whether it is below the reserve. A
    /// filesystem that cannot be read counts as not low (the store's own
    /// errors still surface).
    pub fn refresh(&self) -> bool {
        let Ok(stat) = rustix::fs::statvfs(&self.dir) else {
            return self.is_low();
        };
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        self.free.store(free, Ordering::Relaxed);
        // A reserve of 0 is "off": never low.
        let low = free < self.reserve;
        let was = self.low.swap(low, Ordering::Relaxed);
        if low && !was {
            tracing::error!(
                free_bytes = free,
                reserve_bytes = self.reserve,
                "disk space is below min_free_disk_bytes: refusing new messages and \
                 registrations until space is freed (queued messages are safe and still delivered)"
            );
        } else if was && !low {
            tracing::info!(
                free_bytes = free,
                "disk space is back; accepting messages again"
            );
        }
        low
    }
}

/// Whether `kind` makes the database grow (and so waits while the disk is low).
pub fn grows_store(kind: Option<&request::Kind>) -> bool {
    use request::Kind as K;
    matches!(
        kind,
        Some(
            K::Register(_)
                | K::UploadPreKeys(_)
                | K::Send(_)
                | K::SendMulti(_)
                | K::ResetIdentity(_)
                | K::GroupWrite(_)
                | K::GroupJoinRequest(_)
        )
    )
}

/// Re-reads free space every [`CHECK_EVERY`] until `shutdown`.
pub async fn watch(shared: std::sync::Arc<crate::net::Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        shared.disk.refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_is_low_and_a_tiny_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tiny = DiskGuard::new(dir.path(), 1);
        assert!(!tiny.is_low());
        assert!(tiny.free_bytes() > 0 && tiny.free_bytes() < u64::MAX);
        let huge = DiskGuard::new(dir.path(), u64::MAX);
        assert!(huge.is_low());
        assert!(grows_store(Some(&request::Kind::Send(Default::default()))));
        assert!(!grows_store(Some(&request::Kind::Ack(Default::default()))));
        assert!(!grows_store(Some(
            &request::Kind::Fetch(Default::default())
        )));
    }
}
