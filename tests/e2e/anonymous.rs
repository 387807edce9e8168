//! Anonymous corroboration, anonymous posts (on, and via a moderator) and
//! quorum moderation, through the real relay and the real `sotto` binary,
//! with the attacks a modified member app could try.

use sotto_client::engine::{Engine, store_dir};
use sotto_client::group::Op;
use sotto_client::store::Store;
use sotto_tests::{PASSPHRASE, Relay, User, leaks, parse_json_lines, texts};

const TITLE: &str = "Staff network";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Ann (owner) with Bob, Cat and Dee in one group, everyone synced so their
/// ring keys are in the group's state.
fn four(relay: &Relay) -> (User, User, User, User) {
    let ann = User::new(relay, "Ann Quillfeather");
    let bob = User::new(relay, "Bob Marsh");
    let cat = User::new(relay, "Cat Lowe");
    let dee = User::new(relay, "Dee Okafor");
    for (name, u) in [("bob", &bob), ("cat", &cat), ("dee", &dee)] {
        ann.add_contact(name, u);
    }
    ann.ok(&["group", "create", TITLE]);
    ann.ok(&["group", "add", TITLE, "bob", "cat", "dee"]);
    for u in [&bob, &cat, &dee] {
        u.ok(&["sync"]);
    }
    ann.ok(&["sync"]);
    (ann, bob, cat, dee)
}

fn warnings(u: &User) -> Vec<serde_json::Value> {
    parse_json_lines(&u.ok(&["warnings", "--json"]), "warnings --json")
}

