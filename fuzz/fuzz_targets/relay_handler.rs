//! Fuzzes the relay's request handler, `sotto_relay::core::Relay::handle`,
//! with sequences of arbitrary requests on one connection, against a real
//! (temporary) sled store.
//!
//! The relay is built once per process (building one opens a database and
//! registers two accounts). Each input then runs on a fresh connection:
//!
//! ```text
//! input := seed:u64(BE) exporter:u8 op*
//! op    := ctl:u8 sel:u8 len:u16(BE) Request-protobuf[len]
//! ctl   := bit 0  force `version` to the current protocol version
//!          bit 1  sign: fill in valid signatures (auth transcript, prekeys,
//!                 group transcripts) with keys the harness holds, so the
//!                 fuzzer gets past signature checks
//!          bit 2  target: point account and group ids at existing ones
//!                 (`sel` picks which account), and build a well-formed
//!                 multi-recipient message for `SendMulti`
//!          bit 3  run the expiry sweep after the request
//!          bits 4-6  advance the clock (0, 1 s, 1 min, 1 h, 1 day, 31 days, ...)
//!          bit 7  open a new connection (another exporter) first
//! ```
//!
//! The RNG passed to `handle` is seeded from the input. At the end of each
//! input the harness undoes what the input changed (accounts it registered,
//! mailboxes, prekeys and records of the two fixture accounts, the fixture
//! group and its join requests), so runs stay nearly independent. Groups
//! created with random ids stay, up to the (small) `max_groups`.
//!
//! Properties checked on every response: no panic; a refused request is never
//! durable and pushes nothing; only `Send`/`SendMulti` push; a connection that
//! has not authenticated gets nothing but the handshake and group requests.
//! With `SOTTO_FUZZ_STRICT=1` also: every response fits in one frame under
//! the configured cap (which clients use for responses too), and no `INTERNAL`
//! error (the store is healthy, so one means a request the relay accepted but
//! could not store). Both are known to fail today; see fuzz/README.md.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use libsignal_protocol::{IdentityKeyPair, KeyPair, PrivateKey, ServerCertificate};
use prost::Message;
use rand::rngs::StdRng;
use rand::{CryptoRng, Rng, SeedableRng};
use sotto_relay::config::Config;
use sotto_relay::core::{ConnState, Outcome, Relay, Signer};
use sotto_relay::store::{
    AccountRecord, AccountStore, DeviceKey, GroupRecord, GroupStore, MailboxStore, PreKeyDirectory,
    SledStore, Store,
};
use sotto_wire::PROTOCOL_VERSION;
use sotto_wire::auth::{GroupPurpose, Purpose, group_body, group_transcript, transcript};
use sotto_wire::relay::{self, ErrorCode, OneTimePreKey, Request, SignedPreKey, request, response};
use uuid::Uuid;

/// The clock every input starts from.
const NOW: u64 = 1_700_000_000_000;

/// Clock steps selected by `ctl` bits 4-6.
const STEPS_MS: [u64; 8] = [
    0,
    1_000,
    60_000,
    3_600_000,
    86_400_000,
    31 * 86_400_000,
    365 * 86_400_000,
    u64::MAX / 4,
];

/// Most requests per input (inputs are short anyway; this bounds slow ones).
const MAX_OPS: usize = 64;

/// Most prekey signatures the harness makes for one request (signing is the slow part).
const MAX_RESIGNED: usize = 8;

/// One-time prekeys each fixture account is given back after every input.
const FIXTURE_PRE_KEYS: u32 = 2;

const GROUP_ID: [u8; 16] = [0x42; 16];

struct Person {
    identity: IdentityKeyPair,
    key: DeviceKey,
    record: AccountRecord,
}

