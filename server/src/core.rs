//! Request handling without sockets: one [`Request`] in, one [`Outcome`] out.
//!
//! [`Relay::handle`] is what the QUIC shell calls for each request stream, and
//! what the unit tests call directly. Time and randomness are arguments. The
//! per-connection facts that matter to the protocol (TLS exporter, outstanding
//! challenge, who is authenticated) live in [`ConnState`], owned by the shell.
//!
//! The core never blocks on durability itself: an [`Outcome`] with
//! `durable = true` tells the shell to flush the store before it writes the
//! response, and `push` names the envelopes to hand to their recipients' live
//! connections after that.
//!
//! Group requests (`Group*`) are the exception to "authenticate first": they
//! are handled on any connection, authorised only by a signature from the
//! group's own key, and never look at who the connection is. That keeps the
//! relay from learning which accounts belong to which group.

use std::collections::HashSet;
use std::time::Duration;

use libsignal_protocol::{
    DeviceId, IdentityKey, PrivateKey, PublicKey, SealedSenderV2SentMessage, SenderCertificate,
    ServerCertificate, ServiceId, Timestamp,
};
use rand::{CryptoRng, Rng};
use sha2::{Digest, Sha256};
use sotto_wire::auth::{
    GroupPurpose, NONCE_LEN, Purpose, group_body, group_transcript, transcript,
};
use sotto_wire::relay::{
    self, Envelope, ErrorCode, OneTimePreKey, Request, Response, SignedPreKey, request, response,
};
use uuid::Uuid;

use crate::config::Config;
use crate::limits::{AddrKey, RateLimiter, retry_text};
use crate::store::{
    AccountRecord, DeviceKey, Enqueued, EnqueuedMany, GROUP_ID_LEN, GroupCreated, GroupRecord,
    JoinRequestAdded, Quota, Removed, SledStore, Store, StoreError,
};

/// Most one-time keys of each kind a device may have stored, so one account
/// cannot fill the relay's disk with prekeys.
pub const MAX_ONE_TIME_KEYS: u32 = 2000;

/// Default and largest `Fetch.limit`.
const FETCH_DEFAULT: usize = 100;
const FETCH_MAX: usize = 500;

/// What a banned account is told.
const BANNED_MESSAGE: &str =
    "the relay operator has banned this account; contact them if you think this is a mistake";

/// Length of a fresh invite token.
pub const INVITE_TOKEN_LEN: usize = 24;

/// Most device copies one `SendMulti` may fan out to. All copies are written
/// in one transaction held in memory, so one request must not be able to make
/// it arbitrarily large; a group bigger than this is out of scope for a relay
/// on a small VPS.
pub const MAX_MULTI_DEVICES: usize = 1000;

/// Budget for the join requests in one `GroupRequests` response, below the
/// client's response frame cap; the rest come on the next fetch after the
/// admin deletes the ones it handled.
const GROUP_REQUESTS_BUDGET: usize = sotto_wire::DEFAULT_MAX_FRAME_BYTES - 16 * 1024;

/// Room left in a `Fetch` answer's frame for everything but its envelopes.
const FRAME_HEADROOM: usize = 64;

/// What a group request signed by the wrong key is told.
const NOT_GROUP_KEY: &str = "not signed by the group's current key";

/// The relay's sealed-sender signing material.
pub struct Signer {
    server_cert: ServerCertificate,
    server_key: PrivateKey,
}

impl Signer {
    /// `server_cert` must certify the public half of `server_key` under the trust root.
    pub fn new(server_cert: ServerCertificate, server_key: PrivateKey) -> Self {
        Self {
            server_cert,
            server_key,
        }
    }
}

/// What the relay knows about one connection.
#[derive(Debug, Clone)]
pub struct ConnState {
    exporter: [u8; 32],
    nonce: Option<[u8; NONCE_LEN]>,
    auth: Option<DeviceKey>,
    peer: Option<AddrKey>,
}

impl ConnState {
    /// A fresh connection whose TLS exporter (label `EXPORTER_LABEL`) is `exporter`.
    pub fn new(exporter: [u8; 32]) -> Self {
        Self {
            exporter,
            nonce: None,
            auth: None,
            peer: None,
        }
    }

    /// Records the peer's network address, for per-address limits.
    pub fn with_peer(mut self, ip: std::net::IpAddr) -> Self {
        self.peer = Some(AddrKey::from(ip));
        self
    }

    /// The device this connection has proven it is, if any.
    pub fn authenticated(&self) -> Option<DeviceKey> {
        self.auth
    }
}

/// The result of handling one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The frame to send back.
    pub response: Response,
    /// The store must be flushed before `response` is sent.
    pub durable: bool,
    /// After the flush, push each envelope to its device's live connections.
    pub push: Vec<(DeviceKey, Envelope)>,
}

impl Outcome {
    /// The error code, if the response is an error.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match &self.response.kind {
            Some(response::Kind::Error(e)) => Some(e.code()),
            _ => None,
        }
    }
}

/// Builds an error response.
pub fn error_response(code: ErrorCode, message: &str) -> Response {
    error_response_naming(code, message, Vec::new())
}

/// Builds an error response that names the accounts it is about (`SendMulti`).
fn error_response_naming(code: ErrorCode, message: &str, accounts: Vec<Vec<u8>>) -> Response {
    Response {
        version: sotto_wire::PROTOCOL_VERSION,
        kind: Some(response::Kind::Error(relay::Error {
            code: code as i32,
            message: message.to_string(),
            accounts,
            retry_after_ms: 0,
        })),
    }
}

/// Builds an `UNAVAILABLE` response, retryable after `wait_ms`.
pub fn unavailable_response(message: &str, wait_ms: u64) -> Response {
    Response {
        version: sotto_wire::PROTOCOL_VERSION,
        kind: Some(response::Kind::Error(relay::Error {
            code: ErrorCode::Unavailable as i32,
            message: message.to_string(),
            accounts: Vec::new(),
            retry_after_ms: wait_ms,
        })),
    }
}

/// Builds a `RATE_LIMITED` response for `what`, retryable after `wait_ms`.
pub fn rate_limited_response(what: &str, wait_ms: u64) -> Response {
    Response {
        version: sotto_wire::PROTOCOL_VERSION,
        kind: Some(response::Kind::Error(relay::Error {
            code: ErrorCode::RateLimited as i32,
            message: format!("{what}; try again in {}", retry_text(wait_ms)),
            accounts: Vec::new(),
            retry_after_ms: wait_ms,
        })),
    }
}

