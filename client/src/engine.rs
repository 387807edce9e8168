//! The client engine: one profile's account, store and relay connection.
//!
//! The engine turns user intents (send this text, sync my mailbox) into relay
//! requests and libsignal operations. Its rules, in the order they protect
//! the user:
//! - **Outbox first.** A message is stored and flushed before it leaves; it
//!   stays in the outbox until the relay says it is durable, and is resent on
//!   the next `send`, `sync` or `listen` otherwise.
//! - **Store, then acknowledge.** Fetched messages are decrypted, stored and
//!   flushed before the relay is told to delete them, so a crash in between
//!   means the relay delivers again and the receiver drops the duplicate.
//! - **Trust on first use, loudly.** The first identity key seen for a contact is
//!   trusted; a different one later blocks sending until `contact trust`.
//!
//! All libsignal calls run on the caller's task (its futures are `!Send`); the
//! CLI drives the engine from a current-thread runtime.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::LocalBoxFuture;
use libsignal_protocol::{
    ContentHint, DeviceId, Fingerprint, GenericSignedPreKey, IdentityKey, IdentityKeyPair, KeyPair,
    KyberPreKeyRecord, KyberPreKeyStore, PreKeyBundle, PreKeyRecord, PreKeyStore, ProtocolAddress,
    PublicKey, SenderCertificate, SessionRecord, SessionStore, SessionUsabilityRequirements,
    SignalProtocolError, SignedPreKeyRecord, SignedPreKeyStore, Timestamp,
    UnidentifiedSenderMessageContent, kem, message_encrypt, process_prekey_bundle,
    sealed_sender_encrypt_from_usmc,
};
use prost::Message as _;
use rand::Rng;
use sha2::{Digest, Sha256};
use sotto_wire::auth::{Purpose, transcript};
use sotto_wire::code::ContactCode;
use sotto_wire::content::{self, Content};
use sotto_wire::invite::InviteLink;
use sotto_wire::relay::{
    self, ErrorCode, OneTimePreKey, SignedPreKey, request::Kind as Req, response::Kind as Resp,
};
use uuid::Uuid;

use crate::safe::{self, Lines};
use crate::store::{
    AccountRecord, AsIdentity, Contact, IdKind, IdentityRecord, MessageDirection, MessageRecord,
    MessageStatus, OutboxEntry, SentLogEntry, Store, StoreError,
};
use crate::transport::{Connection, Route, TransportError};

mod anon;
mod groups;
pub use anon::{AnonymousBody, Corroborated, PostedAnonymously, SubmissionView};
pub use groups::{Moderation, ProposalInfo, ProposedMessage, SettingsChange};
mod notes;
mod warnings;

pub use notes::{MAX_NOTE_FILE_BYTES, NoteView, ProofFile, Verified, note_hash, verify_proof};

pub use groups::{GroupInfo, MemberInfo, Vouched};
pub use warnings::{
    KINDS, NameMatch, SubjectSummary, WarningInput, WarningView, check_when, day_of, day_time,
    name_match, subject_key,
};

/// How long an identity key replaced by `identity reset` is kept to open
/// messages sealed to it: longer than the relay keeps an envelope (30 days
/// by default), so anything sent to the old key before the peer learned the
/// new one can still be read, and no longer, so a retired key does not stay
/// on the disk for good.
pub const RETIRED_IDENTITY_KEEP_MS: u64 = 45 * 24 * 60 * 60 * 1000;

/// One-time keys of each kind uploaded at registration and at each top-up.
pub const ONE_TIME_KEYS: u32 = 100;

/// Our single device. Multi-device is future work; the relay already keys mailboxes by device.
const DEVICE_ID: u8 = 1;

/// A sender certificate is renewed when less than this is left of it.
const CERT_RENEW_MARGIN_MS: u64 = 10 * 60 * 1000;

/// Age at which the signed prekey and the Kyber last-resort key are replaced
/// (Signal rotates on a similar schedule): limits how long a stolen signed
/// prekey could open first messages sent to us.
pub const ROTATE_SIGNED_KEYS_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Envelopes asked for per fetch.
const FETCH_BATCH: u32 = 100;

/// Longest text accepted for one message (the relay's envelope cap is 64 KiB).
pub use crate::safe::MAX_TEXT_BYTES;

/// Errors the engine reports to the CLI. Each `Display` says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The local store failed or refused (wrong passphrase, no profile, locked).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Talking to the relay failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// libsignal refused an operation.
    #[error("encryption error: {0}")]
    Signal(#[from] SignalProtocolError),
    /// No contact by that name.
    #[error(
        "no contact named {0:?}: add one with `sotto contact add NAME CODE` (see `sotto contact list`)"
    )]
    UnknownContact(String),
    /// No group has that title or id prefix.
    #[error("no group matching {0:?}: see `sotto groups` for titles and ids")]
    UnknownGroup(String),
    /// A contact by that name already exists.
    #[error("a contact named {0:?} already exists; pick another name")]
    ContactExists(String),
    /// The recipient's identity key changed since we first trusted it.
    #[error(
        "{0}'s safety number has changed: their identity key is not the one you trusted. \
         Nothing was sent. Check it with `sotto contact verify {arg}` (compare with them in person \
         or on another channel), then run `sotto contact trust {arg}` and send again",
        arg = safe::shell_arg(.0)
    )]
    IdentityChanged(String),
    /// The relay does not know the recipient.
    #[error("the relay has no account for {0:?}; check their contact code")]
    UnknownRecipient(String),
    /// Input that cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias for engine calls.
pub type Result<T> = std::result::Result<T, EngineError>;

/// A message as the CLI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownMessage {
    /// Hex of the 16-byte message id.
    pub id: String,
    /// Who wrote it: my contact name for them, else their chosen display name, or "me".
    pub from: String,
    /// False when `from` is a display name the sender chose (not one of my contacts).
    pub from_contact: bool,
    /// The other party's contact code.
    pub peer_code: String,
    /// True when I wrote it.
    pub outgoing: bool,
    /// The text.
    pub text: String,
    /// When the sender sent it, ms since the epoch.
    pub sent_at_ms: u64,
    /// Delivery state: "pending", "sent", "received" or "failed".
    pub status: &'static str,
    /// For group messages: the group's hex id and title.
    pub group: Option<(String, String)>,
}

/// How long a send waits to reach the relay (connecting and proving who we
/// are) before it reports the message as queued.
pub const SEND_CONNECT_WAIT: Duration = Duration::from_secs(4);

/// How long a send waits, once connected, for the relay to take everything
/// in the outbox before it reports the message as queued (each request has
/// its own 20 s bound besides).
pub const SEND_WAIT: Duration = Duration::from_secs(30);

/// Where a message handed to [`Engine::send_text_outcome`] or
/// [`Engine::group_send_outcome`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The relay holds it durably (a group message: for every member it went to).
    Relayed,
    /// Kept in the outbox; the next command that reaches the relay (`send`,
    /// `sync`, `listen`...) sends it, with no second send by the user. The
    /// text says why it has not gone yet.
    Queued(String),
}

/// What [`Engine::delete_message_here`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletedHere {
    /// There was no such message.
    Missing,
    /// Deleted from this computer; the other people in the chat keep theirs.
    Deleted,
    /// It was still waiting in the outbox: deleted, and taken out of the
    /// outbox with it, so it is never sent.
    Cancelled,
}

/// The outcome of a send that was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message id (hex), as in `message.id`.
    pub id: String,
    /// The message as stored.
    pub message: ShownMessage,
    /// Whether the relay has it or it waits in the outbox.
    pub delivery: Delivery,
}

impl Sent {
    /// The message if the relay has it; a queued one as an error saying so
    /// (for callers that only report success once the relay holds it).
    pub fn relayed(self) -> Result<ShownMessage> {
        match self.delivery {
            Delivery::Relayed => Ok(self.message),
            Delivery::Queued(reason) => Err(EngineError::Invalid(format!(
                "{reason}. It is saved and will be sent by the next `sotto send`, `sync` or \
                 `listen`"
            ))),
        }
    }
}

/// A safety number, from [`Engine::safety_number`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    /// 60 digits in groups of five.
    pub digits: String,
    /// The contact's key is not the one trusted (they reset their identity).
    pub changed: bool,
    /// Set when the relay could not be asked for the contact's current key:
    /// the number is for the key last seen, and this says why.
    pub offline: Option<String>,
}

/// What [`Engine::trust`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trusted {
    /// A changed key was accepted (sending to them works again).
    pub key_changed: bool,
    /// Whether the contact is now marked verified, and why.
    pub verified: Verification,
}

/// Whether (and why) `contact trust` marked a contact verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Not marked: the key's safety number was never shown here.
    No,
    /// Marked: `contact verify` showed this key's safety number.
    Shown,
    /// Marked: the user said they compared it (`--i-compared`).
    SaidCompared,
    /// It was marked verified before, for this same key.
    Already,
}

/// Relay-side one-time prekey counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounts {
    /// One-time EC prekeys left on the relay.
    pub pre_keys: u32,
    /// One-time Kyber prekeys left on the relay.
    pub kyber_pre_keys: u32,
    /// Whether the engine uploaded more during this call.
    pub topped_up: bool,
}

/// What `sync` and `listen` learn besides messages, for the CLI to print to stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A contact's identity key changed; sending to them is blocked until `contact trust`.
    IdentityChanged(String),
    /// An envelope could not be decrypted and was dropped.
    Undecryptable {
        /// The relay's sequence number, for support.
        seq: u64,
        /// libsignal's reason (contains no content).
        reason: String,
    },
    /// Something in the outbox could not be sent now; it is kept and tried
    /// again (the reason, for the user).
    OutboxPending(String),
    /// One-time prekeys were replenished on the relay.
    ToppedUp(u32),
    /// `listen` cannot reach the relay and keeps retrying.
    Offline(String),
    /// `listen` is connected and caught up (`again`: after being offline).
    Connected {
        /// True when this follows a lost connection.
        again: bool,
    },
    /// Something about a group the user should know (membership, refused changes).
    Group(String),
}

/// Work for the engine from the service (see `service`), run between the
/// background work of [`Engine::listen`]: a face's request, with its own
/// way to answer.
pub trait JobFn: Send {
    /// Runs the job with the open engine.
    fn call<'a>(self: Box<Self>, engine: &'a mut Engine) -> LocalBoxFuture<'a, ()>;
}

/// A boxed [`JobFn`].
pub type Job = Box<dyn JobFn>;

/// A request handed to a running [`Engine::listen`].
pub enum EngineCommand {
    /// Run this with the engine.
    Run(Job),
}

/// The engine for one profile.
pub struct Engine {
    store: Store,
    account: AccountRecord,
    identity: IdentityKeyPair,
    trust_root: PublicKey,
    conn: Option<Connection>,
    /// Unauthenticated connection for group state requests (see `groups`).
    anon: Option<Connection>,
    /// Notices gathered outside `sync`/`listen`, for the caller to show.
    notices: Vec<Notice>,
    /// Opened by the duress passphrase: this is the decoy profile.
    decoy: bool,
    /// Skip the checks on what this user types: only a test's modified
    /// client sets it (see [`Engine::danger_skip_checks`]).
    unchecked: bool,
    /// Set by `unseal` when it knew the sender but could not decrypt: who,
    /// and the SHA-256 of the ciphertext, for a retry request.
    retry_for: Option<(Uuid, [u8; 32])>,
}

