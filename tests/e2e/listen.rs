//! `sotto listen` prints pushed messages as they arrive, and while it holds the
//! profile, `sotto send` from another process goes through it (with the
//! passphrase checked) instead of failing on the store lock.

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

    // Bob's store is held by his listener; his send goes through it.
    let out = bob.ok(&["send", "alice", "sent through the listener"]);
    assert!(out.contains("through the running `sotto listen`"), "{out}");
    let wrong = bob.run_with_env(
        &["send", "alice", "must not be sent"],
        &[("SOTTO_PASSPHRASE", "not the passphrase")],
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));
    // Other commands still say who holds the profile.
    let busy = bob.run(&["history", "alice"]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("sotto listen"));

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
    assert!(out.contains("through the running `sotto listen`"), "{out}");
    let got = alice.sync_json();
    let texts: Vec<&str> = got.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["group send through the listener"]);
    assert_eq!(got[0]["group_title"], "Rota");

    let pid = i32::try_from(bob_listen.id()).expect("pid fits");
    assert_eq!(term(pid), 0);
    assert!(bob_listen.wait().expect("wait").success());
}
