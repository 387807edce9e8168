//! The client's encrypted store: one sled database per profile.
//!
//! It holds libsignal's state (identities, sessions, prekeys, sender keys; the
//! trait impls live in `signal.rs`), the account record, contacts, messages
//! and the outbox.
//!
//! **Invariant: nothing user-related is on disk in the clear.** Every value is
//! sealed with XChaCha20-Poly1305 under a key derived by Argon2id from the
//! passphrase, with the tree name and stored key as associated data. Sled keys
//! are HMAC-SHA256 of the logical key, so contact names, account ids and
//! message ids do not appear in the files either; the logical key travels
//! inside the sealed value so scans can decode it. The only plaintext is the
//! `meta` tree: format version, salt, Argon2 parameters and a verifier (a known
//! constant sealed under the key) that tells a wrong passphrase from corruption.
//!
//! It is **not** shared between processes: sled holds an exclusive file lock,
//! reported as [`StoreError::Locked`]. Within a process, [`Store`] is a cheap
//! handle (`Clone`) and read-modify-write operations are serialised by a mutex.
//!
//! Scans (`contacts`, `messages_with`, `outbox`) decrypt the whole tree: we
//! accept O(n) reads rather than leak which entries belong together through a
//! clear key prefix.

mod crypto;
mod signal;

pub use signal::AsIdentity;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use libsignal_protocol::{IdentityKey, KyberPreKeyId, ProtocolAddress};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use uuid::Uuid;
use zeroize::Zeroizing;

use crypto::{KdfParams, Keys};

/// The store's result type.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Everything that can go wrong with the store. `Display` never contains
/// secrets, names or message text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The passphrase does not decrypt this profile's verifier.
    #[error("wrong passphrase for this profile")]
    WrongPassphrase,
    /// `open` found no store in the directory.
    #[error("no Sotto profile at {}: run `sotto init --invite LINK --name NAME` first", .0.display())]
    NoProfile(PathBuf),
    /// `create` found a store already there.
    #[error("a Sotto profile already exists at {}", .0.display())]
    AlreadyExists(PathBuf),
    /// The profile's erase key was destroyed (`sotto panic`).
    #[error("this profile was erased with `sotto panic`; nothing in it can be read any more")]
    Erased,
    /// Another process (or another handle in this one) holds sled's lock.
    #[error("this profile is in use by another sotto command (is `sotto listen` running?)")]
    Locked,
    /// A value failed authentication or did not decode, or a required record
    /// is missing. The text names the tree, never the content.
    #[error("the profile store is corrupt: {0}")]
    Corrupt(String),
    /// A caller passed an argument the store cannot honour.
    #[error("invalid store argument: {0}")]
    InvalidArgument(&'static str),
    /// sled failed.
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    /// The filesystem failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Which id sequence [`Store::next_ids`] reserves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// One-time EC prekeys.
    PreKey,
    /// Kyber prekeys (one-time and last resort share one sequence).
    KyberPreKey,
    /// Signed EC prekeys.
    SignedPreKey,
}

/// What we know about a remote account's identity key (trust on first use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityStatus {
    /// The key the user trusts: the first one seen, or the one last confirmed
    /// with [`Store::trust_identity`].
    pub trusted: Option<IdentityKey>,
    /// The key most recently seen from this account.
    pub current: IdentityKey,
    /// The key whose safety number `contact verify` last showed, if any.
    pub shown: Option<IdentityKey>,
}

impl IdentityStatus {
    /// True if the key we last saw is not the one we trust.
    pub fn changed(&self) -> bool {
        self.trusted != Some(self.current)
    }
}

/// This profile's account on its relay.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Relay address (host:port).
    pub relay: String,
    /// SHA-256 of the relay certificate's SPKI, from the invite.
    pub spki_pin: [u8; 32],
    /// Serialized sealed-sender trust-root public key, from the invite.
    pub trust_root: Vec<u8>,
    /// Our account id.
    #[serde(with = "uuid_bytes")]
    pub account_id: Uuid,
    /// Our device id.
    pub device_id: u32,
    /// Our display name.
    pub name: String,
    /// `IdentityKeyPair::serialize` (secret).
    pub identity_key_pair: Vec<u8>,
    /// libsignal registration id.
    pub registration_id: u32,
    /// Cached sender certificate and its expiry (ms since the epoch).
    pub sender_certificate: Option<(Vec<u8>, u64)>,
    /// Optional transport hint from the invite.
    pub transport_hint: Option<String>,
    /// When the signed prekey and Kyber last-resort key were last replaced
    /// (ms since the epoch; 0 for profiles made before rotation existed).
    #[serde(default)]
    pub keys_rotated_at_ms: u64,
    /// A decoy profile (opened by the duress passphrase) whose opening
    /// crypto-erases the real profile it stands in for.
    #[serde(default)]
    pub duress_erases_real: bool,
    /// The real profile's knowledge that its second store slot holds a
    /// decoy (a duress passphrase is set) rather than a filler; nothing on
    /// disk outside this encrypted record says which.
    #[serde(default)]
    pub duress_decoy_set: bool,
    /// Identity keys replaced by `identity reset`, newest last, kept for a
    /// while so that messages sealed to them before peers learned the new
    /// key still open (see `Engine::reset_identity`).
    #[serde(default)]
    pub retired_identities: Vec<IdentityRecord>,
    /// A new identity key sent to the relay by `identity reset` whose answer
    /// was not seen: the next connection finds out which key the relay holds
    /// and finishes or undoes the reset.
    #[serde(default)]
    pub pending_identity: Option<IdentityRecord>,
}

/// One identity key of ours with its registration id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// `IdentityKeyPair::serialize` (secret).
    pub identity_key_pair: Vec<u8>,
    /// The registration id that went with it.
    pub registration_id: u32,
    /// When it was retired (or, for a pending one, made), ms since the epoch.
    pub at_ms: u64,
}

impl fmt::Debug for IdentityRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityRecord")
            .field("identity_key_pair", &"<redacted>")
            .field("at_ms", &self.at_ms)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AccountRecord {
    // Redacts the private key and the name so a stray `{:?}` leaks nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountRecord")
            .field("relay", &self.relay)
            .field("account_id", &self.account_id)
            .field("device_id", &self.device_id)
            .field("name", &"<redacted>")
            .field("identity_key_pair", &"<redacted>")
            .field("registration_id", &self.registration_id)
            .field(
                "sender_certificate_expires",
                &self.sender_certificate.as_ref().map(|(_, e)| *e),
            )
            .finish_non_exhaustive()
    }
}

/// A contact, keyed by its (exact) local name.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Local name the user chose.
    pub name: String,
    /// Their account id.
    #[serde(with = "uuid_bytes")]
    pub account_id: Uuid,
    /// When it was added (ms since the epoch).
    pub added_at_ms: u64,
    /// Whether the user compared safety numbers.
    pub verified: bool,
}

impl fmt::Debug for Contact {
    // Names stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contact")
            .field("name", &"<redacted>")
            .field("account_id", &self.account_id)
            .field("added_at_ms", &self.added_at_ms)
            .field("verified", &self.verified)
            .finish()
    }
}

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageDirection {
    /// From a peer to us.
    Incoming,
    /// From us to a peer.
    Outgoing,
}

/// Delivery state of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageStatus {
    /// Outgoing, not yet accepted by the relay.
    Pending,
    /// Outgoing, accepted by the relay.
    Sent,
    /// Incoming, stored.
    Received,
    /// Outgoing, never sent: the recipient's identity changed or they do not exist.
    Failed,
}

/// A private, timestamped note (the evidence locker), never sent to anyone.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteRecord {
    /// Random id.
    pub id: [u8; 16],
    /// The note.
    pub text: String,
    /// An attached file's name, if any.
    pub file_name: Option<String>,
    /// The attached file.
    pub file: Vec<u8>,
    /// When it was written (this device's clock).
    pub created_at_ms: u64,
    /// Random bytes hashed with the note, so the relay cannot confirm a
    /// guess of a short note from its hash.
    pub nonce: [u8; 32],
    /// The relay's countersignature, once it has one.
    pub proof: Option<NoteProof>,
}

/// The relay's countersignature of a note's hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteProof {
    /// The relay's time.
    pub time_ms: u64,
    /// Its signature over `sotto_wire::auth::timestamp_transcript`.
    pub signature: Vec<u8>,
    /// Its serialized server certificate (ties the key to the trust root).
    pub server_certificate: Vec<u8>,
}

impl fmt::Debug for NoteRecord {
    // Notes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteRecord")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A structured warning, as received or posted, keyed by its message id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarningRecord {
    /// The id of the group message that carried it.
    pub id: [u8; 16],
    /// The group it was posted to.
    pub group: [u8; 16],
    /// Who posted it (a member; never shown, only counted).
    #[serde(with = "uuid_bytes")]
    pub author: Uuid,
    /// The subject as the author wrote it.
    pub subject: String,
    /// Their role, as written; may be empty.
    pub role: String,
    /// The kind of behaviour (`harassment`, `sexual-misconduct`, ...).
    pub kind: String,
    /// First-hand (true) or second-hand.
    pub firsthand: bool,
    /// Setting; may be empty.
    pub place: String,
    /// `YYYY-MM` or `YYYY-MM-DD`; may be empty.
    pub when: String,
    /// Advice; may be empty.
    pub advice: String,
    /// Free text; may be empty.
    pub text: String,
    /// The author's timestamp.
    pub sent_at_ms: u64,
    /// When the group's warning retention deletes it; `None` keeps it.
    pub expires_at_ms: Option<u64>,
    /// The author's linking tag for this warning (from the author proof of
    /// a named warning, or the ring signature of an anonymous one): a
    /// corroboration with this tag is the author's own and is not counted.
    #[serde(default)]
    pub author_tag: Option<[u8; 32]>,
    /// How an anonymous warning appears ("a member", "a member (approved by
    /// a moderator)"); `None` for a named one.
    #[serde(default)]
    pub anonymous: Option<String>,
}

