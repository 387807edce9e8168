//! What every scenario shares: the relay under test, lightweight accounts,
//! figures with their ceilings, and the statistics we report.

use std::time::Duration;

use libsignal_protocol::{
    DeviceId, GenericSignedPreKey, IdentityKey, IdentityKeyPair, InMemSignalProtocolStore, KeyPair,
    KyberPreKeyRecord, KyberPreKeyStore, PreKeyBundle, PreKeyRecord, PreKeyStore, ProtocolAddress,
    PublicKey, SenderCertificate, SignedPreKeyRecord, SignedPreKeyStore, Timestamp, kem,
    process_prekey_bundle,
};
use rand::Rng;
use serde::Serialize;
use sotto_client::transport::{Connection, TransportError};
use sotto_tests::Relay;
use sotto_wire::auth::{Purpose, transcript};
use sotto_wire::invite::InviteLink;
use sotto_wire::relay::{
    self, OneTimePreKey, SignedPreKey, request::Kind as Req, response::Kind as Resp,
};
use std::time::SystemTime;

use uuid::Uuid;

/// Connection cap configured on the relay under test.
pub(crate) const MAX_CONNECTIONS: usize = 20_000;

/// The relay under test: the real `sotto-relay` binary on 127.0.0.1 with a
/// fresh sled data directory, and one client endpoint (one UDP socket) that
/// all lightweight clients share.
pub(crate) struct Bench {
    /// The relay process (killed when dropped).
    pub(crate) relay: Relay,
    /// A parsed invite with plenty of uses.
    pub(crate) link: InviteLink,
    /// Shared client endpoint.
    pub(crate) endpoint: quinn::Endpoint,
}

impl Bench {
    /// Starts a relay and makes an invite for `accounts` registrations.
    pub(crate) fn start(accounts: u32) -> anyhow::Result<Bench> {
        Bench::start_with_env(accounts, &[])
    }

    /// Like [`Bench::start`], with `SOTTO_RELAY_*` overrides for the relay.
    pub(crate) fn start_with_env(accounts: u32, env: &[(&str, &str)]) -> anyhow::Result<Bench> {
        let mut relay = Relay::start_with_env(env);
        // The default cap (1,000 connections) is below what the scale
        // scenarios open; everything else stays at its default.
        let config = relay.data_dir().join("config.toml");
        let text = std::fs::read_to_string(&config)?;
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("max_connections") {
                    format!("max_connections = {MAX_CONNECTIONS}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&config, text)?;
        relay.restart();
        let link: InviteLink = relay.invite(accounts.max(1)).parse()?;
        let endpoint = roomy_endpoint(None)?;
        Ok(Bench {
            relay,
            link,
            endpoint,
        })
    }

    /// An unauthenticated connection to the relay.
    pub(crate) async fn connect(&self) -> Result<Connection, TransportError> {
        Connection::connect_via(&self.endpoint, &self.link.relay, self.link.spki_pin).await
    }

    /// The relay's resident set size, in KiB.
    pub(crate) fn relay_rss_kib(&self) -> Option<u64> {
        rss_kib(self.relay.pid()?)
    }
}

/// Receive and send buffer asked for on the bench's UDP sockets (Linux caps
/// it at `net.core.rmem_max`/`wmem_max`). The relay asks for the same.
pub(crate) const SOCKET_BUFFER: usize = 4 << 20;

/// An endpoint on 127.0.0.1 whose UDP socket has [`SOCKET_BUFFER`]-sized
/// buffers. The bench's client connections share one socket, and with the
/// kernel's default (~208 KiB, a few hundred datagrams) it drops datagrams
/// whenever the process is descheduled for a moment; QUIC recovers them only
/// after a probe timeout, which would show up as seconds-late pushes. Echo
/// ceilings get the same socket, so a ceiling is what a well-configured quinn
/// server does.
pub(crate) fn roomy_endpoint(
    server: Option<quinn::ServerConfig>,
) -> anyhow::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(("127.0.0.1", 0))?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER)?;
    state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| anyhow::anyhow!("no async runtime for quinn"))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        runtime,
    )?)
}

/// VmRSS of a process, in KiB (Linux).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A registered account with an authenticated connection and an in-memory
/// libsignal store holding its keys (for scenarios with real sessions).
pub(crate) struct Account {
    /// Account id.
    pub(crate) id: Uuid,
    /// Authenticated connection.
    pub(crate) conn: Connection,
    /// Its libsignal state (identity, the signed and Kyber last-resort prekeys).
    pub(crate) store: InMemSignalProtocolStore,
}