struct Fixture {
    relay: Relay,
    /// A token with practically unlimited uses, for `Register`.
    invite: Vec<u8>,
    alice: Person,
    bob: Person,
    /// The identity every `Register` made by the harness uses (never pre-registered).
    carol: IdentityKeyPair,
    group_auth: KeyPair,
    group_link: KeyPair,
    group: GroupRecord,
    ec_pre_keys: Vec<OneTimePreKey>,
    kyber_pre_keys: Vec<SignedPreKey>,
    strict: bool,
}

fn sign<R: Rng + CryptoRng>(key: &PrivateKey, message: &[u8], rng: &mut R) -> Vec<u8> {
    key.calculate_signature(message, rng)
        .expect("signing with a valid key")
        .to_vec()
}

fn signed_pre_key<R: Rng + CryptoRng>(
    identity: &IdentityKeyPair,
    id: u32,
    public_key: Vec<u8>,
    rng: &mut R,
) -> SignedPreKey {
    SignedPreKey {
        id,
        signature: sign(identity.private_key(), &public_key, rng),
        public_key,
    }
}

/// A small configuration, so quotas and size caps are reached by short inputs.
/// The proportions follow the defaults: an envelope, a group state and a
/// group's pending join requests each fit well inside one frame, and a full
/// mailbox is several frames.
fn config() -> Config {
    Config {
        max_frame_bytes: 2048,
        max_envelope_bytes: 256,
        mailbox_max_envelopes: 16,
        mailbox_max_bytes: 3 * 1024,
        envelope_ttl: Duration::from_secs(30 * 86_400),
        max_group_state_bytes: 512,
        max_groups: 32,
        max_join_request_bytes: 128,
        max_join_requests_per_group: 4,
        ..Config::default()
    }
}

fn req(kind: request::Kind) -> Request {
    Request {
        version: PROTOCOL_VERSION,
        kind: Some(kind),
    }
}

