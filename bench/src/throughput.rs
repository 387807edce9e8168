//! Relay throughput and send-to-receive latency: 100 sender/recipient pairs
//! exchanging 1 KiB sealed-sender-shaped envelopes through the real relay.
//!
//! Every message takes the whole durable path: the sender's `Send` is answered
//! `Sent` only after the relay's group-commit flush, the relay pushes the
//! envelope on a unidirectional stream (a recipient that hears nothing for a
//! while falls back to `Fetch`), and the recipient acknowledges it with `Ack`
//! (itself durable). Envelopes are random bytes with a [`Stamp`] in front: the
//! relay never decrypts, so real sealed sender would only add client CPU.
//!
//! Figures, each beside a ceiling measured in the same invocation:
//! - **Throughput** (closed loop, [`WINDOW`] sends in flight per sender):
//!   messages acknowledged per second from the first send to the last ack.
//!   Ceilings: raw sled 1 KiB insert + flush on a temp dir, with the relay's
//!   group-commit pattern (one flusher thread for all writers) and, in the
//!   note, one flush per insert; and a bare quinn echo server in this process
//!   (same TLS config, same framing, no store).
//! - **Latency** at 50% of the median throughput and at a fixed 1,000 msg/s
//!   (open loop, paced per pair): receipt at the recipient minus the
//!   *scheduled* send time, so a stalled relay cannot hide its queueing
//!   (no coordinated omission). Ceiling: request-to-response time of the bare
//!   quinn echo at the same paced load.
//!
//! Every stage has a timeout, and a watchdog reports which stage stopped
//! moving (sends answered, pushes read, envelopes acknowledged) instead of
//! hanging. The throughput note records what bounded each run: the relay's
//! CPU use, datagrams the kernel dropped at the relay's UDP socket, and how
//! many envelopes came by `Fetch` because their push was late.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rand::RngCore;
use sotto_client::transport::{Connection, TransportError};
use sotto_wire::frame;
use sotto_wire::relay::{
    self, Envelope, Request, Response, request::Kind as Req, response::Kind as Resp,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::common::{Bench, Figure, cpu_seconds, median, ms, quantile, register, roomy_endpoint};

/// Sender/recipient pairs (200 authenticated connections to the relay).
const PAIRS: usize = 100;
/// Bytes per envelope (a small sealed-sender message).
const ENVELOPE_BYTES: usize = 1024;
/// `Send` requests each sender keeps in flight in the throughput runs, so
/// that the relay's group commit has concurrent writers to batch.
const WINDOW: usize = 8;
/// Messages per pair in one throughput run (100 pairs: 10,000 messages, a
/// few seconds on a small machine).
const MESSAGES_PER_PAIR: usize = 100;
/// Length of one paced latency run.
const LATENCY_RUN: Duration = Duration::from_secs(4);
/// The latency target is stated at this load.
const TARGET_RATE: f64 = 1000.0;
/// The target for p99 send-to-receive latency at [`TARGET_RATE`], in ms.
const TARGET_P99_MS: f64 = 2.0;
/// Concurrent `next_push` loops per recipient, so one slow push stream never
/// keeps the next one waiting to be accepted.
const PUSH_READERS: usize = 2;
/// A recipient that has heard no push for this long fetches instead.
const FETCH_AFTER: Duration = Duration::from_secs(1);
/// Most envelopes acknowledged in one `Ack`, and fetched in one `Fetch`.
const MAX_BATCH: usize = 256;
/// How long any one request, or the whole run's progress, may stall before
/// the run fails with a report of which stage stopped.
const STALL: Duration = Duration::from_secs(20);
/// Inserts in one run of the one-flush-per-insert sled ceiling.
const SINGLE_FLUSH_INSERTS: usize = 300;

/// Runs the scenario: throughput (with its ceilings), then latency at 50% of
/// the median throughput and at [`TARGET_RATE`].
pub(crate) async fn run(runs: usize) -> anyhow::Result<Vec<Figure>> {
    let mut world = World::start().await?;
    let echo = Echo::start().await?;

    // Throughput: one warm-up round, then `runs` measured ones.
    let mut relay_rate = Vec::new();
    let mut sled_group = Vec::new();
    let mut sled_single = Vec::new();
    let mut echo_rate = Vec::new();
    let mut health = Health::default();
    let total = PAIRS * MESSAGES_PER_PAIR;
    for round in 0..=runs {
        let before = world.probe();
        let relayed = world
            .round(Load::Closed {
                per_pair: MESSAGES_PER_PAIR,
            })
            .await
            .with_context(|| format!("relay throughput, round {round}"))?;
        let after = world.probe();
        let relay = total as f64 / relayed.elapsed.as_secs_f64();
        let group = sled_group_commit(total)
            .await
            .context("sled group-commit ceiling")?;
        let single = sled_flush_per_insert(SINGLE_FLUSH_INSERTS)
            .await
            .context("sled flush-per-insert ceiling")?;
        let echoed = echo
            .round(Load::Closed {
                per_pair: MESSAGES_PER_PAIR,
            })
            .await
            .with_context(|| format!("quinn echo throughput, round {round}"))?;
        let echo_per_s = total as f64 / echoed.elapsed.as_secs_f64();
        let cores = after.cores_since(&before);
        let drops = after.drops_since(&before);
        eprintln!(
            "   throughput round {round}{}: relay {relay:.0} msg/s ({} by fetch, {} late pushes, {} kernel drops at the relay, relay used {cores:.2} cores, send-to-receive p50 {:.0} ms p99 {:.0} ms); sled group {group:.0}/s, sled single {single:.0}/s, echo {echo_per_s:.0} req/s",
            if round == 0 { " (warm-up)" } else { "" },
            relayed.fetched,
            relayed.late_pushes,
            drops.map_or("?".into(), |d| d.to_string()),
            quantile(&relayed.latencies_ms, 0.5),
            quantile(&relayed.latencies_ms, 0.99),
        );
        if round == 0 {
            continue;
        }
        health.add(&relayed, cores, drops);
        relay_rate.push(relay);
        sled_group.push(group);
        sled_single.push(single);
        echo_rate.push(echo_per_s);
    }

    // Latency at half the median throughput, and at the fixed load.
    let half = (median(&relay_rate) / 2.0).max(1.0);
    let mut at_half = Latencies::default();
    let mut at_target = Latencies::default();
    for round in 0..=runs {
        let warm_up = round == 0;
        for (rate, out) in [(half, &mut at_half), (TARGET_RATE, &mut at_target)] {
            let per_pair = (rate * LATENCY_RUN.as_secs_f64() / PAIRS as f64).ceil() as usize;
            let load = Load::Paced { rate, per_pair };
            let relayed = world
                .round(load)
                .await
                .with_context(|| format!("relay latency at {rate:.0} msg/s, round {round}"))?;
            let echoed = echo
                .round(load)
                .await
                .with_context(|| format!("quinn echo latency at {rate:.0} msg/s, round {round}"))?;
            let achieved = (per_pair * PAIRS) as f64 / relayed.elapsed.as_secs_f64();
            eprintln!(
                "   latency round {round}{} at {rate:.0} msg/s (achieved {achieved:.0}): relay p50 {:.2} p99 {:.2} p99.9 {:.2} ms ({} by fetch); echo p50 {:.2} p99 {:.2} p99.9 {:.2} ms",
                if warm_up { " (warm-up)" } else { "" },
                quantile(&relayed.latencies_ms, 0.5),
                quantile(&relayed.latencies_ms, 0.99),
                quantile(&relayed.latencies_ms, 0.999),
                relayed.fetched,
                quantile(&echoed.latencies_ms, 0.5),
                quantile(&echoed.latencies_ms, 0.99),
                quantile(&echoed.latencies_ms, 0.999),
            );
            if !warm_up {
                out.add(&relayed, &echoed, achieved);
            }
        }
    }
    let bad_push_streams = world.pushes.bad_streams.load(Ordering::Relaxed);
    world.close().await;
    echo.close().await;

    let pattern = format!("{PAIRS} pairs × {WINDOW} in flight, 1 KiB");
    let sled_note = format!(
        "closed loop; each message is a durable Send, a push, and a share of a durable Ack; rate = messages acked / \
         first send to last ack. Ceiling: raw sled 1 KiB insert + flush on a temp dir, {PAIRS}×{WINDOW} writers sharing \
         one flusher thread (the relay's group commit); with one flush per insert sled does {:.0}/s. Per measured run \
         (medians): relay used {:.2} cores (client, relay and echo share this machine's), {} of {total} messages came by \
         Fetch after {FETCH_AFTER:?} without a push ({} pushes arrived later), {} datagrams dropped by the kernel at the \
         relay's UDP socket (default buffer), send-to-receive p50 {:.0} ms / p99 {:.0} ms at this saturation; {bad_push_streams} \
         push streams failed in the whole scenario.",
        median(&sled_single),
        median(&health.cores),
        median(&health.fetched),
        median(&health.late_pushes),
        if health.drops.is_empty() {
            "an unknown number of".into()
        } else {
            format!("{:.0}", median(&health.drops))
        },
        median(&health.p50),
        median(&health.p99),
    );
    let echo_note = format!(
        "the same runs beside a bare quinn echo server in this process: the relay's TLS and transport config, one framed \
         1 KiB request answered by one framed 1 KiB response per stream, no store, {PAIRS} connections × {WINDOW} in \
         flight. A relayed message costs more QUIC work than one echo (a Send stream, a push stream, a share of an Ack \
         stream) plus two durable writes, so the ratio's ideal is well below 1."
    );
    let target_holds = at_target.p99.iter().filter(|p| **p < TARGET_P99_MS).count();
    let mut figures = vec![
        Figure::new(
            "throughput",
            &format!("relay messages/s ({pattern}, durable, pushed, acked)"),
            "msg/s",
            relay_rate.clone(),
            &sled_note,
        )
        .with_ceiling("sled insert + group flush, 1 KiB", sled_group),
        Figure::new(
            "throughput",
            "relay messages/s (same runs) against the network ceiling",
            "msg/s",
            relay_rate,
            &echo_note,
        )
        .with_ceiling(&format!("bare quinn echo req/s ({pattern})"), echo_rate),
    ];
    let half_note = format!(
        "open loop at 50% of the median throughput ({half:.0} msg/s asked, {:.0} achieved), paced per pair and staggered; \
         latency = receipt at the recipient (push frame read, or Fetch answer) minus the *scheduled* send time, so \
         queueing is not hidden. Ceiling: bare quinn echo request-to-response time, a full round trip (comparable to \
         sender → relay → recipient), at the same paced load.",
        median(&at_half.achieved)
    );
    figures.extend(at_half.figures(&format!("at {half:.0} msg/s (50% of max)"), &half_note));
    let target_note = format!(
        "issue target: p99 < {TARGET_P99_MS} ms at {TARGET_RATE:.0} msg/s on loopback; held in {target_holds} of {runs} \
         runs ({:.0} msg/s achieved). Open loop, paced per pair, scheduled send to receipt at the recipient. Ceiling: \
         bare quinn echo request-to-response (full round trip) at the same load.",
        median(&at_target.achieved)
    );
    figures.extend(at_target.figures(
        &format!("at {TARGET_RATE:.0} msg/s (issue target)"),
        &target_note,
    ));
    Ok(figures)
}

/// Per-run evidence of what bounded the throughput figure, for its note.
#[derive(Default)]
struct Health {
    cores: Vec<f64>,
    fetched: Vec<f64>,
    late_pushes: Vec<f64>,
    drops: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Health {
    fn add(&mut self, relayed: &Round, cores: f64, drops: Option<u64>) {
        self.cores.push(cores);
        self.fetched.push(relayed.fetched as f64);
        self.late_pushes.push(relayed.late_pushes as f64);
        if let Some(d) = drops {
            self.drops.push(d as f64);
        }
        self.p50.push(quantile(&relayed.latencies_ms, 0.5));
        self.p99.push(quantile(&relayed.latencies_ms, 0.99));
    }
}

/// The relay process's CPU time and its socket's kernel drops at one instant.
struct Probe {
    at: Instant,
    cpu_seconds: Option<f64>,
    drops: Option<u64>,
}

impl Probe {
    /// Cores the relay used on average since `earlier` (0 when unknown).
    fn cores_since(&self, earlier: &Probe) -> f64 {
        match (self.cpu_seconds, earlier.cpu_seconds) {
            (Some(now), Some(then)) => (now - then) / (self.at - earlier.at).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Datagrams dropped at the relay's socket since `earlier`.
    fn drops_since(&self, earlier: &Probe) -> Option<u64> {
        Some(self.drops?.saturating_sub(earlier.drops?))
    }
}

/// How a round offers its load.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// Every pair sends `per_pair` messages as fast as it can, [`WINDOW`] in flight.
    Closed {
        /// Messages per pair.
        per_pair: usize,
    },
    /// `rate` messages/s in total, spread evenly over the pairs and staggered,
    /// each send started on schedule whether or not earlier ones finished.
    Paced {
        /// Total messages per second.
        rate: f64,
        /// Messages per pair.
        per_pair: usize,
    },
}

impl Load {
    fn per_pair(self) -> usize {
        match self {
            Load::Closed { per_pair } | Load::Paced { per_pair, .. } => per_pair,
        }
    }
}

/// Per-run latency percentiles of the relay and of the echo ceiling.
#[derive(Default)]
struct Latencies {
    p50: Vec<f64>,
    p99: Vec<f64>,
    p999: Vec<f64>,
    echo_p50: Vec<f64>,
    echo_p99: Vec<f64>,
    echo_p999: Vec<f64>,
    achieved: Vec<f64>,
}

impl Latencies {
    fn add(&mut self, relayed: &Round, echoed: &Round, achieved: f64) {
        let (r, e) = (&relayed.latencies_ms, &echoed.latencies_ms);
        self.p50.push(quantile(r, 0.5));
        self.p99.push(quantile(r, 0.99));
        self.p999.push(quantile(r, 0.999));
        self.echo_p50.push(quantile(e, 0.5));
        self.echo_p99.push(quantile(e, 0.99));
        self.echo_p999.push(quantile(e, 0.999));
        self.achieved.push(achieved);
    }

    fn figures(&self, load: &str, note: &str) -> Vec<Figure> {
        [
            ("p50", &self.p50, &self.echo_p50),
            ("p99", &self.p99, &self.echo_p99),
            ("p99.9", &self.p999, &self.echo_p999),
        ]
        .into_iter()
        .map(|(q, relay, echo)| {
            Figure::new(
                "throughput",
                &format!("send-to-receive latency {q}, {load}"),
                "ms",
                relay.clone(),
                note,
            )
            .with_ceiling(&format!("quinn echo round trip {q}"), echo.clone())
        })
        .collect()
    }
}

/// What one round measured.
struct Round {
    /// First send to last acknowledgement (relay) or last response (echo).
    elapsed: Duration,
    /// Send-to-receive (relay) or request-to-response (echo) times, in ms.
    latencies_ms: Vec<f64>,
    /// Messages the recipients got by `Fetch` rather than by push.
    fetched: usize,
    /// Pushes that arrived after their envelope had already come by `Fetch`
    /// (in this round, or in an earlier one): late, not lost.
    late_pushes: usize,
}

/// The first bytes of every envelope: which round and pair it belongs to,
/// its index, and when it was (scheduled to be) sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    round: u32,
    pair: u32,
    index: u64,
    /// Nanoseconds since the scenario's shared start instant.
    sent_ns: u64,
}

impl Stamp {
    const LEN: usize = 24;

    /// A 1 KiB envelope: this stamp, then the pair's random filler.
    fn envelope(&self, filler: &[u8]) -> Vec<u8> {
        let mut out = filler.to_vec();
        let header = &mut out[..Self::LEN];
        header[0..4].copy_from_slice(&self.round.to_be_bytes());
        header[4..8].copy_from_slice(&self.pair.to_be_bytes());
        header[8..16].copy_from_slice(&self.index.to_be_bytes());
        header[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
        out
    }

    fn read(envelope: &[u8]) -> Option<Stamp> {
        let field = |r: std::ops::Range<usize>| envelope.get(r);
        Some(Stamp {
            round: u32::from_be_bytes(field(0..4)?.try_into().ok()?),
            pair: u32::from_be_bytes(field(4..8)?.try_into().ok()?),
            index: u64::from_be_bytes(field(8..16)?.try_into().ok()?),
            sent_ns: u64::from_be_bytes(field(16..24)?.try_into().ok()?),
        })
    }
}

/// Nanoseconds from `epoch` to `at`.
fn since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Random filler for one pair's envelopes (sealed sender looks random too).
fn filler() -> Arc<[u8]> {
    let mut bytes = vec![0u8; ENVELOPE_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    bytes.into()
}

/// Counters every stage bumps, so a stalled round can say where it stopped.
#[derive(Default)]
struct Progress {
    /// Requests started (Send to the relay, or echo requests).
    started: AtomicU64,
    /// Requests answered (`Sent`, or the echo).
    answered: AtomicU64,
    /// Envelopes of this round taken from a recipient's push inbox.
    pushed: AtomicU64,
    /// Envelopes of this round first seen in a `Fetch` answer.
    fetched: AtomicU64,
    /// Envelopes of this round acknowledged (the `Ack` was answered).
    acked: AtomicU64,
}

impl Progress {
    fn snapshot(&self) -> [u64; 5] {
        [
            self.started.load(Ordering::Relaxed),
            self.answered.load(Ordering::Relaxed),
            self.pushed.load(Ordering::Relaxed),
            self.fetched.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
        ]
    }

    /// Which stage stopped, for the error of a stalled round.
    fn describe(&self, expected: usize, pushes_read: u64) -> String {
        let [started, answered, pushed, fetched, acked] = self.snapshot();
        let stage = if answered < started {
            "requests are not answered (relay request handling or its flush)"
        } else if pushed + fetched < answered {
            "answered sends do not reach recipients (push streams, and the Fetch fallback)"
        } else if acked < pushed + fetched {
            "received envelopes are not acknowledged (Ack requests)"
        } else {
            "senders stopped starting requests (stream limits on the sender side?)"
        };
        format!(
            "no progress for {STALL:?}: {stage}. expected {expected}, started {started}, answered {answered}, \
             pushed {pushed}, fetched {fetched}, acked {acked}; push frames read since start: {pushes_read}"
        )
    }
}

/// Waits for every task of a round, failing with a stage report when no
/// counter moves for [`STALL`] (dropping the sets aborts their tasks).
async fn supervise<T: 'static>(
    workers: &mut JoinSet<anyhow::Result<()>>,
    collectors: &mut JoinSet<anyhow::Result<T>>,
    progress: &Progress,
    expected: usize,
    pushes_read: &AtomicU64,
) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    let mut last = (progress.snapshot(), Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while !workers.is_empty() || !collectors.is_empty() {
        tokio::select! {
            Some(done) = workers.join_next(), if !workers.is_empty() => done??,
            Some(done) = collectors.join_next(), if !collectors.is_empty() => out.push(done??),
            _ = tick.tick() => {
                let now = progress.snapshot();
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() >= STALL {
                    bail!(progress.describe(expected, pushes_read.load(Ordering::Relaxed)));
                }
            }
        }
    }
    Ok(out)
}

/// Starts `load.per_pair()` operations for each of [`PAIRS`] lanes into
/// `workers`: closed loop with [`WINDOW`] in flight per lane, or paced.
/// `op(pair, index, scheduled)` performs one operation.
fn drive<F, Fut>(load: Load, workers: &mut JoinSet<anyhow::Result<()>>, op: F)
where
    F: Fn(usize, u64, Instant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    match load {
        Load::Closed { per_pair } => {
            for pair in 0..PAIRS {
                let next = Arc::new(AtomicUsize::new(0));
                for _ in 0..WINDOW {
                    let (op, next) = (Arc::clone(&op), Arc::clone(&next));
                    workers.spawn(async move {
                        loop {
                            let index = next.fetch_add(1, Ordering::Relaxed);
                            if index >= per_pair {
                                return Ok(());
                            }
                            op(pair, index as u64, Instant::now()).await?;
                        }
                    });
                }
            }
        }
        Load::Paced { rate, per_pair } => {
            // Each lane sends every PAIRS/rate seconds; lanes are staggered by
            // 1/rate so the total load is even rather than in bursts.
            let period = Duration::from_secs_f64(PAIRS as f64 / rate);
            let start = tokio::time::Instant::now() + Duration::from_millis(20);
            for pair in 0..PAIRS {
                let op = Arc::clone(&op);
                let phase = Duration::from_secs_f64(pair as f64 / rate);
                workers.spawn(async move {
                    let mut tick = tokio::time::interval_at(start + phase, period);
                    // Burst (the default) keeps the schedule after a late wake-up.
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    let mut in_flight = JoinSet::new();
                    for index in 0..per_pair {
                        let scheduled = tick.tick().await.into_std();
                        in_flight.spawn(op(pair, index as u64, scheduled));
                        while let Some(done) = in_flight.try_join_next() {
                            done??;
                        }
                    }
                    while let Some(done) = in_flight.join_next().await {
                        done??;
                    }
                    Ok(())
                });
            }
        }
    }
}

/// A push as read from the relay, with the instant its frame was read.
struct Arrival {
    envelope: Envelope,
    at: Instant,
    via_fetch: bool,
}

/// The relay under test with its 100 pairs of registered, connected accounts.
struct World {
    bench: Bench,
    epoch: Instant,
    round: u32,
    senders: Vec<Arc<Connection>>,
    recipients: Vec<Arc<Connection>>,
    recipient_ids: Vec<Uuid>,
    fillers: Vec<Arc<[u8]>>,
    /// Each recipient's pushes, filled by its [`PUSH_READERS`] reader tasks;
    /// lent to that recipient's collector task for the length of a round.
    inboxes: Vec<Option<mpsc::UnboundedReceiver<Arrival>>>,
    /// The reader tasks (aborted when the set is dropped).
    readers: JoinSet<()>,
    /// What the readers have seen since the start.
    pushes: Arc<PushCounts>,
}

impl World {
    /// Starts a relay, registers the pairs, and starts reading pushes.
    async fn start() -> anyhow::Result<World> {
        let bench = Bench::start(2 * PAIRS as u32)?;
        let mut senders = Vec::with_capacity(PAIRS);
        let mut recipients = Vec::with_capacity(PAIRS);
        let mut recipient_ids = Vec::with_capacity(PAIRS);
        let mut inboxes = Vec::with_capacity(PAIRS);
        let mut readers = JoinSet::new();
        let pushes = Arc::new(PushCounts::default());
        for _ in 0..PAIRS {
            senders.push(Arc::new(register(&bench).await?.conn));
            let recipient = register(&bench).await?;
            let conn = Arc::new(recipient.conn);
            let (tx, rx) = mpsc::unbounded_channel();
            for _ in 0..PUSH_READERS {
                let (conn, tx, counts) = (Arc::clone(&conn), tx.clone(), Arc::clone(&pushes));
                readers.spawn(read_pushes(conn, tx, counts));
            }
            recipients.push(conn);
            recipient_ids.push(recipient.id);
            inboxes.push(Some(rx));
        }
        Ok(World {
            bench,
            epoch: Instant::now(),
            round: 0,
            senders,
            recipients,
            recipient_ids,
            fillers: (0..PAIRS).map(|_| filler()).collect(),
            inboxes,
            readers,
            pushes,
        })
    }

    /// The relay's CPU time and socket drops now.
    fn probe(&self) -> Probe {
        let port = self
            .bench
            .link
            .relay
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.port());
        Probe {
            at: Instant::now(),
            cpu_seconds: self
                .bench
                .relay
                .pid()
                .and_then(|pid| cpu_seconds(&pid.to_string())),
            drops: port.and_then(udp_drops),
        }
    }

    /// One round: every pair sends `load.per_pair()` messages; every
    /// recipient receives and acknowledges all of them.
    async fn round(&mut self, load: Load) -> anyhow::Result<Round> {
        self.round += 1;
        let round = self.round;
        let expected = load.per_pair();
        let progress = Arc::new(Progress::default());
        let epoch = self.epoch;
        let mut collectors = JoinSet::new();
        for pair in 0..PAIRS {
            let inbox = self.inboxes[pair]
                .take()
                .context("a recipient's inbox was not returned by the last round")?;
            collectors.spawn(collect(
                Arc::clone(&self.recipients[pair]),
                inbox,
                Expect {
                    round,
                    pair: pair as u32,
                    count: expected,
                    epoch,
                },
                Arc::clone(&progress),
            ));
        }
        let start = Instant::now();
        let mut workers = JoinSet::new();
        let senders = self.senders.clone();
        let to = self.recipient_ids.clone();
        let fillers = self.fillers.clone();
        let counters = Arc::clone(&progress);
        drive(load, &mut workers, move |pair, index, scheduled| {
            let conn = Arc::clone(&senders[pair]);
            let recipient = to[pair].as_bytes().to_vec();
            let envelope = Stamp {
                round,
                pair: pair as u32,
                index,
                sent_ns: since(epoch, scheduled),
            }
            .envelope(&fillers[pair]);
            let progress = Arc::clone(&counters);
            async move {
                progress.started.fetch_add(1, Ordering::Relaxed);
                let send = Req::Send(relay::Send {
                    recipient,
                    device_id: 1,
                    registration_id: 0,
                    envelope,
                });
                match answer(&conn, send, "Send").await? {
                    Resp::Sent(_) => {}
                    _ => bail!("unexpected answer to Send"),
                }
                progress.answered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        });
        let results = supervise(
            &mut workers,
            &mut collectors,
            &progress,
            expected * PAIRS,
            &self.pushes.read,
        )
        .await?;
        let mut last = start;
        let mut latencies_ms = Vec::with_capacity(expected * PAIRS);
        let (mut fetched, mut late_pushes) = (0, 0);
        for (pair, inbox, got) in results {
            self.inboxes[pair as usize] = Some(inbox);
            last = last.max(got.last_ack);
            latencies_ms.extend(got.latencies_ms);
            fetched += got.fetched;
            late_pushes += got.late_pushes;
        }
        Ok(Round {
            elapsed: last - start,
            latencies_ms,
            fetched,
            late_pushes,
        })
    }

    /// Stops the push readers and closes every connection at once.
    ///
    /// Not `Connection::close` one by one: on a shared endpoint each of those
    /// waits its full second for the *endpoint* to go idle.
    async fn close(mut self) {
        self.readers.shutdown().await;
        self.bench.endpoint.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.bench.endpoint.wait_idle()).await;
    }
}

/// Datagrams the kernel has dropped at the UDP socket bound to `port` on
/// this machine (the last column of `/proc/net/udp`), if it can tell.
fn udp_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = fields.get(1)?;
        let (_, hex_port) = local.rsplit_once(':')?;
        (u16::from_str_radix(hex_port, 16).ok()? == port)
            .then(|| fields.last()?.parse().ok())
            .flatten()
    })
}

