//! The QUIC shell around [`crate::core::Relay`].
//!
//! One task per connection accepts request streams; one task per stream reads
//! one `Request` frame, asks the core, flushes the store when the outcome says
//! so, writes one `Response` frame and finishes. Pushes go out on
//! unidirectional streams the relay opens. Nothing here interprets requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto_wire::auth::{EXPORTER_LABEL, EXPORTER_LEN};
use sotto_wire::frame::{self, FrameError};
use sotto_wire::relay::{Envelope, ErrorCode, Push, Request, Response, response};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::LinkInfo;
use crate::core::{ConnState, Relay, error_response};
use crate::limits::{AddrKey, RateLimiter};
use crate::store::DeviceKey;

/// Application close code: the relay is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 0;
/// Application close code: the peer sent too many bad frames.
pub const CLOSE_MISBEHAVING: u32 = 1;
/// Application close code: the relay is at its connection limit.
pub const CLOSE_BUSY: u32 = 2;

/// Close reason when one address has too many connections open.
pub const TOO_MANY_FROM_ADDRESS: &[u8] =
    b"too many connections from your network address; close some and try again";

/// Application close code: the operator banned or removed the account.
pub const CLOSE_BANNED: u32 = 3;
/// Application close code: an unauthenticated connection was idle, or made
/// room for a newer one; the client reconnects when it next needs to.
pub const CLOSE_UNAUTHENTICATED: u32 = 4;

/// Close reason for an unauthenticated connection that made no request for
/// `unauthenticated_idle`.
pub const IDLE_BEFORE_SIGN_IN: &[u8] = b"idle without signing in; reconnect when needed";
/// Close reason for an unauthenticated connection closed to make room.
pub const MADE_ROOM: &[u8] =
    b"closed to make room for a newer connection that has not signed in; reconnect";
/// Close reason when the relay is at `max_connections` signed-in connections.
pub const RELAY_FULL: &[u8] = b"the relay is at its connection limit; try again in a minute";
/// How long a client is told to wait when the unauthenticated request
/// budget is full.
const BUSY_RETRY_MS: u64 = 1000;

/// Envelope bytes of pushes one connection may have waiting for a stream:
/// all a client that stops accepting push streams can make us hold (the rest
/// waits in its mailbox for `Fetch`). About a thousand 1 KiB messages, far
/// more than a client that keeps reading ever has outstanding.
const PUSH_BUDGET_BYTES: usize = 1 << 20;
/// Bad frames a connection may send before it is closed.
const MAX_BAD_FRAMES: u32 = 16;
/// How long a peer may take to send its request on an open stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a QUIC handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC stream error code sent with STOP_SENDING on an oversized frame.
const STREAM_TOO_LARGE: u32 = 1;

/// State shared by every connection task.
pub struct Shared {
    /// The protocol core.
    pub relay: Relay,
    /// Invite link material (relay address, pin, trust root); the pin
    /// changes when a reloaded certificate has a new key.
    links: Mutex<LinkInfo>,
    live: Mutex<HashMap<DeviceKey, Vec<LivePeer>>>,
    next_conn_id: AtomicU64,
    connections: AtomicUsize,
    pending_pushes: Arc<AtomicUsize>,
    limit: Arc<Semaphore>,
    /// Counters for the metrics endpoint.
    pub metrics: crate::metrics::Metrics,
    /// Free space of the database's filesystem.
    pub disk: crate::disk::DiskGuard,
    /// Cancelled when the database has failed and the relay must stop.
    stop: CancellationToken,
    failed: std::sync::atomic::AtomicBool,
    per_address: Arc<Mutex<HashMap<AddrKey, usize>>>,
    handshakes: RateLimiter<()>,
    handshakes_per_address: RateLimiter<AddrKey>,
    unauth: Arc<Mutex<UnauthPool>>,
    /// Bytes of request frames being read on unauthenticated connections
    /// (`unauthenticated_buffer_bytes`), one permit per byte.
    pre_auth_bytes: Arc<Semaphore>,
}

