//! End-to-end throughput: [`PAIRS`] sender/recipient pairs exchanging 1 KiB
//! messages with real libsignal sealed sender on both sides, through the
//! real relay.
//!
//! Each account is a lightweight one ([`common::register`]) with an in-memory
//! libsignal store. Every sender builds its session from the bundle the relay
//! serves ([`common::session_from_relay`]) and takes a sender certificate from
//! the relay; one message each way through the relay (before any measured
//! run) settles the session, so measured messages are ordinary Signal
//! messages, not prekey messages, as in a conversation that is under way.
//!
//! In a run every sender encrypts [`MESSAGES_PER_PAIR`] 1 KiB plaintexts with
//! `sealed_sender_encrypt` (in ratchet order, on its own task) and sends each
//! with a durable `Send`, [`WINDOW`] in flight; every recipient takes pushes
//! (or fetches after [`FETCH_AFTER`] without one), decrypts each envelope with
//! `sealed_sender_decrypt` against the relay's trust root, checks the sender
//! and the plaintext, and acknowledges each batch with `Ack`. The figure is
//! messages delivered, decrypted and acknowledged per second, from the first
//! encryption to the last `Ack` answered.
//!
//! Ceiling, measured in the same run on the same machine: libsignal alone on
//! the same sessions and sizes, no relay: one task per pair on the same tokio
//! runtime encrypts a message with `sealed_sender_encrypt` and decrypts it
//! with `sealed_sender_decrypt`, in a loop, the same number of messages.
//!
//! [`common::register`]: crate::common::register
//! [`common::session_from_relay`]: crate::common::session_from_relay

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail, ensure};
use futures_util::FutureExt as _;
use libsignal_protocol::{
    DeviceId, InMemSignalProtocolStore, ProtocolAddress, PublicKey, SealedSenderDecryptionResult,
    SenderCertificate, Timestamp, sealed_sender_decrypt, sealed_sender_encrypt,
};
use rand::RngCore as _;
use sotto_client::engine::now_ms;
use sotto_client::transport::{Connection, TransportError};
use sotto_wire::relay::{self, Envelope, request::Kind as Req, response::Kind as Resp};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::common::{
    Bench, Figure, cpu_seconds, median, quantile, register, sender_certificate, session_from_relay,
};

/// Sender/recipient pairs (40 authenticated connections).
const PAIRS: usize = 20;
/// Plaintext bytes per message.
const PLAINTEXT_BYTES: usize = 1024;
/// Messages per pair in one run (20 pairs: 5,000 messages, a few seconds of
/// end-to-end work and about one of libsignal alone on 2 cores).
const MESSAGES_PER_PAIR: usize = 250;
/// `Send` requests each sender keeps in flight while it encrypts the next
/// messages, so that the relay's group commit has concurrent writers and the
/// senders are not bound by round trips (with 4 the figure is about 15%
/// lower, with 8 about 7%; the relay allows 32 streams per connection).
const WINDOW: usize = 16;
/// A recipient that has heard no push for this long fetches instead.
const FETCH_AFTER: Duration = Duration::from_secs(1);
/// Most envelopes fetched in one `Fetch` (and so acknowledged in one `Ack`).
const FETCH_LIMIT: u32 = 256;
/// How long a whole run (end to end, or libsignal alone) may take before it
/// fails with a report of how far it got.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// The target: end-to-end throughput at least this share of
/// libsignal's own encrypt+decrypt rate on the same cores.
const TARGET_RATIO: f64 = 0.8;

