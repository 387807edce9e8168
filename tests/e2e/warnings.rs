//! Structured warnings, the point of a whisper network: posted to groups,
//! listed by the person they are about across groups with counts of distinct
//! reporters, matched leniently and merged by hand, kept past the
//! disappearing timer, removable by moderators, and invisible to the relay.

use sotto_tests::{Relay, User, leaks, parse_json_lines, texts};

const STAFF: &str = "Staff network";
const REPS: &str = "Union reps";

fn warnings(u: &User, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["warnings", "--json"];
    all.extend_from_slice(args);
    parse_json_lines(&u.ok(&all), "warnings --json")
}

fn subject<'a>(list: &'a [serde_json::Value], key: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no subject {key:?} in {list:#?}"))
}

#[test]
fn warnings_are_counted_by_person_across_groups() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann Quillfeather");
    let bob = User::new(&relay, "Bob Marsh");
    let cat = User::new(&relay, "Cat Lowe");
    let dee = User::new(&relay, "Dee Okafor");
    for (name, u) in [("bob", &bob), ("cat", &cat), ("dee", &dee)] {
        ann.add_contact(name, u);
    }
    ann.ok(&["group", "create", STAFF]);
    ann.ok(&["group", "add", STAFF, "bob", "cat"]);
    ann.ok(&["group", "create", REPS]);
    ann.ok(&["group", "add", REPS, "dee"]);
    // Chat in Staff disappears after 2 s; warnings must not.
    ann.ok(&["group", "settings", STAFF, "--disappearing", "2s"]);
    for u in [&bob, &cat, &dee] {
        u.ok(&["sync"]);
    }

    bob.ok(&[
        "warn",
        STAFF,
        "--about",
        "Sir Quentin Blackwood MP",
        "--role",
        "MP for Anytown",
        "--kind",
        "harassment",
        "--firsthand",
        "--where",
        "late votes",
        "--when",
        "2024-03",
        "--advice",
        "Zanzibar-advice: don't share taxis",
        "He followed me to the car park.",
    ]);
    // The same reporter again: still one first-hand reporter.
    bob.ok(&[
        "warn",
        STAFF,
        "--about",
        "Quentin Blackwood",
        "--kind",
        "bullying",
        "--firsthand",
    ]);
    cat.ok(&[
        "warn",
        STAFF,
        "--about",
        "quentin  BLACKWOOD",
        "--kind",
        "bullying",
        "--secondhand",
    ]);
    dee.ok(&[
        "warn",
        REPS,
        "--about",
        "Quéntin Blackwood",
        "--kind",
        "sexual-misconduct",
        "--when",
        "2024-05-02",
    ]);
    dee.ok(&["warn", REPS, "--about", "Jane Doe", "--kind", "other"]);
    bob.ok(&["group", "send", STAFF, "ordinary chat that disappears"]);

    // Wrong input is refused before anything is sent.
    let err = bob.fails(&["warn", STAFF, "--about", "X Y", "--kind", "rudeness"]);
    assert!(err.contains("sexual-misconduct"), "{err}");
    let err = bob.fails(&[
        "warn", STAFF, "--about", "X Y", "--kind", "other", "--when", "spring",
    ]);
    assert!(err.contains("2024-03"), "{err}");

    ann.ok(&["sync"]);
    let list = warnings(&ann, &[]);
    assert_eq!(list.len(), 2, "{list:#?}");
    let q = subject(&list, "quentin blackwood");
    assert_eq!(q["firsthand_reporters"], 2, "bob and dee: {q:#}");
    assert_eq!(q["secondhand_reporters"], 1, "cat: {q:#}");
    assert_eq!(q["newest"], "2024-05-02");
    assert_eq!(q["kinds"]["bullying"], 2);
    assert_eq!(q["kinds"]["harassment"], 1);
    assert_eq!(q["kinds"]["sexual-misconduct"], 1);
    let groups: Vec<&str> = q["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g.as_str())
        .collect();
    assert!(
        groups.contains(&STAFF) && groups.contains(&REPS),
        "{groups:?}"
    );
    assert_eq!(q["warnings"].as_array().expect("warnings").len(), 4);
    assert_eq!(q["roles"][0], "MP for Anytown");
    // Listed first: the most reported.
    assert_eq!(list[0]["key"], "quentin blackwood");

    // One group only, and lenient lookup by name.
    let staff_only = warnings(&ann, &[STAFF]);
    assert_eq!(staff_only.len(), 1);
    assert_eq!(staff_only[0]["warnings"].as_array().expect("w").len(), 3);
    let about = warnings(&ann, &["--about", "Rt Hon. QUENTIN BLACKWOOD"]);
    assert_eq!(about.len(), 1);
    assert_eq!(about[0]["key"], "quentin blackwood");
    let human = ann.ok(&["warnings", "--about", "Quentin Blackwood"]);
    assert!(
        human.contains("reported by 2 first-hand, 1 second-hand"),
        "{human}"
    );

    // A nickname is merged by hand, in Ann's app only.
    dee.ok(&[
        "warn",
        REPS,
        "--about",
        "Q. Blackwood",
        "--kind",
        "bullying",
        "--firsthand",
    ]);
    ann.ok(&["sync"]);
    assert_eq!(warnings(&ann, &[]).len(), 3);
    let err = ann.fails(&[
        "warnings",
        "--merge",
        "Nobody Known",
        "--into",
        "Quentin Blackwood",
    ]);
    assert!(err.contains("no warning is about"), "{err}");
    ann.ok(&[
        "warnings",
        "--merge",
        "Q. Blackwood",
        "--into",
        "Quentin Blackwood",
    ]);
    let merged = warnings(&ann, &[]);
    assert_eq!(merged.len(), 2, "{merged:#?}");
    let q = subject(&merged, "quentin blackwood");
    assert_eq!(q["warnings"].as_array().expect("w").len(), 5);
    assert_eq!(q["firsthand_reporters"], 2, "dee counts once");
    assert_eq!(warnings(&dee, &[]).len(), 3, "merges stay in Ann's app");

    // The disappearing timer removes the chat but not the warnings.
    std::thread::sleep(std::time::Duration::from_secs(3));
    ann.ok(&["sync"]);
    let history = texts(&ann.history_json(STAFF));
    assert!(
        !history.iter().any(|t| t.contains("ordinary chat")),
        "{history:?}"
    );
    assert!(
        history
            .iter()
            .any(|t| t.starts_with("[warning] about Sir Quentin Blackwood MP")),
        "{history:?}"
    );
    assert_eq!(
        subject(&warnings(&ann, &[]), "quentin blackwood")["warnings"]
            .as_array()
            .expect("w")
            .len(),
        5
    );

    // A moderator removes a warning for everyone.
    let id = q["warnings"]
        .as_array()
        .expect("w")
        .iter()
        .find(|w| w["kind"] == "harassment")
        .and_then(|w| w["id"].as_str())
        .expect("the harassment warning")
        .to_string();
    ann.ok(&["group", "delete", STAFF, &id[..12]]);
    for u in [&ann, &bob, &cat] {
        u.ok(&["sync"]);
        let q = warnings(u, &["--about", "Quentin Blackwood"]);
        assert!(
            !q[0]["kinds"]
                .as_object()
                .expect("kinds")
                .contains_key("harassment"),
            "{}: {q:#?}",
            u.name
        );
    }

    // The relay holds none of it in the clear.
    let found = leaks(
        &relay.data_dir(),
        &[
            "Quentin",
            "Blackwood",
            "Zanzibar",
            "late votes",
            "harassment",
            "Anytown",
            "Jane Doe",
        ],
    );
    assert!(found.is_empty(), "plaintext on the relay's disk: {found:?}");
    let log = relay.stderr();
    for needle in ["Quentin", "Blackwood", "Zanzibar"] {
        assert!(!log.contains(needle), "the relay logged {needle:?}");
    }
}

