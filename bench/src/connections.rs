//! Connection scale and the relay's idle memory.
//!
//! **Relay idle**: the relay's resident set right after start, and again after
//! an hour's worth of a busy branch's traffic ("churn": many short sessions
//! that connect, authenticate, send a few 1 KiB envelopes, fetch and
//! acknowledge what waits for them, and disconnect), once it has settled.
//!
//! **Connection scale**: 1,000 and then 5,000 idle, authenticated clients held
//! open at once (one shared client endpoint, a bounded number of handshakes in
//! flight). Figures: handshakes per second while opening them, the relay's
//! resident set with all of them open, and the memory each one costs,
//! `(RSS with N − idle RSS) / N`, plus the cost of each connection added
//! between the tiers (free of fixed costs such as sled's cache of the account
//! records that authentication reads) and the server's CPU time per client.
//! Accounts are registered once; each run restarts the relay on the same data.
//!
//! **Ceiling**: the same counts against a bare quinn server with the relay's
//! TLS and transport configuration that accepts connections and holds them,
//! answering nothing. It runs in a child process (this binary re-executed
//! with [`BARE_SERVER_ARG`], see [`bare_server_main`]) so its resident set is
//! measured apart from the benchmark's own.
//!
//! Resident sets are read from `/proc/<pid>/status` (VmRSS).

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use libsignal_protocol::{IdentityKeyPair, KeyPair, kem};
use rand::RngCore;
use sotto_client::transport::Connection;
use sotto_wire::auth::{Purpose, transcript};
use sotto_wire::relay::{self, SignedPreKey, request::Kind as Req, response::Kind as Resp};
use uuid::Uuid;

use crate::common::{Bench, Figure, MAX_CONNECTIONS, challenge, rss_kib};

/// The hidden first argument that turns this binary into the bare quinn
/// server of the ceiling (checked in `main` before clap parses anything).
pub(crate) const BARE_SERVER_ARG: &str = "--bare-quinn-server";

/// Connection counts measured, cumulatively: the second tier adds clients to
/// the first, all held open together.
const SCALE: [usize; 2] = [1_000, 5_000];
/// Handshakes in flight at once. All clients share one UDP socket with the
/// default 208 KiB receive buffer, which overflows above about 8 handshakes
/// in flight on this machine (measured against the bare server: about 1,700
/// handshakes/s at 8, 900–1,100 at 16, 700–1,000 at 32, with thousands of
/// `RcvbufErrors`); a lost handshake packet waits for a retransmission timeout,
/// so more in flight is slower, not faster.
const IN_FLIGHT: usize = 8;
// `Bench::start` raises the relay's connection cap (default 1,000) to this.
const _: () = assert!(SCALE[SCALE.len() - 1] <= MAX_CONNECTIONS);
/// Linux reports process CPU time in ticks of `USER_HZ`, 100 on every
/// mainstream architecture.
const USER_HZ: f64 = 100.0;
/// Attempts per connection before the scenario gives up.
const CONNECT_ATTEMPTS: usize = 3;
/// Accounts in the churn hour: a busy branch's active members.
const CHURN_ACCOUNTS: usize = 200;
/// Short sessions in the churn hour besides the registrations: each member
/// opens the app (or its phone reconnects) ten times.
const CHURN_SESSIONS: usize = 2_000;
/// Envelopes sent per churn session.
const CHURN_SENDS: usize = 3;
/// Size of one envelope.
const ENVELOPE_BYTES: usize = 1024;
/// How long to let a process settle before reading its resident set.
const SETTLE: Duration = Duration::from_secs(1);
/// How long to let the relay settle after churn (connections close, tasks end).
const CHURN_SETTLE: Duration = Duration::from_secs(3);

