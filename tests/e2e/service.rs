//! Issue 13: while `sotto app` runs for a profile, every `sotto` command
//! goes through its service and prints exactly what it prints without one,
//! with the same exit status; a locked service is unlocked by the command's
//! passphrase, and a wrong one fails as it would without the service.

use std::process::Output;
use std::time::{Duration, Instant};

use sotto_tests::{Relay, User};

/// stdout, stderr and status, for comparing two runs of one command.
fn seen(out: &Output) -> (String, String, Option<i32>) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// A profile with something in every list: contacts, a conversation, a
/// group with a post and a warning, notes.
fn busy_profile(relay: &Relay) -> (User, User) {
    let alice = User::new(relay, "Alice");
    let bob = User::new(relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    alice.ok(&["send", "bob", "hello bob"]);
    bob.ok(&["sync"]);
    bob.ok(&["send", "alice", "line one\nline two <b>"]);
    alice.ok(&["sync"]);
    alice.ok(&["group", "create", "Staff"]);
    alice.ok(&["group", "add", "Staff", "bob"]);
    bob.ok(&["sync"]);
    alice.ok(&["group", "send", "Staff", "welcome"]);
    alice.ok(&[
        "warn",
        "Staff",
        "--about",
        "Sir Quentin Blackwood MP",
        "--kind",
        "harassment",
        "--firsthand",
        "He followed me to the car park.",
    ]);
    alice.ok(&["note", "add", "what happened on the 3rd"]);
    (alice, bob)
}

/// Commands that change nothing: each must print the same both ways.
const READS: &[&[&str]] = &[
    &["whoami"],
    &["whoami", "--json"],
    &["contact", "list"],
    &["contact", "list", "--json"],
    &["contact", "verify", "bob"],
    &["history", "bob"],
    &["history", "bob", "--json"],
    &["history", "Staff"],
    &["groups"],
    &["groups", "--json"],
    &["group", "members", "Staff"],
    &["group", "log", "Staff"],
    &["group", "settings", "Staff"],
    &["warnings"],
    &["warnings", "--json"],
    &["note", "list"],
    &["duress", "status"],
    // Mistakes fail the same way too.
    &["history", "nobody"],
    &["send", "nobody", "text"],
    &["group", "members", "No such group"],
];

#[test]
fn every_command_prints_the_same_through_the_running_app() {
    let relay = Relay::start();
    let (alice, bob) = busy_profile(&relay);

    let direct: Vec<_> = READS.iter().map(|args| seen(&alice.run(args))).collect();
    let app = alice.app(&[]);
    for (args, before) in READS.iter().zip(&direct) {
        let through = seen(&alice.run(args));
        assert_eq!(
            &through,
            before,
            "`sotto {}` printed differently through the app",
            args.join(" ")
        );
    }
    // Sanity: the comparison is not between two failures.
    assert_eq!(direct[0].2, Some(0), "{:?}", direct[0]);
    assert!(direct[5].0.contains("hello bob"), "{:?}", direct[5]);
    assert_eq!(direct[17].2, Some(1), "{:?}", direct[17]);

    // Commands that change things work through it and report as usual.
    let out = alice.ok(&["send", "bob", "sent through the app"]);
    assert!(out.starts_with("sent "), "{out}");
    alice.ok(&["contact", "rename", "bob", "Bob R"]);
    alice.ok(&["note", "add", "a second note"]);
    let err = alice.fails(&["group", "send", "Staff", "bad \u{1b}[2J text"]);
    assert!(err.contains("a message contains a control"), "{err}");

    // What the service received by itself is printed by the next `sync`.
    bob.ok(&["send", "alice", "arrives while the app runs"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut synced = Vec::new();
    while !sotto_tests::texts(&synced)
        .iter()
        .any(|t| t == "arrives while the app runs")
    {
        assert!(
            Instant::now() < deadline,
            "sync never showed it: {synced:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        synced.extend(alice.sync_json());
    }
    app.stop();

    // Stopped cleanly: the profile is free and holds what was done through it.
    assert!(!alice.home().join("control.sock").exists());
    assert!(!alice.home().join("app-url").exists());
    let history = sotto_tests::texts(&alice.history_json("Bob R"));
    assert!(
        history.contains(&"sent through the app".to_string())
            && history.contains(&"arrives while the app runs".to_string()),
        "{history:?}"
    );
    let notes = alice.ok(&["note", "list"]);
    assert!(notes.contains("a second note"), "{notes}");
    let got = sotto_tests::texts(&bob.sync_json());
    assert_eq!(
        got.iter().filter(|t| *t == "sent through the app").count(),
        1,
        "{got:?}"
    );
}

#[test]
fn a_locked_app_is_unlocked_by_the_commands_passphrase_and_refuses_a_wrong_one() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    // Started without a passphrase: locked.
    let app = alice.app(&[("SOTTO_PASSPHRASE", "")]);
    let wrong = alice.run_with_env(&["whoami"], &[("SOTTO_PASSPHRASE", "not the passphrase")]);
    assert_eq!(
        wrong.status.code(),
        Some(1),
        "{}",
        sotto_tests::describe(&wrong)
    );
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"),
        "{}",
        sotto_tests::describe(&wrong)
    );
    // No passphrase and no terminal to ask on: says how to give one.
    let none = alice.run_with_env(&["whoami"], &[("SOTTO_PASSPHRASE", "")]);
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("SOTTO_PASSPHRASE"),
        "{}",
        sotto_tests::describe(&none)
    );
    // The right one unlocks it; then no passphrase is needed.
    let out = alice.ok(&["whoami"]);
    assert!(out.contains("name: Alice"), "{out}");
    let mut cmd = alice.command();
    cmd.env_remove("SOTTO_PASSPHRASE").arg("whoami");
    let open = sotto_tests::run_with_timeout(&mut cmd, "whoami without a passphrase");
    assert!(open.status.success(), "{}", sotto_tests::describe(&open));
    // But a wrong one is still refused while it is open.
    let wrong = alice.run_with_env(&["whoami"], &[("SOTTO_PASSPHRASE", "not the passphrase")]);
    assert_eq!(wrong.status.code(), Some(1));
    app.stop();
}

#[test]
fn the_app_locks_when_idle_and_panic_through_it_erases_the_profile() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    alice.ok(&["send", "bob", "before the lock"]);
    let app = alice.app(&[("SOTTO_LOCK_AFTER", "2s")]);
    let mut bare = alice.command();
    bare.env_remove("SOTTO_PASSPHRASE").arg("whoami");
    let open = sotto_tests::run_with_timeout(&mut bare, "whoami while open");
    assert!(open.status.success(), "{}", sotto_tests::describe(&open));
    // Idle for longer than the lock time: the keys are gone, so a command
    // without a passphrase cannot run.
    std::thread::sleep(Duration::from_secs(4));
    let mut bare = alice.command();
    bare.env_remove("SOTTO_PASSPHRASE").arg("whoami");
    let locked = sotto_tests::run_with_timeout(&mut bare, "whoami once locked");
    assert!(
        !locked.status.success(),
        "{}",
        sotto_tests::describe(&locked)
    );
    assert!(
        String::from_utf8_lossy(&locked.stderr).contains("passphrase"),
        "{}",
        sotto_tests::describe(&locked)
    );

    // Panic through the app: erased, the relay told, and the app says so.
    let out = alice.ok(&["panic"]);
    assert!(out.contains("Erased"), "{out}");
    assert!(out.contains("The relay deleted the account"), "{out}");
    assert!(!alice.home().join("store").exists());
    let after = alice.run(&["whoami"]);
    assert!(!after.status.success());
    app.stop();
}

/// `sotto listen` while the app runs follows the app's service instead of
/// failing on the store lock, and prints what arrives as it would alone.
#[test]
fn listen_follows_a_running_app() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    bob.ok(&["send", "alice", "makes the session"]);
    alice.ok(&["sync"]);
    let app = alice.app(&[]);
    let (mut listen, lines) = alice.listen();
    // The follower is subscribed once its request reached the service; a
    // first message may race that, so send until one is printed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let line = loop {
        n += 1;
        bob.ok(&["send", "alice", &format!("pushed {n}")]);
        if let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
            break line;
        }
        assert!(Instant::now() < deadline, "listen printed nothing");
    };
    let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert!(
        value["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("pushed ")),
        "{value}"
    );
    assert_eq!(value["from"], "bob");
    let _ = listen.kill();
    let _ = listen.wait();
    // The app is unaffected by its follower leaving.
    let out = alice.ok(&["whoami"]);
    assert!(out.contains("name: Alice"), "{out}");
    app.stop();
}
