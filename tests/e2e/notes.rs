//! The evidence locker: a private note and file stay in my store, the relay
//! countersigns only a hash, the exported proof verifies anywhere and fails
//! once anything in it is changed, and a note written offline is kept and
//! countersigned later.

use sotto_tests::{Relay, User, leaks, parse_json_lines};

#[test]
fn notes_are_countersigned_exported_and_verified() {
    let mut relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let photo = alice.home().join("photo.jpg");
    std::fs::write(&photo, b"\xff\xd8 pretend jpeg: Kilimanjaro-photo").expect("write photo");
    let out = alice.ok(&[
        "note",
        "add",
        "secret-note-Zanzibar: he cornered me in the lift, 14 March",
        "--file",
        photo.to_str().expect("utf-8"),
    ]);
    assert!(out.contains("countersigned by the relay"), "{out}");
    let notes = parse_json_lines(&alice.ok(&["note", "list", "--json"]), "note list");
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0]["countersigned_at_ms"].as_u64().is_some(),
        "{notes:?}"
    );
    assert_eq!(notes[0]["file_name"], "photo.jpg");
    let id = notes[0]["id"].as_str().expect("id").to_string();

    let proof = alice.home().join("proof.json");
    alice.ok(&[
        "note",
        "export",
        &id[..8],
        "--to",
        proof.to_str().expect("utf-8"),
    ]);
    // Anyone can check it, with no profile at all.
    let judge = User::uninitialised("a tribunal clerk");
    let out = judge.ok(&["note", "verify", proof.to_str().expect("utf-8")]);
    assert!(out.contains("Valid"), "{out}");
    assert!(out.contains("secret-note-Zanzibar"), "{out}");

    // Any change breaks it: the text, the time, the file.
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&proof).expect("read proof")).expect("JSON");
    let tampered = judge.home().join("tampered.json");
    for (field, value) in [
        ("text", serde_json::json!("he was perfectly polite")),
        (
            "countersigned_at_ms",
            serde_json::json!(1_000_000_000_000u64),
        ),
        ("file_b64", serde_json::json!("AAAA")),
    ] {
        let mut changed = original.clone();
        changed[field] = value;
        std::fs::write(&tampered, serde_json::to_vec(&changed).expect("JSON")).expect("write");
        let err = judge.fails(&["note", "verify", tampered.to_str().expect("utf-8")]);
        assert!(err.contains("does not verify"), "{field}: {err}");
    }

    // The relay saw a hash only.
    let found = leaks(
        &relay.data_dir(),
        &["Zanzibar", "cornered", "Kilimanjaro", "photo.jpg"],
    );
    assert!(found.is_empty(), "{found:?}");

    // Offline: the note is kept, and countersigned once the relay is back.
    relay.kill9();
    let err = alice.fails(&["note", "add", "written on the train"]);
    assert!(err.contains("The note is kept"), "{err}");
    relay.restart();
    let notes = parse_json_lines(&alice.ok(&["note", "list", "--json"]), "note list");
    assert_eq!(notes.len(), 2);
    assert!(
        notes
            .iter()
            .all(|n| n["countersigned_at_ms"].as_u64().is_some()),
        "{notes:?}"
    );
}

/// Issue 12, item 6: `note verify` said to compare the trust-root
/// fingerprint "against the relay's", but no command showed the relay's.
/// `sotto whoami` (and `--json`) now shows it, in the format `note verify`
/// prints, and both equal the fingerprint of the trust root in the invite.
#[test]
fn a_proof_names_the_relay_fingerprint_that_whoami_shows() {
    let relay = Relay::start();
    let invite: sotto_wire::invite::InviteLink = relay.invite(1).parse().expect("invite");
    let expected = sotto_wire::invite::trust_root_fingerprint(&invite.trust_root);
    let alice = User::new(&relay, "Alice");
    let who = alice.ok(&["whoami"]);
    assert!(
        who.contains(&format!("relay's trust-root fingerprint: {expected}")),
        "{who}"
    );
    let json = parse_json_lines(&alice.ok(&["whoami", "--json"]), "whoami");
    assert_eq!(json[0]["relay_fingerprint"], expected.as_str());

    alice.ok(&["note", "add", "what happened on the 3rd"]);
    let notes = parse_json_lines(&alice.ok(&["note", "list", "--json"]), "note list");
    let id = notes[0]["id"].as_str().expect("id").to_string();
    let proof = alice.home().join("proof.json");
    let path = proof.to_str().expect("utf-8");
    alice.ok(&["note", "export", &id[..8], "--to", path]);
    let out = User::uninitialised("a solicitor").ok(&["note", "verify", path]);
    // On a line of its own, so a solicitor can compare it by eye.
    assert!(
        out.lines().any(|l| l.trim() == expected),
        "the fingerprint is not on a line of its own:\n{out}"
    );
    for needle in ["sotto-relay stats", "sotto whoami", "docs/evidence.md"] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}