/// Sends one request with a timeout naming the request on failure.
async fn answer(conn: &Connection, kind: Req, what: &str) -> anyhow::Result<Resp> {
    tokio::time::timeout(STALL, conn.request(kind))
        .await
        .with_context(|| format!("no answer to {what} within {STALL:?}"))?
        .with_context(|| format!("{what} failed"))
}

/// What every recipient's push readers have seen since the start.
#[derive(Default)]
struct PushCounts {
    /// Push frames read.
    read: AtomicU64,
    /// Push streams that failed (reset or bad frame) and were skipped.
    bad_streams: AtomicU64,
}

/// Reads pushes until the connection closes, stamping each with its arrival.
async fn read_pushes(
    conn: Arc<Connection>,
    inbox: mpsc::UnboundedSender<Arrival>,
    counts: Arc<PushCounts>,
) {
    loop {
        let push = match conn.next_push().await {
            Ok(push) => push,
            // One bad push stream (reset, truncated) costs that push only; the
            // envelope stays in the mailbox for Fetch. Keep accepting.
            Err(TransportError::Frame(_)) => {
                counts.bad_streams.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(_) => return,
        };
        let at = Instant::now();
        counts.read.fetch_add(1, Ordering::Relaxed);
        for envelope in push.envelopes {
            let arrival = Arrival {
                envelope,
                at,
                via_fetch: false,
            };
            if inbox.send(arrival).is_err() {
                return;
            }
        }
    }
}

/// What a recipient expects in one round.
struct Expect {
    round: u32,
    pair: u32,
    count: usize,
    epoch: Instant,
}

/// What a recipient got in one round.
struct Got {
    latencies_ms: Vec<f64>,
    last_ack: Instant,
    fetched: usize,
    late_pushes: usize,
}

/// One recipient's round: takes pushes (or fetches after [`FETCH_AFTER`] of
/// silence), acknowledges what arrived in batches, until it has acknowledged
/// `expect.count` envelopes of this round. Returns its inbox for the next round.
async fn collect(
    conn: Arc<Connection>,
    mut inbox: mpsc::UnboundedReceiver<Arrival>,
    expect: Expect,
    progress: Arc<Progress>,
) -> anyhow::Result<(u32, mpsc::UnboundedReceiver<Arrival>, Got)> {
    let mut seen = HashSet::with_capacity(expect.count);
    let mut got = Got {
        latencies_ms: Vec::with_capacity(expect.count),
        last_ack: Instant::now(),
        fetched: 0,
        late_pushes: 0,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while seen.len() < expect.count {
        batch.clear();
        match tokio::time::timeout(FETCH_AFTER, inbox.recv()).await {
            Ok(Some(arrival)) => {
                batch.push(arrival);
                while batch.len() < MAX_BATCH {
                    let Ok(more) = inbox.try_recv() else { break };
                    batch.push(more);
                }
            }
            Ok(None) => bail!("recipient {}: its push readers stopped", expect.pair),
            Err(_) => {
                let fetch = Req::Fetch(relay::Fetch {
                    limit: MAX_BATCH as u32,
                });
                let Resp::Envelopes(found) = answer(&conn, fetch, "Fetch").await? else {
                    bail!("unexpected answer to Fetch");
                };
                let at = Instant::now();
                batch.extend(found.envelopes.into_iter().map(|envelope| Arrival {
                    envelope,
                    at,
                    via_fetch: true,
                }));
            }
        }
        let mut seqs = Vec::with_capacity(batch.len());
        let mut fresh = 0;
        for arrival in batch.drain(..) {
            // Everything that arrived is acknowledged, including late pushes
            // of envelopes from earlier rounds (already fetched and acked).
            seqs.push(arrival.envelope.seq);
            let stamp =
                Stamp::read(&arrival.envelope.envelope).context("an envelope without a stamp")?;
            if stamp.round != expect.round {
                if stamp.round < expect.round && !arrival.via_fetch {
                    got.late_pushes += 1;
                }
                continue;
            }
            if !seen.insert(arrival.envelope.seq) {
                if !arrival.via_fetch {
                    got.late_pushes += 1;
                }
                continue;
            }
            ensure!(
                stamp.pair == expect.pair,
                "recipient {} got an envelope sent to pair {}",
                expect.pair,
                stamp.pair
            );
            let received = since(expect.epoch, arrival.at);
            got.latencies_ms
                .push(received.saturating_sub(stamp.sent_ns) as f64 / 1e6);
            fresh += 1;
            if arrival.via_fetch {
                got.fetched += 1;
                progress.fetched.fetch_add(1, Ordering::Relaxed);
            } else {
                progress.pushed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if seqs.is_empty() {
            continue;
        }
        match answer(&conn, Req::Ack(relay::Ack { seqs }), "Ack").await? {
            Resp::Done(_) => {}
            _ => bail!("unexpected answer to Ack"),
        }
        got.last_ack = Instant::now();
        progress.acked.fetch_add(fresh, Ordering::Relaxed);
    }
    Ok((expect.pair, inbox, got))
}

/// A bare quinn echo server in this process, with the relay's TLS and
/// transport configuration, and [`PAIRS`] client connections to it.
struct Echo {
    server: quinn::Endpoint,
    client: quinn::Endpoint,
    clients: Vec<Arc<Connection>>,
    epoch: Instant,
}

impl Echo {
    async fn start() -> anyhow::Result<Echo> {
        let tls = sotto_relay::tls::self_signed(&["localhost".into()])?;
        let config = sotto_relay::tls::server_config(sotto_relay::tls::CertResolver::new(
            &sotto_relay::tls::Identity::from_der(&tls.cert_der, &tls.key_der),
        )?)?;
        let pin = sotto_relay::tls::spki_sha256(&tls.cert_der)?;
        let server = roomy_endpoint(Some(config))?;
        let addr = format!("127.0.0.1:{}", server.local_addr()?.port());
        tokio::spawn(echo_accept(server.clone()));
        let endpoint = roomy_endpoint(None)?;
        let mut clients = Vec::with_capacity(PAIRS);
        for _ in 0..PAIRS {
            clients.push(Arc::new(
                Connection::connect_via(&endpoint, &addr, pin).await?,
            ));
        }
        Ok(Echo {
            server,
            client: endpoint,
            clients,
            epoch: Instant::now(),
        })
    }

    /// One round of `load` echo requests (1 KiB each way).
    async fn round(&self, load: Load) -> anyhow::Result<Round> {
        let progress = Arc::new(Progress::default());
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(load.per_pair() * PAIRS)));
        let clients = self.clients.clone();
        let fillers: Vec<Arc<[u8]>> = (0..PAIRS).map(|_| filler()).collect();
        let (epoch, counters, samples) =
            (self.epoch, Arc::clone(&progress), Arc::clone(&latencies));
        let start = Instant::now();
        let mut workers = JoinSet::new();
        drive(load, &mut workers, move |pair, index, scheduled| {
            let conn = Arc::clone(&clients[pair]);
            let envelope = Stamp {
                round: 0,
                pair: pair as u32,
                index,
                sent_ns: since(epoch, scheduled),
            }
            .envelope(&fillers[pair]);
            let (progress, samples) = (Arc::clone(&counters), Arc::clone(&samples));
            async move {
                progress.started.fetch_add(1, Ordering::Relaxed);
                let echo = Req::Send(relay::Send {
                    recipient: Vec::new(),
                    device_id: 1,
                    registration_id: 0,
                    envelope,
                });
                let Resp::Envelopes(back) = answer(&conn, echo, "echo").await? else {
                    bail!("unexpected answer from the echo server");
                };
                let took = ms(scheduled.elapsed());
                ensure!(
                    back.envelopes.first().map(|e| e.envelope.len()) == Some(ENVELOPE_BYTES),
                    "the echo server did not send the payload back"
                );
                progress.answered.fetch_add(1, Ordering::Relaxed);
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(took);
                Ok(())
            }
        });
        let mut none: JoinSet<anyhow::Result<()>> = JoinSet::new();
        let expected = load.per_pair() * PAIRS;
        supervise(
            &mut workers,
            &mut none,
            &progress,
            expected,
            &AtomicU64::new(0),
        )
        .await?;
        let elapsed = start.elapsed();
        let latencies_ms =
            std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(Round {
            elapsed,
            latencies_ms,
            fetched: 0,
            late_pushes: 0,
        })
    }

    /// Closes the client and server endpoints (every connection at once).
    async fn close(self) {
        self.client.close(0u32.into(), b"done");
        self.server.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.server.wait_idle()).await;
    }
}

/// Accepts echo connections until the endpoint closes.
async fn echo_accept(server: quinn::Endpoint) {
    while let Some(incoming) = server.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(echo_stream(send, recv));
            }
        });
    }
}

