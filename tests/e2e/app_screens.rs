//! The app's groups, warnings-board and evidence screens, driven over HTTP
//! as a browser drives them (a real relay, a real `sotto app`, other users
//! on the CLI): a rep moderates a group, a staffer posts a warning and says
//! "me too", and a note goes into the locker and out as a proof file.

use std::time::Duration;

use sotto_tests::http::{Browser, Reply, wait_event};

use sotto_tests::{Relay, User};

const WAIT: Duration = Duration::from_secs(60);

fn title_of(page: &str) -> &str {
    let start = page.find("<title>").expect("a title") + "<title>".len();
    &page[start..start + page[start..].find("</title>").expect("title end")]
}

/// The value of the first `name="NAME" value="..."` after `from`.
fn field_after(page: &str, from: usize, name: &str) -> String {
    let open = format!(r#"name="{name}" value=""#);
    let at = from
        + page[from..]
            .find(&open)
            .unwrap_or_else(|| panic!("no {name} field in {page}"))
        + open.len();
    page[at..at + page[at..].find('"').expect("end")].to_string()
}

/// The path of a 303 without its `?done=...` notice.
fn path_of(r: &Reply) -> String {
    assert_eq!(r.status, 303, "{}", r.body);
    r.location().split('?').next().expect("a path").to_string()
}

/// Every `href` and `action` in a page.
fn addresses(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "action=\""] {
        for (i, _) in page.match_indices(attr) {
            let rest = &page[i + attr.len()..];
            out.push(rest[..rest.find('"').expect("closed")].to_string());
        }
    }
    out
}

