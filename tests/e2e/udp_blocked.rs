//! A network that drops UDP (many corporate and parliamentary ones do):
//! the client falls back to TLS over TCP on the relay's port and registers,
//! sends, receives, and gets pushes while `listen` runs.

use std::time::Duration;

use sotto_tests::{Relay, UdpBlocked, User, texts};

#[test]
fn with_udp_blocked_a_client_still_sends_and_receives() {
    let relay = Relay::start();
    let front = UdpBlocked::in_front_of(relay.addr());
    // Alice's invite points at the front: she can reach the relay only over TCP.
    let alice = User::with_invite(&front.rewrite(&relay.invite(1)), "Alice");
    assert!(front.tcp_connections() >= 1, "registration went over TCP");
    assert!(
        front.udp_datagrams_dropped() > 0,
        "the client tried QUIC first"
    );
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);

    alice.ok(&["send", "bob", "sent over tcp"]);
    assert_eq!(texts(&bob.sync_json()), vec!["sent over tcp".to_string()]);
    bob.ok(&["send", "alice", "received over tcp"]);
    assert_eq!(
        texts(&alice.sync_json()),
        vec!["received over tcp".to_string()]
    );
    // The profile remembers that TCP worked: later commands do not wait
    // for QUIC first (not one datagram since registration).
    assert_eq!(front.udp_datagrams_dropped(), 0);

    // Pushes reach a listener on TCP too.
    let (mut listen, lines) = alice.listen();
    // Let the listener connect (over TCP after the fallback delay).
    std::thread::sleep(Duration::from_secs(3));
    bob.ok(&["send", "alice", "pushed over tcp"]);
    let line = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("listen printed the pushed message");
    let value: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(value["text"], "pushed over tcp");
    let _ = listen.kill();
    let _ = listen.wait();
}

/// The TCP fallback refuses bad input like QUIC does: a unit that does not
/// decode gets an error on its id and the connection carries on; an
/// oversized frame closes that connection with a reason; the relay keeps
/// serving everyone else.
#[test]
fn bad_units_over_tcp_are_refused_and_others_carry_on() {
    use sotto_tests::raw::RawTcp;
    use sotto_wire::mux;
    use sotto_wire::relay::{self, ErrorCode, Request, request, response};

    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut raw = RawTcp::danger_connect(relay.addr()).await.expect("connect");
        // Channel 5: a frame whose body is not protobuf.
        let mut garbage = 5u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
        raw.write(&garbage).await.expect("write");
        let (id, answer) = raw.next().await.expect("an answer");
        assert_eq!(id, 5);
        match answer.kind {
            Some(response::Kind::Error(e)) => assert_eq!(e.code(), ErrorCode::Malformed),
            other => panic!("expected MALFORMED, got {other:?}"),
        }
        // The same connection still works.
        let challenge = Request {
            version: sotto_wire::PROTOCOL_VERSION,
            kind: Some(request::Kind::Challenge(relay::ChallengeRequest {})),
        };
        raw.write(&mux::encode(6, &challenge)).await.expect("write");
        let (id, answer) = raw.next().await.expect("an answer");
        assert_eq!(id, 6);
        assert!(matches!(answer.kind, Some(response::Kind::Challenge(_))));
        // A 100 MB length: refused without reading, with a reason, then closed.
        let mut huge = 7u32.to_be_bytes().to_vec();
        huge.extend_from_slice(&(100u32 * 1024 * 1024).to_be_bytes());
        raw.write(&huge).await.expect("write");
        let (id, last) = raw.next().await.expect("a reason");
        assert_eq!(id, mux::CLOSING);
        match last.kind {
            Some(response::Kind::Error(e)) => {
                assert!(e.message.contains("too large"), "{}", e.message)
            }
            other => panic!("expected a closing reason, got {other:?}"),
        }
        assert!(raw.next().await.is_err(), "the connection ends");

        // A unit cut off mid-frame, then silence: only this connection waits.
        let mut cut = RawTcp::danger_connect(relay.addr()).await.expect("connect");
        cut.write(&[0, 0, 0, 9, 0, 0, 0, 50, 1, 2])
            .await
            .expect("write");
        // Meanwhile others are served.
        alice.ok(&["send", "bob", "still served"]);
    });
    assert_eq!(texts(&bob.sync_json()), vec!["still served".to_string()]);
}
