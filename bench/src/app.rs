//! The Sotto app (issue 13 §6): how long a person waits for it, how fast a
//! message crosses from one person's app to another's, what the service
//! holds in memory, and how heavy its main screen is.
//!
//! Every run starts the real relay ([`Bench`]) and two real profiles made by
//! the real `sotto init` (alice and bob, each the other's contact), and drives
//! the real `sotto` binary: `sotto app --no-browser` (with `SOTTO_PASSPHRASE`
//! set, so it unlocks at start), `sotto listen --json`, `sotto send`,
//! `sotto whoami`. The app is spoken to as a browser would, with the
//! harness's HTTP/1.1 client on a `TcpStream` (`sotto_tests::http`): the
//! printed launch address for the session cookie, the CSRF token from the
//! page, `Origin` and `Sec-Fetch-Site: same-origin` on every POST, `/events`
//! read as a server-sent event stream. A child's output lines are timed on
//! the thread that reads them, and an event on a thread that does nothing
//! but wait for it, so that a blocked request never makes anything look
//! later than it was.
//!
//! One run, in order:
//! 1. `sotto listen --json` for alice alone, 1 s after start: its RSS (the
//!    baseline for the app's idle RSS: the same service, no web app). Then
//!    `sotto whoami` for alice with no service running: its wall time (a CLI
//!    command that opens the store; the baseline for the next figure).
//! 2. Spawn `sotto app --no-browser` for alice and time spawn → launch
//!    address printed → cookie (GET the launch address) → `GET /` serving the
//!    unlocked chat list (`<nav aria-label="Chats">` with bob's chat).
//!    Page weight: that page's HTML plus every `/assets/` file it references,
//!    uncompressed (no `Accept-Encoding` is sent). RSS of the app 1 s later.
//! 3. bob's app, and a reader on bob's `/events`. [`MESSAGES`] messages, one
//!    at a time (after one warm-up): POST alice's send form, then the time
//!    until bob's `/events` says the chat changed, and until bob's
//!    conversation fragment (what `app.js` reloads on that event) contains
//!    the text. p50 and p99 per run. bob's app stops.
//! 4. `sotto listen --json` for bob; [`MESSAGES`] times `sotto send bob TEXT`
//!    as alice, whose app is running, so the command goes through alice's
//!    service: spawn → bob's listen prints the line. p50 and p99 (the CLI
//!    figure beside the app's, same run, same relay).
//! 5. A lightweight sender (`common::register`, real libsignal sealed
//!    sender, `Content` texts as the engine builds them, 64 `Send`s in
//!    flight) that alice adds as a contact sends her `--app-history`
//!    messages (default 10,000). Timed until the relay took them all and
//!    until alice's app announced each on its `/events`; RSS of the app 1 s
//!    after the last, then after opening that conversation (its messages
//!    fragment, which the app renders whole: its size and time are
//!    reported too). alice's app stops.
//! 6. `sotto listen --json` for alice (now 10,000 messages in her history),
//!    1 s after start: its RSS (baseline for step 5). Then [`MESSAGES`] times
//!    `sotto send bob TEXT` as alice with no service running (each opens
//!    the store: Argon2id, sled, a QUIC connection) → bob's listen.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use libsignal_protocol::{DeviceId, ProtocolAddress};
use sotto_tests::http::Browser;
use sotto_tests::{User, describe};
use sotto_wire::code::ContactCode;

use crate::cold_sync::{fill_mailbox, queued_envelopes};
use crate::common::{
    Account, Bench, Figure, median, ms, quantile, register, rss_kib, sender_certificate,
    session_from_relay,
};

/// Messages timed one at a time, app to app and CLI to CLI, per run.
const MESSAGES: usize = 100;
/// The longest one step (a process start, a request, a message's arrival)
/// may take before the run fails and says where it was.
const WAIT: Duration = Duration::from_secs(60);
/// How long a process is left alone before its "idle" RSS is read.
const SETTLE: Duration = Duration::from_secs(1);
/// The issue's target for the main screen: HTML and assets under this.
const PAGE_WEIGHT_TARGET_KIB: f64 = 200.0;