/// Registers a lightweight account: a signed prekey and a Kyber last-resort
/// key, no one-time keys (the relay serves the last-resort key instead).
pub(crate) async fn register(bench: &Bench) -> anyhow::Result<Account> {
    let mut rng = rand::rng();
    let LocalKeys {
        store,
        identity,
        registration_id,
        signed_pair,
        signed_sig,
        kyber,
        pre,
    } = local_keys().await?;
    let conn = bench.connect().await?;
    let nonce = challenge(&conn).await?;
    let signature = identity.private_key().calculate_signature(
        &transcript(Purpose::Register, &conn.exporter()?, &nonce),
        &mut rng,
    )?;
    let answer = conn
        .request(Req::Register(relay::Register {
            invite_token: bench.link.token.clone(),
            identity_key: identity.identity_key().serialize().to_vec(),
            registration_id,
            auth_signature: signature.to_vec(),
            signed_pre_key: Some(SignedPreKey {
                id: 1,
                public_key: signed_pair.public_key.serialize().to_vec(),
                signature: signed_sig.to_vec(),
            }),
            kyber_last_resort: Some(SignedPreKey {
                id: 2,
                public_key: kyber.public_key()?.serialize().to_vec(),
                signature: kyber.signature()?,
            }),
            pre_keys: vec![OneTimePreKey {
                id: 3,
                public_key: pre.public_key.serialize().to_vec(),
            }],
            kyber_pre_keys: vec![],
        }))
        .await?;
    let Resp::Registered(r) = answer else {
        anyhow::bail!("unexpected answer to register");
    };
    Ok(Account {
        id: Uuid::from_slice(&r.account_id)?,
        conn,
        store,
    })
}

/// A fresh identity with a signed prekey (id 1), a Kyber1024 prekey (id 2)
/// and an EC one-time prekey (id 3), all saved in an in-memory libsignal store.
pub(crate) struct LocalKeys {
    pub(crate) store: InMemSignalProtocolStore,
    pub(crate) identity: IdentityKeyPair,
    pub(crate) registration_id: u32,
    pub(crate) signed_pair: KeyPair,
    pub(crate) signed_sig: Box<[u8]>,
    pub(crate) kyber: KyberPreKeyRecord,
    pub(crate) pre: KeyPair,
}

/// Makes [`LocalKeys`].
pub(crate) async fn local_keys() -> anyhow::Result<LocalKeys> {
    let mut rng = rand::rng();
    let identity = IdentityKeyPair::generate(&mut rng);
    let registration_id: u32 = rng.random_range(1..16380);
    let mut store = InMemSignalProtocolStore::new(identity, registration_id)?;
    let signed_pair = KeyPair::generate(&mut rng);
    let signed_sig = identity
        .private_key()
        .calculate_signature(&signed_pair.public_key.serialize(), &mut rng)?;
    let signed = SignedPreKeyRecord::new(
        1.into(),
        Timestamp::from_epoch_millis(0),
        &signed_pair,
        &signed_sig,
    );
    store.save_signed_pre_key(1.into(), &signed).await?;
    let kyber =
        KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, 2.into(), identity.private_key())?;
    store.save_kyber_pre_key(2.into(), &kyber).await?;
    let pre = KeyPair::generate(&mut rng);
    store
        .save_pre_key(3.into(), &PreKeyRecord::new(3.into(), &pre))
        .await?;
    Ok(LocalKeys {
        store,
        identity,
        registration_id,
        signed_pair,
        signed_sig,
        kyber,
        pre,
    })
}

impl LocalKeys {
    /// The bundle a relay would serve for these keys.
    pub(crate) fn bundle(&self) -> anyhow::Result<PreKeyBundle> {
        Ok(PreKeyBundle::new(
            self.registration_id,
            DeviceId::new(1)?,
            Some((3.into(), self.pre.public_key)),
            1.into(),
            self.signed_pair.public_key,
            self.signed_sig.to_vec(),
            2.into(),
            self.kyber.public_key()?,
            self.kyber.signature()?,
            *self.identity.identity_key(),
        )?)
    }
}

/// Registers `n` accounts, a few at a time (handshakes degrade past a handful in flight).
pub(crate) async fn register_many(bench: &Bench, n: usize) -> anyhow::Result<Vec<Account>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(register(bench).await?);
    }
    Ok(out)
}

