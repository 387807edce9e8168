//! Scenarios 3 and 4: nothing acknowledged is lost, and nothing is shown twice,
//! across a `kill -9` of the relay or a client crash before it acknowledges.

use std::os::unix::process::ExitStatusExt;

use sotto_tests::{Relay, User, describe, parse_json_lines, texts};

/// Scenario 3: the relay is killed with SIGKILL while acknowledged messages
/// wait in a mailbox; after a restart each one is delivered exactly once.
#[test]
fn relay_kill9_loses_no_acknowledged_message() {
    let mut relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);

    let before: Vec<String> = (1..=5)
        .map(|i| format!("queued before the crash #{i}"))
        .collect();
    for text in &before {
        // `send` exits 0 only once the relay has made the envelope durable.
        alice.ok(&["send", "bob", text]);
    }
    relay.kill9();
    assert!(!relay.is_alive());
    relay.restart();
    assert!(
        relay.is_alive(),
        "relay did not come back\n{}",
        relay.stderr()
    );

    alice.ok(&["send", "bob", "sent after the restart"]);
    let got = bob.sync_json();
    let mut expected = before.clone();
    expected.push("sent after the restart".to_string());
    assert_eq!(
        texts(&got),
        expected,
        "every acknowledged message, once, in order"
    );
    assert!(bob.sync_json().is_empty(), "nothing is delivered twice");
    assert_eq!(texts(&bob.history_json("alice")), expected);

    // The restarted relay still serves the other direction.
    bob.ok(&["send", "alice", "all arrived"]);
    assert_eq!(texts(&alice.sync_json()), ["all arrived"]);
}

/// Scenario 4: the client aborts after storing and printing fetched messages
/// but before acknowledging them. The relay delivers them again; the client
/// keeps exactly one copy.
#[test]
fn client_crash_before_ack_shows_each_message_once() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);

    alice.ok(&["send", "bob", "crash-test message one"]);
    alice.ok(&["send", "bob", "crash-test message two"]);

    let crashed = bob.run_with_env(
        &["sync", "--json"],
        &[("SOTTO_DANGER_CRASH_BEFORE_ACK", "1")],
    );
    assert!(
        !crashed.status.success(),
        "the crash hook must abort\n{}",
        describe(&crashed)
    );
    assert_eq!(
        crashed.status.signal(),
        Some(6),
        "expected SIGABRT from the crash hook\n{}",
        describe(&crashed)
    );
    let first = parse_json_lines(&String::from_utf8_lossy(&crashed.stdout), "sync --json");
    assert_eq!(
        texts(&first),
        ["crash-test message one", "crash-test message two"],
        "the crashed sync printed what it stored"
    );

    // The relay was never acknowledged, so it delivers them again; the client
    // recognises the ids and does not show them as new.
    let second = bob.sync_json();
    let repeated = texts(&second);
    assert!(
        repeated.is_empty(),
        "messages already stored and shown must not be shown again: {repeated:?}"
    );
    assert!(
        bob.sync_json().is_empty(),
        "a third sync prints nothing new"
    );

    assert_eq!(
        texts(&bob.history_json("alice")),
        ["crash-test message one", "crash-test message two"],
        "history holds exactly one copy of each"
    );
}