/// Runs the scenario `runs` times and returns its figures (see the module docs).
pub(crate) async fn run(runs: usize) -> anyhow::Result<Vec<Figure>> {
    // Failed connection attempts that were retried, across the scenario.
    let retries = Arc::new(AtomicUsize::new(0));
    let mut idle = Samples::default();
    let mut churned = Samples::default();
    let mut churn_rate = Samples::default();
    for run in 1..=runs {
        eprintln!("   run {run}/{runs}: relay idle and churn");
        let (i, c, r) = idle_and_churn(&retries).await?;
        idle.push(i);
        churned.push(c);
        churn_rate.push(r);
    }

    eprintln!(
        "   registering {} accounts for connection scale",
        SCALE[SCALE.len() - 1]
    );
    let mut scale = ScaleBench::start(&retries).await?;
    let mut relay = Vec::new();
    let mut bare = Vec::new();
    for run in 1..=runs {
        eprintln!("   run {run}/{runs}: relay at scale");
        relay.push(scale.measure().await?);
        eprintln!("   run {run}/{runs}: bare quinn at scale");
        bare.push(bare_tiers(&scale.bench, &retries).await?);
    }
    let retries = retries.load(Ordering::Relaxed);
    if retries > 0 {
        eprintln!("   note: {retries} connection attempts failed and were retried");
    }

    let mut figures = vec![
        Figure::new(
            "connections",
            "relay RSS idle, 1 s after start",
            "MiB",
            idle.0,
            "fresh data dir, no client; target < 20 MiB. Ceiling: a bare quinn server with the \
             relay's TLS and transport config, idle",
        )
        .with_ceiling("bare quinn server idle", column(&bare, 0, |t| t.idle_mib)),
        Figure::new(
            "connections",
            &format!(
                "relay RSS after 1 h-equivalent churn ({} sessions, {} msgs)",
                CHURN_ACCOUNTS + CHURN_SESSIONS,
                CHURN_SESSIONS * CHURN_SENDS
            ),
            "MiB",
            churned.0,
            &format!(
                "a busy branch's hour: {CHURN_ACCOUNTS} members register, then {CHURN_SESSIONS} sessions \
                 (connect, authenticate, {CHURN_SENDS} × 1 KiB to the next member, fetch + ack own mailbox, \
                 disconnect), {IN_FLIGHT} at a time; read {} s after the last session. Target < 20 MiB",
                CHURN_SETTLE.as_secs()
            ),
        ),
        Figure::new(
            "connections",
            &format!("churn sessions/s ({IN_FLIGHT} in flight)"),
            "sess/s",
            churn_rate.0,
            "the churn hour replayed as fast as it goes: (registrations + sessions) / wall time; \
             each Send and Ack waits for the relay's fsync",
        ),
    ];
    for (t, &n) in SCALE.iter().enumerate() {
        let drops = column(&relay, t, |t| t.drops as f64);
        figures.push(
            Figure::new(
                "connections",
                &format!("handshakes/s opening {n} clients ({IN_FLIGHT} in flight, +challenge+auth)"),
                "conn/s",
                column(&relay, t, |t| t.per_second),
                &format!(
                    "per client: QUIC + TLS 1.3 handshake, then Challenge and Authenticate (signature \
                     check, account lookup); ceiling: handshake only. Client and server share 2 cores; \
                     {:.0} UDP receive-buffer drops while opening (median)",
                    crate::common::median(&drops)
                ),
            )
            .with_ceiling("bare quinn handshakes/s", column(&bare, t, |t| t.per_second)),
        );
        figures.push(
            Figure::new(
                "connections",
                &format!("server CPU per client opened, {n} clients"),
                "ms",
                column(&relay, t, |t| t.cpu_ms_per_conn),
                "relay process CPU (all threads, /proc/<pid>/stat) while opening / clients; \
                 ceiling: the bare server's, handshake only",
            )
            .with_ceiling(
                "bare quinn CPU per handshake",
                column(&bare, t, |t| t.cpu_ms_per_conn),
            ),
        );
        figures.push(
            Figure::new(
                "connections",
                &format!("relay RSS with {n} idle authenticated clients"),
                "MiB",
                column(&relay, t, |t| t.rss_mib),
                "all clients held open, read 1 s after the last opened; target: 5,000 < 250 MiB",
            )
            .with_ceiling("bare quinn server RSS", column(&bare, t, |t| t.rss_mib)),
        );
        figures.push(
            Figure::new(
                "connections",
                &format!("relay memory per idle connection, {n} clients"),
                "KiB",
                column(&relay, t, |t| t.per_conn_kib),
                "(RSS with N − idle RSS) / N; target < 40 KiB. Includes a fixed ~10 MiB: sled's cache \
                 of the account records Authenticate reads (~1.8 KB each, mostly the Kyber key; \
                 random ids spread 1,000 of 5,000 over nearly every page)",
            )
            .with_ceiling("bare quinn per connection", column(&bare, t, |t| t.per_conn_kib)),
        );
    }
    let (low, high) = (SCALE[0], SCALE[SCALE.len() - 1]);
    let marginal = |tiers: &[Vec<Tier>]| -> Vec<f64> {
        tiers
            .iter()
            .filter_map(|r| Some((r.first()?, r.last()?)))
            .map(|(a, b)| (b.rss_mib - a.rss_mib) * 1024.0 / (high - low) as f64)
            .collect()
    };
    figures.push(
        Figure::new(
            "connections",
            &format!("relay memory per added idle connection, {low} → {high}"),
            "KiB",
            marginal(&relay),
            "(RSS with 5,000 − RSS with 1,000) / 4,000: the per-connection cost without fixed \
             costs. Nearly all of it is quinn's own per-connection state (see the ceiling); \
             quinn's default transport config costs ~6 KiB more (100 bidi + 100 uni stream slots)",
        )
        .with_ceiling("bare quinn per added connection", marginal(&bare)),
    );
    Ok(figures)
}

