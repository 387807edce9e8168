//! Cold sync: a recipient that was offline while 10,000 messages arrived
//! opens its profile and drains its mailbox.
//!
//! The recipient is the **real client engine** (`sotto_client::engine::Engine`):
//! a profile made with `Engine::init` in a temporary directory, its real
//! encrypted sled store and real libsignal sessions. It registers, closes
//! (so it is offline), and a lightweight sender ([`common::register`]) builds
//! a session with it from the bundle the relay serves, takes a sender
//! certificate, and sends 10,000 sealed-sender `Content` texts, several in
//! flight. The recipient then reopens its profile and `Engine::sync` is
//! timed until it returns with every message decrypted, stored, flushed and
//! acknowledged; the relay's admin socket confirms the mailbox went from
//! 10,000 envelopes to none.
//!
//! Ceiling, measured in the same run: libsignal's `sealed_sender_decrypt`
//! alone over 10,000 messages of the same kind (a fresh session whose first
//! message is a prekey message, to an in-memory store built locally, no
//! relay, no disk), encrypted before the clock starts.
//!
//! [`common::register`]: crate::common::register

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use libsignal_protocol::{
    DeviceId, InMemSignalProtocolStore, PreKeyBundle, ProtocolAddress, PublicKey,
    SenderCertificate, Timestamp, process_prekey_bundle, sealed_sender_decrypt,
    sealed_sender_encrypt,
};
use prost::Message as _;
use rand::Rng;
use sotto_client::engine::{Engine, Notice, ShownMessage, now_ms};
use sotto_client::transport::{Connection, TransportError};
use sotto_wire::content::{self, Content};
use sotto_wire::relay::{self, request::Kind as Req, response::Kind as Resp};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::common::{
    Account, Bench, Figure, local_keys, ms, register, sender_certificate, session_from_relay,
};

/// Messages waiting in the mailbox when the recipient comes back (the
/// relay's default mailbox cap is exactly this many).
const MESSAGES: usize = 10_000;

/// `Send` requests the sender keeps in flight while filling the mailbox, so
/// the relay's group commit batches their fsyncs and setup stays quick.
const IN_FLIGHT: usize = 64;

/// The recipient profile's passphrase.
const PASSPHRASE: &str = "cold sync bench passphrase";

/// The display name inside every message.
const SENDER_NAME: &str = "bench sender";

/// Runs the scenario `runs` times, each on a fresh relay with a fresh
/// recipient profile, and reports the drain time and rate beside the
/// decrypt-only ceiling.
pub(crate) async fn run(runs: usize) -> anyhow::Result<Vec<Figure>> {
    let mut drain_ms = Vec::with_capacity(runs);
    let mut drain_rate = Vec::with_capacity(runs);
    let mut ceiling_ms = Vec::with_capacity(runs);
    let mut ceiling_rate = Vec::with_capacity(runs);
    for run in 1..=runs {
        let m = one_run().await?;
        eprintln!(
            "   run {run}: fill {:.0} ms, open {:.0} ms, drain {:.0} ms ({:.0} msg/s), \
             decrypt alone {:.0} ms ({:.0}/s)",
            ms(m.fill),
            ms(m.open),
            ms(m.drain),
            rate(m.drain),
            ms(m.ceiling),
            rate(m.ceiling),
        );
        drain_ms.push(ms(m.drain));
        drain_rate.push(rate(m.drain));
        ceiling_ms.push(ms(m.ceiling));
        ceiling_rate.push(rate(m.ceiling));
    }
    let note = "Engine::sync from a closed profile: connect and authenticate, then for each \
                FETCH_BATCH (100 envelopes): a Fetch round trip, decrypt each envelope \
                (libsignal sealed sender, session load/save and a message record in the \
                AEAD-sealed sled store), one staged commit and flush, an Ack round trip; batches \
                run one after another, and the sync ends with one scan of all stored messages \
                (expiry purge). On this 2-core machine client crypto (libsignal's curve25519 \
                work, as in the ceiling) and the store's per-batch flush dominate; the relay and \
                loopback are minor. Dev builds inflate the store's AEAD cost several-fold.";
    Ok(vec![
        Figure::new(
            "cold_sync",
            "drain 10,000 queued messages (real engine, encrypted store)",
            "ms",
            drain_ms,
            note,
        )
        .with_ceiling(
            "libsignal sealed_sender_decrypt alone, 10,000 msgs",
            ceiling_ms,
        ),
        Figure::new(
            "cold_sync",
            "messages/s stored and acknowledged by a cold sync",
            "msg/s",
            drain_rate,
            note,
        )
        .with_ceiling("libsignal sealed_sender_decrypt/s", ceiling_rate),
    ])
}

