//! Test support for Sotto's end-to-end scenarios.
//!
//! It starts the real `sotto-relay` binary on `127.0.0.1` with a fresh data
//! directory ([`Relay`]), drives the real `sotto` client binary with a fresh
//! profile per user ([`User`]), and speaks raw QUIC to the relay for abuse tests
//! ([`raw`]).
//!
//! It is **not** a mock of either side: nothing here implements protocol logic
//! beyond writing frames that a misbehaving client would write.
//!
//! Every wait has a timeout ([`TIMEOUT`]) and panics with the child's stderr, so
//! a hung relay or client fails the test instead of hanging CI.
#![warn(missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod http;
pub mod raw;

/// The longest any single step (process start, command, answer) may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The passphrase every test profile uses.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// Finds a workspace binary next to the running test executable.
///
/// Test executables live in `target/<profile>/deps/`; the binaries live one
/// level up. `cargo test` does not build another package's binaries, so
/// `scripts/test.sh` runs `cargo build --workspace --bins` first.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let mut dir = exe
        .parent()
        .expect("the test binary lives in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not found: run `scripts/test.sh`, or `cargo build --workspace --bins` before `cargo test`",
        path.display()
    );
    path
}

/// Runs a command to completion, killing it and panicking after [`TIMEOUT`].
pub fn run_with_timeout(cmd: &mut Command, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The receiver may be gone after a timeout; nothing to do then.
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {what}: {e}")),
        Err(_) => {
            // The child was moved into the waiting thread, so kill it by pid.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{what} did not finish within {TIMEOUT:?}");
        }
    }
}

/// Formats a process's output for a panic message.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running `sotto-relay serve` with its own data directory.
pub struct Relay {
    data: TempDir,
    /// Kept outside the data directory so the "no plaintext on the relay's
    /// disk" scenario only inspects what the relay itself wrote.
    logs: TempDir,
    child: Option<Child>,
    addr: SocketAddr,
    starts: u32,
    env: Vec<(String, String)>,
}

/// Every test client connects from 127.0.0.1, so the per-address limits
/// (sized for an office behind one NAT address) are lifted in tests unless a
/// test sets them; per-account limits stay at their defaults.
const LOOPBACK_LIMITS: &[(&str, &str)] = &[
    ("SOTTO_RELAY_CONNECTIONS_PER_ADDRESS", "1000000"),
    (
        "SOTTO_RELAY_UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS",
        "1000000",
    ),
    ("SOTTO_RELAY_REGISTRATIONS_PER_ADDRESS_PER_HOUR", "1000000"),
    ("SOTTO_RELAY_HANDSHAKES_PER_ADDRESS_PER_SECOND", "1000000"),
    ("SOTTO_RELAY_HANDSHAKES_PER_SECOND", "1000000"),
];

impl Relay {
    /// Creates a data directory, runs `init`, and starts `serve`.
    pub fn start() -> Relay {
        Relay::start_with_env(&[])
    }

    /// Like [`Relay::start`], with `SOTTO_RELAY_*` overrides for `serve`
    /// (kept across restarts; they win over [`LOOPBACK_LIMITS`]).
    pub fn start_with_env(env: &[(&str, &str)]) -> Relay {
        Relay::start_in(None, env)
    }