fn register_person<R: Rng + CryptoRng>(
    relay: &Relay,
    invite: &[u8],
    registration_id: u32,
    rng: &mut R,
) -> Person {
    let identity = IdentityKeyPair::generate(rng);
    let exporter = [registration_id as u8; 32];
    let mut conn = ConnState::new(exporter);
    let out = relay.handle(
        &mut conn,
        req(request::Kind::Challenge(relay::ChallengeRequest {})),
        NOW,
        rng,
    );
    let Some(response::Kind::Challenge(c)) = out.response.kind else {
        panic!("fixture: no challenge: {out:?}");
    };
    let signed = KeyPair::generate(rng).public_key.serialize().to_vec();
    let register = relay::Register {
        invite_token: invite.to_vec(),
        identity_key: identity.identity_key().serialize().to_vec(),
        registration_id,
        auth_signature: sign(
            identity.private_key(),
            &transcript(Purpose::Register, &exporter, &c.nonce),
            rng,
        ),
        signed_pre_key: Some(signed_pre_key(&identity, 1, signed, rng)),
        kyber_last_resort: Some(signed_pre_key(&identity, 999, vec![0xAA; 64], rng)),
        pre_keys: Vec::new(),
        kyber_pre_keys: Vec::new(),
    };
    let out = relay.handle(&mut conn, req(request::Kind::Register(register)), NOW, rng);
    let Some(response::Kind::Registered(r)) = out.response.kind else {
        panic!("fixture: registration failed: {out:?}");
    };
    let key = DeviceKey {
        account: Uuid::from_slice(&r.account_id).expect("a 16-byte account id"),
        device: r.device_id,
    };
    let record = relay
        .store()
        .account(key)
        .expect("store")
        .expect("registered");
    Person {
        identity,
        key,
        record,
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(0x5077_0F22);
        let root = KeyPair::generate(&mut rng);
        let server = KeyPair::generate(&mut rng);
        let cert = ServerCertificate::new(1, server.public_key, &root.private_key, &mut rng)
            .expect("server certificate");
        let relay = Relay::new(
            SledStore::temporary().expect("temporary database"),
            config(),
            Signer::new(cert, server.private_key),
        );
        let invite = relay
            .create_invite(u32::MAX, u64::MAX, &mut rng)
            .expect("invite");
        let alice = register_person(&relay, &invite, 1111, &mut rng);
        let bob = register_person(&relay, &invite, 2222, &mut rng);
        let carol = IdentityKeyPair::generate(&mut rng);

        // The fixture group, with a join link.
        let group_auth = KeyPair::generate(&mut rng);
        let group_link = KeyPair::generate(&mut rng);
        let exporter = [9; 32];
        let blob = b"fixture group state".to_vec();
        let auth_key = group_auth.public_key.serialize().to_vec();
        let link_key = group_link.public_key.serialize().to_vec();
        let body = group_body(&[&0u64.to_be_bytes(), &blob, &auth_key, &link_key]);
        let signature = sign(
            &group_auth.private_key,
            &group_transcript(GroupPurpose::Write, &exporter, &GROUP_ID, &body),
            &mut rng,
        );
        let out = relay.handle(
            &mut ConnState::new(exporter),
            req(request::Kind::GroupWrite(relay::GroupWrite {
                group_id: GROUP_ID.to_vec(),
                expected_version: 0,
                blob,
                auth_key,
                link_key,
                signature,
            })),
            NOW,
            &mut rng,
        );
        assert_eq!(out.error_code(), None, "fixture group: {out:?}");
        let group = relay
            .store()
            .group(&GROUP_ID)
            .expect("store")
            .expect("group");

        let ec_pre_keys = (1..=FIXTURE_PRE_KEYS)
            .map(|id| OneTimePreKey {
                id,
                public_key: KeyPair::generate(&mut rng).public_key.serialize().to_vec(),
            })
            .collect();
        let kyber_pre_keys = (1..=FIXTURE_PRE_KEYS)
            .map(|id| signed_pre_key(&alice.identity, id, vec![id as u8; 64], &mut rng))
            .collect();
        let fx = Fixture {
            relay,
            invite,
            alice,
            bob,
            carol,
            group_auth,
            group_link,
            group,
            ec_pre_keys,
            kyber_pre_keys,
            strict: std::env::var_os("SOTTO_FUZZ_STRICT").is_some_and(|v| v == "1"),
        };
        reset(&fx, &[]);
        fx
    })
}

/// Puts the fixture back as it was after setup (best effort; store errors panic,
/// since the harness's own store use must not fail).
fn reset(fx: &Fixture, registered: &[Uuid]) {
    let store = fx.relay.store();
    for account in registered {
        store.remove_account(*account).expect("remove account");
    }
    // Only what changed is rewritten: every sled write grows its log and cache.
    for p in [&fx.alice, &fx.bob] {
        if store.account(p.key).expect("account").as_ref() != Some(&p.record) {
            store.put_account(p.key, &p.record).expect("put account");
        }
        let full = (FIXTURE_PRE_KEYS, FIXTURE_PRE_KEYS);
        if store.pre_key_counts(p.key).expect("prekey counts") != full {
            store.clear_pre_keys(p.key).expect("clear prekeys");
            store
                .add_pre_keys(p.key, &fx.ec_pre_keys)
                .expect("add prekeys");
            store
                .add_kyber_pre_keys(p.key, &fx.kyber_pre_keys)
                .expect("add kyber prekeys");
        }
        loop {
            let (mail, _) = store.envelopes(p.key, 1000, 0).expect("mailbox");
            if mail.is_empty() {
                break;
            }
            let seqs: Vec<u64> = mail.iter().map(|e| e.seq).collect();
            store.ack(p.key, &seqs).expect("ack");
        }
    }
    let requests = store
        .join_requests(&GROUP_ID, usize::MAX)
        .expect("join requests");
    if !requests.is_empty() {
        let ids: Vec<u64> = requests.iter().map(|r| r.id).collect();
        store
            .delete_join_requests(&GROUP_ID, &ids)
            .expect("delete join requests");
    }
    let current = store
        .group(&GROUP_ID)
        .expect("group")
        .expect("fixture group");
    if current != fx.group {
        assert!(
            store
                .replace_group(&GROUP_ID, &current, &fx.group)
                .expect("replace group"),
            "fixture group changed under the harness"
        );
    }
}

