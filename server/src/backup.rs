//! Backups: one file holding the relay's keys, TLS identity, config and every
//! database tree, so a restored relay keeps its SPKI pin and trust root (old
//! invite links and clients' pinned certificates keep working).
//!
//! Format (all integers big-endian), ending in a SHA-256 of everything before it:
//! - [`MAGIC`]
//! - `F` name_len u16, name, len u64, bytes: one file from [`FILES`]
//! - `S` u64: the next mailbox seq at backup time
//! - `T` name_len u16, name, count u64, then count × (klen u32, key, vlen u32, value)
//! - `E`, then the 32-byte SHA-256
//!
//! While the relay serves, each tree is read with writes still going on, so two
//! trees may be a few requests apart. The one cross-tree invariant that matters,
//! the per-mailbox usage counters, is rebuilt from the mailboxes on restore.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::store::{SledStore, Store, StoreError};
use crate::{DataDir, Error, Result, io};

/// First bytes of every backup file.
pub const MAGIC: &[u8] = b"SOTTO-RELAY-BACKUP-1\n";

/// The files a backup carries, relative to the data directory. Restore writes
/// only these names, so a crafted backup cannot write anywhere else.
pub const FILES: [&str; 6] = [
    "config.toml",
    "tls/cert.der",
    "tls/key.der",
    "keys/trust_root.key",
    "keys/server.key",
    "keys/server.cert",
];

/// Longest tree or file name accepted on restore.
const MAX_NAME: usize = 256;

/// What a backup or restore handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackupReport {
    /// Size of the backup file.
    pub bytes: u64,
    /// Database trees.
    pub trees: usize,
    /// Database entries across all trees.
    pub entries: u64,
}

/// A writer that hashes what passes through it and counts bytes.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn name_bytes(name: &[u8]) -> std::io::Result<[u8; 2]> {
    u16::try_from(name.len())
        .map(u16::to_be_bytes)
        .map_err(|_| std::io::Error::other("name too long"))
}

fn len32(b: &[u8]) -> std::io::Result<[u8; 4]> {
    u32::try_from(b.len())
        .map(u32::to_be_bytes)
        .map_err(|_| std::io::Error::other("entry too large"))
}

/// Writes a backup of the relay in `dir` (whose database is `store`) to `to`.
/// The file is created mode 0600 and must not exist yet.
pub fn write_backup(dir: &DataDir, store: &SledStore, to: &Path) -> Result<BackupReport> {
    // 0600 and create_new: the file holds the relay's private keys, and an
    // existing file (maybe an older backup) is never silently replaced.
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io(format!(
            "cannot create {} (it must not exist yet; pick a new name)",
            to.display()
        )))?;
    let result = write_into(dir, store, file);
    if result.is_err() {
        let _ = fs::remove_file(to);
    }
    result
}

