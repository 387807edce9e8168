//! What the operator sees: the Prometheus metrics endpoint counts
//! connections, envelopes in and out, queue depth, latency and refusals, and
//! neither it nor the JSON log (at debug level) holds message text, display
//! names, contact codes or account ids.

use std::io::{Read, Write};

use sotto_tests::raw::RawClient;
use sotto_tests::{Relay, User, texts};
use sotto_wire::relay::{self, Request, request};

fn get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to metrics");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("response");
    out
}

/// The value of an unlabelled or labelled sample line `name value`.
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{body}"))
}

#[test]
fn metrics_count_traffic_and_logs_hold_no_content() {
    let relay = Relay::start_with_env(&[
        ("SOTTO_RELAY_LOG_FORMAT", "json"),
        ("SOTTO_RELAY_METRICS_LISTEN", "127.0.0.1:0"),
        ("RUST_LOG", "debug"),
    ]);
    let log = relay.stderr();
    let addr = log
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("the relay did not log its metrics address\n{log}"))
        .to_string();

    let alice_name = "Quokka-Display-Alice-4410";
    let bob_name = "Narwhal-Display-Bob-9902";
    let secret = "secret-text-Zanzibar: he followed me to the car park";
    let alice = User::new(&relay, alice_name);
    let bob = User::new(&relay, bob_name);
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    alice.ok(&["send", "bob", secret]);
    alice.ok(&["send", "bob", "second"]);
    alice.ok(&["group", "create", "Taxi-Warnings-Group"]);
    alice.ok(&["group", "add", "Taxi-Warnings-Group", "bob"]);
    alice.ok(&[
        "group",
        "send",
        "Taxi-Warnings-Group",
        "group-secret-Kilimanjaro",
    ]);
    let got = texts(&bob.sync_json());
    assert!(got.contains(&secret.to_string()), "{got:?}");

    // A request before authenticating is refused, and counted by reason.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let raw = RawClient::danger_connect(relay.addr())
            .await
            .expect("connect");
        raw.request(&Request {
            version: sotto_wire::PROTOCOL_VERSION,
            kind: Some(request::Kind::Fetch(relay::Fetch { limit: 1 })),
        })
        .await;
        raw.close().await;
    });

    let page = get(&addr, "/metrics");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let body = page.split("\r\n\r\n").nth(1).expect("a body");
    assert!(sample(body, "sotto_envelopes_in_total") >= 3.0, "{body}");
    assert!(sample(body, "sotto_envelopes_out_total") >= 3.0, "{body}");
    assert_eq!(sample(body, "sotto_queued_envelopes"), 0.0, "{body}");
    assert!(sample(body, "sotto_connections") >= 0.0);
    assert_eq!(
        sample(
            body,
            "sotto_requests_refused_total{reason=\"UNAUTHENTICATED\"}"
        ),
        1.0,
        "{body}"
    );
    assert!(
        sample(body, "sotto_request_duration_seconds_count{kind=\"send\"}") >= 2.0,
        "{body}"
    );
    assert!(get(&addr, "/").starts_with("HTTP/1.1 404"));

    let mut needles = vec![
        alice_name.to_string(),
        bob_name.to_string(),
        "Zanzibar".to_string(),
        "Kilimanjaro".to_string(),
        "Taxi-Warnings-Group".to_string(),
        alice.code(),
        bob.code(),
    ];
    // Account ids as the relay knows them, in the forms a log would use.
    for user in [&alice, &bob] {
        let code: sotto_wire::code::ContactCode = user.code().parse().expect("a contact code");
        let id = code.account_id();
        needles.push(id.to_string());
        needles.push(id.simple().to_string());
    }
    let log = relay.stderr();
    assert!(log.lines().count() > 5, "the debug log is not empty");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
    }
    for needle in &needles {
        assert!(
            !log.contains(needle.as_str()),
            "the relay logged {needle:?}"
        );
        assert!(
            !body.contains(needle.as_str()),
            "metrics contain {needle:?}"
        );
    }
}

/// A data directory written by a newer relay is refused with a message that
/// says what to do, and is left untouched (a rollback fails safely).
#[test]
fn a_schema_from_the_future_is_refused() {
    use std::process::Command;

    use sotto_tests::{binary, describe, run_with_timeout};

    let mut relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    relay.kill9();
    let db_dir = relay.data_dir().join("db");
    {
        let db = sled::open(&db_dir).expect("open the stopped relay's db");
        db.open_tree("meta")
            .expect("meta")
            .insert(b"schema_version", &99u32.to_be_bytes())
            .expect("write");
        db.flush().expect("flush");
    }
    let out = run_with_timeout(
        Command::new(binary("sotto-relay"))
            .arg("serve")
            .arg("--data-dir")
            .arg(relay.data_dir()),
        "sotto-relay serve on a future schema",
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema version 99") && err.contains("run the newer sotto-relay"),
        "{err}"
    );
    // Untouched: still version 99, and the account is still there.
    let db = sled::open(&db_dir).expect("reopen");
    let version = db
        .open_tree("meta")
        .expect("meta")
        .get(b"schema_version")
        .expect("get")
        .expect("set");
    assert_eq!(version.as_ref(), &99u32.to_be_bytes());
    assert!(!db.open_tree("accounts").expect("accounts").is_empty());
    drop(alice);
}