/// Runs the scenario `runs` times, each on a fresh relay with fresh profiles;
/// `history` is how many messages alice's app receives for the RSS figure.
pub(crate) async fn run(runs: usize, history: usize) -> anyhow::Result<Vec<Figure>> {
    let mut all = Runs::default();
    for run in 1..=runs {
        let r = one_run(run, history)
            .await
            .with_context(|| format!("app scenario, run {run}"))?;
        eprintln!(
            "   run {run}: app start → chat list {:.0} ms (address printed {:.0}, cookie {:.0}), \
             whoami {:.0} ms; app→app p50/p99 {:.1}/{:.1} ms to /events, {:.1}/{:.1} ms shown; \
             CLI via service {:.1}/{:.1} ms, CLI alone {:.1}/{:.1} ms; RSS app idle {:.1} MiB \
             (listen {:.1}), after {history} msgs {:.1} MiB, opened {:.1} MiB (listen {:.1}); \
             {history} msgs: relay took them in {:.1} s, all in the app {:.1} s after the \
             first send; the app announced {} on /events and its conversation shows {}{}; \
             conversation fragment {:.0} KiB in {:.0} ms; main screen {:.1} KiB",
            r.start.listed,
            r.start.printed,
            r.start.launched,
            r.whoami_ms,
            quantile(&r.app_events, 0.5),
            quantile(&r.app_events, 0.99),
            quantile(&r.app_shown, 0.5),
            quantile(&r.app_shown, 0.99),
            quantile(&r.cli_service, 0.5),
            quantile(&r.cli_service, 0.99),
            quantile(&r.cli_alone, 0.5),
            quantile(&r.cli_alone, 0.99),
            r.rss_app_idle,
            r.rss_listen_idle,
            r.rss_app_full,
            r.rss_app_opened,
            r.rss_listen_full,
            r.fill_s,
            r.arrived_s,
            r.announced,
            r.stored,
            r.stalled
                .as_deref()
                .map(|why| format!(" (NOT ALL ARRIVED: {why})"))
                .unwrap_or_default(),
            r.fragment_kib,
            r.fragment_ms,
            r.weight.iter().map(|(_, b)| b).sum::<usize>() as f64 / 1024.0,
        );
        all.add(r);
    }
    Ok(all.figures(history))
}

/// What one run measured.
struct Run {
    start: Startup,
    whoami_ms: f64,
    /// Per message: POST of alice's send form → bob's `/events` names the chat (ms).
    app_events: Vec<f64>,
    /// Per message: the same POST → bob's conversation fragment contains it (ms).
    app_shown: Vec<f64>,
    /// Per message: `sotto send` through alice's app → bob's listen printed it (ms).
    cli_service: Vec<f64>,
    /// Per message: `sotto send` with no service → bob's listen printed it (ms).
    cli_alone: Vec<f64>,
    /// VmRSS in MiB.
    rss_app_idle: f64,
    rss_listen_idle: f64,
    rss_app_full: f64,
    rss_app_opened: f64,
    rss_listen_full: f64,
    /// The history's messages: the relay took all of them (s from the first send).
    fill_s: f64,
    /// ... and alice's app had all of them (s from the first send; NaN if not).
    arrived_s: f64,
    /// Messages her conversation showed at the end, and `message` events seen.
    stored: usize,
    announced: usize,
    /// Why not all arrived.
    stalled: Option<String>,
    /// The opened conversation's messages fragment: size and time to serve it.
    fragment_kib: f64,
    fragment_ms: f64,
    /// The main screen: (path, bytes), the page first.
    weight: Vec<(String, usize)>,
}

/// Every run's values, figure by figure.
#[derive(Default)]
struct Runs {
    listed: Vec<f64>,
    printed: Vec<f64>,
    launched: Vec<f64>,
    whoami: Vec<f64>,
    app_events: [Vec<f64>; 2],
    app_shown: [Vec<f64>; 2],
    cli_service: [Vec<f64>; 2],
    cli_alone: [Vec<f64>; 2],
    rss_app_idle: Vec<f64>,
    rss_listen_idle: Vec<f64>,
    rss_app_full: Vec<f64>,
    rss_app_opened: Vec<f64>,
    rss_listen_full: Vec<f64>,
    fill_s: Vec<f64>,
    arrived_s: Vec<f64>,
    stored: Vec<f64>,
    announced: Vec<f64>,
    fragment_kib: Vec<f64>,
    fragment_ms: Vec<f64>,
    weight_total: Vec<f64>,
    /// Per file, in the order the first run met them.
    weight: Vec<(String, Vec<f64>)>,
}

