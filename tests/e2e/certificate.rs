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