/// One value per run.
#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }
}

/// One tier of connection scale in one run.
#[derive(Debug, Clone, Copy)]
struct Tier {
    /// Resident set before any client connected, MiB.
    idle_mib: f64,
    /// Clients opened per second of opening time, over all N.
    per_second: f64,
    /// Server CPU time (all threads) per client opened, ms, over all N.
    cpu_ms_per_conn: f64,
    /// UDP datagrams the kernel dropped for a full receive buffer while
    /// opening, over all N (system-wide `RcvbufErrors`).
    drops: u64,
    /// Resident set with all N open, MiB.
    rss_mib: f64,
    /// `(rss − idle) / N`, KiB.
    per_conn_kib: f64,
}

/// Field `f` of tier `t` in every run.
fn column(runs: &[Vec<Tier>], t: usize, f: fn(&Tier) -> f64) -> Vec<f64> {
    runs.iter().filter_map(|r| r.get(t)).map(f).collect()
}

/// KiB to MiB.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A fresh relay: its idle RSS, then its RSS after the churn hour and the
/// churn's session rate.
async fn idle_and_churn(retries: &Arc<AtomicUsize>) -> anyhow::Result<(f64, f64, f64)> {
    let bench = Bench::start(CHURN_ACCOUNTS as u32)?;
    tokio::time::sleep(SETTLE).await;
    let idle = relay_rss(&bench)?;
    let kit = Kit::new(&bench, retries);
    let start = Instant::now();
    let members: Vec<Member> = {
        let kit = kit.clone();
        parallel(CHURN_ACCOUNTS, move |_| {
            let kit = kit.clone();
            async move { Ok(register(&kit).await?.0) }
        })
        .await?
    };
    let members = Arc::new(members);
    let mut payload = vec![0u8; ENVELOPE_BYTES];
    rand::rng().fill_bytes(&mut payload);
    let payload: Arc<[u8]> = payload.into();
    let dialer = kit.dialer.clone();
    parallel(CHURN_SESSIONS, move |i| {
        let (dialer, members, payload) = (dialer.clone(), members.clone(), payload.clone());
        async move {
            let me = members[i % members.len()];
            let peer = members[(i + 1) % members.len()];
            let conn = authenticate(&dialer, &me).await?;
            for _ in 0..CHURN_SENDS {
                let answer = conn
                    .request(Req::Send(relay::Send {
                        recipient: peer.id.as_bytes().to_vec(),
                        device_id: 1,
                        registration_id: 0,
                        envelope: payload.to_vec(),
                    }))
                    .await?;
                anyhow::ensure!(matches!(answer, Resp::Sent(_)), "unexpected answer to send");
            }
            drain(&conn).await
            // Dropping the connection closes it (code 0), like an app going away.
        }
    })
    .await?;
    let rate = (CHURN_ACCOUNTS + CHURN_SESSIONS) as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(CHURN_SETTLE).await;
    Ok((idle, relay_rss(&bench)?, rate))
}

/// Fetches and acknowledges everything waiting in this connection's mailbox.
async fn drain(conn: &Connection) -> anyhow::Result<()> {
    loop {
        let Resp::Envelopes(batch) = conn
            .request(Req::Fetch(relay::Fetch { limit: 100 }))
            .await?
        else {
            anyhow::bail!("unexpected answer to fetch");
        };
        let seqs: Vec<u64> = batch.envelopes.iter().map(|e| e.seq).collect();
        if !seqs.is_empty() {
            conn.request(Req::Ack(relay::Ack { seqs })).await?;
        }
        if !batch.more {
            return Ok(());
        }
    }
}

