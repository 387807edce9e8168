//! The relay's storage: narrow domain traits and their sled implementation.
//!
//! Everything stored here is either random (account ids, invite token hashes,
//! sequence numbers), public (identity and prekey public keys) or sealed
//! ciphertext the relay cannot read. There is no sender field anywhere: sealed
//! sender means the relay does not know who sent an envelope, and it must not
//! write down what it happens to see (the connection's account).
//!
//! Layout (sled trees, keys are big-endian so prefix scans come out in order):
//! - `meta`: `schema_version` -> u32
//! - `invites`: SHA-256(token) -> uses_left u32 ++ expires_at_ms u64
//! - `accounts`: account(16) ++ device(4) -> [`AccountRecord`] (protobuf)
//! - `prekeys`: account ++ device ++ id(4) -> EC public key
//! - `kyber`: account ++ device ++ id(4) -> [`SignedPreKey`] (protobuf)
//! - `mailbox`: account ++ device ++ seq(8) -> received_at_ms u64 ++ envelope
//! - `usage`: account ++ device -> envelope count u64 ++ bytes u64
//! - `banned`: account(16) -> banned_at_ms u64 (set by the operator)
//! - `envelope_expiry`: mailbox key -> expires_at_ms u64, only for envelopes
//!   sent with their own lifetime (`SendMulti.ttl_ms`); kept apart so the
//!   mailbox value format of older data directories is unchanged
//! - `groups`: group_id(16) -> version u64 ++ u8 len ++ auth key ++ u8 len ++
//!   link key ++ blob (see [`GroupRecord`]); nothing ties a group to an account
//! - `group_requests`: group_id ++ id(8) -> received_at_ms u64 ++ request
//! - `meta`: also `seq_base` -> u64, added to mailbox seqs and join-request ids
//!   after a restore (sled's id generator is not part of an export, and they
//!   must keep growing), and `group_count` -> u64, kept in step with `groups`
//!
//! sled is pre-1.0 with no on-disk format promise, so the schema version is
//! checked at open and the rest of the relay only sees the traits.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use prost::Message;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sotto_wire::relay::{Envelope, GroupRequest, OneTimePreKey, SignedPreKey};
use uuid::Uuid;

use crate::commit::GroupCommit;

/// The schema version this build writes and understands: 1, plus one per
/// entry in [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = 1 + MIGRATIONS.len() as u32;

/// One upgrade step of the on-disk format, from `from` to `from + 1`.
///
/// A step must be idempotent: the version is written after the step has
/// run and been flushed, so a crash in between runs it again on the next
/// start. Add a step (never edit a shipped one) whenever a tree's key or
/// value format changes, and say what it does in `what` (it is logged).
pub(crate) struct Migration {
    pub(crate) from: u32,
    pub(crate) what: &'static str,
    pub(crate) run: fn(&sled::Db) -> StoreResult<()>,
}

/// Every upgrade step, oldest first. Empty: the format has not changed
/// since version 1 (new trees such as `groups` need no step; they start
/// empty). Older relays refuse a directory once a step has run.
const MIGRATIONS: &[Migration] = &[];

const SCHEMA_KEY: &[u8] = b"schema_version";
const SEQ_BASE_KEY: &[u8] = b"seq_base";
const GROUP_COUNT_KEY: &[u8] = b"group_count";

/// Length of a group id (random bytes chosen by the creator).
pub const GROUP_ID_LEN: usize = 16;

/// Storage errors. Their text stays in the relay's log; peers only see INTERNAL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption it detected).
    #[error("database error: {0}")]
    Db(sled::Error),
    /// A stored record does not decode; the database was damaged or written by other code.
    #[error("corrupt record in tree `{0}`")]
    Corrupt(&'static str),
    /// A value does not fit the record format of a tree (a key longer than 255 bytes).
    #[error("a value does not fit the record format of tree `{0}`")]
    Unencodable(&'static str),
    /// The database was written by a newer relay.
    #[error(
        "the database has schema version {found} but this relay understands up to {supported}; \
         run the newer sotto-relay or restore a backup"
    )]
    SchemaTooNew {
        /// Version found on disk.
        found: u32,
        /// Newest version this build supports.
        supported: u32,
    },
}

// Written by hand rather than `#[from]` so the sled error is shown once (in
// Display) instead of again as the `source` in error chains.
impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Db(e)
    }
}

/// Brings the database to `target` with `steps`: a new database is stamped
/// `target`, an older one is upgraded step by step, a newer one is refused
/// untouched (so a rollback after an upgrade fails safely).
fn migrate(db: &sled::Db, meta: &sled::Tree, steps: &[Migration], target: u32) -> StoreResult<()> {
    let Some(v) = meta.get(SCHEMA_KEY)? else {
        meta.insert(SCHEMA_KEY, &target.to_be_bytes())?;
        return Ok(());
    };
    let mut found = u32::from_be_bytes(
        v.as_ref()
            .try_into()
            .map_err(|_| StoreError::Corrupt("meta"))?,
    );
    if found > target {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: target,
        });
    }
    while found < target {
        let step = steps
            .iter()
            .find(|m| m.from == found)
            .ok_or(StoreError::Corrupt("meta"))?;
        tracing::info!(
            from = found,
            to = found + 1,
            step = step.what,
            "upgrading the database"
        );
        (step.run)(db)?;
        db.flush()?;
        found += 1;
        meta.insert(SCHEMA_KEY, &found.to_be_bytes())?;
        db.flush()?;
    }
    Ok(())
}

/// Result alias for storage calls.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// One device of one account: the unit that owns keys and a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    /// Random account id (UUID v4).
    pub account: Uuid,
    /// Device number, 1 for the first device.
    pub device: u32,
}

impl DeviceKey {
    fn bytes(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..16].copy_from_slice(self.account.as_bytes());
        out[16..].copy_from_slice(&self.device.to_be_bytes());
        out
    }

    fn with_suffix(&self, suffix: &[u8]) -> Vec<u8> {
        let mut out = self.bytes().to_vec();
        out.extend_from_slice(suffix);
        out
    }
}

/// What the relay keeps about one device: public keys and a registration id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AccountRecord {
    /// Serialized libsignal identity key.
    #[prost(bytes = "vec", tag = "1")]
    pub identity_key: Vec<u8>,
    /// The device's libsignal registration id.
    #[prost(uint32, tag = "2")]
    pub registration_id: u32,
    /// Current signed EC prekey.
    #[prost(message, optional, tag = "3")]
    pub signed_pre_key: Option<SignedPreKey>,
    /// Current last-resort Kyber prekey.
    #[prost(message, optional, tag = "4")]
    pub kyber_last_resort: Option<SignedPreKey>,
}

/// Result of storing an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored under this sequence number (not yet flushed).
    Stored(u64),
    /// The mailbox is over its envelope or byte quota; nothing was stored.
    MailboxFull,
}

/// Result of storing one envelope for each of several devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueuedMany {
    /// Stored under these sequence numbers, in the order given (not yet flushed).
    Stored(Vec<u64>),
    /// These mailboxes are over quota; nothing at all was stored.
    MailboxFull(Vec<DeviceKey>),
}

