//! Scenario 9: more people start sessions with one user than she has one-time
//! prekeys; every message still arrives, her keys are topped up, and replies work.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use sotto_tests::{Relay, User, texts};

/// More senders than the 100 one-time prekeys a profile uploads.
const SENDERS: usize = 150;
/// Concurrent client processes: enough to overlap, few enough for 2 cores.
const PARALLEL: usize = 4;

#[test]
fn prekey_exhaustion_and_top_up() {
    // Lift the hourly one-time key limit (which would otherwise keep most of
    // Alice's keys back; tests/e2e/limits.rs covers it) to reach exhaustion.
    let relay = Relay::start_with_env(&[("SOTTO_RELAY_ONE_TIME_KEYS_PER_HOUR", "100000")]);
    let alice = User::new(&relay, "Alice");
    let alice_code = alice.code();
    let link = relay.invite(SENDERS as u32);

    let next = AtomicUsize::new(0);
    let senders: Mutex<Vec<(usize, User)>> = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= SENDERS {
                        break;
                    }
                    let user = User::with_invite(&link, &format!("sender-{i}"));
                    user.add_contact_code("alice", &alice_code);
                    user.ok(&["send", "alice", &format!("hello alice from sender {i}")]);
                    senders
                        .lock()
                        .expect("no thread panicked holding it")
                        .push((i, user));
                }
            });
        }
    });
    let mut senders = senders.into_inner().expect("no thread panicked holding it");
    senders.sort_by_key(|(i, _)| *i);
    assert_eq!(senders.len(), SENDERS);

    // 150 sessions used up all 100 one-time keys of each kind; later senders
    // got the signed prekey and the Kyber last-resort key.
    let before: serde_json::Value =
        serde_json::from_str(alice.ok(&["keys", "--json", "--no-top-up"]).trim())
            .expect("keys --json is JSON");
    assert_eq!(
        before["pre_keys"], 0,
        "one-time prekeys not exhausted: {before}"
    );
    assert_eq!(
        before["kyber_pre_keys"], 0,
        "Kyber keys not exhausted: {before}"
    );

    // Sync until nothing new arrives (the relay may page its answers).
    let mut received = Vec::new();
    loop {
        let batch = alice.sync_json();
        if batch.is_empty() {
            break;
        }
        received.extend(texts(&batch));
    }
    let got: BTreeSet<String> = received.iter().cloned().collect();
    let expected: BTreeSet<String> = (0..SENDERS)
        .map(|i| format!("hello alice from sender {i}"))
        .collect();
    assert_eq!(received.len(), SENDERS, "each message exactly once");
    assert_eq!(got, expected);

    let keys: serde_json::Value =
        serde_json::from_str(alice.ok(&["keys", "--json"]).trim()).expect("keys --json is JSON");
    let pre_keys = keys["pre_keys"].as_u64().expect("pre_keys count");
    let kyber = keys["kyber_pre_keys"]
        .as_u64()
        .expect("kyber_pre_keys count");
    assert!(
        pre_keys >= 50,
        "one-time prekeys were not topped up: {keys}"
    );
    assert!(
        kyber >= 50,
        "one-time Kyber prekeys were not topped up: {keys}"
    );

    // Alice answers the first sender (who used a one-time key), one in the
    // middle, and the last (who met an exhausted supply).
    for &i in &[0, SENDERS / 2, SENDERS - 1] {
        let (_, sender) = &senders[i];
        let name = format!("sender-{i}");
        alice.add_contact(&name, sender);
        alice.ok(&["send", &name, &format!("reply to sender {i}")]);
        assert_eq!(texts(&sender.sync_json()), [format!("reply to sender {i}")]);
    }
}