/// The relay's resident set, MiB.
fn relay_rss(bench: &Bench) -> anyhow::Result<f64> {
    bench
        .relay_rss_kib()
        .map(mib)
        .ok_or_else(|| anyhow::anyhow!("cannot read the relay's RSS"))
}

/// A relay holding enough registered accounts for the largest tier.
struct ScaleBench {
    bench: Bench,
    dialer: Dialer,
    members: Arc<Vec<Member>>,
}

impl ScaleBench {
    /// Starts a relay (`Bench::start` raises its connection cap) and registers
    /// one account per client of the largest tier.
    async fn start(retries: &Arc<AtomicUsize>) -> anyhow::Result<ScaleBench> {
        let most = SCALE[SCALE.len() - 1];
        let bench = Bench::start(most as u32)?;
        let kit = Kit::new(&bench, retries);
        let start = Instant::now();
        let members = {
            let kit = kit.clone();
            parallel(most, move |_| {
                let kit = kit.clone();
                async move { Ok(register(&kit).await?.0) }
            })
            .await?
        };
        eprintln!(
            "   registered {most} accounts in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        Ok(ScaleBench {
            dialer: kit.dialer,
            bench,
            members: Arc::new(members),
        })
    }

    /// Restarts the relay (a fresh process on the same data), reads its idle
    /// RSS, then opens each tier of authenticated clients.
    async fn measure(&mut self) -> anyhow::Result<Vec<Tier>> {
        tokio::task::block_in_place(|| self.bench.relay.restart());
        let pid = self
            .bench
            .relay
            .pid()
            .ok_or_else(|| anyhow::anyhow!("the relay is not running"))?;
        let (dialer, members) = (self.dialer.clone(), self.members.clone());
        tiers(pid, move |i| {
            let (dialer, members) = (dialer.clone(), members.clone());
            async move { authenticate(&dialer, &members[i]).await }
        })
        .await
    }
}

/// The ceiling's tiers: a bare quinn server in a child process, handshakes only.
async fn bare_tiers(bench: &Bench, retries: &Arc<AtomicUsize>) -> anyhow::Result<Vec<Tier>> {
    let server = BareServer::start()?;
    let dialer = Dialer {
        endpoint: bench.endpoint.clone(),
        addr: format!("127.0.0.1:{}", server.port).into(),
        pin: server.pin,
        retries: retries.clone(),
    };
    tiers(server.child.id(), move |_| {
        let dialer = dialer.clone();
        async move { dialer.connect().await }
    })
    .await
}

/// Reads `pid`'s idle RSS, then for each tier opens clients up to N with
/// `open(i)` (client number `i`), lets the server settle and reads its RSS.
/// Every client stays open until all tiers are measured.
async fn tiers<F, Fut>(pid: u32, open: F) -> anyhow::Result<Vec<Tier>>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<Connection>> + Send + 'static,
{
    let rss =
        || rss_kib(pid).ok_or_else(|| anyhow::anyhow!("cannot read the RSS of process {pid}"));
    tokio::time::sleep(SETTLE).await;
    let idle = rss()?;
    let mut held: Vec<Connection> = Vec::new();
    let mut opening = Duration::ZERO;
    let mut cpu_ticks = 0;
    let mut drops = 0;
    let mut out = Vec::new();
    for n in SCALE {
        let from = held.len();
        let open = open.clone();
        let (cpu_before, drops_before) = (cpu_ticks_of(pid)?, udp_rcvbuf_errors());
        let start = Instant::now();
        let batch = parallel(n - from, move |i| open(from + i)).await?;
        opening += start.elapsed();
        cpu_ticks += cpu_ticks_of(pid)?.saturating_sub(cpu_before);
        drops += udp_rcvbuf_errors().saturating_sub(drops_before);
        held.extend(batch);
        tokio::time::sleep(SETTLE).await;
        let with = rss()?;
        out.push(Tier {
            idle_mib: mib(idle),
            per_second: n as f64 / opening.as_secs_f64(),
            cpu_ms_per_conn: cpu_ticks as f64 / USER_HZ * 1000.0 / n as f64,
            drops,
            rss_mib: mib(with),
            per_conn_kib: with.saturating_sub(idle) as f64 / n as f64,
        });
    }
    // Close them all before the next measurement.
    drop(held);
    Ok(out)
}