/// One group as the relay keeps it: an opaque blob the relay cannot read, its
/// version, and the public keys that authorise requests about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Bumped by one on every write; 1 after creation.
    pub version: u64,
    /// Serialized public key whose signatures authorise reads and writes.
    pub auth_key: Vec<u8>,
    /// Serialized public key whose signatures authorise join requests; empty: no link.
    pub link_key: Vec<u8>,
    /// The group state, encrypted by the members.
    pub blob: Vec<u8>,
}

impl GroupRecord {
    fn encode(&self) -> StoreResult<Vec<u8>> {
        let auth =
            u8::try_from(self.auth_key.len()).map_err(|_| StoreError::Unencodable("groups"))?;
        let link =
            u8::try_from(self.link_key.len()).map_err(|_| StoreError::Unencodable("groups"))?;
        let mut out =
            Vec::with_capacity(8 + 2 + self.auth_key.len() + self.link_key.len() + self.blob.len());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(auth);
        out.extend_from_slice(&self.auth_key);
        out.push(link);
        out.extend_from_slice(&self.link_key);
        out.extend_from_slice(&self.blob);
        Ok(out)
    }

    fn decode(v: &[u8]) -> StoreResult<Self> {
        let corrupt = || StoreError::Corrupt("groups");
        let version = v
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(corrupt)?;
        let mut rest = &v[8..];
        let mut field = || -> StoreResult<Vec<u8>> {
            let (&len, tail) = rest.split_first().ok_or_else(corrupt)?;
            let value = tail.get(..len as usize).ok_or_else(corrupt)?;
            rest = &tail[len as usize..];
            Ok(value.to_vec())
        };
        let auth_key = field()?;
        let link_key = field()?;
        Ok(Self {
            version,
            auth_key,
            link_key,
            blob: rest.to_vec(),
        })
    }
}

/// Result of creating a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCreated {
    /// Stored (not yet flushed).
    Created,
    /// A group with that id exists; nothing changed.
    Exists,
    /// The relay holds its maximum number of groups; nothing changed.
    QuotaReached,
}

/// Result of adding a join request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRequestAdded {
    /// Stored under this id (not yet flushed).
    Added(u64),
    /// The group has its maximum number of pending requests; nothing was stored.
    QuotaReached,
}

/// Per-mailbox quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most envelopes a mailbox holds.
    pub max_envelopes: u64,
    /// Most envelope bytes a mailbox holds.
    pub max_bytes: u64,
}

/// One stored invite, as the operator sees it: never the token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InviteInfo {
    /// SHA-256 of the token (what the store keys on).
    pub token_hash: [u8; 32],
    /// Registrations it still allows.
    pub uses_left: u32,
    /// When it stops working.
    pub expires_at_ms: u64,
}

/// What [`Store::remove_account`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Removed {
    /// Device records.
    pub devices: usize,
    /// Queued envelopes.
    pub envelopes: usize,
    /// One-time prekeys (EC and Kyber).
    pub pre_keys: usize,
}

/// Invite tokens, stored only as hashes.
pub trait InviteStore {
    /// Records an invite (by the SHA-256 of its token).
    fn add_invite(&self, token_hash: [u8; 32], uses: u32, expires_at_ms: u64) -> StoreResult<()>;
    /// Uses an invite once, atomically. False when unknown, spent or expired.
    fn consume_invite(&self, token_hash: [u8; 32], now_ms: u64) -> StoreResult<bool>;
    /// Every stored invite, including spent or expired ones not yet dropped.
    fn invites(&self) -> StoreResult<Vec<InviteInfo>>;
    /// Deletes an invite. False when it did not exist.
    fn remove_invite(&self, token_hash: [u8; 32]) -> StoreResult<bool>;
}

/// Accounts and their long-lived public keys.
pub trait AccountStore {
    /// Creates or replaces a device's record.
    fn put_account(&self, key: DeviceKey, record: &AccountRecord) -> StoreResult<()>;
    /// The device's record, if it exists.
    fn account(&self, key: DeviceKey) -> StoreResult<Option<AccountRecord>>;
    /// Number of registered devices.
    fn account_count(&self) -> usize;
    /// Number of distinct accounts (a person's devices count once).
    fn distinct_accounts(&self) -> StoreResult<usize>;
    /// Device numbers registered under `account`, in order.
    fn devices_of(&self, account: Uuid) -> StoreResult<Vec<u32>>;
    /// Bans or unbans `account`. Returns false when it was already in that state.
    fn set_banned(&self, account: Uuid, banned: bool, now_ms: u64) -> StoreResult<bool>;
    /// Whether the operator banned `account`.
    fn is_banned(&self, account: Uuid) -> StoreResult<bool>;
}

/// One-time prekeys: added in batches, each handed out at most once.
pub trait PreKeyDirectory {
    /// Adds one-time EC prekeys (an existing id is overwritten).
    fn add_pre_keys(&self, key: DeviceKey, keys: &[OneTimePreKey]) -> StoreResult<()>;
    /// Adds one-time Kyber prekeys (an existing id is overwritten).
    fn add_kyber_pre_keys(&self, key: DeviceKey, keys: &[SignedPreKey]) -> StoreResult<()>;
    /// Removes and returns one EC prekey; two callers never get the same one.
    fn take_pre_key(&self, key: DeviceKey) -> StoreResult<Option<OneTimePreKey>>;
    /// Removes and returns one Kyber prekey; two callers never get the same one.
    fn take_kyber_pre_key(&self, key: DeviceKey) -> StoreResult<Option<SignedPreKey>>;
    /// Remaining (EC, Kyber) one-time prekeys.
    fn pre_key_counts(&self, key: DeviceKey) -> StoreResult<(u32, u32)>;
    /// Drops every one-time prekey of the device (identity reset).
    fn clear_pre_keys(&self, key: DeviceKey) -> StoreResult<()>;
}

/// Mailboxes of sealed envelopes, keyed by (device, seq).
pub trait MailboxStore {
    /// Stores an envelope if the mailbox has room. Call [`Store::flush`] before acknowledging.
    fn enqueue(
        &self,
        key: DeviceKey,
        received_at_ms: u64,
        envelope: &[u8],
        quota: Quota,
    ) -> StoreResult<Enqueued>;
    /// Stores `copies` (one envelope per device) all or nothing, in one
    /// transaction: if any mailbox lacks room, nothing is stored and the full
    /// mailboxes are returned. With `expires_at_ms`, each copy is also dropped
    /// by [`MailboxStore::sweep_expired`] once that time has passed.
    fn enqueue_many(
        &self,
        copies: &[(DeviceKey, &[u8])],
        received_at_ms: u64,
        expires_at_ms: Option<u64>,
        quota: Quota,
    ) -> StoreResult<EnqueuedMany>;
    /// The oldest `limit` envelopes in seq order, and whether more remain.
    /// Copies whose own expiry is at or before `now_ms` are left out (the
    /// sweep deletes them): a disappearing message is never delivered late.
    fn envelopes(
        &self,
        key: DeviceKey,
        limit: usize,
        now_ms: u64,
    ) -> StoreResult<(Vec<Envelope>, bool)>;
    /// Deletes the given envelopes of this mailbox (unknown seqs are ignored). Returns how many.
    fn ack(&self, key: DeviceKey, seqs: &[u64]) -> StoreResult<usize>;
    /// Deletes every envelope received before `cutoff_ms`, and every envelope
    /// whose own expiry (see [`MailboxStore::enqueue_many`]) is at or before
    /// `now_ms`. Returns how many.
    fn sweep_expired(&self, cutoff_ms: u64, now_ms: u64) -> StoreResult<usize>;
    /// Envelopes queued across all mailboxes.
    fn queued_count(&self) -> usize;
}

