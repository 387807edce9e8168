//! TLS over TCP on the QUIC port, for networks that block UDP (many
//! corporate and parliamentary ones do).
//!
//! The same requests, responses and pushes as QUIC, multiplexed on one
//! stream by [`sotto_wire::mux`], and the same TLS certificate, ALPN, TLS
//! exporter (so the same auth transcript) and limits. One reader task per
//! connection reads units in order and hands each request to its own task
//! (at most [`MAX_IN_FLIGHT`] at once, after which the reader waits and TCP
//! pushes back on the client); one writer task owns the write half, so
//! responses and pushes from many tasks never interleave mid-frame.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto_wire::auth::{EXPORTER_LABEL, EXPORTER_LEN};
use sotto_wire::frame::{self, FrameError};
use sotto_wire::mux;
use sotto_wire::relay::{ErrorCode, Request};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::error_response;
use crate::net::{self, Peer, Shared};

/// Requests one connection may have in progress (QUIC's stream limit is the same).
const MAX_IN_FLIGHT: usize = 32;
/// Units waiting for the writer; past this, request tasks and pushes wait.
const WRITE_QUEUE: usize = 64;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing (not even a keep-alive, which clients send
/// every 15 s) for this long is closed, like QUIC's idle timeout. A unit must
/// also arrive whole within it, so a trickling client holds only itself.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The sending side of one TCP connection: what pushes and responses go through.
#[derive(Clone)]
pub(crate) struct TcpPeer {
    tx: mpsc::Sender<Vec<u8>>,
    closing: CancellationToken,
    reason: Arc<Mutex<Option<Vec<u8>>>>,
}

impl TcpPeer {
    /// Queues one encoded unit; false once the connection is closing.
    pub(crate) async fn send(&self, unit: Vec<u8>) -> bool {
        if self.closing.is_cancelled() {
            return false;
        }
        self.tx.send(unit).await.is_ok()
    }

    /// Tells the client `reason` on [`mux::CLOSING`] and closes (the first reason wins).
    pub(crate) fn close(&self, reason: &[u8]) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason.to_vec());
        }
        self.closing.cancel();
    }
}

/// Accepts TLS-over-TCP connections on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accepting a TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if !shared.handshake_allowed(addr.ip()) {
            tracing::debug!("handshake rate limit; refusing a TCP connection");
            drop(tcp);
            continue;
        }
        // As on QUIC: the unauthenticated budget first, the signed-in
        // limits once the connection signs in.
        let slot = shared.admit_unauthenticated(addr.ip());
        let (shared, acceptor, shutdown) =
            (Arc::clone(&shared), acceptor.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let tls = tokio::select! {
                () = slot.token.cancelled() => {
                    tracing::debug!("closed a TCP connection in its handshake to make room");
                    return;
                }
                done = handshake => match done {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake over TCP failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake over TCP timed out");
                        return;
                    }
                },
            };
            let _open = shared.open_connection();
            handle_connection(tls, addr.ip(), slot, &shared, shutdown).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// What went wrong reading one unit.
enum UnitError {
    Frame(FrameError),
    Refused(net::FrameRefusal),
}

impl From<FrameError> for UnitError {
    fn from(e: FrameError) -> Self {
        UnitError::Frame(e)
    }
}

/// Reads one unit (channel id, then a frame), taking the unauthenticated
/// byte budget ([`Shared::frame_budget`]) before reading a request's body
/// on a connection that has not signed in. Keep-alives and the body of a
/// unit in progress do not count as activity; its header does.
async fn read_unit<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    shared: &Shared,
    ctx: &net::ConnCtx,
) -> Result<(u32, Vec<u8>, Option<net::FrameBudget>), UnitError> {
    let id = u32::from_be_bytes(frame::read_header::<{ mux::ID_LEN }, _>(reader).await?);
    let request = id != mux::PUSH && id != mux::CLOSING;
    let _busy = request.then(|| ctx.in_progress());
    let len = u32::from_be_bytes(frame::read_header(reader).await.map_err(|e| match e {
        // The unit started: a stream ending now ends it mid-way.
        FrameError::Eof => FrameError::Truncated,
        other => other,
    })?) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max }.into());
    }
    let budget = if request {
        shared.frame_budget(ctx, len).map_err(UnitError::Refused)?
    } else if !ctx.signed_in() && len > 0 {
        // Keep-alives are empty; anything else on them before sign-in is
        // refused like an oversized frame.
        return Err(UnitError::Refused(net::FrameRefusal::TooLarge));
    } else {
        None
    };
    let body = frame::read_body(reader, len).await?;
    Ok((id, body, budget))
}

