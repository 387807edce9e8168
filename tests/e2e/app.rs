//! The local web app (`sotto app`) driven over HTTP as a browser drives it:
//! a real relay, a real `sotto app` process, and a second user on the CLI.
//! The browser suite (Chromium) covers the same screens with a real browser;
//! these need nothing but the binaries.

use std::time::Duration;

use sotto_tests::http::{Browser, wait_event};
use sotto_tests::{PASSPHRASE, Relay, User, texts};

const WAIT: Duration = Duration::from_secs(60);

/// The opaque id at the end of a redirect to `/contacts/ID`.
fn id_from(location: &str) -> String {
    location
        .rsplit('/')
        .next()
        .unwrap_or_else(|| panic!("no id in {location}"))
        .to_string()
}

/// The text of the element with `id` (up to its first `<`).
fn text_of(page: &str, id: &str) -> String {
    let open = format!(r#"id="{id}""#);
    let at = page
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in the page: {page}"));
    let start = at + page[at..].find('>').expect("tag end") + 1;
    let end = start + page[start..].find('<').expect("text end");
    page[start..end].trim().to_string()
}

fn title_of(page: &str) -> &str {
    let start = page.find("<title>").expect("a title") + "<title>".len();
    &page[start..start + page[start..].find("</title>").expect("title end")]
}

/// Set-up in the app, then a conversation with a CLI user: live events,
/// unread count, hostile text inert, send status, lock and unlock, panic.
#[test]
fn a_new_user_joins_in_the_app_and_talks_live() {
    let relay = Relay::start();
    let ana = User::uninitialised("Ana");
    let app = ana.app(&[("SOTTO_PASSPHRASE", "")]);
    let mut web = app.browser();

    // No profile: every screen leads to set-up.
    let r = web.get("/");
    assert_eq!((r.status, r.location()), (303, "/setup"));
    let r = web.get("/setup");
    assert_eq!(r.status, 200);
    assert!(r.body.contains(">Invite link<"), "{}", r.body);
    let r = web.post(
        "/setup",
        &[
            ("invite", &relay.invite(1)),
            ("name", "Ana"),
            ("passphrase", PASSPHRASE),
            ("passphrase2", PASSPHRASE),
        ],
    );
    assert_eq!(r.status, 303, "set-up failed: {}", r.body);
    assert_eq!(r.location(), "/");

    let r = web.get("/contacts");
    assert_eq!(r.status, 200, "{}", r.body);
    let ana_code = text_of(&r.body, "my-code");
    assert!(
        r.body
            .contains(r#"aria-label="QR code of your contact code""#)
    );

    let bob = User::new(&relay, "Bob");
    bob.add_contact_code("Ana", &ana_code);
    let r = web.post("/contacts", &[("name", "Bob"), ("code", &bob.code())]);
    assert_eq!(r.status, 303, "adding a contact failed: {}", r.body);
    let chat = id_from(r.location());
    assert!(
        !r.location().contains("Bob"),
        "a name in a URL: {}",
        r.location()
    );

    let events = web.events();
    wait_event(&events, "state", "unlocked", WAIT);

    // A message from Bob arrives live, counts as unread, and shows as text.
    bob.ok(&["send", "Ana", "<img src=x onerror=alert(1)> are you free?"]);
    wait_event(&events, "message", &chat, WAIT);
    let list = web.get("/");
    assert!(list.body.contains(r#"class="unread""#), "{}", list.body);
    let r = web.get(&format!("/chats/{chat}"));
    assert_eq!(r.status, 200);
    assert_eq!(
        title_of(&r.body),
        "Sotto – Conversation",
        "no name in the title"
    );
    assert!(
        r.body
            .contains("&lt;img src=x onerror=alert(1)&gt; are you free?"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("<img src=x"), "hostile text ran as HTML");
    assert!(r.body.contains(r#"<ol id="messages""#));
    let list = web.get("/");
    assert!(
        !list.body.contains(r#"class="unread""#),
        "opening the chat reads it"
    );

    // Ana answers from the app; the relay has it, Bob gets it.
    let r = web.post(
        &format!("/chats/{chat}"),
        &[("text", "yes, after the vote")],
    );
    assert_eq!(r.status, 303, "send failed: {}", r.body);
    let r = web.get(&format!("/chats/{chat}"));
    assert!(r.body.contains("yes, after the vote"));
    assert!(r.body.contains(">Sent<"), "status shown: {}", r.body);
    assert_eq!(texts(&bob.sync_json()), ["yes, after the vote"]);

    // Lock: every screen asks for the passphrase; a wrong one is refused.
    let r = web.post("/lock", &[]);
    assert_eq!((r.status, r.location()), (303, "/unlock"));
    wait_event(&events, "state", "locked", WAIT);
    let r = web.get(&format!("/chats/{chat}"));
    assert_eq!((r.status, r.location()), (303, "/unlock"));
    let r = web.post("/unlock", &[("passphrase", "not the passphrase")]);
    assert!(r.body.contains("Wrong passphrase"), "{}", r.body);
    let r = web.post("/unlock", &[("passphrase", PASSPHRASE)]);
    assert_eq!((r.status, r.location()), (303, "/"));

    // Panic: confirmation, then nothing of the profile on the page or disk.
    let r = web.get("/panic");
    assert!(r.body.contains("Erase everything now"));
    let r = web.post("/panic", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Erased"));
    assert!(r.body.contains("What this browser may still hold"));
    for leak in ["Bob", "Ana", "vote", &ana_code] {
        assert!(!r.body.contains(leak), "{leak:?} shown after panic");
    }
    assert!(
        !ana.home().join("store").exists(),
        "the store is still on disk"
    );
}

/// A contact who reset their identity: the conversation shows the alert and
/// Send is refused (the text kept) until "I have checked, trust the new
/// number".
#[test]
fn a_changed_safety_number_blocks_sending_until_trusted() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    ana.add_contact("Bob", &bob);
    bob.add_contact("Ana", &ana);
    ana.ok(&["send", "Bob", "before"]);
    assert_eq!(texts(&bob.sync_json()), ["before"]);
    bob.ok(&["identity", "reset"]);

    let app = ana.app(&[]);
    let mut web = app.browser();
    let r = web.get("/contacts");
    assert_eq!(r.status, 200, "{}", r.body);
    let at =
        r.body.find(r#"href="/contacts/p"#).expect("a contact link") + r#"href="/contacts/"#.len();
    let chat = r.body[at..at + r.body[at..].find('"').expect("end")].to_string();

    // The contact page asks the relay, sees the new key, and says so.
    let r = web.get(&format!("/contacts/{chat}"));
    assert!(r.body.contains("safety number has changed"), "{}", r.body);
    assert!(r.body.contains(r#"id="safety-number""#));

    let r = web.post(&format!("/chats/{chat}"), &[("text", "must not go out")]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains(r#"role="alert""#));
    assert!(r.body.contains("safety number has changed"));
    assert!(
        r.body.contains("must not go out</textarea>"),
        "the text is kept"
    );
    assert!(
        bob.sync_json().is_empty(),
        "a blocked message was delivered"
    );

    let r = web.post(
        &format!("/contacts/{chat}/trust"),
        &[("back", &format!("/chats/{chat}"))],
    );
    assert_eq!(
        (r.status, r.location()),
        (303, format!("/chats/{chat}").as_str())
    );
    let r = web.get(&format!("/chats/{chat}"));
    assert!(!r.body.contains("safety number has changed"), "{}", r.body);
    let r = web.post(&format!("/chats/{chat}"), &[("text", "after checking")]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(texts(&bob.sync_json()), ["after checking"]);
}

/// The idle lock shows the unlock screen: the page hears it on `/events`
/// and the next request goes to `/unlock`.
#[test]
fn the_idle_lock_sends_the_page_to_unlock() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let mut app = ana.app(&[("SOTTO_LOCK_AFTER", "2s")]);
    let mut web = app.browser();
    let events = web.events();
    wait_event(&events, "state", "unlocked", WAIT);
    wait_event(&events, "state", "locked", WAIT);
    let r = web.get("/");
    assert_eq!((r.status, r.location()), (303, "/unlock"));
    let r = web.get("/unlock");
    assert!(r.body.contains(">Unlock<"), "{}", r.body);

    // Quit from the app: the page says so and the process ends cleanly.
    let r = web.post("/unlock", &[("passphrase", PASSPHRASE)]);
    assert_eq!((r.status, r.location()), (303, "/"));
    wait_event(&events, "state", "unlocked", WAIT);
    let r = web.post("/quit", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Sotto has stopped"), "{}", r.body);
    // (The process may end before the event stream says "stopped": the
    // page that asked already shows it.)
    let status = app
        .wait_exit(WAIT)
        .expect("`sotto app` still runs after Quit");
    assert!(status.success(), "{status}");
    assert!(!ana.home().join("app-url").exists(), "app-url left behind");
}

/// The app refuses a browser that did not open the printed address, and
/// the printed address works once.
#[test]
fn only_the_browser_that_opened_the_printed_address_gets_in() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let app = ana.app(&[]);
    let mut web = app.browser();
    assert_eq!(web.get("/contacts").status, 200);
    let mut stranger = Browser::new(web.addr());
    let r = stranger.get("/contacts");
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Open the address `sotto app` printed"));
    let path = app
        .url
        .split_once(&web.addr().to_string())
        .expect("our address")
        .1;
    assert_eq!(
        stranger.get(path).status,
        401,
        "the launch address works once"
    );
    assert_eq!(stranger.get("/contacts").status, 401);
}

/// A group conversation in the app: listed with its (hostile) title
/// escaped, the disappearing timer shown, live messages, and a send that
/// reaches the other member.
#[test]
fn a_group_conversation_in_the_app() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    bob.add_contact("ana", &ana);
    ana.add_contact("Bob", &bob);
    let title = "Night <b>shift</b>";
    bob.ok(&["group", "create", title]);
    bob.ok(&["group", "add", title, "ana"]);
    bob.ok(&["group", "settings", title, "--disappearing", "1h"]);

    let app = ana.app(&[]);
    let mut web = app.browser();
    let events = web.events();
    wait_event(&events, "state", "unlocked", WAIT);
    bob.ok(&["group", "send", title, "shift swap tonight?"]);
    let data = wait_event(&events, "message", r#""chat":"g"#, WAIT);
    let at = data.find(r#""chat":""#).expect("a chat") + r#""chat":""#.len();
    let chat = data[at..at + data[at..].find('"').expect("end")].to_string();
    assert!(
        !data.contains("shift swap"),
        "message text on the event stream: {data}"
    );

    let list = web.get("/");
    assert!(
        list.body.contains("Night &lt;b&gt;shift&lt;/b&gt;"),
        "{}",
        list.body
    );
    assert!(!list.body.contains("<b>shift"), "a title ran as HTML");
    let r = web.get(&format!("/chats/{chat}"));
    assert_eq!(title_of(&r.body), "Sotto – Conversation");
    assert!(r.body.contains("shift swap tonight?"), "{}", r.body);
    assert!(
        r.body.contains("disappear 1 hour after"),
        "timer shown: {}",
        r.body
    );

    let r = web.post(&format!("/chats/{chat}"), &[("text", "I can take it")]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(texts(&bob.sync_json()), ["I can take it"]);
}

/// The value of the first `name="NAME" value="..."` after `from` in `page`.
fn field_after(page: &str, from: usize, name: &str) -> String {
    let open = format!(r#"name="{name}" value=""#);
    let at = from + page[from..].find(&open).expect("the field") + open.len();
    page[at..at + page[at..].find('"').expect("end")].to_string()
}

/// Contacts in the app (safety number and QR, Mark as verified, rename,
/// remove), searching history, and deleting a message and a whole chat
/// from this computer only.
#[test]
fn contacts_search_and_deleting_in_the_app() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    ana.add_contact("Bob", &bob);
    bob.add_contact("Ana", &ana);
    bob.ok(&["send", "Ana", "first note about the manager"]);
    bob.ok(&["send", "Ana", "second: <script>x</script>"]);

    let app = ana.app(&[]);
    let mut web = app.browser();
    let r = web.get("/contacts");
    let at =
        r.body.find(r#"href="/contacts/p"#).expect("a contact link") + r#"href="/contacts/"#.len();
    let id = r.body[at..at + r.body[at..].find('"').expect("end")].to_string();

    let r = web.get(&format!("/contacts/{id}"));
    let digits = text_of(&r.body, "safety-number");
    assert_eq!(digits.split(' ').count(), 12, "{digits}");
    assert!(digits.chars().all(|c| c.is_ascii_digit() || c == ' '));
    assert!(
        r.body
            .contains(r#"aria-label="QR code of the safety number""#)
    );
    assert!(r.body.contains(">Mark as verified<"));
    let r = web.post(&format!("/contacts/{id}/verify"), &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    let r = web.get(&format!("/contacts/{id}"));
    assert!(r.body.contains("Verified"), "{}", r.body);
    assert!(!r.body.contains(">Mark as verified<"));

    let r = web.post(&format!("/contacts/{id}/rename"), &[("name", "Rob\nert")]);
    assert_eq!(
        r.status, 422,
        "a line break in a name is refused: {}",
        r.body
    );
    let r = web.post(&format!("/contacts/{id}/rename"), &[("name", "Robert")]);
    assert_eq!(
        (r.status, r.location()),
        (303, format!("/contacts/{id}").as_str())
    );
    assert!(web.get("/contacts").body.contains("Robert"));

    // Search is local, posts its term, and finds only what matches.
    let r = web.post("/search", &[("q", "MANAGER")]);
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("first note about the manager"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("second:"), "{}", r.body);

    // Delete one message here; the other stays, and Bob keeps his.
    let r = web.get(&format!("/chats/{id}"));
    let first = r
        .body
        .find("first note about the manager")
        .expect("the message");
    let li = r.body[..first].rfind(r#"id="m-"#).expect("its item");
    let message = field_after(&r.body, li, "message");
    let peer = field_after(&r.body, li, "peer");
    let r = web.post(
        &format!("/chats/{id}/delete"),
        &[("message", &message), ("peer", &peer)],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        texts(&ana.history_json("Robert")),
        ["second: <script>x</script>"]
    );
    // The whole chat.
    assert!(
        web.get(&format!("/chats/{id}/clear"))
            .body
            .contains(">Delete chat<")
    );
    let r = web.post(&format!("/chats/{id}/clear"), &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(ana.history_json("Robert").is_empty());
    assert_eq!(texts(&bob.history_json("Ana")).len(), 2, "Bob keeps his");

    let r = web.post(&format!("/contacts/{id}/remove"), &[]);
    assert_eq!((r.status, r.location()), (303, "/contacts"));
    assert!(!web.get("/contacts").body.contains("Robert"));
}

/// Someone who is not a contact writes: their chat is listed as not a
/// contact with the name they chose, there is no Send until the user adds
/// them, and adding them keeps the same chat.
#[test]
fn a_message_from_a_stranger_shows_and_adding_them_allows_replies() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    bob.add_contact("Ana", &ana);
    let app = ana.app(&[]);
    let mut web = app.browser();
    let events = web.events();
    wait_event(&events, "state", "unlocked", WAIT);
    bob.ok(&["send", "Ana", "hi, we met at the union meeting"]);
    let data = wait_event(&events, "message", r#""chat":"p"#, WAIT);
    let at = data.find(r#""chat":""#).expect("a chat") + r#""chat":""#.len();
    let chat = data[at..at + data[at..].find('"').expect("end")].to_string();

    let list = web.get("/");
    assert!(list.body.contains("Not a contact"), "{}", list.body);
    let r = web.get(&format!("/chats/{chat}"));
    assert!(
        r.body.contains("hi, we met at the union meeting"),
        "{}",
        r.body
    );
    assert!(r.body.contains("Not in your contacts"));
    assert!(!r.body.contains(">Send<"), "no Send before adding them");

    let r = web.post("/contacts", &[("name", "Bob"), ("code", &bob.code())]);
    assert_eq!(
        (r.status, r.location()),
        (303, format!("/contacts/{chat}").as_str())
    );
    let r = web.get(&format!("/chats/{chat}"));
    assert!(r.body.contains(">Send<"), "{}", r.body);
    assert!(
        r.body.contains("hi, we met at the union meeting"),
        "history kept"
    );
    let r = web.post(&format!("/chats/{chat}"), &[("text", "yes, hello")]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(texts(&bob.sync_json()), ["yes, hello"]);
}

/// `sotto app LINK` with a group's join link: the chats screen offers it,
/// "Ask to join" sends the request (the admin sees it), and after approval
/// the group's messages reach the app.
#[test]
fn opening_the_app_with_a_group_link_offers_to_join() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann");
    ann.ok(&["group", "create", "Staff"]);
    ann.ok(&["group", "settings", "Staff", "--approval", "on"]);
    let link = ann.ok(&["group", "link", "Staff"]).trim().to_string();
    let ana = User::new(&relay, "Ana");
    let app = ana.app_with(&[&link], &[]);
    let mut web = app.browser();
    assert!(
        !app.url.contains("group"),
        "the link stays out of the address"
    );
    let r = web.get("/");
    assert!(r.body.contains("A link to join a group"), "{}", r.body);
    assert!(
        !r.body.contains(&link),
        "the link's secret is not in the page"
    );
    let r = web.post("/join-link", &[("ask", "yes")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Your request was sent"), "{}", r.body);
    assert!(
        !web.get("/").body.contains("A link to join a group"),
        "offered once"
    );
    let requests = ann.ok(&["group", "requests", "Staff", "--json"]);
    assert!(requests.contains("Ana"), "{requests}");

    let events = web.events();
    wait_event(&events, "state", "unlocked", WAIT);
    ann.ok(&["group", "approve", "Staff", "Ana"]);
    ann.ok(&["group", "send", "Staff", "welcome Ana"]);
    wait_event(&events, "message", r#""chat":"g"#, WAIT);
    assert!(web.get("/").body.contains("Staff"));
}

/// With the relay down, a message sent in the app is kept and shown as
/// "Queued" with the reason; when the relay is back it goes out by itself.
#[test]
fn a_message_sent_while_the_relay_is_down_shows_queued() {
    let mut relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    ana.add_contact("Bob", &bob);
    bob.add_contact("Ana", &ana);
    ana.ok(&["send", "Bob", "first"]);
    assert_eq!(texts(&bob.sync_json()), ["first"]);
    let app = ana.app(&[]);
    let mut web = app.browser();
    let r = web.get("/contacts");
    let at =
        r.body.find(r#"href="/contacts/p"#).expect("a contact link") + r#"href="/contacts/"#.len();
    let chat = r.body[at..at + r.body[at..].find('"').expect("end")].to_string();

    relay.kill9();
    let r = web.post(&format!("/chats/{chat}"), &[("text", "while it is down")]);
    assert_eq!(r.status, 303, "kept, not refused: {}", r.body);
    let r = web.get(&format!("/chats/{chat}"));
    let at = r
        .body
        .find("while it is down")
        .expect("the message is shown");
    let status = &r.body[at..];
    assert!(status.contains(">Queued"), "{status}");
    assert!(status.contains("it goes out by itself"), "{status}");

    relay.restart();
    let deadline = std::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.is_empty() && std::time::Instant::now() < deadline {
        got = texts(&bob.sync_json());
    }
    assert_eq!(got, ["while it is down"]);
    // What the page reloads (app.js does while a message is queued) says
    // Sent once the relay's answer is stored (it may trail Bob's fetch).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = web.request(
            "GET",
            &format!("/chats/{chat}/messages"),
            &[("HX-Request", "true")],
            None,
        );
        let at = r
            .body
            .find("while it is down")
            .expect("the message is shown");
        if r.body[at..].contains(">Sent<") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not Sent: {}",
            &r.body[at..]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The idle lock's time set in Settings applies at once (a wrong value is
/// refused and changes nothing).
#[test]
fn the_idle_lock_time_is_set_in_settings() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let app = ana.app(&[("SOTTO_LOCK_AFTER", "1h")]);
    let mut web = app.browser();
    let events = web.events();
    wait_event(&events, "state", "unlocked", WAIT);
    let r = web.get("/settings");
    assert!(r.body.contains(r#"value="1h""#), "{}", r.body);
    let r = web.post("/settings", &[("lock_after", "soon")]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("not a duration"), "{}", r.body);
    assert!(
        web.get("/settings").body.contains(r#"value="1h""#),
        "unchanged"
    );
    let r = web.post("/settings", &[("lock_after", "2s")]);
    assert_eq!((r.status, r.location()), (303, "/settings"));
    wait_event(&events, "state", "locked", WAIT);
    assert_eq!(web.get("/").location(), "/unlock");
}

/// What the page reloads by itself after events (the conversation and the
/// chat list) is not use: a busy chat does not keep an unattended app open.
#[test]
fn reloads_after_events_do_not_postpone_the_idle_lock() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    ana.add_contact("Bob", &bob);
    bob.add_contact("Ana", &ana);
    let app = ana.app(&[("SOTTO_LOCK_AFTER", "3s")]);
    let mut web = app.browser();
    let r = web.get("/contacts");
    let at =
        r.body.find(r#"href="/contacts/p"#).expect("a contact link") + r#"href="/contacts/"#.len();
    let chat = r.body[at..at + r.body[at..].find('"').expect("end")].to_string();
    let started = std::time::Instant::now();
    let mut reloads = 0;
    loop {
        // Messages keep coming, and the page reloads as app.js does.
        bob.ok(&["send", "Ana", "ping"]);
        let htmx = [("HX-Request", "true")];
        let r = web.request("GET", &format!("/chats/{chat}/messages"), &htmx, None);
        web.request("GET", "/fragments/chats", &htmx, None);
        if r.header("hx-redirect") == Some("/unlock") {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        reloads += 1;
        assert!(
            started.elapsed() < WAIT,
            "still unlocked after {reloads} reloads in {:?}",
            started.elapsed()
        );
    }
    assert!(reloads > 0, "the loop never reloaded while unlocked");
}

/// A person who closed the browser runs `sotto app` again: while the app
/// runs it prints a fresh address that works once; used ones stay dead.
#[test]
fn running_sotto_app_again_prints_a_fresh_address() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let app = ana.app(&[]);
    let mut first = app.browser();
    assert_eq!(first.get("/contacts").status, 200);
    let out = ana.ok(&["app", "--no-browser"]);
    let url = out
        .lines()
        .rfind(|l| l.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address printed: {out}"))
        .trim()
        .to_string();
    assert_ne!(url, app.url, "the used address was printed again");
    let mut second = Browser::launch(&url);
    assert_eq!(second.get("/contacts").status, 200);
    let path = url
        .split_once(&second.addr().to_string())
        .expect("our address")
        .1;
    assert_eq!(
        Browser::new(second.addr()).get(path).status,
        401,
        "works once"
    );
    assert_eq!(
        first.get("/contacts").status,
        200,
        "the first browser still works"
    );
}

/// The opaque id of the first contact's chat, from the contacts page.
fn first_contact(web: &mut Browser) -> String {
    let r = web.get("/contacts");
    let at =
        r.body.find(r#"href="/contacts/p"#).expect("a contact link") + r#"href="/contacts/"#.len();
    r.body[at..at + r.body[at..].find('"').expect("end")].to_string()
}

/// Posts the delete form of the message whose text is `text`; returns the
/// page the redirect leads to.
fn delete_message(web: &mut Browser, chat: &str, text: &str) -> String {
    let page = web.get(&format!("/chats/{chat}")).body;
    let at = page
        .find(text)
        .unwrap_or_else(|| panic!("{text:?} not shown: {page}"));
    let li = page[..at].rfind(r#"id="m-"#).expect("its item");
    let message = field_after(&page, li, "message");
    let peer = field_after(&page, li, "peer");
    let r = web.post(
        &format!("/chats/{chat}/delete"),
        &[("message", &message), ("peer", &peer)],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r.location().to_string();
    web.get(&location).body
}

/// Deleting a message that is still queued (the relay is down) cancels it,
/// as in Signal or WhatsApp: the page says so and it never reaches Bob once
/// the relay is back. Deleting a sent one says it went from this computer
/// only.
#[test]
fn deleting_a_queued_message_cancels_it() {
    let mut relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    ana.add_contact("Bob", &bob);
    bob.add_contact("Ana", &ana);
    let app = ana.app(&[]);
    let mut web = app.browser();
    let chat = first_contact(&mut web);
    let r = web.post(&format!("/chats/{chat}"), &[("text", "sent one")]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(texts(&bob.sync_json()), ["sent one"]);

    relay.kill9();
    let r = web.post(&format!("/chats/{chat}"), &[("text", "never mind")]);
    assert_eq!(r.status, 303, "kept, not refused: {}", r.body);
    let page = delete_message(&mut web, &chat, "never mind");
    assert!(page.contains("it will not be sent"), "{page}");
    assert!(!page.contains("never mind"), "{page}");

    relay.restart();
    let r = web.post(&format!("/chats/{chat}"), &[("text", "after")]);
    assert_eq!(r.status, 303, "{}", r.body);
    // The outbox goes oldest first: a deleted message left in it would
    // reach Bob before "after".
    let deadline = std::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.is_empty() && std::time::Instant::now() < deadline {
        got = texts(&bob.sync_json());
    }
    assert_eq!(got, ["after"]);

    let page = delete_message(&mut web, &chat, "sent one");
    assert!(page.contains("deleted from this computer only"), "{page}");
    assert!(!page.contains("it will not be sent"), "{page}");
    assert_eq!(texts(&bob.history_json("Ana")), ["sent one", "after"]);
}

/// Where each name is in the chat list (`None`: not listed).
fn list_order(list: &str, names: &[&str]) -> Vec<usize> {
    let mut at: Vec<(usize, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let pos = list
                .find(&format!(">{n}<"))
                .unwrap_or_else(|| panic!("{n} not listed: {list}"));
            (pos, i)
        })
        .collect();
    at.sort();
    at.into_iter().map(|(_, i)| i).collect()
}

/// The chat list puts the conversation with the newest message first (as
/// Signal and WhatsApp do), chats without messages last, by name; a new
/// message moves its chat up.
#[test]
fn the_chat_list_puts_the_latest_conversation_first() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let bob = User::new(&relay, "Bob");
    let zed = User::new(&relay, "Zed");
    let cleo = User::new(&relay, "Cleo");
    let dan = User::new(&relay, "Dan");
    for (name, u) in [("Bob", &bob), ("Zed", &zed), ("Cleo", &cleo), ("Dan", &dan)] {
        ana.add_contact(name, u);
        u.add_contact("Ana", &ana);
    }
    bob.ok(&["send", "Ana", "from Bob"]);
    ana.ok(&["sync"]);
    zed.ok(&["send", "Ana", "from Zed"]);
    ana.ok(&["sync"]);
    let names = ["Bob", "Cleo", "Dan", "Zed"];
    let app = ana.app(&[]);
    let mut web = app.browser();
    let home = web.get("/").body;
    // Zed, Bob, then Cleo and Dan (no messages) by name.
    assert_eq!(list_order(&home, &names), [3, 0, 1, 2], "{home}");

    bob.ok(&["send", "Ana", "Bob again"]);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let list = web
            .request("GET", "/fragments/chats", &[("HX-Request", "true")], None)
            .body;
        if list_order(&list, &names) == [0, 3, 1, 2] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Bob's new message did not move his chat up: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The notification wording and the idle-lock time set in the app are kept
/// in the profile: the next start has them.
#[test]
fn app_settings_survive_a_restart() {
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let app = ana.app(&[]);
    let mut web = app.browser();
    let r = web.post(
        "/settings",
        &[("lock_after", "45m"), ("notify_names", "on")],
    );
    assert_eq!((r.status, r.location()), (303, "/settings"));
    app.stop();

    let app = ana.app(&[]);
    let mut web = app.browser();
    let page = web.get("/settings").body;
    assert!(page.contains(r#"value="45m""#), "{page}");
    let at = page.find(r#"id="notify_names""#).expect("the checkbox");
    let tag = &page[at..at + page[at..].find('>').expect("tag end")];
    assert!(tag.contains("checked"), "{tag}");
    // Turned off again, it stays off.
    let r = web.post("/settings", &[("lock_after", "45m")]);
    assert_eq!(r.status, 303, "{}", r.body);
    app.stop();
    let app = ana.app(&[]);
    let page = app.browser().get("/settings").body;
    let at = page.find(r#"id="notify_names""#).expect("the checkbox");
    let tag = &page[at..at + page[at..].find('>').expect("tag end")];
    assert!(!tag.contains("checked"), "{tag}");
}

/// A second `sotto app` for a running profile opens the browser on the
/// fresh address (through the private redirect file, as the first start
/// does), unless --no-browser.
#[test]
fn running_sotto_app_again_opens_the_browser() {
    use std::os::unix::fs::PermissionsExt as _;
    let relay = Relay::start();
    let ana = User::new(&relay, "Ana");
    let app = ana.app(&[]);
    // A stand-in for xdg-open that writes down what it was asked to open.
    let bin = tempfile::tempdir().expect("test setup");
    let opened = bin.path().join("opened");
    let script = bin.path().join("xdg-open");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '%s' \"$1\" > \"$OPENED.tmp\" && mv \"$OPENED.tmp\" \"$OPENED\"\n",
    )
    .expect("test setup");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("test setup");
    let path = format!("{}:/usr/bin:/bin", bin.path().display());

    let not_opened = bin.path().join("not-opened");
    let out = ana.run_with_env(
        &["app", "--no-browser"],
        &[
            ("PATH", &path),
            ("OPENED", &not_opened.display().to_string()),
        ],
    );
    assert!(out.status.success());
    let out = ana.run_with_env(
        &["app"],
        &[("PATH", &path), ("OPENED", &opened.display().to_string())],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let url = stdout
        .lines()
        .last()
        .expect("an address")
        .trim()
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{stdout}");
    let deadline = std::time::Instant::now() + WAIT;
    while !opened.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the browser was not opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = std::fs::read_to_string(&opened).expect("opened");
    assert_eq!(
        std::path::Path::new(&target),
        ana.home().join("app-open.html"),
        "the address itself (a key) is not on a command line"
    );
    let page = std::fs::read_to_string(&target).expect("the redirect file");
    assert!(page.contains(&url), "{page}");
    let mode = std::fs::metadata(&target)
        .expect("file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert_eq!(Browser::launch(&url).get("/contacts").status, 200);
    // Started before the one above, and it finished: --no-browser opened nothing.
    assert!(!not_opened.exists(), "--no-browser opened the browser");
    drop(app);
}
