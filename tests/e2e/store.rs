//! Scenario 7: the local store opens only with the right passphrase, and keeps
//! nothing readable on disk.

use sotto_tests::{PASSPHRASE, Relay, User, texts};

#[test]
fn wrong_passphrase_cannot_open_the_store() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice-Passphrase-Test");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob-Tangerine-contact", &bob);
    alice.ok(&["send", "bob-Tangerine-contact", "local-secret-Ultramarine"]);

    let wrong = alice.run_with_env(
        &["contact", "list"],
        &[("SOTTO_PASSPHRASE", "not the passphrase")],
    );
    assert!(
        !wrong.status.success(),
        "a wrong passphrase opened the store"
    );
    let stderr = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
    assert!(
        stderr.contains("passphrase"),
        "stderr should mention the passphrase: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&wrong.stdout);
    assert!(
        !stdout.contains("Tangerine"),
        "contacts leaked with a wrong passphrase: {stdout}"
    );

    let history = alice.run_with_env(
        &["history", "bob-Tangerine-contact"],
        &[("SOTTO_PASSPHRASE", "PASSPHRASE")],
    );
    assert!(
        !history.status.success(),
        "a wrong passphrase read the history"
    );

    let empty = alice.run_with_env(&["whoami"], &[("SOTTO_PASSPHRASE", "")]);
    assert!(
        !empty.status.success(),
        "an empty passphrase opened the store"
    );

    // The right one still works, and the wrong attempts broke nothing.
    let ok = alice.run_with_env(&["contact", "list"], &[("SOTTO_PASSPHRASE", PASSPHRASE)]);
    assert!(ok.status.success(), "{}", sotto_tests::describe(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("bob-Tangerine-contact"));
    assert_eq!(
        texts(&alice.history_json("bob-Tangerine-contact")),
        ["local-secret-Ultramarine"]
    );

    // Whoever takes the laptop finds no text, contact or name in the profile.
    for path in walk(alice.home()) {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for needle in ["Ultramarine", "Tangerine", "Alice-Passphrase-Test"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} is readable in {}",
                path.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
