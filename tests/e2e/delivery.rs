//! Messages that are never lost or misleading (issue 12): `identity reset`
//! keeps what was sent to the old key, a contact's reset shows at once and
//! is verified only when its number was seen, a send while the relay is down
//! says "queued" fast and goes out once, and empty content is refused.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sotto_tests::{Relay, TIMEOUT, User, describe, parse_json_lines, texts};

const TITLE: &str = "Late shift";

/// Alice and Bob know each other, have a session, and share a group Alice owns.
fn pair(relay: &Relay) -> (User, User) {
    let alice = User::new(relay, "Alice");
    let bob = User::new(relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    alice.ok(&["send", "bob", "hello"]);
    assert_eq!(texts(&bob.sync_json()), ["hello"]);
    alice.ok(&["group", "create", TITLE]);
    alice.ok(&["group", "add", TITLE, "bob"]);
    bob.ok(&["sync"]);
    (alice, bob)
}

fn history(u: &User, name: &str) -> Vec<String> {
    texts(&u.history_json(name))
}

fn contact(u: &User, name: &str) -> serde_json::Value {
    parse_json_lines(&u.ok(&["contact", "list", "--json"]), "contact list --json")
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no contact {name}"))
}

fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn identity_reset_keeps_the_messages_waiting_for_the_old_key() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    // Queued for Bob, sealed to his old key, when he resets.
    for text in ["one", "two", "three"] {
        alice.ok(&["send", "bob", text]);
    }
    for text in ["g1", "g2", "g3", "g4", "g5", "g6"] {
        alice.ok(&["group", "send", TITLE, text]);
    }
    let out = bob.run(&["identity", "reset"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("dropped"), "{stderr}");
    // The reset read them first and showed them, as `sync` would.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("three") && stdout.contains("g6"),
        "{stdout}"
    );
    assert_eq!(history(&bob, "alice"), ["hello", "one", "two", "three"]);
    assert_eq!(history(&bob, TITLE), ["g1", "g2", "g3", "g4", "g5", "g6"]);
    assert!(bob.sync_json().is_empty(), "nothing left to fetch");
}

#[test]
fn messages_sealed_to_the_old_key_after_the_reset_still_open() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    let gate = tempfile::tempdir().expect("temp dir");
    let go = gate.path().join("go");
    // Bob's reset stops after reading his mailbox and before the relay
    // switches keys: Alice, who does not know yet, sends then.
    let mut reset = bob
        .command()
        .args(["identity", "reset"])
        .env("SOTTO_DANGER_RESET_PAUSE", &go)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the reset");
    wait_for(&gate.path().join("go.waiting"), "the reset's pause");
    alice.ok(&["send", "bob", "late, 1:1"]);
    alice.ok(&["group", "send", TITLE, "late, group"]);
    std::fs::write(&go, b"").expect("let the reset go on");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = reset.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the reset never finished");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the reset failed");

    let out = bob.run(&["sync", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("cannot be decrypted"), "{stderr}");
    let got = texts(&parse_json_lines(
        &String::from_utf8_lossy(&out.stdout),
        "sync --json",
    ));
    assert_eq!(got, ["late, 1:1", "late, group"]);

    // Bob answers from his new key: Alice reads it and is told of the change.
    bob.ok(&["send", "alice", "from my new key"]);
    let out = alice.run(&["sync", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("safety number has changed"),
        "{}",
        describe(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("from my new key"));
}

#[test]
fn a_reset_cut_short_after_the_relay_took_the_key_is_finished_next_time() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    let out = bob.run_with_env(
        &["identity", "reset"],
        &[("SOTTO_DANGER_CRASH_AFTER_RESET", "1")],
    );
    assert!(!out.status.success(), "the hook should have stopped it");
    // The profile still proves itself to the relay, with the new key.
    bob.ok(&["sync"]);
    alice.ok(&["contact", "verify", "bob"]);
    alice.ok(&["contact", "trust", "bob"]);
    alice.ok(&["send", "bob", "to the new key"]);
    assert_eq!(texts(&bob.sync_json()), ["to the new key"]);
    bob.ok(&["send", "alice", "from the new key"]);
    assert_eq!(texts(&alice.sync_json()), ["from the new key"]);
}

#[test]
fn a_contacts_reset_shows_on_sync_and_trust_marks_verified_only_once_seen() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    let cat = User::new(&relay, "Cat");
    alice.add_contact("cat", &cat);

    // Trusting an unchanged key without looking at its number claims nothing.
    let said = alice.ok(&["contact", "trust", "cat"]);
    assert!(said.contains("has not changed"), "{said}");
    assert!(said.contains("NOT marked verified"), "{said}");
    assert_eq!(contact(&alice, "cat")["verified"], false);

    let before = alice.ok(&["contact", "verify", "bob"]);
    let said = alice.ok(&["contact", "trust", "bob"]);
    assert!(said.contains("Marked bob verified"), "{said}");

    bob.ok(&["identity", "reset"]);
    let out = alice.run(&["sync"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bob's safety number has changed"),
        "the next sync must say so: {stderr}"
    );
    assert_eq!(contact(&alice, "bob")["identity_changed"], true);

    // Accepting the new key unblocks sending but is not a verification.
    let said = alice.ok(&["contact", "trust", "bob"]);
    assert!(said.contains("Accepted bob's new identity key"), "{said}");
    assert!(said.contains("NOT marked verified"), "{said}");
    let listed = contact(&alice, "bob");
    assert_eq!(listed["verified"], false);
    assert_eq!(listed["identity_changed"], false);

    let after = alice.ok(&["contact", "verify", "bob"]);
    assert_ne!(before, after, "verify must show the new number");
    let said = alice.ok(&["contact", "trust", "bob"]);
    assert!(said.contains("Marked bob verified"), "{said}");
    assert_eq!(contact(&alice, "bob")["verified"], true);

    // --i-compared marks verified without the number shown here.
    let said = alice.ok(&["contact", "trust", "cat", "--i-compared"]);
    assert!(said.contains("--i-compared"), "{said}");
    assert_eq!(contact(&alice, "cat")["verified"], true);
}

#[test]
fn verify_shows_a_contacts_new_number_before_anything_was_sent() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    let before = alice.ok(&["contact", "verify", "bob"]);
    bob.ok(&["identity", "reset"]);
    // No sync, no send: verify itself asks the relay.
    let after = alice.ok(&["contact", "verify", "bob"]);
    assert_ne!(before, after);
    assert!(after.contains("WARNING"), "{after}");
}