/// Groups: opaque state under a random id, and pending join requests.
///
/// Nothing here names an account: groups are authorised by their own keys.
pub trait GroupStore {
    /// The group's current record, if it exists.
    fn group(&self, group_id: &[u8]) -> StoreResult<Option<GroupRecord>>;
    /// Creates a group if no group has this id and fewer than `max_groups` exist.
    fn create_group(
        &self,
        group_id: &[u8],
        record: &GroupRecord,
        max_groups: u64,
    ) -> StoreResult<GroupCreated>;
    /// Replaces the group's record with `new` if it is still exactly
    /// `current`, atomically (compare-and-swap). False when it changed or
    /// vanished: of two writers racing from the same record, one wins.
    fn replace_group(
        &self,
        group_id: &[u8],
        current: &GroupRecord,
        new: &GroupRecord,
    ) -> StoreResult<bool>;
    /// Number of groups.
    fn group_count(&self) -> StoreResult<u64>;
    /// Stores a join request under a new, increasing id, unless the group
    /// already has `max_pending` requests.
    fn add_join_request(
        &self,
        group_id: &[u8],
        received_at_ms: u64,
        request: &[u8],
        max_pending: u64,
    ) -> StoreResult<JoinRequestAdded>;
    /// The group's pending join requests, oldest first, stopping before the
    /// encoded total would pass `max_bytes`.
    fn join_requests(&self, group_id: &[u8], max_bytes: usize) -> StoreResult<Vec<GroupRequest>>;
    /// Deletes the given join requests of this group (unknown ids are ignored). Returns how many.
    fn delete_join_requests(&self, group_id: &[u8], ids: &[u64]) -> StoreResult<usize>;
}

/// Everything the relay core needs from storage.
pub trait Store:
    InviteStore + AccountStore + PreKeyDirectory + MailboxStore + GroupStore + Send + Sync
{
    /// Makes every write so far durable (blocking).
    fn flush(&self) -> StoreResult<()>;
    /// Deletes every device record, one-time prekey, queued envelope and ban
    /// entry of `account`.
    fn remove_account(&self, account: Uuid) -> StoreResult<Removed>;
}

/// The sled-backed store.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    commit: Arc<GroupCommit>,
    invites: sled::Tree,
    accounts: sled::Tree,
    prekeys: sled::Tree,
    kyber: sled::Tree,
    mailbox: sled::Tree,
    usage: sled::Tree,
    banned: sled::Tree,
    expiry: sled::Tree,
    groups: sled::Tree,
    group_requests: sled::Tree,
    meta: sled::Tree,
    /// Added to sled's generated ids for mailbox seqs; see the module docs.
    seq_base: u64,
    /// Serialises join-request inserts so the per-group count check and the
    /// insert cannot interleave (sled transactions cannot scan a prefix).
    join_lock: Arc<Mutex<()>>,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        // sled releases its file lock from a background thread a moment after
        // the last handle in this process is dropped, so an immediate reopen
        // (offline commands, restore, tests) can find it still held. Retry
        // briefly; a lock held by another process (a running relay) still fails.
        let mut attempts = 0;
        loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => return Self::from_db(db),
                Err(e) if attempts < 20 && is_lock_busy(&e) => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A throwaway database, for tests and benchmarks.
    pub fn temporary() -> StoreResult<Self> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    pub(crate) fn from_db(db: sled::Db) -> StoreResult<Self> {
        let meta = db.open_tree("meta")?;
        migrate(&db, &meta, MIGRATIONS, SCHEMA_VERSION)?;
        let seq_base = match meta.get(SEQ_BASE_KEY)? {
            None => 0,
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("meta"))?,
            ),
        };
        Ok(Self {
            banned: db.open_tree("banned")?,
            expiry: db.open_tree("envelope_expiry")?,
            groups: db.open_tree("groups")?,
            group_requests: db.open_tree("group_requests")?,
            join_lock: Arc::new(Mutex::new(())),
            meta,
            seq_base,
            commit: Arc::new(GroupCommit::start(db.clone()).map_err(sled::Error::Io)?),
            invites: db.open_tree("invites")?,
            accounts: db.open_tree("accounts")?,
            prekeys: db.open_tree("prekeys")?,
            kyber: db.open_tree("kyber")?,
            mailbox: db.open_tree("mailbox")?,
            usage: db.open_tree("usage")?,
            db,
        })
    }

    /// Makes every write so far durable without blocking the runtime, sharing
    /// one flush with every concurrent caller (see [`crate::commit`]).
    pub async fn flush_async(&self) -> StoreResult<()> {
        self.commit
            .flush()
            .await
            .map_err(|e| StoreError::Db(sled::Error::Io(std::io::Error::other(e))))
    }

    /// The underlying database, for backups.
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The next mailbox seq this store would hand out (consumes one id).
    pub(crate) fn next_seq(&self) -> StoreResult<u64> {
        Ok(self.seq_base.saturating_add(self.db.generate_id()?))
    }

    /// Makes future mailbox seqs start above `floor` (after a restore).
    pub(crate) fn set_seq_base(&self, floor: u64) -> StoreResult<()> {
        self.meta.insert(SEQ_BASE_KEY, &floor.to_be_bytes())?;
        Ok(())
    }

    /// Makes a freshly restored database consistent: future mailbox seqs
    /// start above both `next_seq` and every restored seq, and the usage
    /// counters are recomputed from the mailboxes. Reopen the store afterwards.
    pub(crate) fn after_restore(&self, next_seq: u64) -> StoreResult<()> {
        let mut floor = next_seq;
        let mut usage: std::collections::BTreeMap<Vec<u8>, (u64, u64)> = Default::default();
        for entry in self.mailbox.iter() {
            let (k, v) = entry?;
            let device = k.get(..20).ok_or(StoreError::Corrupt("mailbox"))?;
            let seq = k
                .get(20..28)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(StoreError::Corrupt("mailbox"))?;
            floor = floor.max(seq.saturating_add(1));
            let u = usage.entry(device.to_vec()).or_default();
            u.0 += 1;
            u.1 += v.len().saturating_sub(8) as u64;
        }
        self.usage.clear()?;
        for (device, (count, bytes)) in usage {
            self.usage.insert(device, &encode_usage(count, bytes)[..])?;
        }
        // Join-request ids come from the same generator as seqs.
        for k in self.group_requests.iter().keys() {
            let k = k?;
            let id = k
                .get(GROUP_ID_LEN..GROUP_ID_LEN + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(StoreError::Corrupt("group_requests"))?;
            floor = floor.max(id.saturating_add(1));
        }
        // The trees were read at slightly different times; count the groups themselves.
        let groups = self
            .groups
            .iter()
            .keys()
            .try_fold(0u64, |n, k| k.map(|_| n + 1))?;
        self.meta.insert(GROUP_COUNT_KEY, &groups.to_be_bytes())?;
        self.set_seq_base(floor)
    }

    /// Takes the first entry under `prefix`, racing other takers with compare-and-swap.
    fn take_first(
        tree: &sled::Tree,
        prefix: &[u8],
    ) -> StoreResult<Option<(sled::IVec, sled::IVec)>> {
        loop {
            let Some(entry) = tree.scan_prefix(prefix).next() else {
                return Ok(None);
            };
            let (k, v) = entry?;
            // Only the caller whose CAS removes the key gets it, so a one-time
            // key is never handed to two peers.
            if tree.compare_and_swap(&k, Some(&v), None::<&[u8]>)?.is_ok() {
                return Ok(Some((k, v)));
            }
        }
    }

    fn device_from_key(k: &[u8]) -> StoreResult<u32> {
        k.get(16..20)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(StoreError::Corrupt("accounts"))
    }

    fn id_from_key(k: &[u8]) -> u32 {
        k.get(20..24)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0)
    }

    /// Removes one mailbox entry and its expiry entry, and updates its usage
    /// counter, atomically.
    fn remove_envelope(&self, mailbox_key: &[u8]) -> StoreResult<bool> {
        let usage_key = mailbox_key
            .get(..20)
            .ok_or(StoreError::Corrupt("mailbox"))?;
        let res = (&self.mailbox, &self.usage, &self.expiry).transaction(|(mb, us, ex)| {
            ex.remove(mailbox_key)?;
            let Some(old) = mb.remove(mailbox_key)? else {
                return Ok(false);
            };
            let bytes = old.len().saturating_sub(8) as u64;
            let (count, total) = decode_usage(us.get(usage_key)?.as_deref());
            us.insert(
                usage_key,
                &encode_usage(count.saturating_sub(1), total.saturating_sub(bytes))[..],
            )?;
            Ok(true)
        });
        res.map_err(unabortable)
    }
}

