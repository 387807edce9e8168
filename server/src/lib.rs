//! The Sotto relay: stores and forwards sealed envelopes it cannot read.
//!
//! The relay keeps accounts (a random id and public keys), one-time prekeys,
//! and per-device mailboxes of sealed-sender ciphertext. It never sees message
//! content, names, contact codes or who sent an envelope.
//!
//! Structure (dependencies point down):
//! - [`net`]: the quinn shell. One task per connection, one per request stream.
//! - [`admin`]: the Unix-socket admin interface (`DIR/admin.sock`).
//! - [`backup`]: one-file backups (keys, TLS identity, config, database) and restore.
//! - [`core`]: sans-IO request handling ([`core::Relay::handle`]), unit-tested without sockets.
//! - [`store`]: narrow storage traits and their sled implementation.
//! - [`config`], [`tls`]: configuration and TLS identity.
//!
//! Entry points: [`init`] creates a data directory, [`start`] runs a relay from
//! one in-process (tests, benchmarks, the binary), and [`net::serve`] serves an
//! already-bound endpoint.
//!
//! It is **not** a client and not a CA: clients trust the relay by the SPKI pin
//! in their invite link.
#![warn(missing_docs)]

pub mod admin;
pub mod backup;
mod commit;
pub mod config;
pub mod core;
pub mod disk;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod store;
pub mod tcp;
pub mod tls;

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libsignal_protocol::{KeyPair, PrivateKey, ServerCertificate};
use sotto_wire::invite::InviteLink;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::core::Signer;
use crate::store::{SledStore, Store, StoreError};
use crate::tls::TlsError;

/// Errors starting, initialising or administering a relay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory holds no relay.
    #[error("no relay in {0}: run `sotto-relay init --data-dir {0}` first")]
    NotInitialized(PathBuf),
    /// `init` was pointed at a directory that already holds a relay.
    #[error(
        "{0} already holds a relay; start it with `sotto-relay serve --data-dir {0}` or pick an empty directory"
    )]
    AlreadyInitialized(PathBuf),
    /// A file could not be read or written.
    #[error("{what}: {cause}")]
    Io {
        /// What we were doing, with the path.
        what: String,
        /// The OS error (not named `source`, so chains do not print it twice).
        cause: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("{0}; fix it in config.toml or the SOTTO_RELAY_* environment")]
    Config(ConfigError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS material is bad.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A key file is damaged.
    #[error("key file {0} is damaged; restore it from a backup")]
    BadKey(PathBuf),
    /// `restore` was pointed at a directory that is not empty.
    #[error(
        "{0} is not empty; restore needs a new or empty directory (do not run `sotto-relay init` there)"
    )]
    RestoreTarget(PathBuf),
    /// A backup file is truncated, altered or not a backup.
    #[error("{0} is not a complete sotto-relay backup (truncated or altered); use another copy")]
    BadBackup(PathBuf),
    /// An operator command named something that does not exist or is ambiguous.
    #[error("{0}")]
    NotFound(String),
    /// Could not bind the listen address.
    #[error("cannot listen on {addr}: {cause}; is another relay running, or pick another port")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error (not named `source`, so chains do not print it twice).
        cause: std::io::Error,
    },
}

