//! Group chats and their moderation, with the real relay and real `sotto`
//! clients: membership, key rotation on removal, roles that a modified client
//! cannot forge, announcements-only, join links with approval, deletes,
//! disappearing messages, concurrent admin edits, and a relay disk that holds
//! none of it in the clear.

use std::collections::BTreeSet;

use sotto_client::engine::Engine;
use sotto_client::group::{Op, Role};
use sotto_tests::{PASSPHRASE, Relay, User, leaks, parse_json_lines, texts};

const TITLE: &str = "Night shift list";
/// Display names long enough that finding one by chance in binary files is negligible.
const ANN: &str = "Ann Quillfeather";

/// Ann (owner) creates the group and adds Bob and Cat.
fn three(relay: &Relay) -> (User, User, User) {
    let ann = User::new(relay, ANN);
    let bob = User::new(relay, "Bob Marsh");
    let cat = User::new(relay, "Cat Lowe");
    ann.add_contact("bob", &bob);
    ann.add_contact("cat", &cat);
    ann.ok(&["group", "create", TITLE]);
    ann.ok(&["group", "add", TITLE, "bob", "cat"]);
    bob.ok(&["sync"]);
    cat.ok(&["sync"]);
    (ann, bob, cat)
}

fn groups_json(u: &User) -> Vec<serde_json::Value> {
    parse_json_lines(&u.ok(&["groups", "--json"]), "groups --json")
}

fn members(u: &User, group: &str) -> Vec<(String, String)> {
    parse_json_lines(
        &u.ok(&["group", "members", group, "--json"]),
        "group members --json",
    )
    .iter()
    .map(|m| {
        (
            m["code"].as_str().unwrap_or_default().to_string(),
            m["role"].as_str().unwrap_or_default().to_string(),
        )
    })
    .collect()
}

fn group_texts(u: &User) -> Vec<String> {
    texts(&u.history_json(TITLE))
}

#[test]
fn three_members_exchange_messages_and_see_roles_and_the_log() {
    let relay = Relay::start();
    let (ann, bob, cat) = three(&relay);

    let listed = groups_json(&bob);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["title"], TITLE);
    assert_eq!(listed[0]["role"], "member");
    assert_eq!(listed[0]["members"], 3);

    ann.ok(&["group", "send", TITLE, "welcome: use this for warnings"]);
    bob.ok(&["group", "send", TITLE, "avoid the late taxi rota with him"]);
    let at_cat = cat.sync_json();
    assert_eq!(
        texts(&at_cat),
        [
            "welcome: use this for warnings",
            "avoid the late taxi rota with him"
        ]
    );
    assert!(
        at_cat
            .iter()
            .all(|m| m["group_title"] == TITLE && m["group"].is_string()),
        "group messages carry the group: {at_cat:?}"
    );
    // Cat has no contacts: names come from the group state.
    assert_eq!(at_cat[0]["from"], ANN);
    cat.ok(&["group", "send", TITLE, "same experience in March"]);
    let at_ann = ann.sync_json();
    assert_eq!(
        texts(&at_ann),
        [
            "avoid the late taxi rota with him",
            "same experience in March"
        ]
    );
    // Ann's contact names win over display names.
    assert_eq!(at_ann[0]["from"], "bob");
    assert_eq!(
        texts(&bob.sync_json()),
        ["welcome: use this for warnings", "same experience in March"]
    );
    // Direct histories stay separate from the group's.
    assert!(ann.history_json("bob").is_empty());
    assert_eq!(group_texts(&ann).len(), 3);
    assert_eq!(group_texts(&bob).len(), 3);

    let roles = members(&cat, TITLE);
    let code = |u: &User| u.code();
    assert!(roles.contains(&(code(&ann), "owner".into())), "{roles:?}");
    assert!(roles.contains(&(code(&bob), "member".into())), "{roles:?}");

    ann.ok(&["group", "promote", TITLE, "bob"]);
    cat.ok(&["sync"]);
    assert!(members(&cat, TITLE).contains(&(code(&bob), "admin".into())));
    let log = parse_json_lines(&cat.ok(&["group", "log", TITLE, "--json"]), "log");
    let actions: Vec<&str> = log.iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"made bob an admin"), "{actions:?}");
    assert!(
        actions.iter().any(|a| a.starts_with("created the group")),
        "{actions:?}"
    );
    assert!(log.iter().all(|e| e["by"] == ANN), "{log:?}");
}