/// Runs the scenario: sets up the pairs on one relay, then one warm-up round
/// and `runs` measured ones, each end to end and then libsignal alone.
pub(crate) async fn run(runs: usize) -> anyhow::Result<Vec<Figure>> {
    // Every sender sends thousands of messages over the scenario; the
    // per-account send limit (3,000 a minute) is not what is measured here.
    let bench = Bench::start_with_env(
        2 * PAIRS as u32,
        &[("SOTTO_RELAY_SENDS_PER_MINUTE", "100000000")],
    )?;
    let trust_root = Arc::new(PublicKey::deserialize(&bench.link.trust_root)?);
    let setup = Instant::now();
    let mut pairs = Vec::with_capacity(PAIRS);
    for index in 0..PAIRS {
        pairs.push(
            Pair::start(&bench, &trust_root, index)
                .await
                .with_context(|| format!("setting up pair {index}"))?,
        );
    }
    eprintln!(
        "   {PAIRS} pairs registered, sessions settled through the relay in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let total = PAIRS * MESSAGES_PER_PAIR;
    let relay_pid = bench.relay.pid();
    let (mut e2e_rate, mut alone_rate) = (Vec::new(), Vec::new());
    let (mut relay_cores, mut bench_cores, mut alone_cores) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fetched, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
    let mut envelope_bytes = 0;
    for round in 0..=runs {
        let warm_up = round == 0;
        let before = Cpu::now(relay_pid);
        let e2e = end_to_end(&mut pairs, &trust_root, round as u32)
            .await
            .with_context(|| {
                format!(
                    "end to end, round {round}; the relay's log ends:\n{}",
                    log_tail(&bench)
                )
            })?;
        let after = Cpu::now(relay_pid);
        let alone = libsignal_alone(&mut pairs, &trust_root, round as u32)
            .await
            .with_context(|| format!("libsignal alone, round {round}"))?;
        let after_alone = Cpu::now(relay_pid);
        let (rate, ceiling) = (
            total as f64 / e2e.elapsed.as_secs_f64(),
            total as f64 / alone.as_secs_f64(),
        );
        let (relay, own) = after.cores_since(&before);
        let (_, own_alone) = after_alone.cores_since(&after);
        eprintln!(
            "   round {round}{}: end to end {rate:.0} msg/s ({} by fetch, send-to-decrypt p50 {:.0} ms p99 {:.0} ms; \
             relay used {relay:.2} cores, bench {own:.2}); libsignal encrypt+decrypt alone {ceiling:.0}/s \
             (bench {own_alone:.2} cores); ratio {:.2}",
            if warm_up { " (warm-up)" } else { "" },
            e2e.fetched,
            quantile(&e2e.latencies_ms, 0.5),
            quantile(&e2e.latencies_ms, 0.99),
            rate / ceiling,
        );
        envelope_bytes = e2e.envelope_bytes;
        if warm_up {
            continue;
        }
        e2e_rate.push(rate);
        alone_rate.push(ceiling);
        relay_cores.push(relay);
        bench_cores.push(own);
        alone_cores.push(own_alone);
        fetched.push(e2e.fetched as f64);
        p50.push(quantile(&e2e.latencies_ms, 0.5));
        p99.push(quantile(&e2e.latencies_ms, 0.99));
    }
    bench.endpoint.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(2), bench.endpoint.wait_idle()).await;

    let ratio = median(&e2e_rate) / median(&alone_rate).max(f64::MIN_POSITIVE);
    let met = e2e_rate
        .iter()
        .zip(&alone_rate)
        .filter(|(e, a)| **e >= TARGET_RATIO * **a)
        .count();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let note = format!(
        "issue target: end-to-end throughput at least {:.0}% of libsignal's own encrypt+decrypt rate on the same cores; \
         {} at the medians (ratio {ratio:.2}; met in {met} of {runs} runs). Each message: sealed_sender_encrypt of a \
         {PLAINTEXT_BYTES}-byte plaintext ({envelope_bytes}-byte envelope) on an established session, a durable Send \
         ({WINDOW} in flight per sender), a push (or a Fetch after {FETCH_AFTER:?} without one), sealed_sender_decrypt \
         against the relay's trust root, and a share of a durable Ack; rate = {total} messages / first encryption to last \
         Ack answered. Ceiling: the same {PAIRS} pairs' sessions, one task per pair on the same tokio runtime, \
         sealed_sender_encrypt then sealed_sender_decrypt in a loop, no relay. Per measured run (medians), on this \
         machine's {cores} cores shared by relay and bench: end to end, the relay used {:.2} cores and the bench \
         process (client crypto, QUIC) {:.2}; libsignal alone, the bench used {:.2}. {:.0} of {total} messages came by \
         Fetch; send-to-decrypt p50 {:.0} ms, p99 {:.0} ms at this saturation. In-memory libsignal stores: a real \
         client also loads and saves sessions and stores each message.",
        TARGET_RATIO * 100.0,
        if ratio >= TARGET_RATIO {
            "met"
        } else {
            "not met"
        },
        median(&relay_cores),
        median(&bench_cores),
        median(&alone_cores),
        median(&fetched),
        median(&p50),
        median(&p99),
    );
    Ok(vec![
        Figure::new(
            "e2e",
            &format!(
                "end-to-end msg/s ({PAIRS} pairs, 1 KiB, sealed sender, durable, decrypted, acked)"
            ),
            "msg/s",
            e2e_rate,
            &note,
        )
        .with_ceiling("libsignal encrypt+decrypt alone", alone_rate),
    ])
}