/// Reads the input front to back; past the end everything is zero.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).first().copied()
    }
    fn u16(&mut self) -> u16 {
        let b = self.take(2);
        u16::from_be_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ])
    }
    fn u64(&mut self) -> u64 {
        let mut out = [0u8; 8];
        let b = self.take(8);
        out[..b.len()].copy_from_slice(b);
        u64::from_be_bytes(out)
    }
}

/// Which identity signs for an account the harness knows.
#[derive(Clone, Copy)]
enum Who {
    Alice,
    Bob,
    Carol,
}

/// One connection as the harness sees it.
struct Session {
    conn: ConnState,
    exporter: [u8; 32],
    /// The last nonce the relay handed out on this connection.
    nonce: Vec<u8>,
    /// Whose account this connection authenticated as (as far as the harness can tell).
    me: Option<Who>,
    /// The `Who` an `Authenticate` in flight is for.
    authenticating: Option<Who>,
}

impl Session {
    fn new(exporter: [u8; 32]) -> Self {
        Self {
            conn: ConnState::new(exporter),
            exporter,
            nonce: Vec::new(),
            me: None,
            authenticating: None,
        }
    }
}

impl Fixture {
    fn identity(&self, who: Who) -> &IdentityKeyPair {
        match who {
            Who::Alice => &self.alice.identity,
            Who::Bob => &self.bob.identity,
            Who::Carol => &self.carol,
        }
    }

    /// `sel & 3`: alice, bob, the last account this input registered, or unknown.
    fn account(&self, sel: u8, registered: &[Uuid]) -> (Vec<u8>, Option<Who>) {
        match sel & 3 {
            0 => (self.alice.key.account.as_bytes().to_vec(), Some(Who::Alice)),
            1 => (self.bob.key.account.as_bytes().to_vec(), Some(Who::Bob)),
            2 => match registered.last() {
                Some(a) => (a.as_bytes().to_vec(), Some(Who::Carol)),
                None => (vec![0x77; 16], None),
            },
            _ => (vec![0x77; 16], None),
        }
    }

    /// The registration id the store holds for `account` device 1, if any.
    fn registration_id(&self, account: &[u8]) -> Option<u32> {
        let key = DeviceKey {
            account: Uuid::from_slice(account).ok()?,
            device: 1,
        };
        Some(self.relay.store().account(key).ok()??.registration_id)
    }
}

/// Replaces the start of `key` with `with` (keeping any trailing bytes, which
/// libsignal's key parser accepts), or the whole of it when it is shorter.
fn overwrite_prefix(key: &mut Vec<u8>, with: &[u8]) {
    if key.len() >= with.len() {
        key[..with.len()].copy_from_slice(with);
    } else {
        *key = with.to_vec();
    }
}

/// Signs the prekeys of an upload with `identity` (the first few).
fn resign<'a, R: Rng + CryptoRng>(
    identity: &IdentityKeyPair,
    keys: impl Iterator<Item = &'a mut SignedPreKey>,
    rng: &mut R,
) {
    for k in keys.take(MAX_RESIGNED) {
        k.signature = sign(identity.private_key(), &k.public_key, rng);
    }
}