#[test]
fn a_removed_member_reads_nothing_new_and_loses_the_state() {
    let relay = Relay::start();
    let (ann, bob, cat) = three(&relay);
    ann.ok(&["group", "send", TITLE, "before the removal"]);
    assert_eq!(texts(&cat.sync_json()), ["before the removal"]);
    bob.ok(&["sync"]);

    ann.ok(&["group", "remove", TITLE, "cat"]);
    ann.ok(&["group", "send", TITLE, "after the removal"]);
    bob.ok(&["group", "send", TITLE, "bob after the removal"]);

    assert_eq!(
        texts(&bob.sync_json()),
        ["after the removal"],
        "remaining members read on"
    );
    let at_cat = cat.run(&["sync", "--json"]);
    assert!(at_cat.status.success());
    assert!(
        parse_json_lines(&String::from_utf8_lossy(&at_cat.stdout), "sync").is_empty(),
        "cat got nothing sent after her removal"
    );
    assert!(
        String::from_utf8_lossy(&at_cat.stderr).contains("removed"),
        "cat is told: {}",
        String::from_utf8_lossy(&at_cat.stderr)
    );
    assert_eq!(group_texts(&cat), ["before the removal"]);
    assert!(groups_json(&cat)[0]["role"].is_null());
    let err = cat.fails(&["group", "send", TITLE, "still here?"]);
    assert!(err.contains("no longer a member"), "{err}");

    // Cat kept the old group key; the relay no longer serves the state to it.
    let runtime = runtime();
    runtime.block_on(async {
        let mut engine = Engine::open(cat.home(), PASSPHRASE).expect("open cat");
        let err = engine
            .group_set_role(TITLE, "Bob", true)
            .await
            .expect_err("a removed member cannot change the group");
        assert!(err.to_string().contains("no longer a member"), "{err}");
        engine.close().await;
    });
}

#[test]
fn a_new_member_cannot_read_what_was_sent_before_joining() {
    let relay = Relay::start();
    let (ann, bob, _cat) = three(&relay);
    let dee = User::new(&relay, "Dee Harrow");
    ann.add_contact("dee", &dee);
    ann.ok(&["group", "send", TITLE, "sent before dee joined"]);
    bob.ok(&["group", "send", TITLE, "bob also before dee"]);
    ann.ok(&["group", "add", TITLE, "dee"]);
    bob.ok(&["sync"]);
    ann.ok(&["group", "send", TITLE, "welcome dee"]);
    bob.ok(&["group", "send", TITLE, "hi dee from bob"]);
    assert_eq!(texts(&dee.sync_json()), ["welcome dee", "hi dee from bob"]);
    assert_eq!(group_texts(&dee), ["welcome dee", "hi dee from bob"]);
}

#[test]
fn a_forged_self_promotion_is_refused_by_every_other_member() {
    let relay = Relay::start();
    let (ann, bob, cat) = three(&relay);
    let bob_code = bob.code();
    // Bob's modified client signs "make me admin" and writes it with the group key.
    runtime().block_on(async {
        let mut engine = Engine::open(bob.home(), PASSPHRASE).expect("open bob");
        let me = engine.code().account_id();
        engine
            .danger_write_unchecked(
                TITLE,
                vec![Op::SetRole {
                    account: me,
                    role: Role::Admin,
                }],
            )
            .await
            .expect("the relay takes any write signed with the group key");
        engine.close().await;
    });
    for other in [&ann, &cat] {
        let out = other.run(&["group", "members", TITLE, "--json"]);
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("ignored an invalid change") && stderr.contains("only admins"),
            "{} is told: {stderr}",
            other.name
        );
        let roles = members(other, TITLE);
        assert!(
            roles.contains(&(bob_code.clone(), "member".into())),
            "{} still sees Bob as a member: {roles:?}",
            other.name
        );
    }
    // An honest change made afterwards still reaches everyone.
    ann.ok(&["group", "settings", TITLE, "--approval", "on"]);
    cat.ok(&["sync"]);
    let cat_view = groups_json(&cat);
    assert_eq!(cat_view[0]["approval"], true, "{cat_view:?}");
    assert!(members(&cat, TITLE).contains(&(bob_code, "member".into())));
}

