//! `sotto listen` prints pushed messages as they arrive, and while it holds the
//! profile, every other command goes through it (a passphrase given is
//! checked) instead of failing on the store lock.

use std::sync::mpsc;
use std::time::Duration;

use sotto_tests::{Relay, User};

fn next_text(lines: &mpsc::Receiver<String>, what: &str) -> String {
    let line = lines
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("listen printed nothing within 20 s ({what})"));
    let value: serde_json::Value = serde_json::from_str(&line).expect("listen prints JSON lines");
    value["text"].as_str().expect("a text field").to_string()
}

#[test]
fn listen_receives_pushes_and_relays_sends() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);

    let (mut bob_listen, bob_lines) = bob.listen();
    // Give the listener time to connect before the first push.
    std::thread::sleep(Duration::from_millis(500));
    alice.ok(&["send", "bob", "pushed while bob listens"]);
    assert_eq!(
        next_text(&bob_lines, "first push"),
        "pushed while bob listens"
    );

    // Bob's store is held by his listener; his send goes through it and
    // prints what it prints without one.
    let out = bob.ok(&["send", "alice", "sent through the listener"]);
    assert!(out.starts_with("sent "), "{out}");
    let wrong = bob.run_with_env(
        &["send", "alice", "must not be sent"],
        &[("SOTTO_PASSPHRASE", "not the passphrase")],
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));
    // Other commands work through it too (issue 13: no more "profile busy").
    let history = bob.history_json("alice");
    assert_eq!(
        sotto_tests::texts(&history),
        ["pushed while bob listens", "sent through the listener"]
    );

    let got = alice.sync_json();
    let texts: Vec<&str> = got.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["sent through the listener"]);

    // SIGTERM stops the listener cleanly and frees the profile.
    let pid = i32::try_from(bob_listen.id()).expect("pid fits");
    assert_eq!(term(pid), 0);
    let status = bob_listen.wait().expect("wait for listen");
    assert!(status.success(), "listen exited with {status}");
    assert!(!bob.home().join("control.sock").exists());
    let history = bob.history_json("alice");
    assert_eq!(history.len(), 2, "{history:?}");
}

/// Sends SIGTERM through the `kill` command, keeping this crate free of `unsafe`.
fn term(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill")
        .code()
        .unwrap_or(-1)
}

/// Group messages are pushed to a listener too, and `sotto group send` goes
/// through the listener that holds the profile.
#[test]
fn listen_receives_group_pushes_and_relays_group_sends() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    alice.ok(&["group", "create", "Rota"]);
    alice.ok(&["group", "add", "Rota", "bob"]);
    bob.ok(&["sync"]);

    let (mut bob_listen, bob_lines) = bob.listen();
    std::thread::sleep(Duration::from_millis(500));
    alice.ok(&["group", "send", "Rota", "group push while bob listens"]);
    assert_eq!(
        next_text(&bob_lines, "group push"),
        "group push while bob listens"
    );
    let out = bob.ok(&["group", "send", "Rota", "group send through the listener"]);
    assert!(out.starts_with("sent "), "{out}");
    let got = alice.sync_json();
    let texts: Vec<&str> = got.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["group send through the listener"]);
    assert_eq!(got[0]["group_title"], "Rota");

    let pid = i32::try_from(bob_listen.id()).expect("pid fits");
    assert_eq!(term(pid), 0);
    assert!(bob_listen.wait().expect("wait").success());
}

/// Issue 12: `send` through a running `listen` while the relay was down hung
/// for 11 minutes (the listener served commands only while connected). Now
/// it answers within seconds that the message is queued (status 75), the
/// listener sends it by itself once the relay is back, and it arrives once.
#[test]
fn a_send_through_the_listener_while_the_relay_is_down_is_queued_and_goes_out_alone() {
    let mut relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    // A first message makes the session, so the queued one needs no bundle.
    alice.ok(&["send", "bob", "before the outage"]);

    let (mut alice_listen, _lines) = alice.listen();
    // The listener holds the profile once its control socket exists; a
    // send before that would take the direct path.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !alice.home().join("control.sock").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never opened its control socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    relay.kill9();

    let started = std::time::Instant::now();
    let out = alice.run(&["send", "bob", "written while the relay is down"]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(75),
        "a queued send exits 75\n{}",
        sotto_tests::describe(&out)
    );
    assert!(stdout.starts_with("queued "), "{stdout}");
    assert!(stdout.contains("do not send it again"), "{stdout}");
    assert!(stdout.contains("sends it by itself"), "{stdout}");
    // Generous bound: the listener answers after at most 4 s of trying.
    assert!(
        took < Duration::from_secs(15),
        "the send took {took:?} to say it was queued"
    );

    relay.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut texts: Vec<String> = Vec::new();
    while !texts.iter().any(|t| t == "written while the relay is down") {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never sent the queued message; bob has {texts:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
        texts.extend(sotto_tests::texts(&bob.sync_json()));
    }
    // Once: no second copy arrives later either.
    std::thread::sleep(Duration::from_secs(6));
    texts.extend(sotto_tests::texts(&bob.sync_json()));
    let copies = texts
        .iter()
        .filter(|t| *t == "written while the relay is down")
        .count();
    assert_eq!(copies, 1, "{texts:?}");

    assert_eq!(term(i32::try_from(alice_listen.id()).expect("pid")), 0);
    assert!(alice_listen.wait().expect("wait").success());
    let history = alice.history_json("bob");
    let last = history.last().expect("alice has history");
    assert_eq!(last["text"], "written while the relay is down");
    assert_eq!(last["status"], "sent", "{history:?}");
}
