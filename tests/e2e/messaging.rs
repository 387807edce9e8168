//! Scenarios 1 and 2: two users exchange messages, online and offline.

use sotto_tests::{Relay, User, texts};

/// Scenario 1: messages flow both ways; sync and history show them with the
/// documented JSON fields.
#[test]
fn two_users_exchange_messages_both_ways() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);

    alice.ok(&["send", "bob", "hi bob, it's about the night manager"]);
    let got = bob.sync_json();
    assert_eq!(texts(&got), ["hi bob, it's about the night manager"]);
    let m = &got[0];
    assert_eq!(m["from"], "alice", "bob named the contact `alice`: {m}");
    assert!(m["id"].as_str().is_some_and(|s| !s.is_empty()), "id: {m}");
    assert!(
        m["sent_at"].as_u64().is_some_and(|t| t > 1_600_000_000_000),
        "sent_at in ms: {m}"
    );
    assert!(m["group"].is_null(), "a direct message has no group: {m}");

    bob.ok(&["send", "alice", "thanks, I saw it too"]);
    bob.ok(&["send", "alice", "let's talk to the rep"]);
    let got = alice.sync_json();
    assert_eq!(
        texts(&got),
        ["thanks, I saw it too", "let's talk to the rep"]
    );
    assert!(got.iter().all(|m| m["from"] == "bob"), "{got:?}");

    // A second sync has nothing new: delivered envelopes were acknowledged.
    assert!(alice.sync_json().is_empty());
    assert!(bob.sync_json().is_empty());

    let expected = [
        "hi bob, it's about the night manager",
        "thanks, I saw it too",
        "let's talk to the rep",
    ];
    let alice_history = alice.history_json("bob");
    assert_eq!(
        texts(&alice_history),
        expected,
        "alice's history, oldest first"
    );
    let bob_history = bob.history_json("alice");
    assert_eq!(texts(&bob_history), expected, "bob's history, oldest first");
    // The same message has the same id on both sides (receivers dedupe by id).
    assert_eq!(alice_history[0]["id"], bob_history[0]["id"]);
    assert_eq!(alice_history[1]["id"], bob_history[1]["id"]);

    // The plain (non-JSON) forms work too.
    let plain = bob.ok(&["history", "alice"]);
    assert!(plain.contains("let's talk to the rep"), "{plain}");
    let list = alice.ok(&["contact", "list"]);
    assert!(list.contains("bob"), "{list}");
}

/// Scenario 2: the recipient has never connected since the send; the message
/// waits in the relay's mailbox and arrives at the next sync.
#[test]
fn offline_recipient_receives_later() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);

    // Bob is not running any client while these are sent.
    alice.ok(&["send", "bob", "first while you were away"]);
    alice.ok(&["send", "bob", "second while you were away"]);

    let got = bob.sync_json();
    assert_eq!(
        texts(&got),
        ["first while you were away", "second while you were away"]
    );
    // Bob has not added Alice, so she shows under her chosen display name.
    assert_eq!(got[0]["from"], "Alice", "{:?}", got[0]);

    // Bob can reply after adding her.
    bob.add_contact("alice", &alice);
    bob.ok(&["send", "alice", "back now"]);
    assert_eq!(texts(&alice.sync_json()), ["back now"]);
}
