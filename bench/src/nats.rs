//! `--baseline nats`: the throughput scenario's relay workload through a local
//! NATS JetStream server, measured in the same invocation, so that Sotto's
//! relay throughput stands beside a mature broker on the same machine.
//!
//! The workload mirrors `throughput.rs` (whose constants are repeated here):
//! [`PAIRS`] publisher/recipient pairs on their own connections, 1 KiB
//! messages, [`WINDOW`] publishes per publisher awaiting their JetStream
//! `PubAck` (the message is in the file store), [`MESSAGES_PER_PAIR`] per pair
//! and round. One stream with file storage and work-queue retention (an
//! acknowledged message is removed, like a relay mailbox) takes `inbox.>`;
//! each recipient has a durable push consumer filtered on its `inbox.<i>`
//! with explicit acks. A recipient acks every message, and the last one of
//! its round with a double ack (`AckSync`), so the round ends only when the
//! server has processed every ack. Rate = messages / first publish to the
//! last confirmed ack.
//!
//! The bench starts its own `nats-server` (Debian's package, or the binary in
//! [`SERVER_ENV`]) on a free 127.0.0.1 port with a fresh store directory, and
//! kills it afterwards: once with JetStream's default durability (fsync in the
//! background, every `sync_interval`, 2 minutes by default) and, where the
//! server supports it (2.10 and later), once with `sync_interval: always`,
//! an fsync before every `PubAck` like Sotto's flush before `Sent`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, push},
    stream,
};
use futures_util::StreamExt;
use rand::RngCore;
use tokio::task::JoinSet;

use crate::common::{Figure, cpu_seconds, median};

/// Publisher/recipient pairs (as in `throughput.rs`).
const PAIRS: usize = 100;
/// Bytes per message (as in `throughput.rs`).
const ENVELOPE_BYTES: usize = 1024;
/// Publishes in flight per publisher (as in `throughput.rs`).
const WINDOW: usize = 8;
/// Messages per pair in one round (as in `throughput.rs`).
const MESSAGES_PER_PAIR: usize = 100;
/// How long a recipient may wait for its next message before the round fails.
const STALL: Duration = Duration::from_secs(20);
/// How long the server may take to accept JetStream requests.
const STARTUP: Duration = Duration::from_secs(10);
/// The stream every message goes through.
const STREAM: &str = "SOTTO_BENCH";
/// Names a `nats-server` binary to use instead of the one on PATH (e.g. a
/// newer one than Debian's, for `sync_interval: always`).
pub(crate) const SERVER_ENV: &str = "SOTTO_BENCH_NATS_SERVER";
/// The target: relay throughput at least this fraction of JetStream's.
const TARGET_RATIO: f64 = 0.5;

/// The `nats-server` binary: [`SERVER_ENV`], else the first on PATH (or in
/// /usr/sbin, where Debian puts it). Fails with how to install it.
pub(crate) fn find_server() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(SERVER_ENV) {
        let path = PathBuf::from(path);
        ensure!(
            path.is_file(),
            "{SERVER_ENV}={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            anyhow!(
                "--baseline nats needs the NATS server, and `nats-server` is not on PATH: install it with \
                 `apt-get install nats-server` (Debian's package), or name a binary in {SERVER_ENV}"
            )
        })
}

/// When JetStream fsyncs its file store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fsync {
    /// The server's default: in the background, every `sync_interval`.
    Background,
    /// `sync_interval: always`: before every `PubAck`.
    Always,
}

impl Fsync {
    fn label(self) -> &'static str {
        match self {
            Fsync::Background => "default background fsync",
            Fsync::Always => "sync_interval: always",
        }
    }
}

/// Measures JetStream on the relay workload, `runs` rounds after a warm-up,
/// in each sync mode the server supports, and returns figures that set the
/// relay's throughput runs (from `sotto`, the throughput scenario's figures)
/// against them.
pub(crate) async fn run(
    runs: usize,
    server: &Path,
    sotto: &[Figure],
) -> anyhow::Result<Vec<Figure>> {
    let relay = sotto
        .iter()
        .find(|f| f.figure.starts_with("relay messages/s (") && f.figure.contains("durable"))
        .context("the throughput scenario reported no relay messages/s figure")?
        .runs
        .clone();
    let mut figures = Vec::new();
    let always = match supports_always(server) {
        Ok(()) => None,
        Err(why) => {
            eprintln!("   nats: skipping sync_interval: always: {why}");
            Some(why)
        }
    };
    for sync in [Fsync::Background, Fsync::Always] {
        if sync == Fsync::Always && always.is_some() {
            continue;
        }
        let measured = measure(server, sync, runs)
            .await
            .with_context(|| format!("NATS JetStream baseline ({})", sync.label()))?;
        figures.push(figure(&relay, &measured, sync, always.as_deref()));
    }
    Ok(figures)
}

