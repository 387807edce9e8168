//! The signed prekey and the Kyber last-resort key are replaced once they are a
//! week old, and a session started after the rotation still works. Drives the
//! client library (the engine behind `sotto`) so the clock can be moved forward.

use sotto_client::engine::{Engine, ROTATE_SIGNED_KEYS_MS};
use sotto_tests::{PASSPHRASE, Relay};

#[test]
fn signed_keys_rotate_weekly_and_new_sessions_work() {
    let relay = Relay::start();
    let alice_home = tempfile::tempdir().expect("temp dir");
    let bob_home = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut alice = Engine::init(alice_home.path(), PASSPHRASE, &relay.invite(1), "Alice")
            .await
            .expect("alice registers");
        let made = alice.keys_rotated_at_ms();
        assert!(made > 0);

        // Six days on: not due, nothing changes.
        alice
            .top_up_at(made + ROTATE_SIGNED_KEYS_MS - 24 * 3600 * 1000)
            .await
            .expect("top up");
        assert_eq!(alice.keys_rotated_at_ms(), made);

        // A week and a bit on: replaced, and the relay accepted the new keys.
        let later = made + ROTATE_SIGNED_KEYS_MS + 1;
        alice.top_up_at(later).await.expect("rotation");
        assert_eq!(alice.keys_rotated_at_ms(), later);

        // Bob starts a session against the rotated keys; Alice can read it.
        let mut bob = Engine::init(bob_home.path(), PASSPHRASE, &relay.invite(1), "Bob")
            .await
            .expect("bob registers");
        bob.add_contact("alice", &alice.code().to_string())
            .await
            .expect("add alice");
        bob.send_text("alice", "after the rotation")
            .await
            .expect("bob sends");
        let mut got = Vec::new();
        alice
            .sync(&mut |m| got.push(m.text.clone()), &mut |_| {})
            .await
            .expect("alice syncs");
        assert_eq!(got, ["after the rotation"]);
        alice.close().await;
        bob.close().await;
    });
}