/// A well-formed sealed-sender v2 SentMessage (the layout libsignal parses),
/// its recipients and devices chosen by the fuzz bytes in `shape`.
fn multi_recipient(fx: &Fixture, shape: &[u8], registered: &[Uuid]) -> Vec<u8> {
    let mut input = Input(shape);
    let count = input.byte().unwrap_or(0) % 4 + 1;
    let mut out = vec![0x23, count];
    for _ in 0..count {
        let pick = input.byte().unwrap_or(0);
        let (account, _) = fx.account(pick, registered);
        let reg = fx.registration_id(&account).unwrap_or(7);
        let mut service_id = [0u8; 17];
        service_id[0] = u8::from(pick & 0x80 != 0); // 0: ACI, 1: PNI
        service_id[1..].copy_from_slice(&account);
        out.extend_from_slice(&service_id);
        let devices = (pick >> 2) & 3;
        for d in 0..devices {
            let device = if pick & 0x10 != 0 { d + 1 } else { 1 };
            let reg = (if pick & 0x20 != 0 { reg ^ 1 } else { reg }) as u16 & 0x7fff;
            let more = if d + 1 < devices { 0x8000 } else { 0 };
            out.push(device);
            out.extend_from_slice(&(reg | more).to_be_bytes());
        }
        if devices == 0 {
            out.push(0);
        } else {
            out.extend_from_slice(&[7; 48]);
        }
    }
    out.extend_from_slice(&[9; 32]);
    out.extend_from_slice(input.0);
    out
}

/// What [`fix_up`] does to one request (from the op's `ctl` and `sel` bytes).
#[derive(Clone, Copy)]
struct Fix {
    sel: u8,
    signing: bool,
    target: bool,
}