/// The last lines the relay wrote to stderr, for a failed round's error.
fn log_tail(bench: &Bench) -> String {
    let log = bench.relay.stderr();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One side of a pair: a registered account, its connection, its libsignal
/// store (lent to the task that uses it during a round) and its certificate.
struct Side {
    id: Uuid,
    conn: Arc<Connection>,
    store: Option<InMemSignalProtocolStore>,
    certificate: SenderCertificate,
    /// Seqs of envelopes this side has already received (pushes may come
    /// again after a `Fetch`, in this round or a later one).
    seen: HashSet<u64>,
}

impl Side {
    async fn start(bench: &Bench) -> anyhow::Result<Side> {
        let account = register(bench).await?;
        let certificate = sender_certificate(&account.conn).await?;
        Ok(Side {
            id: account.id,
            conn: Arc::new(account.conn),
            store: Some(account.store),
            certificate,
            seen: HashSet::new(),
        })
    }

    fn address(&self) -> anyhow::Result<ProtocolAddress> {
        Ok(ProtocolAddress::new(self.id.to_string(), DeviceId::new(1)?))
    }

    fn take_store(&mut self) -> anyhow::Result<InMemSignalProtocolStore> {
        self.store
            .take()
            .context("a store was not returned by the last round")
    }
}

/// A sender, its recipient, and the sender's random plaintext filler.
struct Pair {
    index: u32,
    sender: Side,
    recipient: Side,
    filler: Arc<[u8]>,
}

impl Pair {
    /// Registers both sides, builds the sender's session from the relay's
    /// bundle, and sends one message each way through the relay so that the
    /// session is acknowledged (later messages are not prekey messages).
    async fn start(bench: &Bench, trust_root: &PublicKey, index: usize) -> anyhow::Result<Pair> {
        let mut sender = Side::start(bench).await?;
        let mut recipient = Side::start(bench).await?;
        let to_recipient = recipient.address()?;
        let mut sender_store = sender.take_store()?;
        let mut recipient_store = recipient.take_store()?;
        session_from_relay(&sender.conn, &mut sender_store, recipient.id, &to_recipient).await?;
        settle(
            &sender,
            &mut sender_store,
            &mut recipient,
            &mut recipient_store,
            trust_root,
        )
        .await
        .context("the first message, sender to recipient")?;
        settle(
            &recipient,
            &mut recipient_store,
            &mut sender,
            &mut sender_store,
            trust_root,
        )
        .await
        .context("the reply, recipient to sender")?;
        sender.store = Some(sender_store);
        recipient.store = Some(recipient_store);
        let mut filler = vec![0u8; PLAINTEXT_BYTES];
        rand::rng().fill_bytes(&mut filler);
        Ok(Pair {
            index: index as u32,
            sender,
            recipient,
            filler: filler.into(),
        })
    }
}

/// Sends one short message from `from` to `to` through the relay, and has
/// `to` receive, decrypt and acknowledge it.
async fn settle(
    from: &Side,
    from_store: &mut InMemSignalProtocolStore,
    to: &mut Side,
    to_store: &mut InMemSignalProtocolStore,
    trust_root: &PublicKey,
) -> anyhow::Result<()> {
    let me = to.address()?;
    let envelope = seal(from_store, &me, &from.certificate, b"hello")?;
    send(&from.conn, to.id, envelope).await?;
    let mut opened = false;
    while !opened {
        let (batch, _) = receive(&to.conn).await?;
        let mut seqs = Vec::with_capacity(batch.len());
        for e in batch {
            seqs.push(e.seq);
            if to.seen.insert(e.seq) {
                let got = open(to_store, &me, trust_root, &e.envelope)?;
                ensure!(
                    got.message == b"hello" && got.sender_uuid == from.id.to_string(),
                    "the settling message came back wrong"
                );
                opened = true;
            }
        }
        if !seqs.is_empty() {
            ack(&to.conn, seqs).await?;
        }
    }
    Ok(())
}

/// What one end-to-end round measured.
struct Round {
    /// First encryption to the last `Ack` answered.
    elapsed: Duration,
    /// Send (just before encryption) to decrypted, per message, in ms.
    latencies_ms: Vec<f64>,
    /// Messages that came by `Fetch` rather than by push.
    fetched: usize,
    /// Size of one sealed-sender envelope.
    envelope_bytes: usize,
}

/// Counters the tasks bump, so that a stuck round can say how far it got.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    decrypted: AtomicU64,
    acked: AtomicU64,
}