fn write_into(dir: &DataDir, store: &SledStore, file: fs::File) -> Result<BackupReport> {
    let werr = io("cannot write the backup file");
    let mut report = BackupReport::default();
    // Everything read so far is on disk first, so the backup is no newer than the data.
    store.flush()?;
    let mut w = Hashing {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut body = || -> std::result::Result<(), Error> {
        let e = |c| Error::Io {
            what: "cannot write the backup file".into(),
            cause: c,
        };
        w.write_all(MAGIC).map_err(e)?;
        for name in FILES {
            let bytes = fs::read(dir.root().join(name)).map_err(io(format!(
                "cannot read {}",
                dir.root().join(name).display()
            )))?;
            w.write_all(b"F").map_err(e)?;
            w.write_all(&name_bytes(name.as_bytes()).map_err(e)?)
                .map_err(e)?;
            w.write_all(name.as_bytes()).map_err(e)?;
            w.write_all(&(bytes.len() as u64).to_be_bytes())
                .map_err(e)?;
            w.write_all(&bytes).map_err(e)?;
        }
        let db = store.db();
        for name in db.tree_names() {
            let tree = db.open_tree(&name).map_err(StoreError::from)?;
            // Counted first so the record can say how many entries follow; a
            // concurrent write makes the second pass differ, so it is bounded by it.
            let entries: Vec<(sled::IVec, sled::IVec)> = tree
                .iter()
                .collect::<std::result::Result<_, _>>()
                .map_err(StoreError::from)?;
            w.write_all(b"T").map_err(e)?;
            w.write_all(&name_bytes(&name).map_err(e)?).map_err(e)?;
            w.write_all(&name).map_err(e)?;
            w.write_all(&(entries.len() as u64).to_be_bytes())
                .map_err(e)?;
            for (k, v) in &entries {
                w.write_all(&len32(k).map_err(e)?).map_err(e)?;
                w.write_all(k).map_err(e)?;
                w.write_all(&len32(v).map_err(e)?).map_err(e)?;
                w.write_all(v).map_err(e)?;
            }
            report.trees += 1;
            report.entries += entries.len() as u64;
        }
        // Taken after the mailbox was read, so it is above every seq in the backup.
        let next = store.next_seq()?;
        w.write_all(b"S").map_err(e)?;
        w.write_all(&next.to_be_bytes()).map_err(e)?;
        w.write_all(b"E").map_err(e)?;
        Ok(())
    };
    body()?;
    let digest = w.hash.clone().finalize();
    w.inner.write_all(&digest).map_err(werr)?;
    report.bytes = w.bytes + 32;
    let file = w.inner.into_inner().map_err(|e| Error::Io {
        what: "cannot write the backup file".into(),
        cause: e.into_error(),
    })?;
    file.sync_all().map_err(io("cannot sync the backup file"))?;
    Ok(report)
}

/// Key-value pairs of one tree, borrowed from the backup file.
type Entries<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Reads a backup, checking its magic and checksum.
struct Parser<'a> {
    buf: &'a [u8],
}

impl<'a> Parser<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Option<usize> {
        self.take(4)?
            .try_into()
            .ok()
            .map(u32::from_be_bytes)
            .and_then(|n| usize::try_from(n).ok())
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
    fn name(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        if n > MAX_NAME {
            return None;
        }
        self.take(n)
    }
}

