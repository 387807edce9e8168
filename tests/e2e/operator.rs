//! The relay operator's commands, driven through the real `sotto-relay` and
//! `sotto` binaries: backup and restore while messages flow, the expiry sweep,
//! invites (create, list, revoke), stats, account ban/unban/remove and
//! `check-config`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sotto_tests::{Relay, User, binary, describe, files, run_with_timeout, texts};

/// `sotto-relay ARGS --data-dir DIR`, with no `SOTTO_RELAY_*` variable from
/// the test's own environment and the given ones added.
fn operator_cmd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary("sotto-relay"));
    cmd.args(args).arg("--data-dir").arg(dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SOTTO_RELAY_") {
            cmd.env_remove(key);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn operator_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    run_with_timeout(
        &mut operator_cmd(dir, args, env),
        &format!("sotto-relay {}", args.join(" ")),
    )
}

/// Runs an operator command, asserts it succeeded, returns its stdout.
fn operator_ok(dir: &Path, args: &[&str]) -> String {
    let out = operator_env(dir, args, &[]);
    assert!(
        out.status.success(),
        "`sotto-relay {}` failed\n{}",
        args.join(" "),
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an operator command, asserts it failed, returns stderr and stdout.
fn operator_fails(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = operator_env(dir, args, env);
    assert!(
        !out.status.success(),
        "`sotto-relay {}` should have failed\n{}",
        args.join(" "),
        describe(&out)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// `sotto-relay stats --json`, parsed.
fn stats(dir: &Path) -> serde_json::Value {
    let out = operator_ok(dir, &["stats", "--json"]);
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("`stats --json` is not one JSON object ({e}): {out:?}"))
}

/// One counter from `stats --json`.
fn stat(dir: &Path, field: &str) -> u64 {
    let s = stats(dir);
    s[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`stats --json` has no number {field:?}: {s}"))
}

/// Calls `probe` every 200 ms until it returns true or `limit` passes.
fn eventually(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Syncs until a sync brings nothing, and returns every text received.
fn sync_until_empty(user: &User) -> Vec<String> {
    let mut all = Vec::new();
    for _ in 0..20 {
        let got = texts(&user.sync_json());
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
    panic!(
        "{} still received messages after 20 syncs: {all:?}",
        user.name
    );
}

/// A running `sotto listen`, killed when dropped.
struct Listener {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Listener {
    fn start(user: &User) -> Listener {
        let mut child = user
            .command()
            .args(["listen", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sotto listen");
        let mut pipe = child.stderr.take().expect("piped stderr");
        let (tx, stderr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        Listener { child, stderr }
    }

    /// Waits up to `limit` for the listener to exit; its status and stderr.
    fn exit_within(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, String)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let text = self
                    .stderr
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_default();
                return Some((status, text));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Listener {
    /// Stops the listener the way Ctrl-C would (SIGTERM), so it closes its
    /// connection instead of leaving the relay to time it out.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        assert!(
            self.exit_within(Duration::from_secs(10)).is_some(),
            "`sotto listen` did not stop within 10 s of SIGTERM"
        );
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last non-empty line of `invite create`'s output: the link.
fn link_of(out: &str) -> String {
    let link = out
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string();
    assert!(
        link.starts_with("sotto://join?"),
        "the last line of `invite create` is not a link: {out:?}"
    );
    link
}

/// A message numbered so the receiving side can tell exactly which arrived.
fn numbered(i: usize) -> String {
    format!("numbered message {i:02}")
}

#[test]
fn backup_while_messages_flow_restores_every_acknowledged_message() {
    const TOTAL: usize = 30;
    let mut relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    let dir = relay.data_dir();
    let backups = tempfile::tempdir().expect("temp dir for the backup");
    let file = backups.path().join("relay-backup.bin");

    // Indices of messages the relay acknowledged (`sotto send` exited 0),
    // and how many sends had started.
    let acked = Mutex::new(Vec::<usize>::new());
    let started = AtomicUsize::new(0);
    let (acked_before, started_after, backup_out, failures) = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut failures = Vec::new();
            for i in 0..TOTAL {
                started.store(i + 1, Ordering::SeqCst);
                let out = alice.run(&["send", "bob", &numbered(i)]);
                if out.status.success() {
                    acked.lock().expect("lock").push(i);
                } else {
                    failures.push(format!("message {i}: {}", describe(&out)));
                }
            }
            failures
        });
        let third = eventually(Duration::from_secs(30), || {
            acked.lock().expect("lock").len() >= TOTAL / 3 || sender.is_finished()
        });
        let acked_before = acked.lock().expect("lock").clone();
        assert!(
            third && acked_before.len() >= TOTAL / 3 && acked_before.len() < TOTAL,
            "the backup should start after a third and before all of the {TOTAL} sends were \
             acknowledged; acknowledged then: {}",
            acked_before.len()
        );
        let file_arg = file.to_str().expect("utf-8 temp path");
        let backup_out = operator_env(&dir, &["backup", "--to", file_arg], &[]);
        // Sends that start from here on begin after the backup file is complete.
        let started_after = started.load(Ordering::SeqCst);
        let failures = sender.join().expect("the sender thread panicked");
        (acked_before, started_after, backup_out, failures)
    });
    assert!(
        backup_out.status.success(),
        "`sotto-relay backup` failed while messages flowed\n{}",
        describe(&backup_out)
    );
    assert!(
        failures.is_empty(),
        "sends failed while the backup ran:\n{}",
        failures.join("\n")
    );
    let acked_total = acked.lock().expect("lock").len();
    assert!(
        started_after < TOTAL,
        "all {TOTAL} sends had started before the backup finished, so the test cannot tell \
         the restored relay from the original"
    );
    let mode = std::fs::metadata(&file)
        .expect("the backup file exists")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the backup holds the relay's private keys, so it must be mode 0600, not {:o}",
        mode & 0o777
    );

    // Rebuild the relay from the backup in a fresh directory and put it in
    // the original's place, so clients keep their address and pin.
    relay.kill9();
    let parent = dir.parent().expect("the data dir has a parent");
    let fresh = parent.join("restored");
    let file_arg = file.to_str().expect("utf-8 temp path");
    let restored = operator_ok(&fresh, &["restore", "--from", file_arg]);
    assert!(restored.contains("Restored"), "{restored}");
    let in_backup = stat(&fresh, "queued_envelopes");
    std::fs::remove_dir_all(&dir).expect("remove the original data dir");
    std::fs::rename(&fresh, &dir).expect("move the restored relay into place");
    relay.restart();

    let got = sync_until_empty(&bob);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for text in &got {
        *counts.entry(text.clone()).or_default() += 1;
    }
    println!(
        "backup under load: sent {TOTAL}, acknowledged {acked_total}, acknowledged before \
         the backup {}, envelopes in the backup {in_backup}, delivered after restore {}",
        acked_before.len(),
        got.len()
    );
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let missing: Vec<usize> = acked_before
        .iter()
        .copied()
        .filter(|i| !counts.contains_key(&numbered(*i)))
        .collect();
    assert!(
        missing.is_empty(),
        "messages acknowledged before the backup started are missing after the restore: \
         {missing:?} (delivered: {got:?})"
    );
    let unknown: Vec<&String> = got
        .iter()
        .filter(|t| !(0..TOTAL).any(|i| numbered(i) == **t))
        .collect();
    assert!(unknown.is_empty(), "unexpected messages: {unknown:?}");
    let too_new: Vec<usize> = (started_after..TOTAL)
        .filter(|i| counts.contains_key(&numbered(*i)))
        .collect();
    assert!(
        too_new.is_empty(),
        "messages sent after the backup finished came back, so this is not the restored \
         relay: {too_new:?}"
    );
    assert_eq!(
        got.len() as u64,
        in_backup,
        "each envelope in the backup should be delivered exactly once: {got:?}"
    );

    // The restored relay takes new messages too.
    alice.ok(&["send", "bob", "after the restore"]);
    assert_eq!(sync_until_empty(&bob), ["after the restore"]);
}

#[test]
fn expiry_sweep_deletes_undelivered_envelopes() {
    let relay = Relay::start_with_env(&[
        ("SOTTO_RELAY_ENVELOPE_TTL", "2s"),
        ("SOTTO_RELAY_SWEEP_INTERVAL", "1s"),
    ]);
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    let dir = relay.data_dir();

    alice.ok(&["send", "bob", "this one expires unread"]);
    assert_eq!(
        stat(&dir, "queued_envelopes"),
        1,
        "the message waits in Bob's mailbox"
    );
    let mut last = 1;
    let swept = eventually(Duration::from_secs(10), || {
        last = stat(&dir, "queued_envelopes");
        last == 0
    });
    assert!(
        swept,
        "an envelope older than envelope_ttl (2s) is still queued 10 s later (queued: {last})"
    );
    let got = sync_until_empty(&bob);
    assert!(got.is_empty(), "an expired message was delivered: {got:?}");

    alice.ok(&["send", "bob", "sent after the sweep"]);
    assert_eq!(
        texts(&bob.sync_json()),
        ["sent after the sweep"],
        "a fresh message is delivered normally after a sweep"
    );
    assert_eq!(stat(&dir, "queued_envelopes"), 0);
}

#[test]
fn invites_can_be_listed_and_revoked() {
    let relay = Relay::start();
    let dir = relay.data_dir();
    let created = operator_ok(
        &dir,
        &["invite", "create", "--uses", "2", "--expires", "1h"],
    );
    let link = link_of(&created);
    let token = link
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("token="))
        .unwrap_or_else(|| panic!("no token in {link}"))
        .to_string();
    assert!(token.len() >= 16, "a suspiciously short token: {token}");

    let listed_json = |what: &str| -> Vec<serde_json::Value> {
        let out = operator_ok(&dir, &["invite", "list", "--json"]);
        assert!(
            !out.contains(&token) && !out.contains("sotto://"),
            "`invite list --json` reveals the link ({what}): {out}"
        );
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("`invite list --json` is not a JSON array ({e}): {out}"))
    };
    let before = listed_json("fresh");
    assert_eq!(before.len(), 1, "exactly the new invite: {before:?}");
    let id = before[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {before:?}"))
        .to_string();
    assert_eq!(before[0]["uses_left"], 2, "{before:?}");
    let expires = before[0]["expires_at_ms"].as_u64().expect("expires_at_ms");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    assert!(
        expires > now_ms + 55 * 60_000 && expires <= now_ms + 60 * 60_000 + 5_000,
        "--expires 1h should expire in about an hour: {expires} vs now {now_ms}"
    );
    let table = operator_ok(&dir, &["invite", "list"]);
    assert!(
        !table.contains(&token) && !table.contains("sotto://"),
        "`invite list` reveals the link: {table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("`invite list` has no row for {id}:\n{table}"));
    assert_eq!(
        row.split_whitespace().nth(1),
        Some("2"),
        "2 uses left: {row:?}"
    );

    // One registration uses one of the two.
    let carol = User::with_invite(&link, "Carol");
    let after = listed_json("after one use");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], id.as_str());
    assert_eq!(after[0]["uses_left"], 1, "one use left: {after:?}");

    // Revoke by a prefix of the id.
    let revoked = operator_ok(&dir, &["invite", "revoke", &id[..6]]);
    assert!(
        revoked.contains(&id) && revoked.contains("no longer works"),
        "{revoked}"
    );
    assert!(listed_json("after revoke").is_empty());
    let table = operator_ok(&dir, &["invite", "list"]);
    assert!(table.contains("No usable invites"), "{table}");
    let again = operator_fails(&dir, &["invite", "revoke", &id], &[]);
    assert!(
        again.contains("no invite with id") && again.contains("invite list"),
        "{again}"
    );

    let dave = User::uninitialised("Dave");
    let err = dave.fails(&["init", "--invite", &link, "--name", "Dave"]);
    assert!(
        err.contains("this invite is unknown, used up or expired")
            && err.contains("ask the relay operator for a new invite"),
        "a revoked link should fail with a clear message:\n{err}"
    );
    // Members who joined with it are unaffected.
    carol.ok(&["sync"]);
}

#[test]
fn stats_report_counts_without_content() {
    let relay = Relay::start();
    let dir = relay.data_dir();
    let empty = stats(&dir);
    for field in [
        "accounts",
        "devices",
        "queued_envelopes",
        "groups",
        "disk_bytes",
        "connections",
    ] {
        assert!(
            empty[field].is_u64(),
            "`stats --json` has no number {field:?}: {empty}"
        );
    }
    assert_eq!(empty["accounts"], 0, "{empty}");
    assert_eq!(empty["queued_envelopes"], 0, "{empty}");

    let names = [
        "Quokka-Display-Alice-3141",
        "Narwhal-Display-Bob-2718",
        "Axolotl-Display-Carol-1618",
    ];
    let alice = User::new(&relay, names[0]);
    let bob = User::new(&relay, names[1]);
    let carol = User::new(&relay, names[2]);
    alice.add_contact("contact-Periwinkle", &bob);
    carol.add_contact("contact-Marmalade", &bob);
    let secrets = [
        "secret-text-Zanzibar one",
        "secret-text-Kilimanjaro two",
        "secret-text-Timbuktu three",
    ];
    alice.ok(&["send", "contact-Periwinkle", secrets[0]]);
    alice.ok(&["send", "contact-Periwinkle", secrets[1]]);
    carol.ok(&["send", "contact-Marmalade", secrets[2]]);
    alice.ok(&["group", "create", "Group-Title-Hibiscus"]);
    let codes = [alice.code(), bob.code(), carol.code()];

    // Carol keeps a connection open.
    let listener = Listener::start(&carol);
    let mut s = stats(&dir);
    assert!(
        eventually(Duration::from_secs(15), || {
            s = stats(&dir);
            s["connections"] == 1
        }),
        "one `sotto listen` is connected, stats say: {s}"
    );
    assert_eq!(s["accounts"], 3, "{s}");
    assert_eq!(s["devices"], 3, "{s}");
    assert_eq!(s["queued_envelopes"], 3, "three messages wait for Bob: {s}");
    assert_eq!(s["groups"], 1, "{s}");
    let on_disk: u64 = files(&dir)
        .iter()
        .filter_map(|f| std::fs::symlink_metadata(f).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let disk = s["disk_bytes"].as_u64().expect("disk_bytes");
    assert!(
        disk > 0 && disk / 2 <= on_disk && on_disk / 2 <= disk,
        "disk_bytes {disk} is far from the {on_disk} bytes under the data dir"
    );

    // The human form says the same, and SOTTO_RELAY_DIR names the relay too.
    let out = run_with_timeout(
        Command::new(binary("sotto-relay"))
            .arg("stats")
            .env("SOTTO_RELAY_DIR", &dir),
        "sotto-relay stats (SOTTO_RELAY_DIR)",
    );
    assert!(out.status.success(), "{}", describe(&out));
    let human = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = |label: &str| -> String {
        human
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("`stats` has no line {label:?}:\n{human}"))
    };
    assert_eq!(value("accounts:"), "3", "{human}");
    assert_eq!(value("devices:"), "3", "{human}");
    assert_eq!(value("queued messages:"), "3", "{human}");
    assert_eq!(value("groups:"), "1", "{human}");
    assert_eq!(value("open connections:"), "1", "{human}");
    let human_disk: u64 = value("disk use (bytes):").parse().expect("a byte count");
    assert!(human_disk > 0, "{human}");

    let json = stats(&dir).to_string();
    for (what, text) in [("stats --json", &json), ("stats", &human)] {
        let mut needles: Vec<&str> = names.to_vec();
        needles.extend(secrets);
        needles.extend(codes.iter().map(String::as_str));
        needles.extend([
            "Zanzibar",
            "Quokka",
            "Periwinkle",
            "Marmalade",
            "Hibiscus",
            "sotto-",
        ]);
        for needle in needles {
            assert!(!text.contains(needle), "`{what}` shows {needle:?}:\n{text}");
        }
    }

    // Bob collects his messages; Carol disconnects.
    assert_eq!(sync_until_empty(&bob).len(), 3);
    listener.stop();
    let mut s = stats(&dir);
    assert!(
        eventually(Duration::from_secs(15), || {
            s = stats(&dir);
            s["connections"] == 0
        }),
        "the listener is gone, stats say: {s}"
    );
    assert_eq!(s["queued_envelopes"], 0, "{s}");
    assert_eq!(s["accounts"], 3, "{s}");
}

#[test]
fn ban_unban_and_remove_an_account() {
    let relay = Relay::start();
    let dir = relay.data_dir();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    let carol = User::new(&relay, "Carol");
    alice.add_contact("bob", &bob);
    alice.add_contact("carol", &carol);
    bob.add_contact("alice", &alice);
    carol.add_contact("alice", &alice);
    let bob_code = bob.code();

    // Bob is online when he is banned: the relay disconnects him.
    let mut listener = Listener::start(&bob);
    let mut s = stats(&dir);
    assert!(
        eventually(Duration::from_secs(15), || {
            s = stats(&dir);
            s["connections"] == 1
        }),
        "Bob's listener did not connect: {s}"
    );
    let banned = operator_ok(&dir, &["account", "ban", &bob_code]);
    assert!(
        banned.contains("Banned the account") && banned.contains("closed 1 open connection"),
        "{banned}"
    );
    let (status, stderr) = listener
        .exit_within(Duration::from_secs(20))
        .expect("`sotto listen` of a banned account should stop within 20 s");
    assert!(!status.success(), "listen exited 0 after a ban: {stderr}");
    assert!(stderr.contains("banned"), "listen should say why: {stderr}");
    drop(listener);

    let err = bob.fails(&["sync"]);
    assert!(
        err.contains("the relay operator has banned this account"),
        "sync of a banned account: {err}"
    );
    let err = bob.fails(&["send", "alice", "am I banned?"]);
    assert!(
        err.contains("the relay operator has banned this account") && err.contains("kept"),
        "send of a banned account says why and that the message is kept: {err}"
    );
    // The refused message stays in Bob's outbox and goes after the unban.
    // Everyone else carries on; a ban keeps Bob's mailbox.
    alice.ok(&["send", "carol", "alice to carol"]);
    carol.ok(&["send", "alice", "carol to alice"]);
    alice.ok(&["send", "bob", "waiting for bob"]);
    assert_eq!(texts(&carol.sync_json()), ["alice to carol"]);
    assert_eq!(texts(&alice.sync_json()), ["carol to alice"]);

    let unbanned = operator_ok(&dir, &["account", "unban", &bob_code]);
    assert!(unbanned.contains("Unbanned the account"), "{unbanned}");
    assert_eq!(
        texts(&bob.sync_json()),
        ["waiting for bob"],
        "an unbanned account gets what was queued for it"
    );
    bob.ok(&["send", "alice", "back again"]);
    assert_eq!(
        texts(&alice.sync_json()),
        ["am I banned?", "back again"],
        "the message refused during the ban is sent once Bob is unbanned"
    );
    let again = operator_ok(&dir, &["account", "unban", &bob_code]);
    assert!(again.contains("was not banned"), "{again}");

    // Removal deletes the account and its undelivered mail.
    alice.ok(&["send", "bob", "never delivered"]);
    assert_eq!(stat(&dir, "queued_envelopes"), 1);
    let removed = operator_ok(&dir, &["account", "remove", &bob_code]);
    assert!(
        removed.contains("Removed the account: 1 device(s), 1 undelivered message(s)"),
        "{removed}"
    );
    let s = stats(&dir);
    assert_eq!(s["accounts"], 2, "{s}");
    assert_eq!(s["queued_envelopes"], 0, "{s}");
    for args in [&["sync"][..], &["send", "alice", "hello?"][..]] {
        let err = bob.fails(args);
        assert!(
            err.contains("unknown account") && err.contains("removed"),
            "`sotto {}` of a removed account should say the relay no longer knows it: {err}",
            args.join(" ")
        );
    }
    let err = alice.fails(&["send", "bob", "are you there?"]);
    assert!(
        err.contains("no account for \"bob\""),
        "sending to a removed account: {err}"
    );
    let err = operator_fails(&dir, &["account", "ban", &bob_code], &[]);
    assert!(err.contains("no account with that id"), "{err}");
    let err = operator_fails(&dir, &["account", "ban", "not-a-code"], &[]);
    assert!(err.contains("sotto whoami"), "{err}");
    // The others are unaffected.
    alice.ok(&["send", "carol", "still here"]);
    assert_eq!(texts(&carol.sync_json()), ["still here"]);
}

#[test]
fn check_config_reports_effective_settings_and_errors() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("relay");
    let out = run_with_timeout(
        Command::new(binary("sotto-relay"))
            .arg("init")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--listen")
            .arg("127.0.0.1:0"),
        "sotto-relay init",
    );
    assert!(out.status.success(), "{}", describe(&out));

    let plain = operator_ok(&dir, &["check-config"]);
    assert!(plain.contains("is valid"), "{plain}");
    assert!(plain.contains("envelope_ttl = \"30d\""), "{plain}");
    assert!(plain.contains("listen = \"127.0.0.1:0\""), "{plain}");
    assert!(plain.contains("metrics_listen = \"off\""), "{plain}");
    assert!(!plain.contains("overridden"), "no override is set: {plain}");

    let out = operator_env(
        &dir,
        &["check-config"],
        &[("SOTTO_RELAY_ENVELOPE_TTL", "2h")],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let overridden = String::from_utf8_lossy(&out.stdout);
    assert!(
        overridden.contains("envelope_ttl = \"2h\""),
        "the override is the effective value: {overridden}"
    );
    assert!(
        overridden.contains("overridden by the environment: SOTTO_RELAY_ENVELOPE_TTL"),
        "the override is named: {overridden}"
    );
    assert!(
        !overridden.contains("SOTTO_RELAY_SWEEP_INTERVAL"),
        "only set variables are named: {overridden}"
    );

    let config = dir.join("config.toml");
    let original = std::fs::read_to_string(&config).expect("config.toml");

    std::fs::write(&config, format!("{original}\nlistn = \"1.2.3.4:5\"\n")).expect("write");
    let err = operator_fails(&dir, &["check-config"], &[]);
    assert!(
        err.contains("unknown field `listn`"),
        "an unknown key is named: {err}"
    );
    // `serve` refuses the same file, with the same words.
    let err = operator_fails(&dir, &["serve"], &[]);
    assert!(err.contains("listn"), "serve names the unknown key: {err}");

    let public_metrics = original.replace(
        "metrics_listen = \"off\"",
        "metrics_listen = \"0.0.0.0:9464\"",
    );
    assert_ne!(
        public_metrics, original,
        "config.toml has a metrics_listen line"
    );
    std::fs::write(&config, public_metrics).expect("write");
    let err = operator_fails(&dir, &["check-config"], &[]);
    assert!(
        err.contains("metrics_listen") && err.contains("loopback"),
        "a public metrics address is refused by name: {err}"
    );

    // The same mistake through the environment.
    std::fs::write(&config, &original).expect("write");
    let err = operator_fails(
        &dir,
        &["check-config"],
        &[("SOTTO_RELAY_METRICS_LISTEN", "0.0.0.0:9464")],
    );
    assert!(err.contains("metrics_listen"), "{err}");
    let err = operator_fails(
        &dir,
        &["check-config"],
        &[("SOTTO_RELAY_ENVELOPE_TTL", "3 weeks")],
    );
    assert!(
        err.contains("envelope_ttl"),
        "a bad duration is named: {err}"
    );
    operator_ok(&dir, &["check-config"]);
}