impl Shared {
    /// Wraps a relay core.
    pub fn new(relay: Relay, links: LinkInfo) -> Self {
        let max = relay.config().max_connections;
        let pre_auth_bytes = relay.config().unauthenticated_buffer_bytes;
        let (hs, hs_addr) = (
            relay.config().handshakes_per_second,
            relay.config().handshakes_per_address_per_second,
        );
        Self {
            relay,
            links: Mutex::new(links),
            live: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            pending_pushes: Arc::new(AtomicUsize::new(0)),
            limit: Arc::new(Semaphore::new(max)),
            metrics: crate::metrics::Metrics::default(),
            // Watches the working directory until `with_disk_guard` names
            // the database's; a reserve of 1 byte never refuses.
            disk: crate::disk::DiskGuard::new(std::path::Path::new("."), 1),
            stop: CancellationToken::new(),
            failed: std::sync::atomic::AtomicBool::new(false),
            per_address: Arc::new(Mutex::new(HashMap::new())),
            handshakes: RateLimiter::per_second(hs, hs.saturating_mul(5)),
            handshakes_per_address: RateLimiter::per_second(hs_addr, hs_addr.saturating_mul(10)),
            unauth: Arc::new(Mutex::new(UnauthPool::default())),
            pre_auth_bytes: Arc::new(Semaphore::new(pre_auth_bytes.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Admits a new connection from `ip` into the unauthenticated budget
    /// (`unauthenticated_connections`, and `..._per_address` from one
    /// address), closing the oldest unauthenticated connection (of this
    /// address, or else of the address holding the most) when a budget is
    /// full. Evicting rather than refusing is what keeps a stranger who
    /// holds connections open without signing in from locking out
    /// colleagues behind the same NAT address: members sign in within a
    /// round trip or two of connecting, so only connections that linger
    /// unauthenticated are ever the oldest.
    pub(crate) fn admit_unauthenticated(&self, ip: std::net::IpAddr) -> UnauthSlot {
        let config = self.relay.config();
        let key = AddrKey::from(ip);
        let token = CancellationToken::new();
        let mut pool = self.unauth.lock().unwrap_or_else(|p| p.into_inner());
        if pool.from(key) >= config.unauthenticated_connections_per_address {
            pool.evict_oldest_of(key);
        } else if pool.conns.len() >= config.unauthenticated_connections
            && let Some(heaviest) = pool.heaviest()
        {
            pool.evict_oldest_of(heaviest);
        }
        pool.next += 1;
        let id = pool.next;
        pool.conns.insert(id, (key, token.clone()));
        *pool.per_address.entry(key).or_insert(0) += 1;
        UnauthSlot {
            id,
            token,
            pool: Arc::clone(&self.unauth),
        }
    }

    /// Connections that have not signed in, handshakes included.
    pub fn unauthenticated_connections(&self) -> usize {
        self.unauth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .conns
            .len()
    }

    /// Moves a connection that has just signed in from the unauthenticated
    /// budget to the signed-in one (`max_connections`,
    /// `connections_per_address`); closes it with a reason when that is full.
    fn promote(&self, ctx: &ConnCtx) {
        let mut slots = ctx.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.signed_in.is_some() {
            return;
        }
        slots.unauth = None;
        let Some(address) = self.address_slot(ctx.ip) else {
            ctx.conn.close(CLOSE_BUSY, TOO_MANY_FROM_ADDRESS);
            return;
        };
        let Some(permit) = self.connection_permit() else {
            tracing::warn!("signed-in connection limit reached; closing a connection");
            ctx.conn.close(CLOSE_BUSY, RELAY_FULL);
            return;
        };
        if let Peer::Quic(conn) = &ctx.conn {
            // Members get quinn's default window back (see
            // `tls::PRE_AUTH_RECEIVE_WINDOW`).
            conn.set_receive_window(quinn::VarInt::MAX);
        }
        slots.signed_in = Some((permit, address));
    }

    /// Takes budget for an `len`-byte request frame about to be read on
    /// `ctx`: nothing when it has signed in; `Err` when the frame is over the
    /// pre-sign-in cap, or the connection's share (one frame at the cap at a
    /// time, so one connection cannot take the whole budget with parallel
    /// streams) or the relay-wide unauthenticated byte budget is spent.
    pub(crate) fn frame_budget(
        &self,
        ctx: &ConnCtx,
        len: usize,
    ) -> Result<Option<FrameBudget>, FrameRefusal> {
        if ctx.signed_in() {
            return Ok(None);
        }
        let cap = self.relay.config().pre_auth_max_frame();
        if len > cap {
            return Err(FrameRefusal::TooLarge);
        }
        let n = u32::try_from(len.max(1)).map_err(|_| FrameRefusal::TooLarge)?;
        let own = Arc::clone(&ctx.pre_auth_bytes)
            .try_acquire_many_owned(n)
            .map_err(|_| FrameRefusal::Busy)?;
        let shared = Arc::clone(&self.pre_auth_bytes)
            .try_acquire_many_owned(n)
            .map_err(|_| FrameRefusal::Busy)?;
        Ok(Some(FrameBudget(own, shared)))
    }

    /// Whether a new connection from `ip` may start its handshake now. Checked
    /// before any cryptography, so refusing costs next to nothing.
    pub(crate) fn handshake_allowed(&self, ip: std::net::IpAddr) -> bool {
        let now = crate::now_ms();
        self.handshakes_per_address
            .take(AddrKey::from(ip), now)
            .is_ok()
            && self.handshakes.take((), now).is_ok()
    }

    /// Counts a connection from `ip` for as long as the returned guard
    /// lives; `None` when that address is at `connections_per_address`.
    pub(crate) fn address_slot(&self, ip: std::net::IpAddr) -> Option<AddressSlot> {
        let key = AddrKey::from(ip);
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= self.relay.config().connections_per_address {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            key,
            map: Arc::clone(&self.per_address),
        })
    }

    /// Stops the relay through `token` if the database fails.
    pub fn with_stop(mut self, token: CancellationToken) -> Self {
        self.stop = token;
        self
    }

    /// Whether the relay stopped because its database failed.
    pub fn database_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// After a write error (a full disk, an I/O error), sled refuses every
    /// later write until the process restarts, so staying up would answer
    /// every request with an error. Stop instead, with the reason in the log;
    /// the supervisor restarts the relay, and everything acknowledged is on
    /// disk.
    fn database_broken(&self, e: &dyn std::fmt::Display) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::error!(
                error = %e,
                "the database cannot be written (disk full or I/O error); stopping so the relay \
                 restarts clean once the cause is fixed. Acknowledged messages are safe on disk"
            );
        }
        self.stop.cancel();
    }

    /// Watches the database's filesystem with `guard`.
    pub fn with_disk_guard(mut self, guard: crate::disk::DiskGuard) -> Self {
        self.disk = guard;
        self
    }

    /// Invite link material as it is now.
    pub fn links(&self) -> LinkInfo {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `pin` into invite links made from now on.
    pub fn set_pin(&self, pin: [u8; 32]) {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spki_pin = pin;
    }

    /// Connections currently open.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Pushes spawned but not yet handed to QUIC (waiting for the client to
    /// allow another stream, or being written).
    pub fn pending_pushes(&self) -> usize {
        self.pending_pushes.load(Ordering::Relaxed)
    }

    /// Closes every live connection of `account` (all devices) with `reason`.
    /// Returns how many were closed.
    pub fn close_account(&self, account: uuid::Uuid, reason: &[u8]) -> usize {
        let conns: Vec<Peer> = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.iter()
                .filter(|(k, _)| k.account == account)
                .flat_map(|(_, l)| l.iter().map(|p| p.conn.clone()))
                .collect()
        };
        for conn in &conns {
            conn.close(CLOSE_BANNED, reason);
        }
        conns.len()
    }

    fn register_live(&self, key: DeviceKey, ctx: &ConnCtx) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.entry(key).or_default().push(LivePeer {
            id: ctx.id,
            conn: ctx.conn.clone(),
            push_budget: Arc::clone(&ctx.push_budget),
        });
    }