#[test]
fn routes_need_no_profile_and_compute_deadlines() {
    let nobody = User::uninitialised("Nobody");
    let card: serde_json::Value = serde_json::from_str(
        nobody
            .ok(&[
                "routes",
                "--kind",
                "sexual-misconduct",
                "--when",
                "2024-11-30",
                "--json",
            ])
            .trim(),
    )
    .expect("routes --json is JSON");
    let by_id = |needle: &str| {
        card["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["id"].as_str().is_some_and(|id| id.contains(needle)))
            .unwrap_or_else(|| panic!("no {needle} route in {card:#}"))
            .clone()
    };
    // Three months less a day, counted the way tribunals do: 30 Nov -> 28 Feb.
    assert_eq!(by_id("acas")["deadline"]["date"], "2025-02-28");
    // Sexual offences have no police time limit: no date, and it says so.
    assert!(by_id("police")["deadline"].is_null(), "{card:#}");
    assert!(
        by_id("police")["no_time_limit"]
            .as_str()
            .is_some_and(|t| t.contains("no time limit")),
        "{card:#}"
    );
    let text = nobody.ok(&["routes", "--kind", "sexual-misconduct"]);
    for needle in [
        "ICGS",
        "Independent Sexual Misconduct",
        "Police",
        "ACAS",
        "whips",
        "privileged",
    ] {
        assert!(text.contains(needle), "missing {needle:?}:\n{text}");
    }
    // A community's own file replaces the built-in one.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("routes.toml");
    std::fs::write(&bad, "[meta]\nname = 1\n").expect("write");
    let out = nobody.run_with_env(
        &["routes"],
        &[("SOTTO_ROUTES", bad.to_str().expect("utf-8"))],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SOTTO_ROUTES"));
}

/// Issue 12, item 1: `sotto warnings --about smith` said "No warnings." while
/// John Smith had five reports. A surname alone, initials with a surname and
/// names in Arabic script find the subject; several matching subjects are
/// listed as separate people; "No warnings." only when nothing matches.
#[test]
fn a_surname_initials_or_arabic_name_finds_the_subject() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann Quillfeather");
    let bob = User::new(&relay, "Bob Marsh");
    let cat = User::new(&relay, "Cat Lowe");
    ann.add_contact("bob", &bob);
    ann.add_contact("cat", &cat);
    ann.ok(&["group", "create", STAFF]);
    ann.ok(&["group", "add", STAFF, "bob", "cat"]);
    bob.ok(&["sync"]);
    cat.ok(&["sync"]);
    let warn = |u: &User, about: &str, kind: &str| {
        u.ok(&[
            "warn",
            STAFF,
            "--about",
            about,
            "--kind",
            kind,
            "--firsthand",
        ]);
    };
    warn(&bob, "Sir John Smith MP", "harassment");
    warn(&bob, "John Smith", "bullying");
    warn(&cat, "john smith", "harassment");
    warn(&cat, "JOHN SMITH", "other");
    warn(&ann, "John Smith", "bullying");
    warn(&cat, "Jane Smith", "bullying");
    warn(&bob, "محمد الرشيد", "harassment");
    warn(&cat, "مُحَمَّد الرَّشِيد", "bullying");
    ann.ok(&["sync"]);

    // The surname alone: both Smiths, each as its own person with its own count.
    let smith = warnings(&ann, &["--about", "smith"]);
    assert_eq!(smith.len(), 2, "{smith:#?}");
    let john = subject(&smith, "john smith");
    assert_eq!(john["warnings"].as_array().expect("w").len(), 5);
    assert_eq!(john["firsthand_reporters"], 3, "ann, bob and cat: {john:#}");
    assert_eq!(john["match"], "partial");
    let jane = subject(&smith, "jane smith");
    assert_eq!(jane["firsthand_reporters"], 1, "{jane:#}");
    let human = ann.ok(&["warnings", "--about", "smith"]);
    assert!(!human.contains("No warnings"), "{human}");
    for needle in [
        "2 different people match smith",
        "Person 1 of 2",
        "Person 2 of 2",
        "John Smith",
        "Jane Smith",
        "reported by 3 first-hand",
        "reported by 1 first-hand",
    ] {
        assert!(human.contains(needle), "missing {needle:?} in\n{human}");
    }

    // Initials with a surname: J. could be John or Jane, so both.
    let initials = warnings(&ann, &["--about", "J. Smith"]);
    assert_eq!(initials.len(), 2, "{initials:#?}");
    // The full name: John only, as an exact match.
    let full = warnings(&ann, &["--about", "John Smith"]);
    assert_eq!(full.len(), 1, "{full:#?}");
    assert_eq!(full[0]["key"], "john smith");
    assert_eq!(full[0]["match"], "exact");

    // Arabic script: vocalised and plain spellings are one subject, found
    // by the family name alone.
    let arabic = warnings(&ann, &["--about", "الرشيد"]);
    assert_eq!(arabic.len(), 1, "{arabic:#?}");
    assert_eq!(arabic[0]["key"], "محمد الرشيد");
    assert_eq!(arabic[0]["warnings"].as_array().expect("w").len(), 2);
    let human = ann.ok(&["warnings", "--about", "محمد الرشيد"]);
    assert!(human.contains("reported by 2 first-hand"), "{human}");

    // Nothing matches: then, and only then, "No warnings."
    let none = ann.ok(&["warnings", "--about", "Nobody Atall"]);
    assert!(none.contains("No warnings."), "{none}");
    assert!(warnings(&ann, &["--about", "Nobody Atall"]).is_empty());
}

/// Issue 12, item 4: the short card under each warning in `sotto warnings`
/// showed "Police (by 2024-11-02, passed)" for sexual misconduct, while
/// sexual offences have no time limit. For every kind, each route on the
/// short card must say what the full card (`sotto routes --kind K --when D`)
/// says about time.
#[test]
fn every_short_card_agrees_with_the_full_route_card() {
    const WHEN: &str = "2024-05-02";
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann Quillfeather");
    ann.ok(&["group", "create", STAFF]);
    for kind in [
        "harassment",
        "sexual-misconduct",
        "bullying",
        "inappropriate-conduct",
        "other",
    ] {
        let about = format!("Person {kind}");
        ann.ok(&[
            "warn", STAFF, "--about", &about, "--kind", kind, "--when", WHEN,
        ]);
        let short = ann.ok(&["warnings", "--about", &about]);
        let can_go = short
            .lines()
            .find_map(|l| l.trim().strip_prefix("can go to: "))
            .unwrap_or_else(|| panic!("no short card for {kind}:\n{short}"))
            .to_string();
        let full = ann.ok(&["routes", "--kind", kind, "--when", WHEN]);
        // Each route block of the full card: "N. Name" then its lines.
        let mut routes: Vec<(String, String)> = Vec::new();
        for line in full.lines() {
            let numbered = line
                .split_once(". ")
                .filter(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            match numbered {
                Some((_, name)) => routes.push((name.to_string(), String::new())),
                None => {
                    if let Some((_, block)) = routes.last_mut() {
                        block.push_str(line);
                        block.push('\n');
                    }
                }
            }
        }
        assert!(!routes.is_empty(), "no routes on the full card:\n{full}");
        let entries: Vec<&str> = can_go.split("; ").collect();
        assert_eq!(entries.len(), routes.len(), "{kind}: {can_go}\n{full}");
        for ((name, block), entry) in routes.iter().zip(&entries) {
            let what = format!("{kind}, {name}: short {entry:?}, full:\n{block}");
            assert!(entry.starts_with(name.as_str()), "{what}");
            let deadline = block
                .lines()
                .find_map(|l| l.trim().strip_prefix("Deadline: "))
                .unwrap_or_else(|| panic!("no deadline line: {what}"));
            if deadline.starts_with("no time limit") {
                assert_eq!(*entry, format!("{name} (no time limit)"), "{what}");
            } else if deadline.starts_with("none fixed") {
                assert_eq!(*entry, name.as_str(), "{what}");
            } else {
                // "2024-08-01 (passed). Label": the same date and status.
                let (date, rest) = deadline.split_once(" (").expect("a dated deadline");
                let status = rest.split_once(')').map(|(s, _)| s).expect("a status");
                assert!(entry.ends_with(&format!("by {date}, {status})")), "{what}");
            }
        }
        if kind == "sexual-misconduct" {
            assert!(
                entries.contains(&"Police (no time limit)"),
                "sexual offences have no time limit: {can_go}"
            );
        }
    }
}
