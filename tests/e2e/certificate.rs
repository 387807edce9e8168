//! An operator-supplied certificate (as from an ACME client) is served, and
//! `kill -HUP` reloads it without dropping queued messages. A renewal with
//! the same key keeps every member connected; a new key is served too, with
//! a warning, and new invite links carry its pin; a broken file keeps the old
//! certificate serving.

use std::process::Command;

use sotto_tests::raw::RawClient;
use sotto_tests::{Relay, User, texts};

/// A certificate for `host` signed by `key`, as PEM.
fn cert_pem(key: &rcgen::KeyPair, host: &str) -> String {
    rcgen::CertificateParams::new(vec![host.to_string()])
        .expect("params")
        .self_signed(key)
        .expect("self-signed")
        .pem()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .to_vec()
}

/// The leaf certificate the relay serves now, over QUIC.
fn served_cert(relay: &Relay) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let raw = RawClient::danger_connect(relay.addr())
            .await
            .expect("connect");
        let chain = raw
            .connection()
            .peer_identity()
            .expect("a peer identity")
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .expect("a rustls chain");
        let leaf = chain[0].to_vec();
        raw.close().await;
        leaf
    })
}

fn hup(relay: &Relay) {
    let pid = relay.pid().expect("relay running");
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[test]
fn sighup_reloads_the_operator_certificate_and_keeps_queued_messages() {
    let mut relay = Relay::start();
    let tls = relay.data_dir().join("tls");
    let key = rcgen::KeyPair::generate().expect("key");
    let first = cert_pem(&key, "relay.example.org");
    std::fs::write(tls.join("fullchain.pem"), &first).expect("write cert");
    std::fs::write(tls.join("privkey.pem"), key.serialize_pem()).expect("write key");
    let config = relay.data_dir().join("config.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("tls_cert = \"tls/fullchain.pem\"\ntls_key = \"tls/privkey.pem\"\n");
    std::fs::write(&config, text).expect("config");
    relay.restart();
    assert_eq!(
        served_cert(&relay),
        der_of(&first),
        "the operator's certificate is served"
    );

    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    alice.ok(&["send", "bob", "queued before the renewal"]);

    // Renewal with the same key (certbot --reuse-key), then SIGHUP.
    let renewed = cert_pem(&key, "relay.example.org");
    assert_ne!(der_of(&renewed), der_of(&first));
    std::fs::write(tls.join("fullchain.pem"), &renewed).expect("write cert");
    hup(&relay);
    relay.wait_for_log("same key, members are unaffected", 1);
    assert_eq!(served_cert(&relay), der_of(&renewed));
    alice.ok(&["send", "bob", "sent after the renewal"]);
    assert_eq!(
        texts(&bob.sync_json()),
        vec![
            "queued before the renewal".to_string(),
            "sent after the renewal".to_string()
        ],
        "nothing queued was dropped"
    );

    // A broken file: the old certificate keeps serving.
    std::fs::write(tls.join("fullchain.pem"), "not a certificate").expect("write");
    hup(&relay);
    relay.wait_for_log("still serving the old one", 1);
    assert_eq!(served_cert(&relay), der_of(&renewed));
    bob.ok(&["send", "alice", "still connected"]);
    assert_eq!(
        texts(&alice.sync_json()),
        vec!["still connected".to_string()]
    );

    // A new key is served too, with a warning; new links carry its pin.
    let new_key = rcgen::KeyPair::generate().expect("key");
    let rekeyed = cert_pem(&new_key, "relay.example.org");
    std::fs::write(tls.join("fullchain.pem"), &rekeyed).expect("write cert");
    std::fs::write(tls.join("privkey.pem"), new_key.serialize_pem()).expect("write key");
    hup(&relay);
    relay.wait_for_log("NEW key", 1);
    assert_eq!(served_cert(&relay), der_of(&rekeyed));
    let carol = User::new(&relay, "Carol");
    carol.add_contact("bob", &bob);
    carol.ok(&["send", "bob", "joined after the new key"]);
    assert!(relay.is_alive());
}

/// The self-signed certificate looks like any server's (issue 12): a plain
/// subject and about a year's validity, not rcgen's "rcgen self signed
/// cert" from 1975 to 4096. One made by an older `init` (or near its end) is
/// renewed with the same key when the relay starts, so members notice nothing.
#[test]
fn the_self_signed_certificate_is_ordinary_and_renewed_with_the_same_key() {
    let mut relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    let served = served_cert(&relay);
    let (_, cert) = x509_parser::parse_x509_certificate(&served).expect("x509");
    let subject = cert.subject().to_string();
    assert!(!subject.contains("rcgen"), "{subject}");
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert!((365..=367).contains(&days), "valid for {days} days");

    // What an older init wrote: rcgen's defaults, with the relay's own key.
    let tls = relay.data_dir().join("tls");
    let key_der = std::fs::read(tls.join("key.der")).expect("key.der");
    let key = rcgen::KeyPair::try_from(key_der.as_slice()).expect("pkcs8 key");
    let old = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("old cert");
    std::fs::write(tls.join("cert.der"), old.der()).expect("write old cert");
    relay.restart();
    let served = served_cert(&relay);
    assert_ne!(
        served,
        old.der().to_vec(),
        "the old certificate was not renewed"
    );
    let (_, cert) = x509_parser::parse_x509_certificate(&served).expect("x509");
    assert!(!cert.subject().to_string().contains("rcgen"));
    // Same key, same pin: members made before carry on.
    alice.ok(&["send", "bob", "after the renewal"]);
    assert_eq!(texts(&bob.sync_json()), ["after the renewal"]);
}

/// The TCP fallback serves only peers that ask for ALPN `sotto/1`, as QUIC
/// does (issue 12): a TLS client offering no ALPN, or another protocol, gets
/// no answer from the relay's protocol.
#[test]
fn tls_over_tcp_requires_the_sotto_alpn() {
    use sotto_tests::raw::RawTcp;
    use sotto_wire::relay::{ChallengeRequest, Request, request, response};

    let relay = Relay::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let challenge = sotto_wire::mux::encode(
        7,
        &Request {
            version: sotto_wire::PROTOCOL_VERSION,
            kind: Some(request::Kind::Challenge(ChallengeRequest {})),
        },
    );
    rt.block_on(async {
        let mut ok = RawTcp::danger_connect(relay.addr()).await.expect("connect");
        ok.write(&challenge).await.expect("write");
        let (id, answer) = ok.next().await.expect("an answer");
        assert_eq!(id, 7);
        assert!(
            matches!(answer.kind, Some(response::Kind::Challenge(_))),
            "{answer:?}"
        );
        for (what, alpn) in [
            ("no ALPN", vec![]),
            ("ALPN http/1.1", vec![b"http/1.1".to_vec()]),
        ] {
            // The handshake may fail outright (wrong ALPN) or finish and
            // then be closed unserved (no ALPN); either way, no answer.
            if let Ok(mut c) = RawTcp::danger_connect_alpn(relay.addr(), alpn).await {
                let _ = c.write(&challenge).await;
                let next = c.next().await;
                assert!(next.is_err(), "{what} was served: {next:?}");
            }
        }
    });
}
