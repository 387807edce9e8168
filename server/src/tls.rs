//! The relay's TLS identity: a self-signed certificate and its SPKI pin.
//!
//! Clients do not use CAs or domain names: the invite link carries the SHA-256
//! of the certificate's SubjectPublicKeyInfo, so a self-signed certificate made
//! by `init` is as trustworthy as the link it travels in.

use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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
    /// An operator-supplied PEM file is missing or unreadable.
    #[error("cannot use {path}: {why}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
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

/// How long a self-signed certificate is valid: about a year, like any
/// server's. rcgen's defaults (1975 to 4096, subject "rcgen self signed
/// cert") single a relay out to scanners.
pub const SELF_SIGNED_DAYS: i64 = 365;
/// A self-signed certificate this close to its end (or past it, or made
/// with rcgen's defaults) is renewed with the same key when the relay starts.
pub const RENEW_WITHIN_DAYS: i64 = 30;

/// Makes a self-signed certificate for `hosts` (DNS names or IP literals;
/// IPs become IP SANs) with a new key, valid from yesterday for
/// [`SELF_SIGNED_DAYS`].
pub fn self_signed(hosts: &[String]) -> Result<CertAndKey, TlsError> {
    let key = rcgen::KeyPair::generate()?;
    self_signed_with(hosts, &key, unix_days_now())
}

/// Like [`self_signed`] with the key in `key_der` (PKCS#8), so the SPKI pin
/// in members' invite links stays the same.
pub fn renew_self_signed(hosts: &[String], key_der: &[u8]) -> Result<CertAndKey, TlsError> {
    let key = rcgen::KeyPair::try_from(key_der)?;
    self_signed_with(hosts, &key, unix_days_now())
}

fn self_signed_with(
    hosts: &[String],
    key: &rcgen::KeyPair,
    today: i64,
) -> Result<CertAndKey, TlsError> {
    let mut names: Vec<String> = Vec::new();
    for h in hosts {
        if !h.is_empty() && !names.contains(h) {
            names.push(h.clone());
        }
    }
    let mut params = rcgen::CertificateParams::new(names.clone())?;
    // A plain subject (the host clients dial), as any server certificate has.
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        names.first().map_or("localhost", String::as_str),
    );
    params.distinguished_name = dn;
    let (y, m, d) = civil_date(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_date(today + SELF_SIGNED_DAYS);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.self_signed(key)?;
    Ok(CertAndKey {
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

/// Whether a self-signed certificate should be renewed (same key) now:
/// it ends within [`RENEW_WITHIN_DAYS`] or has ended, or it runs for far
/// longer than [`SELF_SIGNED_DAYS`] (made by an older `init`, with rcgen's
/// defaults). Clients pin the key and never look at the dates, so an old
/// certificate keeps working; renewing is for scanners and hygiene.
pub fn needs_renewal(cert_der: &[u8]) -> Result<bool, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|_| TlsError::BadCertificate)?;
    let now = unix_days_now() * 86_400;
    let left = cert.validity().not_after.timestamp() - now;
    Ok(!(RENEW_WITHIN_DAYS * 86_400..=(SELF_SIGNED_DAYS + 2) * 86_400).contains(&left))
}

/// Days since the Unix epoch, today.
fn unix_days_now() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs / 86_400).unwrap_or(0)
}

/// The calendar date (year, month, day) `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_date(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo.
///
/// Clients pin this, not the certificate: a renewed certificate with the
/// same key keeps every member connected; a new key needs new invite links.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|_| TlsError::BadCertificate)?;
    Ok(Sha256::digest(cert.tbs_certificate.subject_pki.raw).into())
}

/// The pin as printed and put in invite links: unpadded base64url.
pub fn pin_text(pin: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(pin)
}

/// A certificate chain and its private key, as served.
#[derive(Clone)]
pub struct Identity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    /// The self-signed pair `init` wrote (DER certificate, PKCS#8 key).
    pub fn from_der(cert_der: &[u8], key_der: &[u8]) -> Self {
        Self {
            chain: vec![CertificateDer::from(cert_der.to_vec())],
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key_der.to_vec(),
            ))),
        }
    }

    /// An operator-supplied chain and key in PEM (for example from an ACME client).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let pem_err = |path: &Path, why: String| TlsError::Pem {
            path: path.display().to_string(),
            why,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_err(cert, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_err(cert, "no CERTIFICATE block in it".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e.to_string()))?;
        let identity = Self {
            chain,
            key: Arc::new(key_der),
        };
        // Refuse a key that does not belong to the certificate now, rather
        // than fail every handshake later.
        identity.certified_key()?;
        Ok(identity)
    }

    /// SHA-256 of the leaf's SubjectPublicKeyInfo: the pin in invite links.
    pub fn pin(&self) -> Result<[u8; 32], TlsError> {
        spki_sha256(&self.chain[0])
    }

    fn certified_key(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let signing = provider()
            .key_provider
            .load_private_key(self.key.clone_key())?;
        let certified = CertifiedKey::new(self.chain.clone(), signing);
        certified.keys_match()?;
        Ok(Arc::new(certified))
    }
}