    /// Context for a new connection from `ip` with TLS exporter `exporter`.
    pub(crate) fn new_ctx(
        &self,
        conn: Peer,
        exporter: [u8; EXPORTER_LEN],
        ip: std::net::IpAddr,
        unauth: UnauthSlot,
    ) -> Arc<ConnCtx> {
        Arc::new(ConnCtx {
            id: self.next_conn_id.fetch_add(1, Ordering::Relaxed),
            conn,
            ip,
            state: Mutex::new(ConnState::new(exporter).with_peer(ip)),
            bad_frames: AtomicU32::new(0),
            push_budget: Arc::new(Semaphore::new(PUSH_BUDGET_BYTES)),
            activity: Mutex::new(Activity {
                last: tokio::time::Instant::now(),
                in_progress: 0,
            }),
            slots: Mutex::new(Slots {
                unauth: Some(unauth),
                signed_in: None,
            }),
            pre_auth_bytes: Arc::new(Semaphore::new(
                self.relay
                    .config()
                    .pre_auth_max_frame()
                    .min(Semaphore::MAX_PERMITS),
            )),
        })
    }

    /// Stops pushing to a connection that has ended.
    pub(crate) fn forget(&self, ctx: &ConnCtx) {
        let authed = ctx
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .authenticated();
        if let Some(key) = authed {
            self.unregister_live(key, ctx.id);
        }
    }

    /// Counts a connection as open while the guard lives.
    pub(crate) fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(self))
    }

    /// A permit under `max_connections`, or `None` at the cap.
    pub(crate) fn connection_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.limit).try_acquire_owned().ok()
    }

    fn unregister_live(&self, key: DeviceKey, id: u64) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = live.get_mut(&key) {
            list.retain(|p| p.id != id);
            if list.is_empty() {
                live.remove(&key);
            }
        }
    }

    fn live_for(&self, key: DeviceKey) -> Vec<(Peer, Arc<Semaphore>)> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(&key)
            .map(|l| {
                l.iter()
                    .map(|p| (p.conn.clone(), Arc::clone(&p.push_budget)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A client connection the relay can push to or close: QUIC, or the TLS
/// over TCP fallback ([`crate::tcp`]).
#[derive(Clone)]
pub(crate) enum Peer {
    Quic(quinn::Connection),
    Tcp(crate::tcp::TcpPeer),
}

impl Peer {
    /// Closes the connection, telling the client `reason`.
    pub(crate) fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Peer::Quic(c) => c.close(code.into(), reason),
            Peer::Tcp(t) => t.close(reason),
        }
    }

    /// Sends one push; false if the connection is gone.
    async fn push(&self, msg: &Push) -> bool {
        match self {
            Peer::Quic(c) => {
                let Ok(mut uni) = c.open_uni().await else {
                    return false;
                };
                if frame::write(&mut uni, msg).await.is_err() {
                    return false;
                }
                uni.finish().is_ok()
            }
            Peer::Tcp(t) => {
                t.send(sotto_wire::mux::encode(sotto_wire::mux::PUSH, msg))
                    .await
            }
        }
    }
}

/// An authenticated connection that pushes can go to.
struct LivePeer {
    id: u64,
    conn: Peer,
    /// The connection's [`PUSH_BUDGET_BYTES`], shared with its [`ConnCtx`].
    push_budget: Arc<Semaphore>,
}

/// Serves QUIC connections on an already-bound `endpoint` until `shutdown` is
/// cancelled, then closes every connection with a reason and waits for them.
pub async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            inc = endpoint.accept() => inc,
        };
        let Some(incoming) = incoming else { break };
        if !shared.handshake_allowed(incoming.remote_address().ip()) {
            tracing::debug!("handshake rate limit; refusing a connection");
            incoming.refuse();
            continue;
        }
        // Every connection starts in the unauthenticated budget, which
        // makes room by closing the oldest one there; the signed-in limits
        // apply once it signs in (`Shared::promote`).
        let slot = shared.admit_unauthenticated(incoming.remote_address().ip());
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let handshake =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, async { incoming.accept()?.await });
            let conn = tokio::select! {
                () = slot.token.cancelled() => {
                    tracing::debug!("closed a connection in its handshake to make room");
                    return;
                }
                done = handshake => match done {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("handshake timed out");
                        return;
                    }
                },
            };
            let _open = shared.open_connection();
            handle_connection(conn, &shared, slot, shutdown).await;
        });
    }
    endpoint.close(CLOSE_SHUTDOWN.into(), b"relay shutting down");
    tracker.close();
    tracker.wait().await;
    endpoint.wait_idle().await;
    tracing::info!("stopped serving");
}

