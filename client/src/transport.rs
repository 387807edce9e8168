//! The client's connection to its relay: QUIC with the relay's certificate pinned.
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
use sotto_wire::{DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, frame};

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

/// One QUIC connection to the relay.
pub struct Connection {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    /// Pushes read by a background task, so waiting for one can be cancelled
    /// (as `listen`'s `select!` does) without losing a half-read push.
    pushes: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Result<Push>>>,
}

/// Pushes read ahead of the caller; past this the reader stops accepting
/// streams and the relay keeps the rest in the mailbox.
const PUSH_QUEUE: usize = 64;

impl Drop for Connection {
    fn drop(&mut self) {
        // Also ends the push reader, which holds a handle to the connection.
        self.conn.close(0u32.into(), b"bye");
    }
}

impl Connection {
    /// Connects to `relay` (`host:port`), accepting only the certificate whose SPKI hashes to `pin`.
    pub async fn connect(relay: &str, pin: [u8; 32]) -> Result<Connection> {
        let addr = resolve(relay).await?;
        let endpoint = client_endpoint(addr.is_ipv6()).map_err(|e| TransportError::Connect {
            addr: relay.to_string(),
            reason: e.to_string(),
        })?;
        Self::connect_via(&endpoint, relay, pin).await
    }

    /// Like [`Connection::connect`], on an existing endpoint (many connections
    /// can share one UDP socket; the benchmark harness uses this).
    pub async fn connect_via(
        endpoint: &quinn::Endpoint,
        relay: &str,
        pin: [u8; 32],
    ) -> Result<Connection> {
        let addr = resolve(relay).await?;
        let (host, _) = relay.rsplit_once(':').unwrap_or((relay, ""));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // The server name is only used for SNI; the pin is what authenticates.
        let server_name = if host.is_empty() { "localhost" } else { host };
        let connect_err = |reason: String| TransportError::Connect {
            addr: relay.to_string(),
            reason,
        };

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinVerifier {
            pin,
            provider: provider.clone(),
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| connect_err(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![sotto_wire::ALPN.to_vec()];
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
            .connect_with(config, addr, server_name)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| connect_err("timed out after 10 s".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(PUSH_QUEUE);
        tokio::spawn(read_pushes(conn.clone(), tx));
        Ok(Connection {
            endpoint: endpoint.clone(),
            conn,
            pushes: tokio::sync::Mutex::new(rx),
        })
    }

    /// 32 bytes of TLS keying material unique to this connection, for the auth transcript.
    pub fn exporter(&self) -> Result<[u8; sotto_wire::auth::EXPORTER_LEN]> {
        let mut out = [0u8; sotto_wire::auth::EXPORTER_LEN];
        self.conn
            .export_keying_material(&mut out, sotto_wire::auth::EXPORTER_LABEL, b"")
            .map_err(|_| TransportError::Connection("TLS exporter unavailable".into()))?;
        Ok(out)
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
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| self.closed(e.to_string()))?;
        let req = Request {
            version: PROTOCOL_VERSION,
            kind: Some(kind),
        };
        frame::write(&mut send, &req)
            .await
            .map_err(|e| self.lost(e))?;
        send.finish().map_err(|e| self.closed(e.to_string()))?;
        let resp: Response = frame::read(&mut recv, DEFAULT_MAX_FRAME_BYTES)
            .await
            .map_err(|e| self.lost(e))?;
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
        self.conn.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
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
        match self.conn.close_reason() {
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