/// User plus system CPU time of a process (all its threads), in `USER_HZ` ticks.
fn cpu_ticks_of(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name, which may hold spaces:
    // state is field 3, utime field 14 and stime field 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("odd /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    Ok(tick(11)? + tick(12)?)
}

/// The kernel's count of UDP datagrams dropped for a full socket receive
/// buffer, system-wide (`RcvbufErrors` in /proc/net/snmp); 0 if unreadable.
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Runs `job(0..n)` with at most [`IN_FLIGHT`] at once; results in index order.
async fn parallel<T, F, Fut>(n: usize, job: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT.min(n) {
        let (next, job) = (next.clone(), job.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(done);
                }
                done.push((i, job(i).await?));
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    // An error drops the set, which aborts the other workers.
    while let Some(joined) = workers.join_next().await {
        all.extend(joined??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// Opens connections on the bench's shared client endpoint, retrying a
/// handshake that failed (counted, and reported at the end).
#[derive(Clone)]
struct Dialer {
    endpoint: quinn::Endpoint,
    addr: Arc<str>,
    pin: [u8; 32],
    retries: Arc<AtomicUsize>,
}

impl Dialer {
    /// Connects (QUIC + TLS with the pin checked), up to [`CONNECT_ATTEMPTS`] times.
    async fn connect(&self) -> anyhow::Result<Connection> {
        let mut attempt = 1;
        loop {
            match Connection::connect_via(&self.endpoint, &self.addr, self.pin).await {
                Ok(conn) => return Ok(conn),
                Err(e) if attempt < CONNECT_ATTEMPTS => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    eprintln!("   connect attempt {attempt} failed ({e}); retrying");
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What registering a lightweight account needs: the dialer, the invite, and
/// one Kyber public key that every account signs as its own last-resort key
/// (Kyber key generation would otherwise dominate registration time; the
/// relay stores the same bytes either way).
#[derive(Clone)]
struct Kit {
    dialer: Dialer,
    token: Arc<[u8]>,
    kyber_public: Arc<[u8]>,
}

impl Kit {
    fn new(bench: &Bench, retries: &Arc<AtomicUsize>) -> Kit {
        let kyber = kem::KeyPair::generate(kem::KeyType::Kyber1024, &mut rand::rng());
        Kit {
            dialer: Dialer {
                endpoint: bench.endpoint.clone(),
                addr: bench.link.relay.as_str().into(),
                pin: bench.link.spki_pin,
                retries: retries.clone(),
            },
            token: bench.link.token.as_slice().into(),
            kyber_public: kyber.public_key.serialize().into(),
        }
    }
}

/// A registered account: its id and identity key.
#[derive(Clone, Copy)]
struct Member {
    id: Uuid,
    identity: IdentityKeyPair,
}

/// Registers an account (signed prekey, Kyber last-resort key, no one-time
/// keys) and returns it with its authenticated connection.
async fn register(kit: &Kit) -> anyhow::Result<(Member, Connection)> {
    let identity = IdentityKeyPair::generate(&mut rand::rng());
    let signed = KeyPair::generate(&mut rand::rng());
    let signed_public = signed.public_key.serialize().to_vec();
    let key = identity.private_key();
    let signed_signature = key.calculate_signature(&signed_public, &mut rand::rng())?;
    let kyber_signature = key.calculate_signature(&kit.kyber_public, &mut rand::rng())?;
    let conn = kit.dialer.connect().await?;
    let nonce = challenge(&conn).await?;
    let proof = transcript(Purpose::Register, &conn.exporter()?, &nonce);
    let auth_signature = key.calculate_signature(&proof, &mut rand::rng())?;
    let answer = conn
        .request(Req::Register(relay::Register {
            invite_token: kit.token.to_vec(),
            identity_key: identity.identity_key().serialize().to_vec(),
            registration_id: 1,
            auth_signature: auth_signature.to_vec(),
            signed_pre_key: Some(SignedPreKey {
                id: 1,
                public_key: signed_public,
                signature: signed_signature.to_vec(),
            }),
            kyber_last_resort: Some(SignedPreKey {
                id: 2,
                public_key: kit.kyber_public.to_vec(),
                signature: kyber_signature.to_vec(),
            }),
            pre_keys: vec![],
            kyber_pre_keys: vec![],
        }))
        .await?;
    let Resp::Registered(r) = answer else {
        anyhow::bail!("unexpected answer to register");
    };
    let member = Member {
        id: Uuid::from_slice(&r.account_id)?,
        identity,
    };
    Ok((member, conn))
}

/// Opens a connection and authenticates it as `member`.
async fn authenticate(dialer: &Dialer, member: &Member) -> anyhow::Result<Connection> {
    let conn = dialer.connect().await?;
    let nonce = challenge(&conn).await?;
    let proof = transcript(Purpose::Authenticate, &conn.exporter()?, &nonce);
    let signature = member
        .identity
        .private_key()
        .calculate_signature(&proof, &mut rand::rng())?;
    let answer = conn
        .request(Req::Authenticate(relay::Authenticate {
            account_id: member.id.as_bytes().to_vec(),
            device_id: 1,
            auth_signature: signature.to_vec(),
        }))
        .await?;
    anyhow::ensure!(
        matches!(answer, Resp::Authenticated(_)),
        "unexpected answer to authenticate"
    );
    Ok(conn)
}

/// The ceiling's server, a child process running [`bare_server_main`];
/// killed when dropped.
struct BareServer {
    child: Child,
    /// Held so the child sees end-of-file and exits if this process dies.
    _stdin: Option<ChildStdin>,
    port: u16,
    pin: [u8; 32],
}

impl BareServer {
    fn start() -> anyhow::Result<BareServer> {
        // `/proc/self/exe` runs this very binary even if a rebuild replaced the
        // file meanwhile (then `current_exe` names a deleted path).
        let exe = Path::new("/proc/self/exe");
        let exe = if exe.exists() {
            exe.to_path_buf()
        } else {
            std::env::current_exe()?
        };
        let mut child = Command::new(exe)
            .arg(BARE_SERVER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the bare quinn server")?;
        let stdin = child.stdin.take();
        let mut server = BareServer {
            child,
            _stdin: stdin,
            port: 0,
            pin: [0; 32],
        };
        let stdout = server
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("the bare server's stdout is not piped"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let mut words = line.split_whitespace();
        let (Some("listening"), Some(port), Some(pin)) = (words.next(), words.next(), words.next())
        else {
            anyhow::bail!("the bare quinn server said {line:?}");
        };
        server.port = port.parse()?;
        server.pin = pin_from_hex(pin)?;
        Ok(server)
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Entry point of the ceiling's child process (`sotto-bench
/// --bare-quinn-server`): a quinn server on 127.0.0.1 with the relay's TLS
/// and transport configuration (`sotto_relay::tls::server_config`) that
/// accepts every connection and holds it until the peer leaves, answering
/// nothing. Prints `listening <port> <SPKI pin in hex>` and serves until killed
/// or until its stdin closes (the benchmark went away).
pub(crate) fn bare_server_main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let keys = sotto_relay::tls::self_signed(&["127.0.0.1".into(), "localhost".into()])?;
        let pin = sotto_relay::tls::spki_sha256(&keys.cert_der)?;
        let config = sotto_relay::tls::server_config(sotto_relay::tls::CertResolver::new(
            &sotto_relay::tls::Identity::from_der(&keys.cert_der, &keys.key_der),
        )?)?;
        let endpoint = quinn::Endpoint::server(config, ([127, 0, 0, 1], 0).into())?;
        let hex: String = pin.iter().map(|b| format!("{b:02x}")).collect();
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening {} {hex}", endpoint.local_addr()?.port())?;
            out.flush()?;
        }
        std::thread::spawn(|| {
            // Exit when the benchmark closes our stdin or dies.
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            std::process::exit(0);
        });
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(connecting) = incoming.accept() else {
                    return;
                };
                if let Ok(conn) = connecting.await {
                    conn.closed().await;
                }
            });
        }
        anyhow::Ok(())
    })
}

/// Parses the 64-hex-digit pin the bare server prints.
fn pin_from_hex(hex: &str) -> anyhow::Result<[u8; 32]> {
    let mut pin = [0u8; 32];
    anyhow::ensure!(hex.len() == 64 && hex.is_ascii(), "a pin is 64 hex digits");
    for (i, byte) in pin.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_round_trip_through_hex() {
        let pin: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        let hex: String = pin.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(pin_from_hex(&hex).expect("hex"), pin);
        assert!(pin_from_hex("zz").is_err());
    }
}