/// An anonymous "me too" on a warning. Only its linking tag is kept, which
/// no one can tie to a member (tags differ from one warning to the next).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorroborationRecord {
    /// The group.
    pub group: [u8; 16],
    /// The warning's id.
    pub warning: [u8; 16],
    /// The linking tag: one per member per warning.
    pub tag: [u8; 32],
    /// The corroborator experienced it too (else heard of it).
    pub firsthand: bool,
    /// Made by this app (so it can say "you corroborated this").
    pub mine: bool,
}

/// A member's anonymous post waiting for a moderator's approval (groups
/// with anonymous posts via a moderator). Only moderators' apps hold these.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionRecord {
    /// The post's id.
    pub id: [u8; 16],
    /// The group.
    pub group: [u8; 16],
    /// Who sent it (the moderator knows; no one else will).
    #[serde(with = "uuid_bytes")]
    pub from: Uuid,
    /// The encoded, signed `Anonymous` post, published as it is.
    pub post: Vec<u8>,
    /// When it arrived.
    pub received_at_ms: u64,
}

impl fmt::Debug for SubmissionRecord {
    // The post is plaintext; keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmissionRecord")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for WarningRecord {
    // Subjects, places and text stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarningRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// One message in a conversation, keyed by `(peer, id)`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Random message id (also used for dedup).
    pub id: [u8; 16],
    /// The other account in the conversation.
    #[serde(with = "uuid_bytes")]
    pub peer: Uuid,
    /// Incoming or outgoing.
    pub direction: MessageDirection,
    /// Sender's display name as shown.
    pub sender_name: String,
    /// Message text.
    pub text: String,
    /// Sender's timestamp (ms since the epoch).
    pub sent_at_ms: u64,
    /// Our receive timestamp (ms since the epoch).
    pub received_at_ms: u64,
    /// Delivery state.
    pub status: MessageStatus,
    /// Group id, for group messages.
    pub group: Option<Vec<u8>>,
    /// When the group's disappearing timer deletes it (ms since the epoch).
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

impl fmt::Debug for MessageRecord {
    // Message text and names stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageRecord")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("direction", &self.direction)
            .field("sent_at_ms", &self.sent_at_ms)
            .field("received_at_ms", &self.received_at_ms)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Settings of the app (`sotto app`) kept in the profile, so they survive a
/// restart. A field missing from an older record reads as its default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPrefs {
    /// Notifications name the sender (off: they say only "New message").
    #[serde(default)]
    pub notify_names: bool,
    /// The idle-lock time chosen in the app (ms; 0: never), if one was.
    #[serde(default)]
    pub lock_after_ms: Option<u64>,
}

/// A message waiting for the relay's acknowledgement.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Message id (same as the [`MessageRecord`]'s).
    pub id: [u8; 16],
    /// Recipient account.
    #[serde(with = "uuid_bytes")]
    pub recipient: Uuid,
    /// Serialized `Content`.
    pub content: Vec<u8>,
    /// When it was queued (ms since the epoch).
    pub created_at_ms: u64,
    /// For a group message: the group, and `recipient` is unused (the
    /// engine sends to the members current at delivery time).
    #[serde(default)]
    pub group: Option<[u8; 16]>,
    /// A group message sent in an anonymous envelope (no sender) to each
    /// member, rather than with my sender key.
    #[serde(default)]
    pub anonymous: bool,
}

impl fmt::Debug for OutboxEntry {
    // The content is plaintext before encryption; keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxEntry")
            .field("id", &self.id)
            .field("recipient", &self.recipient)
            .field("content_len", &self.content.len())
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// A group as this profile holds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalGroup {
    /// Group id.
    pub id: [u8; 16],
    /// Current group key (secret: state encryption, relay auth, distribution id).
    pub key: [u8; 32],
    /// Latest state we validated.
    pub state: crate::group::GroupState,
    /// Members who have our sender key for the current key's distribution id.
    pub sender_key_sent_to: Vec<Uuid>,
    /// False once we left or were removed: kept for history, never sent to.
    pub active: bool,
}

impl fmt::Debug for LocalGroup {
    // Titles, names and keys stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalGroup")
            .field("version", &self.state.version)
            .field("members", &self.state.members.len())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// A join request we filed through a group link and that is not answered yet.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJoin {
    /// Group id.
    pub id: [u8; 16],
    /// When we asked.
    pub requested_at_ms: u64,
}

/// Current on-disk format: 2 mixes the erase key file into the store key.
const FORMAT_VERSION: u32 = 2;
/// The erase key, beside sled's files; see [`Store::crypto_erase`].
const ERASE_KEY_FILE: &str = "erase.key";
/// Constant sealed under the key to check the passphrase.
const VERIFIER_PLAINTEXT: &[u8] = b"sotto store verifier v1";
/// Plaintext header tree.
const TREE_META: &str = "meta";
const META_HEADER: &[u8] = b"header";
const META_VERIFIER: &[u8] = b"verifier";

const TREE_ACCOUNT: &str = "account";
const TREE_IDS: &str = "ids";
const TREE_CONTACTS: &str = "contacts";
/// Account id -> contact name, so finding a contact by account is one lookup.
const TREE_CONTACT_IDS: &str = "contact_ids";
const TREE_MESSAGES: &str = "messages";
const TREE_OUTBOX: &str = "outbox";
const TREE_GROUPS: &str = "groups";
/// Group id -> title, so showing a message does not read the whole group state.
const TREE_GROUP_TITLES: &str = "group_titles";
/// Message key -> (peer, id, expires_at) for messages with a disappearing
/// timer, so purging does not read the whole history.
const TREE_EXPIRING: &str = "expiring";
const TREE_JOINS: &str = "joins";
/// The one [`AppPrefs`] record.
const TREE_PREFS: &str = "prefs";
/// Message id -> [`WarningRecord`]: warnings, kept apart from the history so
/// they follow their own retention and can be grouped by subject.
const TREE_WARNINGS: &str = "warnings";
/// Note id -> [`NoteRecord`]: the evidence locker.
const TREE_NOTES: &str = "notes";
/// Subject key -> the subject key it was merged into by hand.
const TREE_SUBJECT_MERGES: &str = "subject_merges";
/// Anonymous corroborations, by warning id and tag.
const TREE_CORROBORATIONS: &str = "corroborations";
/// Anonymous posts waiting for a moderator, by post id.
const TREE_SUBMISSIONS: &str = "submissions";
/// What we sent, by the SHA-256 of its inner ciphertext (see [`SentLogEntry`]).
const TREE_SENT_LOG: &str = "sent_log";
/// Message id || requester: a message already sent again once to them.
const TREE_RETRIED: &str = "retried";
pub(crate) const TREE_IDENTITIES: &str = "identities";
pub(crate) const TREE_SESSIONS: &str = "sessions";
pub(crate) const TREE_PREKEYS: &str = "prekeys";
pub(crate) const TREE_SIGNED_PREKEYS: &str = "signed_prekeys";
pub(crate) const TREE_KYBER_PREKEYS: &str = "kyber_prekeys";
pub(crate) const TREE_KYBER_LAST_RESORT: &str = "kyber_last_resort";
pub(crate) const TREE_KYBER_BASE_KEYS: &str = "kyber_base_keys";
pub(crate) const TREE_SENDER_KEYS: &str = "sender_keys";

/// Prekey ids are 24-bit on the wire; ids stay strictly below this.
const ID_LIMIT: u32 = 0xFF_FFFF;

/// A decrypted `(logical key, value)` pair, wiped when dropped.
type Entry = (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>);

/// A message we sent, found by the SHA-256 of its inner ciphertext, so a
/// recipient who could unseal but not decrypt it can ask for it again.
#[derive(Clone, Serialize, Deserialize)]
pub struct SentLogEntry {
    /// The message id inside the content (what receivers deduplicate by).
    pub message_id: [u8; 16],
    /// Who it went to (1:1), or ourselves for a group message.
    #[serde(with = "uuid_bytes")]
    pub recipient: Uuid,
    /// The group, for a group message.
    pub group: Option<[u8; 16]>,
    /// The encoded `Content`, to send again.
    pub content: Vec<u8>,
    /// When it was sent (ms since the epoch).
    pub at_ms: u64,
}

/// The plaintext header in the `meta` tree.
#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    salt: Vec<u8>,
    kdf: KdfParams,
}

/// Stored form of an identity record.
#[derive(Serialize, Deserialize)]
struct StoredIdentity {
    trusted: Option<Vec<u8>>,
    current: Vec<u8>,
    #[serde(default)]
    shown: Option<Vec<u8>>,
}

/// Stored form of an outbox entry: the sequence number gives enqueue order.
#[derive(Serialize, Deserialize)]
struct StoredOutbox {
    seq: u64,
    entry: OutboxEntry,
}

