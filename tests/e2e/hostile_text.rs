//! Names, titles and texts that try to impersonate someone: a modified app
//! (the engine driven directly, its checks off) sends line breaks, escape
//! sequences, carriage returns, backspaces and a right-to-left override in
//! every field others see, and the victim's real `sotto` must show none of
//! them raw; an honest `sotto` refuses to send them at all.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sotto_client::engine::{Engine, WarningInput};
use sotto_client::safe;
use sotto_tests::{PASSPHRASE, Relay, User, describe};

/// A line that, printed raw, reads as a real message from rosa.
const FORGED: &str = "[2026-12-03 15:01] rosa: URGENT everyone send me your notes";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Escape sequences (clear screen, cursor home, erase line, window title),
/// backspaces, a carriage return and a right-to-left override, then the
/// forged line on a line of its own.
fn hostile(start: &str) -> String {
    format!("\u{1b}[2J\u{1b}[H{start}\u{8}\u{8}\r\u{1b}[2K\u{1b}]0;pwned\u{7}\u{202E}\n{FORGED}")
}

/// What a terminal would show must hold no control or text-direction
/// character, and no line may start as the forged one does.
fn assert_safe(what: &str, out: &str) {
    for (i, line) in out.lines().enumerate() {
        let bad: Vec<String> = line
            .chars()
            .filter(|c| safe::is_unsafe(*c))
            .map(|c| format!("U+{:04X}", u32::from(c)))
            .collect();
        assert!(
            bad.is_empty(),
            "{what}, line {i} shows {bad:?} raw: {line:?}"
        );
        assert!(
            !line.starts_with("[2026-12-03 15:01]"),
            "{what}, line {i} is a forged line: {line:?}\n{out}"
        );
    }
    assert!(!out.contains('\r'), "{what} has a carriage return: {out:?}");
}

/// stdout and stderr of a command that must succeed.
fn shown(u: &User, args: &[&str]) -> String {
    let out = u.run(args);
    assert!(
        out.status.success(),
        "`sotto {}` failed\n{}",
        args.join(" "),
        describe(&out)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn nothing_a_hostile_member_sends_reaches_the_terminal_raw() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann");
    let eve = User::new(&relay, "Eve");
    eve.add_contact("ann", &ann);
    let eve_code = eve.code();
    // Ann's group, which Eve asks to join under her hostile name.
    ann.ok(&["group", "create", "Staff"]);
    ann.ok(&["group", "settings", "Staff", "--approval", "on"]);
    let link = ann.ok(&["group", "link", "Staff"]).trim().to_string();

    let name = hostile("Eve");
    let title = hostile("Night shift 🌙");
    let text = format!("hello{}", hostile(""));
    let eve_group = runtime().block_on(async {
        let mut engine = Engine::open(eve.home(), PASSPHRASE).expect("open");
        engine.danger_skip_checks();
        engine.danger_set_name(&name).await.expect("name");
        engine.send_text("ann", &text).await.expect("1:1 message");
        engine.group_join(&link).await.expect("join request");
        // Eve's own group: its title, a post and a warning.
        let g = engine.group_create(&title).await.expect("group");
        let q = g.id[..8].to_string();
        engine
            .group_add(&q, &["ann".to_string()])
            .await
            .expect("add ann");
        engine.group_send(&q, &text).await.expect("group post");
        engine
            .warn(
                &q,
                WarningInput {
                    subject: hostile("Sir John Smith"),
                    role: hostile("MP"),
                    kind: "harassment".into(),
                    firsthand: true,
                    place: hostile("office"),
                    when: "2024-03".into(),
                    advice: hostile("run"),
                    text: text.clone(),
                },
            )
            .await
            .expect("warning");
        engine.close().await;
        q
    });

    // Ann's app: the request, the sync, then every view of it.
    let requests = shown(&ann, &["group", "requests", "Staff"]);
    assert_safe("group requests", &requests);
    assert!(requests.contains("~"), "{requests}");
    let sync = shown(&ann, &["sync"]);
    assert_safe("sync", &sync);
    // Eve's text is there, made visible, not dropped.
    assert!(sync.contains("rosa: URGENT everyone"), "{sync}");
    ann.ok(&["group", "approve", "Staff", &eve_code]);
    for args in [
        vec!["group", "members", "Staff"],
        vec!["group", "log", "Staff"],
        vec!["group", "members", eve_group.as_str()],
        vec!["group", "log", eve_group.as_str()],
        vec!["history", eve_group.as_str()],
        vec!["groups"],
        vec!["warnings"],
    ] {
        let out = shown(&ann, &args);
        assert_safe(&args.join(" "), &out);
        assert!(!out.trim().is_empty(), "{} shows nothing", args.join(" "));
    }
    let warnings = shown(&ann, &["warnings"]);
    assert!(warnings.contains("Sir John Smith"), "{warnings}");

    // `listen`: Eve's next message arrives while Ann's app is connected.
    let mut listener = ann
        .command()
        .arg("listen")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sotto listen");
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(listener.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(listener.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    // Sent whether or not the listener is connected yet: it fetches what
    // waits in Ann's mailbox when it connects.
    let second = format!("second{}", hostile(""));
    runtime().block_on(async {
        let mut engine = Engine::open(eve.home(), PASSPHRASE).expect("open");
        engine.danger_skip_checks();
        engine.send_text("ann", &second).await.expect("sent");
        engine.close().await;
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains("second") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => break,
        }
    }
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(seen.contains("second"), "listen never showed it: {seen:?}");
    assert_safe("listen", &seen);

    // History finds the stranger (not a contact) by their contact code.
    let history = shown(&ann, &["history", &eve_code]);
    assert_safe("history", &history);
    assert!(history.contains("second"), "{history}");
}

#[test]
fn honest_apps_refuse_control_characters_and_over_long_fields_at_the_source() {
    let relay = Relay::start();
    let forged = format!("Eve\n{FORGED}");
    let nobody = User::uninitialised("nobody");
    let err = nobody.fails(&["init", "--invite", &relay.invite(1), "--name", &forged]);
    assert!(err.contains("a display name contains a control"), "{err}");
    let ann = User::new(&relay, "Ann");
    let bob = User::new(&relay, "Bob");
    let bob_code = bob.code();
    for (args, expected) in [
        (
            vec!["contact", "add", "bob\u{1b}[2J", bob_code.as_str()],
            "a contact name contains a control",
        ),
        (
            vec!["group", "create", "Staff\u{202E}"],
            "a group title contains a control or text-direction character (U+202E)",
        ),
    ] {
        let err = ann.fails(&args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let long = "x".repeat(safe::MAX_TITLE_CHARS + 1);
    let err = ann.fails(&["group", "create", &long]);
    assert!(err.contains("too long"), "{err}");
    ann.add_contact("bob", &bob);
    ann.ok(&["group", "create", "Staff"]);
    let err = ann.fails(&["send", "bob", "hi\rEve: bye"]);
    assert!(err.contains("a message contains a control"), "{err}");
    let err = ann.fails(&["group", "send", "Staff", "hi\u{8}\u{8}"]);
    assert!(err.contains("a message contains a control"), "{err}");
    let err = ann.fails(&["warn", "Staff", "--about", &forged, "--kind", "bullying"]);
    assert!(err.contains("--about contains a control"), "{err}");
    // Line breaks and tabs are fine in a message.
    ann.ok(&["send", "bob", "line one\n\tline two"]);
    let got = bob.sync_json();
    assert_eq!(got[0]["text"], "line one\n\tline two");
}
