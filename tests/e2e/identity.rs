//! Scenario 8: a contact's identity key changes; sending is blocked with a
//! "safety number" message until the user trusts the new key.

use sotto_tests::{Relay, User, texts};

#[test]
fn changed_identity_blocks_sending_until_trusted() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);

    // Establish a session and a trusted key first.
    alice.ok(&["send", "bob", "before the reset"]);
    assert_eq!(texts(&bob.sync_json()), ["before the reset"]);
    let before = alice.ok(&["contact", "verify", "bob"]);

    bob.ok(&["identity", "reset"]);

    let err = alice.fails(&["send", "bob", "must not go out unverified"]);
    assert!(
        err.to_lowercase().contains("safety number"),
        "the refusal should mention the safety number: {err}"
    );
    // Nothing reached bob while blocked.
    assert!(
        bob.sync_json().is_empty(),
        "a blocked message was delivered"
    );

    let after = alice.ok(&["contact", "verify", "bob"]);
    assert_ne!(
        before, after,
        "the safety number must change with bob's key"
    );

    alice.ok(&["contact", "trust", "bob"]);
    alice.ok(&["send", "bob", "after trusting the new key"]);
    let got = texts(&bob.sync_json());
    assert_eq!(got, ["after trusting the new key"]);

    // Bob's re-keyed device can answer too.
    bob.ok(&["send", "alice", "reply from the new key"]);
    assert_eq!(texts(&alice.sync_json()), ["reply from the new key"]);
}