/// Restores the backup `from` into `data_dir`, which must not hold a relay:
/// a directory that does not exist yet or is empty (do not run `init` there).
pub fn restore(from: &Path, data_dir: &Path) -> Result<BackupReport> {
    let dir = DataDir::new(data_dir);
    let empty = match fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(Error::Io {
                what: format!("cannot read {}", data_dir.display()),
                cause: e,
            });
        }
    };
    if !empty {
        return Err(Error::RestoreTarget(data_dir.to_path_buf()));
    }
    let data = fs::read(from).map_err(io(format!("cannot read {}", from.display())))?;
    let bad = || Error::BadBackup(from.to_path_buf());
    if data.len() < MAGIC.len() + 32 || !data.starts_with(MAGIC) {
        return Err(bad());
    }
    let (body, digest) = data.split_at(data.len() - 32);
    // Checked before anything is written: a truncated or altered file restores nothing.
    if Sha256::digest(body).as_slice() != digest {
        return Err(bad());
    }
    let mut p = Parser {
        buf: &body[MAGIC.len()..],
    };
    let mut files: Vec<(&str, &[u8])> = Vec::new();
    let mut trees: Vec<(&[u8], Entries<'_>)> = Vec::new();
    let mut next_seq = None;
    loop {
        match p.take(1).ok_or_else(bad)? {
            b"F" => {
                let name = std::str::from_utf8(p.name().ok_or_else(bad)?).map_err(|_| bad())?;
                let len = usize::try_from(p.u64().ok_or_else(bad)?).map_err(|_| bad())?;
                let bytes = p.take(len).ok_or_else(bad)?;
                let known = FILES.iter().find(|f| **f == name).ok_or_else(bad)?;
                files.push((known, bytes));
            }
            b"T" => {
                let name = p.name().ok_or_else(bad)?;
                let count = p.u64().ok_or_else(bad)?;
                let mut entries = Vec::new();
                for _ in 0..count {
                    let kl = p.u32().ok_or_else(bad)?;
                    let k = p.take(kl).ok_or_else(bad)?;
                    let vl = p.u32().ok_or_else(bad)?;
                    let v = p.take(vl).ok_or_else(bad)?;
                    entries.push((k, v));
                }
                trees.push((name, entries));
            }
            b"S" => next_seq = Some(p.u64().ok_or_else(bad)?),
            b"E" if p.buf.is_empty() => break,
            _ => return Err(bad()),
        }
    }
    if files.len() != FILES.len() {
        return Err(bad());
    }
    crate::make_dir(dir.root())?;
    crate::make_dir(&dir.root().join("tls"))?;
    crate::make_dir(&dir.root().join("keys"))?;
    crate::make_dir(&dir.db())?;
    for (name, bytes) in files {
        crate::write_private(&dir.root().join(name), bytes)?;
    }
    let db = sled::Config::new()
        .path(dir.db())
        .open()
        .map_err(StoreError::from)?;
    let mut report = BackupReport {
        bytes: data.len() as u64,
        ..BackupReport::default()
    };
    for (name, entries) in &trees {
        let tree = db.open_tree(name).map_err(StoreError::from)?;
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(*k, *v);
        }
        tree.apply_batch(batch).map_err(StoreError::from)?;
        report.trees += 1;
        report.entries += entries.len() as u64;
    }
    db.flush().map_err(StoreError::from)?;
    // The store takes this same handle (it checks the schema version); then
    // the seq floor and usage counters are made consistent with the restored
    // mailboxes. Dropping and reopening would race sled's background flusher,
    // which holds the file lock for a moment after the last handle goes.
    let store = SledStore::from_db(db)?;
    store.after_restore(next_seq.unwrap_or(0))?;
    store.flush()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::PermissionsExt;

    use sotto_wire::relay::OneTimePreKey;
    use uuid::Uuid;

    use crate::store::{
        AccountRecord, AccountStore, DeviceKey, Enqueued, EnqueuedMany, GroupCreated, GroupRecord,
        GroupStore, InviteStore, JoinRequestAdded, MailboxStore, PreKeyDirectory, Quota,
    };

    const BIG: Quota = Quota {
        max_envelopes: 100,
        max_bytes: 1 << 20,
    };

    fn stored(e: Enqueued) -> u64 {
        match e {
            Enqueued::Stored(seq) => seq,
            Enqueued::MailboxFull => panic!("mailbox has room"),
        }
    }

    #[test]
    fn backup_restores_keys_accounts_and_mail() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("relay");
        let report = crate::init(&src, None, Some("relay.example.org:4433".into())).expect("init");
        let dir = DataDir::new(&src);
        let bob = DeviceKey {
            account: Uuid::new_v4(),
            device: 1,
        };
        let file = tmp.path().join("relay.backup");
        let last_seq;
        {
            let store = SledStore::open(&dir.db()).expect("open");
            let rec = AccountRecord {
                identity_key: vec![5; 33],
                registration_id: 7,
                ..AccountRecord::default()
            };
            store.put_account(bob, &rec).expect("account");
            store
                .add_pre_keys(
                    bob,
                    &[OneTimePreKey {
                        id: 1,
                        public_key: vec![1; 33],
                    }],
                )
                .expect("prekeys");
            store.add_invite([3; 32], 2, u64::MAX).expect("invite");
            stored(store.enqueue(bob, 10, b"first", BIG).expect("enqueue"));
            last_seq = stored(store.enqueue(bob, 11, b"second", BIG).expect("enqueue"));
            assert_eq!(
                store.create_group(&GROUP_ID, &group(), 10).expect("group"),
                GroupCreated::Created
            );
            assert!(matches!(
                store
                    .add_join_request(&GROUP_ID, 12, b"let me in", 10)
                    .expect("join request"),
                JoinRequestAdded::Added(_)
            ));
            assert!(matches!(
                store
                    .enqueue_many(&[(bob, b"expiring")], 13, Some(1000), BIG)
                    .expect("enqueue"),
                EnqueuedMany::Stored(_)
            ));
            let r = write_backup(&dir, &store, &file).expect("backup");
            assert_eq!(r.bytes, fs::metadata(&file).expect("file").len());
            // An existing file is never overwritten.
            assert!(write_backup(&dir, &store, &file).is_err());
        }
        let mode = fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let dst = tmp.path().join("restored");
        restore(&file, &dst).expect("restore");
        let restored = DataDir::new(&dst);
        for name in FILES {
            assert_eq!(
                fs::read(src.join(name)).expect("original"),
                fs::read(dst.join(name)).expect("restored"),
                "{name}"
            );
        }
        let link = crate::offline_invite(&dst, 1, std::time::Duration::from_secs(60))
            .expect("restored relay works");
        assert_eq!(crate::tls::pin_text(&link.spki_pin), report.spki_pin);
        let store = SledStore::open(&restored.db()).expect("open restored");
        assert_eq!(
            store.account(bob).expect("get").map(|r| r.registration_id),
            Some(7)
        );
        assert_eq!(store.pre_key_counts(bob).expect("counts"), (1, 0));
        assert!(store.consume_invite([3; 32], 0).expect("invite"));
        let (mail, more) = store.envelopes(bob, 10, 0).expect("mail");
        assert!(!more);
        let bodies: Vec<&[u8]> = mail.iter().map(|e| e.envelope.as_slice()).collect();
        assert_eq!(bodies, vec![b"first".as_slice(), b"second", b"expiring"]);
        assert_eq!(store.group(&GROUP_ID).expect("group"), Some(group()));
        assert_eq!(store.group_count().expect("count"), 1);
        let requests = store.join_requests(&GROUP_ID, 1 << 20).expect("requests");
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].request, b"let me in");
        // New mail and join requests get higher ids instead of overwriting
        // restored ones, and the quota counters match the restored mailbox.
        let tight = Quota {
            max_envelopes: 4,
            max_bytes: 1 << 20,
        };
        let seq = stored(store.enqueue(bob, 12, b"third", tight).expect("enqueue"));
        assert!(seq > last_seq);
        assert!(matches!(
            store.add_join_request(&GROUP_ID, 14, b"me too", 10).expect("add"),
            JoinRequestAdded::Added(id) if id > requests[0].id
        ));
        assert_eq!(
            store.enqueue(bob, 13, b"fourth", tight).expect("enqueue"),
            Enqueued::MailboxFull
        );
        assert_eq!(store.queued_count(), 4);
        // The restored copy keeps its own expiry.
        assert_eq!(store.sweep_expired(0, 1000).expect("sweep"), 1);
        assert_eq!(store.queued_count(), 3);
    }

    const GROUP_ID: [u8; 16] = [0x47; 16];

    fn group() -> GroupRecord {
        GroupRecord {
            version: 1,
            auth_key: vec![5; 33],
            link_key: vec![6; 33],
            blob: b"sealed group state".to_vec(),
        }
    }

    #[test]
    fn corrupt_backups_and_used_targets_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("b");
        fs::write(&file, b"SOTTO-RELAY-BACKUP-1\nnot really").expect("write");
        assert!(matches!(
            restore(&file, &tmp.path().join("new")),
            Err(Error::BadBackup(_))
        ));
        assert!(matches!(
            restore(&file, tmp.path()),
            Err(Error::RestoreTarget(_))
        ));
        assert!(!tmp.path().join("new").exists());
    }
}