/// What `sotto panic` did.
#[derive(Debug)]
pub struct PanicReport {
    /// Whether the erase key was destroyed (`Ok(false)`: a profile made
    /// before erase keys, whose files could only be deleted).
    pub erased: std::result::Result<bool, String>,
    /// How long destroying the key took, in ms.
    pub erase_ms: f64,
    /// The relay deleting the account, when it was asked.
    pub deregistered: Option<std::result::Result<(), String>>,
    /// Deleting the profile's files.
    pub files_removed: std::result::Result<(), String>,
}

/// `sotto panic` without the passphrase (or with the profile held by a
/// running `sotto listen`): destroys the erase key and deletes the files;
/// the relay keeps the account until its operator removes it.
pub fn panic_offline(home: &Path) -> PanicReport {
    let (erased, erase_ms) = erase_timed(home);
    PanicReport {
        erased,
        erase_ms,
        deregistered: None,
        files_removed: remove_profile_files(home),
    }
}

/// Destroys the profile's erase key; says whether there was one, and how
/// long it took (ms).
fn erase_timed(home: &Path) -> (std::result::Result<bool, String>, f64) {
    let started = std::time::Instant::now();
    let erased = Store::crypto_erase(&store_dir(home)).map_err(|e| e.to_string());
    // The second slot too (decoy or filler): nothing is left to open with
    // either passphrase.
    let _ = Store::crypto_erase(&second_store_dir(home));
    let _ = Store::crypto_erase(&legacy_decoy_dir(home));
    (erased, started.elapsed().as_secs_f64() * 1000.0)
}

/// Deletes the profile's stores and control socket.
fn remove_profile_files(home: &Path) -> std::result::Result<(), String> {
    let _ = std::fs::remove_file(home.join("control.sock"));
    let _ = std::fs::remove_dir_all(second_store_dir(home));
    let _ = std::fs::remove_dir_all(legacy_decoy_dir(home).parent().unwrap_or(home));
    match std::fs::remove_dir_all(store_dir(home)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// The second store slot of a profile directory. Every profile has one:
/// a filler store that no passphrase opens ([`Store::create_filler`]), or,
/// once a duress passphrase is set, the decoy profile it opens. The name
/// and files are the same either way, so `ls -la` does not tell an examiner
/// whether a decoy exists (what it can still tell is in ARCHITECTURE.md).
pub fn second_store_dir(home: &Path) -> PathBuf {
    home.join("store2")
}

/// Where decoys lived before the second slot (`HOME/spare/store`): still
/// opened, and moved into the second slot when the real profile opens.
fn legacy_decoy_dir(home: &Path) -> PathBuf {
    home.join("spare").join("store")
}

/// The rule every new passphrase follows, the profile's and the duress
/// one alike: a short duress passphrase is one a guess could hit, and with
/// `--erase-real` a guess would destroy the real profile.
pub fn check_new_passphrase(passphrase: &str) -> Result<()> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(EngineError::Invalid(format!(
            "choose a passphrase of at least {MIN_PASSPHRASE_CHARS} characters; it protects \
             your history if this computer is taken"
        )));
    }
    Ok(())
}

/// Shortest passphrase [`check_new_passphrase`] accepts.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// Where the store lives inside a profile directory.
pub fn store_dir(home: &Path) -> PathBuf {
    home.join("store")
}

impl Engine {
    /// Creates a profile in `home`, registers with the relay named in `invite`, and opens it.
    pub async fn init(home: &Path, passphrase: &str, invite: &str, name: &str) -> Result<Engine> {
        let engine = Self::init_at(&store_dir(home), passphrase, invite, name).await?;
        // The second slot exists from the start (see `second_store_dir`).
        let slot = second_store_dir(home);
        if !Store::exists(&slot) {
            engine.make_filler(&slot)?;
        }
        Ok(engine)
    }

    /// Creates and registers a profile whose store is `dir`.
    async fn init_at(dir: &Path, passphrase: &str, invite: &str, name: &str) -> Result<Engine> {
        check_new_passphrase(passphrase)?;
        let link: InviteLink = invite
            .parse()
            .map_err(|e: sotto_wire::invite::BadInvite| EngineError::Invalid(e.to_string()))?;
        let name = safe::check_field("a display name", name, safe::MAX_NAME_CHARS, Lines::One)
            .map_err(EngineError::Invalid)?;
        let name = name.as_str();
        let store = Store::create(dir, passphrase)?;
        match Self::register(store, &link, name).await {
            Ok(engine) => Ok(engine),
            Err(e) => {
                // Leave nothing half-made: a retry with a fresh invite must work.
                let _ = std::fs::remove_dir_all(dir);
                Err(e)
            }
        }
    }

    async fn register(store: Store, link: &InviteLink, name: &str) -> Result<Engine> {
        let mut rng = rand::rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let registration_id = rng.random_range(1..16380);
        let account = AccountRecord {
            relay: link.relay.clone(),
            spki_pin: link.spki_pin,
            trust_root: link.trust_root.clone(),
            account_id: Uuid::nil(),
            device_id: u32::from(DEVICE_ID),
            name: name.to_string(),
            identity_key_pair: identity.serialize().to_vec(),
            registration_id,
            sender_certificate: None,
            transport_hint: None,
            keys_rotated_at_ms: now_ms(),
            duress_erases_real: false,
            duress_decoy_set: false,
            retired_identities: Vec::new(),
            pending_identity: None,
        };
        store.set_account(&account)?;
        let trust_root = PublicKey::deserialize(&link.trust_root)
            .map_err(|_| EngineError::Invalid("invite link has a damaged trust root".into()))?;
        let mut engine = Engine {
            store,
            account,
            identity,
            trust_root,
            conn: None,
            anon: None,
            notices: Vec::new(),
            decoy: false,
            unchecked: false,
            retry_for: None,
        };
        let keys = engine.generate_keys(ONE_TIME_KEYS, true).await?;
        let conn = engine.connect().await?;
        let nonce = challenge(&conn).await?;
        let signature = engine
            .identity
            .private_key()
            .calculate_signature(
                &transcript(Purpose::Register, &conn.exporter()?, &nonce),
                &mut rng,
            )
            .map_err(crypto)?;
        let registered = conn
            .request(Req::Register(relay::Register {
                invite_token: link.token.clone(),
                identity_key: engine.identity.identity_key().serialize().to_vec(),
                registration_id,
                auth_signature: signature.to_vec(),
                signed_pre_key: keys.signed_pre_key,
                kyber_last_resort: keys.kyber_last_resort,
                pre_keys: keys.pre_keys,
                kyber_pre_keys: keys.kyber_pre_keys,
            }))
            .await?;
        let Resp::Registered(registered) = registered else {
            return Err(TransportError::Unexpected.into());
        };
        engine.account.account_id = Uuid::from_slice(&registered.account_id)
            .map_err(|_| EngineError::from(TransportError::Unexpected))?;
        engine.store.set_account(&engine.account)?;
        engine.store.flush().await?;
        engine.conn = Some(conn);
        Ok(engine)
    }