/// What the runs in one sync mode measured.
struct Measured {
    version: String,
    rates: Vec<f64>,
    cores: Vec<f64>,
    left: u64,
}

/// Starts a server in `sync` mode, runs a warm-up and `runs` measured rounds.
async fn measure(binary: &Path, sync: Fsync, runs: usize) -> anyhow::Result<Measured> {
    let server = Server::start(binary, sync).await?;
    let mut world = World::start(&server.url).await?;
    let mut measured = Measured {
        version: server.version.clone(),
        rates: Vec::new(),
        cores: Vec::new(),
        left: 0,
    };
    let total = PAIRS * MESSAGES_PER_PAIR;
    for round in 0..=runs {
        let cpu_before = cpu_seconds(&server.child.id().to_string());
        let elapsed = world
            .round(round as u32)
            .await
            .with_context(|| format!("round {round}; {}", server.log_tail()))?;
        let cpu = cpu_seconds(&server.child.id().to_string())
            .zip(cpu_before)
            .map(|(after, before)| (after - before) / elapsed.as_secs_f64());
        let rate = total as f64 / elapsed.as_secs_f64();
        eprintln!(
            "   nats ({}) round {round}{}: {rate:.0} msg/s, nats-server used {} cores",
            sync.label(),
            if round == 0 { " (warm-up)" } else { "" },
            cpu.map_or("?".into(), |c| format!("{c:.2}")),
        );
        if round == 0 {
            continue;
        }
        measured.rates.push(rate);
        measured.cores.extend(cpu);
    }
    measured.left = world.left().await?;
    world.close().await;
    drop(server);
    Ok(measured)
}

/// The relay's throughput runs with this mode's JetStream runs as the ceiling.
fn figure(relay: &[f64], nats: &Measured, sync: Fsync, always_skipped: Option<&str>) -> Figure {
    let ratio = median(relay) / median(&nats.rates).max(f64::MIN_POSITIVE);
    let verdict = if ratio >= TARGET_RATIO {
        "met"
    } else {
        "not met"
    };
    let durability = match sync {
        Fsync::Background => format!(
            "JetStream answers PubAck once the message is written to its file store but fsyncs only in the background \
             (sync_interval, every 2 min by default), while Sotto fsyncs (sled flush) before every Sent and Ack, so \
             this ceiling is not like-for-like on durability{}",
            match always_skipped {
                Some(why) => format!("; the like-for-like run with sync_interval: always was skipped: {why}"),
                None => "; the sync_interval: always figure is the like-for-like one".into(),
            }
        ),
        Fsync::Always => "sync_interval: always: JetStream fsyncs before every PubAck, like Sotto's flush before \
                         Sent: the like-for-like durability comparison"
            .into(),
    };
    let note = format!(
        "issue target: relay msg/s ≥ {:.0}% of NATS JetStream's in the same invocation; ratio {ratio:.2}, {verdict}. \
         Relay runs are the throughput figure's. JetStream: nats-server {} started by the bench on 127.0.0.1 (fresh \
         store dir), one file-storage work-queue stream on inbox.>, {PAIRS} publisher connections × {WINDOW} \
         publishes in flight awaiting PubAck, 1 KiB, {MESSAGES_PER_PAIR} per pair per round; {PAIRS} recipient \
         connections, each with a durable push consumer on inbox.<i>, explicit ack per message, the last one a \
         double ack (the round ends when the server confirmed it); rate = messages / first publish to last \
         confirmed ack; one warm-up round. nats-server used {} cores (median), client and server share this \
         machine; {} messages were left in the stream after the runs. {durability}.",
        TARGET_RATIO * 100.0,
        nats.version,
        if nats.cores.is_empty() {
            "?".into()
        } else {
            format!("{:.2}", median(&nats.cores))
        },
        nats.left,
    );
    Figure::new(
        "throughput",
        &format!(
            "relay messages/s (same runs) against NATS JetStream, {}",
            sync.label()
        ),
        "msg/s",
        relay.to_vec(),
        &note,
    )
    .with_ceiling(
        &format!(
            "NATS JetStream {} msg/s (file store, {}, {PAIRS} pairs × {WINDOW} in flight, 1 KiB)",
            nats.version,
            sync.label()
        ),
        nats.rates.clone(),
    )
}