/// What a recipient task hands back.
struct Received {
    pair: usize,
    store: InMemSignalProtocolStore,
    seen: HashSet<u64>,
    latencies_ms: Vec<f64>,
    fetched: usize,
}

/// One round end to end: every sender encrypts and sends
/// [`MESSAGES_PER_PAIR`] messages; every recipient receives, decrypts and
/// acknowledges all of them.
async fn end_to_end(
    pairs: &mut [Pair],
    trust_root: &Arc<PublicKey>,
    round: u32,
) -> anyhow::Result<Round> {
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let mut recipients = JoinSet::new();
    let mut senders = JoinSet::new();
    for (i, pair) in pairs.iter_mut().enumerate() {
        let to = pair.recipient.address()?;
        let mut store = pair.sender.take_store()?;
        let (conn, certificate, filler) = (
            Arc::clone(&pair.sender.conn),
            pair.sender.certificate.clone(),
            Arc::clone(&pair.filler),
        );
        let (to_id, index, counters) = (pair.recipient.id, pair.index, Arc::clone(&progress));
        senders.spawn(async move {
            let mut in_flight = JoinSet::new();
            let mut envelope_bytes = 0;
            for n in 0..MESSAGES_PER_PAIR {
                let plaintext = stamped(&filler, round, index, n as u64, epoch);
                let envelope = seal(&mut store, &to, &certificate, &plaintext)?;
                envelope_bytes = envelope.len();
                while in_flight.len() >= WINDOW {
                    in_flight
                        .join_next()
                        .await
                        .context("no send in flight")???;
                }
                let (conn, counters) = (Arc::clone(&conn), Arc::clone(&counters));
                in_flight.spawn(async move {
                    send(&conn, to_id, envelope).await?;
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    anyhow::Ok(())
                });
                // Encryption does not await; let the other tasks run between messages.
                tokio::task::yield_now().await;
            }
            while let Some(done) = in_flight.join_next().await {
                done??;
            }
            anyhow::Ok((i, store, envelope_bytes))
        });
        let me = pair.recipient.address()?;
        let mut store = pair.recipient.take_store()?;
        let mut seen = std::mem::take(&mut pair.recipient.seen);
        let (conn, trust_root, counters) = (
            Arc::clone(&pair.recipient.conn),
            Arc::clone(trust_root),
            Arc::clone(&progress),
        );
        let from = pair.sender.id.to_string();
        let index = pair.index;
        recipients.spawn(async move {
            let mut latencies_ms = Vec::with_capacity(MESSAGES_PER_PAIR);
            let mut fetched = 0;
            while latencies_ms.len() < MESSAGES_PER_PAIR {
                let (batch, via_fetch) = receive(&conn).await?;
                let mut seqs = Vec::with_capacity(batch.len());
                let mut fresh = 0;
                for e in batch {
                    seqs.push(e.seq);
                    if !seen.insert(e.seq) {
                        continue;
                    }
                    let got = open(&mut store, &me, &trust_root, &e.envelope)?;
                    ensure!(
                        got.sender_uuid == from,
                        "pair {index}: a message from a stranger"
                    );
                    let (r, p, sent_ns) = read_stamp(&got.message)?;
                    ensure!(
                        r == round && p == index && got.message.len() == PLAINTEXT_BYTES,
                        "pair {index} got a plaintext of round {r}, pair {p}"
                    );
                    let decrypted = epoch.elapsed().as_nanos() as u64;
                    latencies_ms.push(decrypted.saturating_sub(sent_ns) as f64 / 1e6);
                    fresh += 1;
                    if via_fetch {
                        fetched += 1;
                    }
                }
                counters.decrypted.fetch_add(fresh, Ordering::Relaxed);
                if !seqs.is_empty() {
                    ack(&conn, seqs).await?;
                }
                counters.acked.fetch_add(fresh, Ordering::Relaxed);
            }
            anyhow::Ok(Received {
                pair: i,
                store,
                seen,
                latencies_ms,
                fetched,
            })
        });
    }
    let joined = tokio::time::timeout(RUN_LIMIT, async {
        let mut envelope_bytes = 0;
        while let Some(done) = senders.join_next().await {
            let (i, store, bytes) = done??;
            pairs[i].sender.store = Some(store);
            envelope_bytes = bytes;
        }
        let mut out = Vec::with_capacity(PAIRS);
        while let Some(done) = recipients.join_next().await {
            out.push(done??);
        }
        anyhow::Ok((out, envelope_bytes))
    })
    .await;
    let (received, envelope_bytes) = match joined {
        Ok(done) => done.with_context(|| {
            format!(
                "after {:.1} s: {} of {} sent, {} decrypted, {} acknowledged",
                epoch.elapsed().as_secs_f64(),
                progress.sent.load(Ordering::Relaxed),
                PAIRS * MESSAGES_PER_PAIR,
                progress.decrypted.load(Ordering::Relaxed),
                progress.acked.load(Ordering::Relaxed),
            )
        })?,
        Err(_) => bail!(
            "not done after {RUN_LIMIT:?}: {} of {} sent, {} decrypted, {} acknowledged",
            progress.sent.load(Ordering::Relaxed),
            PAIRS * MESSAGES_PER_PAIR,
            progress.decrypted.load(Ordering::Relaxed),
            progress.acked.load(Ordering::Relaxed),
        ),
    };
    let elapsed = epoch.elapsed();
    let mut latencies_ms = Vec::with_capacity(PAIRS * MESSAGES_PER_PAIR);
    let mut fetched = 0;
    for r in received {
        pairs[r.pair].recipient.store = Some(r.store);
        pairs[r.pair].recipient.seen = r.seen;
        latencies_ms.extend(r.latencies_ms);
        fetched += r.fetched;
    }
    Ok(Round {
        elapsed,
        latencies_ms,
        fetched,
        envelope_bytes,
    })
}