/// sled's "could not acquire lock" error (it wraps the OS's WouldBlock).
fn is_lock_busy(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn decode_usage(v: Option<&[u8]>) -> (u64, u64) {
    match v {
        Some(b) if b.len() == 16 => {
            let mut c = [0u8; 8];
            let mut t = [0u8; 8];
            c.copy_from_slice(&b[..8]);
            t.copy_from_slice(&b[8..]);
            (u64::from_be_bytes(c), u64::from_be_bytes(t))
        }
        _ => (0, 0),
    }
}

fn encode_usage(count: u64, bytes: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&count.to_be_bytes());
    out[8..].copy_from_slice(&bytes.to_be_bytes());
    out
}

fn unabortable(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(e) => StoreError::Db(e),
        // No transaction in this file aborts with `()`; treat it as corruption.
        TransactionError::Abort(()) => StoreError::Corrupt("transaction"),
    }
}

impl InviteStore for SledStore {
    fn add_invite(&self, token_hash: [u8; 32], uses: u32, expires_at_ms: u64) -> StoreResult<()> {
        let mut v = Vec::with_capacity(12);
        v.extend_from_slice(&uses.to_be_bytes());
        v.extend_from_slice(&expires_at_ms.to_be_bytes());
        self.invites.insert(token_hash, v)?;
        Ok(())
    }

    fn consume_invite(&self, token_hash: [u8; 32], now_ms: u64) -> StoreResult<bool> {
        loop {
            let Some(old) = self.invites.get(token_hash)? else {
                return Ok(false);
            };
            if old.len() != 12 {
                return Err(StoreError::Corrupt("invites"));
            }
            let uses = u32::from_be_bytes([old[0], old[1], old[2], old[3]]);
            let mut exp = [0u8; 8];
            exp.copy_from_slice(&old[4..]);
            let expires = u64::from_be_bytes(exp);
            if expires <= now_ms || uses == 0 {
                // Spent or expired tokens are dropped so the tree does not grow forever.
                self.invites.remove(token_hash)?;
                return Ok(false);
            }
            let new = if uses == 1 {
                None
            } else {
                let mut v = old.to_vec();
                v[..4].copy_from_slice(&(uses - 1).to_be_bytes());
                Some(v)
            };
            // Compare-and-swap so two registrations racing on a one-use token
            // cannot both succeed.
            if self
                .invites
                .compare_and_swap(token_hash, Some(&old), new)?
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    fn invites(&self) -> StoreResult<Vec<InviteInfo>> {
        let mut out = Vec::new();
        for entry in self.invites.iter() {
            let (k, v) = entry?;
            let token_hash: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("invites"))?;
            if v.len() != 12 {
                return Err(StoreError::Corrupt("invites"));
            }
            let mut exp = [0u8; 8];
            exp.copy_from_slice(&v[4..]);
            out.push(InviteInfo {
                token_hash,
                uses_left: u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                expires_at_ms: u64::from_be_bytes(exp),
            });
        }
        Ok(out)
    }

    fn remove_invite(&self, token_hash: [u8; 32]) -> StoreResult<bool> {
        Ok(self.invites.remove(token_hash)?.is_some())
    }
}

impl AccountStore for SledStore {
    fn put_account(&self, key: DeviceKey, record: &AccountRecord) -> StoreResult<()> {
        self.accounts.insert(key.bytes(), record.encode_to_vec())?;
        Ok(())
    }

    fn account(&self, key: DeviceKey) -> StoreResult<Option<AccountRecord>> {
        match self.accounts.get(key.bytes())? {
            None => Ok(None),
            Some(v) => AccountRecord::decode(v.as_ref())
                .map(Some)
                .map_err(|_| StoreError::Corrupt("accounts")),
        }
    }

    fn account_count(&self) -> usize {
        self.accounts.len()
    }

    fn distinct_accounts(&self) -> StoreResult<usize> {
        // Keys are account ++ device in order, so one account's devices are adjacent.
        let mut n = 0;
        let mut last: Option<sled::IVec> = None;
        for k in self.accounts.iter().keys() {
            let k = k?;
            let account = k.get(..16).ok_or(StoreError::Corrupt("accounts"))?;
            if last.as_deref() != Some(account) {
                n += 1;
                last = Some(account.into());
            }
        }
        Ok(n)
    }

    fn devices_of(&self, account: Uuid) -> StoreResult<Vec<u32>> {
        let mut out = Vec::new();
        for k in self.accounts.scan_prefix(account.as_bytes()).keys() {
            out.push(Self::device_from_key(&k?)?);
        }
        Ok(out)
    }

