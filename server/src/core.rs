//! Request handling without sockets: one [`Request`] in, one [`Outcome`] out.
//!
//! [`Relay::handle`] is what the QUIC shell calls for each request stream, and
//! what the unit tests call directly. Time and randomness are arguments. The
//! per-connection facts that matter to the protocol (TLS exporter, outstanding
//! challenge, who is authenticated) live in [`ConnState`], owned by the shell.
//!
//! The core never blocks on durability itself: an [`Outcome`] with
//! `durable = true` tells the shell to flush the store before it writes the
//! response, and `push` names an envelope to hand to the recipient's live
//! connections after that.

use libsignal_protocol::{
    DeviceId, IdentityKey, PrivateKey, PublicKey, SenderCertificate, ServerCertificate, Timestamp,
};
use rand::{CryptoRng, Rng};
use sha2::{Digest, Sha256};
use sotto_wire::auth::{NONCE_LEN, Purpose, transcript};
use sotto_wire::relay::{
    self, Envelope, ErrorCode, OneTimePreKey, Request, Response, SignedPreKey, request, response,
};
use uuid::Uuid;

use crate::config::Config;
use crate::store::{
    AccountRecord, DeviceKey, Enqueued, Quota, Removed, SledStore, Store, StoreError,
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
}

impl ConnState {
    /// A fresh connection whose TLS exporter (label `EXPORTER_LABEL`) is `exporter`.
    pub fn new(exporter: [u8; 32]) -> Self {
        Self {
            exporter,
            nonce: None,
            auth: None,
        }
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
    /// After the flush, push this envelope to the device's live connections.
    pub push: Option<(DeviceKey, Envelope)>,
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
    Response {
        version: sotto_wire::PROTOCOL_VERSION,
        kind: Some(response::Kind::Error(relay::Error {
            code: code as i32,
            message: message.to_string(),
        })),
    }
}

/// Why a request failed: a peer-visible code or an internal store failure.
enum Fail {
    Peer(ErrorCode, &'static str),
    Store(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

type Handled = Result<(response::Kind, bool, Option<(DeviceKey, Envelope)>), Fail>;

fn reply(kind: response::Kind) -> Handled {
    Ok((kind, false, None))
}

fn durable(kind: response::Kind) -> Handled {
    Ok((kind, true, None))
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
}

/// The relay's protocol logic over a [`Store`].
pub struct Relay<S: Store = SledStore> {
    store: S,
    config: Config,
    signer: Signer,
}

impl<S: Store> Relay<S> {
    /// A relay over `store`, enforcing the limits in `config`.
    pub fn new(store: S, config: Config, signer: Signer) -> Self {
        Self {
            store,
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

    /// Deletes envelopes older than the configured TTL. Returns how many.
    pub fn sweep(&self, now_ms: u64) -> Result<usize, StoreError> {
        let ttl = u64::try_from(self.config.envelope_ttl.as_millis()).unwrap_or(u64::MAX);
        self.store.sweep_expired(now_ms.saturating_sub(ttl))
    }

    /// Account and mailbox counters.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        Ok(Stats {
            accounts: self.store.distinct_accounts()?,
            devices: self.store.account_count(),
            queued_envelopes: self.store.queued_count(),
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
                push: None,
            },
            Err(Fail::Store(e)) => {
                // Database details stay in our log; the peer learns only that we failed.
                tracing::error!(error = %e, "store failure while handling a request");
                Outcome {
                    response: error_response(ErrorCode::Internal, "relay storage error; try later"),
                    durable: false,
                    push: None,
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
                    K::FetchBundle(f) => self.fetch_bundle(f),
                    K::FetchIdentity(f) => {
                        let rec = self.known(&f.account_id, 1)?;
                        reply(response::Kind::Identity(relay::Identity {
                            identity_key: rec.1.identity_key,
                            registration_id: rec.1.registration_id,
                        }))
                    }
                    K::SenderCertificate(_) => self.sender_certificate(me, now_ms, rng),
                    K::Send(s) => self.send(s, now_ms),
                    K::Fetch(f) => {
                        let limit = match f.limit as usize {
                            0 => FETCH_DEFAULT,
                            n => n.min(FETCH_MAX),
                        };
                        let (envelopes, more) = self.store.envelopes(me, limit)?;
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
                    K::Challenge(_) | K::Register(_) | K::Authenticate(_) => {
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
                return Err(Fail::Peer(ErrorCode::Unauthenticated, "unknown account"));
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

    fn fetch_bundle(&self, f: relay::FetchBundle) -> Handled {
        let (key, rec) = self.known(&f.account_id, f.device_id)?;
        let pre_key = self.store.take_pre_key(key)?;
        // After the one-time Kyber keys run out, the last-resort key keeps
        // sessions possible (with weaker forward secrecy for that first message).
        let kyber_pre_key = match self.store.take_kyber_pre_key(key)? {
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
                Some((
                    to,
                    Envelope {
                        seq,
                        received_at_ms: now_ms,
                        envelope: s.envelope,
                    },
                )),
            )),
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
        if one_time.len() > MAX_ONE_TIME_KEYS as usize || kyber.len() > MAX_ONE_TIME_KEYS as usize {
            return Err(Fail::Peer(
                ErrorCode::TooLarge,
                "too many prekeys in one upload",
            ));
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

    use libsignal_protocol::{IdentityKeyPair, KeyPair};

    use super::*;
    use crate::store::PreKeyDirectory;

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
        let relay = Arc::new(relay());
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
        let (to, env) = out.push.expect("push to bob");
        assert_eq!(to.account.as_bytes().as_slice(), bob.account.as_slice());
        assert_eq!(env.envelope, b"sealed");
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
}