async fn handle_connection(
    conn: quinn::Connection,
    shared: &Arc<Shared>,
    slot: UnauthSlot,
    shutdown: CancellationToken,
) {
    let mut exporter = [0u8; EXPORTER_LEN];
    if conn
        .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .is_err()
    {
        conn.close(CLOSE_MISBEHAVING.into(), b"tls exporter unavailable");
        return;
    }
    let evicted = slot.token.clone();
    let ctx = shared.new_ctx(
        Peer::Quic(conn.clone()),
        exporter,
        conn.remote_address().ip(),
        slot,
    );
    let streams = TaskTracker::new();
    let watchdog = watch_unauthenticated(shared, &ctx, evicted);
    tokio::pin!(watchdog);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => {
                conn.close(CLOSE_SHUTDOWN.into(), b"relay shutting down");
                break;
            }
            why = &mut watchdog => {
                conn.close(CLOSE_UNAUTHENTICATED.into(), why);
                break;
            }
            s = conn.accept_bi() => s,
        };
        let Ok((send, recv)) = accepted else { break };
        let shared = Arc::clone(shared);
        let ctx = Arc::clone(&ctx);
        streams.spawn(async move { handle_stream(&shared, &ctx, send, recv).await });
    }
    streams.close();
    streams.wait().await;
    shared.forget(&ctx);
}

pub(crate) struct ConnCtx {
    id: u64,
    conn: Peer,
    ip: std::net::IpAddr,
    state: Mutex<ConnState>,
    bad_frames: AtomicU32,
    /// Envelope bytes this connection's pushes may hold while they wait for
    /// a stream: one permit per byte.
    push_budget: Arc<Semaphore>,
    activity: Mutex<Activity>,
    slots: Mutex<Slots>,
    /// This connection's share of the unauthenticated byte budget.
    pre_auth_bytes: Arc<Semaphore>,
}

/// When a connection last finished a request, and how many are in progress.
struct Activity {
    last: tokio::time::Instant,
    in_progress: usize,
}

/// The connection budget a connection counts against: unauthenticated until
/// it signs in, then the signed-in cap and its address's share.
struct Slots {
    unauth: Option<UnauthSlot>,
    signed_in: Option<(tokio::sync::OwnedSemaphorePermit, AddressSlot)>,
}

/// Bytes of a request frame being read before sign-in, held against the
/// connection's share and the relay-wide budget until the request is served.
pub(crate) struct FrameBudget(
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
);

/// Why a request frame is not read before sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameRefusal {
    /// Over [`crate::config::Config::pre_auth_max_frame`].
    TooLarge,
    /// The unauthenticated byte budget is spent for now.
    Busy,
}

impl FrameRefusal {
    /// The answer for the client.
    pub(crate) fn response(self) -> Response {
        match self {
            FrameRefusal::TooLarge => error_response(
                ErrorCode::TooLarge,
                "request frame is too large before signing in",
            ),
            FrameRefusal::Busy => crate::core::unavailable_response(
                "the relay is busy with connections that have not signed in; try again shortly",
                BUSY_RETRY_MS,
            ),
        }
    }
}

/// Marks a request in progress on a connection for as long as it lives;
/// unauthenticated connections are closed only when none is.
pub(crate) struct InProgress<'a>(&'a ConnCtx);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        let mut a = self.0.activity.lock().unwrap_or_else(|p| p.into_inner());
        a.in_progress = a.in_progress.saturating_sub(1);
        a.last = tokio::time::Instant::now();
    }
}

impl ConnCtx {
    /// Counts a request in progress until the guard drops.
    pub(crate) fn in_progress(&self) -> InProgress<'_> {
        let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        a.in_progress += 1;
        a.last = tokio::time::Instant::now();
        InProgress(self)
    }

    /// Whether the connection has signed in (registered or authenticated).
    pub(crate) fn signed_in(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .authenticated()
            .is_some()
    }

    pub(crate) fn bad_frame(&self) {
        let n = self.bad_frames.fetch_add(1, Ordering::Relaxed) + 1;
        if n > MAX_BAD_FRAMES {
            // A peer that keeps sending garbage is broken or probing; cut it off.
            self.conn
                .close(CLOSE_MISBEHAVING, b"too many malformed requests");
        }
    }
}

async fn handle_stream(
    shared: &Arc<Shared>,
    ctx: &ConnCtx,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let _busy = ctx.in_progress();
    let max = shared.relay.config().max_frame_bytes;
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let len = u32::from_be_bytes(frame::read_header(&mut recv).await?) as usize;
        if len > max {
            return Err(FrameError::TooLarge { len, max }.into());
        }
        let budget = shared.frame_budget(ctx, len).map_err(ReadError::Refused)?;
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.map_err(|e| match e {
            quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
            quinn::ReadExactError::ReadError(e) => FrameError::Io(e.into()),
        })?;
        let req = <Request as prost::Message>::decode(body.as_slice()).map_err(FrameError::from)?;
        Ok::<_, ReadError>((req, budget))
    })
    .await;
    let (req, _budget) = match read {
        Ok(Ok(req)) => req,
        Ok(Err(ReadError::Refused(why))) => {
            // Refuse the body without reading it.
            let _ = recv.stop(STREAM_TOO_LARGE.into());
            if why == FrameRefusal::TooLarge {
                ctx.bad_frame();
            }
            respond(&mut send, &why.response()).await;
            return;
        }
        Ok(Err(ReadError::Frame(FrameError::TooLarge { .. }))) => {
            // Refuse the body without reading it.
            let _ = recv.stop(STREAM_TOO_LARGE.into());
            ctx.bad_frame();
            respond(
                &mut send,
                &error_response(ErrorCode::TooLarge, "request frame is too large"),
            )
            .await;
            return;
        }
        Ok(Err(ReadError::Frame(
            FrameError::Malformed(_) | FrameError::Truncated | FrameError::Eof,
        ))) => {
            ctx.bad_frame();
            respond(
                &mut send,
                &error_response(ErrorCode::Malformed, "request does not decode"),
            )
            .await;
            return;
        }
        Ok(Err(ReadError::Frame(FrameError::Io(_)))) => return, // The peer reset the stream; nobody to answer.
        Err(_) => {
            let _ = recv.stop(0u32.into());
            respond(
                &mut send,
                &error_response(ErrorCode::Malformed, "request timed out"),
            )
            .await;
            return;
        }
    };
    let (response, push) = serve_request(shared, ctx, req).await;
    respond(&mut send, &response).await;
    for (to, envelope) in push {
        push_to(shared, to, envelope);
    }
}