/// The ceiling: libsignal alone on the same sessions, one task per pair,
/// each encrypting and then decrypting [`MESSAGES_PER_PAIR`] messages.
async fn libsignal_alone(
    pairs: &mut [Pair],
    trust_root: &Arc<PublicKey>,
    round: u32,
) -> anyhow::Result<Duration> {
    let epoch = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, pair) in pairs.iter_mut().enumerate() {
        let to = pair.recipient.address()?;
        let mut sender = pair.sender.take_store()?;
        let mut recipient = pair.recipient.take_store()?;
        let (certificate, filler, trust_root) = (
            pair.sender.certificate.clone(),
            Arc::clone(&pair.filler),
            Arc::clone(trust_root),
        );
        let index = pair.index;
        tasks.spawn(async move {
            for n in 0..MESSAGES_PER_PAIR {
                let plaintext = stamped(&filler, round, index, n as u64, epoch);
                let envelope = seal(&mut sender, &to, &certificate, &plaintext)?;
                let got = open(&mut recipient, &to, &trust_root, &envelope)?;
                ensure!(
                    got.message == plaintext,
                    "pair {index}: a different plaintext"
                );
                tokio::task::yield_now().await;
            }
            anyhow::Ok((i, sender, recipient))
        });
    }
    let joined = tokio::time::timeout(RUN_LIMIT, async {
        while let Some(done) = tasks.join_next().await {
            let (i, sender, recipient) = done??;
            pairs[i].sender.store = Some(sender);
            pairs[i].recipient.store = Some(recipient);
        }
        anyhow::Ok(())
    })
    .await;
    joined.with_context(|| format!("libsignal alone not done after {RUN_LIMIT:?}"))??;
    Ok(epoch.elapsed())
}

/// A 1 KiB plaintext: round, pair, index and the time since `epoch` in
/// front of the pair's random filler.
fn stamped(filler: &[u8], round: u32, pair: u32, index: u64, epoch: Instant) -> Vec<u8> {
    let mut out = filler.to_vec();
    out[0..4].copy_from_slice(&round.to_be_bytes());
    out[4..8].copy_from_slice(&pair.to_be_bytes());
    out[8..16].copy_from_slice(&index.to_be_bytes());
    out[16..24].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
    out
}

/// Round, pair and send time (ns since the round's epoch) of a plaintext.
fn read_stamp(plaintext: &[u8]) -> anyhow::Result<(u32, u32, u64)> {
    let field = |r: std::ops::Range<usize>| plaintext.get(r).context("a short plaintext");
    Ok((
        u32::from_be_bytes(field(0..4)?.try_into()?),
        u32::from_be_bytes(field(4..8)?.try_into()?),
        u64::from_be_bytes(field(16..24)?.try_into()?),
    ))
}