// By hand rather than `#[from]`, so error chains do not print the cause twice.
impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |cause| Error::Io { what, cause }
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Wraps `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `tls/cert.der`.
    pub fn cert(&self) -> PathBuf {
        self.root.join("tls").join("cert.der")
    }
    /// `tls/key.der`.
    pub fn tls_key(&self) -> PathBuf {
        self.root.join("tls").join("key.der")
    }
    /// `keys/trust_root.key`.
    pub fn trust_root(&self) -> PathBuf {
        self.root.join("keys").join("trust_root.key")
    }
    /// `keys/server.key`.
    pub fn server_key(&self) -> PathBuf {
        self.root.join("keys").join("server.key")
    }
    /// `keys/server.cert`.
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("keys").join("server.cert")
    }
    /// `db/`.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    /// `admin.sock`.
    pub fn admin_socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }
}

/// What `init` reports.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// SPKI SHA-256 pin of the new certificate, unpadded base64url.
    pub spki_pin: String,
    /// [`sotto_wire::invite::trust_root_fingerprint`] of the new trust root:
    /// what someone checking an evidence proof compares.
    pub trust_root_fingerprint: String,
}

/// Milliseconds since the Unix epoch, for the shell (the core takes time as an argument).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn make_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // 0700: keys, the database and the admin socket are for the operator
    // only. An existing directory (often 0755) is tightened, not trusted.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o700)))
        .map_err(io(format!(
            "cannot create {} with mode 0700",
            path.display()
        )))
}

/// Sets 0700 on `path` and every directory under it and 0600 on every
/// other file (symbolic links are left alone). sled creates its files with
/// the process's umask, so this runs after it has made them; a relay made
/// before data directories were private is tightened when it starts.
pub fn tighten(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let fail = io(format!("cannot restrict {} to its owner", path.display()));
    let meta = fs::symlink_metadata(path).map_err(fail)?;
    let want = if meta.is_dir() {
        0o700
    } else if meta.file_type().is_symlink() {
        return Ok(());
    } else {
        0o600
    };
    if meta.permissions().mode() & 0o777 != want {
        fs::set_permissions(path, fs::Permissions::from_mode(want)).map_err(io(format!(
            "cannot restrict {} to its owner (mode {want:o})",
            path.display()
        )))?;
    }
    if meta.is_dir() {
        let entries = fs::read_dir(path).map_err(io(format!("cannot list {}", path.display())))?;
        for entry in entries.flatten() {
            tighten(&entry.path())?;
        }
    }
    Ok(())
}

/// Makes the process's new files and sockets private to its owner (umask
/// 077), whatever the shell's umask: the relay's data directory holds keys
/// and the database, and backups hold both.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    // 0600 and create_new: secret keys are never world-readable and never overwritten.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("cannot create {}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(format!("cannot write {}", path.display())))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(io(format!("cannot read {}", path.display())))
}

/// Creates a relay in `data_dir`: TLS key and certificate, sealed-sender keys,
/// a commented `config.toml` and the database.
pub fn init(
    data_dir: &Path,
    listen: Option<SocketAddr>,
    public_addr: Option<String>,
) -> Result<InitReport> {
    init_with_cert(data_dir, listen, public_addr, None)
}

/// Like [`init`], serving the operator's certificate chain and key (PEM)
/// instead of the self-signed one; their paths go into `config.toml`.
pub fn init_with_cert(
    data_dir: &Path,
    listen: Option<SocketAddr>,
    public_addr: Option<String>,
    cert: Option<(&Path, &Path)>,
) -> Result<InitReport> {
    let dir = DataDir::new(data_dir);
    // Checked before anything is written, so a wrong file leaves no half-made relay.
    let operator = match cert {
        Some((c, k)) => Some(tls::Identity::from_pem_files(c, k)?),
        None => None,
    };
    if dir.config().exists() || dir.root().join("keys").exists() || dir.db().join("conf").exists() {
        return Err(Error::AlreadyInitialized(data_dir.to_path_buf()));
    }
    let listen = match listen {
        Some(l) => l,
        None => Config::default().listen,
    };
    // Validate the public address the same way the config loader will.
    let text = config::example_config(listen, public_addr.as_deref(), cert);
    let mut raw = config::RawConfig::parse(&text)?;
    raw.apply_env(|_| None)?;
    raw.validate()?;

    make_dir(dir.root())?;
    make_dir(&dir.root().join("tls"))?;
    make_dir(&dir.root().join("keys"))?;
    make_dir(&dir.db())?;

    let hosts = self_signed_hosts(listen, public_addr.as_deref());
    // Made even with an operator certificate: its key seeds the QUIC
    // stateless-reset key, and it is there to fall back to.
    let ck = tls::self_signed(&hosts)?;
    let pin = match &operator {
        Some(identity) => identity.pin()?,
        None => tls::spki_sha256(&ck.cert_der)?,
    };

    let mut rng = rand::rng();
    let root = KeyPair::generate(&mut rng);
    let server = KeyPair::generate(&mut rng);
    let server_cert = ServerCertificate::new(1, server.public_key, &root.private_key, &mut rng)
        .and_then(|c| c.serialized().map(<[u8]>::to_vec))
        .map_err(|_| Error::BadKey(dir.server_cert()))?;

    // Everything 0600, the public parts too: the directory is the operator's alone.
    write_private(&dir.tls_key(), &ck.key_der)?;
    write_private(&dir.cert(), &ck.cert_der)?;
    write_private(&dir.trust_root(), &root.private_key.serialize())?;
    write_private(&dir.server_key(), &server.private_key.serialize())?;
    write_private(&dir.server_cert(), &server_cert)?;
    write_private(&dir.config(), text.as_bytes())?;
    let store = SledStore::open(&dir.db())?;
    store.flush()?;
    tighten(dir.root())?;
    Ok(InitReport {
        spki_pin: tls::pin_text(&pin),
        trust_root_fingerprint: sotto_wire::invite::trust_root_fingerprint(
            &root.public_key.serialize(),
        ),
    })
}

/// The names in the self-signed certificate: the public host first (its
/// subject), then loopback and the listen address.
fn self_signed_hosts(listen: SocketAddr, public_addr: Option<&str>) -> Vec<String> {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Some(p) = public_addr {
        hosts.insert(0, config::host_of(p).to_string());
    }
    if !listen.ip().is_unspecified() {
        hosts.push(listen.ip().to_string());
    }
    hosts
}

/// Renews the self-signed certificate in `tls/cert.der` with the same key
/// when [`tls::needs_renewal`] says so (it expires within 30 days, has
/// expired, or was made by an older `init` with rcgen's 1975-4096 defaults).
/// Members pin the key, so they notice nothing. Written to a new file and
/// renamed, so a crash leaves the old or the new certificate, never half.
/// Returns whether it renewed. Nothing to do with an operator certificate.
pub fn renew_self_signed_if_due(dir: &DataDir, config: &Config) -> Result<bool> {
    if config.tls_cert.is_some() || !tls::needs_renewal(&read(&dir.cert())?)? {
        return Ok(false);
    }
    let hosts = self_signed_hosts(config.listen, config.public_addr.as_deref());
    let renewed = tls::renew_self_signed(&hosts, &read(&dir.tls_key())?)?;
    let tmp = dir.cert().with_extension("der.new");
    let _ = fs::remove_file(&tmp);
    write_private(&tmp, &renewed.cert_der)?;
    fs::rename(&tmp, dir.cert()).map_err(io("cannot replace tls/cert.der"))?;
    if let Some(parent) = dir.cert().parent()
        && let Ok(d) = fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    tracing::info!(
        "renewed the self-signed TLS certificate for a year with the same key; \
         members' apps are unaffected"
    );
    Ok(true)
}

/// Loads and validates `DIR/config.toml` (with env overrides).
pub fn load_config(data_dir: &Path) -> Result<Config> {
    let dir = DataDir::new(data_dir);
    if !dir.config().exists() {
        return Err(Error::NotInitialized(data_dir.to_path_buf()));
    }
    let text = fs::read_to_string(dir.config()).map_err(io("cannot read config.toml"))?;
    Ok(Config::load(&text)?)
}

/// Everything needed to build invite links.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    /// `host:port` for clients.
    pub relay: String,
    /// SPKI pin of the TLS certificate.
    pub spki_pin: [u8; 32],
    /// Serialized trust-root public key.
    pub trust_root: Vec<u8>,
}

/// The relay's long-lived key material, loaded from a data directory.
struct Keys {
    /// The self-signed TLS key from `init` (also seeds the stateless-reset key).
    key_der: Vec<u8>,
    /// The certificate served: the operator's if configured, else the self-signed one.
    identity: tls::Identity,
    pin: [u8; 32],
    trust_root: Vec<u8>,
    signer: Signer,
}

/// The certificate the relay serves: the operator's PEM files when
/// `tls_cert`/`tls_key` are set, else the self-signed pair from `init`.
pub fn load_identity(dir: &DataDir, config: &Config) -> Result<tls::Identity> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(tls::Identity::from_pem_files(
            &dir.root().join(cert),
            &dir.root().join(key),
        )?),
        _ => Ok(tls::Identity::from_der(
            &read(&dir.cert())?,
            &read(&dir.tls_key())?,
        )),
    }
}

/// The relay's sealed-sender trust root (public key, serialized), as in
/// invite links.
pub fn trust_root_public(dir: &DataDir) -> Result<Vec<u8>> {
    Ok(PrivateKey::deserialize(&read(&dir.trust_root())?)
        .ok()
        .and_then(|k| k.public_key().ok())
        .ok_or_else(|| Error::BadKey(dir.trust_root()))?
        .serialize()
        .to_vec())
}

fn load_keys(dir: &DataDir, config: &Config) -> Result<Keys> {
    if !dir.trust_root().exists() {
        return Err(Error::NotInitialized(dir.root().to_path_buf()));
    }
    let key_der = read(&dir.tls_key())?;
    let identity = load_identity(dir, config)?;
    let pin = identity.pin()?;
    let trust_root = trust_root_public(dir)?;
    let server_key = PrivateKey::deserialize(&read(&dir.server_key())?)
        .map_err(|_| Error::BadKey(dir.server_key()))?;
    let server_cert = ServerCertificate::deserialize(&read(&dir.server_cert())?)
        .map_err(|_| Error::BadKey(dir.server_cert()))?;
    Ok(Keys {
        key_der,
        identity,
        pin,
        trust_root,
        signer: Signer::new(server_cert, server_key),
    })
}

/// Makes an invite by opening the database directly (the relay must not be running:
/// sled admits one process, so this fails with a lock error if it is).
pub fn offline_invite(data_dir: &Path, uses: u32, ttl: Duration) -> Result<InviteLink> {
    let (relay, info) = open_offline(data_dir)?;
    make_invite(&relay, &info, uses, ttl)
}

/// Opens a stopped relay's database and link material, for offline commands.
pub(crate) fn open_offline(data_dir: &Path) -> Result<(core::Relay, LinkInfo)> {
    let config = load_config(data_dir)?;
    let dir = DataDir::new(data_dir);
    let keys = load_keys(&dir, &config)?;
    let store = SledStore::open(&dir.db())?;
    let info = LinkInfo {
        relay: config
            .public_addr
            .clone()
            .unwrap_or_else(|| config.listen.to_string()),
        spki_pin: keys.pin,
        trust_root: keys.trust_root,
    };
    Ok((core::Relay::new(store, config, keys.signer), info))
}

/// Makes an invite on `relay` and wraps it in a link.
pub fn make_invite<S: Store>(
    relay: &core::Relay<S>,
    info: &LinkInfo,
    uses: u32,
    ttl: Duration,
) -> Result<InviteLink> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let token = relay.create_invite(uses, now_ms().saturating_add(ttl_ms), &mut rand::rng())?;
    Ok(InviteLink {
        relay: info.relay.clone(),
        spki_pin: info.spki_pin,
        trust_root: info.trust_root.clone(),
        token,
    })
}

/// A relay running in this process.
pub struct Running {
    /// The bound UDP address (the real port when the config says port 0).
    pub local_addr: SocketAddr,
    /// Shared state (relay core, live connections, link info).
    pub shared: Arc<net::Shared>,
    resolver: Arc<tls::CertResolver>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    /// A token that stops the relay when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, closes connections with a reason, waits for tasks and flushes the db.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        if let Err(e) = self.shared.relay.store().flush_async().await {
            tracing::error!(error = %e, "final database flush failed");
        }
    }
}

/// Socket buffer size asked of the kernel for the relay's UDP socket.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Raises the UDP socket's buffers. With the kernel default (about 208 KiB)
/// the relay drops datagrams under load and during handshake bursts; QUIC only
/// recovers them after a probe timeout, which shows up as second-long stalls.
/// The kernel caps the request at `net.core.rmem_max`/`wmem_max`; we warn when
/// it did (docs/self-hosting.md says how to raise them).
fn enlarge_socket_buffers(socket: &std::net::UdpSocket) {
    let Ok(state) = quinn::udp::UdpSocketState::new(socket.into()) else {
        return;
    };
    let _ = state.set_recv_buffer_size(socket.into(), SOCKET_BUFFER_BYTES);
    let _ = state.set_send_buffer_size(socket.into(), SOCKET_BUFFER_BYTES);
    // Linux reports twice the usable size it granted.
    let granted = state.recv_buffer_size(socket.into()).unwrap_or(0);
    if granted < SOCKET_BUFFER_BYTES {
        tracing::warn!(
            granted_bytes = granted,
            wanted_bytes = SOCKET_BUFFER_BYTES,
            "the kernel capped the UDP receive buffer; under load the relay may drop packets. \
             Raise net.core.rmem_max and net.core.wmem_max (see docs/self-hosting.md)"
        );
    }
}

/// The QUIC endpoint configuration, with a stateless-reset key derived from
/// the relay's TLS key so it survives restarts: after a crash, the restarted
/// relay answers packets of connections it no longer knows with a reset the
/// client recognises, and clients reconnect at once instead of waiting out
/// the idle timeout with a request hanging.
fn endpoint_config(tls_key_der: &[u8]) -> quinn::EndpointConfig {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"sotto relay stateless reset key v1");
    h.update(tls_key_der);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &h.finalize());
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    // quinn's default connection ids carry a check keyed per process, so a
    // restarted relay would drop its predecessor's packets silently instead
    // of resetting them; plain random ids let the reset go out.
    config.cid_generator(|| Box::new(RandomCids));
    config
}

/// Random 8-byte connection ids, accepted as ours after a restart.
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&rand::random::<[u8; 8]>())
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Binds the UDP socket and a TCP listener on the same port. With port 0
/// the kernel picks the UDP port, which may be taken on TCP; then try again.
fn bind_both(listen: SocketAddr) -> Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let bind_err = |cause| Error::Bind {
        addr: listen,
        cause,
    };
    let attempts = if listen.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
        let port = udp.local_addr().map_err(bind_err)?.port();
        match std::net::TcpListener::bind(SocketAddr::new(listen.ip(), port)) {
            Ok(tcp) => {
                tcp.set_nonblocking(true).map_err(bind_err)?;
                return Ok((udp, tcp));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(bind_err(last.unwrap_or_else(|| {
        std::io::Error::other("no port free on both UDP and TCP")
    })))
}

/// Reads the certificate files again and serves them from the next
/// handshake on (`SIGHUP`). Open connections and queued messages are not
/// touched. A new key changes the pin: members' apps pinned the old one and
/// will refuse the relay until they join again with a new invite link.
pub fn reload_certificate(data_dir: &Path, running: &Running) -> Result<()> {
    let dir = DataDir::new(data_dir);
    let config = load_config(data_dir)?;
    renew_self_signed_if_due(&dir, &config)?;
    let identity = load_identity(&dir, &config)?;
    let pin = identity.pin()?;
    running.resolver.replace(&identity)?;
    let old = running.shared.links().spki_pin;
    if pin == old {
        tracing::info!("reloaded the TLS certificate; same key, members are unaffected");
    } else {
        running.shared.set_pin(pin);
        tracing::warn!(
            new_pin = %tls::pin_text(&pin),
            "reloaded a TLS certificate with a NEW key: members' apps pinned the old key and \
             cannot connect until they join with a new invite link. Renew with the same key \
             (certbot --reuse-key) to avoid this"
        );
    }
    Ok(())
}

/// Loads the relay in `data_dir`, binds its listen address (UDP for QUIC and
/// TCP for the TLS fallback, same port) and spawns the serving, admin,
/// expiry and certificate-reload tasks. Call from inside a tokio runtime.
pub async fn start(data_dir: &Path) -> Result<Running> {
    let config = load_config(data_dir)?;
    let dir = DataDir::new(data_dir);
    // Relays made before init made everything private are tightened here;
    // a file we may not chmod (an operator's certificate owned by root, say)
    // is worth a warning, not a refusal to start.
    if let Err(e) = tighten(dir.root()) {
        tracing::warn!(error = %e, "could not make the whole data directory private");
    }
    if dir.trust_root().exists() {
        renew_self_signed_if_due(&dir, &config)?;
    }
    let keys = load_keys(&dir, &config)?;
    let store = SledStore::open(&dir.db())?;
    let resolver = tls::CertResolver::new(&keys.identity)?;
    let server_config = tls::server_config(Arc::clone(&resolver))?;
    let tcp_config = tls::tcp_server_config(Arc::clone(&resolver))?;
    let (socket, tcp) = bind_both(config.listen)?;
    enlarge_socket_buffers(&socket);
    let endpoint = quinn::Endpoint::new(
        endpoint_config(&keys.key_der),
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|cause| Error::Bind {
        addr: config.listen,
        cause,
    })?;
    let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|cause| Error::Bind {
        addr: config.listen,
        cause,
    })?;
    let local_addr = endpoint
        .local_addr()
        .map_err(io("cannot read the bound address"))?;
    let links = LinkInfo {
        relay: config
            .public_addr
            .clone()
            .unwrap_or_else(|| local_addr.to_string()),
        spki_pin: keys.pin,
        trust_root: keys.trust_root,
    };
    let sweep_every = config.sweep_interval;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|cause| Error::Bind { addr, cause })?,
        ),
        None => None,
    };
    let disk = disk::DiskGuard::new(&dir.db(), config.min_free_disk_bytes);
    let relay = core::Relay::new(store, config, keys.signer);
    let shutdown = CancellationToken::new();
    let shared = Arc::new(
        net::Shared::new(relay, links)
            .with_disk_guard(disk)
            .with_stop(shutdown.clone()),
    );
    let tracker = TaskTracker::new();

    let admin = admin::AdminServer::bind(&dir.admin_socket())?;
    tracker.spawn(admin.run(Arc::clone(&shared), shutdown.clone()));
    tracker.spawn(net::serve(endpoint, Arc::clone(&shared), shutdown.clone()));
    tracker.spawn(tcp::serve(
        tcp,
        tcp_config,
        Arc::clone(&shared),
        shutdown.clone(),
    ));
    if let Some(listener) = metrics_listener {
        let metrics = listener
            .local_addr()
            .map_err(io("cannot read the metrics address"))?;
        tracing::info!(%metrics, "serving Prometheus metrics at http://{metrics}/metrics");
        tracker.spawn(metrics::serve(
            listener,
            Arc::clone(&shared),
            shutdown.clone(),
        ));
    }
    tracker.spawn(disk::watch(Arc::clone(&shared), shutdown.clone()));
    tracker.spawn(net::sweep_loop(
        Arc::clone(&shared),
        sweep_every,
        shutdown.clone(),
    ));
    tracing::info!(%local_addr, "relay started (QUIC on UDP, TLS fallback on TCP, same port)");
    Ok(Running {
        local_addr,
        shared,
        resolver,
        shutdown,
        tracker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_private_keys_and_refuses_twice() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("relay");
        let report = init(&dir, None, Some("relay.example.org:4433".into())).expect("init");
        assert_eq!(report.spki_pin.len(), 43);
        let d = DataDir::new(&dir);
        for key in [d.tls_key(), d.trust_root(), d.server_key()] {
            let mode = fs::metadata(&key).expect("key exists").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        assert!(matches!(
            init(&dir, None, None),
            Err(Error::AlreadyInitialized(_))
        ));
        let config = load_config(&dir).expect("config loads");
        assert_eq!(
            config.public_addr.as_deref(),
            Some("relay.example.org:4433")
        );
        let link = offline_invite(&dir, 2, Duration::from_secs(60)).expect("invite");
        assert_eq!(link.relay, "relay.example.org:4433");
        assert_eq!(tls::pin_text(&link.spki_pin), report.spki_pin);
        assert!(matches!(
            load_config(&tmp.path().join("nothing")),
            Err(Error::NotInitialized(_))
        ));
    }
}