impl Runs {
    fn add(&mut self, r: Run) {
        self.listed.push(r.start.listed);
        self.printed.push(r.start.printed);
        self.launched.push(r.start.launched);
        self.whoami.push(r.whoami_ms);
        for (into, from) in [
            (&mut self.app_events, &r.app_events),
            (&mut self.app_shown, &r.app_shown),
            (&mut self.cli_service, &r.cli_service),
            (&mut self.cli_alone, &r.cli_alone),
        ] {
            into[0].push(quantile(from, 0.5));
            into[1].push(quantile(from, 0.99));
        }
        self.rss_app_idle.push(r.rss_app_idle);
        self.rss_listen_idle.push(r.rss_listen_idle);
        self.rss_app_full.push(r.rss_app_full);
        self.rss_app_opened.push(r.rss_app_opened);
        self.rss_listen_full.push(r.rss_listen_full);
        self.fill_s.push(r.fill_s);
        self.arrived_s.push(r.arrived_s);
        self.stored.push(r.stored as f64);
        self.announced.push(r.announced as f64);
        self.fragment_kib.push(r.fragment_kib);
        self.fragment_ms.push(r.fragment_ms);
        self.weight_total
            .push(r.weight.iter().map(|(_, b)| *b).sum::<usize>() as f64 / 1024.0);
        for (path, bytes) in r.weight {
            let kib = bytes as f64 / 1024.0;
            match self.weight.iter_mut().find(|(p, _)| *p == path) {
                Some((_, runs)) => runs.push(kib),
                None => self.weight.push((path, vec![kib])),
            }
        }
    }

    fn figures(self, history: usize) -> Vec<Figure> {
        let start_note = format!(
            "spawn of `sotto app --no-browser` (SOTTO_PASSPHRASE set: it unlocks before printing) → \
             launch address printed (median {:.0} ms) → GET of it answered with the session cookie \
             ({:.0} ms) → GET / served the unlocked chat list. Baseline: `sotto whoami` with no \
             service running, spawn to exit (Argon2id, sled open, no network).",
            median(&self.printed),
            median(&self.launched),
        );
        let latency_note = format!(
            "{MESSAGES} messages one at a time after a warm-up, alice → bob, 1:1, through the real \
             relay. App: timed from the POST of alice's send form (it answers once the relay has \
             the message) to the `message` event on bob's /events (read on its own thread), or to \
             bob's conversation fragment containing the text (the GET `app.js` makes on that \
             event). CLI: spawn of `sotto send bob TEXT` as alice to the line on bob's \
             `sotto listen --json`; 'via A's service' while alice's app runs (the command is \
             forwarded over its control socket), 'with no service' when none runs (the command \
             opens the store itself). p50/p99 are per run; the figure is their median over runs."
        );
        let rss_note = format!(
            "VmRSS of the `sotto app` process from /proc. Idle: 1 s after its chat list was served, \
             empty history. With history: {history} messages sent to alice by a lightweight sender \
             (real sealed sender, 64 in flight) while her app ran; read 1 s after her app announced \
             the last on /events or showed it (median {:.1} s after the first send, over the runs \
             where all arrived; the relay had all of them after {:.1} s) or after nothing changed \
             for 45 s, then again after GET of that conversation's messages fragment. Baselines: `sotto listen --json` (the same service without the web app) for the same \
             profile, 1 s after start, with the same history.",
            median(&self.arrived_s),
            median(&self.fill_s),
        );
        let weight_note = format!(
            "GET / (chat list, one chat) and every /assets/ file it references, bodies as served \
             (uncompressed: no Accept-Encoding sent). Target: under {PAGE_WEIGHT_TARGET_KIB:.0} KiB."
        );
        let [events_p50, events_p99] = self.app_events;
        let [shown_p50, shown_p99] = self.app_shown;
        let [service_p50, service_p99] = self.cli_service;
        let [alone_p50, alone_p99] = self.cli_alone;
        let via_service = |q: &str| format!("CLI {q}: sotto send (via A's service) → B's listen");
        let mut out = vec![
            Figure::new(
                "app",
                "sotto app spawn → unlocked chat list served",
                "ms",
                self.listed,
                &start_note,
            )
            .with_ceiling("sotto whoami (opens the store)", self.whoami),
            Figure::new(
                "app",
                "app→app p50: POST send in A → B's /events",
                "ms",
                events_p50,
                &latency_note,
            )
            .with_ceiling(&via_service("p50"), service_p50.clone()),
            Figure::new(
                "app",
                "app→app p99: POST send in A → B's /events",
                "ms",
                events_p99,
                &latency_note,
            )
            .with_ceiling(&via_service("p99"), service_p99.clone()),
            Figure::new(
                "app",
                "app→app p50: POST send → B's conversation shows it",
                "ms",
                shown_p50,
                &latency_note,
            )
            .with_ceiling(&via_service("p50"), service_p50),
            Figure::new(
                "app",
                "app→app p99: POST send → B's conversation shows it",
                "ms",
                shown_p99,
                &latency_note,
            )
            .with_ceiling(&via_service("p99"), service_p99),
            Figure::new(
                "app",
                "CLI p50: sotto send with no service → B's listen",
                "ms",
                alone_p50,
                &latency_note,
            ),
            Figure::new(
                "app",
                "CLI p99: sotto send with no service → B's listen",
                "ms",
                alone_p99,
                &latency_note,
            ),
            Figure::new(
                "app",
                "service RSS: sotto app idle after unlock",
                "MiB",
                self.rss_app_idle,
                &rss_note,
            )
            .with_ceiling("sotto listen, same profile", self.rss_listen_idle),
            Figure::new(
                "app",
                &format!("service RSS: sotto app, {history} msgs in history"),
                "MiB",
                self.rss_app_full,
                &rss_note,
            )
            .with_ceiling("sotto listen, same profile", self.rss_listen_full.clone()),
            Figure::new(
                "app",
                &format!("service RSS: same, after opening that chat ({history} msgs)"),
                "MiB",
                self.rss_app_opened,
                &rss_note,
            )
            .with_ceiling("sotto listen, same profile", self.rss_listen_full),
            Figure::new(
                "app",
                &format!("{history} msgs into the app: first send → all on /events"),
                "s",
                self.arrived_s,
                &rss_note,
            )
            .with_ceiling("the relay took them all", self.fill_s),
            Figure::new(
                "app",
                &format!("of {history} msgs sent: shown in the app's conversation"),
                "msgs",
                self.stored,
                "counted in GET /chats/ID/messages once all arrived, or once the relay's queue for \
                 her had not changed for 45 s; a shortfall is a message not fetched (still queued) \
                 or lost",
            )
            .with_ceiling("announced on its /events", self.announced),
            Figure::new(
                "app",
                &format!("conversation fragment with {history} msgs: size"),
                "KiB",
                self.fragment_kib,
                "GET /chats/ID/messages: the app renders the whole history of a chat",
            ),
            Figure::new(
                "app",
                &format!("conversation fragment with {history} msgs: time to serve"),
                "ms",
                self.fragment_ms,
                "request written → last byte read",
            ),
            Figure::new(
                "app",
                "page weight: main screen, HTML + assets",
                "KiB",
                self.weight_total,
                &weight_note,
            ),
        ];
        for (path, kib) in self.weight {
            out.push(Figure::new(
                "app",
                &format!("page weight: {path}"),
                "KiB",
                kib,
                &weight_note,
            ));
        }
        out
    }
}