    /// Like [`Relay::start_with_env`], with the data directory under
    /// `parent` (for example a small filesystem a test mounted).
    pub fn start_in(parent: Option<&Path>, env: &[(&str, &str)]) -> Relay {
        let data = match parent {
            Some(p) => tempfile::tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .expect("temp dir for the relay");
        let logs = tempfile::tempdir().expect("temp dir for relay logs");
        let out = run_with_timeout(
            Command::new(binary("sotto-relay"))
                .arg("init")
                .arg("--data-dir")
                .arg(data.path().join("relay"))
                .arg("--listen")
                .arg("127.0.0.1:0"),
            "sotto-relay init",
        );
        assert!(
            out.status.success(),
            "sotto-relay init failed\n{}",
            describe(&out)
        );
        let mut relay = Relay {
            data,
            logs,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            starts: 0,
            env: LOOPBACK_LIMITS
                .iter()
                .chain(env)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        relay.spawn(None);
        relay
    }

    /// The relay's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("relay")
    }

    /// The UDP address the relay is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes an invite link for `uses` registrations.
    pub fn invite(&self, uses: u32) -> String {
        let out = run_with_timeout(
            Command::new(binary("sotto-relay"))
                .arg("invite")
                .arg("--data-dir")
                .arg(self.data_dir())
                .arg("--uses")
                .arg(uses.to_string()),
            "sotto-relay invite",
        );
        assert!(
            out.status.success(),
            "sotto-relay invite failed\n{}",
            describe(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let link = stdout
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or_default()
            .to_string();
        assert!(
            link.starts_with("sotto://join?"),
            "the last line of `sotto-relay invite` is not a link\n{}",
            describe(&out)
        );
        link
    }

    /// The relay process id, while it runs (for RSS measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the relay process is still running.
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the relay with SIGKILL (no chance to flush anything) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `serve` again on the same data directory and the same port, so
    /// clients registered with the old address still reach it.
    pub fn restart(&mut self) {
        self.kill9();
        let addr = self.addr;
        self.spawn(Some(addr));
        assert_eq!(
            self.addr, addr,
            "the relay came back on a different address"
        );
    }

    /// Waits (up to 20 s) until the relay's log holds `needle` at least
    /// `times` times; panics with the log otherwise.
    pub fn wait_for_log(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.stderr().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "relay never logged {needle:?}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the relay has written to stderr so far, across restarts.
    pub fn stderr(&self) -> String {
        let mut all = String::new();
        for n in 1..=self.starts {
            let path = self.logs.path().join(format!("serve-{n}.log"));
            all.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        all
    }

    fn spawn(&mut self, listen: Option<SocketAddr>) {
        self.starts += 1;
        let log_path = self.logs.path().join(format!("serve-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).expect("relay log file");
        let mut cmd = Command::new(binary("sotto-relay"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(addr) = listen {
            cmd.env("SOTTO_RELAY_LISTEN", addr.to_string());
        }
        let mut child = cmd.spawn().expect("start sotto-relay serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout for the life of the process so the relay
            // never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("listening on ") {
                        self.addr = rest
                            .trim()
                            .parse()
                            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "sotto-relay serve did not print `listening on` within {TIMEOUT:?}\n--- stderr ---\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        }
        self.child = Some(child);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One client profile (its own `--home`), registered with a relay.
pub struct User {
    /// The display name given at `init`.
    pub name: String,
    home: TempDir,
}

impl User {
    /// Creates a profile and registers it with a fresh single-use invite.
    pub fn new(relay: &Relay, name: &str) -> User {
        let user = User::uninitialised(name);
        user.ok(&["init", "--invite", &relay.invite(1), "--name", name]);
        user
    }

    /// Creates a profile and registers it with a given invite link.
    pub fn with_invite(link: &str, name: &str) -> User {
        let user = User::uninitialised(name);
        user.ok(&["init", "--invite", link, "--name", name]);
        user
    }

    /// A profile directory on which `init` has not run yet.
    pub fn uninitialised(name: &str) -> User {
        User {
            name: name.to_string(),
            home: tempfile::tempdir().expect("temp dir for a profile"),
        }
    }

    /// The profile directory.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A `sotto` command for this profile, with the test passphrase set.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(binary("sotto"));
        cmd.arg("--home")
            .arg(self.home.path())
            .env("SOTTO_PASSPHRASE", PASSPHRASE)
            .env_remove("SOTTO_HOME")
            .env_remove("SOTTO_DANGER_CRASH_BEFORE_ACK");
        cmd
    }

    /// Starts `sotto listen --json`; returns the child and its stdout lines.
    pub fn listen(&self) -> (Child, mpsc::Receiver<String>) {
        let mut child = self
            .command()
            .args(["listen", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sotto listen");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    /// Starts `sotto app --no-browser` for this profile on 127.0.0.1 (port
    /// 0) with `env`, and waits until it serves (its control socket and
    /// `HOME/app-url` exist). Unlocked at start unless `env` clears
    /// SOTTO_PASSPHRASE (`("SOTTO_PASSPHRASE", "")`).
    pub fn app(&self, env: &[(&str, &str)]) -> App {
        self.app_with(&[], env)
    }

    /// [`User::app`] with more arguments (`sotto app ARGS --no-browser`),
    /// for example the `sotto://` link it is opened with.
    pub fn app_with(&self, args: &[&str], env: &[(&str, &str)]) -> App {
        let mut cmd = self.command();
        cmd.arg("app")
            .args(args)
            .arg("--no-browser")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().expect("spawn sotto app");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let errors = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut all) = sink.lock() {
                    all.push_str(&line);
                    all.push('\n');
                }
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        let url = loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("http://127.0.0.1:") => break line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    panic!(
                        "sotto app for {} ended ({status}) before printing its address\n{}",
                        self.name,
                        errors.lock().map(|e| e.clone()).unwrap_or_default()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "sotto app for {} printed no address within {TIMEOUT:?}",
                self.name
            );
        };
        // The address is printed once the service is unlocked (if it was to be).
        assert!(
            self.home().join("control.sock").exists(),
            "no control socket"
        );
        App {
            child: Some(child),
            url,
            errors,
        }
    }

    /// Runs `sotto ARGS` and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    /// Runs `sotto ARGS` with extra environment variables.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(
            &mut cmd,
            &format!("sotto {} (as {})", args.join(" "), self.name),
        )
    }

    /// Runs `sotto ARGS`, asserts it succeeded, and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`sotto {}` failed for {}\n{}",
            args.join(" "),
            self.name,
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sotto ARGS`, asserts it failed, and returns its stderr and stdout
    /// together (where the helpful message is).
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "`sotto {}` should have failed for {}\n{}",
            args.join(" "),
            self.name,
            describe(&out)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
    }

    /// This user's contact code (first line of `sotto whoami`).
    pub fn code(&self) -> String {
        let out = self.ok(&["whoami"]);
        let code = out.lines().next().unwrap_or_default().trim().to_string();
        assert!(
            !code.is_empty(),
            "`sotto whoami` printed no code for {}",
            self.name
        );
        code
    }

    /// Adds `other` as a contact under `as_name`.
    pub fn add_contact(&self, as_name: &str, other: &User) {
        self.ok(&["contact", "add", as_name, &other.code()]);
    }

    /// Adds a contact from a contact code.
    pub fn add_contact_code(&self, as_name: &str, code: &str) {
        self.ok(&["contact", "add", as_name, code]);
    }

    /// Runs `sotto sync --json` and parses one JSON object per line.
    pub fn sync_json(&self) -> Vec<serde_json::Value> {
        parse_json_lines(&self.ok(&["sync", "--json"]), "sync --json")
    }

    /// Runs `sotto history NAME --json` and parses one JSON object per line.
    pub fn history_json(&self, name: &str) -> Vec<serde_json::Value> {
        parse_json_lines(&self.ok(&["history", name, "--json"]), "history --json")
    }
}

/// Every file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Which of `needles` occur in any file under `dir`, as "needle in path".
pub fn leaks(dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for path in files(dir) {
        // Sockets and the like cannot be read; they hold no data at rest.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(format!("{needle:?} in {}", path.display()));
            }
        }
    }
    found
}

/// Parses output that holds one JSON object per non-empty line.
pub fn parse_json_lines(out: &str, what: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("`{what}` printed a line that is not JSON ({e}): {l:?}"))
        })
        .collect()
}

/// The `text` fields of parsed messages, in order.
pub fn texts(messages: &[serde_json::Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A network that drops UDP: clients dial [`UdpBlocked::addr`], where a UDP
/// socket swallows every datagram (as a firewall that drops QUIC would) and
/// TCP is forwarded to the relay's port. Threads end with the test process.
pub struct UdpBlocked {
    addr: SocketAddr,
    udp: std::net::UdpSocket,
    connections: Arc<AtomicUsize>,
}

impl UdpBlocked {
    /// Starts forwarding TCP on a fresh port to `relay`.
    pub fn in_front_of(relay: SocketAddr) -> UdpBlocked {
        // Both on one port, like the relay: a UDP socket nobody reads, and TCP.
        let (udp, listener) = loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
            let port = udp.local_addr().expect("udp addr").port();
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                break (udp, l);
            }
        };
        let addr = listener.local_addr().expect("tcp addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(upstream) = std::net::TcpStream::connect(relay) else {
                    continue;
                };
                counter.fetch_add(1, Ordering::Relaxed);
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        upstream.try_clone().expect("clone"),
                    ),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        UdpBlocked {
            addr,
            udp,
            connections,
        }
    }

    /// Where clients behind this network dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// QUIC datagrams dropped since the last call (the socket is drained).
    pub fn udp_datagrams_dropped(&self) -> usize {
        self.udp.set_nonblocking(true).expect("nonblocking udp");
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while self.udp.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    }

    /// TCP connections forwarded so far.
    pub fn tcp_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// `link` with its relay address replaced by this front's.
    pub fn rewrite(&self, link: &str) -> String {
        let mut parsed: sotto_wire::invite::InviteLink = link.parse().expect("a valid invite link");
        parsed.relay = self.addr.to_string();
        parsed.to_string()
    }
}

/// A running `sotto app` (see [`User::app`]); stopped with SIGTERM on drop.
pub struct App {
    child: Option<Child>,
    /// The launch address it printed.
    pub url: String,
    errors: Arc<std::sync::Mutex<String>>,
}

impl App {
    /// What it printed to stderr so far.
    pub fn stderr(&self) -> String {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// A browser session that opened the launch address (see [`http`]).
    pub fn browser(&self) -> http::Browser {
        http::Browser::launch(&self.url)
    }

    /// Waits up to `within` for it to end by itself (Quit in the app); its
    /// exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Stops it with SIGTERM and waits; panics unless it exits 0 in time.
    pub fn stop(mut self) {
        let child = self.child.take().expect("running");
        stop_child(child, &self.stderr());
    }
}

fn stop_child(mut child: Child, stderr: &str) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "sotto app exited with {status}\n{stderr}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sotto app did not stop within {TIMEOUT:?} of SIGTERM\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_skip_blanks_and_keep_order() {
        let parsed = parse_json_lines("{\"text\":\"a\"}\n\n{\"text\":\"b\"}\n", "t");
        assert_eq!(texts(&parsed), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn describe_shows_both_streams() {
        let out = run_with_timeout(
            Command::new("sh")
                .arg("-c")
                .arg("echo out; echo err >&2; exit 3"),
            "sh",
        );
        let text = describe(&out);
        assert!(text.contains("out") && text.contains("err"), "{text}");
        assert!(!out.status.success());
    }
}