async fn handle_connection(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    ip: std::net::IpAddr,
    slot: net::UnauthSlot,
    shared: &Arc<Shared>,
    shutdown: CancellationToken,
) {
    // rustls completes a handshake that offers no ALPN at all; QUIC
    // requires it. Serve only peers that asked for `sotto/1`, so the TCP
    // port does not answer other protocols (or scanners) with ours.
    if tls.get_ref().1.alpn_protocol() != Some(sotto_wire::ALPN) {
        tracing::debug!("TLS over TCP without ALPN sotto/1; closing");
        return;
    }
    let mut exporter = [0u8; EXPORTER_LEN];
    if tls
        .get_ref()
        .1
        .export_keying_material(&mut exporter, EXPORTER_LABEL, Some(b""))
        .is_err()
    {
        return;
    }
    let (mut reader, mut writer) = tokio::io::split(tls);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let peer = TcpPeer {
        tx,
        closing: CancellationToken::new(),
        reason: Arc::new(Mutex::new(None)),
    };
    let writer_task = {
        let peer = peer.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    unit = rx.recv() => match unit {
                        Some(unit) => {
                            if writer.write_all(&unit).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                    () = peer.closing.cancelled() => break,
                }
            }
            let reason = peer.reason.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(reason) = reason {
                let why = String::from_utf8_lossy(&reason).into_owned();
                let last = mux::encode(
                    mux::CLOSING,
                    &error_response(ErrorCode::ErrorUnspecified, &why),
                );
                let _ = writer.write_all(&last).await;
            }
            let _ = writer.shutdown().await;
        })
    };
    let evicted = slot.token.clone();
    let ctx = shared.new_ctx(Peer::Tcp(peer.clone()), exporter, ip, slot);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let requests = TaskTracker::new();
    let max = shared.relay.config().max_frame_bytes;
    let watchdog = net::watch_unauthenticated(shared, &ctx, evicted);
    tokio::pin!(watchdog);
    loop {
        let unit = tokio::select! {
            () = shutdown.cancelled() => {
                peer.close(b"relay shutting down");
                break;
            }
            () = peer.closing.cancelled() => break,
            why = &mut watchdog => {
                peer.close(why);
                break;
            }
            unit = tokio::time::timeout(IDLE_TIMEOUT, read_unit(&mut reader, max, shared, &ctx)) => unit,
        };
        let (id, body, budget) = match unit {
            Err(_) => {
                peer.close(b"idle for too long");
                break;
            }
            Ok(Ok(unit)) => unit,
            Ok(Err(UnitError::Frame(FrameError::TooLarge { .. }))) => {
                // The body cannot be skipped without reading it all.
                peer.close(b"request frame is too large");
                break;
            }
            Ok(Err(UnitError::Refused(why))) => {
                // Nor here; the client hears why and may reconnect.
                let why = why.response();
                let text = match &why.kind {
                    Some(sotto_wire::relay::response::Kind::Error(e)) => e.message.clone(),
                    _ => String::new(),
                };
                peer.close(text.as_bytes());
                break;
            }
            Ok(Err(UnitError::Frame(_))) => break, // Closed, cut off mid-unit, or reset.
        };
        if id == mux::PUSH {
            continue; // A keep-alive.
        }
        if id == mux::CLOSING {
            ctx.bad_frame();
            continue;
        }
        let req = match <Request as prost::Message>::decode(body.as_slice()) {
            Ok(req) => req,
            Err(_) => {
                ctx.bad_frame();
                let bad = error_response(ErrorCode::Malformed, "request does not decode");
                peer.send(mux::encode(id, &bad)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let (shared, ctx, peer) = (Arc::clone(shared), Arc::clone(&ctx), peer.clone());
        requests.spawn(async move {
            let _permit = permit;
            let _budget = budget;
            let _busy = ctx.in_progress();
            let (response, push) = net::serve_request(&shared, &ctx, req).await;
            peer.send(mux::encode(id, &response)).await;
            for (to, envelope) in push {
                net::push_to(&shared, to, envelope);
            }
        });
    }
    requests.close();
    requests.wait().await;
    shared.forget(&ctx);
    peer.closing.cancel();
    let _ = writer_task.await;
}