/// What one run measured.
struct Measured {
    /// Time to encrypt and durably enqueue the 10,000 messages (setup, not a figure).
    fill: Duration,
    /// `Engine::open` (Argon2id key derivation, sled open), not timed as part of the drain.
    open: Duration,
    /// `Engine::sync` until all messages are stored and acknowledged.
    drain: Duration,
    /// `sealed_sender_decrypt` alone over 10,000 messages.
    ceiling: Duration,
}

/// Messages per second for `MESSAGES` messages in `d`.
fn rate(d: Duration) -> f64 {
    MESSAGES as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// One run on a fresh relay: make the recipient, fill its mailbox while it
/// is offline, measure the ceiling, then time the recipient's sync and check
/// that it stored and acknowledged everything.
async fn one_run() -> anyhow::Result<Measured> {
    let bench = Bench::start(1)?;
    let home = tempfile::tempdir()?;

    // The recipient: a real profile that registers and then goes offline.
    let invite = bench.relay.invite(1);
    let mut engine = Engine::init(home.path(), PASSPHRASE, &invite, "cold recipient").await?;
    let recipient = engine.code().account_id();
    engine.close().await;
    // Dropping the engine closes its sled store, which `Engine::open` needs (one opener at a time).
    drop(engine);

    // The sender fills the recipient's mailbox. Its connection is shared
    // with the send tasks; its libsignal store stays on this task.
    let Account {
        conn, mut store, ..
    } = register(&bench).await?;
    let conn = Arc::new(conn);
    let certificate = sender_certificate(&conn).await?;
    let address = ProtocolAddress::new(recipient.to_string(), DeviceId::new(1)?);
    session_from_relay(&conn, &mut store, recipient, &address).await?;
    let start = Instant::now();
    fill_mailbox(
        &conn,
        &mut store,
        recipient,
        &address,
        &certificate,
        MESSAGES,
    )
    .await?;
    let fill = start.elapsed();
    let queued = queued_envelopes(&bench.relay.data_dir()).await?;
    anyhow::ensure!(
        queued == MESSAGES as u64,
        "the relay holds {queued} envelopes, expected {MESSAGES}"
    );

    // Ceiling: the same kind of messages, decrypted by libsignal alone.
    let trust_root = PublicKey::deserialize(&bench.link.trust_root)?;
    let ceiling = decrypt_ceiling(&mut store, &certificate, &trust_root).await?;

    // The measured part: the recipient comes back and syncs.
    let (mut engine, open) = {
        let start = Instant::now();
        let engine = Engine::open(home.path(), PASSPHRASE)?;
        (engine, start.elapsed())
    };
    let mut problems: Vec<String> = Vec::new();
    let start = Instant::now();
    let got = engine
        .sync(&mut |_: &ShownMessage| {}, &mut |n: &Notice| {
            // A prekey top-up is routine; anything else means a message went wrong.
            if !matches!(n, Notice::ToppedUp(_)) {
                problems.push(format!("{n:?}"));
            }
        })
        .await?;
    let drain = start.elapsed();
    if let Some(first) = problems.first() {
        anyhow::bail!("sync reported {} notices, first: {first}", problems.len());
    }
    anyhow::ensure!(
        got == MESSAGES,
        "sync stored {got} messages, expected {MESSAGES}"
    );
    let left = queued_envelopes(&bench.relay.data_dir()).await?;
    anyhow::ensure!(left == 0, "{left} envelopes still queued after the sync");
    let again = engine
        .sync(&mut |_: &ShownMessage| {}, &mut |_: &Notice| {})
        .await?;
    anyhow::ensure!(again == 0, "a second sync found {again} new messages");
    engine.close().await;
    if let Ok(conn) = Arc::try_unwrap(conn) {
        conn.close().await;
    }
    Ok(Measured {
        fill,
        open,
        drain,
        ceiling,
    })
}

/// Encrypts and sends `count` texts to `recipient`, keeping up to
/// [`IN_FLIGHT`] `Send` requests outstanding while the next ones are encrypted
/// (the app scenario fills a running app's history with it too).
///
/// Encryption stays on this task (libsignal futures are `!Send` and the
/// ratchet must advance in order); only the requests run as tasks. With
/// several in flight the relay may assign sequence numbers slightly out of
/// encryption order, which the recipient's ratchet absorbs with skipped keys.
pub(crate) async fn fill_mailbox(
    conn: &Arc<Connection>,
    store: &mut InMemSignalProtocolStore,
    recipient: Uuid,
    address: &ProtocolAddress,
    certificate: &SenderCertificate,
    count: usize,
) -> anyhow::Result<()> {
    let mut in_flight: JoinSet<Result<Resp, TransportError>> = JoinSet::new();
    for i in 0..count {
        let envelope = seal(store, address, certificate, i).await?;
        while in_flight.len() >= IN_FLIGHT {
            check_sent(in_flight.join_next().await)?;
        }
        let conn = conn.clone();
        let recipient = recipient.as_bytes().to_vec();
        in_flight.spawn(async move {
            conn.request(Req::Send(relay::Send {
                recipient,
                device_id: 1,
                registration_id: 0,
                envelope,
            }))
            .await
        });
    }
    while !in_flight.is_empty() {
        check_sent(in_flight.join_next().await)?;
    }
    Ok(())
}

/// Checks one finished `Send`.
fn check_sent(
    joined: Option<Result<Result<Resp, TransportError>, tokio::task::JoinError>>,
) -> anyhow::Result<()> {
    match joined {
        Some(Ok(Ok(Resp::Sent(_)))) => Ok(()),
        Some(Ok(Ok(_))) => anyhow::bail!("unexpected answer to Send"),
        Some(Ok(Err(e))) => Err(e).context("Send refused"),
        Some(Err(e)) => Err(e).context("a send task failed"),
        None => anyhow::bail!("no send in flight"),
    }
}

/// One sealed-sender envelope holding a `Content` text, built the way
/// `Engine::send_text` builds it.
async fn seal(
    store: &mut InMemSignalProtocolStore,
    address: &ProtocolAddress,
    certificate: &SenderCertificate,
    i: usize,
) -> anyhow::Result<Vec<u8>> {
    let id: [u8; 16] = rand::rng().random();
    let body = Content {
        version: sotto_wire::CONTENT_VERSION,
        id: id.to_vec(),
        sent_at_ms: now_ms(),
        sender_name: SENDER_NAME.to_string(),
        body: Some(content::content::Body::Text(content::Text {
            body: format!("message {i}: the branch meets on Thursday at 6, room 2B"),
        })),
    };
    Ok(sealed_sender_encrypt(
        address,
        certificate,
        &body.encode_to_vec(),
        &mut store.session_store,
        &mut store.identity_store,
        SystemTime::now(),
        &mut rand::rng(),
    )
    .await?)
}

/// Times `sealed_sender_decrypt` alone over `MESSAGES` messages to a fresh
/// in-memory recipient, the first a prekey message as in the engine's run.
async fn decrypt_ceiling(
    sender: &mut InMemSignalProtocolStore,
    certificate: &SenderCertificate,
    trust_root: &PublicKey,
) -> anyhow::Result<Duration> {
    let (mut local, bundle) = local_recipient().await?;
    let local_id = Uuid::new_v4();
    let device = DeviceId::new(1)?;
    let address = ProtocolAddress::new(local_id.to_string(), device);
    process_prekey_bundle(
        &address,
        &mut sender.session_store,
        &mut sender.identity_store,
        &bundle,
        SystemTime::now(),
        &mut rand::rng(),
    )
    .await?;
    let mut envelopes = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        envelopes.push(seal(sender, &address, certificate, i).await?);
    }
    let now = Timestamp::from_epoch_millis(now_ms());
    let start = Instant::now();
    let mut plaintext_bytes = 0;
    for envelope in &envelopes {
        let opened = sealed_sender_decrypt(
            envelope,
            trust_root,
            now,
            None,
            local_id.to_string(),
            device,
            &mut local.identity_store,
            &mut local.session_store,
            &mut local.pre_key_store,
            &local.signed_pre_key_store,
            &mut local.kyber_pre_key_store,
        )
        .await?;
        plaintext_bytes += opened.message.len();
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(plaintext_bytes > 0, "decrypted nothing");
    Ok(elapsed)
}

/// An in-memory recipient and the bundle a relay would serve for it.
async fn local_recipient() -> anyhow::Result<(InMemSignalProtocolStore, PreKeyBundle)> {
    let keys = local_keys().await?;
    let bundle = keys.bundle()?;
    Ok((keys.store, bundle))
}

/// Envelopes queued on the relay, from its admin socket's `stats`.
pub(crate) async fn queued_envelopes(data_dir: &Path) -> anyhow::Result<u64> {
    let socket = sotto_relay::DataDir::new(data_dir).admin_socket();
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .with_context(|| format!("cannot reach {}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    write.write_all(b"{\"cmd\":\"stats\"}\n").await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let answer: serde_json::Value = serde_json::from_str(&line)?;
    answer["queued_envelopes"]
        .as_u64()
        .with_context(|| format!("stats answer without queued_envelopes: {answer}"))
}