/// Reads one framed request and answers with its envelope in one framed
/// response: the relay's framing and protobuf work, without its store.
async fn echo_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let Ok(request) =
        frame::read::<Request, _>(&mut recv, sotto_wire::DEFAULT_MAX_FRAME_BYTES).await
    else {
        return;
    };
    let envelope = match request.kind {
        Some(Req::Send(s)) => s.envelope,
        _ => Vec::new(),
    };
    let response = Response {
        version: sotto_wire::PROTOCOL_VERSION,
        kind: Some(Resp::Envelopes(relay::Envelopes {
            envelopes: vec![Envelope {
                seq: 0,
                received_at_ms: 0,
                envelope,
            }],
            more: false,
        })),
    };
    if frame::write(&mut send, &response).await.is_ok() {
        let _ = send.finish();
    }
}

/// Raw sled ceiling with the relay's group-commit pattern: `total` 1 KiB
/// inserts by [`PAIRS`]×[`WINDOW`] concurrent writers, each waiting until
/// one flusher thread has flushed after its insert. Returns inserts/s.
async fn sled_group_commit(total: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path())?;
    let (queue, waiting) = std::sync::mpsc::channel::<oneshot::Sender<Result<(), String>>>();
    let flusher = {
        let db = db.clone();
        // Only this thread flushes, with the blocking `flush`: concurrent
        // `flush_async` deadlocks in sled 0.34 (spacejam/sled#1308).
        std::thread::spawn(move || {
            while let Ok(first) = waiting.recv() {
                let mut batch = vec![first];
                batch.extend(waiting.try_iter());
                let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                for waiter in batch {
                    let _ = waiter.send(result.clone());
                }
            }
        })
    };
    let value: sled::IVec = filler().as_ref().into();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut writers = JoinSet::new();
    for _ in 0..PAIRS * WINDOW {
        let (db, value, next, queue) =
            (db.clone(), value.clone(), Arc::clone(&next), queue.clone());
        writers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                db.insert((i as u64).to_be_bytes(), value.clone())?;
                let (tx, rx) = oneshot::channel();
                queue
                    .send(tx)
                    .map_err(|_| anyhow::anyhow!("the flusher stopped"))?;
                tokio::time::timeout(STALL, rx)
                    .await
                    .context("sled flush stalled")??
                    .map_err(anyhow::Error::msg)?;
            }
        });
    }
    drop(queue);
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let elapsed = start.elapsed();
    tokio::task::spawn_blocking(move || {
        let _ = flusher.join();
        drop(db);
    })
    .await?;
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// Raw sled with no batching: one writer, one flush per 1 KiB insert.
/// Returns inserts/s.
async fn sled_flush_per_insert(count: usize) -> anyhow::Result<f64> {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir()?;
        let db = sled::open(dir.path())?;
        let value: sled::IVec = filler().as_ref().into();
        let start = Instant::now();
        for i in 0..count {
            db.insert((i as u64).to_be_bytes(), value.clone())?;
            db.flush()?;
        }
        Ok(count as f64 / start.elapsed().as_secs_f64())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_in_a_full_size_envelope() {
        let stamp = Stamp {
            round: 7,
            pair: 99,
            index: 12_345,
            sent_ns: 987_654_321,
        };
        let envelope = stamp.envelope(&filler());
        assert_eq!(envelope.len(), ENVELOPE_BYTES);
        assert_eq!(Stamp::read(&envelope), Some(stamp));
        assert_eq!(Stamp::read(&envelope[..Stamp::LEN - 1]), None);
    }
}