/// The certificate the relay serves, shared by QUIC and TCP and replaceable
/// while serving (`SIGHUP`): new handshakes get the new one, open
/// connections carry on.
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertResolver")
    }
}

impl CertResolver {
    /// Serves `identity`.
    pub fn new(identity: &Identity) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: RwLock::new(identity.certified_key()?),
        }))
    }

    /// Serves `identity` from the next handshake on.
    pub fn replace(&self, identity: &Identity) -> Result<(), TlsError> {
        let next = identity.certified_key()?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// The rustls configuration for TLS over TCP: TLS 1.3 only (the auth
/// transcript needs its exporter), ALPN `sotto/1`.
pub fn tcp_server_config(
    resolver: Arc<CertResolver>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![sotto_wire::ALPN.to_vec()];
    Ok(Arc::new(tls))
}

/// The rustls provider the relay uses (ring), passed explicitly so nothing
/// depends on a process-wide default.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Unread bytes quinn may buffer for a connection across its streams (the
/// connection flow-control window it advertises in the handshake) until the
/// connection signs in, when `net` raises it to quinn's default. Requests
/// before sign-in are read as they arrive, so this only slows a registration
/// or a group write by a round trip or two; it stops strangers parking data
/// in quinn's buffers. It must be set here: a window already advertised
/// cannot be taken back.
pub const PRE_AUTH_RECEIVE_WINDOW: u32 = 64 * 1024;

/// A quinn server configuration: TLS 1.3 only, ALPN `sotto/1`, bounded streams.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
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
    transport.receive_window(quinn::VarInt::from_u32(PRE_AUTH_RECEIVE_WINDOW));
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
        let identity = Identity::from_der(&ck.cert_der, &ck.key_der);
        assert_eq!(identity.pin().expect("pin"), pin);
        let resolver = CertResolver::new(&identity).expect("resolver");
        assert!(server_config(Arc::clone(&resolver)).is_ok());
        assert!(tcp_server_config(resolver).is_ok());
        let other = self_signed(&["localhost".into()]).expect("cert");
        assert_ne!(spki_sha256(&other.cert_der).expect("pin"), pin);
        assert!(spki_sha256(b"junk").is_err());
    }

    #[test]
    fn self_signed_looks_ordinary_and_renews_with_the_same_key() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        let ck = self_signed(&["relay.example.org".into(), "127.0.0.1".into()]).expect("cert");
        let (_, cert) = x509_parser::parse_x509_certificate(&ck.cert_der).expect("parses");
        let subject = cert.subject().to_string();
        assert_eq!(subject, "CN=relay.example.org");
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert!((365..=367).contains(&days), "{days} days");
        assert!(!needs_renewal(&ck.cert_der).expect("parses"));
        // An old init's certificate (rcgen's defaults) is renewed, keeping the pin.
        let old = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("old");
        assert!(needs_renewal(old.cert.der()).expect("parses"));
        let renewed =
            renew_self_signed(&["localhost".into()], &old.key_pair.serialize_der()).expect("renew");
        assert_eq!(
            spki_sha256(&renewed.cert_der).expect("pin"),
            spki_sha256(old.cert.der()).expect("pin")
        );
        assert!(!needs_renewal(&renewed.cert_der).expect("parses"));
        // One that ends within the renewal window is renewed too.
        let key = rcgen::KeyPair::generate().expect("key");
        let ending = self_signed_with(
            &["localhost".into()],
            &key,
            unix_days_now() - SELF_SIGNED_DAYS + 10,
        )
        .expect("cert");
        assert!(needs_renewal(&ending.cert_der).expect("parses"));
    }

    #[test]
    fn pem_files_load_and_a_mismatched_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = rcgen::generate_simple_self_signed(vec!["relay.example.org".into()]).expect("a");
        let b = rcgen::generate_simple_self_signed(vec!["other.example.org".into()]).expect("b");
        let cert = dir.path().join("fullchain.pem");
        let key = dir.path().join("privkey.pem");
        let wrong = dir.path().join("wrong.pem");
        std::fs::write(&cert, a.cert.pem()).expect("write");
        std::fs::write(&key, a.key_pair.serialize_pem()).expect("write");
        std::fs::write(&wrong, b.key_pair.serialize_pem()).expect("write");
        let identity = Identity::from_pem_files(&cert, &key).expect("loads");
        assert_eq!(
            identity.pin().expect("pin"),
            spki_sha256(a.cert.der()).expect("pin")
        );
        let err = Identity::from_pem_files(&cert, &wrong)
            .err()
            .expect("mismatch");
        assert!(matches!(err, TlsError::Rustls(_)), "{err}");
        let err = Identity::from_pem_files(&dir.path().join("missing.pem"), &key)
            .err()
            .expect("missing");
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
