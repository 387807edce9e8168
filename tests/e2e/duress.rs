//! The duress passphrase: it opens a working decoy profile instead of the
//! real one, and with --erase-real it also destroys the real profile.

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