#[test]
fn announcements_only_refuses_members_with_a_clear_error() {
    let relay = Relay::start();
    let (ann, bob, cat) = three(&relay);
    ann.ok(&["group", "settings", TITLE, "--announcements-only", "on"]);
    bob.ok(&["sync"]);
    let err = bob.fails(&["group", "send", TITLE, "can I post?"]);
    assert!(
        err.contains("announcements-only") && err.contains("only admins"),
        "{err}"
    );
    ann.ok(&["group", "send", TITLE, "official: meeting at 6"]);
    assert_eq!(texts(&cat.sync_json()), ["official: meeting at 6"]);
    assert_eq!(group_texts(&bob), Vec::<String>::new());
}

#[test]
fn join_link_with_approval_then_reset() {
    let relay = Relay::start();
    let (ann, bob, _cat) = three(&relay);
    ann.ok(&["group", "settings", TITLE, "--approval", "on"]);
    let link = ann.ok(&["group", "link", TITLE]).trim().to_string();
    assert!(link.starts_with("sotto://group?"), "{link}");

    let eve = User::new(&relay, "Eve");
    eve.ok(&["group", "join", &link]);
    let waiting = groups_json(&eve);
    assert_eq!(waiting[0]["waiting_to_join"], true, "{waiting:?}");

    let requests = parse_json_lines(&ann.ok(&["group", "requests", TITLE, "--json"]), "requests");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["name"], "Eve");
    // Still waiting: nothing reaches Eve before approval.
    ann.ok(&["group", "send", TITLE, "not for eve yet"]);
    assert!(eve.sync_json().is_empty());

    ann.ok(&["group", "approve", TITLE, "Eve"]);
    let out = eve.run(&["sync"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("now a member"));
    bob.ok(&["sync"]);
    ann.ok(&["group", "send", TITLE, "welcome eve"]);
    bob.ok(&["group", "send", TITLE, "hello eve"]);
    assert_eq!(texts(&eve.sync_json()), ["welcome eve", "hello eve"]);
    assert_eq!(groups_json(&eve)[0]["role"], "member");
    let log = ann.ok(&["group", "log", TITLE]);
    assert!(log.contains("approved Eve's join request"), "{log}");

    // A reset link: the old one is useless, the new one works.
    let new_link = ann.ok(&["group", "link", TITLE, "--reset"]);
    let new_link = new_link
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_ne!(new_link, link);
    let fay = User::new(&relay, "Fay");
    let err = fay.fails(&["group", "join", &link]);
    assert!(
        err.contains("no longer works") && err.contains("reset"),
        "{err}"
    );
    // Issue 12, item 7: a typo in the secret is a damaged link, not a reset one.
    let at = new_link.len() - 5;
    let swapped = if new_link[at..=at].eq_ignore_ascii_case("7") {
        "2"
    } else {
        "7"
    };
    let mut typo = new_link.clone();
    typo.replace_range(at..=at, swapped);
    let err = fay.fails(&["group", "join", &typo]);
    assert!(
        err.contains("damaged") && err.contains("copied wrongly") && !err.contains("reset"),
        "{err}"
    );
    fay.ok(&["group", "join", &new_link]);
    let requests = parse_json_lines(&ann.ok(&["group", "requests", TITLE, "--json"]), "requests");
    assert_eq!(texts_of(&requests, "name"), ["Fay"]);
    ann.ok(&["group", "deny", TITLE, "Fay"]);
    assert!(parse_json_lines(&ann.ok(&["group", "requests", TITLE, "--json"]), "r").is_empty());
}

