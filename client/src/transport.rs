//! The client's connection to its relay: QUIC with the relay's certificate
//! pinned, or, on networks that block UDP, TLS over TCP to the same port
//! carrying the same frames ([`sotto_wire::mux`]).
//!
//! [`Connection::connect_preferring`] starts the preferred route and, if it
//! has not connected within [`FALLBACK_DELAY`] (or failed sooner), races the
//! other one; the first to finish its handshake wins. The engine remembers
//! the winner, so a client on a UDP-blocking network goes straight to TCP.
//!
//! A relay run by a union branch usually has no domain and no CA certificate, so
//! the client does not use web PKI at all: it accepts exactly the TLS key whose
//! SubjectPublicKeyInfo hashes to the pin in the invite link (what a network
//! attacker or a captive portal cannot forge), and still checks the TLS 1.3
//! handshake signature so the peer proves it holds that key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use sotto_wire::relay::{ErrorCode, Push, Request, Response, request, response};
use sotto_wire::{DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, frame, mux};

/// Errors talking to the relay.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The relay address does not resolve.
    #[error("cannot resolve relay address {0}")]
    Resolve(String),
    /// Connecting failed (relay down, network blocked, pin mismatch).
    #[error("cannot reach the relay at {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection broke during a request.
    #[error("connection to the relay failed: {0}")]
    Connection(String),
    /// A frame from the relay was bad.
    #[error("bad frame from the relay: {0}")]
    Frame(#[from] frame::FrameError),
    /// The relay refused the request.
    #[error("relay refused: {message} ({code:?})")]
    Refused {
        /// Machine-readable reason.
        code: ErrorCode,
        /// The relay's short explanation.
        message: String,
        /// For group sends: the recipients (account ids) the refusal is about.
        accounts: Vec<Vec<u8>>,
    },
    /// The relay answered with a response of the wrong kind.
    #[error("unexpected answer from the relay")]
    Unexpected,
}

/// Result alias for transport calls.
pub type Result<T> = std::result::Result<T, TransportError>;

/// Longest wait for one answer from the relay.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the preferred route gets before the other one is tried too.
pub const FALLBACK_DELAY: Duration = Duration::from_millis(1500);
/// Longest wait for a connection, over either route.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a TCP connection tells the relay it is alive (QUIC has its own).
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Which way a connection reaches the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// QUIC over UDP: the normal way.
    Quic,
    /// TLS over TCP: for networks that block UDP.
    Tcp,
}

impl Route {
    /// The name stored in a profile (`AccountRecord::transport_hint`).
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Quic => "quic",
            Route::Tcp => "tcp",
        }
    }

    /// The route a stored hint names; QUIC for anything else.
    pub fn from_hint(hint: Option<&str>) -> Route {
        match hint {
            Some("tcp") => Route::Tcp,
            _ => Route::Quic,
        }
    }

    fn other(self) -> Route {
        match self {
            Route::Quic => Route::Tcp,
            Route::Tcp => Route::Quic,
        }
    }
}

/// One connection to the relay, over QUIC or TLS over TCP.
pub struct Connection {
    inner: Inner,
    exporter: [u8; sotto_wire::auth::EXPORTER_LEN],
    /// Pushes read by a background task, so waiting for one can be cancelled
    /// (as `listen`'s `select!` does) without losing a half-read push.
    pushes: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Result<Push>>>,
}

enum Inner {
    Quic {
        endpoint: quinn::Endpoint,
        conn: quinn::Connection,
    },
    Tcp(TcpLink),
}

