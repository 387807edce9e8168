//! Scenario 5: garbage, truncated, oversized and wrong-version frames on raw
//! QUIC connections are refused stream by stream, and a conversation running
//! at the same time is not disturbed.

use std::net::{SocketAddr, UdpSocket};
use std::thread;

use sotto_tests::raw::{Outcome, RawClient};
use sotto_tests::{Relay, User, texts};
use sotto_wire::relay::{self, ErrorCode, Request, request, response};

/// The error code in an `Error` response, if that is what came back.
fn error_code(outcome: &Outcome) -> Option<ErrorCode> {
    match outcome {
        Outcome::Response(relay::Response {
            kind: Some(response::Kind::Error(e)),
            ..
        }) => ErrorCode::try_from(e.code).ok(),
        _ => None,
    }
}

/// Runs every kind of abuse against `addr` and returns a description of each
/// case that was not refused cleanly.
async fn abuse(addr: SocketAddr) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |what: &str, outcome: &Outcome| {
        if !outcome.is_refusal() {
            failures.push(format!("{what}: {outcome:?}"));
        }
    };

    // Each case gets its own connection, so the relay's "too many bad frames"
    // cut-off on one connection cannot hide how it treats the next case.
    let client = RawClient::danger_connect(addr).await.expect("raw connect");
    // A length prefix followed by bytes that are not protobuf.
    let garbage = [0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let outcome = client.exchange(&garbage, true).await;
    check("garbage frame", &outcome);
    if matches!(outcome, Outcome::Response(_)) {
        assert_eq!(
            error_code(&outcome),
            Some(ErrorCode::Malformed),
            "{outcome:?}"
        );
    }
    client.close().await;

    let client = RawClient::danger_connect(addr).await.expect("raw connect");
    // The header promises 100 bytes; only 10 arrive before the stream ends.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0x08; 10]);
    check("truncated frame", &client.exchange(&truncated, true).await);
    // Fewer bytes than a header.
    check("two-byte stream", &client.exchange(&[0, 1], true).await);
    client.close().await;

    let client = RawClient::danger_connect(addr).await.expect("raw connect");
    // A 100 MB length prefix: refused before the relay allocates or reads it.
    let mut oversized = (100u32 * 1024 * 1024).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 4096]);
    let outcome = client.exchange(&oversized, false).await;
    check("100 MB length prefix", &outcome);
    if matches!(outcome, Outcome::Response(_)) {
        assert_eq!(
            error_code(&outcome),
            Some(ErrorCode::TooLarge),
            "{outcome:?}"
        );
    }
    client.close().await;

    let client = RawClient::danger_connect(addr).await.expect("raw connect");
    // A well-formed request with a protocol version nobody speaks.
    let wrong_version = Request {
        version: 999,
        kind: Some(request::Kind::Challenge(relay::ChallengeRequest {})),
    };
    let outcome = client.request(&wrong_version).await;
    check("wrong version", &outcome);
    if matches!(outcome, Outcome::Response(_)) {
        assert_eq!(
            error_code(&outcome),
            Some(ErrorCode::UnsupportedVersion),
            "{outcome:?}"
        );
    }
    // A valid request that needs authentication, on an unauthenticated connection.
    let unauthenticated = Request {
        version: sotto_wire::PROTOCOL_VERSION,
        kind: Some(request::Kind::Fetch(relay::Fetch { limit: 10 })),
    };
    let outcome = client.request(&unauthenticated).await;
    check("unauthenticated fetch", &outcome);
    client.close().await;

    // A flood of garbage streams on one connection: each is refused or the
    // connection is cut; none hangs.
    let client = RawClient::danger_connect(addr).await.expect("raw connect");
    let floods = (0..64).map(|i| {
        let frame: Vec<u8> = [0, 0, 0, 3, 0xff, i as u8, 0xff].to_vec();
        let client = &client;
        async move { client.exchange(&frame, true).await }
    });
    for outcome in futures_join_all(floods).await {
        check("flooded garbage stream", &outcome);
    }
    client.close().await;

    // Plain UDP junk at the port, which is not even QUIC.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    for n in 0..50u8 {
        let _ = udp.send_to(&[n; 1200], addr);
    }

    // After all that, a fresh connection still gets a proper answer.
    let client = RawClient::danger_connect(addr)
        .await
        .expect("raw connect after abuse");
    let hello = Request {
        version: sotto_wire::PROTOCOL_VERSION,
        kind: Some(request::Kind::Challenge(relay::ChallengeRequest {})),
    };
    match client.request(&hello).await {
        Outcome::Response(relay::Response {
            kind: Some(response::Kind::Challenge(c)),
            ..
        }) => assert!(!c.nonce.is_empty(), "the challenge has a nonce"),
        other => failures.push(format!("challenge after abuse: {other:?}")),
    }
    client.close().await;
    failures
}

/// Polls a set of futures to completion concurrently on the current task
/// (the workspace has no `futures` crate; tokio's JoinSet needs 'static).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

#[test]
fn abusive_frames_do_not_disturb_a_conversation() {
    let mut relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);

    let addr = relay.addr();
    let abuser = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        // Two rounds, so the abuse overlaps the whole conversation below.
        let mut failures = rt.block_on(abuse(addr));
        failures.extend(rt.block_on(abuse(addr)));
        failures
    });

    let sent: Vec<String> = (1..=4).map(|i| format!("during the abuse #{i}")).collect();
    for text in &sent {
        alice.ok(&["send", "bob", text]);
    }
    let got = bob.sync_json();
    bob.ok(&["send", "alice", "still here"]);
    let failures = abuser.join().expect("abuse thread panicked");

    assert_eq!(
        texts(&got),
        sent,
        "the conversation went through during the abuse"
    );
    assert_eq!(texts(&alice.sync_json()), ["still here"]);
    assert!(relay.is_alive(), "the relay died\n{}", relay.stderr());
    assert!(
        failures.is_empty(),
        "abusive streams that were not refused:\n{}",
        failures.join("\n")
    );
    // And it still serves after the abuse ended.
    alice.ok(&["send", "bob", "after the abuse"]);
    assert_eq!(texts(&bob.sync_json()), ["after the abuse"]);
}