    /// `sotto panic` with the profile open: destroys the store's erase key
    /// first (the store is unreadable from that instant, even to someone who
    /// later learns the passphrase), then deletes the account at the relay
    /// with the keys still in memory, then deletes the profile's files.
    pub async fn panic(mut self, home: &Path, deregister: bool) -> PanicReport {
        let (erased, erase_ms) = erase_timed(home);
        let deregistered = if deregister {
            let attempt = async {
                let conn = self.connection().await?;
                match conn
                    .request(Req::DeleteAccount(relay::DeleteAccount {}))
                    .await?
                {
                    Resp::Done(_) => Ok(()),
                    _ => Err(EngineError::from(TransportError::Unexpected)),
                }
            };
            Some(
                match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the relay did not answer within 10 s".into()),
                },
            )
        } else {
            None
        };
        drop(self);
        PanicReport {
            erased,
            erase_ms,
            deregistered,
            files_removed: remove_profile_files(home),
        }
    }

    /// Opens an existing profile, or, given the duress passphrase, its
    /// decoy (see [`Engine::duress_set`]), which then acts as the profile.
    ///
    /// Any passphrase but the real one runs the KDF on both slots, whether
    /// the second holds a decoy or a filler, and a passphrase that opens
    /// neither gets the same error whatever happened before (a real profile
    /// erased under duress included).
    pub fn open(home: &Path, passphrase: &str) -> Result<Engine> {
        // Profiles made before homes were created 0700 are tightened here.
        crate::store::private_dir(home).map_err(StoreError::Io)?;
        let real = match Self::open_one(&store_dir(home), passphrase) {
            Ok(mut engine) => {
                engine.keep_second_slot(home)?;
                return Ok(engine);
            }
            Err(EngineError::Store(e @ (StoreError::WrongPassphrase | StoreError::Erased))) => e,
            Err(other) => return Err(other),
        };
        for slot in [second_store_dir(home), legacy_decoy_dir(home)] {
            if !Store::exists(&slot) {
                continue;
            }
            let mut engine = match Self::open_one(&slot, passphrase) {
                Ok(engine) => engine,
                Err(EngineError::Store(StoreError::WrongPassphrase | StoreError::Erased)) => {
                    continue;
                }
                Err(other) => return Err(other),
            };
            if engine.account.duress_erases_real {
                // Under duress: the real profile becomes unreadable before
                // anything is shown, and looks untouched (a random key
                // file, with its old times, where its erase key was).
                let _ = Store::crypto_erase_quietly(&store_dir(home));
            }
            engine.decoy = true;
            return Ok(engine);
        }
        // Neither: say what the real profile said.
        Err(EngineError::Store(real))
    }

    /// With the real profile open: moves a decoy from the old layout into
    /// the second slot, or makes the filler a profile without a decoy has.
    fn keep_second_slot(&mut self, home: &Path) -> Result<()> {
        let slot = second_store_dir(home);
        let legacy = legacy_decoy_dir(home);
        if Store::exists(&legacy) {
            if Store::exists(&slot) {
                // A filler (the decoy is the legacy one): made for nothing.
                std::fs::remove_dir_all(&slot).map_err(StoreError::Io)?;
            }
            std::fs::rename(&legacy, &slot).map_err(StoreError::Io)?;
            if let Some(spare) = legacy.parent() {
                let _ = std::fs::remove_dir(spare);
            }
            self.account.duress_decoy_set = true;
            self.store.set_account(&self.account)?;
        } else if !Store::exists(&slot) {
            // A profile from before the second slot, or one whose slot
            // creation was interrupted.
            let _ = std::fs::remove_dir_all(&slot);
            self.make_filler(&slot)?;
        }
        // Each use of the real profile also opens the second store (without
        // keys), so its files change when the real ones do, decoy or filler:
        // a filler must not stand out as the store that never changes.
        Store::touch(&slot);
        Ok(())
    }

    /// Whether a duress passphrase (and its decoy profile) is set up. Under
    /// the duress passphrase this says no, as a profile without one would.
    pub fn duress_is_set(&self, _home: &Path) -> bool {
        !self.decoy && self.account.duress_decoy_set
    }

    /// Sets up a duress passphrase: a decoy profile in the second slot,
    /// registered with the relay named in `invite` under `name`, that
    /// `passphrase` opens instead of this one. With `erase_real`, opening
    /// the decoy also crypto-erases this profile. The duress passphrase
    /// follows the same rules as any passphrase ([`check_new_passphrase`]).
    pub async fn duress_set(
        &mut self,
        home: &Path,
        passphrase: &str,
        invite: &str,
        name: &str,
        erase_real: bool,
    ) -> Result<()> {
        if self.decoy {
            return Err(EngineError::Invalid(
                "a duress passphrase cannot be set up now".into(),
            ));
        }
        check_new_passphrase(passphrase).map_err(|e| {
            EngineError::Invalid(format!("the duress passphrase: {e}; nothing was set up"))
        })?;
        if self.store.check_passphrase(passphrase)? {
            return Err(EngineError::Invalid(
                "the duress passphrase must differ from your passphrase".into(),
            ));
        }
        if self.account.duress_decoy_set {
            return Err(EngineError::Invalid(
                "a duress passphrase is already set; `sotto duress remove` first".into(),
            ));
        }
        let slot = second_store_dir(home);
        // The filler goes; the decoy takes its place under the same name.
        Self::clear_slot(&slot)?;
        let mut engine = match Engine::init_at(&slot, passphrase, invite, name).await {
            Ok(engine) => engine,
            Err(e) => {
                let _ = Self::clear_slot(&slot);
                let _ = self.make_filler(&slot);
                return Err(e);
            }
        };
        engine.account.duress_erases_real = erase_real;
        engine.store.set_account(&engine.account)?;
        engine.store.flush().await?;
        engine.close().await;
        self.account.duress_decoy_set = true;
        self.store.set_account(&self.account)?;
        self.store.flush().await?;
        Ok(())
    }

    /// Removes the duress passphrase: its decoy profile is erased and a
    /// filler takes the slot again.
    pub async fn duress_remove(&mut self, home: &Path) -> Result<()> {
        if !self.duress_is_set(home) {
            return Err(EngineError::Invalid("no duress passphrase is set".into()));
        }
        let slot = second_store_dir(home);
        Self::clear_slot(&slot)?;
        self.make_filler(&slot)?;
        self.account.duress_decoy_set = false;
        self.store.set_account(&self.account)?;
        self.store.flush().await?;
        Ok(())
    }

    /// A filler store in `slot`, shaped like this profile when it was new.
    fn make_filler(&self, slot: &Path) -> Result<()> {
        Ok(Store::create_filler(slot, &self.account, ONE_TIME_KEYS)?)
    }

    /// Crypto-erases and deletes whatever store is in `slot`.
    fn clear_slot(slot: &Path) -> Result<()> {
        Store::crypto_erase(slot)?;
        match std::fs::remove_dir_all(slot) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io(e).into()),
        }
    }

    fn open_one(dir: &Path, passphrase: &str) -> Result<Engine> {
        let store = Store::open(dir, passphrase)?;
        let account = store.account()?;
        if account.account_id.is_nil() {
            return Err(EngineError::Invalid(
                "this profile never finished registering; delete it and run `sotto init` again"
                    .into(),
            ));
        }
        let identity = IdentityKeyPair::try_from(account.identity_key_pair.as_slice())
            .map_err(|_| StoreError::Corrupt("identity key".into()))?;
        let trust_root = PublicKey::deserialize(&account.trust_root)
            .map_err(|_| StoreError::Corrupt("trust root".into()))?;
        Ok(Engine {
            store,
            account,
            identity,
            trust_root,
            conn: None,
            anon: None,
            notices: Vec::new(),
            decoy: false,
            unchecked: false,
            retry_for: None,
        })
    }

    /// Whether `passphrase` is the one this open profile was opened with
    /// (the decoy's, when the duress passphrase opened it).
    pub fn check_passphrase(&self, passphrase: &str) -> Result<bool> {
        Ok(self.store.check_passphrase(passphrase)?)
    }

    /// Notices gathered by the last calls (group membership changes, refused changes).
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// My contact code, to give to others.
    pub fn code(&self) -> ContactCode {
        ContactCode::from_account_id(self.account.account_id)
    }

    /// When the signed prekey and Kyber last-resort key were last replaced (ms since the epoch).
    pub fn keys_rotated_at_ms(&self) -> u64 {
        self.account.keys_rotated_at_ms
    }

    /// My display name.
    pub fn name(&self) -> &str {
        &self.account.name
    }

    /// The fingerprint of my relay's sealed-sender trust root, as the relay
    /// prints it (`sotto-relay stats`) and `sotto note verify` names it: how
    /// someone checks that a proof rests on this relay.
    pub fn relay_fingerprint(&self) -> String {
        sotto_wire::invite::trust_root_fingerprint(&self.account.trust_root)
    }

    /// My half of every safety number: 30 digits derived from my identity key and account id.
    pub fn fingerprint(&self) -> Result<String> {
        let id = self.account.account_id.as_bytes();
        let key = self.identity.identity_key();
        let full = Fingerprint::new(2, 5200, id, key, id, key)
            .map_err(crypto)?
            .display_string()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        Ok(group_digits(&full[..30]))
    }

    /// The safety number between me and a contact, for the key the relay
    /// holds for them now (a key they reset since shows at once), and
    /// records that its number was shown (so [`Engine::trust`] may mark it
    /// verified). Offline, it is the number of the key last seen, and says so.
    pub async fn safety_number(&mut self, name: &str) -> Result<SafetyNumber> {
        let contact = self.contact(name)?;
        let offline = match self
            .refresh_identity(contact.account_id, &contact.name)
            .await
        {
            Ok(_) => None,
            Err(e) if is_offline(&e) => {
                self.forget_connections();
                Some(e.to_string())
            }
            Err(e) => return Err(e),
        };
        let status = self
            .store
            .identity_status(contact.account_id)?
            .ok_or_else(|| {
                EngineError::Invalid(format!(
                    "no identity key is known for {} yet and the relay cannot be reached ({}); \
                     try again when online",
                    contact.name,
                    offline.clone().unwrap_or_default()
                ))
            })?;
        let number = Fingerprint::new(
            2,
            5200,
            self.account.account_id.as_bytes(),
            self.identity.identity_key(),
            contact.account_id.as_bytes(),
            &status.current,
        )
        .map_err(crypto)?
        .display_string()
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
        self.store.mark_shown(contact.account_id, &status.current)?;
        self.store.flush().await?;
        Ok(SafetyNumber {
            digits: group_digits(&number),
            changed: status.changed(),
            offline,
        })
    }

    /// Asks the relay for `peer`'s identity key and records it as the key
    /// last seen. True when it differs from a key seen before (the contact
    /// reset their identity); the first key seen is trusted on first use.
    async fn refresh_identity(&mut self, peer: Uuid, name: &str) -> Result<bool> {
        let key = self.fetch_identity(peer, name).await?;
        let before = self.store.identity_status(peer)?.map(|s| s.current);
        if before.as_ref() == Some(&key) {
            return Ok(false);
        }
        self.store.note_identity(peer, &key)?;
        self.store.flush().await?;
        Ok(before.is_some())
    }

    /// The identity key the relay holds for `peer` (`name` for errors).
    pub(crate) async fn fetch_identity(&mut self, peer: Uuid, name: &str) -> Result<IdentityKey> {
        let conn = self.connection().await?;
        let Resp::Identity(found) = conn
            .request(Req::FetchIdentity(relay::FetchIdentity {
                account_id: peer.as_bytes().to_vec(),
            }))
            .await
            .map_err(|e| unknown_recipient(e, name))?
        else {
            return Err(TransportError::Unexpected.into());
        };
        Ok(IdentityKey::try_from(found.identity_key.as_slice())
            .map_err(|_| TransportError::Unexpected)?)
    }

    /// Asks the relay for every contact's identity key (one small request
    /// each) and says which changed since last seen, so that a contact's
    /// `identity reset` shows on the next `sync` even before they write.
    async fn check_contact_keys(&mut self) -> Result<()> {
        for contact in self.store.contacts()? {
            match self
                .refresh_identity(contact.account_id, &contact.name)
                .await
            {
                Ok(true) => self
                    .notices
                    .push(Notice::IdentityChanged(contact.name.clone())),
                Ok(false) | Err(EngineError::UnknownRecipient(_)) => {}
                Err(e) if is_offline(&e) => return Err(e),
                Err(e) => tracing::debug!("could not check a contact's key: {e}"),
            }
        }
        Ok(())
    }

    /// Adds a contact under a local name.
    pub async fn add_contact(&mut self, name: &str, code: &str) -> Result<Contact> {
        let name = self.check_field("a contact name", name, safe::MAX_NAME_CHARS, Lines::One)?;
        let name = name.as_str();
        let code: ContactCode = code
            .parse()
            .map_err(|e: sotto_wire::code::BadCode| EngineError::Invalid(e.to_string()))?;
        // Names match regardless of case, so "Bob" and "bob" cannot be two people.
        if let Some(existing) = self.find_contact(name)? {
            return Err(EngineError::ContactExists(existing.name));
        }
        if code.account_id() == self.account.account_id {
            return Err(EngineError::Invalid("that is your own contact code".into()));
        }
        let contact = Contact {
            name: name.to_string(),
            account_id: code.account_id(),
            added_at_ms: now_ms(),
            verified: false,
        };
        self.store.put_contact(&contact)?;
        self.store.flush().await?;
        Ok(contact)
    }

    /// Deletes a contact. Their messages stay (kept by account, not by name):
    /// `history CODE` shows them, and adding them again brings them back.
    pub async fn remove_contact(&mut self, name: &str) -> Result<Contact> {
        let contact = self.contact(name)?;
        self.store.delete_contact(&contact.name)?;
        self.store.flush().await?;
        Ok(contact)
    }

    /// Gives a contact a new name; their history and verification stay.
    pub async fn rename_contact(&mut self, old: &str, new: &str) -> Result<Contact> {
        let contact = self.contact(old)?;
        let new = self.check_field("a contact name", new, safe::MAX_NAME_CHARS, Lines::One)?;
        if let Some(other) = self.find_contact(&new)?
            && other.name != contact.name
        {
            return Err(EngineError::ContactExists(other.name));
        }
        self.store.delete_contact(&contact.name)?;
        let renamed = Contact {
            name: new,
            ..contact
        };
        self.store.put_contact(&renamed)?;
        self.store.flush().await?;
        Ok(renamed)
    }

    /// All contacts, with whether their identity key changed since I trusted it.
    pub fn contacts(&self) -> Result<Vec<(Contact, bool)>> {
        self.store
            .contacts()?
            .into_iter()
            .map(|c| {
                let changed = self
                    .store
                    .identity_status(c.account_id)?
                    .is_some_and(|s| s.changed());
                Ok((c, changed))
            })
            .collect()
    }

    /// Accepts a contact's current identity key (the one the relay holds, if
    /// it can be reached), which unblocks sending to them. Marks them
    /// verified only when `contact verify` showed this key's safety number,
    /// or when `i_compared` says the user compared it another way: accepting
    /// a key is not the same as having checked it.
    pub async fn trust(&mut self, name: &str, i_compared: bool) -> Result<Trusted> {
        let mut contact = self.contact(name)?;
        match self
            .refresh_identity(contact.account_id, &contact.name)
            .await
        {
            Ok(_) => {}
            Err(e) if is_offline(&e) => self.forget_connections(),
            Err(e) => return Err(e),
        }
        let Some(status) = self.store.identity_status(contact.account_id)? else {
            return Err(EngineError::Invalid(format!(
                "no identity key is known for {} yet and the relay cannot be reached; nothing \
                 changed. Try again when online",
                contact.name
            )));
        };
        let key_changed = status.changed();
        let shown = status.shown.as_ref() == Some(&status.current);
        let already = contact.verified && !key_changed;
        self.store.trust_identity(contact.account_id)?;
        contact.verified = already || shown || i_compared;
        self.store.put_contact(&contact)?;
        self.store.flush().await?;
        Ok(Trusted {
            key_changed,
            verified: if already {
                Verification::Already
            } else if shown {
                Verification::Shown
            } else if i_compared {
                Verification::SaidCompared
            } else {
                Verification::No
            },
        })
    }

    /// Stores `text` for `name`, then sends it; `Ok` only once the relay has
    /// it durably (a queued message is an error that says it is saved). See
    /// [`Engine::send_text_outcome`] for the typed outcome.
    pub async fn send_text(&mut self, name: &str, text: &str) -> Result<ShownMessage> {
        self.send_text_outcome(name, text).await?.relayed()
    }

    /// Stores `text` for `name`, then sends it. Returns once the relay has it
    /// durably, or once it is clear that it cannot get there now (it is then
    /// [`Delivery::Queued`]); an error means nothing will be sent.
    pub async fn send_text_outcome(&mut self, name: &str, text: &str) -> Result<Sent> {
        let contact = self.contact(name)?;
        self.check_text("a message", text)?;
        if self
            .store
            .identity_status(contact.account_id)?
            .is_some_and(|s| s.changed())
        {
            return Err(EngineError::IdentityChanged(contact.name));
        }
        let id: [u8; 16] = rand::rng().random();
        let sent_at_ms = now_ms();
        let body = Content {
            version: sotto_wire::CONTENT_VERSION,
            id: id.to_vec(),
            sent_at_ms,
            sender_name: self.account.name.clone(),
            body: Some(content::content::Body::Text(content::Text {
                body: text.to_string(),
            })),
        };
        let record = MessageRecord {
            id,
            peer: contact.account_id,
            direction: MessageDirection::Outgoing,
            sender_name: self.account.name.clone(),
            text: text.to_string(),
            sent_at_ms,
            received_at_ms: sent_at_ms,
            status: MessageStatus::Pending,
            group: None,
            expires_at_ms: None,
        };
        self.send_stored(
            &record,
            &OutboxEntry {
                id,
                recipient: contact.account_id,
                content: body.encode_to_vec(),
                created_at_ms: sent_at_ms,
                group: None,
                anonymous: false,
            },
        )
        .await
    }

    /// Stores a new outgoing message and its outbox entry, flushes, and sends
    /// the outbox: waits at most [`SEND_CONNECT_WAIT`] to reach the relay and
    /// [`SEND_WAIT`] for it to take the outbox, and says whether the message
    /// is with the relay or queued. An error means it failed for good (it is
    /// marked failed and out of the outbox).
    async fn send_stored(&mut self, record: &MessageRecord, entry: &OutboxEntry) -> Result<Sent> {
        self.store.insert_message(record)?;
        self.store.outbox_push(entry)?;
        // Durable before anything leaves: a crash from here on resends it.
        self.store.flush().await?;
        let reached = tokio::time::timeout(SEND_CONNECT_WAIT, self.connection())
            .await
            .map(|connected| connected.map(|_| ()));
        let drained = match reached {
            Ok(Ok(())) => match tokio::time::timeout(SEND_WAIT, self.drain_outbox()).await {
                Ok(drained) => drained.map(|_| ()),
                Err(_) => Err(EngineError::Invalid(format!(
                    "the relay did not take the message within {} s",
                    SEND_WAIT.as_secs()
                ))),
            },
            Ok(Err(e)) => Err(e),
            Err(_) => Err(EngineError::Invalid(format!(
                "the relay did not answer within {} s",
                SEND_CONNECT_WAIT.as_secs()
            ))),
        };
        if drained.as_ref().is_err_and(|e| !is_refusal(e)) {
            // Cut short or cut off: the next call connects afresh.
            self.forget_connections();
        }
        let stored = self
            .store
            .message(record.peer, record.id)?
            .ok_or_else(|| StoreError::Corrupt("message just stored".into()))?;
        let delivery = match (stored.status, drained) {
            (MessageStatus::Sent, _) => Delivery::Relayed,
            (MessageStatus::Failed, Err(e)) => return Err(e),
            (MessageStatus::Failed, Ok(())) => {
                return Err(EngineError::Invalid("the message could not be sent".into()));
            }
            // Still in the outbox, whatever the cause (offline, rate limit,
            // a ban...): saying so stops the user sending it twice.
            (_, Err(e)) => Delivery::Queued(e.to_string()),
            (_, Ok(())) => Delivery::Queued("the relay has not accepted it yet".into()),
        };
        let message = self.show(&stored);
        Ok(Sent {
            id: message.id.clone(),
            message,
            delivery,
        })
    }

    /// Sends everything waiting in the outbox, oldest first. Returns how many the relay accepted.
    ///
    /// A message to a contact whose identity changed stays in the outbox and
    /// the first such error is returned after trying the others.
    pub async fn drain_outbox(&mut self) -> Result<usize> {
        let mut accepted = 0;
        let mut first_error = None;
        for entry in self.store.outbox()? {
            match self.deliver(&entry).await {
                Ok(()) => accepted += 1,
                Err(e @ EngineError::Transport(TransportError::Connection(_)))
                | Err(e @ EngineError::Transport(TransportError::Connect { .. })) => {
                    // The relay is unreachable: the rest would fail the same way.
                    self.forget_connections();
                    return Err(e);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(accepted),
        }
    }

    async fn deliver(&mut self, entry: &OutboxEntry) -> Result<()> {
        match entry.group {
            Some(group) if entry.anonymous => self.deliver_anonymous(entry, group).await,
            Some(group) => self.deliver_group(entry, group).await,
            None => self.deliver_direct(entry).await,
        }
    }

    /// Sends one 1:1 entry, sealed sender v1.
    async fn deliver_direct(&mut self, entry: &OutboxEntry) -> Result<()> {
        let peer_name = self.peer_name(entry.recipient, "")?;
        let address = address_of(entry.recipient)?;
        // Two tries: the second after the relay says our session is for an old registration.
        for _ in 0..2 {
            let session = self.store.load_session(&address).await?;
            let usable = match &session {
                // A session with a key the user has since replaced by trusting
                // a new one (after a reset) is not used: libsignal would refuse it.
                Some(session) => {
                    self.session_usable(session)?
                        && self.session_trusted(entry.recipient, session)?
                }
                None => false,
            };
            let registration_id = match session {
                Some(session) if usable => session.remote_registration_id()?,
                _ => match self.start_session(entry.recipient, &peer_name).await {
                    Ok(registration_id) => registration_id,
                    Err(
                        e @ (EngineError::IdentityChanged(_) | EngineError::UnknownRecipient(_)),
                    ) => {
                        // Not sent later behind the user's back: they decide
                        // to resend once they have checked the new key.
                        self.fail(entry)?;
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                },
            };
            let certificate = self.sender_certificate().await?;
            let mut sessions = self.store.clone();
            let mut identities = self.store.clone();
            // sealed_sender_encrypt in two steps, to log the inner ciphertext
            // that a retry request would name.
            let inner = message_encrypt(
                &entry.content,
                &address,
                &mut sessions,
                &mut identities,
                SystemTime::now(),
                &mut rand::rng(),
            )
            .await?;
            let usmc = UnidentifiedSenderMessageContent::new(
                inner.message_type(),
                certificate,
                inner.serialize().to_vec(),
                ContentHint::Default,
                None,
            )?;
            self.log_sent(inner.serialize(), entry, None)?;
            let envelope =
                sealed_sender_encrypt_from_usmc(&address, &usmc, &identities, &mut rand::rng())
                    .await?;
            let conn = self.connection().await?;
            let answer = conn
                .request(Req::Send(relay::Send {
                    recipient: entry.recipient.as_bytes().to_vec(),
                    device_id: u32::from(DEVICE_ID),
                    registration_id,
                    envelope,
                }))
                .await;
            match answer {
                Ok(Resp::Sent(_)) => {
                    self.settle(entry, MessageStatus::Sent)?;
                    self.store.flush().await?;
                    return Ok(());
                }
                Ok(_) => return Err(TransportError::Unexpected.into()),
                Err(TransportError::Refused {
                    code: ErrorCode::StaleDevice,
                    ..
                }) => {
                    // They re-keyed: forget the old session and build a new one,
                    // which re-checks their identity key.
                    self.store.delete_session(&address)?;
                }
                Err(e) => {
                    let e = unknown_recipient(e, &peer_name);
                    if matches!(e, EngineError::UnknownRecipient(_)) {
                        self.fail(entry)?;
                    }
                    return Err(e);
                }
            }
        }
        Err(EngineError::Invalid(format!(
            "the relay keeps refusing our session with {peer_name}; try again later"
        )))
    }

    /// Remembers what the ciphertext `inner` held, so that its recipient can
    /// ask for it again (see [`Engine::on_retry_request`]).
    pub(crate) fn log_sent(
        &self,
        inner: &[u8],
        entry: &OutboxEntry,
        group: Option<[u8; 16]>,
    ) -> Result<()> {
        let message_id = Content::decode(entry.content.as_slice())
            .ok()
            .and_then(|c| <[u8; 16]>::try_from(c.id.as_slice()).ok())
            .unwrap_or(entry.id);
        self.store.log_sent(
            &Sha256::digest(inner).into(),
            &SentLogEntry {
                message_id,
                recipient: entry.recipient,
                group,
                content: entry.content.clone(),
                at_ms: now_ms(),
            },
        )?;
        Ok(())
    }

    /// Asks `sender` to send again a message we could unseal but not
    /// decrypt. Our session with them may be what broke, so it is archived:
    /// the request (and their copy) start a new one. Queued in the outbox,
    /// in the receive's staged writes, so it is sent by the next drain.
    async fn ask_again(&mut self, sender: Uuid, hash: [u8; 32]) -> Result<()> {
        let address = address_of(sender)?;
        if let Some(mut session) = self.store.load_session(&address).await? {
            session.archive_current_state()?;
            let mut sessions = self.store.clone();
            sessions.store_session(&address, &session).await?;
        }
        let (id, body) = groups::content(
            &self.account.name,
            content::content::Body::RetryRequest(content::RetryRequest {
                ciphertext_hash: hash.to_vec(),
            }),
        );
        self.queue_control(id, sender, &body)
    }

    /// A recipient could not open something we sent: send it again, once,
    /// under a new session (and, for a group, with our sender key again).
    async fn on_retry_request(
        &mut self,
        sender: Uuid,
        r: &content::RetryRequest,
    ) -> Result<Option<MessageRecord>> {
        let name = self.peer_name(sender, "")?;
        let logged = match <[u8; 32]>::try_from(r.ciphertext_hash.as_slice()) {
            Ok(hash) => self.store.sent_logged(&hash)?,
            Err(_) => None,
        };
        let Some(logged) = logged else {
            self.notices.push(Notice::Group(format!(
                "{name} could not open a message from you that is no longer kept here"
            )));
            return Ok(None);
        };
        // Only to whom it was for: a request cannot fetch someone else's message.
        let group = match logged.group {
            None if logged.recipient == sender => None,
            None => return Ok(None),
            Some(gid) => match self.store.group(gid)? {
                Some(g) if g.state.members.iter().any(|m| m.account == sender) => Some(g),
                _ => return Ok(None),
            },
        };
        if !self.store.mark_retried(logged.message_id, sender)? {
            self.notices.push(Notice::Group(format!(
                "{name} still cannot open a message you sent them (it was sent again once); \
                 it is marked not sent"
            )));
            if let Some(mut record) = self.store.message(sender, logged.message_id)? {
                record.status = MessageStatus::Failed;
                self.store.update_message(&record)?;
            }
            return Ok(None);
        }
        let address = address_of(sender)?;
        if let Some(mut session) = self.store.load_session(&address).await? {
            session.archive_current_state()?;
            let mut sessions = self.store.clone();
            sessions.store_session(&address, &session).await?;
        }
        let outbox_id = match group {
            Some(mut g) => {
                // Their copy of our sender key is gone or bad: send it again
                // with our next group message.
                g.sender_key_sent_to.retain(|a| *a != sender);
                self.store.put_group(&g)?;
                rand::rng().random()
            }
            None => {
                // The message shows as waiting until the relay has the new copy.
                if let Some(mut record) = self.store.message(sender, logged.message_id)? {
                    record.status = MessageStatus::Pending;
                    self.store.update_message(&record)?;
                }
                logged.message_id
            }
        };
        self.store.outbox_push(&OutboxEntry {
            id: outbox_id,
            recipient: sender,
            content: logged.content,
            created_at_ms: now_ms(),
            group: None,
            anonymous: false,
        })?;
        self.notices.push(Notice::Group(format!(
            "{name} could not open a message you sent; sending it again"
        )));
        Ok(None)
    }

    /// Takes a message that can never be delivered out of the outbox and marks it failed.
    fn fail(&self, entry: &OutboxEntry) -> Result<()> {
        self.settle(entry, MessageStatus::Failed)
    }

    /// Takes an entry out of the outbox and gives its message (if it has one:
    /// control messages do not) its final status. The caller flushes.
    fn settle(&self, entry: &OutboxEntry, status: MessageStatus) -> Result<()> {
        self.store.outbox_remove(entry.id)?;
        if let Some(mut record) = self.store.message(entry.recipient, entry.id)? {
            record.status = status;
            self.store.update_message(&record)?;
        }
        Ok(())
    }

    /// Fetches a prekey bundle and starts a session; returns the recipient's registration id.
    async fn start_session(&mut self, peer: Uuid, peer_name: &str) -> Result<u32> {
        let conn = self.connection().await?;
        let Resp::Bundle(bundle) = conn
            .request(Req::FetchBundle(relay::FetchBundle {
                account_id: peer.as_bytes().to_vec(),
                device_id: u32::from(DEVICE_ID),
            }))
            .await
            .map_err(|e| unknown_recipient(e, peer_name))?
        else {
            return Err(TransportError::Unexpected.into());
        };
        let identity =
            IdentityKey::try_from(bundle.identity_key.as_slice()).map_err(damaged_bundle)?;
        if let Some(status) = self.store.identity_status(peer)?
            && status.trusted.as_ref() != Some(&identity)
        {
            // Remember the new key so `contact verify` can show its safety number.
            self.store.note_identity(peer, &identity)?;
            self.store.flush().await?;
            return Err(EngineError::IdentityChanged(peer_name.to_string()));
        }
        let signed = bundle
            .signed_pre_key
            .ok_or_else(|| EngineError::Invalid("key bundle without a signed prekey".into()))?;
        let kyber = bundle
            .kyber_pre_key
            .ok_or_else(|| EngineError::Invalid("key bundle without a Kyber prekey".into()))?;
        let pre_key = match bundle.pre_key {
            Some(k) => Some((
                k.id.into(),
                PublicKey::deserialize(&k.public_key).map_err(damaged_bundle)?,
            )),
            None => None,
        };
        let device = DeviceId::new(u8::try_from(bundle.device_id).map_err(damaged_bundle)?)
            .map_err(damaged_bundle)?;
        let prekey_bundle = PreKeyBundle::new(
            bundle.registration_id,
            device,
            pre_key,
            signed.id.into(),
            PublicKey::deserialize(&signed.public_key).map_err(damaged_bundle)?,
            signed.signature,
            kyber.id.into(),
            kem::PublicKey::deserialize(&kyber.public_key).map_err(damaged_bundle)?,
            kyber.signature,
            identity,
        )?;
        let mut sessions = self.store.clone();
        let mut identities = self.store.clone();
        let result = process_prekey_bundle(
            &address_of(peer)?,
            &mut sessions,
            &mut identities,
            &prekey_bundle,
            SystemTime::now(),
            &mut rand::rng(),
        )
        .await;
        match result {
            Ok(()) => Ok(bundle.registration_id),
            Err(SignalProtocolError::UntrustedIdentity(_)) => {
                self.store.note_identity(peer, &identity)?;
                self.store.flush().await?;
                Err(EngineError::IdentityChanged(peer_name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fetches, stores and acknowledges everything in my mailbox.
    ///
    /// `on_message` sees each new message after it is durably stored and before
    /// the relay is told to delete it. Also resends the outbox and tops up prekeys.
    pub async fn sync(
        &mut self,
        on_message: &mut dyn FnMut(&ShownMessage),
        on_notice: &mut dyn FnMut(&Notice),
    ) -> Result<usize> {
        let result = self.sync_inner(on_message, on_notice).await;
        if result.as_ref().is_err_and(is_offline) {
            self.forget_connections();
        }
        result
    }

    /// Drops cached connections after a network failure, so the next call
    /// connects afresh (the relay may have restarted) instead of reusing a dead one.
    fn forget_connections(&mut self) {
        self.conn = None;
        self.anon = None;
    }

    async fn sync_inner(
        &mut self,
        on_message: &mut dyn FnMut(&ShownMessage),
        on_notice: &mut dyn FnMut(&Notice),
    ) -> Result<usize> {
        let total = self.fetch_mailbox(on_message, on_notice).await?;
        self.check_contact_keys().await?;
        if let Err(e) = self.drain_outbox().await {
            on_notice(&Notice::OutboxPending(e.to_string()));
        }
        if let Err(e) = self.group_housekeeping().await {
            if is_offline(&e) {
                return Err(e);
            }
            self.notices
                .push(Notice::Group(format!("group upkeep failed: {e}")));
        }
        for notice in self.take_notices() {
            on_notice(&notice);
        }
        let counts = self.top_up().await?;
        if counts.topped_up {
            on_notice(&Notice::ToppedUp(ONE_TIME_KEYS));
        }
        Ok(total)
    }

    /// Fetches, stores and acknowledges everything in the mailbox.
    async fn fetch_mailbox(
        &mut self,
        on_message: &mut dyn FnMut(&ShownMessage),
        on_notice: &mut dyn FnMut(&Notice),
    ) -> Result<usize> {
        let mut total = 0;
        loop {
            let conn = self.connection().await?;
            let Resp::Envelopes(batch) = conn
                .request(Req::Fetch(relay::Fetch { limit: FETCH_BATCH }))
                .await?
            else {
                return Err(TransportError::Unexpected.into());
            };
            if batch.envelopes.is_empty() {
                break;
            }
            total += self.receive(batch.envelopes, on_message, on_notice).await?;
            if !batch.more {
                break;
            }
        }
        Ok(total)
    }

    /// Stays connected and hands over messages as the relay pushes them, until `stop` resolves.
    ///
    /// Meanwhile it carries out `commands` from the service's faces, also
    /// while the relay cannot be reached (a send then reports its message
    /// queued within [`SEND_CONNECT_WAIT`], and the queue goes out by itself
    /// once the relay is back).
    pub async fn listen(
        &mut self,
        on_message: &mut dyn FnMut(&ShownMessage),
        on_notice: &mut dyn FnMut(&Notice),
        commands: &mut tokio::sync::mpsc::Receiver<EngineCommand>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(250);
        let mut told_offline = false;
        let mut connected_before = false;
        loop {
            if self.conn.is_none() {
                // (Re)connect and catch up; the relay may be down or restarting.
                let synced = tokio::select! {
                    _ = &mut stop => break,
                    synced = self.sync(on_message, on_notice) => synced,
                };
                match synced {
                    Ok(_) => {
                        backoff = Duration::from_millis(250);
                        told_offline = false;
                        on_notice(&Notice::Connected {
                            again: connected_before,
                        });
                        connected_before = true;
                    }
                    Err(e) if is_offline(&e) => {
                        if !told_offline {
                            on_notice(&Notice::Offline(e.to_string()));
                            told_offline = true;
                        }
                        self.conn = None;
                        // Commands are served while we wait: a send is
                        // queued at once instead of waiting for the relay
                        // (it waited 11 minutes in the walkthrough).
                        let wait = tokio::time::sleep(backoff);
                        tokio::pin!(wait);
                        loop {
                            tokio::select! {
                                _ = &mut stop => return self.stop_listening().await,
                                _ = &mut wait => break,
                                Some(command) = commands.recv() => self.run_command(command).await,
                            }
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            // A periodic fetch covers pushes lost to a broken connection;
            // it comes sooner while something waits in the outbox (a send
            // the relay refused for now, or one queued while it was away).
            let queued = self.store.outbox().map(|o| !o.is_empty()).unwrap_or(false);
            let resync = tokio::time::sleep(if queued {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(30)
            });
            let push = async {
                match self.conn.as_ref() {
                    Some(conn) => conn.next_push().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break,
                Some(command) = commands.recv() => self.run_command(command).await,
                _ = resync => {
                    if let Err(e) = self.sync(on_message, on_notice).await {
                        if !is_offline(&e) {
                            return Err(e);
                        }
                        self.conn = None;
                    }
                }
                pushed = push => match pushed {
                    Ok(push) => {
                        if let Err(e) = self.receive(push.envelopes, on_message, on_notice).await {
                            if !is_offline(&e) {
                                return Err(e);
                            }
                            self.conn = None;
                        }
                    }
                    // One bad push stream: the envelope stays in the mailbox
                    // and the next fetch brings it.
                    Err(TransportError::Frame(e)) => {
                        tracing::debug!("a push stream failed: {e}");
                    }
                    Err(e) => {
                        tracing::debug!("push stream ended: {e}; reconnecting");
                        self.conn = None;
                    }
                }
            }
        }
        self.stop_listening().await
    }

    async fn stop_listening(&mut self) -> Result<()> {
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
        Ok(())
    }

    async fn run_command(&mut self, command: EngineCommand) {
        match command {
            EngineCommand::Run(job) => job.call(self).await,
        }
    }

    /// Decrypts and stores envelopes, flushes, then acknowledges them.
    async fn receive(
        &mut self,
        envelopes: Vec<relay::Envelope>,
        on_message: &mut dyn FnMut(&ShownMessage),
        on_notice: &mut dyn FnMut(&Notice),
    ) -> Result<usize> {
        let mut seqs = Vec::with_capacity(envelopes.len());
        let mut shown = Vec::new();
        // Session updates and message records land together or not at all.
        self.store.begin_staging();
        for envelope in envelopes {
            match self.open_envelope(&envelope, on_notice).await {
                Ok(Some(record)) => shown.push(self.show(&record)),
                Ok(None) => {}
                Err(e) => {
                    // Nothing written, nothing acknowledged: the relay redelivers.
                    self.store.abort_staged();
                    self.notices.clear();
                    return Err(e);
                }
            }
            seqs.push(envelope.seq);
        }
        self.store.commit_staged()?;
        for notice in self.take_notices() {
            on_notice(&notice);
        }
        // Store, then acknowledge: nothing is deleted on the relay before it is on our disk.
        self.store.flush().await?;
        for message in &shown {
            on_message(message);
        }
        if std::env::var_os("SOTTO_DANGER_CRASH_BEFORE_ACK").is_some() {
            // Test hook for the crash-between-store-and-ack scenario.
            std::process::abort();
        }
        if !seqs.is_empty() {
            let conn = self.connection().await?;
            conn.request(Req::Ack(relay::Ack { seqs })).await?;
        }
        Ok(shown.len())
    }

    /// Decrypts one envelope. `Ok(None)` for duplicates, control messages and
    /// envelopes that can never be read.
    async fn open_envelope(
        &mut self,
        envelope: &relay::Envelope,
        on_notice: &mut dyn FnMut(&Notice),
    ) -> Result<Option<MessageRecord>> {
        self.retry_for = None;
        let (sender, plain) = match self.unseal(envelope).await {
            Ok(d) => d,
            Err(SignalProtocolError::DuplicatedMessage(..)) => return Ok(None),
            Err(e @ SignalProtocolError::ApplicationCallbackError(..)) => return Err(e.into()),
            Err(e) => {
                // Not sealed sender: perhaps an anonymous group envelope.
                // Tried only here, as trying every group's key on every
                // envelope would read each group's state per message.
                if let Some((group, plain)) = self.open_anonymous_envelope(&envelope.envelope)? {
                    return self.on_anonymous_envelope(group, &plain).await;
                }
                on_notice(&Notice::Undecryptable {
                    seq: envelope.seq,
                    reason: e.to_string(),
                });
                if let Some((sender, hash)) = self.retry_for.take() {
                    // Its sender is known: ask them to send it again.
                    self.ask_again(sender, hash).await?;
                }
                return Ok(None);
            }
        };
        let content = match Content::decode(plain.as_slice()) {
            Ok(c) => c,
            Err(_) => {
                on_notice(&Notice::Undecryptable {
                    seq: envelope.seq,
                    reason: "message content is malformed".into(),
                });
                return Ok(None);
            }
        };
        if self
            .store
            .identity_status(sender)?
            .is_some_and(|s| s.changed())
        {
            on_notice(&Notice::IdentityChanged(
                self.peer_name(sender, &content.sender_name)?,
            ));
        }
        let Ok(id) = <[u8; 16]>::try_from(content.id.as_slice()) else {
            return Ok(None);
        };
        let text = match &content.body {
            Some(content::content::Body::Text(t)) => t.body.clone(),
            Some(content::content::Body::RetryRequest(r)) => {
                return self.on_retry_request(sender, r).await;
            }
            Some(other) => return self.receive_group_content(sender, &content, other).await,
            // A newer client's message kind we cannot show: drop it rather than fail the batch.
            None => return Ok(None),
        };
        let record = MessageRecord {
            id,
            peer: sender,
            direction: MessageDirection::Incoming,
            // A modified app can send anything: made safe and cut here, so
            // what is stored and shown is already safe.
            sender_name: safe::clean_field(&content.sender_name, safe::MAX_NAME_CHARS, Lines::One),
            text: safe::clean_field(&text, MAX_TEXT_BYTES, Lines::Many),
            sent_at_ms: content.sent_at_ms,
            received_at_ms: now_ms(),
            status: MessageStatus::Received,
            group: None,
            expires_at_ms: None,
        };
        // The receiver drops duplicates by (sender, id): a resend after a lost ack shows once.
        Ok(self.store.insert_message(&record)?.then_some(record))
    }

    /// The conversation with someone, oldest first: a contact by name, or
    /// anyone by contact code or by the `~Name` their messages show.
    pub fn history(&self, name: &str) -> Result<Vec<ShownMessage>> {
        let peer = self.peer_of(name)?;
        Ok(self
            .store
            .messages_with(peer)?
            .iter()
            .map(|m| self.show(m))
            .collect())
    }

    /// Deletes one message from this computer only (the other people in the
    /// chat keep theirs): `peer` and `id` as in [`ShownMessage`]. A message
    /// of mine still waiting in the outbox is cancelled with it: a person who
    /// deletes an unsent message expects it not to go out (as in Signal or
    /// WhatsApp), not to have it reach the others later.
    pub async fn delete_message_here(&mut self, peer: &str, id: &str) -> Result<DeletedHere> {
        let peer: ContactCode = peer
            .parse()
            .map_err(|e: sotto_wire::code::BadCode| EngineError::Invalid(e.to_string()))?;
        let id: [u8; 16] = crate::group::hex_decode(id)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| EngineError::Invalid("that is not a message id".into()))?;
        let Some(record) = self.store.message(peer.account_id(), id)? else {
            return Ok(DeletedHere::Missing);
        };
        // Only my own message's entry: the same id and the same chat (a
        // group entry names the group; a 1:1 entry the recipient).
        let queued = record.direction == MessageDirection::Outgoing
            && self.store.outbox()?.iter().any(|e| {
                e.id == id
                    && match (&e.group, &record.group) {
                        (Some(g), Some(r)) => g[..] == r[..],
                        (None, None) => e.recipient == record.peer,
                        _ => false,
                    }
            });
        // Both or neither: a crash between them must not leave a deleted
        // message that still goes out.
        self.store.begin_staging();
        let staged = (|| {
            if queued {
                self.store.outbox_remove(id)?;
            }
            self.store.delete_message(record.peer, id)
        })();
        match staged {
            Ok(_) => self.store.commit_staged()?,
            Err(e) => {
                self.store.abort_staged();
                return Err(e.into());
            }
        }
        self.store.flush().await?;
        Ok(if queued {
            DeletedHere::Cancelled
        } else {
            DeletedHere::Deleted
        })
    }

    /// People who wrote to me and are not my contacts: their contact code and
    /// the name they chose (as their latest message gives it), for a face
    /// that lists their chats (`history CODE` opens one).
    pub fn strangers(&self) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(Uuid, String, u64)> = Vec::new();
        for m in self.store.direct_messages()? {
            if m.direction != MessageDirection::Incoming
                || self.store.contact_by_account(m.peer)?.is_some()
            {
                continue;
            }
            match out.iter_mut().find(|(peer, _, _)| *peer == m.peer) {
                Some(seen) if seen.2 >= m.sent_at_ms => {}
                Some(seen) => *seen = (m.peer, m.sender_name.clone(), m.sent_at_ms),
                None => out.push((m.peer, m.sender_name.clone(), m.sent_at_ms)),
            }
        }
        Ok(out
            .into_iter()
            .map(|(peer, name, _)| (ContactCode::from_account_id(peer).to_string(), name))
            .collect())
    }

    /// The app's settings saved in this profile (defaults if none).
    pub fn app_prefs(&self) -> Result<crate::store::AppPrefs> {
        Ok(self.store.app_prefs()?)
    }

    /// Saves the app's settings in this profile (encrypted like the rest).
    pub async fn set_app_prefs(&mut self, prefs: &crate::store::AppPrefs) -> Result<()> {
        self.store.set_app_prefs(prefs)?;
        self.store.flush().await?;
        Ok(())
    }

    /// When each conversation last had a message, by this computer's clock
    /// (when I sent it or received it, not the time the sender claims, so
    /// nobody can pin their chat to the top with a future date). Keyed by
    /// contact code for a 1:1 chat and by hex group id for a group (the two
    /// cannot clash: a code starts with `sotto-`).
    pub fn last_message_at(&self) -> Result<std::collections::HashMap<String, u64>> {
        let mut out = std::collections::HashMap::new();
        for m in self.store.all_messages()? {
            let key = match &m.group {
                Some(g) => crate::group::hex(g),
                None => ContactCode::from_account_id(m.peer).to_string(),
            };
            let at = out.entry(key).or_insert(0);
            *at = (*at).max(m.received_at_ms);
        }
        Ok(out)
    }

    /// Deletes a whole conversation from this computer only (the others keep
    /// theirs): the 1:1 chat with `who` (named as [`Engine::history`] takes
    /// it) or, with `group`, a group's messages (the group itself stays).
    /// Returns how many messages went.
    pub async fn delete_history_here(&mut self, who: &str, group: bool) -> Result<usize> {
        let records = if group {
            let g = self.find_group(who)?;
            self.store.group_messages(&g.id)?
        } else {
            self.store.messages_with(self.peer_of(who)?)?
        };
        for m in &records {
            self.store.delete_message(m.peer, m.id)?;
        }
        self.store.flush().await?;
        Ok(records.len())
    }

    /// Relay-side prekey counts, uploading more first if they run low, and
    /// replacing the signed prekey and Kyber last-resort key once they are
    /// [`ROTATE_SIGNED_KEYS_MS`] old.
    pub async fn top_up(&mut self) -> Result<KeyCounts> {
        self.top_up_at(now_ms()).await
    }

    /// [`Engine::top_up`] as if the time were `now_ms` (tests drive rotation with it).
    pub async fn top_up_at(&mut self, now_ms: u64) -> Result<KeyCounts> {
        let (pre_keys, kyber_pre_keys, low) = self.key_counts().await?;
        let rotate = now_ms.saturating_sub(self.account.keys_rotated_at_ms) > ROTATE_SIGNED_KEYS_MS;
        if !low && !rotate {
            return Ok(KeyCounts {
                pre_keys,
                kyber_pre_keys,
                topped_up: false,
            });
        }
        let keys = self
            .generate_keys(if low { ONE_TIME_KEYS } else { 0 }, rotate)
            .await?;
        let conn = self.connection().await?;
        conn.request(Req::UploadPreKeys(relay::UploadPreKeys {
            pre_keys: keys.pre_keys,
            kyber_pre_keys: keys.kyber_pre_keys,
            signed_pre_key: keys.signed_pre_key,
            kyber_last_resort: keys.kyber_last_resort,
        }))
        .await?;
        if rotate {
            // The old private halves stay in the store, so messages already
            // sent against them still open.
            self.account.keys_rotated_at_ms = now_ms;
            self.store.set_account(&self.account)?;
            self.store.flush().await?;
            tracing::info!("replaced the signed prekey and the Kyber last-resort key");
        }
        let (pre_keys, kyber_pre_keys, _) = self.key_counts().await?;
        Ok(KeyCounts {
            pre_keys,
            kyber_pre_keys,
            topped_up: low,
        })
    }

    /// Relay-side prekey counts, without topping up.
    pub async fn counts(&mut self) -> Result<KeyCounts> {
        let (pre_keys, kyber_pre_keys, _) = self.key_counts().await?;
        Ok(KeyCounts {
            pre_keys,
            kyber_pre_keys,
            topped_up: false,
        })
    }

    async fn key_counts(&mut self) -> Result<(u32, u32, bool)> {
        let conn = self.connection().await?;
        let Resp::PreKeyCount(count) = conn
            .request(Req::PreKeyCount(relay::PreKeyCountRequest {}))
            .await?
        else {
            return Err(TransportError::Unexpected.into());
        };
        Ok((count.pre_keys, count.kyber_pre_keys, count.low))
    }

    /// Replaces this profile's identity key (a re-keyed device). Contacts will
    /// see a changed safety number and must re-trust it.
    ///
    /// Nothing sent to the old key is lost: the mailbox is fetched, stored
    /// and acknowledged first (`on_message` and `on_notice` see what arrives,
    /// as in [`Engine::sync`]); the old key pair is kept for
    /// [`RETIRED_IDENTITY_KEEP_MS`] to open what peers sealed to it before they
    /// learned the new one (sessions and prekeys of the old key stay too);
    /// and the new key is saved as pending before the relay hears of it, so
    /// a crash between the relay switching keys and this profile saving the
    /// switch is finished (or undone) by the next connection.
    pub async fn reset_identity(
        &mut self,
        on_message: &mut dyn FnMut(&ShownMessage),
        on_notice: &mut dyn FnMut(&Notice),
    ) -> Result<()> {
        // What the relay already holds was sealed to the old key: read it now.
        let fetched = self.fetch_mailbox(on_message, on_notice).await;
        if fetched.as_ref().is_err_and(is_offline) {
            self.forget_connections();
        }
        fetched?;
        if let Some(hook) = std::env::var_os("SOTTO_DANGER_RESET_PAUSE") {
            danger_pause(std::path::Path::new(&hook)).await;
        }
        let mut rng = rand::rng();
        let new_identity = IdentityKeyPair::generate(&mut rng);
        let registration_id = rng.random_range(1..16380);
        let old_identity = self.identity;
        let conn = self.connection().await?;
        let nonce = challenge(conn).await?;
        let exporter = conn.exporter()?;
        // Keys for the new identity are signed by it.
        self.identity = new_identity;
        let keys = self.generate_keys(ONE_TIME_KEYS, true).await;
        self.identity = old_identity;
        let keys = keys?;
        let signature = new_identity
            .private_key()
            .calculate_signature(
                &transcript(Purpose::ResetIdentity, &exporter, &nonce),
                &mut rng,
            )
            .map_err(crypto)?;
        self.account.pending_identity = Some(IdentityRecord {
            identity_key_pair: new_identity.serialize().to_vec(),
            registration_id,
            at_ms: now_ms(),
        });
        self.store.set_account(&self.account)?;
        self.store.flush().await?;
        let answer = match self.conn.as_ref() {
            Some(conn) => {
                conn.request(Req::ResetIdentity(relay::ResetIdentity {
                    identity_key: new_identity.identity_key().serialize().to_vec(),
                    registration_id,
                    new_key_signature: signature.to_vec(),
                    signed_pre_key: keys.signed_pre_key,
                    kyber_last_resort: keys.kyber_last_resort,
                    pre_keys: keys.pre_keys,
                    kyber_pre_keys: keys.kyber_pre_keys,
                }))
                .await
            }
            None => Err(TransportError::Connection("not connected".into())),
        };
        match answer {
            Ok(Resp::Done(_)) => {
                if std::env::var_os("SOTTO_DANGER_CRASH_AFTER_RESET").is_some() {
                    // Test hook: the relay switched keys, this profile has not yet.
                    std::process::abort();
                }
                self.adopt_pending()?;
                self.store.flush().await?;
                Ok(())
            }
            Err(e @ TransportError::Refused { .. }) => {
                // The relay kept the old key.
                self.drop_pending()?;
                self.store.flush().await?;
                Err(e.into())
            }
            Ok(_) | Err(_) => {
                // The relay may or may not have switched: ask it afresh.
                self.forget_connections();
                let asked = self.connection().await.map(|_| ());
                match asked {
                    Ok(()) if self.identity.identity_key() == new_identity.identity_key() => Ok(()),
                    Ok(()) => Err(EngineError::Invalid(
                        "the relay did not take the new identity key; nothing changed. \
                         Run `sotto identity reset` again"
                            .into(),
                    )),
                    Err(e) => Err(EngineError::Invalid(format!(
                        "{e}. The relay may or may not have taken the new identity key; the \
                         next `sotto` command that reaches it finds out and finishes or undoes \
                         the reset (nothing is lost either way)"
                    ))),
                }
            }
        }
    }

    /// The relay holds the pending identity key: it becomes ours, and the
    /// one it replaces is kept to open late messages. The caller flushes.
    fn adopt_pending(&mut self) -> Result<()> {
        let Some(pending) = self.account.pending_identity.take() else {
            return Ok(());
        };
        let new = IdentityKeyPair::try_from(pending.identity_key_pair.as_slice())
            .map_err(|_| StoreError::Corrupt("pending identity key".into()))?;
        let now = now_ms();
        self.account
            .retired_identities
            .retain(|r| now.saturating_sub(r.at_ms) < RETIRED_IDENTITY_KEEP_MS);
        self.account.retired_identities.push(IdentityRecord {
            identity_key_pair: std::mem::take(&mut self.account.identity_key_pair),
            registration_id: self.account.registration_id,
            at_ms: now,
        });
        self.account.identity_key_pair = pending.identity_key_pair;
        self.account.registration_id = pending.registration_id;
        // The relay certifies the new key from now on.
        self.account.sender_certificate = None;
        self.account.keys_rotated_at_ms = now;
        self.identity = new;
        // Sessions built on the old key stay, so late messages on them still
        // open; `session_usable` stops us sending on them, so peers get a
        // new session from the new key and see the changed safety number.
        self.store.set_account(&self.account)?;
        tracing::info!("identity key replaced");
        Ok(())
    }

    /// The relay kept our key: forget the pending one. The caller flushes.
    fn drop_pending(&mut self) -> Result<()> {
        if self.account.pending_identity.take().is_some() {
            self.store.set_account(&self.account)?;
        }
        Ok(())
    }

    /// Our earlier identity keys still kept (and a pending one), as stores
    /// that open what was sealed to them.
    pub(crate) fn earlier_identities(&self) -> Vec<AsIdentity> {
        let now = now_ms();
        self.account
            .retired_identities
            .iter()
            .rev()
            .filter(|r| now.saturating_sub(r.at_ms) < RETIRED_IDENTITY_KEEP_MS)
            .chain(self.account.pending_identity.iter())
            .filter_map(|r| {
                let pair = IdentityKeyPair::try_from(r.identity_key_pair.as_slice()).ok()?;
                Some(AsIdentity::new(self.store.clone(), pair, r.registration_id))
            })
            .collect()
    }

    /// Whether `session` is with the key we trust for `peer` (any key if we
    /// have recorded none).
    fn session_trusted(&self, peer: Uuid, session: &SessionRecord) -> Result<bool> {
        Ok(
            match self.store.identity_status(peer)?.and_then(|s| s.trusted) {
                Some(trusted) => {
                    session.remote_identity_key_bytes()?.as_deref()
                        == Some(&trusted.serialize()[..])
                }
                None => true,
            },
        )
    }

    /// Whether we may send on `session`: it has a sending chain and was
    /// built on our current identity key (not one replaced by `identity reset`).
    pub(crate) fn session_usable(&self, session: &SessionRecord) -> Result<bool> {
        Ok(session
            .has_usable_sender_chain(SystemTime::now(), SessionUsabilityRequirements::empty())?
            && session.local_identity_key_bytes()?.as_slice()
                == &self.identity.identity_key().serialize()[..])
    }

    /// Closes the relay connection, if any.
    pub async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
        if let Some(conn) = self.anon.take() {
            conn.close().await;
        }
    }

    /// Checks a field this user typed before others see it (see
    /// [`safe::check_field`]); returns it trimmed.
    pub(crate) fn check_field(
        &self,
        what: &str,
        s: &str,
        max_chars: usize,
        lines: Lines,
    ) -> Result<String> {
        if self.unchecked {
            return Ok(s.to_string());
        }
        safe::check_field(what, s, max_chars, lines).map_err(EngineError::Invalid)
    }

    /// Checks a message text this user typed: at most [`MAX_TEXT_BYTES`],
    /// line breaks and tabs but no other control or text-direction
    /// characters. The text is sent as typed (its indentation kept).
    pub(crate) fn check_text(&self, what: &str, text: &str) -> Result<()> {
        if self.unchecked {
            return Ok(());
        }
        // A blank message would show as a blank line from us.
        if text.trim().is_empty() {
            return Err(EngineError::Invalid(format!(
                "{what} is empty: nothing was sent or kept. Put the text in quotes"
            )));
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(EngineError::Invalid(format!(
                "{what} is too long: {} bytes, the limit is {MAX_TEXT_BYTES}",
                text.len()
            )));
        }
        safe::check_field(what, text, usize::MAX, Lines::Many)
            .map(drop)
            .map_err(EngineError::Invalid)
    }

    /// Turns off the checks on what this user types, so this engine sends
    /// what a modified client could: names, titles and texts with control
    /// and text-direction characters. Only for tests that prove the other
    /// members' apps clean and escape them.
    #[doc(hidden)]
    pub fn danger_skip_checks(&mut self) {
        self.unchecked = true;
    }

    /// Sets this profile's display name **without** any check (see
    /// [`Engine::danger_skip_checks`]).
    #[doc(hidden)]
    pub async fn danger_set_name(&mut self, name: &str) -> Result<()> {
        self.account.name = name.to_string();
        self.store.set_account(&self.account)?;
        self.store.flush().await?;
        Ok(())
    }

    fn contact(&self, name: &str) -> Result<Contact> {
        self.find_contact(name)?
            .ok_or_else(|| EngineError::UnknownContact(name.trim().to_string()))
    }

    /// The contact with this name, regardless of case (as group titles are
    /// matched), the exact name first.
    pub(crate) fn find_contact(&self, name: &str) -> Result<Option<Contact>> {
        let name = name.trim();
        if let Some(c) = self.store.contact(name)? {
            return Ok(Some(c));
        }
        let lower = name.to_lowercase();
        let mut found: Vec<Contact> = self
            .store
            .contacts()?
            .into_iter()
            .filter(|c| c.name.to_lowercase() == lower)
            .collect();
        // Two names differing only in case predate this rule: ask for the exact one.
        Ok(if found.len() == 1 { found.pop() } else { None })
    }

    /// Whose conversation `who` names: a contact, a contact code, or
    /// `~Name`, the name someone who is not a contact gave their messages.
    fn peer_of(&self, who: &str) -> Result<Uuid> {
        if let Some(c) = self.find_contact(who)? {
            return Ok(c.account_id);
        }
        if let Ok(code) = who.parse::<ContactCode>() {
            return Ok(code.account_id());
        }
        if let Some(name) = who.trim().strip_prefix('~') {
            let lower = name.trim().to_lowercase();
            let mut peers: Vec<Uuid> = Vec::new();
            for m in self.store.direct_messages()? {
                if m.direction == MessageDirection::Incoming
                    && m.sender_name.to_lowercase() == lower
                    && !peers.contains(&m.peer)
                    && self.store.contact_by_account(m.peer)?.is_none()
                {
                    peers.push(m.peer);
                }
            }
            match peers.as_slice() {
                [one] => return Ok(*one),
                [] => {}
                several => {
                    let codes: Vec<String> = several
                        .iter()
                        .map(|p| ContactCode::from_account_id(*p).to_string())
                        .collect();
                    return Err(EngineError::Invalid(format!(
                        "{} people who are not your contacts call themselves \"{}\": {}; \
                         use `sotto history CODE` with one of these codes",
                        several.len(),
                        name.trim(),
                        codes.join(", ")
                    )));
                }
            }
        }
        Err(EngineError::UnknownContact(who.trim().to_string()))
    }

    fn peer_name(&self, peer: Uuid, claimed: &str) -> Result<String> {
        Ok(match self.store.contact_by_account(peer)? {
            Some(c) => c.name,
            None if !claimed.trim().is_empty() => format!(
                "~{}",
                safe::clean_field(claimed, safe::MAX_NAME_CHARS, Lines::One)
            ),
            None => ContactCode::from_account_id(peer).to_string(),
        })
    }

    fn show(&self, m: &MessageRecord) -> ShownMessage {
        let outgoing = m.direction == MessageDirection::Outgoing;
        let contact = self.store.contact_by_account(m.peer).ok().flatten();
        let from_contact = outgoing || contact.is_some();
        let from = match (outgoing, contact) {
            (true, _) => "me".to_string(),
            (false, Some(c)) => c.name,
            (false, None) => m.sender_name.clone(),
        };
        let group = m.group.as_deref().map(|gid| {
            let title = <[u8; 16]>::try_from(gid)
                .ok()
                .and_then(|id| self.store.group_title(id).ok().flatten())
                .unwrap_or_default();
            (hex(gid), title)
        });
        ShownMessage {
            id: hex(&m.id),
            from,
            from_contact,
            peer_code: ContactCode::from_account_id(m.peer).to_string(),
            outgoing,
            text: m.text.clone(),
            sent_at_ms: m.sent_at_ms,
            status: match m.status {
                MessageStatus::Pending => "pending",
                MessageStatus::Sent => "sent",
                MessageStatus::Received => "received",
                MessageStatus::Failed => "failed",
            },
            group,
        }
    }

    /// A new connection to our relay, by the route that worked last time;
    /// remembers the route that won (UDP-blocking networks get TCP at once).
    pub(crate) async fn connect(&mut self) -> Result<Connection> {
        let prefer = Route::from_hint(self.account.transport_hint.as_deref());
        let conn =
            Connection::connect_preferring(&self.account.relay, self.account.spki_pin, prefer)
                .await?;
        if conn.route() != prefer {
            self.account.transport_hint = Some(conn.route().as_str().to_string());
            self.store.set_account(&self.account)?;
        }
        Ok(conn)
    }

    /// The authenticated connection, opened on first use.
    async fn connection(&mut self) -> Result<&Connection> {
        if self.conn.is_none() {
            let conn = self.connect().await?;
            match authenticate(&conn, &self.account, &self.identity).await {
                Ok(()) => {
                    if self.account.pending_identity.is_some() {
                        // An `identity reset` cut short: the relay still
                        // holds our old key, so the reset never happened.
                        self.drop_pending()?;
                        self.store.flush().await?;
                    }
                }
                Err(EngineError::Transport(TransportError::Refused {
                    code: ErrorCode::BadSignature,
                    ..
                })) if self.account.pending_identity.is_some() => {
                    // An `identity reset` cut short after the relay took the
                    // new key: prove it, then finish the reset here.
                    let pending = self
                        .account
                        .pending_identity
                        .as_ref()
                        .map(|p| IdentityKeyPair::try_from(p.identity_key_pair.as_slice()))
                        .transpose()
                        .map_err(|_| StoreError::Corrupt("pending identity key".into()))?
                        .ok_or_else(|| StoreError::Corrupt("pending identity key".into()))?;
                    authenticate(&conn, &self.account, &pending).await?;
                    self.adopt_pending()?;
                    self.store.flush().await?;
                }
                Err(e) => return Err(e),
            }
            self.conn = Some(conn);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| TransportError::Connection("not connected".into()).into())
    }

    async fn sender_certificate(&mut self) -> Result<SenderCertificate> {
        if let Some((bytes, expires)) = &self.account.sender_certificate
            && *expires > now_ms() + CERT_RENEW_MARGIN_MS
        {
            return Ok(SenderCertificate::deserialize(bytes)?);
        }
        let conn = self.connection().await?;
        let Resp::SenderCertificate(cert) = conn
            .request(Req::SenderCertificate(relay::SenderCertificateRequest {}))
            .await?
        else {
            return Err(TransportError::Unexpected.into());
        };
        let parsed = SenderCertificate::deserialize(&cert.certificate)?;
        self.account.sender_certificate = Some((cert.certificate, cert.expires_at_ms));
        self.store.set_account(&self.account)?;
        Ok(parsed)
    }

    /// Makes and stores new prekeys, returning their public halves for upload.
    async fn generate_keys(&mut self, count: u32, with_signed: bool) -> Result<KeyUpload> {
        let mut rng = rand::rng();
        let private = self.identity.private_key();
        let mut store = self.store.clone();
        let mut upload = KeyUpload::default();

        let first = match count {
            0 => 0,
            n => self.store.next_ids(IdKind::PreKey, n)?,
        };
        for id in first..first + count {
            let pair = KeyPair::generate(&mut rng);
            store
                .save_pre_key(id.into(), &PreKeyRecord::new(id.into(), &pair))
                .await?;
            upload.pre_keys.push(OneTimePreKey {
                id,
                public_key: pair.public_key.serialize().to_vec(),
            });
        }
        let first = match count {
            0 => 0,
            n => self.store.next_ids(IdKind::KyberPreKey, n)?,
        };
        for id in first..first + count {
            let record = KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, id.into(), private)?;
            store.save_kyber_pre_key(id.into(), &record).await?;
            upload.kyber_pre_keys.push(signed_wire(
                id,
                record.public_key()?.serialize().to_vec(),
                &record,
            )?);
        }
        if with_signed {
            let id = self.store.next_ids(IdKind::SignedPreKey, 1)?;
            let pair = KeyPair::generate(&mut rng);
            let signature = private
                .calculate_signature(&pair.public_key.serialize(), &mut rng)
                .map_err(crypto)?;
            let record = SignedPreKeyRecord::new(
                id.into(),
                Timestamp::from_epoch_millis(now_ms()),
                &pair,
                &signature,
            );
            store.save_signed_pre_key(id.into(), &record).await?;
            upload.signed_pre_key = Some(signed_wire(
                id,
                pair.public_key.serialize().to_vec(),
                &record,
            )?);

            let id = self.store.next_ids(IdKind::KyberPreKey, 1)?;
            let record = KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, id.into(), private)?;
            store.save_kyber_pre_key(id.into(), &record).await?;
            self.store.set_kyber_last_resort(id.into())?;
            upload.kyber_last_resort = Some(signed_wire(
                id,
                record.public_key()?.serialize().to_vec(),
                &record,
            )?);
        }
        // Private halves are on disk before the public halves leave, so no
        // one can ever be sent a key we cannot decrypt with.
        self.store.flush().await?;
        Ok(upload)
    }
}

#[derive(Default)]
struct KeyUpload {
    pre_keys: Vec<OneTimePreKey>,
    kyber_pre_keys: Vec<SignedPreKey>,
    signed_pre_key: Option<SignedPreKey>,
    kyber_last_resort: Option<SignedPreKey>,
}

fn signed_wire<K: GenericSignedPreKey>(
    id: u32,
    public_key: Vec<u8>,
    record: &K,
) -> Result<SignedPreKey> {
    Ok(SignedPreKey {
        id,
        public_key,
        signature: record.signature()?,
    })
}

/// Proves to the relay, on `conn`, that we hold `identity`'s key for our account.
async fn authenticate(
    conn: &Connection,
    account: &AccountRecord,
    identity: &IdentityKeyPair,
) -> Result<()> {
    let nonce = challenge(conn).await?;
    let signature = identity
        .private_key()
        .calculate_signature(
            &transcript(Purpose::Authenticate, &conn.exporter()?, &nonce),
            &mut rand::rng(),
        )
        .map_err(crypto)?;
    conn.request(Req::Authenticate(relay::Authenticate {
        account_id: account.account_id.as_bytes().to_vec(),
        device_id: account.device_id,
        auth_signature: signature.to_vec(),
    }))
    .await?;
    Ok(())
}

/// Test hook (`SOTTO_DANGER_RESET_PAUSE=FILE`): says "FILE.waiting" and
/// waits (at most a minute) until FILE exists, so a test can have a peer
/// send in the window between draining the mailbox and switching keys.
async fn danger_pause(file: &Path) {
    let mut waiting = file.as_os_str().to_owned();
    waiting.push(".waiting");
    let _ = std::fs::write(&waiting, b"");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !file.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn challenge(conn: &Connection) -> Result<Vec<u8>> {
    match conn
        .request(Req::Challenge(relay::ChallengeRequest {}))
        .await?
    {
        Resp::Challenge(c) => Ok(c.nonce),
        _ => Err(TransportError::Unexpected.into()),
    }
}

/// Errors `listen` rides out by reconnecting: the relay or the network is down.
fn is_offline(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Transport(
            TransportError::Connect { .. }
                | TransportError::Connection(_)
                | TransportError::Resolve(_)
                | TransportError::Frame(_)
        )
    )
}

/// The relay answered with a refusal (the connection itself is fine).
fn is_refusal(e: &EngineError) -> bool {
    matches!(e, EngineError::Transport(TransportError::Refused { .. }))
        || matches!(
            e,
            EngineError::IdentityChanged(_) | EngineError::UnknownRecipient(_)
        )
}

/// The relay asked us to slow down or wait (rate limit, full disk); what
/// was refused stays in the outbox.
fn is_rate_limited(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Transport(TransportError::Refused {
            code: ErrorCode::RateLimited | ErrorCode::Unavailable,
            ..
        })
    )
}

fn unknown_recipient(e: TransportError, name: &str) -> EngineError {
    match e {
        TransportError::Refused {
            code: ErrorCode::UnknownRecipient,
            ..
        } => EngineError::UnknownRecipient(name.to_string()),
        other => other.into(),
    }
}

fn damaged_bundle<E>(_: E) -> EngineError {
    EngineError::Invalid("the relay sent a damaged key bundle".into())
}

/// Key and fingerprint errors from libsignal's lower layers; they carry no secrets.
fn crypto<E: std::fmt::Display>(e: E) -> EngineError {
    EngineError::Invalid(format!("key operation failed: {e}"))
}

fn device_id() -> Result<DeviceId> {
    DeviceId::new(DEVICE_ID).map_err(|_| EngineError::Invalid("device id".into()))
}

fn address_of(peer: Uuid) -> Result<ProtocolAddress> {
    Ok(ProtocolAddress::new(peer.to_string(), device_id()?))
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// "123451234512345" -> "12345 12345 12345": easier to read aloud and compare.
fn group_digits(digits: &str) -> String {
    digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped_in_fives() {
        assert_eq!(group_digits("1234567890123"), "12345 67890 123");
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