/// The only warning about `key` that `u` holds.
fn the_warning(u: &User, key: &str) -> serde_json::Value {
    let list = warnings(u);
    let s = list
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no subject {key:?} in {list:#?}"));
    s["warnings"][0].clone()
}

#[test]
fn corroboration_counts_each_member_once_and_names_no_one() {
    let relay = Relay::start();
    let (ann, bob, cat, dee) = four(&relay);
    ann.ok(&[
        "warn",
        TITLE,
        "--about",
        "Sir John Smith MP",
        "--kind",
        "harassment",
        "--when",
        "2024-03",
        "Followed me to the car park.",
    ]);
    ann.ok(&[
        "warn",
        TITLE,
        "--about",
        "Rt Hon Jane Doe",
        "--kind",
        "bullying",
        "--secondhand",
    ]);
    for u in [&bob, &cat, &dee] {
        u.ok(&["sync"]);
    }
    let smith = the_warning(&bob, "john smith")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let doe = the_warning(&bob, "jane doe")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let out = bob.ok(&["corroborate", &smith[..8]]);
    assert!(out.contains("among 4 members"), "{out}");
    cat.ok(&["corroborate", &smith, "--firsthand"]);
    cat.ok(&["corroborate", &doe]);
    // Honest apps refuse a second "me too" and one on your own warning.
    let err = cat.fails(&["corroborate", &smith]);
    assert!(err.contains("already corroborated"), "{err}");
    let err = ann.fails(&["corroborate", &smith]);
    assert!(err.contains("you posted this warning"), "{err}");

    // A modified app sends Cat's second corroboration and Ann's own anyway:
    // same linking tags, so every other member counts them once / not at all.
    runtime().block_on(async {
        for (u, warning) in [(&cat, &smith), (&ann, &smith)] {
            let mut engine = Engine::open(u.home(), PASSPHRASE).expect("open");
            engine
                .danger_corroborate_unchecked(warning, true)
                .await
                .expect("the relay takes it");
            engine.close().await;
        }
    });

    dee.ok(&["sync"]);
    let w = the_warning(&dee, "john smith");
    assert_eq!(w["corroborations"], 2, "Bob and Cat, once each: {w:#}");
    assert_eq!(w["corroborations_firsthand"], 1, "{w:#}");
    let list = warnings(&dee);
    let s = list
        .iter()
        .find(|s| s["key"] == "john smith")
        .expect("subject");
    assert_eq!(s["firsthand_reporters"], 2, "Ann and Cat: {s:#}");
    assert_eq!(s["secondhand_reporters"], 1, "Bob: {s:#}");
    let text = dee.ok(&["warnings", "--about", "John Smith"]);
    assert!(text.contains("corroborated by 2 (1 first-hand)"), "{text}");
    // Cat sees her own corroboration marked, Bob's count agrees.
    bob.ok(&["sync"]);
    assert_eq!(the_warning(&bob, "john smith")["corroborations"], 2);
    cat.ok(&["sync"]);
    assert_eq!(the_warning(&cat, "john smith")["corroborated_by_me"], true);

    // What Dee's app stores names no one: tags only, different for Cat's
    // two corroborations, and nothing of Cat's account or ring key.
    let cat_id = cat.code();
    let cat_account = Engine::open(cat.home(), PASSPHRASE)
        .expect("open cat")
        .code()
        .account_id();
    let store = Store::open(&store_dir(dee.home()), PASSPHRASE).expect("open dee's store");
    let kept = store.corroborations().expect("corroborations");
    // Bob's, Cat's two, and Ann's own (kept, but its tag is her author tag,
    // so it is not counted).
    assert_eq!(kept.len(), 4, "{kept:?}");
    let group = &store.groups().expect("groups")[0];
    let cat_ring_key = group
        .state
        .member(cat_account)
        .and_then(|m| m.ring_key.clone())
        .expect("cat's ring key is in the state");
    let dump = serde_json::to_string(&kept).expect("json");
    for needle in [
        cat_account.to_string(),
        cat_account.simple().to_string(),
        cat_id.clone(),
        cat_ring_key.clone(),
    ] {
        assert!(!dump.contains(&needle), "{needle} in {dump}");
    }
    let smith_bytes = sotto_client::group::hex_decode(&smith).expect("hex");
    let tags_for = |w: &[u8]| -> Vec<[u8; 32]> {
        kept.iter()
            .filter(|c| c.warning.as_slice() == w)
            .map(|c| c.tag)
            .collect()
    };
    let doe_bytes = sotto_client::group::hex_decode(&doe).expect("hex");
    let (on_smith, on_doe) = (tags_for(&smith_bytes), tags_for(&doe_bytes));
    assert_eq!(on_doe.len(), 1);
    assert!(
        !on_smith.contains(&on_doe[0]),
        "Cat's tags on two warnings must not link"
    );
    drop(store);

    // The relay saw none of it.
    let found = leaks(
        &relay.data_dir(),
        &["John Smith", "Jane Doe", "car park", "harassment"],
    );
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn anonymous_posts_show_a_member_and_moderators_can_remove_them() {
    let relay = Relay::start();
    let (ann, bob, cat, dee) = four(&relay);
    let err = bob.fails(&["group", "send", TITLE, "--anonymous", "not yet"]);
    assert!(err.contains("anonymous posts are off"), "{err}");
    let out = ann.ok(&["group", "settings", TITLE, "--anonymous-posts", "on"]);
    assert!(out.contains("anonymous posts: on"), "{out}");
    for u in [&bob, &cat, &dee] {
        u.ok(&["sync"]);
    }
    let out = bob.ok(&[
        "group",
        "send",
        TITLE,
        "--anonymous",
        "the whip's office knows about him",
    ]);
    assert!(out.contains("as \"a member\" (one of 4"), "{out}");
    bob.ok(&[
        "warn",
        TITLE,
        "--anonymous",
        "--about",
        "Lord Grey",
        "--kind",
        "sexual-misconduct",
        "at the christmas party",
    ]);
    for u in [&ann, &cat, &dee] {
        u.ok(&["sync"]);
        let history = u.history_json(TITLE);
        let post = history
            .iter()
            .find(|m| m["text"] == "the whip's office knows about him")
            .unwrap_or_else(|| panic!("{} did not get it: {history:#?}", u.name));
        assert_eq!(post["from"], "a member", "{post:#}");
        let raw = serde_json::to_string(post).expect("json");
        assert!(
            !raw.contains("Bob") && !raw.contains("bob") && !raw.contains(&bob.code()),
            "{raw}"
        );
        let w = the_warning(u, "grey");
        assert_eq!(w["anonymous"], "a member", "{w:#}");
    }
    // Moderators remove anonymous posts like any other.
    let id = ann
        .history_json(TITLE)
        .iter()
        .find(|m| m["text"] == "the whip's office knows about him")
        .and_then(|m| m["id"].as_str().map(String::from))
        .expect("id");
    ann.ok(&["group", "delete", TITLE, &id]);
    cat.ok(&["sync"]);
    assert!(
        !texts(&cat.history_json(TITLE)).contains(&"the whip's office knows about him".into()),
        "the moderator's delete reaches members"
    );

    // A removed member's anonymous posts stop reaching anyone.
    ann.ok(&["group", "remove", TITLE, "dee"]);
    bob.ok(&["sync"]);
    cat.ok(&["sync"]);
    let _ = dee.run(&["group", "send", TITLE, "--anonymous", "from outside"]);
    for u in [&ann, &bob, &cat] {
        let _ = u.run(&["sync"]);
        assert!(!texts(&u.history_json(TITLE)).contains(&"from outside".into()));
    }
    let found = leaks(
        &relay.data_dir(),
        &[
            "whip's office",
            "Lord Grey",
            "christmas party",
            "from outside",
        ],
    );
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn anonymous_posts_via_a_moderator_name_the_author_to_the_moderator_only() {
    let relay = Relay::start();
    let (ann, bob, cat, dee) = four(&relay);
    ann.ok(&[
        "group",
        "settings",
        TITLE,
        "--anonymous-posts",
        "via-moderator",
    ]);
    for u in [&bob, &cat, &dee] {
        u.ok(&["sync"]);
    }
    let out = bob.ok(&["group", "send", TITLE, "--anonymous", "he did it again"]);
    assert!(out.contains("for approval"), "{out}");
    // Nothing reaches members before a moderator approves.
    cat.ok(&["sync"]);
    assert!(!texts(&cat.history_json(TITLE)).contains(&"he did it again".into()));
    ann.ok(&["sync"]);
    let waiting = parse_json_lines(
        &ann.ok(&["group", "submissions", TITLE, "--json"]),
        "submissions",
    );
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(
        waiting[0]["from"], "bob",
        "the moderator knows: {waiting:?}"
    );
    assert_eq!(waiting[0]["text"], "he did it again");
    let id = waiting[0]["id"].as_str().expect("id").to_string();
    ann.ok(&["group", "publish", TITLE, &id[..8]]);
    for u in [&bob, &cat, &dee] {
        u.ok(&["sync"]);
        let history = u.history_json(TITLE);
        let post = history
            .iter()
            .find(|m| m["text"] == "he did it again")
            .unwrap_or_else(|| panic!("{} did not get it: {history:#?}", u.name));
        assert_eq!(
            post["from"], "a member (approved by a moderator)",
            "{post:#}"
        );
    }
    let raw = serde_json::to_string(&cat.history_json(TITLE)).expect("json");
    assert!(!raw.contains(&bob.code()), "{raw}");
    assert!(
        parse_json_lines(
            &ann.ok(&["group", "submissions", TITLE, "--json"]),
            "submissions"
        )
        .is_empty()
    );

    // With two moderators, an author can choose the one who learns it is theirs.
    ann.ok(&["group", "promote", TITLE, "cat"]);
    for u in [&bob, &cat, &dee] {
        u.ok(&["sync"]);
    }
    dee.ok(&[
        "group",
        "send",
        TITLE,
        "--anonymous",
        "--moderator",
        "Ann Quillfeather",
        "only Ann should know",
    ]);
    let waiting = |u: &User| {
        u.ok(&["sync"]);
        parse_json_lines(
            &u.ok(&["group", "submissions", TITLE, "--json"]),
            "submissions",
        )
    };
    assert!(waiting(&cat).is_empty(), "Cat was not chosen");
    let at_ann = waiting(&ann);
    assert_eq!(at_ann.len(), 1, "{at_ann:?}");
    assert_eq!(at_ann[0]["from"], "dee");
    let err = dee.fails(&[
        "group",
        "send",
        TITLE,
        "--anonymous",
        "--moderator",
        "bob",
        "x",
    ]);
    assert!(err.contains("not a moderator"), "{err}");
}

#[test]
fn quorum_moderation_refuses_below_k_and_acts_at_k() {
    let relay = Relay::start();
    let (ann, bob, cat, dee) = four(&relay);
    ann.ok(&["group", "promote", TITLE, "bob"]);
    let out = ann.ok(&["group", "settings", TITLE, "--quorum", "2"]);
    assert!(out.contains("quorum: 2 admins"), "{out}");
    for u in [&bob, &cat, &dee] {
        u.ok(&["sync"]);
    }
    let out = ann.ok(&["group", "remove", TITLE, "dee"]);
    assert!(out.contains("1 of 2 admins agree"), "{out}");
    // Below K nothing happens: Dee still gets the group's messages.
    cat.ok(&["sync"]);
    cat.ok(&["group", "send", TITLE, "still here, dee?"]);
    assert_eq!(texts(&dee.sync_json()), ["still here, dee?"]);

    // Ann's modified app writes the removal directly, without the quorum:
    // every other member's app refuses it.
    runtime().block_on(async {
        let mut engine = Engine::open(ann.home(), PASSPHRASE).expect("open ann");
        let dee_account = Engine::open(dee.home(), PASSPHRASE)
            .map(|e| e.code().account_id())
            .expect("dee");
        engine
            .danger_write_unchecked(TITLE, vec![Op::Remove(dee_account)])
            .await
            .expect("the relay takes any write signed with the group key");
        engine.close().await;
    });
    let out = cat.run(&["group", "members", TITLE, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ignored an invalid change") && stderr.contains("needs 2 admins"),
        "{stderr}"
    );
    let names = |u: &User| -> Vec<String> {
        parse_json_lines(&u.ok(&["group", "members", TITLE, "--json"]), "members")
            .iter()
            .filter_map(|m| m["code"].as_str().map(String::from))
            .collect()
    };
    assert!(names(&cat).contains(&dee.code()), "Dee is still in");

    let proposals = parse_json_lines(
        &bob.ok(&["group", "proposals", TITLE, "--json"]),
        "proposals",
    );
    assert_eq!(proposals.len(), 1, "{proposals:?}");
    assert_eq!(proposals[0]["approvals"], 1);
    assert_eq!(proposals[0]["needed"], 2);
    let id = proposals[0]["id"].as_str().expect("id").to_string();
    // Ann agreeing again adds nothing; a plain member cannot agree.
    let err = ann.fails(&["group", "agree", TITLE, &id]);
    assert!(err.contains("already approved"), "{err}");
    let err = cat.fails(&["group", "agree", TITLE, &id]);
    assert!(err.contains("only admins"), "{err}");
    let out = bob.ok(&["group", "agree", TITLE, &id]);
    assert!(out.contains("it is done"), "{out}");

    cat.ok(&["sync"]);
    assert!(!names(&cat).contains(&dee.code()), "Dee is out");
    let log = cat.ok(&["group", "log", TITLE]);
    for line in [
        "proposed to remove dee (proposal",
        "approved proposal",
        "carried out: removed dee",
        "rotated the group key",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
    cat.ok(&["group", "send", TITLE, "after the vote"]);
    let _ = dee.run(&["sync"]);
    assert!(!texts(&dee.history_json(TITLE)).contains(&"after the vote".into()));
}

/// Issue 12, item 3: publishing a submission that is already published
/// (twice by the same moderator, or by a second moderator after the first)
/// says so, and members get the post once.
#[test]
fn publishing_an_anonymous_post_twice_says_it_was_already_published() {
    let relay = Relay::start();
    let (ann, bob, cat, dee) = four(&relay);
    ann.ok(&["group", "promote", TITLE, "cat"]);
    ann.ok(&[
        "group",
        "settings",
        TITLE,
        "--anonymous-posts",
        "via-moderator",
    ]);
    for u in [&bob, &cat, &dee] {
        u.ok(&["sync"]);
    }
    bob.ok(&["group", "send", TITLE, "--anonymous", "the minister again"]);
    let waiting = |u: &User| {
        u.ok(&["sync"]);
        parse_json_lines(&u.ok(&["group", "submissions", TITLE, "--json"]), "s")
    };
    let at_ann = waiting(&ann);
    assert_eq!(at_ann.len(), 1, "{at_ann:?}");
    assert_eq!(waiting(&cat).len(), 1, "both moderators got it");
    let id = at_ann[0]["id"].as_str().expect("id").to_string();
    ann.ok(&["group", "publish", TITLE, &id[..8]]);
    let err = ann.fails(&["group", "publish", TITLE, &id[..8]]);
    assert!(err.contains("already published"), "{err}");
    // Cat's copy: once Cat's app has the published post, publishing says so.
    cat.ok(&["sync"]);
    let err = cat.fails(&["group", "publish", TITLE, &id[..8]]);
    assert!(err.contains("already published"), "{err}");
    assert!(
        waiting(&cat).is_empty(),
        "the published post left Cat's list"
    );
    dee.ok(&["sync"]);
    let copies = texts(&dee.history_json(TITLE))
        .iter()
        .filter(|t| t.as_str() == "the minister again")
        .count();
    assert_eq!(copies, 1);
}

/// Issue 12, item 3: a co-admin asked to agree to a deletion saw only
/// "delete a message by someone (07ed91dc...)". `group proposals` now shows
/// the message (or the warning's subject and kind), and says when this app
/// does not have it.
#[test]
fn a_proposed_deletion_shows_the_admins_what_would_be_deleted() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann Quillfeather");
    let bob = User::new(&relay, "Bob Marsh");
    let cat = User::new(&relay, "Cat Lowe");
    ann.add_contact("bob", &bob);
    ann.add_contact("cat", &cat);
    ann.ok(&["group", "create", TITLE]);
    ann.ok(&["group", "add", TITLE, "bob"]);
    bob.ok(&["sync"]);
    bob.ok(&["group", "send", TITLE, "sent before cat joined"]);
    ann.ok(&["sync"]);
    ann.ok(&["group", "add", TITLE, "cat"]);
    ann.ok(&["group", "promote", TITLE, "cat"]);
    ann.ok(&["group", "settings", TITLE, "--quorum", "2"]);
    cat.ok(&["sync"]);
    bob.ok(&["sync"]);
    bob.ok(&["group", "send", TITLE, "a rude remark about Cat"]);
    bob.ok(&[
        "warn",
        TITLE,
        "--about",
        "Sir Peregrine Vole",
        "--kind",
        "bullying",
    ]);
    ann.ok(&["sync"]);
    cat.ok(&["sync"]);

    let id_of = |u: &User, text_start: &str| -> String {
        u.history_json(TITLE)
            .iter()
            .find(|m| {
                m["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(text_start))
            })
            .and_then(|m| m["id"].as_str().map(String::from))
            .unwrap_or_else(|| panic!("no {text_start:?} in {}'s history", u.name))
    };
    for start in [
        "a rude remark",
        "[warning] about Sir Peregrine",
        "sent before cat",
    ] {
        let id = id_of(&ann, start);
        let out = ann.ok(&["group", "delete", TITLE, &id[..12]]);
        assert!(out.contains("Proposed"), "{out}");
    }

    let human = cat.ok(&["group", "proposals", TITLE]);
    for needle in [
        "a rude remark about Cat",
        "it is a warning about Sir Peregrine Vole (bullying)",
        "your app does not have this message",
    ] {
        assert!(human.contains(needle), "missing {needle:?} in\n{human}");
    }
    let json = parse_json_lines(&cat.ok(&["group", "proposals", TITLE, "--json"]), "p");
    assert_eq!(json.len(), 3, "{json:#?}");
    let with_text: Vec<&serde_json::Value> = json
        .iter()
        .filter(|p| p["message"]["text"] == "a rude remark about Cat")
        .collect();
    assert_eq!(with_text.len(), 1, "{json:#?}");
    assert_eq!(with_text[0]["message"]["in_this_app"], true);
    assert!(
        json.iter().any(
            |p| p["message"]["warning"]["subject"] == "Sir Peregrine Vole"
                && p["message"]["warning"]["kind"] == "bullying"
        ),
        "{json:#?}"
    );
    assert!(
        json.iter()
            .any(|p| p["message"]["in_this_app"] == false && p["message"]["text"].is_null()),
        "{json:#?}"
    );
}