#[test]
fn a_send_while_the_relay_is_down_is_queued_fast_and_goes_out_once() {
    let mut relay = Relay::start();
    let (alice, bob) = pair(&relay);
    relay.kill9();

    let started = Instant::now();
    let out = alice.run(&["send", "bob", "while it was down"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("queued "), "{stdout}");
    assert!(stdout.contains("do not send it again"), "{stdout}");

    let started = Instant::now();
    let out = alice.run(&["group", "send", TITLE, "group, while down"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(started.elapsed() < Duration::from_secs(10));

    relay.restart();
    // A later command sends what waits, with no second send by the user.
    alice.ok(&["sync"]);
    let got = texts(&bob.sync_json());
    assert_eq!(got, ["while it was down", "group, while down"]);
    alice.ok(&["sync"]);
    assert!(bob.sync_json().is_empty(), "delivered more than once");
    let statuses: Vec<String> = alice
        .history_json("bob")
        .iter()
        .map(|m| m["status"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(statuses, ["sent", "sent"]);
}

#[test]
fn a_stopped_relay_is_reported_at_once() {
    let mut relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    relay.kill9();
    let started = Instant::now();
    let err = alice.fails(&["sync"]);
    let took = started.elapsed();
    // QUIC gets its 1.5 s head start, not the 10 s connect timeout.
    assert!(took < Duration::from_secs(10), "took {took:?}: {err}");
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn empty_content_is_refused_and_nothing_is_claimed() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    for text in ["", "   ", "\n\t"] {
        let err = alice.fails(&["send", "bob", text]);
        assert!(err.contains("empty"), "{err}");
        let err = alice.fails(&["group", "send", TITLE, text]);
        assert!(err.contains("empty"), "{err}");
        let err = alice.fails(&["note", "add", text]);
        assert!(err.contains("nothing was kept"), "{err}");
        assert!(!err.contains("is kept"), "{err}");
    }
    assert!(bob.sync_json().is_empty(), "a blank message went out");
    assert_eq!(history(&alice, "bob"), ["hello"]);
    assert!(alice.ok(&["note", "list"]).trim().is_empty());
}

#[test]
fn an_empty_sync_to_a_pipe_prints_nothing() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let out = alice.run(&["sync"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(alice.ok(&["sync", "--json"]), "");
}

/// Copies a profile's files (the profile must not be open).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the profile") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

#[test]
fn a_message_the_recipient_cannot_open_is_asked_for_and_sent_again() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    // Bob's profile goes back to a copy made before he had Alice's group
    // key (a restored backup): her next group message cannot be opened.
    let saved = tempfile::tempdir().expect("temp dir");
    copy_dir(bob.home(), saved.path());
    alice.ok(&["group", "send", TITLE, "g1"]);
    assert_eq!(texts(&bob.sync_json()), ["g1"]);
    std::fs::remove_dir_all(bob.home().join("store")).expect("remove bob's store");
    copy_dir(&saved.path().join("store"), &bob.home().join("store"));
    alice.ok(&["group", "send", TITLE, "g2"]);

    let out = bob.run(&["sync", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be decrypted"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "nothing to show yet"
    );

    // Alice's app gets Bob's request and sends the message again.
    let out = alice.run(&["sync"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sending it again"),
        "{}",
        describe(&out)
    );
    assert_eq!(texts(&bob.sync_json()), ["g2"]);
    // And her next group message carries her group key again.
    alice.ok(&["group", "send", TITLE, "g3"]);
    assert_eq!(texts(&bob.sync_json()), ["g3"]);
}

#[test]
fn a_direct_message_the_recipient_cannot_open_is_sent_again_and_shows_its_state() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    // Bob's profile goes back to before he had a session with Alice.
    let saved = tempfile::tempdir().expect("temp dir");
    copy_dir(bob.home(), saved.path());
    alice.ok(&["send", "bob", "a1"]);
    assert_eq!(texts(&bob.sync_json()), ["a1"]);
    // His answer moves Alice's side of the session on: her next message
    // needs the session state Bob is about to lose.
    bob.ok(&["send", "alice", "b1"]);
    assert_eq!(texts(&alice.sync_json()), ["b1"]);
    std::fs::remove_dir_all(bob.home().join("store")).expect("remove bob's store");
    copy_dir(&saved.path().join("store"), &bob.home().join("store"));
    alice.ok(&["send", "bob", "a2"]);

    let out = bob.run(&["sync", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "{}",
        describe(&out)
    );
    let out = alice.run(&["sync"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sending it again"),
        "{}",
        describe(&out)
    );
    assert_eq!(texts(&bob.sync_json()), ["a2"]);
    let statuses: Vec<String> = alice
        .history_json("bob")
        .iter()
        .map(|m| m["status"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(statuses, ["sent", "received", "sent"]);
}