/// One run on a fresh relay with fresh profiles (steps 1-6 of the module doc).
async fn one_run(run: usize, history: usize) -> anyhow::Result<Run> {
    // The lightweight sender sends far more than a person could; the relay's
    // per-account send limit and mailbox cap are not what is measured.
    let bench = Bench::start_with_env(
        1,
        &[
            ("SOTTO_RELAY_SENDS_PER_MINUTE", "100000000"),
            ("SOTTO_RELAY_MAILBOX_MAX_ENVELOPES", "100000000"),
        ],
    )?;
    let alice = User::new(&bench.relay, "alice");
    let bob = User::new(&bench.relay, "bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);

    // 1. Baselines with nothing running: the headless service's RSS, and a
    // CLI command that opens the store.
    let rss_listen_idle = idle_listen_rss(&alice)?;
    let started = Instant::now();
    let out = alice.run(&["whoami"]);
    let whoami_ms = ms(started.elapsed());
    ensure!(
        out.status.success(),
        "sotto whoami failed\n{}",
        describe(&out)
    );

    // 2. alice's app: start, page weight, idle RSS.
    let (mut a_app, start) = App::start(&alice)?;
    let a_bob = only_chat(&start.page).context("alice's chat list")?;
    let weight = page_weight(&mut a_app.browser, &start.page)?;
    std::thread::sleep(SETTLE);
    let rss_app_idle = a_app.proc.rss_mib()?;

    // 3. App to app.
    let (mut b_app, b_start) = App::start(&bob)?;
    let b_alice = only_chat(&b_start.page).context("bob's chat list")?;
    let (app_events, app_shown) = app_to_app(&mut a_app, &a_bob, &mut b_app, &b_alice, run)?;
    b_app.proc.stop()?;

    // 4. CLI to CLI, alice's command going through her running app.
    let b_listen = Proc::spawn(listen(&bob), "bob's sotto listen")?;
    let cli_service = cli_to_cli(&alice, &b_listen, "via service", run)?;

    // 5. A long history in alice's app.
    let full = fill_history(&bench, &alice, &mut a_app, &a_bob, history).await?;
    a_app.proc.stop()?;

    // 6. The headless service with the same history; the CLI on its own.
    let rss_listen_full = idle_listen_rss(&alice)?;
    let cli_alone = cli_to_cli(&alice, &b_listen, "alone", run)?;
    b_listen.stop()?;

    Ok(Run {
        start,
        whoami_ms,
        app_events,
        app_shown,
        cli_service,
        cli_alone,
        rss_app_idle,
        rss_listen_idle,
        rss_app_full: full.rss_idle,
        rss_app_opened: full.rss_opened,
        rss_listen_full,
        fill_s: full.fill_s,
        arrived_s: full.arrived_s,
        stored: full.stored,
        announced: full.announced,
        stalled: full.stalled,
        fragment_kib: full.fragment_kib,
        fragment_ms: full.fragment_ms,
        weight,
    })
}

/// `sotto listen --json` for `user`.
fn listen(user: &User) -> Command {
    let mut cmd = user.command();
    cmd.args(["listen", "--json"]);
    cmd
}

/// Starts `sotto listen --json` for `user`, reads its RSS [`SETTLE`] after
/// its control socket appeared (the service holds the profile), and stops it.
fn idle_listen_rss(user: &User) -> anyhow::Result<f64> {
    let listen = Proc::spawn(listen(user), "sotto listen (for its RSS)")?;
    let deadline = Instant::now() + WAIT;
    while !user.home().join("control.sock").exists() {
        ensure!(
            Instant::now() < deadline,
            "sotto listen made no control socket within {WAIT:?}\n{}",
            listen.errors()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(SETTLE);
    let rss = listen.rss_mib()?;
    listen.stop()?;
    Ok(rss)
}

/// [`MESSAGES`] app-to-app messages, one at a time, after one warm-up.
/// Returns the times to bob's `/events` and to his conversation showing it.
///
/// The POST runs on a thread of its own while this thread waits on bob's
/// event stream, so each event is timed when it arrives, not when the POST
/// (which answers once the relay has the message) returns.
fn app_to_app(
    a: &mut App,
    a_chat: &str,
    b: &mut App,
    b_chat: &str,
    run: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let events = b.browser.events();
    first_state(&events).context("bob's /events")?;
    let (mut to_event, mut to_shown) = (Vec::new(), Vec::new());
    for i in 0..=MESSAGES {
        let text = format!("app message {run}-{i}");
        let form = format!("/chats/{a_chat}");
        let started = Instant::now();
        let (event, shown) = std::thread::scope(|s| -> anyhow::Result<(Instant, Instant)> {
            let sending = s.spawn(|| a.browser.post(&form, &[("text", &text)]));
            let event = next_message(&events, b_chat)
                .with_context(|| format!("bob's /events, app message {i}"));
            let sent = sending
                .join()
                .map_err(|_| anyhow!("posting app message {i} failed"))?;
            ensure!(
                sent.status == 303,
                "the send form answered {}: {}",
                sent.status,
                excerpt(&sent.body)
            );
            let event = event?;
            // What bob's page does on that event: reload the conversation.
            let shown = loop {
                let page = b.browser.get(&format!("/chats/{b_chat}/messages"));
                ensure!(page.status == 200, "bob's conversation: {}", page.status);
                if page.body.contains(&text) {
                    break Instant::now();
                }
                // That event was for an earlier change: wait for the next.
                next_message(&events, b_chat)
                    .with_context(|| format!("bob's /events, app message {i} (again)"))?;
            };
            Ok((event, shown))
        })?;
        if i > 0 {
            to_event.push(ms(event - started));
            to_shown.push(ms(shown - started));
        }
    }
    Ok((to_event, to_shown))
}

/// The first event of a stream: the service's state, unlocked.
fn first_state(events: &Receiver<(String, String)>) -> anyhow::Result<()> {
    let (kind, data) = events.recv_timeout(WAIT).context("nothing at first")?;
    ensure!(
        kind == "state" && data == "unlocked",
        "it began with {kind}: {data}"
    );
    Ok(())
}

/// When the next `message` event about `chat` (or about every chat, after
/// the stream fell behind: an empty chat) arrived.
fn next_message(events: &Receiver<(String, String)>, chat: &str) -> anyhow::Result<Instant> {
    loop {
        let (kind, data) = events
            .recv_timeout(WAIT)
            .with_context(|| format!("no event within {WAIT:?}"))?;
        if kind == "message" && event_chat(&data).is_some_and(|c| c == chat || c.is_empty()) {
            return Ok(Instant::now());
        }
    }
}

/// The chat a `message` event names (`{"chat": "..."}`).
fn event_chat(data: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(data).ok()?;
    json["chat"].as_str().map(str::to_string)
}

/// [`MESSAGES`] CLI messages from `from` to bob, one at a time, after one
/// warm-up: spawn of `sotto send bob TEXT` → the line on bob's listen (read
/// and timed on its own thread).
fn cli_to_cli(from: &User, b_listen: &Proc, how: &str, run: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for i in 0..=MESSAGES {
        let text = format!("cli message {how} {run}-{i}");
        let started = Instant::now();
        let out = from.run(&["send", "bob", &text]);
        ensure!(
            out.status.success(),
            "sotto send ({how}) {i} failed\n{}",
            describe(&out)
        );
        let printed = loop {
            let (at, line) = b_listen.next_line()?;
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if json["text"].as_str() == Some(text.as_str()) {
                break at;
            }
        };
        if i > 0 {
            times.push(ms(printed.saturating_duration_since(started)));
        }
    }
    Ok(times)
}

/// What step 5 measured.
struct Full {
    rss_idle: f64,
    rss_opened: f64,
    fill_s: f64,
    /// NaN when not all arrived.
    arrived_s: f64,
    /// Messages her conversation shows at the end, and events announced.
    stored: usize,
    announced: usize,
    /// Why not all arrived.
    stalled: Option<String>,
    fragment_kib: f64,
    fragment_ms: f64,
}

/// A lightweight sender that alice adds as a contact sends her `count`
/// messages while her app runs; waits until her app has them all, reads its
/// RSS, opens the conversation and reads it again.
async fn fill_history(
    bench: &Bench,
    alice: &User,
    app: &mut App,
    bob_chat: &str,
    count: usize,
) -> anyhow::Result<Full> {
    let Account {
        id,
        conn,
        mut store,
    } = register(bench).await?;
    let conn = Arc::new(conn);
    let code = ContactCode::from_account_id(id).to_string();
    let out = alice.run(&["contact", "add", "sender", &code]);
    ensure!(
        out.status.success(),
        "alice adding the sender\n{}",
        describe(&out)
    );
    let home = app.browser.get("/");
    let chat = chats(&home.body)
        .into_iter()
        .find(|c| c != bob_chat)
        .context("the sender's chat is not in alice's list")?;

    let alice_id = alice.code().parse::<ContactCode>()?.account_id();
    let certificate = sender_certificate(&conn).await?;
    let address = ProtocolAddress::new(alice_id.to_string(), DeviceId::new(1)?);
    session_from_relay(&conn, &mut store, alice_id, &address).await?;

    // Every message her service stores is one `message` event. They are
    // counted on a thread of their own while this one sends.
    let events = app.browser.events();
    first_state(&events).context("alice's /events")?;
    let counted = {
        let chat = chat.clone();
        std::thread::spawn(move || count_events(&events, &chat, count))
    };
    let started = Instant::now();
    fill_mailbox(&conn, &mut store, alice_id, &address, &certificate, count).await?;
    let fill_s = started.elapsed().as_secs_f64();
    let counted = counted
        .join()
        .map_err(|_| anyhow!("counting alice's events failed"))??;
    let (arrived, stalled) = match counted.all_at {
        Some(at) => (Some(at), None),
        // Her stream fell behind or went quiet: count what her conversation
        // shows until it has them all or stops changing.
        None => {
            let (at, why) =
                wait_for_count(bench, &mut app.browser, &chat, count, counted.announced).await?;
            (at, why)
        }
    };
    let arrived_s = arrived.map_or(f64::NAN, |at| (at - started).as_secs_f64());
    std::thread::sleep(SETTLE);
    let rss_idle = app.proc.rss_mib()?;
    let asked = Instant::now();
    let fragment = app.browser.get(&format!("/chats/{chat}/messages"));
    let fragment_ms = ms(asked.elapsed());
    ensure!(
        fragment.status == 200,
        "the conversation: {}",
        fragment.status
    );
    let stored = incoming(&fragment.body);
    let rss_opened = app.proc.rss_mib()?;
    if let Ok(conn) = Arc::try_unwrap(conn) {
        conn.close().await;
    }
    Ok(Full {
        rss_idle,
        rss_opened,
        fill_s,
        arrived_s,
        stored,
        announced: counted.announced,
        stalled,
        fragment_kib: fragment.body.len() as f64 / 1024.0,
        fragment_ms,
    })
}

/// A stream that says nothing for this long while messages are due is
/// taken to have stopped (the figures then come from her conversation).
const QUIET: Duration = Duration::from_secs(10);

/// What [`count_events`] saw.
struct Counted {
    /// When the last of `count` events came (`None`: not all came).
    all_at: Option<Instant>,
    /// `message` events about the chat.
    announced: usize,
}

/// Counts `message` events about `chat` until `count`, until the stream
/// says it fell behind (an empty chat), or until it is [`QUIET`].
fn count_events(
    events: &Receiver<(String, String)>,
    chat: &str,
    count: usize,
) -> anyhow::Result<Counted> {
    let mut announced = 0;
    while announced < count {
        let (kind, data) = match events.recv_timeout(QUIET) {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(e) => bail!("alice's /events ended after {announced} messages: {e}"),
        };
        if kind != "message" {
            continue;
        }
        match event_chat(&data).as_deref() {
            Some(c) if c == chat => announced += 1,
            Some("") => break,
            _ => {}
        }
    }
    Ok(Counted {
        all_at: (announced == count).then(Instant::now),
        announced,
    })
}

/// How long the relay's queue for her may stay unchanged before waiting
/// for more stops (longer than the engine's 30 s re-sync).
const NO_PROGRESS: Duration = Duration::from_secs(45);

/// Watches the relay's queue for her (its admin socket, not the app: every
/// request to the app is engine activity, which postpones the engine's
/// periodic re-sync) until it is empty and her conversation shows `count`
/// incoming messages (when), or until the queue did not change for
/// [`NO_PROGRESS`] (why not).
async fn wait_for_count(
    bench: &Bench,
    browser: &mut Browser,
    chat: &str,
    count: usize,
    announced: usize,
) -> anyhow::Result<(Option<Instant>, Option<String>)> {
    let mut last = u64::MAX;
    let mut since = Instant::now();
    loop {
        let queued = queued_envelopes(&bench.relay.data_dir()).await?;
        if queued == 0 {
            let at = Instant::now();
            let shown = incoming(&browser.get(&format!("/chats/{chat}/messages")).body);
            if shown >= count {
                return Ok((Some(at), None));
            }
        }
        if queued != last {
            last = queued;
            since = Instant::now();
        } else if since.elapsed() > NO_PROGRESS {
            let shown = incoming(&browser.get(&format!("/chats/{chat}/messages")).body);
            return Ok((
                None,
                Some(format!(
                    "her /events announced {announced} of {count} and went quiet; {queued} still \
                     queued on the relay for her, unchanged for {NO_PROGRESS:?}; her conversation \
                     shows {shown}"
                )),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Incoming messages in a conversation's HTML.
fn incoming(html: &str) -> usize {
    html.matches(r#"<li class="in""#).count()
}

/// The chat ids linked from a page's chat list, in order.
fn chats(html: &str) -> Vec<String> {
    let list = html
        .find(r#"aria-label="Chats""#)
        .map_or("", |at| &html[at..]);
    let list = list.find("</nav>").map_or(list, |end| &list[..end]);
    list.split(r#"href="/chats/"#)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

/// The one chat in a chat list.
fn only_chat(html: &str) -> anyhow::Result<String> {
    match chats(html).as_slice() {
        [one] => Ok(one.clone()),
        other => bail!("expected one chat in the list, found {}", other.len()),
    }
}

/// The main screen's weight: the page's own bytes, then each `/assets/`
/// file it references (by `href` or `src`), once each.
fn page_weight(browser: &mut Browser, page: &str) -> anyhow::Result<Vec<(String, usize)>> {
    let mut out = vec![("/ (chat list HTML)".to_string(), page.len())];
    let mut seen: Vec<String> = Vec::new();
    for attr in [r#"href=""#, r#"src=""#] {
        for rest in page.split(attr).skip(1) {
            let Some(path) = rest.split('"').next() else {
                continue;
            };
            if path.starts_with("/assets/") && !seen.iter().any(|s| s == path) {
                seen.push(path.to_string());
            }
        }
    }
    ensure!(
        !seen.is_empty(),
        "the main screen references no /assets/ file"
    );
    for path in seen {
        let got = browser.get(&path);
        ensure!(got.status == 200, "{path}: {}", got.status);
        ensure!(
            got.header("content-encoding").is_none(),
            "{path} came compressed without being asked"
        );
        out.push((path, got.body.len()));
    }
    Ok(out)
}

/// The start of a page, for an error message.
fn excerpt(body: &str) -> String {
    body.chars().take(300).collect()
}

/// A child process whose stdout lines are read, each with the moment it was
/// read, on a thread of their own; its stderr is kept for error messages.
/// (The harness's `User::app` and `User::listen` neither give the pid, which
/// the RSS figures need, nor time the lines.)
struct Proc {
    child: Option<Child>,
    what: String,
    lines: mpsc::Receiver<(Instant, String)>,
    errors: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str) -> anyhow::Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let stderr = child.stderr.take().context("piped stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end even when nobody listens, so the child never
            // blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        let errors = Arc::new(Mutex::new(String::new()));
        let sink = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut all) = sink.lock() {
                    all.push_str(&line);
                    all.push('\n');
                }
            }
        });
        Ok(Proc {
            child: Some(child),
            what: what.to_string(),
            lines,
            errors,
        })
    }

    fn errors(&self) -> String {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn rss_mib(&self) -> anyhow::Result<f64> {
        let kib = rss_kib(self.pid())
            .with_context(|| format!("no VmRSS for {} (pid {})", self.what, self.pid()))?;
        Ok(kib as f64 / 1024.0)
    }

    /// The next stdout line, and when it was read.
    fn next_line(&self) -> anyhow::Result<(Instant, String)> {
        self.lines.recv_timeout(WAIT).map_err(|e| {
            anyhow!(
                "{} printed nothing within {WAIT:?} ({e})\n{}",
                self.what,
                self.errors()
            )
        })
    }

    /// Stops it with SIGTERM as Ctrl-C would; it must exit 0 in time.
    fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(
                    status.success(),
                    "{} exited with {status} after SIGTERM\n{}",
                    self.what,
                    self.errors()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not stop within {WAIT:?} of SIGTERM\n{}",
                    self.what,
                    self.errors()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only after a failed run: stop() takes the child.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How long `sotto app` took to come up (ms from spawn).
struct Startup {
    /// The launch address printed.
    printed: f64,
    /// The launch address answered with the session cookie.
    launched: f64,
    /// `GET /` served the unlocked chat list.
    listed: f64,
    /// That chat list page.
    page: String,
}

/// A running `sotto app --no-browser` and a browser session on it (the
/// harness's HTTP/1.1 client, `sotto_tests::http`).
struct App {
    proc: Proc,
    browser: Browser,
}

impl App {
    /// Spawns the app for `user` (unlocked at start by `SOTTO_PASSPHRASE`,
    /// which the harness sets) and opens it as a browser does on launch.
    fn start(user: &User) -> anyhow::Result<(App, Startup)> {
        let mut cmd = user.command();
        cmd.args(["app", "--no-browser"]);
        let spawned = Instant::now();
        let proc = Proc::spawn(cmd, &format!("{}'s sotto app", user.name))?;
        let (printed, url) = loop {
            let (at, line) = proc.next_line()?;
            if line.starts_with("http://127.0.0.1:") {
                break (at, line);
            }
        };
        let mut browser = Browser::launch(url.trim());
        let launched = Instant::now();
        let page = browser.get("/");
        let listed = Instant::now();
        ensure!(
            page.status == 200 && page.body.contains(r#"aria-label="Chats""#),
            "GET / did not serve the chat list ({}): {}",
            page.status,
            excerpt(&page.body)
        );
        let since = |t: Instant| ms(t - spawned);
        let startup = Startup {
            printed: since(printed),
            launched: since(launched),
            listed: since(listed),
            page: page.body,
        };
        Ok((App { proc, browser }, startup))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_links_come_from_the_chat_list_only() {
        let html = r#"<a href="/chats/zz">x</a><nav aria-label="Chats"><a href="/chats/p1">A</a>
            <a href="/chats/g2" aria-current="page">B</a></nav><a href="/chats/p9">"#;
        assert_eq!(chats(html), vec!["p1".to_string(), "g2".to_string()]);
        assert!(only_chat(html).is_err());
        assert_eq!(
            only_chat(r#"<nav aria-label="Chats"><a href="/chats/p1">"#).ok(),
            Some("p1".to_string())
        );
    }

    #[test]
    fn message_events_name_their_chat() {
        assert_eq!(
            event_chat(r#"{"chat":"p1","notify":"New message"}"#).as_deref(),
            Some("p1")
        );
        assert_eq!(event_chat("unlocked"), None);
        assert_eq!(incoming(r#"<li class="in" id="m-1"><li class="out">"#), 1);
    }
}