/// Handles one decoded request: asks the core, flushes the store when the
/// outcome needs it, and returns the response with the pushes to send once
/// the response is on its way.
pub(crate) async fn serve_request(
    shared: &Arc<Shared>,
    ctx: &ConnCtx,
    req: Request,
) -> (Response, Vec<(DeviceKey, Envelope)>) {
    let started = std::time::Instant::now();
    let kind = crate::metrics::kind_index(req.kind.as_ref());
    let acked = match &req.kind {
        Some(sotto_wire::relay::request::Kind::Ack(a)) => a.seqs.len() as u64,
        _ => 0,
    };
    if shared.disk.is_low() && crate::disk::grows_store(req.kind.as_ref()) {
        let response = crate::core::unavailable_response(
            "the relay's disk is full; your message is kept and will be sent later",
            crate::disk::RETRY_AFTER_MS,
        );
        shared
            .metrics
            .request(kind, started.elapsed(), response.kind.as_ref(), 0);
        return (response, Vec::new());
    }
    let version_ok = req.version == sotto_wire::PROTOCOL_VERSION;
    let (outcome, became) = {
        let mut state = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
        let before = state.authenticated();
        let outcome = shared
            .relay
            .handle(&mut state, req, crate::now_ms(), &mut rand::rng());
        let after = state.authenticated();
        (outcome, (before != after).then_some((before, after)))
    };
    if !version_ok {
        ctx.bad_frame();
    }
    if let Some((before, after)) = became {
        if let Some(old) = before {
            shared.unregister_live(old, ctx.id);
        }
        if let Some(new) = after {
            shared.register_live(new, ctx);
            shared.promote(ctx);
        }
    }
    let mut response = outcome.response;
    let mut push = outcome.push;
    if outcome.durable {
        // Acknowledge only what is on disk: a crash after "Sent" must not lose the envelope.
        if let Err(e) = shared.relay.store().flush_async().await {
            tracing::error!(error = %e, "flush failed; answering INTERNAL");
            response = error_response(ErrorCode::Internal, "relay storage error; try later");
            push.clear();
            shared.database_broken(&e);
        }
    } else if matches!(&response.kind, Some(response::Kind::Error(e)) if e.code() == ErrorCode::Internal)
    {
        // A store error inside the core: is the database still writable?
        if let Err(e) = shared.relay.store().flush_async().await {
            shared.database_broken(&e);
        }
    }
    shared
        .metrics
        .request(kind, started.elapsed(), response.kind.as_ref(), acked);
    (response, push)
}

async fn respond(send: &mut quinn::SendStream, response: &Response) {
    if frame::write(send, response).await.is_ok() {
        let _ = send.finish();
    }
}

/// Best-effort push of one envelope to every live connection of `to`; the
/// envelope stays in the mailbox until acknowledged either way.
///
/// A push waits in its own task until the client allows another stream. A
/// client that does not accept push streams as fast as they come (or never
/// does) would otherwise make us hold a task and an envelope copy per message
/// for as long as it stays connected, so each connection has a byte budget
/// ([`PUSH_BUDGET_BYTES`]); over it, the push is skipped and the envelope
/// waits in the mailbox for the client's next `Fetch`.
pub(crate) fn push_to(shared: &Shared, to: DeviceKey, envelope: Envelope) {
    let conns = shared.live_for(to);
    if conns.is_empty() {
        return;
    }
    // At least one permit, and never more than the whole budget, so that any
    // envelope can be pushed to a client that keeps up.
    let cost = envelope.envelope.len().clamp(1, PUSH_BUDGET_BYTES);
    let cost = u32::try_from(cost).unwrap_or(u32::MAX);
    let msg = Push {
        version: sotto_wire::PROTOCOL_VERSION,
        envelopes: vec![envelope],
    };
    for (conn, budget) in conns {
        let Ok(permit) = budget.try_acquire_many_owned(cost) else {
            tracing::debug!("client is not taking pushes; leaving the envelope for its next fetch");
            continue;
        };
        let msg = msg.clone();
        shared.metrics.pushed();
        let pending = PendingPush::new(&shared.pending_pushes);
        tokio::spawn(async move {
            let _held = (pending, permit);
            conn.push(&msg).await;
        });
    }
}

/// What went wrong reading one request frame on a QUIC stream.
enum ReadError {
    Frame(FrameError),
    Refused(FrameRefusal),
}

impl From<FrameError> for ReadError {
    fn from(e: FrameError) -> Self {
        ReadError::Frame(e)
    }
}