/// A handle on one profile's open store. Clones share the database and keys.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// The store's directory (the erase key lives beside sled's files).
    dir: PathBuf,
    /// Zeroized when the last handle drops.
    keys: Keys,
    /// Serialises read-modify-write sequences (sled's file lock already
    /// keeps other processes out).
    write_lock: Mutex<()>,
    /// Writes held back while staging (see [`Store::begin_staging`]):
    /// (tree, stored key) -> sealed value, or `None` for a removal.
    staged: Mutex<Option<Staged>>,
}

type Staged = BTreeMap<(String, Vec<u8>), Option<Vec<u8>>>;

impl Store {
    /// Creates a new store in `dir` protected by `passphrase`.
    ///
    /// Fails with [`StoreError::AlreadyExists`] if a store is there, or
    /// [`StoreError::Locked`] if another process has it open.
    pub fn create(dir: &Path, passphrase: &str) -> Result<Store> {
        Self::create_with_params(dir, passphrase, KdfParams::default_params())
    }

    fn create_with_params(dir: &Path, passphrase: &str, kdf: KdfParams) -> Result<Store> {
        Self::create_keyed(dir, kdf, |salt, kdf, erase_key| {
            Keys::derive_with_erase_key(passphrase, salt, kdf, Some(erase_key))
                .map_err(|_| StoreError::Corrupt("unsupported key derivation parameters".into()))
        })
    }

    /// Creates a store that no passphrase opens, in `dir`: the same files,
    /// header (format, salt, Argon2 parameters) and verifier as a profile's,
    /// but sealed under random keys that are then forgotten. Every profile
    /// has one in its second slot until a duress passphrase puts a decoy
    /// there, so a profile with a decoy looks like one without (ARCHITECTURE.md,
    /// "Duress passphrase"). Runs no KDF.
    ///
    /// It holds what a newly registered profile holds, with `template`'s
    /// relay and sizes ([`Store::fill_like_a_new_profile`]), so its files
    /// are the size of a profile nobody has used yet.
    pub fn create_filler(dir: &Path, template: &AccountRecord, one_time_keys: u32) -> Result<()> {
        let store = Self::create_keyed(dir, KdfParams::default_params(), |_, _, _| {
            Ok(Keys::random())
        })?;
        let filled = store.fill_like_a_new_profile(template, one_time_keys);
        let flushed = store.inner.db.flush().map(|_| ()).map_err(StoreError::from);
        drop(store);
        if let Err(e) = filled.and(flushed) {
            // Half a filler is not a filler: the caller makes a new one.
            let _ = std::fs::remove_dir_all(dir);
            return Err(e);
        }
        Ok(())
    }

    fn create_keyed(
        dir: &Path,
        kdf: KdfParams,
        keys: impl FnOnce(&[u8], &KdfParams, &[u8]) -> Result<Keys>,
    ) -> Result<Store> {
        let db = open_sled(dir)?;
        let meta = db.open_tree(TREE_META)?;
        // An interrupted create leaves sled files but no header; that is not a profile.
        if meta.get(META_HEADER)?.is_some() {
            return Err(StoreError::AlreadyExists(dir.to_path_buf()));
        }
        let salt = crypto::random_salt();
        // The erase key goes to disk before the header marks the profile
        // finished, so a finished profile always has one.
        let erase_key = crypto::random_erase_key();
        write_erase_key(dir, &erase_key)?;
        let keys = keys(&salt, &kdf, &erase_key)?;
        let header = Header {
            format: FORMAT_VERSION,
            salt: salt.to_vec(),
            kdf,
        };
        let header = serde_json::to_vec(&header)
            .map_err(|_| StoreError::Corrupt("cannot encode header".into()))?;
        let verifier = keys.seal(TREE_META, META_VERIFIER, VERIFIER_PLAINTEXT);
        // Verifier first, header last: the header marks a finished profile.
        meta.insert(META_VERIFIER, verifier)?;
        meta.insert(META_HEADER, header)?;
        db.flush()?;
        Ok(Store::from_parts(db, dir, keys))
    }

    /// Opens the store in `dir`.
    ///
    /// Fails with [`StoreError::NoProfile`] if there is none,
    /// [`StoreError::WrongPassphrase`] or [`StoreError::Locked`].
    pub fn open(dir: &Path, passphrase: &str) -> Result<Store> {
        // Check first: sled would happily create an empty database.
        if !Store::exists(dir) {
            return Err(StoreError::NoProfile(dir.to_path_buf()));
        }
        let db = open_sled(dir)?;
        let meta = db.open_tree(TREE_META)?;
        let Some(header) = meta.get(META_HEADER)? else {
            return Err(StoreError::NoProfile(dir.to_path_buf()));
        };
        let header: Header = serde_json::from_slice(&header)
            .map_err(|_| StoreError::Corrupt("unreadable header".into()))?;
        let keys = keys_for(dir, &header, passphrase)?;
        let verifier = meta
            .get(META_VERIFIER)?
            .ok_or_else(|| StoreError::Corrupt("missing verifier".into()))?;
        match keys.open(TREE_META, META_VERIFIER, &verifier) {
            Some(plain) if plain.as_slice() == VERIFIER_PLAINTEXT => {}
            _ => return Err(StoreError::WrongPassphrase),
        }
        let store = Store::from_parts(db, dir, keys);
        if store.tree(TREE_CONTACT_IDS)?.is_empty() {
            // Profiles made before the index existed: build it once.
            for c in store.contacts()? {
                store.put_raw(TREE_CONTACT_IDS, c.account_id.as_bytes(), c.name.as_bytes())?;
            }
        }
        Ok(store)
    }

