//! `sotto panic`: the store's erase key is destroyed first, so neither the
//! profile nor a copy of its disk blocks opens again, even with the
//! passphrase; the relay deletes the account; the files are gone.

use std::path::Path;

use sotto_tests::{Relay, User, texts};

fn copy_dir(from: &Path, to: &Path, skip: &str) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_name() == skip {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()), skip);
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy");
        }
    }
}

#[test]
fn panic_erases_the_profile_and_the_account() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    bob.ok(&[
        "send",
        "alice",
        "secret-text-Zanzibar: meet me after the vote",
    ]);
    assert_eq!(texts(&alice.sync_json()).len(), 1);

    // What someone imaging the disk could keep: the store's blocks. The
    // erase key is overwritten in place, so it is not among them; the control
    // copy has it, and shows the copying itself keeps a readable store.
    let store = alice.home().join("store");
    let image = User::uninitialised("image of Alice's disk");
    copy_dir(&store, &image.home().join("store"), "erase.key");
    let control = User::uninitialised("copy with the key");
    copy_dir(&store, &control.home().join("store"), "");
    assert_eq!(texts(&control.history_json("bob")).len(), 1);

    let out = alice.ok(&["panic"]);
    assert!(out.contains("Erased"), "{out}");
    assert!(out.contains("relay deleted the account"), "{out}");
    assert!(!store.exists(), "the store's files are gone");
    assert!(
        !alice.home().join("store2").exists(),
        "the second store (filler or decoy) too"
    );
    let err = alice.fails(&["history", "bob"]);
    assert!(err.contains("no Sotto profile"), "{err}");
    let err = image.fails(&["history", "bob"]);
    assert!(err.contains("erased with `sotto panic`"), "{err}");

    // The relay forgot the account: nothing more queues for it.
    let err = bob.fails(&["send", "alice", "are you there?"]);
    assert!(err.contains("no account"), "{err}");
}

#[test]
fn panic_without_the_passphrase_still_erases() {
    let relay = Relay::start();
    let carol = User::new(&relay, "Carol");
    let out = carol.run_with_env(&["panic"], &[("SOTTO_PASSPHRASE", "")]);
    assert!(out.status.success(), "{}", sotto_tests::describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Erased") && text.contains("relay was not told"),
        "{text}"
    );
    assert!(!carol.home().join("store").exists());
    let err = carol.fails(&["panic"]);
    assert!(err.contains("no Sotto profile"), "{err}");
}