/// Resolves, with the close reason, when an unauthenticated connection must
/// go: it was evicted to make room ([`Shared::admit_unauthenticated`]) or
/// has had no request in progress for `unauthenticated_idle`. Never
/// resolves once the connection has signed in.
pub(crate) async fn watch_unauthenticated(
    shared: &Shared,
    ctx: &ConnCtx,
    evicted: CancellationToken,
) -> &'static [u8] {
    let idle = shared.relay.config().unauthenticated_idle;
    loop {
        let deadline = {
            let a = ctx.activity.lock().unwrap_or_else(|p| p.into_inner());
            a.last + idle
        };
        tokio::select! {
            () = evicted.cancelled() => {
                if ctx.signed_in() {
                    break;
                }
                return MADE_ROOM;
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
        if ctx.signed_in() {
            break;
        }
        let a = ctx.activity.lock().unwrap_or_else(|p| p.into_inner());
        if a.in_progress == 0 && a.last + idle <= tokio::time::Instant::now() {
            tracing::debug!("closing an unauthenticated connection that was idle");
            return IDLE_BEFORE_SIGN_IN;
        }
    }
    std::future::pending().await
}

/// The connections that have not signed in, oldest first, for eviction.
#[derive(Default)]
pub(crate) struct UnauthPool {
    next: u64,
    conns: std::collections::BTreeMap<u64, (AddrKey, CancellationToken)>,
    per_address: HashMap<AddrKey, usize>,
}

impl UnauthPool {
    fn from(&self, key: AddrKey) -> usize {
        self.per_address.get(&key).copied().unwrap_or(0)
    }

    /// The address holding the most unauthenticated connections.
    fn heaviest(&self) -> Option<AddrKey> {
        self.per_address
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, _)| *k)
    }

    fn evict_oldest_of(&mut self, key: AddrKey) {
        let oldest = self
            .conns
            .iter()
            .find(|(_, (k, _))| *k == key)
            .map(|(id, _)| *id);
        if let Some(id) = oldest
            && let Some((_, token)) = self.remove(id)
        {
            tracing::debug!("closing the oldest unauthenticated connection to make room");
            token.cancel();
        }
    }

    fn remove(&mut self, id: u64) -> Option<(AddrKey, CancellationToken)> {
        let (key, token) = self.conns.remove(&id)?;
        if let Some(n) = self.per_address.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_address.remove(&key);
            }
        }
        Some((key, token))
    }
}

/// A connection counted in the unauthenticated budget until it signs in or
/// ends; its token is cancelled if it is evicted to make room.
pub(crate) struct UnauthSlot {
    id: u64,
    /// Cancelled when the connection must close to make room.
    pub(crate) token: CancellationToken,
    pool: Arc<Mutex<UnauthPool>>,
}

impl Drop for UnauthSlot {
    fn drop(&mut self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.remove(self.id);
    }
}

/// One connection counted against its address; released on drop.
pub(crate) struct AddressSlot {
    key: AddrKey,
    map: Arc<Mutex<HashMap<AddrKey, usize>>>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Counts one open connection in [`Shared::connections`] while it lives.
pub(crate) struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one push task in [`Shared::pending_pushes`] for as long as it lives.
struct PendingPush(Arc<AtomicUsize>);

impl PendingPush {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counter))
    }
}