fn members_list(page: &str) -> &str {
    let at = page
        .find(r#"<ul aria-label="Members""#)
        .unwrap_or_else(|| panic!("no members list: {page}"));
    &page[at..at + page[at..].find("</ul>").expect("list end")]
}

/// A rep moderates a group in the app: creates it, adds a contact and
/// promotes them, makes a join link, turns approval on, approves a request
/// that came through the link, removes that member again; the moderation
/// log says so, and the title never reaches a URL or `<title>`.
#[test]
fn a_rep_moderates_a_group_in_the_app() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    ana.add_contact("Bob", &bob);
    let app = ana.app(&[]);
    let mut web = app.browser();

    let r = web.get("/groups");
    assert!(r.body.contains(">New group<"), "{}", r.body);
    let title = "Night <b>shift</b>";
    let r = web.post("/groups", &[("title", title)]);
    let group = path_of(&r);
    assert!(group.starts_with("/groups/g"), "{group}");
    let page = web.get(r.location()).body;
    assert_eq!(title_of(&page), "Sotto – Group");
    assert!(page.contains("Night &lt;b&gt;shift&lt;/b&gt;"), "{page}");
    assert!(!page.contains("<b>shift"), "a title ran as HTML");
    assert!(page.contains("You are its owner"), "the notice: {page}");
    for a in addresses(&page) {
        assert!(!a.contains("shift"), "title in an address: {a}");
    }

    // Add Bob, by his contact code, then make him an admin.
    let r = web.post(&format!("{group}/add"), &[("code", &bob.code())]);
    assert_eq!(path_of(&r), group);
    let page = web.get(&group).body;
    assert!(members_list(&page).contains("Bob"), "{page}");
    let r = web.post(
        &format!("{group}/member"),
        &[("member", &bob.code()), ("action", "promote")],
    );
    assert_eq!(path_of(&r), group);
    let page = web.get(&group).body;
    assert_eq!(members_list(&page).matches(">Admin<").count(), 2, "{page}");
    assert!(page.contains("made Bob an admin"), "logged: {page}");

    // A join link, approval on, and a request through the link.
    assert!(page.contains(">Create join link<"), "{page}");
    assert_eq!(path_of(&web.post(&format!("{group}/link"), &[])), group);
    let page = web.get(&group).body;
    assert!(page.contains(">Reset join link<"), "{page}");
    let at = page.find("sotto://group?").expect("the link is shown");
    let link = page[at..at + page[at..].find('"').expect("end")].replace("&amp;", "&");
    let r = web.post(
        &format!("{group}/settings"),
        &[
            ("approval", "on"),
            ("vouches", "0"),
            ("reconfirm_ms", "0"),
            ("disappearing_ms", "86400000"),
            ("anonymous_posts", "off"),
            ("quorum", "1"),
            ("warning_retention_ms", "0"),
        ],
    );
    assert_eq!(path_of(&r), group);
    let page = web.get(&group).body;
    assert!(
        page.contains(r#"id="approval" name="approval" value="on" checked"#),
        "{page}"
    );
    assert!(page.contains("turned join approval on"), "logged: {page}");

    let carol = User::new(&relay, "Carol");
    carol.ok(&["group", "join", &link]);
    let page = web.get(&group).body;
    let requests = &page[page.find(">Join requests<").expect("section")..];
    assert!(requests.contains("Carol"), "{page}");
    assert!(requests.contains(">Approve<") && requests.contains(">Deny<"));
    let r = web.post(
        &format!("{group}/request"),
        &[("who", &carol.code()), ("action", "approve")],
    );
    assert_eq!(path_of(&r), group);
    let page = web.get(&group).body;
    assert!(members_list(&page).contains("Carol"), "{page}");

    let r = web.post(
        &format!("{group}/member"),
        &[("member", &carol.code()), ("action", "remove")],
    );
    assert_eq!(path_of(&r), group);
    let page = web.get(&group).body;
    assert!(!members_list(&page).contains("Carol"), "{page}");
    assert!(page.contains("removed Carol"), "logged: {page}");

    // A refusal is shown on the page, in words, and changes nothing.
    let r = web.post(
        &format!("{group}/member"),
        &[("member", "not-a-code"), ("action", "remove")],
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("reload the page"), "{}", r.body);
}

/// A warning posted on the CLI shows on the app's board by person; the
/// person's page has the counts, the route card and "Me too", which counts
/// for the poster too; a warning posted in the app (after its preview)
/// reaches the other member. The person's name is never in an address or
/// a `<title>`.
#[test]
fn warnings_and_me_too_in_the_app() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    bob.add_contact("ana", &ana);
    bob.ok(&["group", "create", "Staff"]);
    bob.ok(&["group", "add", "Staff", "ana"]);

    let app = ana.app(&[]);
    let mut web = app.browser();
    let events = web.events();
    wait_event(&events, "state", "unlocked", WAIT);
    bob.ok(&[
        "warn",
        "Staff",
        "--about",
        "Sir John Smith MP",
        "--kind",
        "harassment",
        "--when",
        "2024-03-14",
        "He followed me to the car park.",
    ]);
    wait_event(&events, "message", r#""chat":"g"#, WAIT);

    let board = web.get("/warnings").body;
    assert!(
        board.contains("<caption>Warnings by person</caption>"),
        "{board}"
    );
    assert!(board.contains("Sir John Smith MP"), "{board}");
    let at = board.find(r#"href="/warnings/s"#).expect("a person's link") + 6;
    let person = board[at..at + board[at..].find('"').expect("end")].to_string();
    for a in addresses(&board) {
        assert!(
            !a.to_lowercase().contains("smith"),
            "name in an address: {a}"
        );
    }
    let page = web.get(&person).body;
    assert_eq!(title_of(&page), "Sotto – Warnings about a person");
    assert!(page.contains("<dt>First-hand</dt><dd>1</dd>"), "{page}");
    assert!(page.contains("<dt>Anonymous corroborations</dt><dd>0</dd>"));
    assert!(page.contains(">What you can do<"), "the route card: {page}");
    assert!(
        page.contains("Last day: "),
        "deadlines from the date: {page}"
    );
    let form = page.find(">Me too<").expect("Me too offered");
    let warning = field_after(
        &page,
        page[..form].rfind("<form").expect("its form"),
        "warning",
    );

    let r = web.post(
        &format!("{person}/me-too"),
        &[("warning", &warning), ("firsthand", "on")],
    );
    assert_eq!(path_of(&r), person);
    let page = web.get(&person).body;
    assert!(
        page.contains("<dt>Anonymous corroborations</dt><dd>1</dd>"),
        "{page}"
    );
    assert!(page.contains("<dt>First-hand</dt><dd>2</dd>"), "{page}");
    assert!(page.contains("You are one of them."));
    assert!(!page.contains(">Me too<"), "offered again");
    bob.ok(&["sync"]);
    let out = bob.ok(&["warnings", "--json"]);
    assert!(out.contains(r#""corroborations":1"#), "{out}");

    // Posting in the app: preview first, then post.
    let form = web.get("/warnings/new").body;
    let at = form
        .find(r#"<option value="g"#)
        .expect("a group to post to")
        + 15;
    let group = form[at..at + form[at..].find('"').expect("end")].to_string();
    let fields = |action: &'static str| {
        vec![
            ("group", group.clone()),
            ("about", "Mallory <Manager>".to_string()),
            ("role", "Office manager".to_string()),
            ("kind", "bullying".to_string()),
            ("hand", "secondhand".to_string()),
            ("when", "2024-05".to_string()),
            ("where", "the office".to_string()),
            ("advice", "never alone with him".to_string()),
            ("text", "Shouts at\njuniors.".to_string()),
            ("action", action.to_string()),
        ]
    };
    let preview = fields("preview");
    let preview: Vec<(&str, &str)> = preview.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = web.post("/warnings/new", &preview);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Nothing has been sent yet."), "{}", r.body);
    assert!(r.body.contains(">Post warning<"));
    assert!(r.body.contains("Mallory &lt;Manager&gt;"));
    let post = fields("post");
    let post: Vec<(&str, &str)> = post.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = web.post("/warnings/new", &post);
    assert_eq!(r.location(), "/warnings?done=posted", "{}", r.body);
    bob.ok(&["sync"]);
    let out = bob.ok(&["warnings", "--json", "--about", "Mallory"]);
    assert!(out.contains("Office manager"), "{out}");
    assert!(out.contains(r#""firsthand":false"#), "{out}");
    let board = web.get("/warnings").body;
    assert!(board.contains("Mallory &lt;Manager&gt;"), "{board}");
}

/// Posts the locker's upload form as a browser does (multipart, the CSRF
/// token first) with `note` and, if given, a file `(name, bytes)`.
fn upload(web: &mut Browser, csrf: &str, note: &str, file: Option<(&str, &[u8])>) -> Reply {
    let boundary = "----sottoTestBoundary7MA4YWxk";
    let (file_name, file_bytes) = file.unwrap_or(("", b""));
    let mut body = Vec::new();
    for (name, filename, data) in [
        ("csrf", None, csrf.as_bytes()),
        ("note", None, note.as_bytes()),
        ("file", Some(file_name), file_bytes),
    ] {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let origin = format!("http://{}", web.addr());
    let kind = format!("multipart/form-data; boundary={boundary}");
    web.request(
        "POST",
        "/evidence",
        &[
            ("Content-Type", &kind),
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        Some(body),
    )
}

/// A note and a file go into the locker through the upload form; the
/// relay countersigns it; the proof downloads under a name that is the
/// note's id only, and `sotto note verify` accepts it.
#[test]
fn the_evidence_locker_in_the_app() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let app = ana.app(&[]);
    let mut web = app.browser();
    let page = web.get("/evidence").body;
    for label in [">Note<", ">File<", ">Save to locker<"] {
        assert!(page.contains(label), "{label}: {page}");
    }
    let csrf = field_after(&page, 0, "csrf");
    let file: &[u8] = b"\x89PNG\r\n\x1a\n not really a picture \r\n--";
    let r = upload(
        &mut web,
        &csrf,
        "He said it again.\r\nSecond line.",
        Some(("John Smith shouting.png", file)),
    );
    assert_eq!(r.location(), "/evidence?done=saved", "{}", r.body);
    let page = web.get("/evidence?done=saved").body;
    assert!(
        page.contains("Kept in your locker, and countersigned"),
        "{page}"
    );
    assert!(page.contains("Countersigned by the relay"), "{page}");
    assert!(page.contains("He said it again.\nSecond line."), "{page}");
    assert!(page.contains("John Smith shouting.png"), "{page}");
    let id = field_after(&page, page.find("/evidence/export").expect("export"), "id");

    let r = web.post("/evidence/export", &[("id", &id)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let disposition = r.header("content-disposition").expect("a download");
    assert_eq!(
        disposition,
        format!(
            "attachment; filename=\"sotto-note-{}.proof.json\"",
            &id[..12]
        )
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let dir = tempfile::tempdir().expect("temp dir");
    let proof = dir.path().join("proof.json");
    std::fs::write(&proof, r.body.as_bytes()).expect("write the proof");
    let judge = User::uninitialised("a tribunal clerk");
    let out = judge.ok(&["note", "verify", proof.to_str().expect("utf-8")]);
    assert!(out.contains("Valid"), "{out}");
    assert!(out.contains("He said it again."), "{out}");
    assert!(
        out.contains("Attached file: John Smith shouting.png"),
        "{out}"
    );

    // An empty note with no file keeps nothing and says so.
    let r = upload(&mut web, &csrf, "  ", None);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("note is empty"), "{}", r.body);
    assert_eq!(
        web.get("/evidence")
            .body
            .matches("Countersigned by the relay")
            .count(),
        1
    );
}

/// Under quorum moderation, Remove in the app makes a proposal (and says
/// so), and Agree on another admin's proposal carries it out.
#[test]
fn quorum_proposals_in_the_app() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    let carol = User::new(&relay, "Carol");
    let dan = User::new(&relay, "Dan");
    bob.add_contact("ana", &ana);
    bob.add_contact("carol", &carol);
    bob.add_contact("dan", &dan);
    bob.ok(&["group", "create", "Reps"]);
    bob.ok(&["group", "add", "Reps", "ana", "carol", "dan"]);
    bob.ok(&["group", "promote", "Reps", "ana"]);
    bob.ok(&["group", "settings", "Reps", "--quorum", "2"]);
    bob.ok(&["group", "remove", "Reps", "carol"]);

    let app = ana.app(&[]);
    let mut web = app.browser();
    let list = web.get("/groups").body;
    let at = list.find(r#"href="/groups/g"#).expect("the group") + 6;
    let group = list[at..at + list[at..].find('"').expect("end")].to_string();
    let page = web.get(&group).body;
    assert!(page.contains("2 admins must agree"), "{page}");
    let proposals = &page[page
        .find(r#"<ul aria-label="Proposals""#)
        .expect("a proposal")..];
    assert!(proposals.contains("remove carol"), "{page}");
    assert!(proposals.contains("1 of 2 admins agree"), "{page}");
    let id = field_after(proposals, 0, "proposal");
    let r = web.post(
        &format!("{group}/proposal"),
        &[("proposal", &id), ("action", "agree")],
    );
    assert_eq!(path_of(&r), group);
    let page = web.get(&group).body;
    assert!(!members_list(&page).contains("carol"), "{page}");
    assert!(
        page.contains("Nothing is waiting for admins to agree."),
        "{page}"
    );

    // My own Remove is a proposal too, and the page says so.
    let r = web.post(
        &format!("{group}/member"),
        &[("member", &dan.code()), ("action", "remove")],
    );
    assert_eq!(r.location(), format!("{group}?done=proposed"));
    let page = web.get(r.location()).body;
    assert!(page.contains("Proposed. It is carried out once enough admins agree"));
    assert!(
        members_list(&page).contains("dan"),
        "not removed yet: {page}"
    );
    assert!(page.contains("remove dan"), "{page}");
}
