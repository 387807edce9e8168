//! The duress passphrase: it opens a working decoy profile instead of the
//! real one, and with --erase-real it also destroys the real profile.

use std::path::{Path, PathBuf};

use sotto_client::engine::Engine;
use sotto_tests::{Relay, User, texts};

const DURESS: &str = "blue bicycle morning";

fn as_duress(u: &User, args: &[&str]) -> std::process::Output {
    u.run_with_env(args, &[("SOTTO_PASSPHRASE", DURESS)])
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_duress_passphrase_opens_the_decoy() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann");
    let bob = User::new(&relay, "Bob");
    ann.add_contact("bob", &bob);
    bob.add_contact("ann", &ann);
    ann.ok(&["send", "bob", "the real list is in the shared drive"]);
    bob.ok(&["send", "ann", "got it"]);
    ann.ok(&["sync"]);
    let real_code = ann.code();

    let invite = relay.invite(1);
    let out = ann.run_with_env(
        &["duress", "set", "--invite", &invite, "--name", "Ann"],
        &[("SOTTO_DURESS_PASSPHRASE", DURESS)],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(ann.ok(&["duress", "status"]).contains("is set"));

    // Under duress: a working profile with its own account, none of the real one.
    let who = stdout(&as_duress(&ann, &["whoami", "--json"]));
    assert!(who.contains("\"Ann\""), "{who}");
    assert!(!who.contains(&real_code), "{who}");
    assert!(
        stdout(&as_duress(&ann, &["contact", "list"]))
            .trim()
            .is_empty()
    );
    assert!(!as_duress(&ann, &["history", "bob"]).status.success());
    assert!(as_duress(&ann, &["sync"]).status.success());
    assert!(
        stdout(&as_duress(&ann, &["duress", "status"])).contains("No duress passphrase"),
        "the decoy does not admit to being one"
    );

    // The real passphrase still opens the real profile; others still fail.
    assert_eq!(ann.code(), real_code);
    assert_eq!(
        texts(&ann.history_json("bob")),
        ["the real list is in the shared drive", "got it"]
    );
    let out = ann.run_with_env(&["whoami"], &[("SOTTO_PASSPHRASE", "not it")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"),
        "{out:?}"
    );

    ann.ok(&["duress", "remove"]);
    assert!(!as_duress(&ann, &["whoami"]).status.success());
}

#[test]
fn with_erase_real_the_duress_passphrase_destroys_the_real_profile() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann");
    let bob = User::new(&relay, "Bob");
    ann.add_contact("bob", &bob);
    ann.ok(&["send", "bob", "names of the people he targeted"]);
    let invite = relay.invite(1);
    let out = ann.run_with_env(
        &[
            "duress",
            "set",
            "--invite",
            &invite,
            "--name",
            "Ann",
            "--erase-real",
        ],
        &[("SOTTO_DURESS_PASSPHRASE", DURESS)],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(as_duress(&ann, &["whoami"]).status.success());
    // The real profile is gone, even with its passphrase.
    let out = ann.run(&["history", "bob"]);
    assert!(!out.status.success(), "{out:?}");
    // The decoy keeps working.
    assert!(as_duress(&ann, &["sync"]).status.success());
}

fn set_duress(u: &User, relay: &Relay, passphrase: &str, erase_real: bool) -> std::process::Output {
    let invite = relay.invite(1);
    let mut args = vec!["duress", "set", "--invite", &invite, "--name", "Ann"];
    if erase_real {
        args.push("--erase-real");
    }
    u.run_with_env(&args, &[("SOTTO_DURESS_PASSPHRASE", passphrase)])
}

/// Issue 12, item 5: the duress passphrase follows the rules of any
/// passphrase (one shared check). A 5-character one was accepted, and with
/// `--erase-real` a short guess would wipe the real profile.
#[test]
fn a_short_duress_passphrase_is_refused() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann");
    for erase_real in [false, true] {
        let out = set_duress(&ann, &relay, "abcde", erase_real);
        assert!(!out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("at least 8 characters"), "{err}");
    }
    assert!(
        ann.ok(&["duress", "status"])
            .contains("No duress passphrase")
    );
    assert!(!as_duress_with(&ann, "abcde", &["whoami"]).status.success());
    // The real profile is untouched.
    assert!(ann.run(&["whoami"]).status.success());
}

fn as_duress_with(u: &User, passphrase: &str, args: &[&str]) -> std::process::Output {
    u.run_with_env(args, &[("SOTTO_PASSPHRASE", passphrase)])
}

/// Every file under `dir`, relative, with sled's snapshot names (which
/// carry a log offset) reduced to `snap`.
fn layout(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = sotto_tests::files(dir)
        .iter()
        .filter_map(|p| p.strip_prefix(dir).ok().map(Path::to_path_buf))
        .map(|p: PathBuf| {
            let s = p.to_string_lossy().into_owned();
            match s.find("snap.") {
                Some(i) => format!("{}snap", &s[..i]),
                None => s,
            }
        })
        .filter(|s| !s.ends_with("control.sock"))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Issue 12, item 5: a profile with a decoy looked different on disk (a
/// `spare/` directory). Now every profile has the same two stores under the
/// same names, each with an erase key of the same size.
#[test]
fn a_profile_with_a_decoy_looks_like_one_without() {
    let relay = Relay::start();
    let with = User::new(&relay, "Ann");
    let without = User::new(&relay, "Bea");
    let out = set_duress(&with, &relay, DURESS, false);
    assert!(out.status.success(), "{out:?}");
    assert!(as_duress(&with, &["sync"]).status.success());
    // The same use of the real profiles (a store's files depend on how often
    // it was opened: sled writes a snapshot when it opens a used database).
    for u in [&with, &without] {
        u.ok(&["sync"]);
    }
    without.ok(&["sync"]);
    let (a, b) = (layout(with.home()), layout(without.home()));
    assert_eq!(a, b, "the two profiles' files differ by name");
    assert!(
        !a.iter().any(|p| p.contains("spare")),
        "no visibly named decoy: {a:?}"
    );
    assert!(a.iter().any(|p| p.ends_with("erase.key")), "{a:?}");
    for home in [with.home(), without.home()] {
        for slot in ["store", "store2"] {
            let key = std::fs::metadata(home.join(slot).join("erase.key")).expect("erase key");
            assert_eq!(key.len(), 32, "{}/{slot}", home.display());
        }
    }
    // A filler holds what a new profile holds: a used-once decoy and a
    // filler are the same size (sled's files grow in 512 KiB steps).
    let db = |u: &User| {
        std::fs::metadata(u.home().join("store2").join("db"))
            .expect("db")
            .len()
    };
    assert_eq!(db(&with), db(&without));
    // Removing the duress passphrase leaves the same layout again.
    with.ok(&["duress", "remove"]);
    with.ok(&["sync"]);
    assert_eq!(layout(with.home()), b);
    assert!(!as_duress(&with, &["whoami"]).status.success());
}

/// Issue 12, item 5: after `--erase-real` did its work, the real passphrase
/// said "this profile was erased with sotto panic", which tells whoever
/// watches that a duress passphrase was used. Now it fails exactly as any
/// wrong passphrase does, and the real store's files are still in place.
#[test]
fn after_erase_real_the_real_passphrase_fails_like_a_wrong_one() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann");
    let bea = User::new(&relay, "Bea");
    let out = set_duress(&ann, &relay, DURESS, true);
    assert!(out.status.success(), "{out:?}");
    let real_files = |home: &Path| -> Vec<String> {
        layout(home)
            .into_iter()
            .filter(|p| p.starts_with("store/"))
            .collect()
    };
    let before = real_files(ann.home());
    assert!(as_duress(&ann, &["whoami"]).status.success());
    let real = ann.run(&["whoami"]);
    let wrong = ann.run_with_env(&["whoami"], &[("SOTTO_PASSPHRASE", "not the passphrase")]);
    assert!(!real.status.success() && !wrong.status.success());
    let said = String::from_utf8_lossy(&real.stderr);
    assert!(
        !said.contains("erased") && !said.contains("panic"),
        "{said}"
    );
    assert_eq!(said, String::from_utf8_lossy(&wrong.stderr));
    assert_eq!(real.status.code(), wrong.status.code());
    // The same for a profile that never had a duress passphrase.
    let other = bea.run_with_env(&["whoami"], &[("SOTTO_PASSPHRASE", "not the passphrase")]);
    assert_eq!(said, String::from_utf8_lossy(&other.stderr));
    // Nothing on disk went missing: the erase key is random bytes now.
    assert_eq!(real_files(ann.home()), before);
    let key = std::fs::metadata(ann.home().join("store").join("erase.key")).expect("key");
    assert_eq!(key.len(), 32);
}

/// Profiles whose decoy was made before the second slot (in `HOME/spare`)
/// still open with both passphrases, and move the decoy into the slot when
/// the real passphrase is used.
#[test]
fn a_decoy_in_the_old_layout_still_opens_and_moves() {
    let relay = Relay::start();
    let ann = User::new(&relay, "Ann");
    let real_code = ann.code();
    // The old layout: a decoy profile in HOME/spare/store, no second slot.
    let made = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let decoy_code = runtime.block_on(async {
        let mut engine = Engine::init(made.path(), DURESS, &relay.invite(1), "Ann")
            .await
            .expect("decoy");
        let code = engine.code().to_string();
        engine.close().await;
        code
    });
    std::fs::remove_dir_all(ann.home().join("store2")).expect("no second slot in the old layout");
    std::fs::create_dir_all(ann.home().join("spare")).expect("mkdir");
    std::fs::rename(
        made.path().join("store"),
        ann.home().join("spare").join("store"),
    )
    .expect("move the decoy");

    let who = stdout(&as_duress(&ann, &["whoami"]));
    assert!(who.starts_with(&decoy_code), "{who}");
    // The real passphrase opens the real profile and moves the decoy.
    assert_eq!(ann.code(), real_code);
    assert!(!ann.home().join("spare").exists());
    assert!(ann.home().join("store2").join("erase.key").exists());
    assert!(ann.ok(&["duress", "status"]).contains("is set"));
    let who = stdout(&as_duress(&ann, &["whoami"]));
    assert!(who.starts_with(&decoy_code), "{who}");

    // A profile from before the slot, without a decoy, gets a filler.
    let bea = User::new(&relay, "Bea");
    std::fs::remove_dir_all(bea.home().join("store2")).expect("old layout");
    bea.ok(&["whoami"]);
    assert!(bea.home().join("store2").join("erase.key").exists());
    assert!(bea.ok(&["duress", "status"]).contains("No duress"));
}