/// Makes `req` get past the checks the fuzzer cannot: signatures by keys the
/// harness holds (`signing`), and ids of things that exist (`target`).
fn fix_up<R: Rng + CryptoRng>(
    fx: &Fixture,
    s: &mut Session,
    req: &mut Request,
    how: Fix,
    registered: &[Uuid],
    rng: &mut R,
) {
    use request::Kind as K;
    let Fix {
        sel,
        signing,
        target,
    } = how;
    s.authenticating = None;
    let Some(kind) = req.kind.as_mut() else {
        return;
    };
    let me = fx.identity(s.me.unwrap_or(Who::Alice));
    match kind {
        K::Register(r) => {
            if target {
                r.invite_token = fx.invite.clone();
            }
            if signing {
                let carol = &fx.carol;
                overwrite_prefix(&mut r.identity_key, &carol.identity_key().serialize());
                let t = transcript(Purpose::Register, &s.exporter, &s.nonce);
                r.auth_signature = sign(carol.private_key(), &t, rng);
                let keys = r.signed_pre_key.iter_mut();
                let keys = keys.chain(r.kyber_last_resort.iter_mut());
                resign(carol, keys.chain(r.kyber_pre_keys.iter_mut()), rng);
            }
        }
        K::Authenticate(a) => {
            let mut who = None;
            if target {
                let (account, w) = fx.account(sel, registered);
                a.account_id = account;
                who = w;
            }
            if signing {
                let who = who.unwrap_or(Who::Alice);
                let t = transcript(Purpose::Authenticate, &s.exporter, &s.nonce);
                a.auth_signature = sign(fx.identity(who).private_key(), &t, rng);
                s.authenticating = Some(who);
            }
        }
        K::ResetIdentity(r) => {
            if signing {
                // The new key is the current one, so the fixture keeps working.
                overwrite_prefix(&mut r.identity_key, &me.identity_key().serialize());
                let t = transcript(Purpose::ResetIdentity, &s.exporter, &s.nonce);
                r.new_key_signature = sign(me.private_key(), &t, rng);
                let keys = r.signed_pre_key.iter_mut();
                let keys = keys.chain(r.kyber_last_resort.iter_mut());
                resign(me, keys.chain(r.kyber_pre_keys.iter_mut()), rng);
            }
        }
        K::UploadPreKeys(u) => {
            if signing {
                let keys = u.signed_pre_key.iter_mut();
                let keys = keys.chain(u.kyber_last_resort.iter_mut());
                resign(me, keys.chain(u.kyber_pre_keys.iter_mut()), rng);
            }
        }
        K::Send(m) => {
            if target {
                m.recipient = fx.account(sel, registered).0;
                if sel & 0x10 != 0 {
                    m.registration_id = fx.registration_id(&m.recipient).unwrap_or(0);
                }
            }
        }
        K::SendMulti(m) => {
            if target {
                m.envelope = multi_recipient(fx, &m.envelope, registered);
            }
        }
        K::FetchBundle(f) => {
            if target {
                f.account_id = fx.account(sel, registered).0;
            }
        }
        K::FetchIdentity(f) => {
            if target {
                f.account_id = fx.account(sel, registered).0;
            }
        }
        K::GroupWrite(w) => {
            if target {
                w.group_id = GROUP_ID.to_vec();
                if w.expected_version != 0 {
                    if let Ok(Some(g)) = fx.relay.store().group(&GROUP_ID) {
                        w.expected_version = g.version;
                    }
                }
            }
            if signing {
                overwrite_prefix(&mut w.auth_key, &fx.group_auth.public_key.serialize());
                if !w.link_key.is_empty() {
                    overwrite_prefix(&mut w.link_key, &fx.group_link.public_key.serialize());
                }
                let body = group_body(&[
                    &w.expected_version.to_be_bytes(),
                    &w.blob,
                    &w.auth_key,
                    &w.link_key,
                ]);
                let t = group_transcript(GroupPurpose::Write, &s.exporter, &w.group_id, &body);
                w.signature = sign(&fx.group_auth.private_key, &t, rng);
            }
        }
        K::GroupRead(r) => {
            if target {
                r.group_id = GROUP_ID.to_vec();
            }
            if signing {
                let t = group_transcript(
                    GroupPurpose::Read,
                    &s.exporter,
                    &r.group_id,
                    &group_body(&[]),
                );
                r.signature = sign(&fx.group_auth.private_key, &t, rng);
            }
        }
        K::GroupJoinRequest(j) => {
            if target {
                j.group_id = GROUP_ID.to_vec();
            }
            if signing {
                let body = group_body(&[&j.request]);
                let t = group_transcript(GroupPurpose::Join, &s.exporter, &j.group_id, &body);
                j.signature = sign(&fx.group_link.private_key, &t, rng);
            }
        }
        K::GroupFetchRequests(f) => {
            if target {
                f.group_id = GROUP_ID.to_vec();
            }
            if signing {
                let t = group_transcript(
                    GroupPurpose::FetchRequests,
                    &s.exporter,
                    &f.group_id,
                    &group_body(&[]),
                );
                f.signature = sign(&fx.group_auth.private_key, &t, rng);
            }
        }
        K::GroupDeleteRequests(d) => {
            if target {
                d.group_id = GROUP_ID.to_vec();
            }
            if signing {
                let ids: Vec<u8> = d.ids.iter().flat_map(|id| id.to_be_bytes()).collect();
                let t = group_transcript(
                    GroupPurpose::DeleteRequests,
                    &s.exporter,
                    &d.group_id,
                    &group_body(&[&ids]),
                );
                d.signature = sign(&fx.group_auth.private_key, &t, rng);
            }
        }
        K::Challenge(_) | K::PreKeyCount(_) | K::SenderCertificate(_) | K::Fetch(_) | K::Ack(_) => {
        }
    }
}

/// Whether `kind` may succeed on a connection that has not authenticated.
fn allowed_anonymously(kind: &Option<request::Kind>) -> bool {
    use request::Kind as K;
    matches!(
        kind,
        Some(
            K::Challenge(_)
                | K::Register(_)
                | K::Authenticate(_)
                | K::GroupWrite(_)
                | K::GroupRead(_)
                | K::GroupJoinRequest(_)
                | K::GroupFetchRequests(_)
                | K::GroupDeleteRequests(_)
        )
    )
}

