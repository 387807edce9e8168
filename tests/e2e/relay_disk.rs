//! Scenario 6: whoever seizes the relay's disk finds no message text, display
//! name or contact name (DESIGN.md, threat model).

use sotto_tests::{Relay, User, leaks, texts};

#[test]
fn relay_disk_holds_no_plaintext() {
    let mut relay = Relay::start();
    // Distinctive strings, so a match cannot be a coincidence.
    let alice_name = "Quokka-Display-Alice-7781";
    let bob_name = "Narwhal-Display-Bob-5523";
    let alice_calls_bob = "contact-name-Periwinkle-bob";
    let bob_calls_alice = "contact-name-Marmalade-alice";
    let messages = [
        "secret-text-Zanzibar: the deputy manager grabbed my arm",
        "secret-text-Kilimanjaro: same thing happened to me in March",
    ];

    let alice = User::new(&relay, alice_name);
    let bob = User::new(&relay, bob_name);
    alice.add_contact(alice_calls_bob, &bob);
    bob.add_contact(bob_calls_alice, &alice);
    alice.ok(&["send", alice_calls_bob, messages[0]]);
    bob.ok(&["send", bob_calls_alice, messages[1]]);
    // One message is fetched and acknowledged, the other still waits in a
    // mailbox, so both "delivered" and "queued" states are on disk.
    assert_eq!(texts(&alice.sync_json()), [messages[1]]);

    let needles = [
        alice_name,
        bob_name,
        alice_calls_bob,
        bob_calls_alice,
        messages[0],
        messages[1],
        "Zanzibar",
        "Kilimanjaro",
        "Quokka",
        "Narwhal",
        "Periwinkle",
        "Marmalade",
    ];
    let running = leaks(&relay.data_dir(), &needles);
    assert!(
        running.is_empty(),
        "plaintext on the relay's disk: {running:?}"
    );

    // After a kill -9 whatever sled had buffered is gone or on disk; look again.
    relay.kill9();
    let after = leaks(&relay.data_dir(), &needles);
    assert!(after.is_empty(), "plaintext on the relay's disk: {after:?}");

    // Nor does the relay log them.
    let log = relay.stderr();
    for needle in needles {
        assert!(!log.contains(needle), "the relay logged {needle:?}");
    }

    // The queued message is still deliverable after a restart, so the check
    // above looked at a disk that really holds it (encrypted).
    relay.restart();
    assert_eq!(texts(&bob.sync_json()), [messages[0]]);
}
