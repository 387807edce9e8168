//! CLI mistakes give a non-zero exit and a message that says what went wrong.

use sotto_tests::{Relay, User};

fn mentions_any(text: &str, words: &[&str]) -> bool {
    let lower = text.to_lowercase();
    words.iter().any(|w| lower.contains(w))
}

#[test]
fn cli_mistakes_fail_with_helpful_messages() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");

    let err = alice.fails(&["send", "nobody-by-that-name", "hello?"]);
    assert!(
        mentions_any(&err, &["nobody-by-that-name", "contact"]),
        "unknown contact: {err}"
    );

    let err = alice.fails(&["contact", "add", "carol", "definitely-not-a-contact-code"]);
    assert!(mentions_any(&err, &["code"]), "bad code: {err}");

    let err = alice.fails(&["history", "nobody-by-that-name"]);
    assert!(
        mentions_any(&err, &["nobody-by-that-name", "contact"]),
        "history: {err}"
    );

    // A code with one character changed fails its checksum.
    let mut code: Vec<char> = bob.code().chars().collect();
    let last = code.len() - 1;
    code[last] = if code[last] == 'a' { 'b' } else { 'a' };
    let code: String = code.into_iter().collect();
    let err = alice.fails(&["contact", "add", "bob", &code]);
    assert!(mentions_any(&err, &["code"]), "corrupted code: {err}");

    let fresh = User::uninitialised("Carol");
    let err = fresh.fails(&[
        "init",
        "--invite",
        "sotto://join?nonsense",
        "--name",
        "Carol",
    ]);
    assert!(mentions_any(&err, &["invite", "link"]), "bad invite: {err}");
    let err = fresh.fails(&[
        "init",
        "--invite",
        "https://example.org/",
        "--name",
        "Carol",
    ]);
    assert!(
        mentions_any(&err, &["invite", "link"]),
        "not an invite: {err}"
    );

    // A single-use invite admits one member only.
    let link = relay.invite(1);
    User::with_invite(&link, "Dana");
    let err = fresh.fails(&["init", "--invite", &link, "--name", "Carol"]);
    assert!(
        mentions_any(&err, &["invite"]),
        "a spent invite should say so: {err}"
    );
    // The failed registration left a profile that can still register properly.
    fresh.ok(&["init", "--invite", &relay.invite(1), "--name", "Carol"]);
    assert!(!fresh.code().is_empty());

    // Commands on a profile that does not exist say how to create one.
    let nobody = User::uninitialised("Nobody");
    let err = nobody.fails(&["whoami"]);
    assert!(
        mentions_any(&err, &["init", "profile"]),
        "no profile: {err}"
    );
}