/// Asks for an authentication challenge and returns its nonce.
pub(crate) async fn challenge(conn: &Connection) -> anyhow::Result<Vec<u8>> {
    match conn
        .request(Req::Challenge(relay::ChallengeRequest {}))
        .await?
    {
        Resp::Challenge(c) => Ok(c.nonce),
        _ => anyhow::bail!("unexpected answer to challenge"),
    }
}

/// Builds the sender's session with `recipient` from the bundle the relay serves.
pub(crate) async fn session_from_relay(
    conn: &Connection,
    store: &mut InMemSignalProtocolStore,
    recipient: Uuid,
    address: &ProtocolAddress,
) -> anyhow::Result<()> {
    let Resp::Bundle(b) = conn
        .request(Req::FetchBundle(relay::FetchBundle {
            account_id: recipient.as_bytes().to_vec(),
            device_id: 1,
        }))
        .await?
    else {
        anyhow::bail!("unexpected answer to FetchBundle");
    };
    let signed = b
        .signed_pre_key
        .ok_or_else(|| anyhow::anyhow!("bundle without a signed prekey"))?;
    let kyber = b
        .kyber_pre_key
        .ok_or_else(|| anyhow::anyhow!("bundle without a Kyber prekey"))?;
    let pre_key = match b.pre_key {
        Some(k) => Some((k.id.into(), PublicKey::deserialize(&k.public_key)?)),
        None => None,
    };
    let bundle = PreKeyBundle::new(
        b.registration_id,
        DeviceId::new(1)?,
        pre_key,
        signed.id.into(),
        PublicKey::deserialize(&signed.public_key)?,
        signed.signature,
        kyber.id.into(),
        kem::PublicKey::deserialize(&kyber.public_key)?,
        kyber.signature,
        IdentityKey::decode(&b.identity_key)?,
    )?;
    process_prekey_bundle(
        address,
        &mut store.session_store,
        &mut store.identity_store,
        &bundle,
        SystemTime::now(),
        &mut rand::rng(),
    )
    .await?;
    Ok(())
}

/// One figure of a scenario, with a run per value, and the ceiling measured
/// alongside in the same invocation.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// Scenario name, e.g. "throughput".
    pub(crate) scenario: String,
    /// What is measured, e.g. "relay messages/s (100 pairs, 1 KiB, durable)".
    pub(crate) figure: String,
    /// Unit, e.g. "msg/s", "ms", "MiB".
    pub(crate) unit: String,
    /// One value per run.
    pub(crate) runs: Vec<f64>,
    /// The ceiling: what the machine does with the same work minus Sotto.
    pub(crate) ceiling: Option<Ceiling>,
    /// What bounds the figure, or how to read it.
    pub(crate) note: String,
}

/// A ceiling measured alongside a figure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ceiling {
    /// What was measured.
    pub(crate) name: String,
    /// One value per run.
    pub(crate) runs: Vec<f64>,
}

impl Figure {
    /// A figure without a ceiling.
    pub(crate) fn new(
        scenario: &str,
        figure: &str,
        unit: &str,
        runs: Vec<f64>,
        note: &str,
    ) -> Figure {
        Figure {
            scenario: scenario.into(),
            figure: figure.into(),
            unit: unit.into(),
            runs,
            ceiling: None,
            note: note.into(),
        }
    }

    /// Adds a ceiling.
    pub(crate) fn with_ceiling(mut self, name: &str, runs: Vec<f64>) -> Figure {
        self.ceiling = Some(Ceiling {
            name: name.into(),
            runs,
        });
        self
    }
}

/// Median of a sample (0 for an empty one).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// The `q` quantile (0..=1) by nearest rank.
pub(crate) fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Seconds as f64 milliseconds.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A sender certificate for an authenticated connection.
pub(crate) async fn sender_certificate(conn: &Connection) -> anyhow::Result<SenderCertificate> {
    let Resp::SenderCertificate(cert) = conn
        .request(Req::SenderCertificate(relay::SenderCertificateRequest {}))
        .await?
    else {
        anyhow::bail!("unexpected answer to SenderCertificate");
    };
    Ok(SenderCertificate::deserialize(&cert.certificate)?)
}

/// CPU time (user + system) a process has used, in seconds, from
/// `/proc/<pid>/stat` (`pid` may be "self"; Linux, 100 clock ticks a second).
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 500.0);
        assert_eq!(quantile(&v, 0.99), 990.0);
        assert_eq!(quantile(&v, 0.999), 999.0);
    }
}
