//! Contacts and groups as a person uses them: typos in codes, renaming and
//! removing contacts, names in any case, strangers' messages found again,
//! titles with emoji pasted back, and two groups with one title.

use sotto_tests::{Relay, User, describe};

/// stdout and stderr of a command that must succeed.
fn both(u: &User, args: &[&str]) -> (String, String) {
    let out = u.run(args);
    assert!(
        out.status.success(),
        "`sotto {}` failed\n{}",
        args.join(" "),
        describe(&out)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn contacts_by_any_case_renamed_removed_and_strangers_found_again() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann");
    let bob = User::new(&relay, "Bob");
    let amira = User::new(&relay, "Amira");
    let bob_code = bob.code();

    // One wrong character: a typo, and where.
    let mut typo: Vec<char> = bob_code.chars().collect();
    let at = 12; // inside the second group of four
    typo[at] = if typo[at] == 'q' { 'r' } else { 'q' };
    let typo: String = typo.into_iter().collect();
    let err = ann.fails(&["contact", "add", "Bob", &typo]);
    assert!(
        err.contains("typo") && err.contains("check digits"),
        "{err}"
    );
    assert!(!err.contains("letters and digits"), "{err}");

    ann.ok(&["contact", "add", "Bob", &bob_code]);
    // Case does not make a second person.
    let err = ann.fails(&["contact", "add", "bob", &amira.code()]);
    assert!(err.contains("already exists"), "{err}");
    ann.ok(&["send", "bob", "hi bob"]);
    // A member named by my contact name, in any case.
    ann.ok(&["group", "create", "Staff"]);
    ann.ok(&["group", "add", "Staff", "BOB"]);
    ann.ok(&["group", "promote", "Staff", "bob"]);
    bob.add_contact("ann", &ann);
    bob.ok(&["send", "ann", "hello ann"]);
    ann.ok(&["sync"]);
    assert!(ann.ok(&["history", "BOB"]).contains("hello ann"));

    // Renamed: the history goes with them.
    ann.ok(&["contact", "rename", "bob", "Robert"]);
    let history = ann.ok(&["history", "robert"]);
    assert!(
        history.contains("hi bob") && history.contains("Robert: hello ann"),
        "{history}"
    );
    let list = ann.ok(&["contact", "list"]);
    assert!(list.contains("Robert") && !list.contains("Bob "), "{list}");

    // Removed: the history stays, under their code.
    let out = ann.ok(&["contact", "remove", "Robert"]);
    assert!(out.contains(&bob_code), "{out}");
    assert!(
        ann.fails(&["history", "Robert"])
            .contains("no contact or group")
    );
    let history = ann.ok(&["history", &bob_code]);
    assert!(history.contains("hello ann"), "{history}");
    assert!(!ann.ok(&["contact", "list"]).contains("Robert"));

    // A stranger: shown as ~Amira, with how to find and add them.
    amira.add_contact("ann", &ann);
    amira.ok(&["send", "ann", "hi from amira"]);
    let (stdout, stderr) = both(&ann, &["sync"]);
    assert!(stdout.contains("~Amira: hi from amira"), "{stdout}");
    let amira_code = amira.code();
    assert!(
        stderr.contains("sotto history '~Amira'") && stderr.contains(&amira_code),
        "{stderr}"
    );
    assert!(ann.ok(&["history", "~Amira"]).contains("hi from amira"));
    assert!(ann.ok(&["history", "~amira"]).contains("hi from amira"));
    ann.ok(&["contact", "add", "amira", &amira_code]);
    assert!(
        ann.ok(&["history", "Amira"])
            .contains("amira: hi from amira")
    );
}

#[test]
fn titles_with_emoji_paste_back_and_duplicate_titles_are_named_by_id() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann");
    let title = "Night shift 🌙";
    let (first, _) = both(&ann, &["group", "create", title]);
    assert!(
        first.contains("`sotto group add 'Night shift 🌙' CONTACT...`"),
        "{first}"
    );
    assert!(!first.contains("\\u{"), "{first}");
    let first_id = first
        .split(" (")
        .nth(1)
        .and_then(|s| s.get(..8))
        .expect("id prefix")
        .to_string();

    // The same title again: created, with a warning, and named by id.
    let (second, warning) = both(&ann, &["group", "create", "night shift 🌙"]);
    assert!(warning.contains("already have a group called"), "{warning}");
    assert!(warning.contains(&first_id), "{warning}");
    let second_id = second
        .split(" (")
        .nth(1)
        .and_then(|s| s.get(..8))
        .expect("id prefix")
        .to_string();
    assert!(
        second.contains(&format!("`sotto group add {second_id} CONTACT...`")),
        "{second}"
    );

    // The title alone is ambiguous: the error lists both ids.
    let err = ann.fails(&["group", "members", title]);
    assert!(
        err.contains("matches 2 groups") && err.contains(&first_id) && err.contains(&second_id),
        "{err}"
    );
    assert!(ann.ok(&["group", "members", &second_id]).contains("Ann"));
    let err = ann.fails(&["history", title]);
    assert!(err.contains("matches 2 groups"), "{err}");
    let groups = ann.ok(&["groups"]);
    assert!(
        groups.contains(&first_id) && groups.contains(&second_id),
        "{groups}"
    );

    // `group join` says what happens in one sentence, without a run of spaces.
    ann.ok(&["group", "settings", &first_id, "--approval", "on"]);
    let link = ann.ok(&["group", "link", &first_id]).trim().to_string();
    let bob = User::new(&relay, "Bob");
    let out = bob.ok(&["group", "join", &link]);
    assert!(out.contains("when it next syncs"), "{out}");
}