fn texts_of(values: &[serde_json::Value], field: &str) -> Vec<String> {
    values
        .iter()
        .map(|v| v[field].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn join_link_without_approval_admits_on_the_admins_next_sync() {
    let relay = Relay::start();
    let (ann, _bob, _cat) = three(&relay);
    let link = ann.ok(&["group", "link", TITLE]).trim().to_string();
    let gus = User::new(&relay, "Gus");
    gus.ok(&["group", "join", &link]);
    ann.ok(&["sync"]);
    gus.ok(&["sync"]);
    assert_eq!(groups_json(&gus)[0]["role"], "member");
    ann.ok(&["group", "send", TITLE, "hi gus"]);
    assert_eq!(texts(&gus.sync_json()), ["hi gus"]);
}

#[test]
fn a_moderator_delete_removes_the_message_for_everyone() {
    let relay = Relay::start();
    let (ann, bob, cat) = three(&relay);
    bob.ok(&["group", "send", TITLE, "an unkind post to take down"]);
    bob.ok(&["group", "send", TITLE, "a post that stays"]);
    cat.ok(&["sync"]);
    let at_ann = ann.sync_json();
    let id = at_ann[0]["id"].as_str().expect("id").to_string();
    ann.ok(&["group", "delete", TITLE, &id[..12]]);
    cat.ok(&["sync"]);
    bob.ok(&["sync"]);
    for u in [&ann, &bob, &cat] {
        assert_eq!(
            group_texts(u),
            ["a post that stays"],
            "{}'s history",
            u.name
        );
    }
    let log = cat.ok(&["group", "log", TITLE]);
    assert!(
        log.contains("deleted a message by bob") || log.contains("deleted a message by Bob"),
        "{log}"
    );

    // Authors withdraw their own; members cannot delete others'.
    let err = cat.fails(&["group", "delete", TITLE, &group_ids(&cat)[0][..12]]);
    assert!(err.contains("only the author or an admin"), "{err}");
    cat.ok(&["group", "send", TITLE, "cat's own mistake"]);
    let own = group_ids(&cat)[1].clone();
    ann.ok(&["sync"]);
    cat.ok(&["group", "delete", TITLE, &own[..12]]);
    ann.ok(&["sync"]);
    assert_eq!(group_texts(&ann), ["a post that stays"]);
    assert_eq!(group_texts(&cat), ["a post that stays"]);
}

fn group_ids(u: &User) -> Vec<String> {
    texts_of(&u.history_json(TITLE), "id")
}

#[test]
fn disappearing_messages_leave_every_store_after_the_timer() {
    let relay = Relay::start();
    let (ann, bob, cat) = three(&relay);
    ann.ok(&["group", "settings", TITLE, "--disappearing", "3s"]);
    bob.ok(&["sync"]);
    cat.ok(&["sync"]);
    ann.ok(&["group", "send", TITLE, "this one disappears"]);
    assert_eq!(texts(&bob.sync_json()), ["this one disappears"]);
    assert_eq!(group_texts(&ann), ["this one disappears"]);
    std::thread::sleep(std::time::Duration::from_millis(3500));
    // Cat never synced: the relay dropped its copy when the timer ran out.
    assert!(cat.sync_json().is_empty());
    assert!(group_texts(&ann).is_empty());
    assert!(group_texts(&bob).is_empty());
    assert!(group_texts(&cat).is_empty());
    let out = ann.ok(&["group", "settings", TITLE]);
    assert!(out.contains("disappearing: 3s"), "{out}");
}

#[test]
fn concurrent_admin_edits_converge() {
    let relay = Relay::start();
    let (ann, bob, cat) = three(&relay);
    ann.ok(&["group", "promote", TITLE, "bob"]);
    bob.ok(&["sync"]);
    // Both admins change a different setting at the same moment, a few times over.
    for (round, (a, b)) in [("on", "1d"), ("off", "2h"), ("on", "off")]
        .iter()
        .enumerate()
    {
        let mut ann_cmd = ann.command();
        ann_cmd.args(["group", "settings", TITLE, "--announcements-only", a]);
        let mut bob_cmd = bob.command();
        bob_cmd.args(["group", "settings", TITLE, "--disappearing", b]);
        let bob_child = std::thread::spawn(move || bob_cmd.output());
        let ann_out = ann_cmd.output().expect("ann runs");
        let bob_out = bob_child.join().expect("thread").expect("bob runs");
        assert!(ann_out.status.success(), "round {round}: {ann_out:?}");
        assert!(bob_out.status.success(), "round {round}: {bob_out:?}");
    }
    let mut views = BTreeSet::new();
    for u in [&ann, &bob, &cat] {
        u.ok(&["sync"]);
        let g = &groups_json(u)[0];
        views.insert((
            g["announcements_only"].clone().to_string(),
            g["disappearing_ms"].clone().to_string(),
        ));
    }
    assert_eq!(views.len(), 1, "every member ends on one state: {views:?}");
    let (announcements, disappearing) = views.into_iter().next().expect("one view");
    assert_eq!(announcements, "true", "ann's last edit is kept");
    assert_eq!(disappearing, "0", "bob's last edit is kept");
    let log = ann.ok(&["group", "log", TITLE]);
    assert_eq!(log.matches("turned announcements-only").count(), 3, "{log}");
}

#[test]
fn the_relay_disk_holds_no_group_title_name_or_text() {
    let relay = Relay::start();
    let (ann, bob, cat) = three(&relay);
    ann.ok(&["group", "send", TITLE, "warning about the chief of staff"]);
    bob.ok(&["group", "send", TITLE, "he did the same at the gala"]);
    ann.ok(&["group", "link", TITLE]);
    cat.ok(&["sync"]);
    let needles = [
        TITLE,
        "warning about the chief of staff",
        "he did the same at the gala",
        ANN,
        "Bob Marsh",
        "Cat Lowe",
    ];
    let found = leaks(&relay.data_dir(), &needles);
    assert!(found.is_empty(), "plaintext on the relay's disk: {found:?}");
    let log = relay.stderr();
    for needle in needles {
        assert!(!log.contains(needle), "the relay logged {needle:?}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A 300-member group: 299 lightweight in-process members (the client engine
/// behind `sotto`, each with its own encrypted store) all receive one message.
/// Prints the sender's and the relay's times; the benchmark harness is where
/// such figures are measured properly, this only proves it works at size.
#[test]
fn a_300_member_group_delivers_to_every_member() {
    const MEMBERS: usize = 300;
    let relay = Relay::start();
    let invite = relay.invite(MEMBERS as u32);
    let homes: Vec<tempfile::TempDir> = (0..MEMBERS)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    runtime().block_on(async {
        let started = std::time::Instant::now();
        let mut engines = Vec::with_capacity(MEMBERS);
        for (i, home) in homes.iter().enumerate() {
            let engine = Engine::init(home.path(), PASSPHRASE, &invite, &format!("Member {i}"))
                .await
                .expect("member registers");
            engines.push(engine);
        }
        eprintln!("registered {MEMBERS} profiles in {:?}", started.elapsed());
        let (owner, members) = engines.split_first_mut().expect("owner");
        let t = std::time::Instant::now();
        let mut names = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let name = format!("m{i}");
            owner
                .add_contact(&name, &m.code().to_string())
                .await
                .expect("add contact");
            names.push(name);
        }
        eprintln!("owner added {} contacts in {:?}", names.len(), t.elapsed());
        owner.group_create("Big branch").await.expect("create");
        let t = std::time::Instant::now();
        owner
            .group_add("Big branch", &names)
            .await
            .expect("add 299");
        eprintln!(
            "added {} members (one change, 299 updates) in {:?}",
            names.len(),
            t.elapsed()
        );
        for m in members.iter_mut() {
            m.sync(&mut |_| {}, &mut |_| {})
                .await
                .expect("member syncs the update");
        }
        let t = std::time::Instant::now();
        owner
            .group_send("Big branch", "first: sender keys go out 1:1")
            .await
            .expect("first send");
        eprintln!(
            "first send (299 sender keys 1:1, then one v2 envelope) took {:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        owner
            .group_send("Big branch", "second: one envelope for all")
            .await
            .expect("second send");
        eprintln!(
            "steady-state send to 299 (encrypt once, relay splits and stores durably) took {:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        let mut received = 0;
        for m in members.iter_mut() {
            let mut got = Vec::new();
            m.sync(&mut |msg| got.push(msg.text.clone()), &mut |_| {})
                .await
                .expect("member syncs");
            assert_eq!(
                got,
                [
                    "first: sender keys go out 1:1",
                    "second: one envelope for all"
                ]
            );
            received += 1;
        }
        assert_eq!(received, MEMBERS - 1);
        eprintln!("299 members synced both messages in {:?}", t.elapsed());
        // Dropped without a polite close: waiting out 300 QUIC drain periods
        // would take minutes, and the relay is stopped with the test anyway.
    });
}