fn check(fx: &Fixture, out: &Outcome, was_authenticated: bool, anonymous_ok: bool, version: u32) {
    assert_eq!(out.response.version, PROTOCOL_VERSION);
    let Some(kind) = &out.response.kind else {
        panic!("a response without a kind: {out:?}");
    };
    match out.error_code() {
        Some(code) => {
            assert!(!out.durable, "a refused request is durable: {out:?}");
            assert!(out.push.is_empty(), "a refused request pushes: {out:?}");
            if fx.strict {
                assert_ne!(code, ErrorCode::Internal, "INTERNAL error: {out:?}");
            }
        }
        None => {
            assert_eq!(version, PROTOCOL_VERSION, "accepted a bad version: {out:?}");
            assert!(
                was_authenticated || anonymous_ok,
                "an unauthenticated connection was served: {out:?}"
            );
            if !out.push.is_empty() {
                assert!(out.durable, "a push before the write is durable: {out:?}");
                assert!(
                    matches!(kind, response::Kind::Sent(_) | response::Kind::SentMulti(_)),
                    "only sends push: {out:?}"
                );
            }
        }
    }
    // Every response can be framed and read back.
    let frame = sotto_wire::frame::encode(&out.response);
    if fx.strict {
        let max = fx.relay.config().max_frame_bytes;
        assert!(
            frame.len() - sotto_wire::frame::HEADER_LEN <= max,
            "a {}-byte response is over the {max}-byte frame cap: {:?}",
            frame.len() - sotto_wire::frame::HEADER_LEN,
            out.error_code()
        );
    }
    let (back, _): (relay::Response, usize) =
        sotto_wire::frame::decode(&frame, usize::MAX).expect("response decodes");
    assert_eq!(back, out.response);
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let mut input = Input(data);
    let mut rng = StdRng::seed_from_u64(input.u64());
    let mut exporter = [input.byte().unwrap_or(0); 32];
    let mut session = Session::new(exporter);
    let mut registered: Vec<Uuid> = Vec::new();
    let mut now = NOW;
    for _ in 0..MAX_OPS {
        let Some(ctl) = input.byte() else {
            break;
        };
        let sel = input.byte().unwrap_or(0);
        let len = usize::from(input.u16());
        let chunk = input.take(len);
        // The shell refuses frames over the cap before decoding them.
        if chunk.len() > fx.relay.config().max_frame_bytes {
            continue;
        }
        let Ok(mut req) = Request::decode(chunk) else {
            continue;
        };
        if ctl & 0x80 != 0 {
            exporter[0] = exporter[0].wrapping_add(1);
            session = Session::new(exporter);
        }
        now = now.saturating_add(STEPS_MS[usize::from((ctl >> 4) & 7)]);
        if ctl & 1 != 0 {
            req.version = PROTOCOL_VERSION;
        }
        let how = Fix {
            sel,
            signing: ctl & 2 != 0,
            target: ctl & 4 != 0,
        };
        fix_up(fx, &mut session, &mut req, how, &registered, &mut rng);
        let was_authenticated = session.conn.authenticated().is_some();
        let anonymous_ok = allowed_anonymously(&req.kind);
        let version = req.version;
        let out = fx.relay.handle(&mut session.conn, req, now, &mut rng);
        check(fx, &out, was_authenticated, anonymous_ok, version);
        match &out.response.kind {
            Some(response::Kind::Challenge(c)) => session.nonce = c.nonce.clone(),
            Some(response::Kind::Registered(r)) => {
                registered.push(Uuid::from_slice(&r.account_id).expect("account id"));
                session.me = Some(Who::Carol);
            }
            Some(response::Kind::Authenticated(_)) => session.me = session.authenticating,
            _ => {}
        }
        if session.conn.authenticated().is_none() {
            session.me = None;
        }
        if ctl & 8 != 0 {
            fx.relay.sweep(now).expect("sweep");
        }
    }
    reset(fx, &registered);
});