/// The request side of a TLS-over-TCP connection; a reader and a writer
/// task own the stream halves.
struct TcpLink {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: std::sync::atomic::AtomicU32,
    /// Why the connection ended, once it has.
    closed: Arc<std::sync::Mutex<Option<String>>>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

type Pending = Arc<
    std::sync::Mutex<
        std::collections::HashMap<u32, tokio::sync::oneshot::Sender<Result<Response>>>,
    >,
>;

/// Pushes read ahead of the caller; past this the reader stops accepting
/// streams and the relay keeps the rest in the mailbox.
const PUSH_QUEUE: usize = 64;

impl Drop for Connection {
    fn drop(&mut self) {
        match &self.inner {
            // Also ends the push reader, which holds a handle to the connection.
            Inner::Quic { conn, .. } => conn.close(0u32.into(), b"bye"),
            // Dropping the stream halves closes the socket.
            Inner::Tcp(link) => link.tasks.iter().for_each(|t| t.abort()),
        }
    }
}

/// The TLS configuration both routes use: TLS 1.3, ALPN `sotto/1`, and the
/// pin instead of web PKI.
fn client_tls(pin: [u8; 32]) -> std::result::Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinVerifier {
        pin,
        provider: provider.clone(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![sotto_wire::ALPN.to_vec()];
    Ok(tls)
}

/// The name sent in SNI; the pin is what authenticates.
fn server_name(relay: &str) -> String {
    let (host, _) = relay.rsplit_once(':').unwrap_or((relay, ""));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        "localhost".to_string()
    } else {
        host.to_string()
    }
}

impl Connection {
    /// Connects to `relay` (`host:port`), accepting only the certificate
    /// whose SPKI hashes to `pin`: QUIC first, TLS over TCP if UDP is blocked.
    pub async fn connect(relay: &str, pin: [u8; 32]) -> Result<Connection> {
        Self::connect_preferring(relay, pin, Route::Quic).await
    }