    fn set_banned(&self, account: Uuid, banned: bool, now_ms: u64) -> StoreResult<bool> {
        let old = if banned {
            self.banned
                .compare_and_swap(
                    account.as_bytes(),
                    None::<&[u8]>,
                    Some(&now_ms.to_be_bytes()),
                )?
                .is_ok()
        } else {
            self.banned.remove(account.as_bytes())?.is_some()
        };
        Ok(old)
    }

    fn is_banned(&self, account: Uuid) -> StoreResult<bool> {
        Ok(self.banned.contains_key(account.as_bytes())?)
    }
}

impl PreKeyDirectory for SledStore {
    fn add_pre_keys(&self, key: DeviceKey, keys: &[OneTimePreKey]) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.insert(
                key.with_suffix(&k.id.to_be_bytes()),
                k.public_key.as_slice(),
            );
        }
        self.prekeys.apply_batch(batch)?;
        Ok(())
    }

    fn add_kyber_pre_keys(&self, key: DeviceKey, keys: &[SignedPreKey]) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.insert(key.with_suffix(&k.id.to_be_bytes()), k.encode_to_vec());
        }
        self.kyber.apply_batch(batch)?;
        Ok(())
    }

    fn take_pre_key(&self, key: DeviceKey) -> StoreResult<Option<OneTimePreKey>> {
        Ok(
            Self::take_first(&self.prekeys, &key.bytes())?.map(|(k, v)| OneTimePreKey {
                id: Self::id_from_key(&k),
                public_key: v.to_vec(),
            }),
        )
    }

    fn take_kyber_pre_key(&self, key: DeviceKey) -> StoreResult<Option<SignedPreKey>> {
        match Self::take_first(&self.kyber, &key.bytes())? {
            None => Ok(None),
            Some((_, v)) => SignedPreKey::decode(v.as_ref())
                .map(Some)
                .map_err(|_| StoreError::Corrupt("kyber")),
        }
    }

    fn pre_key_counts(&self, key: DeviceKey) -> StoreResult<(u32, u32)> {
        let count = |tree: &sled::Tree| -> StoreResult<u32> {
            let mut n = 0u32;
            for k in tree.scan_prefix(key.bytes()).keys() {
                k?;
                n = n.saturating_add(1);
            }
            Ok(n)
        };
        Ok((count(&self.prekeys)?, count(&self.kyber)?))
    }

    fn clear_pre_keys(&self, key: DeviceKey) -> StoreResult<()> {
        for tree in [&self.prekeys, &self.kyber] {
            let mut batch = sled::Batch::default();
            for k in tree.scan_prefix(key.bytes()).keys() {
                batch.remove(k?);
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }
}

impl MailboxStore for SledStore {
    fn enqueue(
        &self,
        key: DeviceKey,
        received_at_ms: u64,
        envelope: &[u8],
        quota: Quota,
    ) -> StoreResult<Enqueued> {
        // sled ids are monotonic across restarts, so seqs only ever grow per mailbox.
        let seq = self.seq_base.saturating_add(self.db.generate_id()?);
        let mb_key = key.with_suffix(&seq.to_be_bytes());
        let usage_key = key.bytes();
        let mut value = Vec::with_capacity(8 + envelope.len());
        value.extend_from_slice(&received_at_ms.to_be_bytes());
        value.extend_from_slice(envelope);
        let len = envelope.len() as u64;
        let res = (&self.mailbox, &self.usage).transaction(|(mb, us)| {
            let (count, total) = decode_usage(us.get(usage_key)?.as_deref());
            if count.saturating_add(1) > quota.max_envelopes
                || total.saturating_add(len) > quota.max_bytes
            {
                return Err(ConflictableTransactionError::Abort(()));
            }
            mb.insert(mb_key.as_slice(), value.as_slice())?;
            us.insert(&usage_key[..], &encode_usage(count + 1, total + len)[..])?;
            Ok(())
        });
        match res {
            Ok(()) => Ok(Enqueued::Stored(seq)),
            Err(TransactionError::Abort(())) => Ok(Enqueued::MailboxFull),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn enqueue_many(
        &self,
        copies: &[(DeviceKey, &[u8])],
        received_at_ms: u64,
        expires_at_ms: Option<u64>,
        quota: Quota,
    ) -> StoreResult<EnqueuedMany> {
        let mut seqs = Vec::with_capacity(copies.len());
        let mut entries = Vec::with_capacity(copies.len());
        for (key, envelope) in copies {
            let seq = self.seq_base.saturating_add(self.db.generate_id()?);
            let mut value = Vec::with_capacity(8 + envelope.len());
            value.extend_from_slice(&received_at_ms.to_be_bytes());
            value.extend_from_slice(envelope);
            seqs.push(seq);
            entries.push((*key, key.with_suffix(&seq.to_be_bytes()), value));
        }
        let res = (&self.mailbox, &self.usage, &self.expiry).transaction(|(mb, us, ex)| {
            // Usage as it will be after this transaction, per device, so two
            // copies for one mailbox are both counted against its quota.
            let mut usage: HashMap<[u8; 20], (u64, u64)> = HashMap::new();
            let mut full = Vec::new();
            for (key, mb_key, value) in &entries {
                let usage_key = key.bytes();
                let (count, total) = match usage.get(&usage_key) {
                    Some(u) => *u,
                    None => decode_usage(us.get(usage_key)?.as_deref()),
                };
                let len = value.len().saturating_sub(8) as u64;
                if count.saturating_add(1) > quota.max_envelopes
                    || total.saturating_add(len) > quota.max_bytes
                {
                    if !full.contains(key) {
                        full.push(*key);
                    }
                    continue;
                }
                usage.insert(usage_key, (count + 1, total + len));
                mb.insert(mb_key.as_slice(), value.as_slice())?;
                if let Some(expires) = expires_at_ms {
                    ex.insert(mb_key.as_slice(), &expires.to_be_bytes())?;
                }
            }
            if !full.is_empty() {
                // All or nothing: aborting discards the inserts above.
                return Err(ConflictableTransactionError::Abort(full));
            }
            for (usage_key, (count, total)) in &usage {
                us.insert(&usage_key[..], &encode_usage(*count, *total)[..])?;
            }
            Ok(())
        });
        match res {
            Ok(()) => Ok(EnqueuedMany::Stored(seqs)),
            Err(TransactionError::Abort(full)) => Ok(EnqueuedMany::MailboxFull(full)),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn envelopes(
        &self,
        key: DeviceKey,
        limit: usize,
        now_ms: u64,
    ) -> StoreResult<(Vec<Envelope>, bool)> {
        let mut out = Vec::new();
        let any_expiry = !self.expiry.is_empty();
        for entry in self.mailbox.scan_prefix(key.bytes()) {
            let (k, v) = entry?;
            if any_expiry
                && let Some(at) = self.expiry.get(&k)?
                && at
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .is_ok_and(|at| at <= now_ms)
            {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let seq = k
                .get(20..28)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(StoreError::Corrupt("mailbox"))?;
            let received = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(StoreError::Corrupt("mailbox"))?;
            out.push(Envelope {
                seq,
                received_at_ms: received,
                envelope: v[8..].to_vec(),
            });
        }
        Ok((out, false))
    }

    fn ack(&self, key: DeviceKey, seqs: &[u64]) -> StoreResult<usize> {
        let mut n = 0;
        for seq in seqs {
            // The key includes the caller's device, so nobody can delete
            // envelopes from someone else's mailbox.
            if self.remove_envelope(&key.with_suffix(&seq.to_be_bytes()))? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn sweep_expired(&self, cutoff_ms: u64, now_ms: u64) -> StoreResult<usize> {
        // A set, so an envelope both too old and past its own expiry counts once.
        let mut expired = BTreeSet::new();
        for entry in self.mailbox.iter() {
            let (k, v) = entry?;
            let received = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if received < cutoff_ms {
                expired.insert(k);
            }
        }
        for entry in self.expiry.iter() {
            let (k, v) = entry?;
            let expires = v
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("envelope_expiry"))?;
            // Entries whose envelope is already gone are dropped here too
            // (remove_envelope clears the expiry entry either way).
            if expires <= now_ms {
                expired.insert(k);
            }
        }
        let mut n = 0;
        for k in expired {
            if self.remove_envelope(&k)? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn queued_count(&self) -> usize {
        self.mailbox.len()
    }
}

impl GroupStore for SledStore {
    fn group(&self, group_id: &[u8]) -> StoreResult<Option<GroupRecord>> {
        match self.groups.get(group_id)? {
            None => Ok(None),
            Some(v) => GroupRecord::decode(&v).map(Some),
        }
    }

    fn create_group(
        &self,
        group_id: &[u8],
        record: &GroupRecord,
        max_groups: u64,
    ) -> StoreResult<GroupCreated> {
        let value = record.encode()?;
        // One transaction over the group and the counter: the id check, the
        // quota check and both writes happen together or not at all.
        let res = (&self.groups, &self.meta).transaction(|(groups, meta)| {
            if groups.get(group_id)?.is_some() {
                return Err(ConflictableTransactionError::Abort(GroupCreated::Exists));
            }
            let count = meta
                .get(GROUP_COUNT_KEY)?
                .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0);
            if count >= max_groups {
                return Err(ConflictableTransactionError::Abort(
                    GroupCreated::QuotaReached,
                ));
            }
            groups.insert(group_id, value.as_slice())?;
            meta.insert(GROUP_COUNT_KEY, &(count + 1).to_be_bytes())?;
            Ok(())
        });
        match res {
            Ok(()) => Ok(GroupCreated::Created),
            Err(TransactionError::Abort(why)) => Ok(why),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn replace_group(
        &self,
        group_id: &[u8],
        current: &GroupRecord,
        new: &GroupRecord,
    ) -> StoreResult<bool> {
        // Compare-and-swap on the whole record the caller checked (its auth
        // key and version): a write signed for one state can never land on
        // another, and two writers from the same state cannot both win.
        Ok(self
            .groups
            .compare_and_swap(group_id, Some(current.encode()?), Some(new.encode()?))?
            .is_ok())
    }

    fn group_count(&self) -> StoreResult<u64> {
        match self.meta.get(GROUP_COUNT_KEY)? {
            None => Ok(0),
            Some(v) => v
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("meta")),
        }
    }

    fn add_join_request(
        &self,
        group_id: &[u8],
        received_at_ms: u64,
        request: &[u8],
        max_pending: u64,
    ) -> StoreResult<JoinRequestAdded> {
        let _guard = self.join_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut pending = 0u64;
        for k in self.group_requests.scan_prefix(group_id).keys() {
            k?;
            pending += 1;
        }
        if pending >= max_pending {
            return Ok(JoinRequestAdded::QuotaReached);
        }
        // Same generator as mailbox seqs: increasing, also across a restore.
        let id = self.next_seq()?;
        let mut key = group_id.to_vec();
        key.extend_from_slice(&id.to_be_bytes());
        let mut value = Vec::with_capacity(8 + request.len());
        value.extend_from_slice(&received_at_ms.to_be_bytes());
        value.extend_from_slice(request);
        self.group_requests.insert(key, value)?;
        Ok(JoinRequestAdded::Added(id))
    }

    fn join_requests(&self, group_id: &[u8], max_bytes: usize) -> StoreResult<Vec<GroupRequest>> {
        let corrupt = || StoreError::Corrupt("group_requests");
        let mut out = Vec::new();
        let mut total = 0usize;
        for entry in self.group_requests.scan_prefix(group_id) {
            let (k, v) = entry?;
            let id = k
                .get(group_id.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(corrupt)?;
            let received_at_ms = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(corrupt)?;
            // Generous per-entry framing overhead (tags, lengths, two varints).
            total = total.saturating_add(v.len() + 32);
            if total > max_bytes {
                break;
            }
            out.push(GroupRequest {
                id,
                received_at_ms,
                request: v[8..].to_vec(),
            });
        }
        Ok(out)
    }

    fn delete_join_requests(&self, group_id: &[u8], ids: &[u64]) -> StoreResult<usize> {
        let mut n = 0;
        for id in ids {
            // The key starts with the group id, so a request signed for one
            // group cannot delete another group's requests.
            let mut key = group_id.to_vec();
            key.extend_from_slice(&id.to_be_bytes());
            if self.group_requests.remove(key)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Store for SledStore {
    fn flush(&self) -> StoreResult<()> {
        self.db.flush()?;
        Ok(())
    }

    fn remove_account(&self, account: Uuid) -> StoreResult<Removed> {
        let mut removed = Removed::default();
        for device in self.devices_of(account)? {
            let key = DeviceKey { account, device };
            let mut envelopes = Vec::new();
            for k in self.mailbox.scan_prefix(key.bytes()).keys() {
                envelopes.push(k?);
            }
            for k in envelopes {
                if self.remove_envelope(&k)? {
                    removed.envelopes += 1;
                }
            }
            let (ec, kyber) = self.pre_key_counts(key)?;
            removed.pre_keys += ec as usize + kyber as usize;
            self.clear_pre_keys(key)?;
            self.usage.remove(key.bytes())?;
            // The record goes last: until then the account still exists, so a
            // crash half-way leaves something `remove` can be run on again.
            if self.accounts.remove(key.bytes())?.is_some() {
                removed.devices += 1;
            }
        }
        self.banned.remove(account.as_bytes())?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(n: u8) -> DeviceKey {
        DeviceKey {
            account: Uuid::from_bytes([n; 16]),
            device: 1,
        }
    }

    const BIG: Quota = Quota {
        max_envelopes: 1000,
        max_bytes: 1 << 20,
    };

    #[test]
    fn invite_uses_are_counted_and_expire() {
        let s = SledStore::temporary().expect("db");
        s.add_invite([1; 32], 2, 1000).expect("add");
        assert!(s.consume_invite([1; 32], 10).expect("use"));
        assert!(s.consume_invite([1; 32], 10).expect("use"));
        assert!(!s.consume_invite([1; 32], 10).expect("spent"));
        s.add_invite([2; 32], 5, 1000).expect("add");
        assert!(!s.consume_invite([2; 32], 1000).expect("expired"));
        assert!(!s.consume_invite([3; 32], 0).expect("unknown"));
    }

    #[test]
    fn mailbox_keeps_usage_in_step() {
        let s = SledStore::temporary().expect("db");
        let a = dev(1);
        let Enqueued::Stored(s1) = s.enqueue(a, 5, b"abc", BIG).expect("enqueue") else {
            panic!("room in mailbox");
        };
        let Enqueued::Stored(s2) = s.enqueue(a, 6, b"defg", BIG).expect("enqueue") else {
            panic!("room in mailbox");
        };
        assert!(s2 > s1);
        assert_eq!(
            decode_usage(s.usage.get(a.bytes()).expect("get").as_deref()),
            (2, 7)
        );
        assert_eq!(s.ack(a, &[s1, s1, 999]).expect("ack"), 1);
        assert_eq!(
            decode_usage(s.usage.get(a.bytes()).expect("get").as_deref()),
            (1, 4)
        );
        let (left, more) = s.envelopes(a, 10, 0).expect("fetch");
        assert!(!more);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].envelope, b"defg");
        assert_eq!(left[0].received_at_ms, 6);
    }

    #[test]
    fn bans_and_removal_touch_only_the_named_account() {
        let s = SledStore::temporary().expect("db");
        let (a, b) = (dev(1), dev(2));
        let a2 = DeviceKey { device: 2, ..a };
        for k in [a, a2, b] {
            s.put_account(k, &AccountRecord::default()).expect("put");
            s.add_pre_keys(
                k,
                &[OneTimePreKey {
                    id: 1,
                    public_key: vec![1],
                }],
            )
            .expect("prekeys");
            s.enqueue(k, 1, b"x", BIG).expect("enqueue");
        }
        assert_eq!(s.distinct_accounts().expect("count"), 2);
        assert_eq!(s.account_count(), 3);
        assert_eq!(s.devices_of(a.account).expect("devices"), vec![1, 2]);
        assert!(s.set_banned(a.account, true, 5).expect("ban"));
        assert!(!s.set_banned(a.account, true, 6).expect("already banned"));
        assert!(s.is_banned(a.account).expect("banned"));
        assert!(!s.is_banned(b.account).expect("not banned"));
        let removed = s.remove_account(a.account).expect("remove");
        assert_eq!(
            removed,
            Removed {
                devices: 2,
                envelopes: 2,
                pre_keys: 2
            }
        );
        assert!(!s.is_banned(a.account).expect("ban entry gone"));
        assert_eq!(s.distinct_accounts().expect("count"), 1);
        assert_eq!(s.queued_count(), 1);
        assert!(s.usage.get(a.bytes()).expect("usage").is_none());
        assert_eq!(s.pre_key_counts(b).expect("counts"), (1, 0));
        assert_eq!(s.envelopes(b, 10, 0).expect("mail").0.len(), 1);
    }

    #[test]
    fn invites_can_be_listed_and_removed() {
        let s = SledStore::temporary().expect("db");
        s.add_invite([1; 32], 2, 1000).expect("add");
        s.add_invite([2; 32], 1, 2000).expect("add");
        let all = s.invites().expect("list");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].token_hash, [1; 32]);
        assert_eq!((all[0].uses_left, all[0].expires_at_ms), (2, 1000));
        assert!(s.remove_invite([1; 32]).expect("remove"));
        assert!(!s.remove_invite([1; 32]).expect("gone"));
        assert!(!s.consume_invite([1; 32], 0).expect("revoked"));
        assert!(s.consume_invite([2; 32], 0).expect("other still works"));
    }

    fn group(version: u64, blob: &[u8]) -> GroupRecord {
        GroupRecord {
            version,
            auth_key: vec![5; 33],
            link_key: vec![],
            blob: blob.to_vec(),
        }
    }

    #[test]
    fn group_records_round_trip_and_truncation_is_corrupt() {
        let r = GroupRecord {
            version: 7,
            auth_key: vec![1; 33],
            link_key: vec![2; 33],
            blob: b"opaque".to_vec(),
        };
        let bytes = r.encode().expect("encode");
        assert_eq!(GroupRecord::decode(&bytes).expect("decode"), r);
        assert_eq!(
            GroupRecord::decode(&group(1, b"").encode().expect("encode")).expect("decode"),
            group(1, b"")
        );
        for cut in [0, 7, 8, 20, 42] {
            assert!(matches!(
                GroupRecord::decode(&bytes[..cut]),
                Err(StoreError::Corrupt("groups"))
            ));
        }
        let long = GroupRecord {
            auth_key: vec![1; 256],
            ..r
        };
        assert!(matches!(long.encode(), Err(StoreError::Unencodable(_))));
    }

    #[test]
    fn groups_are_counted_and_replaced_only_from_the_current_record() {
        let s = SledStore::temporary().expect("db");
        let id = [4u8; GROUP_ID_LEN];
        assert_eq!(
            s.create_group(&id, &group(1, b"a"), 2).expect("create"),
            GroupCreated::Created
        );
        assert_eq!(
            s.create_group(&id, &group(1, b"b"), 2).expect("create"),
            GroupCreated::Exists
        );
        assert_eq!(
            s.create_group(&[5; 16], &group(1, b"c"), 2)
                .expect("create"),
            GroupCreated::Created
        );
        assert_eq!(
            s.create_group(&[6; 16], &group(1, b"d"), 2)
                .expect("create"),
            GroupCreated::QuotaReached
        );
        assert_eq!(s.group_count().expect("count"), 2);
        assert!(
            !s.replace_group(&id, &group(1, b"not current"), &group(2, b"x"))
                .expect("replace")
        );
        assert!(
            s.replace_group(&id, &group(1, b"a"), &group(2, b"x"))
                .expect("replace")
        );
        assert_eq!(s.group(&id).expect("get"), Some(group(2, b"x")));
        assert!(
            !s.replace_group(&[9; 16], &group(1, b"a"), &group(2, b"x"))
                .expect("unknown")
        );
        assert_eq!(s.group_count().expect("count"), 2);
    }

    #[test]
    fn concurrent_group_replacements_have_one_winner() {
        let s = SledStore::temporary().expect("db");
        let id = [4u8; GROUP_ID_LEN];
        s.create_group(&id, &group(1, b"v1"), 10).expect("create");
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let wins: usize = (0..8u8)
            .map(|i| {
                let s = s.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    s.replace_group(&id, &group(1, b"v1"), &group(2, &[i]))
                        .expect("replace")
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| usize::from(h.join().expect("thread")))
            .sum();
        assert_eq!(wins, 1);
        assert_eq!(s.group(&id).expect("get").map(|g| g.version), Some(2));
    }

    #[test]
    fn join_requests_are_capped_ordered_and_deleted_per_group() {
        let s = SledStore::temporary().expect("db");
        let (g, h) = ([1u8; 16], [2u8; 16]);
        let mut ids = Vec::new();
        for (i, body) in [b"one".as_slice(), b"two", b"three"].iter().enumerate() {
            match s.add_join_request(&g, i as u64, body, 3).expect("add") {
                JoinRequestAdded::Added(id) => ids.push(id),
                JoinRequestAdded::QuotaReached => panic!("room for three"),
            }
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            s.add_join_request(&g, 9, b"four", 3).expect("add"),
            JoinRequestAdded::QuotaReached
        );
        assert!(matches!(
            s.add_join_request(&h, 9, b"other", 3).expect("add"),
            JoinRequestAdded::Added(_)
        ));
        let all = s.join_requests(&g, 1 << 20).expect("list");
        assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
        assert_eq!(all[1].received_at_ms, 1);
        assert_eq!(all[2].request, b"three");
        // The byte budget stops the list early, oldest first.
        assert_eq!(s.join_requests(&g, 90).expect("list").len(), 2);
        // Another group's ids do not delete anything here, and vice versa.
        let other = s.join_requests(&h, 1 << 20).expect("list")[0].id;
        assert_eq!(
            s.delete_join_requests(&g, &[other, ids[0], 12345])
                .expect("delete"),
            1
        );
        assert_eq!(s.join_requests(&h, 1 << 20).expect("list").len(), 1);
        assert_eq!(s.join_requests(&g, 1 << 20).expect("list").len(), 2);
    }

    #[test]
    fn enqueue_many_is_all_or_nothing() {
        let s = SledStore::temporary().expect("db");
        let (a, b) = (dev(1), dev(2));
        let tight = Quota {
            max_envelopes: 2,
            max_bytes: 1 << 20,
        };
        s.enqueue(b, 1, b"x", tight).expect("enqueue");
        let EnqueuedMany::Stored(seqs) = s
            .enqueue_many(&[(a, b"m1"), (b, b"m1")], 5, None, tight)
            .expect("enqueue")
        else {
            panic!("room in both");
        };
        assert_eq!(seqs.len(), 2);
        assert_eq!(
            s.enqueue_many(&[(a, b"m2"), (b, b"m2")], 6, None, tight)
                .expect("enqueue"),
            EnqueuedMany::MailboxFull(vec![b])
        );
        assert_eq!(s.envelopes(a, 10, 0).expect("mail").0.len(), 1);
        assert_eq!(
            decode_usage(s.usage.get(a.bytes()).expect("get").as_deref()),
            (1, 2)
        );
        // Two copies for one mailbox both count against its quota.
        assert_eq!(
            s.enqueue_many(&[(a, b"m3"), (a, b"m4")], 6, None, tight)
                .expect("enqueue"),
            EnqueuedMany::MailboxFull(vec![a])
        );
        assert_eq!(s.queued_count(), 3);
    }

    #[test]
    fn envelope_expiry_is_swept_and_cleared_with_its_envelope() {
        let s = SledStore::temporary().expect("db");
        let (a, b) = (dev(1), dev(2));
        s.put_account(b, &AccountRecord::default()).expect("put");
        let EnqueuedMany::Stored(seqs) = s
            .enqueue_many(&[(a, b"e1"), (b, b"e1")], 100, Some(1000), BIG)
            .expect("enqueue")
        else {
            panic!("room");
        };
        s.enqueue_many(&[(a, b"e2")], 100, Some(2000), BIG)
            .expect("enqueue");
        s.enqueue(a, 100, b"plain", BIG).expect("enqueue");
        assert_eq!(s.expiry.len(), 3);
        // Acknowledging removes the expiry entry with the envelope.
        assert_eq!(s.ack(a, &[seqs[0]]).expect("ack"), 1);
        assert_eq!(s.expiry.len(), 2);
        // Not yet expired, and the global cutoff is older than everything.
        assert_eq!(s.sweep_expired(50, 999).expect("sweep"), 0);
        assert_eq!(s.sweep_expired(50, 1000).expect("sweep"), 1);
        assert!(s.envelopes(b, 10, 0).expect("mail").0.is_empty());
        assert_eq!(s.expiry.len(), 1);
        // Removing an account removes its expiry entries.
        let a_rec = AccountRecord::default();
        s.put_account(a, &a_rec).expect("put");
        assert_eq!(s.remove_account(a.account).expect("remove").envelopes, 2);
        assert_eq!(s.expiry.len(), 0);
        // The global cutoff and a copy's own expiry count an envelope once.
        let EnqueuedMany::Stored(_) = s
            .enqueue_many(&[(b, b"e3")], 100, Some(1000), BIG)
            .expect("enqueue")
        else {
            panic!("room");
        };
        assert_eq!(s.sweep_expired(200, 5000).expect("sweep"), 1);
        assert_eq!((s.queued_count(), s.expiry.len()), (0, 0));
    }

    #[test]
    fn older_schemas_are_migrated_step_by_step_and_once() {
        fn add_marker(db: &sled::Db) -> StoreResult<()> {
            db.open_tree("migrated")?.insert(b"v2", b"done")?;
            Ok(())
        }
        fn count_runs(db: &sled::Db) -> StoreResult<()> {
            let t = db.open_tree("migrated")?;
            let n = t.get(b"runs")?.map_or(0, |v| v[0]);
            t.insert(b"runs", &[n + 1])?;
            Ok(())
        }
        let steps = [
            Migration {
                from: 1,
                what: "test step 1",
                run: add_marker,
            },
            Migration {
                from: 2,
                what: "test step 2",
                run: count_runs,
            },
        ];
        let db = sled::Config::new().temporary(true).open().expect("db");
        let meta = db.open_tree("meta").expect("meta");
        migrate(&db, &meta, &[], 1).expect("stamp v1");
        migrate(&db, &meta, &steps, 3).expect("1 -> 3");
        let version = |m: &sled::Tree| {
            u32::from_be_bytes(
                m.get(SCHEMA_KEY)
                    .expect("get")
                    .expect("set")
                    .as_ref()
                    .try_into()
                    .expect("4 bytes"),
            )
        };
        assert_eq!(version(&meta), 3);
        let t = db.open_tree("migrated").expect("tree");
        assert_eq!(t.get(b"v2").expect("get").as_deref(), Some(&b"done"[..]));
        // Opening again at the same version runs nothing.
        migrate(&db, &meta, &steps, 3).expect("again");
        assert_eq!(t.get(b"runs").expect("get").as_deref(), Some(&[1u8][..]));
        // This build (version 3) is now "old" for a relay that knows only 2.
        assert!(matches!(
            migrate(&db, &meta, &steps[..1], 2),
            Err(StoreError::SchemaTooNew {
                found: 3,
                supported: 2
            })
        ));
        // A gap in the steps is refused rather than skipped.
        let fresh = sled::Config::new().temporary(true).open().expect("db");
        let m = fresh.open_tree("meta").expect("meta");
        migrate(&fresh, &m, &[], 1).expect("stamp");
        assert!(migrate(&fresh, &m, &steps[1..], 3).is_err());
        assert_eq!(version(&m), 1, "nothing half-done");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = SledStore::open(dir.path()).expect("open");
            s.db.open_tree("meta")
                .expect("meta")
                .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
                .expect("write");
            s.db.flush().expect("flush");
        }
        assert!(matches!(
            SledStore::open(dir.path()),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }
}
