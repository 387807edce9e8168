//! The relay's abuse limits, each tripped through the real `sotto` binary:
//! the user gets a clear "try again in" error, nothing they wrote is lost,
//! and other accounts carry on.

use sotto_tests::{Relay, User, texts};

#[test]
fn sends_per_minute_refuse_one_account_and_keep_the_message() {
    let relay = Relay::start_with_env(&[("SOTTO_RELAY_SENDS_PER_MINUTE", "3")]);
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    let carol = User::new(&relay, "Carol");
    alice.add_contact("bob", &bob);
    carol.add_contact("bob", &bob);
    for i in 0..3 {
        alice.ok(&["send", "bob", &format!("message {i}")]);
    }
    let err = alice.fails(&["send", "bob", "one too many"]);
    assert!(
        err.contains("too many messages sent") && err.contains("try again in"),
        "{err}"
    );
    assert!(err.contains("kept"), "the user is told it is kept: {err}");
    // Carol's sends are counted separately.
    carol.ok(&["send", "bob", "from carol"]);
    let got = texts(&bob.sync_json());
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.contains(&"from carol".to_string()));
    assert!(!got.contains(&"one too many".to_string()));
    // The refused message waits in Alice's outbox, not lost.
    let history = alice.history_json("bob");
    let pending = history
        .iter()
        .find(|m| m["text"] == "one too many")
        .unwrap_or_else(|| panic!("refused message missing from history: {history:?}"));
    assert_eq!(pending["status"], "pending", "{pending}");
}

#[test]
fn registrations_per_address_are_limited_but_members_carry_on() {
    let relay = Relay::start_with_env(&[("SOTTO_RELAY_REGISTRATIONS_PER_ADDRESS_PER_HOUR", "2")]);
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    let mallory = User::uninitialised("Mallory");
    let err = mallory.fails(&["init", "--invite", &relay.invite(1), "--name", "Mallory"]);
    assert!(
        err.contains("too many registrations from this network address")
            && err.contains("try again in"),
        "{err}"
    );
    alice.add_contact("bob", &bob);
    alice.ok(&["send", "bob", "still works"]);
    assert_eq!(texts(&bob.sync_json()), vec!["still works".to_string()]);
}

#[test]
fn connections_per_address_are_limited_with_a_reason() {
    // Signed-in connections count against the address; strangers who never
    // sign in have their own budget (tests/e2e/strangers.rs).
    let relay = Relay::start_with_env(&[("SOTTO_RELAY_CONNECTIONS_PER_ADDRESS", "2")]);
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    let carol = User::new(&relay, "Carol");
    let (first, _) = alice.listen();
    let (second, _) = bob.listen();
    let (mut first, _second) = (Stopped(first), Stopped(second));
    let deadline = std::time::Instant::now() + sotto_tests::TIMEOUT;
    let err = loop {
        // Until both listeners have signed in, Carol may still get a slot.
        let out = carol.run(&["sync"]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "carol was never refused with two listeners signed in"
        );
    };
    assert!(
        err.contains("too many connections from your network address"),
        "{err}"
    );
    // Interrupted, `listen` closes its connection politely (a kill would
    // leave the slot taken until QUIC's idle timeout).
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(first.0.id().to_string())
        .status();
    let _ = first.0.wait();
    // With a slot free again, the same user gets through.
    let deadline = std::time::Instant::now() + sotto_tests::TIMEOUT;
    while !carol.run(&["sync"]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "carol never got the freed slot"
        );
    }
}

/// A `sotto listen` killed when the test ends, however it ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bundle_fetches_are_limited_and_one_time_keys_are_not_drained() {
    let relay = Relay::start_with_env(&[
        ("SOTTO_RELAY_BUNDLE_FETCHES_PER_HOUR", "2"),
        ("SOTTO_RELAY_ONE_TIME_KEYS_PER_HOUR", "1"),
    ]);
    let victim = User::new(&relay, "Victim");
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("victim", &victim);
    bob.add_contact("victim", &victim);
    alice.ok(&["send", "victim", "hello from alice"]);
    // Bob's session starts without a one-time key: the victim handed out
    // its one for this hour.
    bob.ok(&["send", "victim", "hello from bob"]);
    let got = texts(&victim.sync_json());
    assert_eq!(got.len(), 2, "both sessions work: {got:?}");
    let keys: serde_json::Value =
        serde_json::from_str(victim.ok(&["keys", "--json", "--no-top-up"]).trim())
            .expect("keys --json is JSON");
    assert_eq!(keys["pre_keys"], 99, "only one one-time key left: {keys}");

    // Alice's third new session in the hour is refused; the message is kept.
    let carol = User::new(&relay, "Carol");
    let dave = User::new(&relay, "Dave");
    alice.add_contact("carol", &carol);
    alice.add_contact("dave", &dave);
    alice.ok(&["send", "carol", "hello carol"]);
    let err = alice.fails(&["send", "dave", "hello dave"]);
    assert!(
        err.contains("too many key bundle fetches") && err.contains("try again in"),
        "{err}"
    );
    // Others are not affected.
    bob.add_contact("dave", &dave);
    bob.ok(&["send", "dave", "bob to dave"]);
    assert_eq!(texts(&dave.sync_json()), vec!["bob to dave".to_string()]);
}