/// `sealed_sender_encrypt` on an in-memory store. Its futures never wait
/// (the store answers at once) and are not `Send`, so they run to completion
/// here rather than being held across an await.
fn seal(
    store: &mut InMemSignalProtocolStore,
    to: &ProtocolAddress,
    certificate: &SenderCertificate,
    plaintext: &[u8],
) -> anyhow::Result<Vec<u8>> {
    Ok(sealed_sender_encrypt(
        to,
        certificate,
        plaintext,
        &mut store.session_store,
        &mut store.identity_store,
        SystemTime::now(),
        &mut rand::rng(),
    )
    .now_or_never()
    .context("libsignal's in-memory store did not answer at once")??)
}

/// `sealed_sender_decrypt` on an in-memory store, as [`seal`] does.
fn open(
    store: &mut InMemSignalProtocolStore,
    me: &ProtocolAddress,
    trust_root: &PublicKey,
    envelope: &[u8],
) -> anyhow::Result<SealedSenderDecryptionResult> {
    Ok(sealed_sender_decrypt(
        envelope,
        trust_root,
        Timestamp::from_epoch_millis(now_ms()),
        None,
        me.name().to_string(),
        me.device_id(),
        &mut store.identity_store,
        &mut store.session_store,
        &mut store.pre_key_store,
        &store.signed_pre_key_store,
        &mut store.kyber_pre_key_store,
    )
    .now_or_never()
    .context("libsignal's in-memory store did not answer at once")??)
}

/// One durable `Send`.
async fn send(conn: &Connection, to: Uuid, envelope: Vec<u8>) -> anyhow::Result<()> {
    let answer = conn
        .request(Req::Send(relay::Send {
            recipient: to.as_bytes().to_vec(),
            device_id: 1,
            registration_id: 0,
            envelope,
        }))
        .await
        .context("Send failed")?;
    ensure!(matches!(answer, Resp::Sent(_)), "unexpected answer to Send");
    Ok(())
}

/// The next envelopes: a push and any others already read, or, after
/// [`FETCH_AFTER`] without a push, a `Fetch`. Says whether they were fetched.
async fn receive(conn: &Connection) -> anyhow::Result<(Vec<Envelope>, bool)> {
    match tokio::time::timeout(FETCH_AFTER, conn.next_push()).await {
        // One damaged push stream costs that push only; the envelope stays
        // in the mailbox for a later Fetch.
        Ok(Err(TransportError::Frame(_))) => Ok((Vec::new(), false)),
        Ok(push) => {
            let mut envelopes = push.context("push failed")?.envelopes;
            // `next_push` is cancel-safe: take what has already been read.
            while let Some(Ok(more)) = conn.next_push().now_or_never() {
                envelopes.extend(more.envelopes);
            }
            Ok((envelopes, false))
        }
        Err(_) => {
            let answer = conn
                .request(Req::Fetch(relay::Fetch { limit: FETCH_LIMIT }))
                .await
                .context("Fetch failed")?;
            let Resp::Envelopes(found) = answer else {
                bail!("unexpected answer to Fetch");
            };
            Ok((found.envelopes, true))
        }
    }
}

/// One durable `Ack`.
async fn ack(conn: &Connection, seqs: Vec<u64>) -> anyhow::Result<()> {
    let answer = conn
        .request(Req::Ack(relay::Ack { seqs }))
        .await
        .context("Ack failed")?;
    ensure!(matches!(answer, Resp::Done(_)), "unexpected answer to Ack");
    Ok(())
}

/// CPU time used so far by the relay and by this process.
struct Cpu {
    at: Instant,
    relay: Option<f64>,
    own: Option<f64>,
}

impl Cpu {
    fn now(relay_pid: Option<u32>) -> Cpu {
        Cpu {
            at: Instant::now(),
            relay: relay_pid.and_then(|pid| cpu_seconds(&pid.to_string())),
            own: cpu_seconds("self"),
        }
    }

    /// Cores used on average since `earlier` by the relay and by this process (0 when unknown).
    fn cores_since(&self, earlier: &Cpu) -> (f64, f64) {
        let wall = (self.at - earlier.at).as_secs_f64().max(f64::MIN_POSITIVE);
        let cores = |now: Option<f64>, then: Option<f64>| match (now, then) {
            (Some(now), Some(then)) => (now - then) / wall,
            _ => 0.0,
        };
        (
            cores(self.relay, earlier.relay),
            cores(self.own, earlier.own),
        )
    }
}
