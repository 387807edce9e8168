//! A raw QUIC client for abuse tests: it completes the TLS handshake with any
//! certificate and then writes whatever bytes a test asks for on a stream, so
//! scenarios can check that the relay answers garbage with an error or a reset
//! and keeps serving everyone else.
//!
//! It is test-only: the certificate verifier accepts anything, which is why
//! its constructor is named `danger_*`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sotto_wire::relay::{Request, Response};

/// How long a raw exchange waits for the relay to answer or reset.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// What the relay did with one abusive stream.
#[derive(Debug)]
pub enum Outcome {
    /// It answered with a `Response` frame (for abuse, an `Error` is expected).
    Response(Response),
    /// It reset or stopped the stream, or closed it without a frame.
    Reset(String),
    /// It closed the whole connection.
    ConnectionClosed(String),
    /// It sent bytes that are not a valid `Response` frame.
    BadAnswer(String),
    /// Nothing happened within [`ANSWER_TIMEOUT`].
    NoAnswer,
}

impl Outcome {
    /// True when the relay refused the stream cleanly: an `Error` response, a
    /// reset/stop, or closing the abusive connection.
    pub fn is_refusal(&self) -> bool {
        match self {
            Outcome::Response(r) => {
                matches!(r.kind, Some(sotto_wire::relay::response::Kind::Error(_)))
            }
            Outcome::Reset(_) | Outcome::ConnectionClosed(_) => true,
            Outcome::BadAnswer(_) | Outcome::NoAnswer => false,
        }
    }
}

/// TLS 1.3 with ALPN `sotto/1` that accepts any certificate.
fn danger_tls() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DangerAcceptAnyCert(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![sotto_wire::ALPN.to_vec()];
    Ok(tls)
}

/// A QUIC connection to a relay that trusts any certificate.
pub struct RawClient {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

impl RawClient {
    /// Connects to `addr` with ALPN `sotto/1`, skipping certificate checks.
    pub async fn danger_connect(addr: SocketAddr) -> Result<RawClient, String> {
        let tls = danger_tls()?;
        let quic = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| e.to_string())?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let conn = tokio::time::timeout(
            ANSWER_TIMEOUT,
            endpoint
                .connect(addr, "localhost")
                .map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(RawClient { endpoint, conn })
    }

    /// The underlying connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Opens a stream, writes `bytes`, optionally finishes the send side, and
    /// reports what the relay did.
    pub async fn exchange(&self, bytes: &[u8], finish: bool) -> Outcome {
        match tokio::time::timeout(ANSWER_TIMEOUT, self.exchange_inner(bytes, finish)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::NoAnswer,
        }
    }

    /// Sends a well-formed `Request` frame and reports the answer.
    pub async fn request(&self, req: &Request) -> Outcome {
        self.exchange(&sotto_wire::frame::encode(req), true).await
    }

    async fn exchange_inner(&self, bytes: &[u8], finish: bool) -> Outcome {
        let (mut send, mut recv) = match self.conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return Outcome::ConnectionClosed(e.to_string()),
        };
        // A write error means the relay already stopped or reset the stream,
        // which is a valid refusal; still look at what it answered.
        let write_err = send.write_all(bytes).await.err();
        if finish && write_err.is_none() {
            let _ = send.finish();
        }
        match recv
            .read_to_end(sotto_wire::DEFAULT_MAX_FRAME_BYTES * 2)
            .await
        {
            Ok(answer) if answer.is_empty() => Outcome::Reset(match write_err {
                Some(e) => format!("empty answer after write error: {e}"),
                None => "stream finished without an answer".to_string(),
            }),
            Ok(answer) => decode_response(&answer),
            Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
                Outcome::ConnectionClosed(e.to_string())
            }
            Err(e) => Outcome::Reset(e.to_string()),
        }
    }

    /// Closes the connection and waits for the endpoint to go idle.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
    }
}

fn decode_response(answer: &[u8]) -> Outcome {
    let Some(header) = answer.get(..4) else {
        return Outcome::BadAnswer(format!("{} bytes, shorter than a header", answer.len()));
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    match answer.get(4..4 + len) {
        Some(body) => match Response::decode(body) {
            Ok(r) => Outcome::Response(r),
            Err(e) => Outcome::BadAnswer(format!("undecodable response: {e}")),
        },
        None => Outcome::BadAnswer(format!("declared {len} bytes, got {}", answer.len() - 4)),
    }
}

/// A TLS-over-TCP connection to a relay's fallback port that trusts any
/// certificate, for writing arbitrary bytes where [`sotto_wire::mux`] units go.
pub struct RawTcp {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl RawTcp {
    /// Connects to `addr` over TCP with ALPN `sotto/1`, skipping certificate checks.
    pub async fn danger_connect(addr: SocketAddr) -> Result<RawTcp, String> {
        RawTcp::danger_connect_alpn(addr, vec![sotto_wire::ALPN.to_vec()]).await
    }

    /// Like [`RawTcp::danger_connect`], offering `alpn` (none, or the wrong one).
    pub async fn danger_connect_alpn(
        addr: SocketAddr,
        alpn: Vec<Vec<u8>>,
    ) -> Result<RawTcp, String> {
        let mut tls = danger_tls()?;
        tls.alpn_protocols = alpn;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let stream = tokio::time::timeout(
            ANSWER_TIMEOUT,
            tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp),
        )
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(RawTcp { stream })
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads the next unit the relay sends as `(id, Response)`; `Err` with a
    /// description when the stream ends or nothing comes within
    /// [`ANSWER_TIMEOUT`].
    pub async fn next(&mut self) -> Result<(u32, Response), String> {
        match tokio::time::timeout(
            ANSWER_TIMEOUT,
            sotto_wire::mux::read::<Response, _>(
                &mut self.stream,
                sotto_wire::DEFAULT_MAX_FRAME_BYTES,
            ),
        )
        .await
        {
            Ok(Ok(unit)) => Ok(unit),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer".into()),
        }
    }
}

/// Accepts any server certificate; only for talking to a test relay on loopback.
#[derive(Debug)]
struct DangerAcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for DangerAcceptAnyCert {
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
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use sotto_wire::relay::{ErrorCode, response};

    use super::*;

    #[test]
    fn an_error_response_is_a_refusal_and_a_timeout_is_not() {
        let err = Response {
            version: 1,
            kind: Some(response::Kind::Error(sotto_wire::relay::Error {
                code: ErrorCode::Malformed as i32,
                message: "bad".into(),
                accounts: vec![],
                retry_after_ms: 0,
            })),
        };
        let decoded = decode_response(&sotto_wire::frame::encode(&err));
        assert!(decoded.is_refusal(), "{decoded:?}");
        assert!(!Outcome::NoAnswer.is_refusal());
        assert!(matches!(decode_response(&[0, 0]), Outcome::BadAnswer(_)));
    }
}
