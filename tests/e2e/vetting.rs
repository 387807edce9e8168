//! Vetting against infiltration: with `--vouches 2`, a link join request is
//! admitted only once two members vouch for it, in the signed group state;
//! an admin cannot approve it sooner, and an admin's app admits it on sync
//! once the vouches are in.

use sotto_tests::{Relay, User, parse_json_lines, texts};

const TITLE: &str = "Vetted network";

#[test]
fn a_join_request_needs_vouches_from_members() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann");
    let bob = User::new(&relay, "Bob");
    let cat = User::new(&relay, "Cat");
    ann.add_contact("bob", &bob);
    ann.add_contact("cat", &cat);
    ann.ok(&["group", "create", TITLE]);
    ann.ok(&["group", "add", TITLE, "bob", "cat"]);
    let out = ann.ok(&["group", "settings", TITLE, "--vouches", "2"]);
    assert!(out.contains("vouches needed to join: 2"), "{out}");
    let link = ann.ok(&["group", "link", TITLE]).trim().to_string();
    bob.ok(&["sync"]);
    cat.ok(&["sync"]);

    let dee = User::new(&relay, "Dee");
    dee.ok(&["group", "join", &link]);
    let requests = parse_json_lines(&ann.ok(&["group", "requests", TITLE, "--json"]), "requests");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["vouches"], 0);
    // Not even an admin can let Dee in yet.
    let err = ann.fails(&["group", "approve", TITLE, "Dee"]);
    assert!(err.contains("needs 2 vouches"), "{err}");

    // Members see the request and vouch.
    let seen = parse_json_lines(&bob.ok(&["group", "requests", TITLE, "--json"]), "requests");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let out = bob.ok(&["group", "vouch", TITLE, "Dee"]);
    assert!(out.contains("1 so far"), "{out}");
    let err = bob.fails(&["group", "vouch", TITLE, "Dee"]);
    assert!(err.contains("already vouched"), "{err}");
    ann.ok(&["sync"]);
    assert!(dee.sync_json().is_empty(), "one vouch is not enough");
    cat.ok(&["group", "vouch", TITLE, "Dee"]);

    // An admin's app admits Dee on its next sync.
    ann.ok(&["sync"]);
    let out = dee.run(&["sync"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("now a member"),
        "{out:?}"
    );
    bob.ok(&["sync"]);
    bob.ok(&["group", "send", TITLE, "welcome, vetted"]);
    assert_eq!(texts(&dee.sync_json()), ["welcome, vetted"]);
    let log = ann.ok(&["group", "log", TITLE]);
    for line in [
        "vouched for Dee (1 of 2)",
        "vouched for Dee (2 of 2)",
        "approved Dee's join request",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
}