    /// Destroys the profile's erase key in place (random bytes, then zeros,
    /// each synced to disk, then unlinked), so nothing in the store in `dir`
    /// can be decrypted again, passphrase or not, even from disk blocks
    /// recovered later. Works while another process holds the store open.
    /// Returns false for a profile made before erase keys (format 1): its
    /// files can only be deleted.
    pub fn crypto_erase(dir: &Path) -> Result<bool> {
        use std::io::{Seek, Write};
        let path = dir.join(ERASE_KEY_FILE);
        let mut f = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::Io(e)),
        };
        for fill in [crypto::random_erase_key(), [0u8; crypto::ERASE_KEY_LEN]] {
            f.seek(std::io::SeekFrom::Start(0))
                .map_err(StoreError::Io)?;
            f.write_all(&fill).map_err(StoreError::Io)?;
            f.sync_all().map_err(StoreError::Io)?;
        }
        drop(f);
        std::fs::remove_file(&path).map_err(StoreError::Io)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    }

    /// Destroys the profile's erase key like [`Store::crypto_erase`], but
    /// leaves a file of random bytes in its place, with the old access and
    /// modification times, so the store looks as it did and a passphrase
    /// fails on it exactly as a wrong one does. The duress passphrase's
    /// `--erase-real` uses it: someone watching must not learn that the
    /// real profile was just destroyed. Returns false when there was no key.
    pub fn crypto_erase_quietly(dir: &Path) -> Result<bool> {
        use std::io::{Seek, Write};
        let path = dir.join(ERASE_KEY_FILE);
        let mut f = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::Io(e)),
        };
        let times = f.metadata().ok().and_then(|m| {
            Some(
                std::fs::FileTimes::new()
                    .set_accessed(m.accessed().ok()?)
                    .set_modified(m.modified().ok()?),
            )
        });
        // Two random fills, each synced: the old key is gone from the file's
        // blocks, and what stays is indistinguishable from a key.
        for fill in [crypto::random_erase_key(), crypto::random_erase_key()] {
            f.seek(std::io::SeekFrom::Start(0))
                .map_err(StoreError::Io)?;
            f.write_all(&fill).map_err(StoreError::Io)?;
            f.sync_all().map_err(StoreError::Io)?;
        }
        if let Some(times) = times {
            let _ = f.set_times(times);
        }
        Ok(true)
    }

    /// Opens and closes the database in `dir` without reading anything
    /// (no keys needed), as any use of a store does: sled rewrites its
    /// snapshot and the files' times move. Errors (a store held by another
    /// process) are ignored: this only keeps a filler looking used.
    pub fn touch(dir: &Path) {
        if Store::exists(dir)
            && let Ok(db) = open_sled(dir)
        {
            let _ = db.flush();
        }
    }

    /// Whether `dir` looks like it holds a store (without opening or locking it).
    pub fn exists(dir: &Path) -> bool {
        // sled keeps its data in `<dir>/db`.
        dir.join("db").is_file()
    }

    /// Makes everything written so far durable on disk.
    pub async fn flush(&self) -> Result<()> {
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// Whether `passphrase` is this store's passphrase (runs the KDF again).
    ///
    /// Used by `sotto listen` to authenticate commands other `sotto`
    /// processes forward to it while it holds the store: the control socket
    /// grants nothing to whoever cannot also open the store.
    pub fn check_passphrase(&self, passphrase: &str) -> Result<bool> {
        let meta = self.tree(TREE_META)?;
        let header = meta
            .get(META_HEADER)?
            .ok_or_else(|| StoreError::Corrupt("missing header".into()))?;
        let header: Header = serde_json::from_slice(&header)
            .map_err(|_| StoreError::Corrupt("unreadable header".into()))?;
        let verifier = meta
            .get(META_VERIFIER)?
            .ok_or_else(|| StoreError::Corrupt("missing verifier".into()))?;
        let keys = keys_for(&self.inner.dir, &header, passphrase)?;
        Ok(matches!(
            keys.open(TREE_META, META_VERIFIER, &verifier),
            Some(plain) if plain.as_slice() == VERIFIER_PLAINTEXT
        ))
    }

    /// Holds every following write in memory until [`Store::commit_staged`].
    ///
    /// Receiving a message writes libsignal's session state and then our
    /// message record. If a crash persisted the first without the second, the
    /// relay's redelivery would decrypt as a duplicate and the message would be
    /// lost; staging makes both land in one sled transaction or not at all.
    pub fn begin_staging(&self) {
        *self.staged() = Some(BTreeMap::new());
    }

    /// Writes everything staged in one atomic transaction and stops staging.
    pub fn commit_staged(&self) -> Result<()> {
        let Some(staged) = self.staged().take().filter(|s| !s.is_empty()) else {
            return Ok(());
        };
        let mut names: Vec<&str> = staged.keys().map(|(tree, _)| tree.as_str()).collect();
        names.dedup();
        let trees = names
            .iter()
            .map(|name| self.tree(name))
            .collect::<Result<Vec<_>>>()?;
        trees
            .as_slice()
            .transaction(|views| {
                for ((tree, key), value) in &staged {
                    let index = names.iter().position(|n| n == tree).unwrap_or(0);
                    match value {
                        Some(sealed) => views[index].insert(key.as_slice(), sealed.as_slice())?,
                        None => views[index].remove(key.as_slice())?,
                    };
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => StoreError::Corrupt("staged commit aborted".into()),
            })?;
        Ok(())
    }

    /// Drops everything staged and stops staging.
    pub fn abort_staged(&self) {
        self.staged().take();
    }

    fn staged(&self) -> MutexGuard<'_, Option<Staged>> {
        // A panic mid-write leaves at worst a partial overlay, which is only
        // ever committed whole or dropped.
        self.inner
            .staged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Saves the account record.
    pub fn set_account(&self, a: &AccountRecord) -> Result<()> {
        self.put_json(TREE_ACCOUNT, b"account", a)
    }

    /// The account record; [`StoreError::Corrupt`] if it was never saved.
    pub fn account(&self) -> Result<AccountRecord> {
        self.get_json(TREE_ACCOUNT, b"account")?
            .ok_or_else(|| StoreError::Corrupt("missing account record".into()))
    }

    /// Whether an account record was saved.
    pub fn has_account(&self) -> Result<bool> {
        Ok(self.get_raw(TREE_ACCOUNT, b"account")?.is_some())
    }

    /// Atomically reserves `n` consecutive ids of `kind` and returns the first.
    ///
    /// Ids start at 1 and wrap back to 1 so that every id stays below
    /// 0xFFFFFF (prekey ids are 24-bit).
    pub fn next_ids(&self, kind: IdKind, n: u32) -> Result<u32> {
        if n == 0 || n >= ID_LIMIT - 1 {
            return Err(StoreError::InvalidArgument("id count out of range"));
        }
        let logical: &[u8] = match kind {
            IdKind::PreKey => b"prekey",
            IdKind::KyberPreKey => b"kyber_prekey",
            IdKind::SignedPreKey => b"signed_prekey",
        };
        let _guard = self.lock();
        let stored = match self.get_raw(TREE_IDS, logical)? {
            None => 1,
            Some(bytes) => {
                let arr: [u8; 4] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("bad id counter".into()))?;
                u32::from_be_bytes(arr)
            }
        };
        let first = match stored.checked_add(n) {
            Some(end) if stored >= 1 && end <= ID_LIMIT => stored,
            _ => 1,
        };
        self.put_raw(TREE_IDS, logical, &(first + n).to_be_bytes())?;
        Ok(first)
    }

    /// Saves a contact under its exact name (replacing one of the same name).
    pub fn put_contact(&self, c: &Contact) -> Result<()> {
        self.put_json(TREE_CONTACTS, c.name.as_bytes(), c)?;
        self.put_raw(TREE_CONTACT_IDS, c.account_id.as_bytes(), c.name.as_bytes())
    }

    /// The contact with exactly this name.
    pub fn contact(&self, name: &str) -> Result<Option<Contact>> {
        self.get_json(TREE_CONTACTS, name.as_bytes())
    }

    /// The contact for an account id (the one saved last, if several).
    pub fn contact_by_account(&self, id: Uuid) -> Result<Option<Contact>> {
        let Some(name) = self.get_raw(TREE_CONTACT_IDS, id.as_bytes())? else {
            return Ok(None);
        };
        Ok(self
            .contact(&String::from_utf8_lossy(&name))?
            .filter(|c| c.account_id == id))
    }

    /// Deletes the contact with exactly this name (their messages, keyed by
    /// account, stay). Returns whether there was one.
    pub fn delete_contact(&self, name: &str) -> Result<bool> {
        let Some(c) = self.contact(name)? else {
            return Ok(false);
        };
        self.remove(TREE_CONTACTS, name.as_bytes())?;
        if self
            .get_raw(TREE_CONTACT_IDS, c.account_id.as_bytes())?
            .is_some_and(|n| n.as_slice() == name.as_bytes())
        {
            self.remove(TREE_CONTACT_IDS, c.account_id.as_bytes())?;
        }
        Ok(true)
    }

    /// Every 1:1 message, in no particular order.
    pub fn direct_messages(&self) -> Result<Vec<MessageRecord>> {
        let mut all: Vec<MessageRecord> = self.scan_json(TREE_MESSAGES)?;
        all.retain(|m| m.group.is_none());
        Ok(all)
    }

    /// All contacts, sorted by name.
    pub fn contacts(&self) -> Result<Vec<Contact>> {
        let mut all: Vec<Contact> = self.scan_json(TREE_CONTACTS)?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Inserts a message unless `(peer, id)` is already stored; returns
    /// whether it was inserted. Receivers use this to drop duplicates.
    pub fn insert_message(&self, m: &MessageRecord) -> Result<bool> {
        let key = message_key(m.peer, m.id);
        let _guard = self.lock();
        if self.get_raw(TREE_MESSAGES, &key)?.is_some() {
            return Ok(false);
        }
        self.put_json(TREE_MESSAGES, &key, m)?;
        if let Some(at) = m.expires_at_ms {
            self.put_json(TREE_EXPIRING, &key, &(m.peer, m.id, at))?;
        }
        Ok(true)
    }

    /// The message `(peer, id)`.
    pub fn message(&self, peer: Uuid, id: [u8; 16]) -> Result<Option<MessageRecord>> {
        self.get_json(TREE_MESSAGES, &message_key(peer, id))
    }

    /// Replaces (or inserts) the message `(m.peer, m.id)`.
    pub fn update_message(&self, m: &MessageRecord) -> Result<()> {
        self.put_json(TREE_MESSAGES, &message_key(m.peer, m.id), m)
    }

    /// The app's settings (defaults if none were saved).
    pub fn app_prefs(&self) -> Result<AppPrefs> {
        Ok(self.get_json(TREE_PREFS, b"app")?.unwrap_or_default())
    }

    /// Saves the app's settings.
    pub fn set_app_prefs(&self, p: &AppPrefs) -> Result<()> {
        self.put_json(TREE_PREFS, b"app", p)
    }

    /// Every message, 1:1 and group, in no particular order.
    pub fn all_messages(&self) -> Result<Vec<MessageRecord>> {
        self.scan_json(TREE_MESSAGES)
    }

    /// The 1:1 conversation with `peer`, sorted by `(sent_at_ms, id)`.
    pub fn messages_with(&self, peer: Uuid) -> Result<Vec<MessageRecord>> {
        let mut all: Vec<MessageRecord> = self.scan_json(TREE_MESSAGES)?;
        all.retain(|m| m.peer == peer && m.group.is_none());
        all.sort_by_key(|m| (m.sent_at_ms, m.id));
        Ok(all)
    }

    /// A group's messages, sorted by `(sent_at_ms, id)`.
    pub fn group_messages(&self, group: &[u8]) -> Result<Vec<MessageRecord>> {
        let mut all: Vec<MessageRecord> = self.scan_json(TREE_MESSAGES)?;
        all.retain(|m| m.group.as_deref() == Some(group));
        all.sort_by_key(|m| (m.sent_at_ms, m.id));
        Ok(all)
    }

    /// Deletes the message `(peer, id)`; returns whether it existed.
    pub fn delete_message(&self, peer: Uuid, id: [u8; 16]) -> Result<bool> {
        let _guard = self.lock();
        let key = message_key(peer, id);
        if self.get_raw(TREE_MESSAGES, &key)?.is_none() {
            return Ok(false);
        }
        self.remove(TREE_MESSAGES, &key)?;
        self.remove(TREE_EXPIRING, &key)?;
        self.remove_warning_of(peer, id)?;
        Ok(true)
    }

    /// Removes the warning message `(author, id)` carried, if any: only the
    /// same author's, so another member's message reusing the id cannot.
    fn remove_warning_of(&self, author: Uuid, id: [u8; 16]) -> Result<()> {
        if let Some(w) = self.get_json::<WarningRecord>(TREE_WARNINGS, &id)?
            && w.author == author
        {
            self.remove(TREE_WARNINGS, &id)?;
        }
        Ok(())
    }

    /// Saves a corroboration; false if this tag already corroborated this
    /// warning (a member counts once, however often they send it).
    pub fn insert_corroboration(&self, c: &CorroborationRecord) -> Result<bool> {
        let _guard = self.lock();
        let key = [&c.warning[..], &c.tag[..]].concat();
        if self.get_raw(TREE_CORROBORATIONS, &key)?.is_some() {
            return Ok(false);
        }
        self.put_json(TREE_CORROBORATIONS, &key, c)?;
        Ok(true)
    }

    /// Every corroboration kept.
    pub fn corroborations(&self) -> Result<Vec<CorroborationRecord>> {
        self.scan_json(TREE_CORROBORATIONS)
    }

    /// Keeps an anonymous post for a moderator's decision.
    pub fn put_submission(&self, s: &SubmissionRecord) -> Result<()> {
        self.put_json(TREE_SUBMISSIONS, &s.id, s)
    }

    /// Anonymous posts waiting for a moderator.
    pub fn submissions(&self) -> Result<Vec<SubmissionRecord>> {
        self.scan_json(TREE_SUBMISSIONS)
    }

    /// Forgets a submission (published, discarded, or published by another moderator).
    pub fn remove_submission(&self, id: [u8; 16]) -> Result<()> {
        self.remove(TREE_SUBMISSIONS, &id)
    }

    /// Saves a warning; false if one with this id was already stored.
    pub fn insert_warning(&self, w: &WarningRecord) -> Result<bool> {
        let _guard = self.lock();
        if self.get_raw(TREE_WARNINGS, &w.id)?.is_some() {
            return Ok(false);
        }
        self.put_json(TREE_WARNINGS, &w.id, w)?;
        Ok(true)
    }

    /// Saves (or replaces) a note.
    pub fn put_note(&self, n: &NoteRecord) -> Result<()> {
        self.put_json(TREE_NOTES, &n.id, n)
    }

    /// Every note, oldest first.
    pub fn notes(&self) -> Result<Vec<NoteRecord>> {
        let mut all: Vec<NoteRecord> = self.scan_json(TREE_NOTES)?;
        all.sort_by_key(|n| (n.created_at_ms, n.id));
        Ok(all)
    }

    /// Every warning we hold.
    pub fn warnings(&self) -> Result<Vec<WarningRecord>> {
        self.scan_json(TREE_WARNINGS)
    }

    /// Records that subject key `from` is the same person as `into`.
    pub fn merge_subject(&self, from: &str, into: &str) -> Result<()> {
        self.put_json(TREE_SUBJECT_MERGES, from.as_bytes(), &(from, into))
    }

    /// Every hand-made merge, as `(from, into)` subject keys.
    pub fn subject_merges(&self) -> Result<Vec<(String, String)>> {
        self.scan_json(TREE_SUBJECT_MERGES)
    }

    /// Deletes every message whose disappearing timer ran out by `now_ms`,
    /// with the warning a message carried (past its warning retention).
    pub fn purge_expired(&self, now_ms: u64) -> Result<usize> {
        let timed: Vec<(Uuid, [u8; 16], u64)> = self.scan_json(TREE_EXPIRING)?;
        let mut n = 0;
        for (peer, id, at) in timed {
            if at <= now_ms {
                let key = message_key(peer, id);
                self.remove(TREE_MESSAGES, &key)?;
                self.remove(TREE_EXPIRING, &key)?;
                // A warning expires with the message that carried it (both
                // get the warning retention), found through the same index.
                self.remove_warning_of(peer, id)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Saves a group.
    pub fn put_group(&self, g: &LocalGroup) -> Result<()> {
        self.put_json(TREE_GROUPS, &g.id, g)?;
        self.put_raw(TREE_GROUP_TITLES, &g.id, g.state.title.as_bytes())
    }

    /// A group's title, without reading its state.
    pub fn group_title(&self, id: [u8; 16]) -> Result<Option<String>> {
        Ok(self
            .get_raw(TREE_GROUP_TITLES, &id)?
            .map(|t| String::from_utf8_lossy(&t).into_owned()))
    }

    /// The group with this id.
    pub fn group(&self, id: [u8; 16]) -> Result<Option<LocalGroup>> {
        self.get_json(TREE_GROUPS, &id)
    }

    /// Every group we hold, active or not.
    pub fn groups(&self) -> Result<Vec<LocalGroup>> {
        self.scan_json(TREE_GROUPS)
    }

    /// Records a join request we filed.
    pub fn put_join(&self, j: &PendingJoin) -> Result<()> {
        self.put_json(TREE_JOINS, &j.id, j)
    }

    /// Join requests we filed and that were not answered yet.
    pub fn joins(&self) -> Result<Vec<PendingJoin>> {
        self.scan_json(TREE_JOINS)
    }

    /// Forgets a filed join request.
    pub fn remove_join(&self, id: [u8; 16]) -> Result<()> {
        self.remove(TREE_JOINS, &id)
    }

    /// Queues an entry. Pushing an id already queued replaces its content
    /// but keeps its place in the queue.
    pub fn outbox_push(&self, e: &OutboxEntry) -> Result<()> {
        let _guard = self.lock();
        let seq = match self.get_json::<StoredOutbox>(TREE_OUTBOX, &e.id)? {
            Some(existing) => existing.seq,
            // sled's id generator is monotonic across restarts.
            None => self.inner.db.generate_id()?,
        };
        self.put_json(
            TREE_OUTBOX,
            &e.id,
            &StoredOutbox {
                seq,
                entry: e.clone(),
            },
        )
    }

    /// All queued entries, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        let mut all: Vec<StoredOutbox> = self.scan_json(TREE_OUTBOX)?;
        all.sort_by_key(|s| s.seq);
        Ok(all.into_iter().map(|s| s.entry).collect())
    }

    /// Removes a queued entry (no error if absent).
    pub fn outbox_remove(&self, id: [u8; 16]) -> Result<()> {
        self.remove(TREE_OUTBOX, &id)
    }

    /// The trust-on-first-use record for `peer`, if any key was ever seen.
    pub fn identity_status(&self, peer: Uuid) -> Result<Option<IdentityStatus>> {
        let Some(stored) = self.get_json::<StoredIdentity>(TREE_IDENTITIES, peer.as_bytes())?
        else {
            return Ok(None);
        };
        let decode = |bytes: &[u8]| {
            IdentityKey::decode(bytes)
                .map_err(|_| StoreError::Corrupt("bad identity key in identities".into()))
        };
        Ok(Some(IdentityStatus {
            trusted: stored.trusted.as_deref().map(decode).transpose()?,
            current: decode(&stored.current)?,
            shown: stored.shown.as_deref().map(decode).transpose()?,
        }))
    }

    /// Records `key` as the key last seen from `peer`; it also becomes the
    /// trusted key if this is the first key seen (trust on first use).
    pub fn note_identity(&self, peer: Uuid, key: &IdentityKey) -> Result<()> {
        let _guard = self.lock();
        self.note_identity_locked(peer, key).map(|_| ())
    }

    /// Trusts the key last seen from `peer`; false if none was ever seen.
    pub fn trust_identity(&self, peer: Uuid) -> Result<bool> {
        let _guard = self.lock();
        let Some(mut stored) = self.get_json::<StoredIdentity>(TREE_IDENTITIES, peer.as_bytes())?
        else {
            return Ok(false);
        };
        stored.trusted = Some(stored.current.clone());
        self.put_json(TREE_IDENTITIES, peer.as_bytes(), &stored)?;
        Ok(true)
    }

    /// Records that the safety number of `key` was shown for `peer`, so
    /// that `contact trust` may mark it verified. False if no key was ever
    /// seen from `peer`.
    pub fn mark_shown(&self, peer: Uuid, key: &IdentityKey) -> Result<bool> {
        let _guard = self.lock();
        let Some(mut stored) = self.get_json::<StoredIdentity>(TREE_IDENTITIES, peer.as_bytes())?
        else {
            return Ok(false);
        };
        stored.shown = Some(key.serialize().to_vec());
        self.put_json(TREE_IDENTITIES, peer.as_bytes(), &stored)?;
        Ok(true)
    }

    /// Remembers what a sent ciphertext held (see [`SentLogEntry`]).
    pub fn log_sent(&self, hash: &[u8; 32], e: &SentLogEntry) -> Result<()> {
        self.put_json(TREE_SENT_LOG, hash, e)
    }

    /// What we sent as the ciphertext with this SHA-256, if we did.
    pub fn sent_logged(&self, hash: &[u8; 32]) -> Result<Option<SentLogEntry>> {
        self.get_json(TREE_SENT_LOG, hash)
    }

    /// Records that message `id` was sent again to `requester`; false if it
    /// already was (a message is sent again once per recipient, so two apps
    /// that cannot open each other's messages do not loop).
    pub fn mark_retried(&self, id: [u8; 16], requester: Uuid) -> Result<bool> {
        let _guard = self.lock();
        let mut key = id.to_vec();
        key.extend_from_slice(requester.as_bytes());
        if self.get_raw(TREE_RETRIED, &key)?.is_some() {
            return Ok(false);
        }
        self.put_raw(TREE_RETRIED, &key, &[])?;
        Ok(true)
    }

    /// Deletes the session with `peer` (no error if there is none).
    pub fn delete_session(&self, peer: &ProtocolAddress) -> Result<()> {
        self.remove(TREE_SESSIONS, &signal::address_key(peer))
    }

    /// Marks a Kyber prekey as last resort: it survives being used.
    pub fn set_kyber_last_resort(&self, id: KyberPreKeyId) -> Result<()> {
        self.put_raw(TREE_KYBER_LAST_RESORT, &u32::from(id).to_be_bytes(), &[])
    }

    // ---- internals ----

    fn from_parts(db: sled::Db, dir: &Path, keys: Keys) -> Store {
        Store {
            inner: Arc::new(Inner {
                db,
                dir: dir.to_path_buf(),
                keys,
                write_lock: Mutex::new(()),
                staged: Mutex::new(None),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`, so a poisoned lock protects nothing broken.
        self.inner
            .write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets `current`, and `trusted` if there was no record. Returns whether
    /// an existing, different `current` was replaced. Caller holds the lock.
    fn note_identity_locked(&self, peer: Uuid, key: &IdentityKey) -> Result<bool> {
        let key_bytes = key.serialize().to_vec();
        let (stored, replaced) =
            match self.get_json::<StoredIdentity>(TREE_IDENTITIES, peer.as_bytes())? {
                None => (
                    StoredIdentity {
                        trusted: Some(key_bytes.clone()),
                        current: key_bytes,
                        shown: None,
                    },
                    false,
                ),
                Some(existing) if existing.current == key_bytes => return Ok(false),
                Some(mut existing) => {
                    existing.current = key_bytes;
                    (existing, true)
                }
            };
        self.put_json(TREE_IDENTITIES, peer.as_bytes(), &stored)?;
        Ok(replaced)
    }

    fn tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// Seals `logical key || value` under the hashed key.
    fn put_raw(&self, tree: &str, logical: &[u8], value: &[u8]) -> Result<()> {
        let stored_key = self.inner.keys.hash_key(tree, logical);
        let len = u32::try_from(logical.len())
            .map_err(|_| StoreError::InvalidArgument("key too long"))?;
        let mut plain = Zeroizing::new(Vec::with_capacity(4 + logical.len() + value.len()));
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(logical);
        plain.extend_from_slice(value);
        let sealed = self.inner.keys.seal(tree, &stored_key, &plain);
        if let Some(staged) = self.staged().as_mut() {
            staged.insert((tree.to_string(), stored_key.to_vec()), Some(sealed));
            return Ok(());
        }
        self.tree(tree)?.insert(stored_key, sealed)?;
        Ok(())
    }

    fn get_raw(&self, tree: &str, logical: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let stored_key = self.inner.keys.hash_key(tree, logical);
        let staged = self
            .staged()
            .as_ref()
            .and_then(|s| s.get(&(tree.to_string(), stored_key.to_vec())).cloned());
        let sealed = match staged {
            Some(Some(sealed)) => sealed.into(),
            Some(None) => return Ok(None),
            None => match self.tree(tree)?.get(stored_key)? {
                Some(sealed) => sealed,
                None => return Ok(None),
            },
        };
        let (found, value) = self.unseal(tree, &stored_key, &sealed)?;
        if found.as_slice() != logical {
            return Err(StoreError::Corrupt(format!("key mismatch in {tree}")));
        }
        Ok(Some(value))
    }

    fn remove(&self, tree: &str, logical: &[u8]) -> Result<()> {
        let stored_key = self.inner.keys.hash_key(tree, logical);
        if let Some(staged) = self.staged().as_mut() {
            staged.insert((tree.to_string(), stored_key.to_vec()), None);
            return Ok(());
        }
        self.tree(tree)?.remove(stored_key)?;
        Ok(())
    }

    /// Every `(logical key, value)` in a tree.
    fn scan_raw(&self, tree: &str) -> Result<Vec<Entry>> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for item in self.tree(tree)?.iter() {
            let (stored_key, sealed) = item?;
            merged.insert(stored_key.to_vec(), Some(sealed.to_vec()));
        }
        if let Some(staged) = self.staged().as_ref() {
            for ((t, key), value) in staged {
                if t == tree {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
        let mut out = Vec::new();
        for (stored_key, sealed) in merged {
            if let Some(sealed) = sealed {
                out.push(self.unseal(tree, &stored_key, &sealed)?);
            }
        }
        Ok(out)
    }

    /// Decrypts and splits a value into (logical key, value).
    fn unseal(&self, tree: &str, stored_key: &[u8], sealed: &[u8]) -> Result<Entry> {
        let corrupt = || StoreError::Corrupt(format!("a value in {tree} failed authentication"));
        let plain = self
            .inner
            .keys
            .open(tree, stored_key, sealed)
            .ok_or_else(corrupt)?;
        let (len, rest) = plain.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt())?;
        if rest.len() < len {
            return Err(corrupt());
        }
        let (logical, value) = rest.split_at(len);
        Ok((
            Zeroizing::new(logical.to_vec()),
            Zeroizing::new(value.to_vec()),
        ))
    }

    fn put_json<T: Serialize>(&self, tree: &str, logical: &[u8], value: &T) -> Result<()> {
        let bytes = Zeroizing::new(
            serde_json::to_vec(value)
                .map_err(|_| StoreError::Corrupt(format!("cannot encode a value for {tree}")))?,
        );
        self.put_raw(tree, logical, &bytes)
    }

    fn get_json<T: DeserializeOwned>(&self, tree: &str, logical: &[u8]) -> Result<Option<T>> {
        self.get_raw(tree, logical)?
            .map(|bytes| decode_json(tree, &bytes))
            .transpose()
    }

    fn scan_json<T: DeserializeOwned>(&self, tree: &str) -> Result<Vec<T>> {
        self.scan_raw(tree)?
            .iter()
            .map(|(_, bytes)| decode_json(tree, bytes))
            .collect()
    }
}

fn decode_json<T: DeserializeOwned>(tree: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|_| StoreError::Corrupt(format!("undecodable value in {tree}")))
}

fn message_key(peer: Uuid, id: [u8; 16]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(peer.as_bytes());
    key[16..].copy_from_slice(&id);
    key
}

/// The keys a profile's header and passphrase give: format 1 from the
/// passphrase alone, format 2 with the erase key beside the database.
fn keys_for(dir: &Path, header: &Header, passphrase: &str) -> Result<Keys> {
    match header.format {
        // Profiles made before the erase key: the passphrase alone.
        1 => derive(passphrase, &header.salt, &header.kdf),
        2 => {
            let erase_key = match std::fs::read(dir.join(ERASE_KEY_FILE)) {
                Ok(k) if k.len() == crypto::ERASE_KEY_LEN => Zeroizing::new(k),
                Ok(_) | Err(_) => return Err(StoreError::Erased),
            };
            Keys::derive_with_erase_key(passphrase, &header.salt, &header.kdf, Some(&erase_key))
                .map_err(|_| StoreError::Corrupt("unsupported key derivation parameters".into()))
        }
        other => Err(StoreError::Corrupt(format!(
            "unsupported store format {other}; is this profile from a newer Sotto?"
        ))),
    }
}

fn derive(passphrase: &str, salt: &[u8], kdf: &KdfParams) -> Result<Keys> {
    Keys::derive(passphrase, salt, kdf)
        .map_err(|_| StoreError::Corrupt("unsupported key derivation parameters".into()))
}

/// Writes a new profile's erase key (0600, synced).
fn write_erase_key(dir: &Path, key: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join(ERASE_KEY_FILE))
        .map_err(StoreError::Io)?;
    f.write_all(key).map_err(StoreError::Io)?;
    f.sync_all().map_err(StoreError::Io)
}

/// Makes `dir` (and any missing parent) a directory only its owner can
/// enter: created 0700, or tightened to 0700 if it exists. A profile's files
/// are encrypted, but another local user who can copy them could try
/// passphrases offline at leisure; 0700 stops that copy.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Sets 0700 on `dir` and every directory under it and 0600 on every file
/// (symbolic links are left alone). sled creates its files with the
/// process's umask, often 022, so this runs after sled opens a store.
pub fn tighten(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.is_dir() {
        if meta.permissions().mode() & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        for entry in std::fs::read_dir(dir)? {
            tighten(&entry?.path())?;
        }
    } else if !meta.file_type().is_symlink() && meta.permissions().mode() & 0o777 != 0o600 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn open_sled(dir: &Path) -> Result<sled::Db> {
    private_dir(dir).map_err(StoreError::Io)?;
    let db = open_sled_inner(dir)?;
    // sled made its files with the umask; only their owner may read them.
    tighten(dir).map_err(StoreError::Io)?;
    Ok(db)
}

/// How long opening waits for sled's lock before saying the store is held.
///
/// sled releases its exclusive flock when the last clone of its internal
/// config drops, and its I/O threadpool jobs (log writes started by
/// `maybe_seal`, segment truncations) hold clones: a store dropped in this
/// process can keep its lock for a moment after `Drop`, longer on a loaded
/// machine. Without the wait, reopening it at once failed as "locked" (seen
/// in CI as `store::tests` flakes). Another process that really holds the
/// store is reported after this wait.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn open_sled_inner(dir: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match sled::open(dir) {
            Ok(db) => return Ok(db),
            // sled reports a held flock only through this message.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StoreError::Locked);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Serde for `Uuid` as 16 raw bytes (the workspace's uuid has no serde feature).
mod uuid_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub(super) fn serialize<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(id.as_bytes())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let bytes = <Vec<u8>>::deserialize(d)?;
        Uuid::from_slice(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use libsignal_protocol::IdentityKeyPair;

    use super::*;

    const PASS: &str = "correct horse battery staple";

    fn account(name: &str) -> AccountRecord {
        let pair = IdentityKeyPair::generate(&mut rand::rng());
        AccountRecord {
            relay: "relay.example:4433".into(),
            spki_pin: [9; 32],
            trust_root: vec![5; 33],
            account_id: Uuid::new_v4(),
            device_id: 1,
            name: name.into(),
            identity_key_pair: pair.serialize().to_vec(),
            registration_id: 4242,
            sender_certificate: Some((vec![1, 2, 3], 77)),
            transport_hint: None,
            keys_rotated_at_ms: 0,
            duress_erases_real: false,
            duress_decoy_set: false,
            retired_identities: Vec::new(),
            pending_identity: None,
        }
    }

    fn copy_dir(from: &Path, to: &Path, skip: &str) {
        fs::create_dir_all(to).expect("mkdir");
        for entry in fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name();
            if name == skip {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                copy_dir(&path, &to.join(&name), skip);
            } else {
                fs::copy(&path, to.join(&name)).expect("copy");
            }
        }
    }

    #[test]
    fn crypto_erase_leaves_nothing_the_passphrase_can_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("store");
        let cheap = KdfParams {
            alg: crypto::ALG_ARGON2ID.into(),
            m_kib: 64,
            t: 1,
            p: 1,
        };
        {
            let store = Store::create_with_params(&dir, PASS, cheap).expect("create");
            store.set_account(&account("Ann")).expect("account");
            store
                .insert_message(&message(Uuid::new_v4(), 1, 10, "secret text"))
                .expect("message");
            store.inner.db.flush().expect("flush");
        }
        // What an examiner could image from the disk: everything, and (the
        // control) everything but the erase key, which is overwritten in place.
        let with_key = tmp.path().join("with_key");
        let without_key = tmp.path().join("without_key");
        copy_dir(&dir, &with_key, "");
        copy_dir(&dir, &without_key, ERASE_KEY_FILE);
        assert!(Store::open(&with_key, PASS).is_ok(), "the control opens");

        assert!(Store::crypto_erase(&dir).expect("erase"));
        assert!(!dir.join(ERASE_KEY_FILE).exists());
        assert!(matches!(Store::open(&dir, PASS), Err(StoreError::Erased)));
        assert!(matches!(
            Store::open(&without_key, PASS),
            Err(StoreError::Erased)
        ));
        // Erasing twice is harmless.
        assert!(!Store::crypto_erase(&dir).expect("erase again"));
    }

    fn message(peer: Uuid, id: u8, sent_at_ms: u64, text: &str) -> MessageRecord {
        MessageRecord {
            id: [id; 16],
            peer,
            direction: MessageDirection::Incoming,
            sender_name: "sender".into(),
            text: text.into(),
            sent_at_ms,
            received_at_ms: sent_at_ms + 1,
            status: MessageStatus::Received,
            group: None,
            expires_at_ms: None,
        }
    }

    fn identity() -> IdentityKey {
        *IdentityKeyPair::generate(&mut rand::rng()).identity_key()
    }

    /// Every byte of every file under `dir`.
    fn all_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                out.extend(all_bytes(&path));
            } else {
                out.extend(fs::read(&path).expect("read file"));
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn create_open_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        assert!(!Store::exists(&path));
        let acct = account("alice");
        {
            let store = Store::create(&path, PASS).expect("create");
            assert!(!store.has_account().expect("has_account"));
            assert!(matches!(store.account(), Err(StoreError::Corrupt(_))));
            store.set_account(&acct).expect("set_account");
            store
                .put_contact(&Contact {
                    name: "bob".into(),
                    account_id: Uuid::new_v4(),
                    added_at_ms: 5,
                    verified: false,
                })
                .expect("put_contact");
        }
        assert!(Store::exists(&path));
        let store = Store::open(&path, PASS).expect("open");
        assert!(store.has_account().expect("has_account"));
        assert_eq!(store.account().expect("account"), acct);
        assert_eq!(
            store
                .contact("bob")
                .expect("contact")
                .expect("some")
                .added_at_ms,
            5
        );
        assert!(store.contact("Bob").expect("contact").is_none());
        drop(store);
        assert!(matches!(
            Store::create(&path, PASS),
            Err(StoreError::AlreadyExists(_))
        ));
    }

    #[test]
    fn open_store_checks_a_passphrase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(dir.path(), PASS).expect("create");
        assert!(store.check_passphrase(PASS).expect("check"));
        assert!(!store.check_passphrase("not it").expect("check"));
    }

    #[test]
    fn wrong_passphrase_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::create(dir.path(), PASS).expect("create"));
        let err = Store::open(dir.path(), "not it").err().expect("must fail");
        assert!(matches!(err, StoreError::WrongPassphrase));
        assert_eq!(err.to_string(), "wrong passphrase for this profile");
        assert!(Store::open(dir.path(), PASS).is_ok());
    }

    #[test]
    fn no_profile_in_empty_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Store::open(dir.path(), PASS).err().expect("must fail");
        assert!(matches!(&err, StoreError::NoProfile(p) if p == dir.path()));
        assert!(
            err.to_string()
                .contains("sotto init --invite LINK --name NAME")
        );
        // Opening must not have created a database as a side effect.
        assert!(!Store::exists(dir.path()));
        let missing = dir.path().join("nope");
        assert!(matches!(
            Store::open(&missing, PASS),
            Err(StoreError::NoProfile(_))
        ));
        assert!(!missing.exists());
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Store::create(dir.path(), PASS).expect("create");
        let err = Store::open(dir.path(), PASS).err().expect("must fail");
        assert!(matches!(err, StoreError::Locked));
        assert!(err.to_string().contains("sotto listen"));
        drop(first);
        assert!(Store::open(dir.path(), PASS).is_ok());
    }

    #[tokio::test]
    async fn no_plaintext_in_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(dir.path(), PASS).expect("create");
        let acct = account("Wilhelmina Secretname");
        let peer = Uuid::new_v4();
        store.set_account(&acct).expect("set_account");
        store
            .put_contact(&Contact {
                name: "Bartholomew Hiddenname".into(),
                account_id: peer,
                added_at_ms: 1,
                verified: true,
            })
            .expect("put_contact");
        let text = "the night manager grabbed Priya again on tuesday";
        store
            .insert_message(&message(peer, 0x5a, 10, text))
            .expect("insert");
        store.note_identity(peer, &identity()).expect("note");
        store.flush().await.expect("flush");

        let bytes = all_bytes(dir.path());
        assert!(bytes.len() > 1000, "the files hold the data");
        let needles: Vec<Vec<u8>> = vec![
            b"Bartholomew".to_vec(),
            b"Hiddenname".to_vec(),
            b"Wilhelmina".to_vec(),
            b"grabbed Priya".to_vec(),
            b"relay.example".to_vec(),
            acct.account_id.to_string().into_bytes(),
            acct.account_id.simple().to_string().into_bytes(),
            acct.account_id.as_bytes().to_vec(),
            peer.to_string().into_bytes(),
            peer.as_bytes().to_vec(),
            [0x5a; 16].to_vec(),
        ];
        for needle in &needles {
            assert!(
                !contains(&bytes, needle),
                "plaintext found in the store files: {}",
                String::from_utf8_lossy(needle)
            );
        }
        // The test is meaningful only if the sealed values did reach the files.
        let contact_key = store
            .inner
            .keys
            .hash_key(TREE_CONTACTS, b"Bartholomew Hiddenname");
        let sealed = store
            .tree(TREE_CONTACTS)
            .expect("tree")
            .get(contact_key)
            .expect("get")
            .expect("stored");
        assert!(contains(&bytes, &sealed[1..]), "sealed contact is on disk");
        // And the data is really there, under the key.
        assert_eq!(store.messages_with(peer).expect("messages")[0].text, text);
    }

    #[test]
    fn staged_writes_land_together_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let peer = Uuid::new_v4();
        {
            let store = Store::create(dir.path(), PASS).expect("create");
            store.begin_staging();
            assert!(
                store
                    .insert_message(&message(peer, 1, 1, "dropped"))
                    .expect("insert")
            );
            // Reads see staged writes, so duplicates within a batch are caught.
            assert!(
                !store
                    .insert_message(&message(peer, 1, 1, "dropped"))
                    .expect("insert")
            );
            assert_eq!(store.messages_with(peer).expect("list").len(), 1);
            store.abort_staged();
            assert!(store.message(peer, [1; 16]).expect("get").is_none());

            store.begin_staging();
            store
                .insert_message(&message(peer, 2, 2, "kept"))
                .expect("insert");
            store
                .put_contact(&Contact {
                    name: "kept contact".into(),
                    account_id: peer,
                    added_at_ms: 1,
                    verified: false,
                })
                .expect("contact");
            store.commit_staged().expect("commit");
        }
        let store = Store::open(dir.path(), PASS).expect("reopen");
        assert_eq!(
            store
                .message(peer, [2; 16])
                .expect("get")
                .expect("kept")
                .text,
            "kept"
        );
        assert!(store.contact("kept contact").expect("get").is_some());
        assert!(store.message(peer, [1; 16]).expect("get").is_none());
    }

    #[test]
    fn message_dedup_and_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(dir.path(), PASS).expect("create");
        let peer = Uuid::new_v4();
        let other = Uuid::new_v4();
        let first = message(peer, 1, 20, "first");
        assert!(store.insert_message(&first).expect("insert"));
        // Same (peer, id) again: refused and not written.
        assert!(
            !store
                .insert_message(&message(peer, 1, 20, "replayed"))
                .expect("insert")
        );
        assert_eq!(
            store
                .message(peer, [1; 16])
                .expect("get")
                .expect("some")
                .text,
            "first"
        );
        // Same id with another peer is a different message.
        assert!(
            store
                .insert_message(&message(other, 1, 5, "x"))
                .expect("insert")
        );
        assert!(
            store
                .insert_message(&message(peer, 3, 10, "earlier"))
                .expect("insert")
        );
        assert!(
            store
                .insert_message(&message(peer, 2, 20, "tie"))
                .expect("insert")
        );
        let ids: Vec<u8> = store
            .messages_with(peer)
            .expect("list")
            .iter()
            .map(|m| m.id[0])
            .collect();
        assert_eq!(ids, vec![3, 1, 2]);

        let mut updated = first.clone();
        updated.status = MessageStatus::Sent;
        store.update_message(&updated).expect("update");
        assert_eq!(
            store
                .message(peer, [1; 16])
                .expect("get")
                .expect("some")
                .status,
            MessageStatus::Sent
        );
        assert!(store.message(peer, [9; 16]).expect("get").is_none());
    }

    #[test]
    fn outbox_order_and_removal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = |id: u8| OutboxEntry {
            id: [id; 16],
            recipient: Uuid::from_bytes([id; 16]),
            content: vec![id; 3],
            created_at_ms: 100 - u64::from(id),
            group: None,
            anonymous: false,
        };
        {
            let store = Store::create(dir.path(), PASS).expect("create");
            // Ids deliberately out of order: order is enqueue order.
            for id in [7, 2, 9, 4] {
                store.outbox_push(&entry(id)).expect("push");
            }
            // Re-pushing keeps the original place.
            store.outbox_push(&entry(2)).expect("push again");
        }
        let store = Store::open(dir.path(), PASS).expect("open");
        let ids: Vec<u8> = store
            .outbox()
            .expect("outbox")
            .iter()
            .map(|e| e.id[0])
            .collect();
        assert_eq!(ids, vec![7, 2, 9, 4]);
        store.outbox_remove([9; 16]).expect("remove");
        store
            .outbox_remove([42; 16])
            .expect("removing nothing is fine");
        store.outbox_push(&entry(1)).expect("push");
        let ids: Vec<u8> = store
            .outbox()
            .expect("outbox")
            .iter()
            .map(|e| e.id[0])
            .collect();
        assert_eq!(ids, vec![7, 2, 4, 1]);
        assert_eq!(store.outbox().expect("outbox")[0], entry(7));
    }

    #[test]
    fn contacts_sorted_and_found_by_account() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(dir.path(), PASS).expect("create");
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for (name, id) in ["carol", "alice", "bob"].iter().zip(&ids) {
            store
                .put_contact(&Contact {
                    name: (*name).into(),
                    account_id: *id,
                    added_at_ms: 0,
                    verified: false,
                })
                .expect("put");
        }
        let names: Vec<String> = store
            .contacts()
            .expect("contacts")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, vec!["alice", "bob", "carol"]);
        assert_eq!(
            store
                .contact_by_account(ids[2])
                .expect("by account")
                .expect("some")
                .name,
            "bob"
        );
        assert!(
            store
                .contact_by_account(Uuid::new_v4())
                .expect("by account")
                .is_none()
        );
    }

    #[test]
    fn ids_are_reserved_and_wrap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(dir.path(), PASS).expect("create");
        assert_eq!(store.next_ids(IdKind::PreKey, 100).expect("ids"), 1);
        assert_eq!(store.next_ids(IdKind::PreKey, 100).expect("ids"), 101);
        // Kinds are independent.
        assert_eq!(store.next_ids(IdKind::SignedPreKey, 1).expect("ids"), 1);
        assert_eq!(store.next_ids(IdKind::KyberPreKey, 1).expect("ids"), 1);
        assert!(matches!(
            store.next_ids(IdKind::PreKey, 0),
            Err(StoreError::InvalidArgument(_))
        ));
        // Near the limit: the block that would reach 0xFFFFFF starts over at 1.
        store
            .put_raw(TREE_IDS, b"prekey", &(ID_LIMIT - 10).to_be_bytes())
            .expect("seed counter");
        assert_eq!(
            store.next_ids(IdKind::PreKey, 10).expect("ids"),
            ID_LIMIT - 10
        );
        assert_eq!(store.next_ids(IdKind::PreKey, 1).expect("ids"), 1);
        assert_eq!(store.next_ids(IdKind::PreKey, 1).expect("ids"), 2);
    }

    #[tokio::test]
    async fn trust_on_first_use() {
        use libsignal_protocol::{DeviceId, Direction, IdentityChange, IdentityKeyStore};

        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::create(dir.path(), PASS).expect("create");
        let peer = Uuid::new_v4();
        let device = DeviceId::new(1).expect("device id");
        let addr = ProtocolAddress::new(peer.to_string(), device);
        let (k1, k2) = (identity(), identity());

        assert!(store.identity_status(peer).expect("status").is_none());
        assert!(!store.trust_identity(peer).expect("trust"));
        // Unknown peers are trusted for sending (first use).
        assert!(
            store
                .is_trusted_identity(&addr, &k1, Direction::Sending)
                .await
                .expect("trusted")
        );

        // First key: trusted.
        assert_eq!(
            store.save_identity(&addr, &k1).await.expect("save"),
            IdentityChange::NewOrUnchanged
        );
        let status = store.identity_status(peer).expect("status").expect("some");
        assert_eq!(status.trusted, Some(k1));
        assert!(!status.changed());
        assert_eq!(
            store.save_identity(&addr, &k1).await.expect("save"),
            IdentityChange::NewOrUnchanged
        );

        // Changed key: seen, not trusted for sending, fine for receiving.
        assert_eq!(
            store.save_identity(&addr, &k2).await.expect("save"),
            IdentityChange::ReplacedExisting
        );
        let status = store.identity_status(peer).expect("status").expect("some");
        assert!(status.changed());
        assert_eq!((status.trusted, status.current), (Some(k1), k2));
        assert_eq!(store.get_identity(&addr).await.expect("get"), Some(k2));
        assert!(
            !store
                .is_trusted_identity(&addr, &k2, Direction::Sending)
                .await
                .expect("trusted")
        );
        assert!(
            store
                .is_trusted_identity(&addr, &k1, Direction::Sending)
                .await
                .expect("trusted")
        );
        assert!(
            store
                .is_trusted_identity(&addr, &k2, Direction::Receiving)
                .await
                .expect("trusted")
        );

        // The user confirms the new key.
        assert!(store.trust_identity(peer).expect("trust"));
        let status = store.identity_status(peer).expect("status").expect("some");
        assert!(!status.changed());
        assert!(
            store
                .is_trusted_identity(&addr, &k2, Direction::Sending)
                .await
                .expect("trusted")
        );

        // note_identity never moves `trusted` once a record exists.
        let k3 = identity();
        store.note_identity(peer, &k3).expect("note");
        let status = store.identity_status(peer).expect("status").expect("some");
        assert_eq!((status.trusted, status.current), (Some(k2), k3));
        let fresh = Uuid::new_v4();
        store.note_identity(fresh, &k3).expect("note");
        assert_eq!(
            store
                .identity_status(fresh)
                .expect("status")
                .expect("some")
                .trusted,
            Some(k3)
        );

        // Addresses that are not account ids are refused, not panicked on.
        let bad = ProtocolAddress::new("not-a-uuid".into(), device);
        assert!(store.get_identity(&bad).await.is_err());

        // Which key's safety number was shown is remembered per key: a
        // later key is not "shown" until verify shows it.
        assert!(store.mark_shown(peer, &k3).expect("shown"));
        let status = store.identity_status(peer).expect("status").expect("some");
        assert_eq!(status.shown, Some(k3));
        let k4 = identity();
        store.note_identity(peer, &k4).expect("note");
        let status = store.identity_status(peer).expect("status").expect("some");
        assert_ne!(status.shown, Some(status.current));
        assert!(!store.mark_shown(Uuid::new_v4(), &k4).expect("no record"));
    }

    #[test]
    fn a_message_is_sent_again_once_per_requester() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(dir.path(), PASS).expect("create");
        let (id, bob, cat) = ([7u8; 16], Uuid::new_v4(), Uuid::new_v4());
        assert!(store.mark_retried(id, bob).expect("first"));
        assert!(!store.mark_retried(id, bob).expect("second"));
        assert!(store.mark_retried(id, cat).expect("another requester"));
        assert!(store.mark_retried([8u8; 16], bob).expect("another message"));

        let hash = [1u8; 32];
        assert!(store.sent_logged(&hash).expect("lookup").is_none());
        let entry = SentLogEntry {
            message_id: id,
            recipient: bob,
            group: None,
            content: b"content".to_vec(),
            at_ms: 5,
        };
        store.log_sent(&hash, &entry).expect("log");
        drop(store);
        let store = Store::open(dir.path(), PASS).expect("reopen");
        let found = store.sent_logged(&hash).expect("lookup").expect("logged");
        assert_eq!((found.message_id, found.recipient), (id, bob));
        assert_eq!(found.content, b"content");
    }

    #[test]
    fn tampered_value_is_corrupt_not_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(dir.path(), PASS).expect("create");
        store.set_account(&account("a")).expect("set");
        let key = store.inner.keys.hash_key(TREE_ACCOUNT, b"account");
        let tree = store.tree(TREE_ACCOUNT).expect("tree");
        let mut sealed = tree.get(key).expect("get").expect("some").to_vec();
        let last = sealed.len() - 1;
        sealed[last] ^= 0x80;
        tree.insert(key, sealed).expect("insert");
        assert!(matches!(store.account(), Err(StoreError::Corrupt(_))));
    }
}