    /// Connects trying `prefer` first; after [`FALLBACK_DELAY`] without a
    /// connection, or as soon as it fails, the other route races it.
    ///
    /// A refused TCP connection means nothing listens on the relay's port
    /// (the relay serves TCP and QUIC on the same port): unless QUIC has
    /// connected within [`FALLBACK_DELAY`] of starting, that is reported at
    /// once as the relay being down, instead of waiting [`CONNECT_TIMEOUT`]
    /// for a QUIC answer that will not come. Black holes (nothing answers at
    /// all) still get the whole race.
    pub async fn connect_preferring(
        relay: &str,
        pin: [u8; 32],
        prefer: Route,
    ) -> Result<Connection> {
        let addr = resolve(relay).await?;
        let started = tokio::time::Instant::now();
        let first_failed = tokio::sync::Notify::new();
        let first = async {
            let r = Self::connect_route(prefer, relay, addr, pin).await;
            if r.is_err() {
                first_failed.notify_one();
            }
            r
        };
        let second = async {
            tokio::select! {
                () = tokio::time::sleep(FALLBACK_DELAY) => {}
                () = first_failed.notified() => {}
            }
            Self::connect_route(prefer.other(), relay, addr, pin).await
        };
        tokio::pin!(first, second);
        let (mut first_err, mut second_err) = (None, None);
        // Set once TCP is refused: when QUIC's grace runs out.
        let mut down_at: Option<tokio::time::Instant> = None;
        let race = async {
            loop {
                let deadline = down_at;
                let down = async move {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = &mut first, if first_err.is_none() => match r {
                        Ok(c) => return Ok(c),
                        Err(e) => first_err = Some(e),
                    },
                    r = &mut second, if second_err.is_none() => match r {
                        Ok(c) => return Ok(c),
                        Err(e) => second_err = Some(e),
                    },
                    () = down => {
                        return Err(format!(
                            "the relay is not running there (TLS over TCP: connection refused; \
                             QUIC: no answer within {} ms)",
                            FALLBACK_DELAY.as_millis()
                        ));
                    }
                }
                if first_err.iter().chain(&second_err).any(|e| e.refused) {
                    down_at.get_or_insert(started + FALLBACK_DELAY);
                }
                if let (Some(a), Some(b)) = (&first_err, &second_err) {
                    return Err(format!(
                        "{}: {}; {}: {}",
                        describe(prefer),
                        reason(&a.error),
                        describe(prefer.other()),
                        reason(&b.error)
                    ));
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, race).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(reason)) => Err(TransportError::Connect {
                addr: relay.to_string(),
                reason,
            }),
            Err(_) => Err(TransportError::Connect {
                addr: relay.to_string(),
                reason: format!(
                    "no answer over QUIC (UDP) or TLS over TCP within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    async fn connect_route(
        route: Route,
        relay: &str,
        addr: SocketAddr,
        pin: [u8; 32],
    ) -> std::result::Result<Connection, RouteFailed> {
        match route {
            Route::Quic => {
                let endpoint = client_endpoint(addr.is_ipv6()).map_err(|e| {
                    RouteFailed::other(TransportError::Connect {
                        addr: relay.to_string(),
                        reason: e.to_string(),
                    })
                })?;
                Self::connect_via(&endpoint, relay, pin)
                    .await
                    .map_err(RouteFailed::other)
            }
            Route::Tcp => Self::connect_tcp(relay, addr, pin).await,
        }
    }

    /// The route this connection took.
    pub fn route(&self) -> Route {
        match self.inner {
            Inner::Quic { .. } => Route::Quic,
            Inner::Tcp(_) => Route::Tcp,
        }
    }

    /// QUIC only, on an existing endpoint (many connections can share one
    /// UDP socket; the benchmark harness uses this).
    pub async fn connect_via(
        endpoint: &quinn::Endpoint,
        relay: &str,
        pin: [u8; 32],
    ) -> Result<Connection> {
        let addr = resolve(relay).await?;
        let server_name = server_name(relay);
        let connect_err = |reason: String| TransportError::Connect {
            addr: relay.to_string(),
            reason,
        };
        let tls = client_tls(pin).map_err(|e| connect_err(e.to_string()))?;
        let quic = QuicClientConfig::try_from(tls).map_err(|e| connect_err(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(15)));
        transport.max_idle_timeout(Some(
            Duration::from_secs(60)
                .try_into()
                .expect("60 s is a valid idle timeout"),
        ));
        config.transport_config(Arc::new(transport));
        let connecting = endpoint
            .connect_with(config, addr, &server_name)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| connect_err(format!("timed out after {} s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| connect_err(e.to_string()))?;
        let mut exporter = [0u8; sotto_wire::auth::EXPORTER_LEN];
        conn.export_keying_material(&mut exporter, sotto_wire::auth::EXPORTER_LABEL, b"")
            .map_err(|_| connect_err("TLS exporter unavailable".into()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(PUSH_QUEUE);
        tokio::spawn(read_pushes(conn.clone(), tx));
        Ok(Connection {
            inner: Inner::Quic {
                endpoint: endpoint.clone(),
                conn,
            },
            exporter,
            pushes: tokio::sync::Mutex::new(rx),
        })
    }

    /// TLS over TCP to the relay's port.
    async fn connect_tcp(
        relay: &str,
        addr: SocketAddr,
        pin: [u8; 32],
    ) -> std::result::Result<Connection, RouteFailed> {
        let connect_err = |reason: String| {
            RouteFailed::other(TransportError::Connect {
                addr: relay.to_string(),
                reason,
            })
        };
        let tls = client_tls(pin).map_err(|e| connect_err(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(server_name(relay))
            .map_err(|e| connect_err(e.to_string()))?;
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| RouteFailed {
                    refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
                    error: TransportError::Connect {
                        addr: relay.to_string(),
                        reason: e.to_string(),
                    },
                })?;
            tcp.set_nodelay(true)
                .map_err(|e| connect_err(e.to_string()))?;
            tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| connect_err(e.to_string()))
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                connect_err(format!("timed out after {} s", CONNECT_TIMEOUT.as_secs()))
            })??;
        let mut exporter = [0u8; sotto_wire::auth::EXPORTER_LEN];
        stream
            .get_ref()
            .1
            .export_keying_material(&mut exporter, sotto_wire::auth::EXPORTER_LABEL, Some(b""))
            .map_err(|_| connect_err("TLS exporter unavailable".into()))?;
        let (reader, writer) = tokio::io::split(stream);
        let (push_tx, push_rx) = tokio::sync::mpsc::channel(PUSH_QUEUE);
        let (tx, rx) = tokio::sync::mpsc::channel(PUSH_QUEUE);
        let pending: Pending = Arc::default();
        let closed = Arc::new(std::sync::Mutex::new(None));
        let read = tokio::spawn(tcp_reader(
            reader,
            Arc::clone(&pending),
            Arc::clone(&closed),
            push_tx,
        ));
        let write = tokio::spawn(tcp_writer(writer, rx));
        Ok(Connection {
            inner: Inner::Tcp(TcpLink {
                tx,
                pending,
                next_id: std::sync::atomic::AtomicU32::new(1),
                closed,
                tasks: [read, write],
            }),
            exporter,
            pushes: tokio::sync::Mutex::new(push_rx),
        })
    }

    /// 32 bytes of TLS keying material unique to this connection, for the auth transcript.
    pub fn exporter(&self) -> Result<[u8; sotto_wire::auth::EXPORTER_LEN]> {
        Ok(self.exporter)
    }

    /// Sends one request on its own stream and waits for the answer.
    ///
    /// A relay `Error` answer becomes [`TransportError::Refused`].
    pub async fn request(&self, kind: request::Kind) -> Result<response::Kind> {
        // A relay that died mid-request sends nothing more; without a bound we
        // would wait for QUIC's idle timeout.
        tokio::time::timeout(REQUEST_TIMEOUT, self.request_inner(kind))
            .await
            .map_err(|_| {
                TransportError::Connection(format!(
                    "the relay did not answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?
    }

    async fn request_inner(&self, kind: request::Kind) -> Result<response::Kind> {
        let req = Request {
            version: PROTOCOL_VERSION,
            kind: Some(kind),
        };
        let resp = match &self.inner {
            Inner::Quic { conn, .. } => {
                let (mut send, mut recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| self.closed(e.to_string()))?;
                frame::write(&mut send, &req)
                    .await
                    .map_err(|e| self.lost(e))?;
                send.finish().map_err(|e| self.closed(e.to_string()))?;
                frame::read(&mut recv, DEFAULT_MAX_FRAME_BYTES)
                    .await
                    .map_err(|e| self.lost(e))?
            }
            Inner::Tcp(link) => link.request(&req).await?,
        };
        match resp.kind {
            Some(response::Kind::Error(e)) => Err(TransportError::Refused {
                code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::ErrorUnspecified),
                message: e.message,
                accounts: e.accounts,
            }),
            Some(kind) => Ok(kind),
            None => Err(TransportError::Unexpected),
        }
    }

    /// Waits for the next envelope push from the relay.
    ///
    /// Cancel-safe: a push is read whole by a background task before it is
    /// handed out. An error for one damaged push stream is returned once; the
    /// connection's end is returned as a connection error.
    pub async fn next_push(&self) -> Result<Push> {
        let mut pushes = self.pushes.lock().await;
        pushes
            .recv()
            .await
            .unwrap_or_else(|| Err(TransportError::Connection("connection closed".into())))
    }

    /// Closes the connection politely and waits briefly for the relay to hear it.
    pub async fn close(self) {
        if let Inner::Quic { endpoint, conn } = &self.inner {
            conn.close(0u32.into(), b"bye");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

impl TcpLink {
    async fn request(&self, req: &Request) -> Result<Response> {
        use std::sync::atomic::Ordering;
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != mux::PUSH && id != mux::CLOSING {
                break id;
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let gone = || {
            let why = self
                .closed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            TransportError::Connection(why.unwrap_or_else(|| "connection closed".into()))
        };
        if self.tx.send(mux::encode(id, req)).await.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(gone());
        }
        // A request given up on (timeout) leaves its entry; the reader drops
        // it when the answer comes, or when the connection ends.
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// Reads the relay's units: answers go to whoever waits on their id, pushes
/// to the push queue. On the end of the stream, everyone waiting hears why.
async fn tcp_reader<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    pending: Pending,
    closed: Arc<std::sync::Mutex<Option<String>>>,
    pushes: tokio::sync::mpsc::Sender<Result<Push>>,
) {
    use prost::Message;
    let why = loop {
        let (id, body) = match mux::read_unit(&mut reader, DEFAULT_MAX_FRAME_BYTES).await {
            Ok(unit) => unit,
            Err(frame::FrameError::Eof) => break "the relay closed the connection".to_string(),
            Err(e) => break format!("connection to the relay lost: {e}"),
        };
        match id {
            mux::PUSH => {
                let push = Push::decode(body.as_slice())
                    .map_err(|e| TransportError::Frame(frame::FrameError::Malformed(e)));
                // Never wait here: answers share this stream. A push nobody
                // takes in time is dropped; its envelope stays in the
                // mailbox until a fetch acknowledges it.
                let _ = pushes.try_send(push);
            }
            mux::CLOSING => {
                let reason = match Response::decode(body.as_slice()).map(|r| r.kind) {
                    Ok(Some(response::Kind::Error(e))) => e.message,
                    _ => "no reason given".to_string(),
                };
                break format!("the relay closed the connection: {reason}");
            }
            id => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(waiter) = waiter {
                    let answer = Response::decode(body.as_slice())
                        .map_err(|e| TransportError::Frame(frame::FrameError::Malformed(e)));
                    let _ = waiter.send(answer);
                }
            }
        }
    };
    *closed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
    let waiting: Vec<_> = pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    for (_, waiter) in waiting {
        let _ = waiter.send(Err(TransportError::Connection(why.clone())));
    }
    let _ = pushes.send(Err(TransportError::Connection(why))).await;
}

/// Writes requests in order, and a keep-alive when there is nothing to say,
/// so the relay does not close an idle `listen`.
async fn tcp_writer<W: tokio::io::AsyncWrite + Unpin>(
    mut writer: W,
    mut units: tokio::sync::mpsc::Receiver<Vec<u8>>,
) {
    use tokio::io::AsyncWriteExt;
    let keepalive = mux::encode(mux::PUSH, &Request::default());
    loop {
        let unit = tokio::select! {
            unit = units.recv() => match unit {
                Some(unit) => unit,
                None => break,
            },
            () = tokio::time::sleep(TCP_KEEPALIVE) => keepalive.clone(),
        };
        if writer.write_all(&unit).await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// Why one route failed, and whether it was a refused TCP connection
/// (nothing listens on the relay's port).
struct RouteFailed {
    error: TransportError,
    refused: bool,
}

impl RouteFailed {
    fn other(error: TransportError) -> RouteFailed {
        RouteFailed {
            error,
            refused: false,
        }
    }
}

fn describe(route: Route) -> &'static str {
    match route {
        Route::Quic => "QUIC (UDP)",
        Route::Tcp => "TLS over TCP",
    }
}

fn reason(e: &TransportError) -> String {
    match e {
        TransportError::Connect { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Accepts the relay's push streams and reads each whole, until the
/// connection ends or nobody listens any more.
async fn read_pushes(conn: quinn::Connection, tx: tokio::sync::mpsc::Sender<Result<Push>>) {
    loop {
        let item = match conn.accept_uni().await {
            // One damaged or reset stream is not the connection's end.
            Ok(mut recv) => frame::read(&mut recv, DEFAULT_MAX_FRAME_BYTES)
                .await
                .map_err(TransportError::Frame),
            Err(e) => {
                let _ = tx
                    .send(Err(TransportError::Connection(e.to_string())))
                    .await;
                return;
            }
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

impl Connection {
    /// A stream that failed underneath (the connection was lost or reset) is
    /// a connection failure, not a bad frame: say so, and let callers reconnect.
    fn lost(&self, e: frame::FrameError) -> TransportError {
        match e {
            frame::FrameError::Io(io) => self.closed(io.to_string()),
            other => TransportError::Frame(other),
        }
    }

    /// A connection error, with the relay's own reason when it closed the
    /// connection on purpose (busy, banned, too many connections).
    fn closed(&self, fallback: String) -> TransportError {
        let Inner::Quic { conn, .. } = &self.inner else {
            return TransportError::Connection(fallback);
        };
        match conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(close)) if !close.reason.is_empty() => {
                TransportError::Connection(format!(
                    "the relay closed the connection: {}",
                    String::from_utf8_lossy(&close.reason)
                ))
            }
            _ => TransportError::Connection(fallback),
        }
    }
}

/// A client endpoint on an ephemeral UDP port.
pub fn client_endpoint(ipv6: bool) -> std::io::Result<quinn::Endpoint> {
    let bind: SocketAddr = if ipv6 {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    quinn::Endpoint::client(bind)
}

async fn resolve(relay: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(relay)
        .await
        .map_err(|_| TransportError::Resolve(relay.to_string()))?
        .next()
        .ok_or_else(|| TransportError::Resolve(relay.to_string()))
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo, the pin carried in invite links.
pub fn spki_pin(cert_der: &[u8]) -> Option<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(Sha256::digest(cert.tbs_certificate.subject_pki.raw).into())
}

/// Accepts exactly the pinned key; see the module docs for why not web PKI.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match spki_pin(end_entity.as_ref()) {
            Some(pin) if pin == self.pin => Ok(ServerCertVerified::assertion()),
            Some(_) => Err(rustls::Error::General(
                "relay certificate does not match the pin in the invite link".into(),
            )),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is disabled in the client config; refuse if it is ever reached.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
