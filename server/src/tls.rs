//! The relay's TLS identity: a self-signed certificate and its SPKI pin.
//!
//! Clients do not use CAs or domain names: the invite link carries the SHA-256
//! of the certificate's SubjectPublicKeyInfo, so a self-signed certificate made
//! by `init` is as trustworthy as the link it travels in.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// Errors making or loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not make a certificate.
    #[error("could not generate the TLS certificate: {0}")]
    Generate(rcgen::Error),
    /// The stored certificate does not parse.
    #[error("tls/cert.der is not a valid X.509 certificate")]
    BadCertificate,
    /// rustls refused the key or configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("QUIC TLS configuration refused: {0}")]
    Quic(String),
}

// By hand rather than `#[from]`, so error chains do not print the cause twice.
impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        TlsError::Generate(e)
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e)
    }
}

/// A DER certificate and its PKCS#8 private key.
pub struct CertAndKey {
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// PKCS#8 private key, DER.
    pub key_der: Vec<u8>,
}

/// Makes a self-signed certificate for `hosts` (DNS names or IP literals; IPs become IP SANs).
pub fn self_signed(hosts: &[String]) -> Result<CertAndKey, TlsError> {
    let mut names: Vec<String> = Vec::new();
    for h in hosts {
        if !h.is_empty() && !names.contains(h) {
            names.push(h.clone());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)?;
    Ok(CertAndKey {
        cert_der: certified.cert.der().to_vec(),
        key_der: certified.key_pair.serialize_der(),
    })
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|_| TlsError::BadCertificate)?;
    Ok(Sha256::digest(cert.tbs_certificate.subject_pki.raw).into())
}

/// The pin as printed and put in invite links: unpadded base64url.
pub fn pin_text(pin: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(pin)
}

/// The rustls provider the relay uses (ring), passed explicitly so nothing
/// depends on a process-wide default.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A quinn server configuration: TLS 1.3 only, ALPN `sotto/1`, bounded streams.
pub fn server_config(cert_der: &[u8], key_der: &[u8]) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec())),
        )?;
    // ALPN pins the protocol, so a peer speaking something else fails the handshake.
    tls.alpn_protocols = vec![sotto_wire::ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    // Bounds what one connection can make us hold at once.
    transport.max_concurrent_bidi_streams(32u32.into());
    // Clients never open unidirectional streams to the relay; pushes go the other way.
    transport.max_concurrent_uni_streams(0u32.into());
    // The relay never reads QUIC datagrams; quinn's default would let a client
    // park about 1.25 MB of unread ones per connection.
    transport.datagram_receive_buffer_size(None);
    transport.max_idle_timeout(Some(
        std::time::Duration::from_secs(60)
            .try_into()
            .expect("60 s is within QUIC's idle timeout range"),
    ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_stable_and_config_builds() {
        let ck = self_signed(&["localhost".into(), "127.0.0.1".into()]).expect("cert");
        let pin = spki_sha256(&ck.cert_der).expect("pin");
        assert_eq!(pin, spki_sha256(&ck.cert_der).expect("pin again"));
        assert_eq!(pin_text(&pin).len(), 43);
        assert!(server_config(&ck.cert_der, &ck.key_der).is_ok());
        let other = self_signed(&["localhost".into()]).expect("cert");
        assert_ne!(spki_sha256(&other.cert_der).expect("pin"), pin);
        assert!(spki_sha256(b"junk").is_err());
    }
}