impl Drop for PendingPush {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Deletes expired envelopes every `every` until cancelled.
pub async fn sweep_loop(shared: Arc<Shared>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match shared.relay.sweep(crate::now_ms()) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(expired = n, "expired undelivered envelopes");
                if let Err(e) = shared.relay.store().flush_async().await {
                    tracing::error!(error = %e, "flush after sweep failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use libsignal_protocol::{IdentityKeyPair, KeyPair};
    use quinn::crypto::rustls::QuicClientConfig;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use sotto_wire::auth::{Purpose, transcript};
    use sotto_wire::relay::{self, request, response};

    use super::*;

    /// Accepts any certificate: the test talks to its own relay on loopback.
    #[derive(Debug)]
    struct SkipVerify(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for SkipVerify {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    async fn connect(addr: std::net::SocketAddr) -> quinn::Connection {
        let provider = crate::tls::provider();
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
            .with_no_client_auth();
        tls.alpn_protocols = vec![sotto_wire::ALPN.to_vec()];
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
        ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(tls).expect("quic tls"),
        )));
        ep.connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake")
    }

    async fn call(conn: &quinn::Connection, kind: request::Kind) -> response::Kind {
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        let req = Request {
            version: sotto_wire::PROTOCOL_VERSION,
            kind: Some(kind),
        };
        frame::write(&mut send, &req).await.expect("write");
        send.finish().expect("finish");
        let resp: Response = frame::read(&mut recv, 1 << 20).await.expect("response");
        resp.kind.expect("response kind")
    }

    async fn raw(conn: &quinn::Connection, bytes: &[u8]) -> response::Kind {
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
        let resp: Response = frame::read(&mut recv, 1 << 20).await.expect("response");
        resp.kind.expect("response kind")
    }

    fn signed(id: &IdentityKeyPair, key_id: u32, public_key: Vec<u8>) -> relay::SignedPreKey {
        let signature = id
            .private_key()
            .calculate_signature(&public_key, &mut rand::rng())
            .expect("sign")
            .to_vec();
        relay::SignedPreKey {
            id: key_id,
            public_key,
            signature,
        }
    }

    async fn register(conn: &quinn::Connection, token: Vec<u8>) -> Vec<u8> {
        let mut exporter = [0u8; EXPORTER_LEN];
        conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .expect("exporter");
        let response::Kind::Challenge(c) =
            call(conn, request::Kind::Challenge(relay::ChallengeRequest {})).await
        else {
            panic!("expected a challenge");
        };
        let id = IdentityKeyPair::generate(&mut rand::rng());
        let sig = id
            .private_key()
            .calculate_signature(
                &transcript(Purpose::Register, &exporter, &c.nonce),
                &mut rand::rng(),
            )
            .expect("sign");
        let spk = KeyPair::generate(&mut rand::rng())
            .public_key
            .serialize()
            .to_vec();
        let out = call(
            conn,
            request::Kind::Register(relay::Register {
                invite_token: token,
                identity_key: id.identity_key().serialize().to_vec(),
                registration_id: 77,
                auth_signature: sig.to_vec(),
                signed_pre_key: Some(signed(&id, 1, spk)),
                kyber_last_resort: Some(signed(&id, 2, vec![3; 64])),
                pre_keys: vec![],
                kyber_pre_keys: vec![],
            }),
        )
        .await;
        let response::Kind::Registered(r) = out else {
            panic!("expected registered, got {out:?}");
        };
        r.account_id
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn register_send_push_and_bad_frames_over_quic() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("relay");
        crate::init(&dir, Some("127.0.0.1:0".parse().expect("addr")), None).expect("init");
        let running = crate::start(&dir).await.expect("start");
        let addr = running.local_addr;
        assert_ne!(addr.port(), 0);
        assert_eq!(running.shared.links().relay, addr.to_string());

        let invite = |uses| {
            crate::make_invite(
                &running.shared.relay,
                &running.shared.links(),
                uses,
                Duration::from_secs(60),
            )
            .expect("invite")
            .token
        };
        let bob = connect(addr).await;
        let alice = connect(addr).await;
        let bob_id = register(&bob, invite(1)).await;
        register(&alice, invite(1)).await;

        let mut pushes = {
            let bob = bob.clone();
            tokio::spawn(async move {
                let mut uni = bob.accept_uni().await.expect("push stream");
                let push: Push = frame::read(&mut uni, 1 << 20).await.expect("push frame");
                push
            })
        };
        let out = call(
            &alice,
            request::Kind::Send(relay::Send {
                recipient: bob_id.clone(),
                device_id: 1,
                registration_id: 77,
                envelope: b"sealed".to_vec(),
            }),
        )
        .await;
        let response::Kind::Sent(sent) = out else {
            panic!("expected sent, got {out:?}");
        };
        let push = tokio::time::timeout(Duration::from_secs(5), &mut pushes)
            .await
            .expect("push in time")
            .expect("push task");
        assert_eq!(push.envelopes[0].seq, sent.seq);
        assert_eq!(push.envelopes[0].envelope, b"sealed");
        let response::Kind::Envelopes(e) =
            call(&bob, request::Kind::Fetch(relay::Fetch { limit: 0 })).await
        else {
            panic!("expected envelopes");
        };
        assert_eq!(e.envelopes.len(), 1);

        // An oversized length prefix is refused without reading the body.
        let huge = (u32::MAX).to_be_bytes();
        let response::Kind::Error(err) = raw(&alice, &huge).await else {
            panic!("expected an error");
        };
        assert_eq!(err.code(), ErrorCode::TooLarge);
        let response::Kind::Error(err) = raw(&alice, &[0, 0, 0, 3, 0xff, 0xff, 0xff]).await else {
            panic!("expected an error");
        };
        assert_eq!(err.code(), ErrorCode::Malformed);
        // The connection still works after bad frames.
        assert!(matches!(
            call(
                &alice,
                request::Kind::PreKeyCount(relay::PreKeyCountRequest {})
            )
            .await,
            response::Kind::PreKeyCount(_)
        ));

        // A connection that keeps sending garbage is closed; others are unaffected.
        let mallory = connect(addr).await;
        for _ in 0..(MAX_BAD_FRAMES + 2) {
            if let Ok((mut s, _r)) = mallory.open_bi().await {
                let _ = s.write_all(&[0, 0, 0, 1, 0xff]).await;
                let _ = s.finish();
            }
        }
        let reason = tokio::time::timeout(Duration::from_secs(5), mallory.closed())
            .await
            .expect("closed in time");
        assert!(matches!(
            reason,
            quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == CLOSE_MISBEHAVING.into()
        ));
        assert!(matches!(
            call(
                &bob,
                request::Kind::PreKeyCount(relay::PreKeyCountRequest {})
            )
            .await,
            response::Kind::PreKeyCount(_)
        ));

        let admin = crate::admin::handle_command(&running.shared, r#"{"cmd":"stats"}"#);
        assert_eq!(admin["accounts"], 2);
        assert_eq!(admin["queued_envelopes"], 1);

        let sock = crate::DataDir::new(&dir).admin_socket();
        assert!(sock.exists());
        running.shutdown().await;
        assert!(!sock.exists());
        let reason = tokio::time::timeout(Duration::from_secs(5), bob.closed())
            .await
            .expect("closed on shutdown");
        assert!(matches!(
            reason,
            quinn::ConnectionError::ApplicationClosed(_)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_requests_work_on_unauthenticated_connections() {
        use sotto_wire::auth::{GroupPurpose, group_body, group_transcript};

        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("relay");
        crate::init(&dir, Some("127.0.0.1:0".parse().expect("addr")), None).expect("init");
        let running = crate::start(&dir).await.expect("start");
        let conn = connect(running.local_addr).await;
        let mut exporter = [0u8; EXPORTER_LEN];
        conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .expect("exporter");
        let auth = KeyPair::generate(&mut rand::rng());
        let auth_key = auth.public_key.serialize().to_vec();
        let group_id = vec![0x42; 16];
        let sign = |purpose, body: &[u8]| {
            auth.private_key
                .calculate_signature(
                    &group_transcript(purpose, &exporter, &group_id, body),
                    &mut rand::rng(),
                )
                .expect("sign")
                .to_vec()
        };
        let body = group_body(&[&0u64.to_be_bytes(), b"state", &auth_key, b""]);
        let out = call(
            &conn,
            request::Kind::GroupWrite(relay::GroupWrite {
                group_id: group_id.clone(),
                expected_version: 0,
                blob: b"state".to_vec(),
                auth_key: auth_key.clone(),
                link_key: vec![],
                signature: sign(GroupPurpose::Write, &body),
            }),
        )
        .await;
        assert!(
            matches!(
                out,
                response::Kind::GroupWritten(relay::GroupWritten { version: 1 })
            ),
            "{out:?}"
        );
        let out = call(
            &conn,
            request::Kind::GroupRead(relay::GroupRead {
                group_id: group_id.clone(),
                signature: sign(GroupPurpose::Read, &group_body(&[])),
            }),
        )
        .await;
        let response::Kind::GroupState(state) = out else {
            panic!("expected group state, got {out:?}");
        };
        assert_eq!(
            (state.version, state.blob.as_slice()),
            (1, b"state".as_slice())
        );
        // The same signature on another connection is refused.
        let other = connect(running.local_addr).await;
        let out = call(
            &other,
            request::Kind::GroupRead(relay::GroupRead {
                group_id: group_id.clone(),
                signature: sign(GroupPurpose::Read, &group_body(&[])),
            }),
        )
        .await;
        let response::Kind::Error(err) = out else {
            panic!("expected an error, got {out:?}");
        };
        assert_eq!(err.code(), ErrorCode::Forbidden);
        let admin = crate::admin::handle_command(&running.shared, r#"{"cmd":"stats"}"#);
        assert_eq!(admin["groups"], 1);
        running.shutdown().await;
    }

    /// Sends one line to the admin socket and parses the answer.
    async fn admin_line(dir: &std::path::Path, req: serde_json::Value) -> serde_json::Value {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let sock = crate::DataDir::new(dir).admin_socket();
        let mut stream = tokio::net::UnixStream::connect(sock)
            .await
            .expect("admin socket");
        stream
            .write_all(format!("{req}\n").as_bytes())
            .await
            .expect("write");
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .expect("read");
        serde_json::from_str(&line).expect("json answer")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ban_over_the_admin_socket_closes_live_connections_and_backup_works() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("relay");
        crate::init(&dir, Some("127.0.0.1:0".parse().expect("addr")), None).expect("init");
        let running = crate::start(&dir).await.expect("start");
        let token = crate::make_invite(
            &running.shared.relay,
            &running.shared.links(),
            1,
            Duration::from_secs(60),
        )
        .expect("invite")
        .token;
        let bob = connect(running.local_addr).await;
        let bob_id = register(&bob, token).await;
        let account = uuid::Uuid::from_slice(&bob_id).expect("uuid").to_string();

        let backup = tmp.path().join("live.backup");
        let r = admin_line(&dir, serde_json::json!({"cmd": "backup", "to": backup})).await;
        assert_eq!(r["ok"], true, "{r}");
        assert!(backup.exists());

        let r = admin_line(
            &dir,
            serde_json::json!({"cmd": "account_ban", "account": account}),
        )
        .await;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["closed"], 1);
        let reason = tokio::time::timeout(Duration::from_secs(5), bob.closed())
            .await
            .expect("closed in time");
        assert!(matches!(
            reason,
            quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == CLOSE_BANNED.into()
        ));
        let r = admin_line(&dir, serde_json::json!({"cmd": "stats"})).await;
        assert_eq!(r["accounts"], 1);
        running.shutdown().await;

        // The live backup restores into a relay that still knows bob.
        let restored = tmp.path().join("restored");
        crate::backup::restore(&backup, &restored).expect("restore");
        let r = crate::admin::execute_offline(&restored, &serde_json::json!({"cmd": "stats"}))
            .expect("offline");
        assert_eq!(
            (r["accounts"].as_u64(), r["connections"].as_u64()),
            (Some(1), Some(0))
        );
    }

    /// A client that never accepts push streams (a broken or hostile client,
    /// or one that only fetches) must not make the relay hold a task and an
    /// envelope copy per message sent to it for as long as it stays connected.
    /// Found by the throughput benchmark (bench/src/throughput.rs).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushes_to_a_client_that_never_accepts_them_are_bounded() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("relay");
        crate::init(&dir, Some("127.0.0.1:0".parse().expect("addr")), None).expect("init");
        let running = crate::start(&dir).await.expect("start");
        let invite = |uses| {
            crate::make_invite(
                &running.shared.relay,
                &running.shared.links(),
                uses,
                Duration::from_secs(60),
            )
            .expect("invite")
            .token
        };
        // Bob registers and then never calls accept_uni.
        let bob = connect(running.local_addr).await;
        let alice = connect(running.local_addr).await;
        let bob_id = register(&bob, invite(1)).await;
        register(&alice, invite(1)).await;

        const SENT: usize = 400;
        const ENVELOPE: usize = 16 * 1024;
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..SENT {
            let (alice, bob_id) = (alice.clone(), bob_id.clone());
            sends.spawn(async move {
                let mut envelope = vec![0x5a; ENVELOPE];
                envelope[..8].copy_from_slice(&(i as u64).to_be_bytes());
                call(
                    &alice,
                    request::Kind::Send(relay::Send {
                        recipient: bob_id,
                        device_id: 1,
                        registration_id: 0,
                        envelope,
                    }),
                )
                .await
            });
            if sends.len() >= 16 {
                let sent = sends.join_next().await.expect("task").expect("send");
                assert!(matches!(sent, response::Kind::Sent(_)), "{sent:?}");
            }
        }
        while let Some(sent) = sends.join_next().await {
            let sent = sent.expect("send");
            assert!(matches!(sent, response::Kind::Sent(_)), "{sent:?}");
        }
        // Let every spawned push get as far as it can.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pending = running.shared.pending_pushes();
        assert!(
            pending * ENVELOPE <= PUSH_BUDGET_BYTES,
            "{pending} pushes of {ENVELOPE} bytes are parked waiting for a client that never reads them"
        );

        // Nothing is lost: every envelope is still in bob's mailbox.
        let mut seqs = Vec::new();
        loop {
            let response::Kind::Envelopes(batch) =
                call(&bob, request::Kind::Fetch(relay::Fetch { limit: 32 })).await
            else {
                panic!("expected envelopes");
            };
            seqs.extend(batch.envelopes.iter().map(|e| e.seq));
            let ack = batch.envelopes.iter().map(|e| e.seq).collect();
            call(&bob, request::Kind::Ack(relay::Ack { seqs: ack })).await;
            if !batch.more {
                break;
            }
        }
        assert_eq!(seqs.len(), SENT);
        running.shutdown().await;
    }
}