/// The server's configuration: a 127.0.0.1 port, JetStream with its store in
/// `store`, and the fsync policy.
fn config(port: u16, store: &Path, sync: Fsync) -> anyhow::Result<String> {
    let store = serde_json::to_string(
        store
            .to_str()
            .context("the temporary directory's path is not UTF-8")?,
    )?;
    let sync = match sync {
        Fsync::Background => "",
        Fsync::Always => "\n  sync_interval: always",
    };
    Ok(format!(
        "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {store}{sync}\n}}\n"
    ))
}

/// Whether the server accepts `sync_interval: always` (`nats-server -t`).
fn supports_always(binary: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let conf = dir.path().join("check.conf");
    let text = config(0, &dir.path().join("store"), Fsync::Always).map_err(|e| e.to_string())?;
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let out = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .arg("-t")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run {}: {e}", binary.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said.trim();
    Err(format!(
        "{} does not accept it ({}; it came with nats-server 2.10, Debian has 2.9; set {SERVER_ENV} to a newer binary)",
        binary.display(),
        if said.is_empty() { "no message" } else { said }
    ))
}

/// A `nats-server` child process with its own config and store in a temp
/// directory; killed when dropped.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    version: String,
}

impl Server {
    async fn start(binary: &Path, sync: Fsync) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, config(port, &dir.path().join("store"), sync)?)?;
        let log = std::fs::File::create(dir.path().join("nats.log"))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let mut server = Server {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
            version: String::new(),
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "nats-server exited at startup ({status}); {}",
                    server.log_tail()
                );
            }
            let last = match async_nats::connect(&server.url).await {
                Ok(client) => {
                    // The raw account-info request: async-nats's typed one
                    // expects fields that 2.9 does not send.
                    let info = client.request("$JS.API.INFO", "".into()).await;
                    server.version = client.server_info().version;
                    match info {
                        Ok(answer) if !answer.payload.windows(7).any(|w| w == b"\"error\"") => {
                            return Ok(server);
                        }
                        Ok(answer) => format!(
                            "JetStream account info: {}",
                            String::from_utf8_lossy(&answer.payload)
                        ),
                        Err(e) => format!("JetStream account info: {e}"),
                    }
                }
                Err(e) => format!("connect: {e}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "nats-server did not answer JetStream requests within {STARTUP:?} ({last}); {}",
                    server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of the server's log, for errors.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n");
        format!("nats-server log ends:\n{tail}")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stream, the recipients' consumers and everyone's connections.
struct World {
    admin: jetstream::Context,
    publishers: Vec<jetstream::Context>,
    /// Each recipient's consumer subscription (taken during a round).
    inboxes: Vec<Option<push::Messages>>,
    clients: Vec<async_nats::Client>,
}

impl World {
    async fn start(url: &str) -> anyhow::Result<World> {
        let connect = || async {
            async_nats::ConnectOptions::new()
                .max_reconnects(1)
                .connect(url)
                .await
                .context("connecting to nats-server")
        };
        let admin_client = connect().await?;
        let admin = jetstream::new(admin_client.clone());
        admin
            .create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["inbox.>".into()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::WorkQueue,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("creating the stream: {e}"))?;
        let mut clients = vec![admin_client];
        let mut inboxes = Vec::with_capacity(PAIRS);
        for pair in 0..PAIRS {
            let client = connect().await?;
            let consumer = jetstream::new(client.clone())
                .create_consumer_on_stream(
                    push::Config {
                        durable_name: Some(format!("recipient{pair}")),
                        deliver_subject: format!("deliver.{pair}"),
                        filter_subject: format!("inbox.{pair}"),
                        ack_policy: AckPolicy::Explicit,
                        ..Default::default()
                    },
                    STREAM,
                )
                .await
                .map_err(|e| anyhow!("creating recipient {pair}'s consumer: {e}"))?;
            let messages = consumer
                .messages()
                .await
                .map_err(|e| anyhow!("subscribing recipient {pair}: {e}"))?;
            inboxes.push(Some(messages));
            clients.push(client);
        }
        let mut publishers = Vec::with_capacity(PAIRS);
        for _ in 0..PAIRS {
            let client = connect().await?;
            publishers.push(jetstream::new(client.clone()));
            clients.push(client);
        }
        Ok(World {
            admin,
            publishers,
            inboxes,
            clients,
        })
    }

    /// One closed-loop round; returns first publish to last confirmed ack.
    async fn round(&mut self, round: u32) -> anyhow::Result<Duration> {
        let progress = Arc::new(Progress::default());
        let mut recipients = JoinSet::new();
        for (pair, slot) in self.inboxes.iter_mut().enumerate() {
            let messages = slot
                .take()
                .context("a recipient's subscription was lost in an earlier round")?;
            recipients.spawn(collect(pair, round, messages, Arc::clone(&progress)));
        }
        let start = Instant::now();
        let mut publishers = JoinSet::new();
        for (pair, js) in self.publishers.iter().enumerate() {
            publishers.spawn(publish(
                pair,
                round,
                js.clone(),
                filler(),
                Arc::clone(&progress),
            ));
        }
        while let Some(done) = publishers.join_next().await {
            done??;
        }
        while let Some(done) = recipients.join_next().await {
            let (pair, messages) = done??;
            self.inboxes[pair] = Some(messages);
        }
        Ok(start.elapsed())
    }

    /// Messages still in the stream (0 when every ack removed its message).
    async fn left(&self) -> anyhow::Result<u64> {
        let info = self
            .admin
            .get_stream(STREAM)
            .await
            .map_err(|e| anyhow!("looking up the stream: {e}"))?
            .get_info()
            .await
            .map_err(|e| anyhow!("asking for the stream's state: {e}"))?;
        Ok(info.state.messages)
    }

    /// Drains every connection (before the server is killed, so that no
    /// client keeps trying to reconnect).
    async fn close(self) {
        let World {
            admin,
            publishers,
            inboxes,
            clients,
        } = self;
        drop((admin, publishers, inboxes));
        for client in clients {
            let _ = client.drain().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts for a stalled round's error.
#[derive(Default)]
struct Progress {
    published: AtomicU64,
    stored: AtomicU64,
    received: AtomicU64,
}

impl Progress {
    fn describe(&self) -> String {
        format!(
            "of {} messages: {} published, {} stored (PubAck), {} received",
            PAIRS * MESSAGES_PER_PAIR,
            self.published.load(Ordering::Relaxed),
            self.stored.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed)
        )
    }
}

/// One publisher's round: [`MESSAGES_PER_PAIR`] messages to `inbox.<pair>`,
/// at most [`WINDOW`] awaiting their PubAck.
async fn publish(
    pair: usize,
    round: u32,
    js: jetstream::Context,
    filler: Vec<u8>,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let subject = format!("inbox.{pair}");
    let mut pending = VecDeque::with_capacity(WINDOW);
    let stored = |ack: jetstream::context::PublishAckFuture| {
        let progress = Arc::clone(&progress);
        async move {
            let ack = ack.await.map_err(|e| {
                anyhow!("publisher {pair}: no PubAck ({e}); {}", progress.describe())
            })?;
            ensure!(ack.stream == STREAM, "PubAck from stream {}", ack.stream);
            progress.stored.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok(())
        }
    };
    for index in 0..MESSAGES_PER_PAIR {
        let oldest = if pending.len() >= WINDOW {
            pending.pop_front()
        } else {
            None
        };
        if let Some(ack) = oldest {
            stored(ack).await?;
        }
        let payload = stamp(&filler, round, pair as u32, index as u64);
        let ack = js
            .publish(subject.clone(), payload.into())
            .await
            .map_err(|e| anyhow!("publisher {pair}: publish failed: {e}"))?;
        progress.published.fetch_add(1, Ordering::Relaxed);
        pending.push_back(ack);
    }
    while let Some(ack) = pending.pop_front() {
        stored(ack).await?;
    }
    Ok(())
}

/// One recipient's round: takes [`MESSAGES_PER_PAIR`] messages of this round
/// from its push consumer, acks each, the last with a double ack. Returns the
/// subscription for the next round.
async fn collect(
    pair: usize,
    round: u32,
    mut messages: push::Messages,
    progress: Arc<Progress>,
) -> anyhow::Result<(usize, push::Messages)> {
    let mut got = 0;
    while got < MESSAGES_PER_PAIR {
        let message = tokio::time::timeout(STALL, messages.next())
            .await
            .map_err(|_| {
                anyhow!(
                    "recipient {pair}: nothing for {STALL:?} after {got} of {MESSAGES_PER_PAIR}; {}",
                    progress.describe()
                )
            })?
            .with_context(|| format!("recipient {pair}: the subscription ended"))?
            .map_err(|e| anyhow!("recipient {pair}: {e}"))?;
        let (stamped_round, stamped_pair) = read_stamp(&message.payload)
            .with_context(|| format!("recipient {pair}: a message without a stamp"))?;
        ensure!(
            message.payload.len() == ENVELOPE_BYTES,
            "recipient {pair}: a message of {} bytes",
            message.payload.len()
        );
        ensure!(
            stamped_pair == pair as u32,
            "recipient {pair} got a message sent to pair {stamped_pair}"
        );
        if stamped_round != round {
            // A redelivery from an earlier round: ack it, do not count it.
            message
                .ack()
                .await
                .map_err(|e| anyhow!("recipient {pair}: ack failed: {e}"))?;
            continue;
        }
        got += 1;
        progress.received.fetch_add(1, Ordering::Relaxed);
        let acked = if got == MESSAGES_PER_PAIR {
            message.double_ack().await
        } else {
            message.ack().await
        };
        acked.map_err(|e| anyhow!("recipient {pair}: ack failed: {e}"))?;
    }
    Ok((pair, messages))
}

/// Random filler for one publisher's messages.
fn filler() -> Vec<u8> {
    let mut bytes = vec![0u8; ENVELOPE_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A 1 KiB message: round, pair and index, then the publisher's filler.
fn stamp(filler: &[u8], round: u32, pair: u32, index: u64) -> Vec<u8> {
    let mut out = filler.to_vec();
    out[0..4].copy_from_slice(&round.to_be_bytes());
    out[4..8].copy_from_slice(&pair.to_be_bytes());
    out[8..16].copy_from_slice(&index.to_be_bytes());
    out
}

/// The round and pair of a stamped message.
fn read_stamp(payload: &[u8]) -> Option<(u32, u32)> {
    Some((
        u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?),
        u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One measured round per sync mode the installed server supports
    /// (`cargo test --release -p sotto-bench -- --ignored nats`).
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs nats-server; a few seconds of load"]
    async fn measures_jetstream_when_installed() -> anyhow::Result<()> {
        let server = find_server()?;
        let always = supports_always(&server).is_ok();
        for sync in [Fsync::Background, Fsync::Always] {
            if sync == Fsync::Always && !always {
                continue;
            }
            let measured = measure(&server, sync, 1).await?;
            assert_eq!(measured.rates.len(), 1);
            assert!(measured.rates[0] > 0.0);
            assert_eq!(measured.left, 0);
        }
        Ok(())
    }

    #[test]
    fn stamps_round_trip() {
        let message = stamp(&filler(), 3, 42, 7);
        assert_eq!(message.len(), ENVELOPE_BYTES);
        assert_eq!(read_stamp(&message), Some((3, 42)));
        assert_eq!(read_stamp(&message[..7]), None);
    }

    #[test]
    fn config_enables_jetstream_on_loopback() -> anyhow::Result<()> {
        let text = config(4222, Path::new("/tmp/x y"), Fsync::Always)?;
        assert!(text.contains("listen: \"127.0.0.1:4222\""));
        assert!(text.contains("store_dir: \"/tmp/x y\""));
        assert!(text.contains("sync_interval: always"));
        assert!(!config(4222, Path::new("/tmp"), Fsync::Background)?.contains("sync_interval"));
        Ok(())
    }
}