/// Why a request failed: a peer-visible code or an internal store failure.
enum Fail {
    Peer(ErrorCode, &'static str),
    /// A peer-visible code about some recipients, whose account ids are listed.
    Recipients(ErrorCode, &'static str, Vec<Uuid>),
    /// A rate limit: what was limited, and milliseconds until it frees up.
    Limited(&'static str, u64),
    Store(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

type Handled = Result<(response::Kind, bool, Vec<(DeviceKey, Envelope)>), Fail>;

fn reply(kind: response::Kind) -> Handled {
    Ok((kind, false, Vec::new()))
}

fn durable(kind: response::Kind) -> Handled {
    Ok((kind, true, Vec::new()))
}

/// Counters for the admin `stats` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Registered accounts (people).
    pub accounts: usize,
    /// Registered devices across all accounts.
    pub devices: usize,
    /// Envelopes waiting in mailboxes.
    pub queued_envelopes: usize,
    /// Groups stored (a count only: the relay knows nothing else about them).
    pub groups: u64,
}

/// The relay's protocol logic over a [`Store`].
pub struct Relay<S: Store = SledStore> {
    store: S,
    config: Config,
    signer: Signer,
    limits: Limits,
}

/// The rate limits of [`Config`], one bucket per key.
struct Limits {
    registrations: RateLimiter<AddrKey>,
    sends: RateLimiter<Uuid>,
    bundle_fetches: RateLimiter<Uuid>,
    one_time_keys: RateLimiter<DeviceKey>,
}

impl Limits {
    fn new(config: &Config) -> Self {
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        Self {
            registrations: RateLimiter::new(config.registrations_per_address_per_hour, HOUR),
            sends: RateLimiter::new(config.sends_per_minute, MINUTE),
            bundle_fetches: RateLimiter::new(config.bundle_fetches_per_hour, HOUR),
            one_time_keys: RateLimiter::new(config.one_time_keys_per_hour, HOUR),
        }
    }
}

impl<S: Store> Relay<S> {
    /// A relay over `store`, enforcing the limits in `config`.
    pub fn new(store: S, config: Config, signer: Signer) -> Self {
        Self {
            store,
            limits: Limits::new(&config),
            config,
            signer,
        }
    }

    /// The store (the shell flushes it and the admin socket reads it).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Makes an invite token with `uses` uses that expires at `expires_at_ms`.
    /// Only its SHA-256 is stored; the token is returned once, for the link.
    pub fn create_invite<R: Rng + CryptoRng>(
        &self,
        uses: u32,
        expires_at_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<u8>, StoreError> {
        let mut token = vec![0u8; INVITE_TOKEN_LEN];
        rng.fill_bytes(&mut token);
        self.store
            .add_invite(Sha256::digest(&token).into(), uses.max(1), expires_at_ms)?;
        self.store.flush()?;
        Ok(token)
    }

    /// Deletes envelopes older than the configured TTL, and those sent with
    /// their own lifetime (`SendMulti.ttl_ms`) once it has passed. Returns how many.
    pub fn sweep(&self, now_ms: u64) -> Result<usize, StoreError> {
        let ttl = u64::try_from(self.config.envelope_ttl.as_millis()).unwrap_or(u64::MAX);
        self.store.sweep_expired(now_ms.saturating_sub(ttl), now_ms)
    }

    /// Account and mailbox counters.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        Ok(Stats {
            accounts: self.store.distinct_accounts()?,
            devices: self.store.account_count(),
            queued_envelopes: self.store.queued_count(),
            groups: self.store.group_count()?,
        })
    }

    /// Bans `account` (operator command): it can no longer authenticate. The
    /// shell closes its live connections. Returns the account's devices, empty
    /// when it does not exist (nothing is banned then).
    pub fn ban(&self, account: Uuid, now_ms: u64) -> Result<Vec<u32>, StoreError> {
        let devices = self.store.devices_of(account)?;
        if !devices.is_empty() {
            self.store.set_banned(account, true, now_ms)?;
            self.store.flush()?;
        }
        Ok(devices)
    }

    /// Lifts a ban. False when the account was not banned.
    pub fn unban(&self, account: Uuid) -> Result<bool, StoreError> {
        let changed = self.store.set_banned(account, false, 0)?;
        self.store.flush()?;
        Ok(changed)
    }

    /// Deletes `account` with its prekeys and mailbox (operator command).
    pub fn remove_account(&self, account: Uuid) -> Result<Removed, StoreError> {
        let removed = self.store.remove_account(account)?;
        self.store.flush()?;
        Ok(removed)
    }

    /// Handles one request from the connection `conn`.
    pub fn handle<R: Rng + CryptoRng>(
        &self,
        conn: &mut ConnState,
        req: Request,
        now_ms: u64,
        rng: &mut R,
    ) -> Outcome {
        let outcome = if req.version != sotto_wire::PROTOCOL_VERSION {
            Err(Fail::Peer(
                ErrorCode::UnsupportedVersion,
                "unsupported protocol version; update Sotto",
            ))
        } else {
            match req.kind {
                None => Err(Fail::Peer(ErrorCode::Malformed, "empty request")),
                Some(kind) => self.dispatch(conn, kind, now_ms, rng),
            }
        };
        match outcome {
            Ok((kind, durable, push)) => Outcome {
                response: Response {
                    version: sotto_wire::PROTOCOL_VERSION,
                    kind: Some(kind),
                },
                durable,
                push,
            },
            Err(Fail::Peer(code, msg)) => Outcome {
                response: error_response(code, msg),
                durable: false,
                push: Vec::new(),
            },
            Err(Fail::Limited(what, wait_ms)) => Outcome {
                response: rate_limited_response(what, wait_ms),
                durable: false,
                push: Vec::new(),
            },
            Err(Fail::Recipients(code, msg, accounts)) => Outcome {
                response: error_response_naming(
                    code,
                    msg,
                    accounts.iter().map(|a| a.as_bytes().to_vec()).collect(),
                ),
                durable: false,
                push: Vec::new(),
            },
            Err(Fail::Store(e)) => {
                // Database details stay in our log; the peer learns only that we failed.
                tracing::error!(error = %e, "store failure while handling a request");
                Outcome {
                    response: error_response(ErrorCode::Internal, "relay storage error; try later"),
                    durable: false,
                    push: Vec::new(),
                }
            }
        }
    }

    fn dispatch<R: Rng + CryptoRng>(
        &self,
        conn: &mut ConnState,
        kind: request::Kind,
        now_ms: u64,
        rng: &mut R,
    ) -> Handled {
        use request::Kind as K;
        match kind {
            K::Challenge(_) => {
                let mut nonce = [0u8; NONCE_LEN];
                rng.fill_bytes(&mut nonce);
                conn.nonce = Some(nonce);
                reply(response::Kind::Challenge(relay::Challenge {
                    nonce: nonce.to_vec(),
                }))
            }
            K::Register(r) => self.register(conn, r, now_ms),
            K::Authenticate(a) => self.authenticate(conn, a),
            // Group requests are authorised by the group's keys alone and get
            // only the TLS exporter, never `conn.auth`: the relay must not be
            // able to tie a group to the account of the connection asking.
            K::GroupWrite(w) => self.group_write(&conn.exporter, w),
            K::GroupRead(r) => self.group_read(&conn.exporter, r),
            K::GroupJoinRequest(j) => self.group_join_request(&conn.exporter, j, now_ms),
            K::GroupFetchRequests(f) => self.group_fetch_requests(&conn.exporter, f),
            K::GroupDeleteRequests(d) => self.group_delete_requests(&conn.exporter, d),
            other => {
                let Some(me) = conn.auth else {
                    return Err(Fail::Peer(
                        ErrorCode::Unauthenticated,
                        "authenticate first (challenge, then register or authenticate)",
                    ));
                };
                // Checked per request too: a ban takes effect even on a
                // connection that authenticated before it (and before the
                // shell gets to close that connection).
                if self.store.is_banned(me.account)? {
                    conn.auth = None;
                    return Err(Fail::Peer(ErrorCode::Banned, BANNED_MESSAGE));
                }
                match other {
                    K::UploadPreKeys(u) => self.upload(me, u),
                    K::PreKeyCount(_) => {
                        let (ec, kyber) = self.store.pre_key_counts(me)?;
                        let low = self.config.prekey_low_water;
                        reply(response::Kind::PreKeyCount(relay::PreKeyCount {
                            pre_keys: ec,
                            kyber_pre_keys: kyber,
                            low: ec < low || kyber < low,
                        }))
                    }
                    K::FetchBundle(f) => {
                        self.limits
                            .bundle_fetches
                            .take(me.account, now_ms)
                            .map_err(|w| Fail::Limited("too many key bundle fetches", w))?;
                        self.fetch_bundle(f, now_ms)
                    }
                    K::FetchIdentity(f) => {
                        let rec = self.known(&f.account_id, 1)?;
                        reply(response::Kind::Identity(relay::Identity {
                            identity_key: rec.1.identity_key,
                            registration_id: rec.1.registration_id,
                        }))
                    }
                    K::SenderCertificate(_) => self.sender_certificate(me, now_ms, rng),
                    K::Send(_) | K::SendMulti(_) => {
                        self.limits
                            .sends
                            .take(me.account, now_ms)
                            .map_err(|w| Fail::Limited("too many messages sent", w))?;
                        match other {
                            K::Send(s) => self.send(s, now_ms),
                            K::SendMulti(s) => self.send_multi(s, now_ms),
                            _ => Err(Fail::Peer(ErrorCode::Malformed, "unexpected request")),
                        }
                    }
                    K::Fetch(f) => {
                        let limit = match f.limit as usize {
                            0 => FETCH_DEFAULT,
                            n => n.min(FETCH_MAX),
                        };
                        let (mut envelopes, mut more) = self.store.envelopes(me, limit, now_ms)?;
                        // The answer must fit in one frame the client reads
                        // (found by fuzzing: nine 64 KiB envelopes made a
                        // mailbox unreadable). Stop before the envelope that
                        // would pass the cap, but always send one.
                        let budget = self
                            .config
                            .max_frame_bytes
                            .min(sotto_wire::DEFAULT_MAX_FRAME_BYTES)
                            .saturating_sub(FRAME_HEADROOM);
                        let mut used = 0;
                        let keep = envelopes
                            .iter()
                            .position(|e| {
                                let len = prost::Message::encoded_len(e);
                                used += 1 + prost::length_delimiter_len(len) + len;
                                used > budget
                            })
                            .map_or(envelopes.len(), |i| i.max(1));
                        if keep < envelopes.len() {
                            envelopes.truncate(keep);
                            more = true;
                        }
                        reply(response::Kind::Envelopes(relay::Envelopes {
                            envelopes,
                            more,
                        }))
                    }
                    K::Ack(a) => {
                        self.store.ack(me, &a.seqs)?;
                        durable(response::Kind::Done(relay::Done {}))
                    }
                    K::ResetIdentity(r) => self.reset_identity(conn, me, r),
                    K::Timestamp(t) => {
                        self.limits
                            .sends
                            .take(me.account, now_ms)
                            .map_err(|w| Fail::Limited("too many timestamps", w))?;
                        self.timestamp(&t.hash, now_ms, rng)
                    }
                    K::DeleteAccount(_) => {
                        // The user's own panic button: nothing of the account
                        // stays (keys, mailbox), and the connection is
                        // anonymous from here on.
                        self.store.remove_account(me.account)?;
                        conn.auth = None;
                        durable(response::Kind::Done(relay::Done {}))
                    }
                    K::Challenge(_)
                    | K::Register(_)
                    | K::Authenticate(_)
                    | K::GroupWrite(_)
                    | K::GroupRead(_)
                    | K::GroupJoinRequest(_)
                    | K::GroupFetchRequests(_)
                    | K::GroupDeleteRequests(_) => {
                        // Handled above; kept so the match stays exhaustive.
                        Err(Fail::Peer(ErrorCode::Malformed, "unexpected request"))
                    }
                }
            }
        }
    }

    /// Takes the challenge (one use, whatever the outcome) and checks `sig` over it.
    fn check_challenge(
        conn: &mut ConnState,
        purpose: Purpose,
        key: &IdentityKey,
        sig: &[u8],
    ) -> Result<(), Fail> {
        // One use per nonce: a signature cannot be replayed on this connection.
        let nonce = conn.nonce.take().ok_or(Fail::Peer(
            ErrorCode::NoChallenge,
            "ask for a challenge first",
        ))?;
        let msg = transcript(purpose, &conn.exporter, &nonce);
        if !key.public_key().verify_signature(&msg, sig) {
            return Err(Fail::Peer(
                ErrorCode::BadSignature,
                "signature over the challenge does not verify",
            ));
        }
        Ok(())
    }

    fn register(&self, conn: &mut ConnState, r: relay::Register, now_ms: u64) -> Handled {
        // Before the invite is looked at, so guessing invite tokens is slow too.
        if let Some(peer) = conn.peer {
            self.limits.registrations.take(peer, now_ms).map_err(|w| {
                Fail::Limited("too many registrations from this network address", w)
            })?;
        }
        let identity = decode_identity(&r.identity_key)?;
        Self::check_challenge(conn, Purpose::Register, &identity, &r.auth_signature)?;
        let keys = KeySet::validate(
            &identity,
            r.signed_pre_key,
            r.kyber_last_resort,
            r.pre_keys,
            r.kyber_pre_keys,
            true,
        )?;
        if !self
            .store
            .consume_invite(Sha256::digest(&r.invite_token).into(), now_ms)?
        {
            return Err(Fail::Peer(
                ErrorCode::InviteInvalid,
                "this invite is unknown, used up or expired; ask the relay operator for a new invite",
            ));
        }
        let me = DeviceKey {
            account: Uuid::new_v4(),
            device: 1,
        };
        self.install(me, r.identity_key, r.registration_id, keys)?;
        conn.auth = Some(me);
        durable(response::Kind::Registered(relay::Registered {
            account_id: me.account.as_bytes().to_vec(),
            device_id: me.device,
        }))
    }

    fn authenticate(&self, conn: &mut ConnState, a: relay::Authenticate) -> Handled {
        let (me, rec) = match self.known(&a.account_id, a.device_id) {
            Ok(found) => found,
            Err(Fail::Peer(..)) => {
                // Still burn the nonce so a failed attempt cannot be retried with it.
                conn.nonce = None;
                return Err(Fail::Peer(
                    ErrorCode::Unauthenticated,
                    "unknown account: the relay operator may have removed it; ask them for a \
                     new invite",
                ));
            }
            Err(e) => return Err(e),
        };
        let identity = IdentityKey::decode(&rec.identity_key)
            .map_err(|_| Fail::Store(StoreError::Corrupt("accounts")))?;
        Self::check_challenge(conn, Purpose::Authenticate, &identity, &a.auth_signature)?;
        // After the signature check, so only the key holder learns of the ban.
        if self.store.is_banned(me.account)? {
            return Err(Fail::Peer(ErrorCode::Banned, BANNED_MESSAGE));
        }
        conn.auth = Some(me);
        reply(response::Kind::Authenticated(relay::Authenticated {}))
    }

    fn upload(&self, me: DeviceKey, u: relay::UploadPreKeys) -> Handled {
        let mut rec = self
            .store
            .account(me)?
            .ok_or(Fail::Peer(ErrorCode::Unauthenticated, "unknown account"))?;
        let identity = IdentityKey::decode(&rec.identity_key)
            .map_err(|_| Fail::Store(StoreError::Corrupt("accounts")))?;
        let keys = KeySet::validate(
            &identity,
            u.signed_pre_key,
            u.kyber_last_resort,
            u.pre_keys,
            u.kyber_pre_keys,
            false,
        )?;
        let (ec, kyber) = self.store.pre_key_counts(me)?;
        if ec as usize + keys.one_time.len() > MAX_ONE_TIME_KEYS as usize
            || kyber as usize + keys.kyber.len() > MAX_ONE_TIME_KEYS as usize
        {
            return Err(Fail::Peer(
                ErrorCode::TooLarge,
                "too many one-time prekeys stored; upload fewer",
            ));
        }
        self.store.add_pre_keys(me, &keys.one_time)?;
        self.store.add_kyber_pre_keys(me, &keys.kyber)?;
        if keys.signed.is_some() || keys.last_resort.is_some() {
            if keys.signed.is_some() {
                rec.signed_pre_key = keys.signed;
            }
            if keys.last_resort.is_some() {
                rec.kyber_last_resort = keys.last_resort;
            }
            self.store.put_account(me, &rec)?;
        }
        durable(response::Kind::Done(relay::Done {}))
    }

    /// Looks up `(account, device)`; device 0 means 1.
    fn known(&self, account: &[u8], device: u32) -> Result<(DeviceKey, AccountRecord), Fail> {
        let unknown = Fail::Peer(ErrorCode::UnknownRecipient, "unknown account or device");
        let Ok(account) = Uuid::from_slice(account) else {
            return Err(unknown);
        };
        let key = DeviceKey {
            account,
            device: if device == 0 { 1 } else { device },
        };
        match self.store.account(key)? {
            Some(rec) => Ok((key, rec)),
            None => Err(unknown),
        }
    }

    fn fetch_bundle(&self, f: relay::FetchBundle, now_ms: u64) -> Handled {
        let (key, rec) = self.known(&f.account_id, f.device_id)?;
        // Against prekey draining: however many accounts ask, a device hands
        // out only so many one-time keys an hour. Past that, the bundle has
        // the signed and last-resort keys, which still start a session (with
        // weaker forward secrecy for its first message).
        let (pre_key, one_time_kyber) = if self.limits.one_time_keys.take(key, now_ms).is_ok() {
            (
                self.store.take_pre_key(key)?,
                self.store.take_kyber_pre_key(key)?,
            )
        } else {
            (None, None)
        };
        // After the one-time Kyber keys run out, the last-resort key keeps
        // sessions possible (with weaker forward secrecy for that first message).
        let kyber_pre_key = match one_time_kyber {
            Some(k) => Some(k),
            None => rec.kyber_last_resort,
        };
        // Taking a one-time key is a write; make it durable so a crash cannot hand it out twice.
        durable(response::Kind::Bundle(relay::Bundle {
            account_id: key.account.as_bytes().to_vec(),
            device_id: key.device,
            registration_id: rec.registration_id,
            identity_key: rec.identity_key,
            signed_pre_key: rec.signed_pre_key,
            pre_key,
            kyber_pre_key,
        }))
    }

    fn sender_certificate<R: Rng + CryptoRng>(
        &self,
        me: DeviceKey,
        now_ms: u64,
        rng: &mut R,
    ) -> Handled {
        let rec = self
            .store
            .account(me)?
            .ok_or(Fail::Peer(ErrorCode::Unauthenticated, "unknown account"))?;
        let identity = IdentityKey::decode(&rec.identity_key)
            .map_err(|_| Fail::Store(StoreError::Corrupt("accounts")))?;
        let device = u8::try_from(me.device)
            .ok()
            .and_then(|d| DeviceId::new(d).ok())
            .ok_or(Fail::Peer(ErrorCode::Internal, "device id out of range"))?;
        let ttl = u64::try_from(self.config.sender_certificate_ttl.as_millis()).unwrap_or(u64::MAX);
        let expires = now_ms.saturating_add(ttl);
        let cert = SenderCertificate::new(
            me.account.to_string(),
            None,
            *identity.public_key(),
            device,
            Timestamp::from_epoch_millis(expires),
            self.signer.server_cert.clone(),
            &self.signer.server_key,
            rng,
        )
        .and_then(|c| c.serialized().map(<[u8]>::to_vec))
        .map_err(|e| {
            tracing::error!(error = %e, "signing a sender certificate failed");
            Fail::Peer(ErrorCode::Internal, "could not sign a sender certificate")
        })?;
        reply(response::Kind::SenderCertificate(
            relay::SenderCertificate {
                certificate: cert,
                expires_at_ms: expires,
            },
        ))
    }

    /// Countersigns `hash` with the relay's time. Nothing is stored: the
    /// relay sees a hash and forgets it.
    fn timestamp<R: Rng + CryptoRng>(&self, hash: &[u8], now_ms: u64, rng: &mut R) -> Handled {
        if hash.len() != 32 {
            return Err(Fail::Peer(
                ErrorCode::Malformed,
                "a timestamp request carries a 32-byte SHA-256 hash",
            ));
        }
        let signature = self
            .signer
            .server_key
            .calculate_signature(&sotto_wire::auth::timestamp_transcript(hash, now_ms), rng)
            .map_err(|e| {
                tracing::error!(error = %e, "signing a timestamp failed");
                Fail::Peer(ErrorCode::Internal, "could not sign the timestamp")
            })?;
        let server_certificate = self
            .signer
            .server_cert
            .serialized()
            .map(<[u8]>::to_vec)
            .map_err(|_| Fail::Peer(ErrorCode::Internal, "could not sign the timestamp"))?;
        reply(response::Kind::Timestamped(relay::Timestamped {
            time_ms: now_ms,
            signature: signature.to_vec(),
            server_certificate,
        }))
    }

    fn send(&self, s: relay::Send, now_ms: u64) -> Handled {
        let (to, rec) = self.known(&s.recipient, s.device_id)?;
        if s.registration_id != 0 && s.registration_id != rec.registration_id {
            return Err(Fail::Peer(
                ErrorCode::StaleDevice,
                "the recipient re-registered; fetch their keys again",
            ));
        }
        if s.envelope.is_empty() {
            return Err(Fail::Peer(ErrorCode::Malformed, "empty envelope"));
        }
        if s.envelope.len() > self.config.max_envelope_bytes {
            return Err(Fail::Peer(ErrorCode::TooLarge, "envelope is too large"));
        }
        let quota = Quota {
            max_envelopes: self.config.mailbox_max_envelopes,
            max_bytes: self.config.mailbox_max_bytes,
        };
        // Only the recipient, time and ciphertext are stored: nothing about the sender.
        match self.store.enqueue(to, now_ms, &s.envelope, quota)? {
            Enqueued::MailboxFull => Err(Fail::Peer(
                ErrorCode::MailboxFull,
                "the recipient's mailbox is full; try again later",
            )),
            Enqueued::Stored(seq) => Ok((
                response::Kind::Sent(relay::Sent { seq }),
                true,
                vec![(
                    to,
                    Envelope {
                        seq,
                        received_at_ms: now_ms,
                        envelope: s.envelope,
                    },
                )],
            )),
        }
    }

    /// Fans a sealed-sender v2 message out into one ordinary sealed-sender
    /// envelope per recipient device, all or nothing.
    fn send_multi(&self, s: relay::SendMulti, now_ms: u64) -> Handled {
        // libsignal's parser checks the structure without panicking on any input.
        let sent = SealedSenderV2SentMessage::parse(&s.envelope).map_err(|_| {
            Fail::Peer(
                ErrorCode::Malformed,
                "not a multi-recipient sealed-sender message",
            )
        })?;
        if sent.recipients.is_empty() {
            return Err(Fail::Peer(ErrorCode::Malformed, "no recipients"));
        }
        let mut unknown = Vec::new();
        let mut stale = Vec::new();
        let mut seen = HashSet::new();
        // Per recipient: its devices and the one envelope they all receive.
        let mut targets = Vec::with_capacity(sent.recipients.len());
        for (service_id, recipient) in &sent.recipients {
            let ServiceId::Aci(aci) = service_id else {
                return Err(Fail::Peer(
                    ErrorCode::Malformed,
                    "recipients must be account ids",
                ));
            };
            let account = Uuid::from(*aci);
            if recipient.devices.is_empty() {
                return Err(Fail::Peer(
                    ErrorCode::Malformed,
                    "a recipient has no devices",
                ));
            }
            let mut keys = Vec::with_capacity(recipient.devices.len());
            for &(device, registration_id) in &recipient.devices {
                let key = DeviceKey {
                    account,
                    device: u32::from(device),
                };
                // libsignal merges a repeated recipient into one device list,
                // so a duplicate shows up as a repeated device.
                if !seen.insert(key) {
                    return Err(Fail::Peer(
                        ErrorCode::Malformed,
                        "a recipient device is listed twice",
                    ));
                }
                if seen.len() > MAX_MULTI_DEVICES {
                    return Err(Fail::Peer(
                        ErrorCode::TooLarge,
                        "too many recipients in one message",
                    ));
                }
                match self.store.account(key)? {
                    None => unknown.push(account),
                    // The sender's session is for another registration: it
                    // must refetch keys, or the copy would not open.
                    Some(rec) if rec.registration_id != u32::from(registration_id) => {
                        stale.push(account)
                    }
                    Some(_) => keys.push(key),
                }
            }
            targets.push((keys, recipient));
        }
        if !unknown.is_empty() {
            unknown.dedup();
            return Err(Fail::Recipients(
                ErrorCode::UnknownRecipient,
                "some recipients are not on this relay",
                unknown,
            ));
        }
        if !stale.is_empty() {
            stale.dedup();
            return Err(Fail::Recipients(
                ErrorCode::StaleDevice,
                "some recipients re-registered; fetch their keys again",
                stale,
            ));
        }
        let mut bodies = Vec::with_capacity(targets.len());
        for (keys, recipient) in targets {
            // An ordinary sealed-sender (v2 received) message: the recipient
            // opens it exactly like a copy sent with `Send`.
            let body = sent
                .received_message_parts_for_recipient(recipient)
                .as_ref()
                .concat();
            if body.len() > self.config.max_envelope_bytes {
                return Err(Fail::Peer(ErrorCode::TooLarge, "envelope is too large"));
            }
            bodies.push((keys, body));
        }
        let copies: Vec<(DeviceKey, &[u8])> = bodies
            .iter()
            .flat_map(|(keys, body)| keys.iter().map(move |k| (*k, body.as_slice())))
            .collect();
        let quota = Quota {
            max_envelopes: self.config.mailbox_max_envelopes,
            max_bytes: self.config.mailbox_max_bytes,
        };
        let expires = (s.ttl_ms != 0).then(|| now_ms.saturating_add(s.ttl_ms));
        // As with Send, only recipients, time and ciphertext are stored.
        match self.store.enqueue_many(&copies, now_ms, expires, quota)? {
            EnqueuedMany::MailboxFull(full) => {
                let mut accounts: Vec<Uuid> = full.iter().map(|k| k.account).collect();
                accounts.dedup();
                Err(Fail::Recipients(
                    ErrorCode::MailboxFull,
                    "some recipients' mailboxes are full; nothing was sent; try again later",
                    accounts,
                ))
            }
            EnqueuedMany::Stored(seqs) => {
                let push = copies
                    .iter()
                    .zip(seqs)
                    .map(|((key, body), seq)| {
                        (
                            *key,
                            Envelope {
                                seq,
                                received_at_ms: now_ms,
                                envelope: body.to_vec(),
                            },
                        )
                    })
                    .collect();
                Ok((
                    response::Kind::SentMulti(relay::SentMulti {
                        recipients: u32::try_from(copies.len()).unwrap_or(u32::MAX),
                    }),
                    true,
                    push,
                ))
            }
        }
    }

    fn reset_identity(
        &self,
        conn: &mut ConnState,
        me: DeviceKey,
        r: relay::ResetIdentity,
    ) -> Handled {
        let new_identity = decode_identity(&r.identity_key)?;
        // The connection already proved the old key; the new key proves itself here.
        Self::check_challenge(
            conn,
            Purpose::ResetIdentity,
            &new_identity,
            &r.new_key_signature,
        )?;
        let keys = KeySet::validate(
            &new_identity,
            r.signed_pre_key,
            r.kyber_last_resort,
            r.pre_keys,
            r.kyber_pre_keys,
            true,
        )?;
        self.store.clear_pre_keys(me)?;
        self.install(me, r.identity_key, r.registration_id, keys)?;
        durable(response::Kind::Done(relay::Done {}))
    }
}

/// Group requests. Each takes the connection's TLS exporter and nothing else
/// about the connection (see the module docs).
impl<S: Store> Relay<S> {
    fn group_write(&self, exporter: &[u8], w: relay::GroupWrite) -> Handled {
        if w.blob.is_empty() {
            return Err(Fail::Peer(ErrorCode::Malformed, "empty group state"));
        }
        if w.blob.len() > self.config.max_group_state_bytes {
            return Err(Fail::Peer(ErrorCode::TooLarge, "group state is too large"));
        }
        // A key that does not decode could never sign again: storing it would
        // lock every member out of the group (or its link) for good.
        if !is_one_public_key(&w.auth_key) {
            return Err(Fail::Peer(ErrorCode::Malformed, "auth key does not decode"));
        }
        if !w.link_key.is_empty() && !is_one_public_key(&w.link_key) {
            return Err(Fail::Peer(ErrorCode::Malformed, "link key does not decode"));
        }
        let message = group_transcript(
            GroupPurpose::Write,
            exporter,
            &w.group_id,
            &group_body(&[
                &w.expected_version.to_be_bytes(),
                &w.blob,
                &w.auth_key,
                &w.link_key,
            ]),
        );
        let version = w.expected_version.checked_add(1).ok_or(Fail::Peer(
            ErrorCode::Conflict,
            "the group changed; fetch it and retry",
        ))?;
        let record = GroupRecord {
            version,
            auth_key: w.auth_key,
            link_key: w.link_key,
            blob: w.blob,
        };
        if w.expected_version == 0 {
            if w.group_id.len() != GROUP_ID_LEN {
                return Err(Fail::Peer(
                    ErrorCode::Malformed,
                    "a group id is 16 random bytes",
                ));
            }
            // The creator proves it holds the key it installs, so nobody can
            // create a group that its own members could not then use.
            if !verifies(&record.auth_key, &message, &w.signature) {
                return Err(Fail::Peer(
                    ErrorCode::Forbidden,
                    "not signed by the group's new auth key",
                ));
            }
            return match self
                .store
                .create_group(&w.group_id, &record, self.config.max_groups)?
            {
                GroupCreated::Created => {
                    durable(response::Kind::GroupWritten(relay::GroupWritten {
                        version,
                    }))
                }
                GroupCreated::Exists => Err(Fail::Peer(
                    ErrorCode::Conflict,
                    "a group with this id exists; pick a new random id",
                )),
                GroupCreated::QuotaReached => Err(Fail::Peer(
                    ErrorCode::Quota,
                    "this relay holds as many groups as its operator allows",
                )),
            };
        }
        let current = self.group_by_id(&w.group_id)?;
        // Only the current auth key may write, and the write may replace it:
        // after a removal the remaining members rotate it, and the removed
        // member's old key stops working from that version on.
        if !verifies(&current.auth_key, &message, &w.signature) {
            return Err(Fail::Peer(ErrorCode::Forbidden, NOT_GROUP_KEY));
        }
        let changed = Fail::Peer(ErrorCode::Conflict, "the group changed; fetch it and retry");
        if current.version != w.expected_version {
            return Err(changed);
        }
        // Compare-and-swap against the record just checked: of two writers
        // from the same version exactly one wins; the other fetches and retries.
        if !self.store.replace_group(&w.group_id, &current, &record)? {
            return Err(changed);
        }
        durable(response::Kind::GroupWritten(relay::GroupWritten {
            version,
        }))
    }

    fn group_read(&self, exporter: &[u8], r: relay::GroupRead) -> Handled {
        let group = self.authorised_group(
            exporter,
            &r.group_id,
            GroupPurpose::Read,
            &group_body(&[]),
            &r.signature,
        )?;
        reply(response::Kind::GroupState(relay::GroupState {
            version: group.version,
            blob: group.blob,
        }))
    }

    fn group_join_request(
        &self,
        exporter: &[u8],
        j: relay::GroupJoinRequest,
        now_ms: u64,
    ) -> Handled {
        if j.request.is_empty() {
            return Err(Fail::Peer(ErrorCode::Malformed, "empty join request"));
        }
        if j.request.len() > self.config.max_join_request_bytes {
            return Err(Fail::Peer(ErrorCode::TooLarge, "join request is too large"));
        }
        let group = self.group_by_id(&j.group_id)?;
        // Only holders of a current join link may queue requests; removing
        // the link (an empty link key) closes the door.
        if group.link_key.is_empty() {
            return Err(Fail::Peer(
                ErrorCode::Forbidden,
                "this group has no join link",
            ));
        }
        let message = group_transcript(
            GroupPurpose::Join,
            exporter,
            &j.group_id,
            &group_body(&[&j.request]),
        );
        if !verifies(&group.link_key, &message, &j.signature) {
            return Err(Fail::Peer(
                ErrorCode::Forbidden,
                "not signed by the group's current link key",
            ));
        }
        match self.store.add_join_request(
            &j.group_id,
            now_ms,
            &j.request,
            self.config.max_join_requests_per_group,
        )? {
            JoinRequestAdded::Added(_) => durable(response::Kind::Done(relay::Done {})),
            JoinRequestAdded::QuotaReached => Err(Fail::Peer(
                ErrorCode::Quota,
                "this group has too many pending join requests; ask an admin to look at them",
            )),
        }
    }

    fn group_fetch_requests(&self, exporter: &[u8], f: relay::GroupFetchRequests) -> Handled {
        self.authorised_group(
            exporter,
            &f.group_id,
            GroupPurpose::FetchRequests,
            &group_body(&[]),
            &f.signature,
        )?;
        let requests = self
            .store
            .join_requests(&f.group_id, GROUP_REQUESTS_BUDGET)?;
        reply(response::Kind::GroupRequests(relay::GroupRequests {
            requests,
        }))
    }

    fn group_delete_requests(&self, exporter: &[u8], d: relay::GroupDeleteRequests) -> Handled {
        let ids: Vec<u8> = d.ids.iter().flat_map(|id| id.to_be_bytes()).collect();
        self.authorised_group(
            exporter,
            &d.group_id,
            GroupPurpose::DeleteRequests,
            &group_body(&[&ids]),
            &d.signature,
        )?;
        self.store.delete_join_requests(&d.group_id, &d.ids)?;
        durable(response::Kind::Done(relay::Done {}))
    }

    /// The group stored under `group_id`, or UNKNOWN_GROUP.
    fn group_by_id(&self, group_id: &[u8]) -> Result<GroupRecord, Fail> {
        let unknown = Fail::Peer(ErrorCode::UnknownGroup, "no such group on this relay");
        if group_id.len() != GROUP_ID_LEN {
            return Err(unknown);
        }
        self.store.group(group_id)?.ok_or(unknown)
    }

    /// Loads the group and checks `signature` over the `purpose` transcript
    /// under its current auth key (FORBIDDEN if it does not verify).
    fn authorised_group(
        &self,
        exporter: &[u8],
        group_id: &[u8],
        purpose: GroupPurpose,
        body: &[u8],
        signature: &[u8],
    ) -> Result<GroupRecord, Fail> {
        let group = self.group_by_id(group_id)?;
        // Bound to this TLS session by the exporter, so a signature captured
        // elsewhere (say, by a removed member) cannot be replayed here.
        let message = group_transcript(purpose, exporter, group_id, body);
        if !verifies(&group.auth_key, &message, signature) {
            return Err(Fail::Peer(ErrorCode::Forbidden, NOT_GROUP_KEY));
        }
        Ok(group)
    }
}

/// Whether `signature` over `message` verifies under the serialized public key `key`.
fn verifies(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    PublicKey::deserialize(key).is_ok_and(|k| k.verify_signature(message, signature))
}

impl<S: Store> Relay<S> {
    /// Stores an account's identity and a validated key set (registration and reset).
    fn install(
        &self,
        me: DeviceKey,
        identity_key: Vec<u8>,
        registration_id: u32,
        keys: KeySet,
    ) -> Result<(), StoreError> {
        self.store.put_account(
            me,
            &AccountRecord {
                identity_key,
                registration_id,
                signed_pre_key: keys.signed,
                kyber_last_resort: keys.last_resort,
            },
        )?;
        self.store.add_pre_keys(me, &keys.one_time)?;
        self.store.add_kyber_pre_keys(me, &keys.kyber)?;
        Ok(())
    }
}

fn decode_identity(bytes: &[u8]) -> Result<IdentityKey, Fail> {
    IdentityKey::decode(bytes)
        .map_err(|_| Fail::Peer(ErrorCode::Malformed, "identity key does not decode"))
}

/// A checked set of uploaded keys.
/// Whether `key` is exactly one serialized public key: libsignal's parser
/// accepts trailing bytes, and group keys are stored behind a one-byte length
/// (found by fuzzing: an over-long key made the write fail as INTERNAL).
fn is_one_public_key(key: &[u8]) -> bool {
    PublicKey::deserialize(key).is_ok_and(|k| k.serialize().len() == key.len())
}

struct KeySet {
    signed: Option<SignedPreKey>,
    last_resort: Option<SignedPreKey>,
    one_time: Vec<OneTimePreKey>,
    kyber: Vec<SignedPreKey>,
}

impl KeySet {
    /// Verifies every signature against `identity`; with `required`, the signed
    /// and last-resort keys must be present.
    fn validate(
        identity: &IdentityKey,
        signed: Option<SignedPreKey>,
        last_resort: Option<SignedPreKey>,
        one_time: Vec<OneTimePreKey>,
        kyber: Vec<SignedPreKey>,
        required: bool,
    ) -> Result<Self, Fail> {
        if required && (signed.is_none() || last_resort.is_none()) {
            return Err(Fail::Peer(
                ErrorCode::Malformed,
                "a signed prekey and a last-resort Kyber key are required",
            ));
        }
        // Counted before any signature is checked: a frame can carry
        // thousands of keys, and checking them costs the relay, not the sender.
        if one_time.len() > MAX_ONE_TIME_KEYS as usize || kyber.len() > MAX_ONE_TIME_KEYS as usize {
            return Err(Fail::Peer(
                ErrorCode::TooLarge,
                "too many prekeys in one upload",
            ));
        }
        // Unsigned or wrongly signed keys would let anyone who can reach the
        // relay plant keys for someone else's sessions.
        let verify = |k: &SignedPreKey| {
            identity
                .public_key()
                .verify_signature(&k.public_key, &k.signature)
        };
        if let Some(k) = &signed {
            if PublicKey::deserialize(&k.public_key).is_err() {
                return Err(Fail::Peer(
                    ErrorCode::Malformed,
                    "signed prekey does not decode",
                ));
            }
            if !verify(k) {
                return Err(Fail::Peer(
                    ErrorCode::BadSignature,
                    "signed prekey signature does not verify",
                ));
            }
        }
        for k in last_resort.iter().chain(kyber.iter()) {
            if k.public_key.is_empty() || !verify(k) {
                return Err(Fail::Peer(
                    ErrorCode::BadSignature,
                    "Kyber prekey signature does not verify",
                ));
            }
        }
        for k in &one_time {
            if PublicKey::deserialize(&k.public_key).is_err() {
                return Err(Fail::Peer(
                    ErrorCode::Malformed,
                    "one-time prekey does not decode",
                ));
            }
        }
        Ok(Self {
            signed,
            last_resort,
            one_time,
            kyber,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use std::sync::Barrier;
    use std::time::SystemTime;

    use libsignal_protocol::{
        CiphertextMessageType, ContentHint, GenericSignedPreKey, IdentityKeyPair,
        InMemSignalProtocolStore, KeyPair, KyberPreKeyRecord, KyberPreKeyStore, PreKeyBundle,
        PreKeyRecord, PreKeyStore, ProtocolAddress, SessionStore, SignedPreKeyRecord,
        SignedPreKeyStore, UnidentifiedSenderMessageContent, kem, process_prekey_bundle,
        sealed_sender_decrypt_to_usmc, sealed_sender_multi_recipient_encrypt,
    };

    use super::*;
    use crate::store::{GroupStore, MailboxStore, PreKeyDirectory};

    const NOW: u64 = 1_700_000_000_000;

    fn relay_with(config: Config) -> Relay {
        let mut rng = rand::rng();
        let root = KeyPair::generate(&mut rng);
        let server = KeyPair::generate(&mut rng);
        let cert = ServerCertificate::new(1, server.public_key, &root.private_key, &mut rng)
            .expect("server cert");
        Relay::new(
            SledStore::temporary().expect("db"),
            config,
            Signer::new(cert, server.private_key),
        )
    }

    fn relay() -> Relay {
        relay_with(Config::default())
    }

    fn req(kind: request::Kind) -> Request {
        Request {
            version: sotto_wire::PROTOCOL_VERSION,
            kind: Some(kind),
        }
    }

    /// A client device: its identity and the keys it would upload.
    struct Client {
        identity: IdentityKeyPair,
        conn: ConnState,
        registration_id: u32,
        account: Vec<u8>,
    }

    fn signed(identity: &IdentityKeyPair, id: u32, public_key: Vec<u8>) -> SignedPreKey {
        let signature = identity
            .private_key()
            .calculate_signature(&public_key, &mut rand::rng())
            .expect("sign")
            .to_vec();
        SignedPreKey {
            id,
            public_key,
            signature,
        }
    }

    fn ec_public() -> Vec<u8> {
        KeyPair::generate(&mut rand::rng())
            .public_key
            .serialize()
            .to_vec()
    }

    impl Client {
        fn new(exporter: u8) -> Self {
            Self {
                identity: IdentityKeyPair::generate(&mut rand::rng()),
                conn: ConnState::new([exporter; 32]),
                registration_id: 4242,
                account: Vec::new(),
            }
        }

        fn challenge(&mut self, relay: &Relay) -> Vec<u8> {
            let out = relay.handle(
                &mut self.conn,
                req(request::Kind::Challenge(relay::ChallengeRequest {})),
                NOW,
                &mut rand::rng(),
            );
            match out.response.kind {
                Some(response::Kind::Challenge(c)) => c.nonce,
                other => panic!("expected a challenge, got {other:?}"),
            }
        }

        fn sign(&self, purpose: Purpose, key: &IdentityKeyPair, nonce: &[u8]) -> Vec<u8> {
            key.private_key()
                .calculate_signature(
                    &transcript(purpose, &self.conn.exporter, nonce),
                    &mut rand::rng(),
                )
                .expect("sign")
                .to_vec()
        }

        fn register_msg(&mut self, relay: &Relay, token: &[u8], n_keys: u32) -> request::Kind {
            let nonce = self.challenge(relay);
            let id = &self.identity;
            request::Kind::Register(relay::Register {
                invite_token: token.to_vec(),
                identity_key: id.identity_key().serialize().to_vec(),
                registration_id: self.registration_id,
                auth_signature: self.sign(Purpose::Register, id, &nonce),
                signed_pre_key: Some(signed(id, 1, ec_public())),
                kyber_last_resort: Some(signed(id, 999, vec![0xAA; 64])),
                pre_keys: (1..=n_keys)
                    .map(|i| OneTimePreKey {
                        id: i,
                        public_key: ec_public(),
                    })
                    .collect(),
                kyber_pre_keys: (1..=n_keys)
                    .map(|i| signed(id, i, vec![i as u8; 64]))
                    .collect(),
            })
        }

        fn call(&mut self, relay: &Relay, kind: request::Kind) -> Outcome {
            relay.handle(&mut self.conn, req(kind), NOW, &mut rand::rng())
        }

        fn register(&mut self, relay: &Relay, token: &[u8], n_keys: u32) -> Outcome {
            let msg = self.register_msg(relay, token, n_keys);
            let out = self.call(relay, msg);
            if let Some(response::Kind::Registered(r)) = &out.response.kind {
                self.account = r.account_id.clone();
            }
            out
        }
    }

    fn invite(relay: &Relay, uses: u32, expires: u64) -> Vec<u8> {
        relay
            .create_invite(uses, expires, &mut rand::rng())
            .expect("invite")
    }

    fn registered(relay: &Relay, n_keys: u32) -> Client {
        let token = invite(relay, 1, NOW + 1000);
        let mut c = Client::new(7);
        let out = c.register(relay, &token, n_keys);
        assert!(out.durable);
        assert!(matches!(
            out.response.kind,
            Some(response::Kind::Registered(_))
        ));
        c
    }

    fn send(c: &mut Client, relay: &Relay, to: &[u8], reg: u32, body: &[u8]) -> Outcome {
        c.call(
            relay,
            request::Kind::Send(relay::Send {
                recipient: to.to_vec(),
                device_id: 1,
                registration_id: reg,
                envelope: body.to_vec(),
            }),
        )
    }

    fn fetch(c: &mut Client, relay: &Relay, limit: u32) -> relay::Envelopes {
        match c
            .call(relay, request::Kind::Fetch(relay::Fetch { limit }))
            .response
            .kind
        {
            Some(response::Kind::Envelopes(e)) => e,
            other => panic!("expected envelopes, got {other:?}"),
        }
    }

    #[test]
    fn register_with_good_spent_and_expired_invites() {
        let relay = relay();
        let token = invite(&relay, 1, NOW + 1000);
        let mut a = Client::new(1);
        let out = a.register(&relay, &token, 3);
        assert_eq!(out.error_code(), None);
        assert_eq!(a.account.len(), 16);
        assert!(a.conn.authenticated().is_some());

        let mut b = Client::new(2);
        assert_eq!(
            b.register(&relay, &token, 3).error_code(),
            Some(ErrorCode::InviteInvalid)
        );
        let expired = invite(&relay, 5, NOW - 1);
        assert_eq!(
            b.register(&relay, &expired, 3).error_code(),
            Some(ErrorCode::InviteInvalid)
        );
        assert_eq!(
            b.register(&relay, b"no such token", 3).error_code(),
            Some(ErrorCode::InviteInvalid)
        );
        assert_eq!(relay.stats().expect("stats").accounts, 1);
    }

    #[test]
    fn register_needs_a_fresh_challenge_and_a_good_signature() {
        let relay = relay();
        let token = invite(&relay, 3, NOW + 1000);
        let mut c = Client::new(1);
        let msg = c.register_msg(&relay, &token, 1);
        assert_eq!(c.call(&relay, msg.clone()).error_code(), None);
        // The nonce was consumed: replaying the same message fails.
        assert_eq!(
            c.call(&relay, msg).error_code(),
            Some(ErrorCode::NoChallenge)
        );

        // Signed over another connection's exporter: bad signature.
        let mut d = Client::new(2);
        let mut msg = d.register_msg(&relay, &token, 1);
        d.conn.exporter = [9; 32];
        if let request::Kind::Register(r) = &mut msg {
            r.auth_signature[0] ^= 1;
        }
        assert_eq!(
            d.call(&relay, msg).error_code(),
            Some(ErrorCode::BadSignature)
        );

        // A Kyber key not signed by the identity key is refused.
        let mut e = Client::new(3);
        let mut msg = e.register_msg(&relay, &token, 1);
        if let request::Kind::Register(r) = &mut msg {
            r.kyber_pre_keys[0].public_key[0] ^= 1;
        }
        assert_eq!(
            e.call(&relay, msg).error_code(),
            Some(ErrorCode::BadSignature)
        );
    }

    #[test]
    fn authenticate_checks_account_and_signature() {
        let relay = relay();
        let reg = registered(&relay, 1);
        let mut c = Client::new(5);
        c.identity = reg.identity;
        // Unauthenticated connections get nothing but the handshake.
        assert_eq!(
            c.call(&relay, request::Kind::Fetch(relay::Fetch { limit: 1 }))
                .error_code(),
            Some(ErrorCode::Unauthenticated)
        );
        let auth = |c: &mut Client, key: &IdentityKeyPair, account: Vec<u8>| {
            let nonce = c.challenge(&relay);
            let sig = c.sign(Purpose::Authenticate, key, &nonce);
            c.call(
                &relay,
                request::Kind::Authenticate(relay::Authenticate {
                    account_id: account,
                    device_id: 1,
                    auth_signature: sig,
                }),
            )
        };
        let stranger = IdentityKeyPair::generate(&mut rand::rng());
        assert_eq!(
            auth(&mut c, &stranger, reg.account.clone()).error_code(),
            Some(ErrorCode::BadSignature)
        );
        assert!(c.conn.authenticated().is_none());
        let own = c.identity;
        assert_eq!(
            auth(&mut c, &own, vec![1; 16]).error_code(),
            Some(ErrorCode::Unauthenticated)
        );
        assert_eq!(auth(&mut c, &own, reg.account.clone()).error_code(), None);
        assert!(c.conn.authenticated().is_some());
    }

    #[test]
    fn bundles_consume_one_time_keys_then_fall_back_to_last_resort() {
        let relay = relay();
        let bob = registered(&relay, 2);
        let mut alice = registered(&relay, 0);
        let fetch_bundle = |alice: &mut Client| match alice
            .call(
                &relay,
                request::Kind::FetchBundle(relay::FetchBundle {
                    account_id: bob.account.clone(),
                    device_id: 0,
                }),
            )
            .response
            .kind
        {
            Some(response::Kind::Bundle(b)) => b,
            other => panic!("expected a bundle, got {other:?}"),
        };
        let mut seen = HashSet::new();
        for _ in 0..2 {
            let b = fetch_bundle(&mut alice);
            assert_eq!(b.registration_id, bob.registration_id);
            assert!(seen.insert(b.pre_key.expect("one-time key left").id));
            assert_ne!(b.kyber_pre_key.expect("kyber").id, 999);
        }
        for _ in 0..3 {
            let b = fetch_bundle(&mut alice);
            assert!(b.pre_key.is_none());
            assert_eq!(b.kyber_pre_key.expect("last resort").id, 999);
            assert!(b.signed_pre_key.is_some());
        }
        let mut bob = bob;
        match bob
            .call(
                &relay,
                request::Kind::PreKeyCount(relay::PreKeyCountRequest {}),
            )
            .response
            .kind
        {
            Some(response::Kind::PreKeyCount(c)) => {
                assert_eq!((c.pre_keys, c.kyber_pre_keys, c.low), (0, 0, true));
            }
            other => panic!("expected counts, got {other:?}"),
        }
        assert_eq!(
            alice
                .call(
                    &relay,
                    request::Kind::FetchBundle(relay::FetchBundle {
                        account_id: vec![3; 16],
                        device_id: 1,
                    }),
                )
                .error_code(),
            Some(ErrorCode::UnknownRecipient)
        );
    }

    #[test]
    fn concurrent_bundle_fetches_never_share_a_key() {
        let relay = Arc::new(relay_with(Config {
            one_time_keys_per_hour: 1000,
            ..Config::default()
        }));
        let bob = registered(&relay, 200);
        let alice = registered(&relay, 0);
        let auth = alice.conn.clone();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let relay = Arc::clone(&relay);
                let mut conn = auth.clone();
                let account = bob.account.clone();
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    for _ in 0..60 {
                        let out = relay.handle(
                            &mut conn,
                            req(request::Kind::FetchBundle(relay::FetchBundle {
                                account_id: account.clone(),
                                device_id: 1,
                            })),
                            NOW,
                            &mut rand::rng(),
                        );
                        if let Some(response::Kind::Bundle(relay::Bundle {
                            pre_key: Some(k),
                            ..
                        })) = out.response.kind
                        {
                            ids.push(k.id);
                        }
                    }
                    ids
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().expect("thread"));
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 200);
        assert_eq!(unique.len(), 200);
    }

    #[test]
    fn send_checks_recipient_registration_and_size() {
        let relay = relay_with(Config {
            max_envelope_bytes: 100,
            ..Config::default()
        });
        let bob = registered(&relay, 0);
        let mut alice = registered(&relay, 0);
        assert_eq!(
            send(&mut alice, &relay, &[9; 16], 0, b"x").error_code(),
            Some(ErrorCode::UnknownRecipient)
        );
        assert_eq!(
            send(&mut alice, &relay, &bob.account, 1, b"x").error_code(),
            Some(ErrorCode::StaleDevice)
        );
        assert_eq!(
            send(&mut alice, &relay, &bob.account, 0, &[0; 101]).error_code(),
            Some(ErrorCode::TooLarge)
        );
        let out = send(
            &mut alice,
            &relay,
            &bob.account,
            bob.registration_id,
            b"sealed",
        );
        assert_eq!(out.error_code(), None);
        assert!(out.durable);
        assert_eq!(out.push.len(), 1);
        let (to, env) = &out.push[0];
        assert_eq!(to.account.as_bytes().as_slice(), bob.account.as_slice());
        assert_eq!(env.envelope, b"sealed");
    }

    fn retry_after(out: &Outcome) -> u64 {
        match &out.response.kind {
            Some(response::Kind::Error(e)) if e.code() == ErrorCode::RateLimited => {
                assert!(e.message.contains("try again in"), "{}", e.message);
                e.retry_after_ms
            }
            other => panic!("expected RATE_LIMITED, got {other:?}"),
        }
    }

    #[test]
    fn sends_are_limited_per_account_and_refill() {
        let relay = relay_with(Config {
            sends_per_minute: 3,
            ..Config::default()
        });
        let bob = registered(&relay, 0);
        let mut alice = registered(&relay, 0);
        let mut carol = registered(&relay, 0);
        for _ in 0..3 {
            assert_eq!(
                send(&mut alice, &relay, &bob.account, 0, b"m").error_code(),
                None
            );
        }
        let out = send(&mut alice, &relay, &bob.account, 0, b"m");
        assert_eq!(retry_after(&out), 20_000, "one send frees up every 20 s");
        assert!(!out.durable && out.push.is_empty());
        // Nothing was stored for the refused send.
        assert_eq!(relay.stats().expect("stats").queued_envelopes, 3);
        // Another account is not affected.
        assert_eq!(
            send(&mut carol, &relay, &bob.account, 0, b"m").error_code(),
            None
        );
        // After the wait, Alice can send again.
        let later = relay.handle(
            &mut alice.conn,
            req(request::Kind::Send(relay::Send {
                recipient: bob.account.clone(),
                device_id: 1,
                registration_id: 0,
                envelope: b"m".to_vec(),
            })),
            NOW + 20_000,
            &mut rand::rng(),
        );
        assert_eq!(later.error_code(), None);
    }

    #[test]
    fn registrations_are_limited_per_address() {
        let relay = relay_with(Config {
            registrations_per_address_per_hour: 2,
            ..Config::default()
        });
        let token = invite(&relay, 10, NOW + 1000);
        let office: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        let home: std::net::IpAddr = "198.51.100.7".parse().expect("ip");
        for _ in 0..2 {
            let mut c = Client::new(1);
            c.conn = c.conn.clone().with_peer(office);
            assert_eq!(c.register(&relay, &token, 0).error_code(), None);
        }
        let mut c = Client::new(1);
        c.conn = c.conn.clone().with_peer(office);
        let out = c.register(&relay, &token, 0);
        assert!(retry_after(&out) > 0);
        assert!(c.conn.authenticated().is_none());
        // The invite was not spent by the refused attempt, and another
        // address registers fine.
        let mut d = Client::new(1);
        d.conn = d.conn.clone().with_peer(home);
        assert_eq!(d.register(&relay, &token, 0).error_code(), None);
    }

    #[test]
    fn bundle_fetches_cannot_drain_one_time_keys() {
        let relay = relay_with(Config {
            one_time_keys_per_hour: 2,
            bundle_fetches_per_hour: 3,
            ..Config::default()
        });
        let victim = registered(&relay, 10);
        let mut attacker = registered(&relay, 0);
        let fetch_bundle = |c: &mut Client| {
            c.call(
                &relay,
                request::Kind::FetchBundle(relay::FetchBundle {
                    account_id: victim.account.clone(),
                    device_id: 1,
                }),
            )
        };
        let mut one_time = 0;
        for _ in 0..3 {
            match fetch_bundle(&mut attacker).response.kind {
                Some(response::Kind::Bundle(b)) => {
                    assert!(b.kyber_pre_key.is_some(), "a session can always start");
                    one_time += usize::from(b.pre_key.is_some());
                }
                other => panic!("expected a bundle, got {other:?}"),
            }
        }
        assert_eq!(
            one_time, 2,
            "only two one-time keys an hour leave the relay"
        );
        let out = fetch_bundle(&mut attacker);
        assert!(retry_after(&out) > 0, "the fetcher is limited too");
        // The victim keeps the rest of its one-time keys.
        let (ec, _) = relay
            .store()
            .pre_key_counts(DeviceKey {
                account: Uuid::from_slice(&victim.account).expect("uuid"),
                device: 1,
            })
            .expect("counts");
        assert_eq!(ec, 8);
    }

    #[test]
    fn an_account_can_delete_itself() {
        let relay = relay();
        let mut bob = registered(&relay, 5);
        let mut alice = registered(&relay, 0);
        assert_eq!(
            send(&mut alice, &relay, &bob.account, 0, b"queued").error_code(),
            None
        );
        let out = bob.call(
            &relay,
            request::Kind::DeleteAccount(relay::DeleteAccount {}),
        );
        assert_eq!(out.error_code(), None);
        assert!(out.durable);
        assert!(bob.conn.authenticated().is_none());
        let stats = relay.stats().expect("stats");
        assert_eq!((stats.accounts, stats.queued_envelopes), (1, 0));
        assert_eq!(
            send(&mut alice, &relay, &bob.account, 0, b"late").error_code(),
            Some(ErrorCode::UnknownRecipient)
        );
    }

    #[test]
    fn an_over_long_group_key_is_malformed_not_internal() {
        // Found by fuzzing (fuzz/regressions/relay_handler/
        // group_key_over_255_bytes_internal.bin).
        let relay = relay();
        let mut c = Client::new(3);
        let auth = KeyPair::generate(&mut rand::rng());
        let group_id = [9u8; 16];
        let mut auth_key = auth.public_key.serialize().to_vec();
        auth_key.extend_from_slice(&[5u8; 256]);
        let body = group_body(&[&0u64.to_be_bytes(), b"blob", &auth_key, &[]]);
        let msg = request::Kind::GroupWrite(relay::GroupWrite {
            group_id: group_id.to_vec(),
            expected_version: 0,
            blob: b"blob".to_vec(),
            signature: group_sig(
                &c.conn.exporter,
                &auth.private_key,
                GroupPurpose::Write,
                &group_id,
                &body,
            ),
            auth_key,
            link_key: Vec::new(),
        });
        assert_eq!(c.call(&relay, msg).error_code(), Some(ErrorCode::Malformed));
    }

    #[test]
    fn a_fetch_answer_always_fits_in_the_clients_frame() {
        // Found by fuzzing (fuzz/regressions/relay_handler/
        // fetch_response_over_frame_cap.bin): max-size envelopes filled a
        // Fetch answer past the cap the client reads with.
        let relay = relay();
        let mut bob = registered(&relay, 0);
        let mut alice = registered(&relay, 0);
        let big = vec![7u8; relay.config().max_envelope_bytes];
        for _ in 0..12 {
            assert_eq!(
                send(&mut alice, &relay, &bob.account, 0, &big).error_code(),
                None
            );
        }
        let mut seen = 0;
        loop {
            let out = bob.call(&relay, request::Kind::Fetch(relay::Fetch { limit: 500 }));
            let size = prost::Message::encoded_len(&out.response) + 4;
            assert!(
                size <= sotto_wire::DEFAULT_MAX_FRAME_BYTES,
                "a {size}-byte answer is over the client's frame cap"
            );
            let Some(response::Kind::Envelopes(e)) = out.response.kind else {
                panic!("expected envelopes");
            };
            assert!(!e.envelopes.is_empty());
            seen += e.envelopes.len();
            let seqs = e.envelopes.iter().map(|x| x.seq).collect();
            bob.call(&relay, request::Kind::Ack(relay::Ack { seqs }));
            if !e.more {
                break;
            }
        }
        assert_eq!(seen, 12, "paging loses nothing");
    }

    #[test]
    fn mailbox_quota_is_enforced() {
        let relay = relay_with(Config {
            mailbox_max_envelopes: 2,
            ..Config::default()
        });
        let bob = registered(&relay, 0);
        let mut alice = registered(&relay, 0);
        for _ in 0..2 {
            assert_eq!(
                send(&mut alice, &relay, &bob.account, 0, b"m").error_code(),
                None
            );
        }
        assert_eq!(
            send(&mut alice, &relay, &bob.account, 0, b"m").error_code(),
            Some(ErrorCode::MailboxFull)
        );
        let relay = relay_with(Config {
            mailbox_max_bytes: 10,
            ..Config::default()
        });
        let bob = registered(&relay, 0);
        let mut alice = registered(&relay, 0);
        assert_eq!(
            send(&mut alice, &relay, &bob.account, 0, &[1; 10]).error_code(),
            None
        );
        assert_eq!(
            send(&mut alice, &relay, &bob.account, 0, &[1]).error_code(),
            Some(ErrorCode::MailboxFull)
        );
    }

    #[test]
    fn fetch_is_ordered_and_ack_only_touches_own_mailbox() {
        let relay = relay();
        let mut bob = registered(&relay, 0);
        let mut carol = registered(&relay, 0);
        let mut alice = registered(&relay, 0);
        let mut bob_seqs = Vec::new();
        for i in 0..5u8 {
            let out = send(&mut alice, &relay, &bob.account, 0, &[i]);
            match out.response.kind {
                Some(response::Kind::Sent(s)) => bob_seqs.push(s.seq),
                other => panic!("expected sent, got {other:?}"),
            }
        }
        assert_eq!(
            send(&mut alice, &relay, &carol.account, 0, b"c").error_code(),
            None
        );
        let first = fetch(&mut bob, &relay, 3);
        assert!(first.more);
        assert_eq!(
            first
                .envelopes
                .iter()
                .map(|e| e.envelope[0])
                .collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        // Fetching deletes nothing.
        assert_eq!(fetch(&mut bob, &relay, 0).envelopes.len(), 5);

        // Carol acks bob's seqs: nothing happens to bob's mailbox.
        let out = carol.call(
            &relay,
            request::Kind::Ack(relay::Ack {
                seqs: bob_seqs.clone(),
            }),
        );
        assert_eq!(out.error_code(), None);
        assert_eq!(fetch(&mut bob, &relay, 0).envelopes.len(), 5);
        assert_eq!(fetch(&mut carol, &relay, 0).envelopes.len(), 1);

        let out = bob.call(
            &relay,
            request::Kind::Ack(relay::Ack {
                seqs: bob_seqs[..2].to_vec(),
            }),
        );
        assert!(out.durable);
        let rest = fetch(&mut bob, &relay, 0);
        assert!(!rest.more);
        assert_eq!(
            rest.envelopes.iter().map(|e| e.seq).collect::<Vec<_>>(),
            bob_seqs[2..].to_vec()
        );
    }

    #[test]
    fn expiry_sweep_drops_old_envelopes() {
        let relay = relay_with(Config {
            envelope_ttl: Duration::from_secs(60),
            ..Config::default()
        });
        let mut bob = registered(&relay, 0);
        let mut alice = registered(&relay, 0);
        let old = relay.handle(
            &mut alice.conn,
            req(request::Kind::Send(relay::Send {
                recipient: bob.account.clone(),
                device_id: 1,
                registration_id: 0,
                envelope: b"old".to_vec(),
            })),
            NOW - 120_000,
            &mut rand::rng(),
        );
        assert_eq!(old.error_code(), None);
        assert_eq!(
            send(&mut alice, &relay, &bob.account, 0, b"new").error_code(),
            None
        );
        assert_eq!(relay.sweep(NOW).expect("sweep"), 1);
        let left = fetch(&mut bob, &relay, 0);
        assert_eq!(left.envelopes.len(), 1);
        assert_eq!(left.envelopes[0].envelope, b"new");
        assert_eq!(relay.stats().expect("stats").queued_envelopes, 1);
    }

    #[test]
    fn sender_certificate_validates_under_the_trust_root() {
        let mut rng = rand::rng();
        let root = KeyPair::generate(&mut rng);
        let server = KeyPair::generate(&mut rng);
        let cert = ServerCertificate::new(1, server.public_key, &root.private_key, &mut rng)
            .expect("server cert");
        let relay = Relay::new(
            SledStore::temporary().expect("db"),
            Config::default(),
            Signer::new(cert, server.private_key),
        );
        let mut alice = registered(&relay, 0);
        let out = alice.call(
            &relay,
            request::Kind::SenderCertificate(relay::SenderCertificateRequest {}),
        );
        let Some(response::Kind::SenderCertificate(sc)) = out.response.kind else {
            panic!("expected a certificate");
        };
        let parsed = SenderCertificate::deserialize(&sc.certificate).expect("parses");
        assert!(
            parsed
                .validate(&root.public_key, Timestamp::from_epoch_millis(NOW))
                .expect("validate")
        );
        assert_eq!(sc.expires_at_ms, NOW + 86_400_000);
    }

    #[test]
    fn reset_identity_replaces_keys_and_keeps_mail() {
        let relay = relay();
        let mut bob = registered(&relay, 3);
        let mut alice = registered(&relay, 0);
        assert_eq!(
            send(&mut alice, &relay, &bob.account, 0, b"kept").error_code(),
            None
        );
        let new_id = IdentityKeyPair::generate(&mut rand::rng());
        let nonce = bob.challenge(&relay);
        let out = bob.call(
            &relay,
            request::Kind::ResetIdentity(relay::ResetIdentity {
                identity_key: new_id.identity_key().serialize().to_vec(),
                registration_id: 7,
                new_key_signature: bob.sign(Purpose::ResetIdentity, &new_id, &nonce),
                signed_pre_key: Some(signed(&new_id, 2, ec_public())),
                kyber_last_resort: Some(signed(&new_id, 3, vec![5; 64])),
                pre_keys: vec![],
                kyber_pre_keys: vec![],
            }),
        );
        assert_eq!(out.error_code(), None);
        match alice
            .call(
                &relay,
                request::Kind::FetchIdentity(relay::FetchIdentity {
                    account_id: bob.account.clone(),
                }),
            )
            .response
            .kind
        {
            Some(response::Kind::Identity(i)) => {
                assert_eq!(i.identity_key, new_id.identity_key().serialize().to_vec());
                assert_eq!(i.registration_id, 7);
            }
            other => panic!("expected identity, got {other:?}"),
        }
        assert_eq!(
            send(&mut alice, &relay, &bob.account, 4242, b"x").error_code(),
            Some(ErrorCode::StaleDevice)
        );
        assert_eq!(fetch(&mut bob, &relay, 0).envelopes.len(), 1);
    }

    #[test]
    fn wrong_version_and_empty_requests_are_refused() {
        let relay = relay();
        let mut c = Client::new(1);
        let out = relay.handle(
            &mut c.conn,
            Request {
                version: 99,
                kind: Some(request::Kind::Challenge(relay::ChallengeRequest {})),
            },
            NOW,
            &mut rand::rng(),
        );
        assert_eq!(out.error_code(), Some(ErrorCode::UnsupportedVersion));
        let out = relay.handle(
            &mut c.conn,
            Request {
                version: sotto_wire::PROTOCOL_VERSION,
                kind: None,
            },
            NOW,
            &mut rand::rng(),
        );
        assert_eq!(out.error_code(), Some(ErrorCode::Malformed));
    }

    fn authenticate(c: &mut Client, relay: &Relay) -> Outcome {
        let nonce = c.challenge(relay);
        let sig = c.sign(Purpose::Authenticate, &c.identity, &nonce);
        let account = c.account.clone();
        c.call(
            relay,
            request::Kind::Authenticate(relay::Authenticate {
                account_id: account,
                device_id: 1,
                auth_signature: sig,
            }),
        )
    }

    #[test]
    fn banned_accounts_cannot_authenticate_or_keep_using_a_session() {
        let relay = relay();
        let mut bob = registered(&relay, 0);
        let bob_id = Uuid::from_slice(&bob.account).expect("uuid");
        assert!(relay.ban(Uuid::new_v4(), NOW).expect("ban").is_empty());
        assert_eq!(relay.ban(bob_id, NOW).expect("ban"), vec![1]);
        // The connection that was already authenticated is cut off at its next request.
        let out = bob.call(&relay, request::Kind::Fetch(relay::Fetch { limit: 1 }));
        assert_eq!(out.error_code(), Some(ErrorCode::Banned));
        assert!(bob.conn.authenticated().is_none());
        let out = authenticate(&mut bob, &relay);
        assert_eq!(out.error_code(), Some(ErrorCode::Banned));
        assert!(bob.conn.authenticated().is_none());
        assert!(relay.unban(bob_id).expect("unban"));
        assert!(!relay.unban(bob_id).expect("unban twice"));
        assert_eq!(authenticate(&mut bob, &relay).error_code(), None);
        assert!(bob.conn.authenticated().is_some());
    }

    #[test]
    fn removed_accounts_lose_keys_and_mail() {
        let relay = relay();
        let bob = registered(&relay, 3);
        let mut alice = registered(&relay, 2);
        let bob_id = Uuid::from_slice(&bob.account).expect("uuid");
        for body in [b"one".as_slice(), b"two"] {
            let out = send(&mut alice, &relay, &bob.account, 0, body);
            assert_eq!(out.error_code(), None);
        }
        let before = relay.stats().expect("stats");
        assert_eq!((before.accounts, before.devices), (2, 2));
        assert_eq!(before.queued_envelopes, 2);
        let removed = relay.remove_account(bob_id).expect("remove");
        assert_eq!(
            removed,
            Removed {
                devices: 1,
                envelopes: 2,
                pre_keys: 6
            }
        );
        let after = relay.stats().expect("stats");
        assert_eq!((after.accounts, after.queued_envelopes), (1, 0));
        let out = alice.call(
            &relay,
            request::Kind::FetchBundle(relay::FetchBundle {
                account_id: bob.account.clone(),
                device_id: 1,
            }),
        );
        assert_eq!(out.error_code(), Some(ErrorCode::UnknownRecipient));
        // Alice is untouched.
        let alice_id = Uuid::from_slice(&alice.account).expect("uuid");
        let key = DeviceKey {
            account: alice_id,
            device: 1,
        };
        assert_eq!(relay.store().pre_key_counts(key).expect("counts"), (2, 2));
        assert_eq!(
            relay.remove_account(bob_id).expect("again"),
            Removed::default()
        );
    }

    // ---- groups ----

    /// Signs a group request's transcript on the connection whose exporter is `exporter`.
    fn group_sig(
        exporter: &[u8],
        key: &PrivateKey,
        purpose: GroupPurpose,
        group_id: &[u8],
        body: &[u8],
    ) -> Vec<u8> {
        key.calculate_signature(
            &group_transcript(purpose, exporter, group_id, body),
            &mut rand::rng(),
        )
        .expect("sign")
        .to_vec()
    }

    /// A `GroupWrite` signed by `signer`, installing `auth` and `link` (None: no link).
    fn group_write_req(
        exporter: &[u8],
        group_id: &[u8],
        expected_version: u64,
        blob: &[u8],
        signer: &KeyPair,
        auth: &KeyPair,
        link: Option<&KeyPair>,
    ) -> request::Kind {
        let auth_key = auth.public_key.serialize().to_vec();
        let link_key = link
            .map(|k| k.public_key.serialize().to_vec())
            .unwrap_or_default();
        let body = group_body(&[&expected_version.to_be_bytes(), blob, &auth_key, &link_key]);
        request::Kind::GroupWrite(relay::GroupWrite {
            group_id: group_id.to_vec(),
            expected_version,
            blob: blob.to_vec(),
            signature: group_sig(
                exporter,
                &signer.private_key,
                GroupPurpose::Write,
                group_id,
                &body,
            ),
            auth_key,
            link_key,
        })
    }

    impl Client {
        #[allow(clippy::too_many_arguments)]
        fn write_group(
            &mut self,
            relay: &Relay,
            group_id: &[u8],
            expected_version: u64,
            blob: &[u8],
            signer: &KeyPair,
            auth: &KeyPair,
            link: Option<&KeyPair>,
        ) -> Outcome {
            let msg = group_write_req(
                &self.conn.exporter,
                group_id,
                expected_version,
                blob,
                signer,
                auth,
                link,
            );
            self.call(relay, msg)
        }

        fn read_group(&mut self, relay: &Relay, group_id: &[u8], signer: &KeyPair) -> Outcome {
            let signature = group_sig(
                &self.conn.exporter,
                &signer.private_key,
                GroupPurpose::Read,
                group_id,
                &group_body(&[]),
            );
            self.call(
                relay,
                request::Kind::GroupRead(relay::GroupRead {
                    group_id: group_id.to_vec(),
                    signature,
                }),
            )
        }

        fn join_group(
            &mut self,
            relay: &Relay,
            group_id: &[u8],
            request: &[u8],
            signer: &KeyPair,
        ) -> Outcome {
            let signature = group_sig(
                &self.conn.exporter,
                &signer.private_key,
                GroupPurpose::Join,
                group_id,
                &group_body(&[request]),
            );
            self.call(
                relay,
                request::Kind::GroupJoinRequest(relay::GroupJoinRequest {
                    group_id: group_id.to_vec(),
                    request: request.to_vec(),
                    signature,
                }),
            )
        }

        fn fetch_requests(&mut self, relay: &Relay, group_id: &[u8], signer: &KeyPair) -> Outcome {
            let signature = group_sig(
                &self.conn.exporter,
                &signer.private_key,
                GroupPurpose::FetchRequests,
                group_id,
                &group_body(&[]),
            );
            self.call(
                relay,
                request::Kind::GroupFetchRequests(relay::GroupFetchRequests {
                    group_id: group_id.to_vec(),
                    signature,
                }),
            )
        }

        fn delete_requests(
            &mut self,
            relay: &Relay,
            group_id: &[u8],
            ids: &[u64],
            signer: &KeyPair,
        ) -> Outcome {
            let joined: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
            let signature = group_sig(
                &self.conn.exporter,
                &signer.private_key,
                GroupPurpose::DeleteRequests,
                group_id,
                &group_body(&[&joined]),
            );
            self.call(
                relay,
                request::Kind::GroupDeleteRequests(relay::GroupDeleteRequests {
                    group_id: group_id.to_vec(),
                    ids: ids.to_vec(),
                    signature,
                }),
            )
        }
    }

    fn keypair() -> KeyPair {
        KeyPair::generate(&mut rand::rng())
    }

    fn written(out: &Outcome) -> u64 {
        match &out.response.kind {
            Some(response::Kind::GroupWritten(w)) => w.version,
            other => panic!("expected group written, got {other:?}"),
        }
    }

    fn state(out: &Outcome) -> (u64, Vec<u8>) {
        match &out.response.kind {
            Some(response::Kind::GroupState(s)) => (s.version, s.blob.clone()),
            other => panic!("expected group state, got {other:?}"),
        }
    }

    fn requests(out: &Outcome) -> Vec<relay::GroupRequest> {
        match &out.response.kind {
            Some(response::Kind::GroupRequests(r)) => r.requests.clone(),
            other => panic!("expected group requests, got {other:?}"),
        }
    }

    const GROUP: [u8; 16] = [0x61; 16];

    #[test]
    fn groups_are_created_read_and_replaced_by_compare_and_swap() {
        let relay = relay();
        // Never authenticated: group requests need only the group's key.
        let mut c = Client::new(4);
        let auth = keypair();
        let stranger = keypair();

        let out = c.write_group(&relay, &GROUP, 0, b"v1", &auth, &auth, None);
        assert!(out.durable);
        assert_eq!(written(&out), 1);
        assert!(c.conn.authenticated().is_none());
        assert_eq!(
            state(&c.read_group(&relay, &GROUP, &auth)),
            (1, b"v1".to_vec())
        );

        // Creating again, or writing from a version that is no longer current: CONFLICT.
        let out = c.write_group(&relay, &GROUP, 0, b"again", &auth, &auth, None);
        assert_eq!(out.error_code(), Some(ErrorCode::Conflict));
        let out = c.write_group(&relay, &GROUP, 1, b"v2", &auth, &auth, None);
        assert_eq!(written(&out), 2);
        let out = c.write_group(&relay, &GROUP, 1, b"stale", &auth, &auth, None);
        assert_eq!(out.error_code(), Some(ErrorCode::Conflict));
        match &out.response.kind {
            Some(response::Kind::Error(e)) => {
                assert_eq!(e.message, "the group changed; fetch it and retry")
            }
            other => panic!("expected an error, got {other:?}"),
        }
        assert_eq!(
            state(&c.read_group(&relay, &GROUP, &auth)),
            (2, b"v2".to_vec())
        );

        // The wrong key can neither read nor write, even at the right version.
        let out = c.read_group(&relay, &GROUP, &stranger);
        assert_eq!(out.error_code(), Some(ErrorCode::Forbidden));
        let out = c.write_group(&relay, &GROUP, 2, b"mine", &stranger, &stranger, None);
        assert_eq!(out.error_code(), Some(ErrorCode::Forbidden));
        // A signature made for another connection's exporter does not verify here.
        let mut other = Client::new(5);
        let msg = group_write_req(&[9; 32], &GROUP, 2, b"replayed", &auth, &auth, None);
        assert_eq!(
            other.call(&relay, msg).error_code(),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            state(&c.read_group(&relay, &GROUP, &auth)),
            (2, b"v2".to_vec())
        );

        // Unknown groups, bad ids, bad sizes and undecodable keys.
        let out = c.read_group(&relay, &[0x62; 16], &auth);
        assert_eq!(out.error_code(), Some(ErrorCode::UnknownGroup));
        let out = c.write_group(&relay, &[0x62; 16], 4, b"x", &auth, &auth, None);
        assert_eq!(out.error_code(), Some(ErrorCode::UnknownGroup));
        let out = c.write_group(&relay, &[0x62; 15], 0, b"x", &auth, &auth, None);
        assert_eq!(out.error_code(), Some(ErrorCode::Malformed));
        let out = c.write_group(&relay, &[0x62; 16], 0, b"", &auth, &auth, None);
        assert_eq!(out.error_code(), Some(ErrorCode::Malformed));
        let big = vec![1; relay.config().max_group_state_bytes + 1];
        let out = c.write_group(&relay, &[0x62; 16], 0, &big, &auth, &auth, None);
        assert_eq!(out.error_code(), Some(ErrorCode::TooLarge));
        let max = vec![1; relay.config().max_group_state_bytes];
        let out = c.write_group(&relay, &[0x62; 16], 0, &max, &auth, &auth, None);
        assert_eq!(written(&out), 1);
        let mut msg = group_write_req(&c.conn.exporter, &[0x63; 16], 0, b"x", &auth, &auth, None);
        if let request::Kind::GroupWrite(w) = &mut msg {
            w.auth_key = vec![0x09; 33];
        }
        assert_eq!(c.call(&relay, msg).error_code(), Some(ErrorCode::Malformed));
        // Creation must be signed by the key it installs.
        let out = c.write_group(&relay, &[0x63; 16], 0, b"x", &stranger, &auth, None);
        assert_eq!(out.error_code(), Some(ErrorCode::Forbidden));
        assert_eq!(relay.stats().expect("stats").groups, 2);
    }

    #[test]
    fn rotating_the_auth_key_locks_out_the_old_one() {
        let relay = relay();
        let mut c = Client::new(4);
        let (old, new) = (keypair(), keypair());
        assert_eq!(
            written(&c.write_group(&relay, &GROUP, 0, b"v1", &old, &old, None)),
            1
        );
        // A member is removed: the others write, signed by the old key, installing a new one.
        let out = c.write_group(&relay, &GROUP, 1, b"v2", &old, &new, None);
        assert_eq!(written(&out), 2);
        assert_eq!(
            c.read_group(&relay, &GROUP, &old).error_code(),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            c.write_group(&relay, &GROUP, 2, b"evil", &old, &old, None)
                .error_code(),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            c.fetch_requests(&relay, &GROUP, &old).error_code(),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            state(&c.read_group(&relay, &GROUP, &new)),
            (2, b"v2".to_vec())
        );
    }

    #[test]
    fn join_requests_need_the_link_key_and_are_managed_with_the_auth_key() {
        let relay = relay_with(Config {
            max_join_requests_per_group: 3,
            max_join_request_bytes: 100,
            ..Config::default()
        });
        let mut admin = Client::new(4);
        let mut joiner = Client::new(5);
        let (auth, link, stranger) = (keypair(), keypair(), keypair());
        let other_group = [0x70; 16];
        assert_eq!(
            written(&admin.write_group(&relay, &GROUP, 0, b"v1", &auth, &auth, None)),
            1
        );
        assert_eq!(
            written(&admin.write_group(&relay, &other_group, 0, b"o", &auth, &auth, Some(&link))),
            1
        );
        // No link yet: nobody may ask to join.
        assert_eq!(
            joiner
                .join_group(&relay, &GROUP, b"hello", &link)
                .error_code(),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            written(&admin.write_group(&relay, &GROUP, 1, b"v2", &auth, &auth, Some(&link))),
            2
        );
        assert_eq!(
            joiner
                .join_group(&relay, &GROUP, b"hello", &stranger)
                .error_code(),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            joiner
                .join_group(&relay, &[0x71; 16], b"hello", &link)
                .error_code(),
            Some(ErrorCode::UnknownGroup)
        );
        assert_eq!(
            joiner.join_group(&relay, &GROUP, b"", &link).error_code(),
            Some(ErrorCode::Malformed)
        );
        assert_eq!(
            joiner
                .join_group(&relay, &GROUP, &[1; 101], &link)
                .error_code(),
            Some(ErrorCode::TooLarge)
        );
        for body in [b"first".as_slice(), b"second", b"third"] {
            let out = joiner.join_group(&relay, &GROUP, body, &link);
            assert_eq!(out.error_code(), None);
            assert!(out.durable);
        }
        assert_eq!(
            joiner
                .join_group(&relay, &GROUP, b"fourth", &link)
                .error_code(),
            Some(ErrorCode::Quota)
        );
        // Another group's quota and requests are its own.
        assert_eq!(
            joiner
                .join_group(&relay, &other_group, b"elsewhere", &link)
                .error_code(),
            None
        );

        // The link key cannot read the queue; the auth key can, oldest first.
        assert_eq!(
            joiner.fetch_requests(&relay, &GROUP, &link).error_code(),
            Some(ErrorCode::Forbidden)
        );
        let pending = requests(&admin.fetch_requests(&relay, &GROUP, &auth));
        assert_eq!(
            pending
                .iter()
                .map(|r| r.request.as_slice())
                .collect::<Vec<_>>(),
            vec![b"first".as_slice(), b"second", b"third"]
        );
        assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
        assert!(pending.iter().all(|r| r.received_at_ms == NOW));

        // Deleting needs the auth key and touches only this group.
        let other_ids: Vec<u64> = requests(&admin.fetch_requests(&relay, &other_group, &auth))
            .iter()
            .map(|r| r.id)
            .collect();
        let ids = [pending[0].id, pending[2].id, other_ids[0]];
        assert_eq!(
            joiner
                .delete_requests(&relay, &GROUP, &ids, &link)
                .error_code(),
            Some(ErrorCode::Forbidden)
        );
        let out = admin.delete_requests(&relay, &GROUP, &ids, &auth);
        assert_eq!(out.error_code(), None);
        assert!(out.durable);
        let left = requests(&admin.fetch_requests(&relay, &GROUP, &auth));
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].request, b"second");
        assert_eq!(
            requests(&admin.fetch_requests(&relay, &other_group, &auth)).len(),
            1
        );
        // Room again after the delete.
        assert_eq!(
            joiner
                .join_group(&relay, &GROUP, b"again", &link)
                .error_code(),
            None
        );

        // Removing the link closes the door.
        assert_eq!(
            written(&admin.write_group(&relay, &GROUP, 2, b"v3", &auth, &auth, None)),
            3
        );
        assert_eq!(
            joiner
                .join_group(&relay, &GROUP, b"late", &link)
                .error_code(),
            Some(ErrorCode::Forbidden)
        );
    }

    #[test]
    fn group_count_is_limited() {
        let relay = relay_with(Config {
            max_groups: 2,
            ..Config::default()
        });
        let mut c = Client::new(4);
        let auth = keypair();
        for id in [[1u8; 16], [2; 16]] {
            assert_eq!(
                written(&c.write_group(&relay, &id, 0, b"g", &auth, &auth, None)),
                1
            );
        }
        assert_eq!(
            c.write_group(&relay, &[3; 16], 0, b"g", &auth, &auth, None)
                .error_code(),
            Some(ErrorCode::Quota)
        );
        // Updates are not creations.
        assert_eq!(
            written(&c.write_group(&relay, &[1; 16], 1, b"g2", &auth, &auth, None)),
            2
        );
        assert_eq!(relay.stats().expect("stats").groups, 2);
    }

    #[test]
    fn concurrent_group_writes_have_exactly_one_winner() {
        let relay = Arc::new(relay());
        let exporter = [4u8; 32];
        let auth = keypair();
        let mut conn = ConnState::new(exporter);
        let out = relay.handle(
            &mut conn,
            req(group_write_req(
                &exporter, &GROUP, 0, b"v1", &auth, &auth, None,
            )),
            NOW,
            &mut rand::rng(),
        );
        assert_eq!(written(&out), 1);
        const WRITERS: usize = 8;
        let barrier = Arc::new(Barrier::new(WRITERS));
        let handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let relay = Arc::clone(&relay);
                let barrier = Arc::clone(&barrier);
                // Signed before the race starts, so the writes really overlap.
                let msg = group_write_req(&exporter, &GROUP, 1, &[i as u8 + 1], &auth, &auth, None);
                std::thread::spawn(move || {
                    let mut conn = ConnState::new(exporter);
                    barrier.wait();
                    relay.handle(&mut conn, req(msg), NOW, &mut rand::rng())
                })
            })
            .collect();
        let outcomes: Vec<Outcome> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        let winners: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| o.error_code().is_none())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "exactly one writer wins");
        assert!(
            outcomes
                .iter()
                .filter(|o| o.error_code().is_some())
                .all(|o| o.error_code() == Some(ErrorCode::Conflict))
        );
        assert_eq!(written(&outcomes[winners[0]]), 2);
        let mut conn = ConnState::new(exporter);
        let signature = group_sig(
            &exporter,
            &auth.private_key,
            GroupPurpose::Read,
            &GROUP,
            &group_body(&[]),
        );
        let out = relay.handle(
            &mut conn,
            req(request::Kind::GroupRead(relay::GroupRead {
                group_id: GROUP.to_vec(),
                signature,
            })),
            NOW,
            &mut rand::rng(),
        );
        assert_eq!(state(&out), (2, vec![winners[0] as u8 + 1]));
    }

    #[test]
    fn group_requests_do_not_tie_groups_to_the_connection_account() {
        let relay = relay();
        let mut alice = registered(&relay, 0);
        let before = alice.conn.authenticated();
        assert!(before.is_some());
        let (auth, link) = (keypair(), keypair());
        assert_eq!(
            written(&alice.write_group(&relay, &GROUP, 0, b"blob", &auth, &auth, Some(&link))),
            1
        );
        assert_eq!(
            alice.join_group(&relay, &GROUP, b"req", &link).error_code(),
            None
        );
        assert_eq!(alice.conn.authenticated(), before);
        // Nothing stored for the group mentions alice's account id.
        let store = relay.store();
        assert!(store.group(&GROUP).expect("group").is_some());
        for name in ["groups", "group_requests"] {
            let tree = store.db().open_tree(name).expect("tree");
            for entry in tree.iter() {
                let (k, v) = entry.expect("entry");
                for bytes in [k.as_ref(), v.as_ref()] {
                    assert!(
                        !bytes.windows(16).any(|w| w == alice.account.as_slice()),
                        "account id in tree {name}"
                    );
                }
            }
        }
    }

    // ---- SendMulti ----

    /// A libsignal identity with in-memory stores, registered on the relay
    /// (unless made with `registered: false`).
    struct Person {
        client: Client,
        store: InMemSignalProtocolStore,
        account: Uuid,
        address: ProtocolAddress,
    }

    fn person(relay: &Relay, registered: bool) -> Person {
        let identity = IdentityKeyPair::generate(&mut rand::rng());
        let mut client = Client::new(7);
        client.identity = identity;
        let account = if registered {
            let token = invite(relay, 1, NOW + 1000);
            assert_eq!(client.register(relay, &token, 0).error_code(), None);
            Uuid::from_slice(&client.account).expect("uuid")
        } else {
            Uuid::new_v4()
        };
        Person {
            store: InMemSignalProtocolStore::new(identity, client.registration_id).expect("store"),
            client,
            account,
            address: ProtocolAddress::new(
                account.to_string(),
                DeviceId::new(1).expect("device id"),
            ),
        }
    }

    /// Makes prekeys in `p`'s store and returns the bundle a sender would
    /// fetch, claiming `registration_id`.
    async fn bundle_of(p: &mut Person, registration_id: u32) -> PreKeyBundle {
        let mut rng = rand::rng();
        let identity = p.client.identity;
        let pre = KeyPair::generate(&mut rng);
        p.store
            .save_pre_key(1.into(), &PreKeyRecord::new(1.into(), &pre))
            .await
            .expect("prekey");
        let signed = KeyPair::generate(&mut rng);
        let signature = identity
            .private_key()
            .calculate_signature(&signed.public_key.serialize(), &mut rng)
            .expect("sign");
        p.store
            .save_signed_pre_key(
                2.into(),
                &SignedPreKeyRecord::new(
                    2.into(),
                    Timestamp::from_epoch_millis(NOW),
                    &signed,
                    &signature,
                ),
            )
            .await
            .expect("signed prekey");
        let kyber =
            KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, 3.into(), identity.private_key())
                .expect("kyber");
        p.store
            .save_kyber_pre_key(3.into(), &kyber)
            .await
            .expect("kyber prekey");
        PreKeyBundle::new(
            registration_id,
            DeviceId::new(1).expect("device id"),
            Some((1.into(), pre.public_key)),
            2.into(),
            signed.public_key,
            signature.to_vec(),
            3.into(),
            kyber.public_key().expect("kyber public"),
            kyber.signature().expect("kyber signature"),
            *identity.identity_key(),
        )
        .expect("bundle")
    }

    /// Builds `sender`'s session with `to`, as if `to` had `registration_id`.
    async fn session_with(sender: &mut Person, to: &mut Person, registration_id: u32) {
        let bundle = bundle_of(to, registration_id).await;
        process_prekey_bundle(
            &to.address,
            &mut sender.store.session_store,
            &mut sender.store.identity_store,
            &bundle,
            SystemTime::now(),
            &mut rand::rng(),
        )
        .await
        .expect("session");
    }

    /// A multi-recipient sealed-sender message from `sender` carrying `text`,
    /// under a sender certificate the relay issued.
    async fn multi(
        sender: &mut Person,
        relay: &Relay,
        to: &[&ProtocolAddress],
        text: &[u8],
    ) -> Vec<u8> {
        let out = sender.client.call(
            relay,
            request::Kind::SenderCertificate(relay::SenderCertificateRequest {}),
        );
        let Some(response::Kind::SenderCertificate(sc)) = out.response.kind else {
            panic!("expected a certificate");
        };
        let cert = SenderCertificate::deserialize(&sc.certificate).expect("certificate");
        let usmc = UnidentifiedSenderMessageContent::new(
            CiphertextMessageType::SenderKey,
            cert,
            text.to_vec(),
            ContentHint::Default,
            Some(GROUP.to_vec()),
        )
        .expect("usmc");
        let mut sessions = Vec::new();
        for addr in to {
            sessions.push(
                sender
                    .store
                    .load_session(addr)
                    .await
                    .expect("load")
                    .expect("session"),
            );
        }
        let sessions: Vec<_> = sessions.iter().collect();
        sealed_sender_multi_recipient_encrypt(
            to,
            &sessions,
            Vec::<ServiceId>::new(),
            &usmc,
            &sender.store.identity_store,
            &mut rand::rng(),
        )
        .await
        .expect("encrypt")
    }

    fn send_multi(c: &mut Client, relay: &Relay, envelope: &[u8], ttl_ms: u64) -> Outcome {
        c.call(
            relay,
            request::Kind::SendMulti(relay::SendMulti {
                envelope: envelope.to_vec(),
                ttl_ms,
            }),
        )
    }

    fn error_accounts(out: &Outcome) -> Vec<Uuid> {
        match &out.response.kind {
            Some(response::Kind::Error(e)) => e
                .accounts
                .iter()
                .map(|a| Uuid::from_slice(a).expect("account id"))
                .collect(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_multi_fans_out_sealed_sender_copies_that_recipients_open() {
        let relay = relay();
        let mut alice = person(&relay, true);
        let mut people = [
            person(&relay, true),
            person(&relay, true),
            person(&relay, true),
        ];
        for p in &mut people {
            let reg = p.client.registration_id;
            session_with(&mut alice, p, reg).await;
        }
        let to: Vec<&ProtocolAddress> = people.iter().map(|p| &p.address).collect();
        let envelope = multi(&mut alice, &relay, &to, b"hello, group").await;

        // Only authenticated connections may send.
        let mut anonymous = Client::new(8);
        assert_eq!(
            send_multi(&mut anonymous, &relay, &envelope, 0).error_code(),
            Some(ErrorCode::Unauthenticated)
        );

        let out = send_multi(&mut alice.client, &relay, &envelope, 0);
        match &out.response.kind {
            Some(response::Kind::SentMulti(s)) => assert_eq!(s.recipients, 3),
            other => panic!("expected sent multi, got {other:?}"),
        }
        assert!(out.durable);
        assert_eq!(out.push.len(), 3);
        for p in &mut people {
            let mail = fetch(&mut p.client, &relay, 0);
            assert_eq!(mail.envelopes.len(), 1);
            let copy = &mail.envelopes[0];
            let pushed: Vec<_> = out
                .push
                .iter()
                .filter(|(k, _)| k.account == p.account)
                .collect();
            assert_eq!(pushed.len(), 1);
            assert_eq!(&pushed[0].1, copy);
            let usmc = sealed_sender_decrypt_to_usmc(&copy.envelope, &p.store.identity_store)
                .await
                .expect("recipient opens its copy");
            assert_eq!(usmc.contents().expect("contents"), b"hello, group");
            assert_eq!(usmc.group_id().expect("group id"), Some(GROUP.as_slice()));
            assert_eq!(
                usmc.sender().expect("sender").sender_uuid().expect("uuid"),
                alice.account.to_string()
            );
        }
        // Nothing was stored about the sender: alice's own mailbox is empty.
        assert!(fetch(&mut alice.client, &relay, 0).envelopes.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_multi_names_stale_and_unknown_recipients_and_stores_nothing() {
        let relay = relay();
        let mut alice = person(&relay, true);
        let mut bob = person(&relay, true);
        let mut carol = person(&relay, true);
        let mut dave = person(&relay, false); // never registered on this relay
        session_with(&mut alice, &mut bob, 1111).await; // an old registration of bob
        let reg = carol.client.registration_id;
        session_with(&mut alice, &mut carol, reg).await;
        session_with(&mut alice, &mut dave, 77).await;

        let envelope = multi(&mut alice, &relay, &[&bob.address, &carol.address], b"x").await;
        let out = send_multi(&mut alice.client, &relay, &envelope, 0);
        assert_eq!(out.error_code(), Some(ErrorCode::StaleDevice));
        assert_eq!(error_accounts(&out), vec![bob.account]);

        let all = [&bob.address, &carol.address, &dave.address];
        let envelope = multi(&mut alice, &relay, &all, b"x").await;
        let out = send_multi(&mut alice.client, &relay, &envelope, 0);
        // Unknown recipients are reported first: the sender must drop them anyway.
        assert_eq!(out.error_code(), Some(ErrorCode::UnknownRecipient));
        assert_eq!(error_accounts(&out), vec![dave.account]);
        assert!(out.push.is_empty());
        assert!(fetch(&mut carol.client, &relay, 0).envelopes.is_empty());
        assert_eq!(relay.stats().expect("stats").queued_envelopes, 0);

        // A truncated or altered real message is malformed, never a panic.
        for cut in [0, 1, 2, 10, 17, 20, 60, 80] {
            let out = send_multi(&mut alice.client, &relay, &envelope[..cut], 0);
            assert_eq!(out.error_code(), Some(ErrorCode::Malformed), "cut at {cut}");
        }
        let mut bad_version = envelope.clone();
        bad_version[0] = 0x11;
        assert_eq!(
            send_multi(&mut alice.client, &relay, &bad_version, 0).error_code(),
            Some(ErrorCode::Malformed)
        );
    }

    /// A fixed-width service id and its (device, registration id) list.
    type RawRecipient<'a> = ([u8; 17], &'a [(u8, u16)]);

    /// A hand-made sealed-sender v2 SentMessage: each recipient as a
    /// fixed-width service id and its (device, registration id) list.
    fn raw_multi(recipients: &[RawRecipient<'_>]) -> Vec<u8> {
        let mut out = vec![0x23, recipients.len() as u8];
        for (id, devices) in recipients {
            out.extend_from_slice(id);
            for (i, (device, reg)) in devices.iter().enumerate() {
                out.push(*device);
                let more = if i + 1 < devices.len() { 0x8000 } else { 0 };
                out.extend_from_slice(&(reg | more).to_be_bytes());
            }
            if devices.is_empty() {
                out.push(0);
            } else {
                out.extend_from_slice(&[7; 48]);
            }
        }
        out.extend_from_slice(&[9; 32]);
        out.extend_from_slice(b"shared ciphertext");
        out
    }

    fn aci(account: &[u8]) -> [u8; 17] {
        let mut id = [0u8; 17];
        id[1..].copy_from_slice(account);
        id
    }

    #[test]
    fn send_multi_refuses_garbage_duplicates_and_non_accounts() {
        let relay = relay();
        let bob = registered(&relay, 0);
        let mut alice = registered(&relay, 0);
        let reg = bob.registration_id as u16;
        let mut garbage = vec![0x23];
        garbage.extend_from_slice(&[0xff; 40]);
        for envelope in [vec![], vec![0x23], garbage, b"not sealed at all".to_vec()] {
            assert_eq!(
                send_multi(&mut alice, &relay, &envelope, 0).error_code(),
                Some(ErrorCode::Malformed)
            );
        }
        let cases: [&[RawRecipient<'_>]; 4] = [
            // The same recipient twice (libsignal merges it into a repeated device).
            &[
                (aci(&bob.account), &[(1, reg)]),
                (aci(&bob.account), &[(1, reg)]),
            ],
            &[(aci(&bob.account), &[(1, reg), (1, reg)])],
            // A recipient with no devices.
            &[(aci(&bob.account), &[])],
            // A phone-number identity is not an account on this relay.
            &[
                (aci(&bob.account), &[(1, reg)]),
                (
                    {
                        let mut pni = aci(&bob.account);
                        pni[0] = 1;
                        pni
                    },
                    &[(1, reg)],
                ),
            ],
        ];
        for case in cases {
            let out = send_multi(&mut alice, &relay, &raw_multi(case), 0);
            assert_eq!(out.error_code(), Some(ErrorCode::Malformed), "{case:?}");
        }
        assert!(
            relay
                .store()
                .envelopes(
                    DeviceKey {
                        account: Uuid::from_slice(&bob.account).expect("uuid"),
                        device: 1
                    },
                    10,
                    0
                )
                .expect("mail")
                .0
                .is_empty()
        );
        // A well-formed one goes through.
        let out = send_multi(
            &mut alice,
            &relay,
            &raw_multi(&[(aci(&bob.account), &[(1, reg)])]),
            0,
        );
        assert_eq!(out.error_code(), None);
    }

    #[test]
    fn send_multi_is_all_or_nothing_and_size_checked() {
        let relay = relay_with(Config {
            mailbox_max_envelopes: 1,
            max_envelope_bytes: 200,
            ..Config::default()
        });
        let mut bob = registered(&relay, 0);
        let mut carol = registered(&relay, 0);
        let mut alice = registered(&relay, 0);
        let (b, c) = (bob.registration_id as u16, carol.registration_id as u16);
        // Carol's mailbox is full.
        assert_eq!(
            send(&mut alice, &relay, &carol.account, 0, b"m").error_code(),
            None
        );
        let both = raw_multi(&[
            (aci(&bob.account), &[(1, b)]),
            (aci(&carol.account), &[(1, c)]),
        ]);
        let out = send_multi(&mut alice, &relay, &both, 0);
        assert_eq!(out.error_code(), Some(ErrorCode::MailboxFull));
        assert_eq!(
            error_accounts(&out),
            vec![Uuid::from_slice(&carol.account).expect("uuid")]
        );
        assert!(
            fetch(&mut bob, &relay, 0).envelopes.is_empty(),
            "bob got nothing"
        );
        // Once carol acks, both copies go out.
        let seq = fetch(&mut carol, &relay, 0).envelopes[0].seq;
        carol.call(&relay, request::Kind::Ack(relay::Ack { seqs: vec![seq] }));
        assert_eq!(send_multi(&mut alice, &relay, &both, 0).error_code(), None);
        assert_eq!(fetch(&mut bob, &relay, 0).envelopes.len(), 1);
        assert_eq!(fetch(&mut carol, &relay, 0).envelopes.len(), 1);

        let mut big = raw_multi(&[(aci(&bob.account), &[(1, b)])]);
        big.extend_from_slice(&[0; 200]);
        assert_eq!(
            send_multi(&mut alice, &relay, &big, 0).error_code(),
            Some(ErrorCode::TooLarge)
        );
    }

    #[test]
    fn send_multi_copies_expire_after_their_ttl() {
        let relay = relay();
        let mut bob = registered(&relay, 0);
        let mut carol = registered(&relay, 0);
        let mut alice = registered(&relay, 0);
        let (b, c) = (bob.registration_id as u16, carol.registration_id as u16);
        let both = raw_multi(&[
            (aci(&bob.account), &[(1, b)]),
            (aci(&carol.account), &[(1, c)]),
        ]);
        assert_eq!(
            send_multi(&mut alice, &relay, &both, 60_000).error_code(),
            None
        );
        // Without a ttl the copies live as long as any envelope.
        assert_eq!(send_multi(&mut alice, &relay, &both, 0).error_code(), None);
        // Bob acknowledges his expiring copy; carol does not.
        let first = fetch(&mut bob, &relay, 0).envelopes[0].seq;
        bob.call(&relay, request::Kind::Ack(relay::Ack { seqs: vec![first] }));
        assert_eq!(relay.sweep(NOW + 59_999).expect("sweep"), 0);
        assert_eq!(relay.sweep(NOW + 60_000).expect("sweep"), 1);
        assert_eq!(fetch(&mut carol, &relay, 0).envelopes.len(), 1);
        assert_eq!(fetch(&mut bob, &relay, 0).envelopes.len(), 1);
        assert_eq!(relay.stats().expect("stats").queued_envelopes, 2);
    }

    mod hostile {
        //! Whatever a peer sends, the request handler answers without
        //! panicking, and a refused request never counts as durable.
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
            vec(any::<u8>(), 0..max)
        }

        fn kind() -> impl Strategy<Value = request::Kind> {
            prop_oneof![
                (bytes(40), any::<u32>(), any::<u32>(), bytes(300)).prop_map(|(r, d, g, e)| {
                    request::Kind::Send(relay::Send {
                        recipient: r,
                        device_id: d,
                        registration_id: g,
                        envelope: e,
                    })
                }),
                (bytes(600), any::<u64>()).prop_map(|(e, t)| request::Kind::SendMulti(
                    relay::SendMulti {
                        envelope: e,
                        ttl_ms: t
                    }
                )),
                (
                    bytes(20),
                    any::<u64>(),
                    bytes(300),
                    bytes(40),
                    bytes(40),
                    bytes(70)
                )
                    .prop_map(|(g, v, b, a, l, s)| request::Kind::GroupWrite(
                        relay::GroupWrite {
                            group_id: g,
                            expected_version: v,
                            blob: b,
                            auth_key: a,
                            link_key: l,
                            signature: s,
                        }
                    )),
                (bytes(20), bytes(70)).prop_map(|(g, s)| request::Kind::GroupRead(
                    relay::GroupRead {
                        group_id: g,
                        signature: s
                    }
                )),
                (bytes(20), bytes(200), bytes(70)).prop_map(|(g, r, s)| {
                    request::Kind::GroupJoinRequest(relay::GroupJoinRequest {
                        group_id: g,
                        request: r,
                        signature: s,
                    })
                }),
                (bytes(20), vec(any::<u64>(), 0..8), bytes(70)).prop_map(|(g, i, s)| {
                    request::Kind::GroupDeleteRequests(relay::GroupDeleteRequests {
                        group_id: g,
                        ids: i,
                        signature: s,
                    })
                }),
                (bytes(20), any::<u32>()).prop_map(|(a, d)| request::Kind::FetchBundle(
                    relay::FetchBundle {
                        account_id: a,
                        device_id: d
                    }
                )),
                (bytes(20), any::<u32>(), bytes(70)).prop_map(|(a, d, s)| {
                    request::Kind::Authenticate(relay::Authenticate {
                        account_id: a,
                        device_id: d,
                        auth_signature: s,
                    })
                }),
                vec(any::<u64>(), 0..8).prop_map(|seqs| request::Kind::Ack(relay::Ack { seqs })),
                any::<u32>().prop_map(|limit| request::Kind::Fetch(relay::Fetch { limit })),
                (bytes(40), bytes(40)).prop_map(|(t, k)| request::Kind::Register(
                    relay::Register {
                        invite_token: t,
                        identity_key: k,
                        ..Default::default()
                    }
                )),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]

            /// Structured garbage, on a fresh connection and on an
            /// authenticated one.
            #[test]
            fn arbitrary_requests_never_panic(kinds in vec(kind(), 1..6), version in 0u32..3) {
                let relay = relay();
                let mut anonymous = ConnState::new([1; 32]);
                let mut member = registered(&relay, 2);
                for k in kinds {
                    for conn in [&mut anonymous, &mut member.conn] {
                        let out = relay.handle(
                            conn,
                            Request { version, kind: Some(k.clone()) },
                            NOW,
                            &mut rand::rng(),
                        );
                        if out.error_code().is_some() {
                            prop_assert!(!out.durable);
                            prop_assert!(out.push.is_empty());
                        }
                    }
                }
            }

            /// Raw bytes through the protobuf decoder and, when they decode,
            /// through the handler.
            #[test]
            fn arbitrary_bytes_never_panic(raw in bytes(512)) {
                if let Ok(req) = <Request as prost::Message>::decode(raw.as_slice()) {
                    let relay = relay();
                    let mut conn = ConnState::new([2; 32]);
                    let _ = relay.handle(&mut conn, req, NOW, &mut rand::rng());
                }
            }
        }
    }
}
