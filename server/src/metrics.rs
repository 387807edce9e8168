//! Prometheus text metrics on a loopback address (`metrics_listen`, off by
//! default): connections, envelopes in and out, queue depth, request latency
//! by kind, and refusals by reason. Counts and timings only, never content,
//! names or account ids.
//!
//! The HTTP side is a few lines over a `TcpListener` rather than a web
//! framework: it answers `GET /metrics` and nothing else, reads at most
//! [`MAX_REQUEST`] bytes within [`READ_TIMEOUT`], and closes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sotto_wire::relay::{ErrorCode, request, response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::net::Shared;
use crate::store::MailboxStore;

/// Request kinds, in the order of [`kind_index`].
const KINDS: &[&str] = &[
    "challenge",
    "register",
    "authenticate",
    "upload_pre_keys",
    "pre_key_count",
    "fetch_bundle",
    "sender_certificate",
    "send",
    "fetch",
    "ack",
    "reset_identity",
    "fetch_identity",
    "send_multi",
    "group_write",
    "group_read",
    "group_join_request",
    "group_fetch_requests",
    "group_delete_requests",
    "delete_account",
    "timestamp",
    "empty",
];

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Error codes counted as refusals (index = the proto enum value).
const CODES: usize = 20;

/// Longest request the endpoint reads.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a scraper may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The relay's counters.
pub struct Metrics {
    envelopes_in: AtomicU64,
    envelopes_out: AtomicU64,
    pushes: AtomicU64,
    refused: [AtomicU64; CODES],
    /// Per kind: one counter per bucket, then +Inf.
    buckets: Vec<[AtomicU64; BUCKETS.len() + 1]>,
    sum_micros: Vec<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            envelopes_in: AtomicU64::new(0),
            envelopes_out: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: KINDS
                .iter()
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            sum_micros: KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Where a request kind's figures go.
pub fn kind_index(kind: Option<&request::Kind>) -> usize {
    use request::Kind as K;
    match kind {
        Some(K::Challenge(_)) => 0,
        Some(K::Register(_)) => 1,
        Some(K::Authenticate(_)) => 2,
        Some(K::UploadPreKeys(_)) => 3,
        Some(K::PreKeyCount(_)) => 4,
        Some(K::FetchBundle(_)) => 5,
        Some(K::SenderCertificate(_)) => 6,
        Some(K::Send(_)) => 7,
        Some(K::Fetch(_)) => 8,
        Some(K::Ack(_)) => 9,
        Some(K::ResetIdentity(_)) => 10,
        Some(K::FetchIdentity(_)) => 11,
        Some(K::SendMulti(_)) => 12,
        Some(K::GroupWrite(_)) => 13,
        Some(K::GroupRead(_)) => 14,
        Some(K::GroupJoinRequest(_)) => 15,
        Some(K::GroupFetchRequests(_)) => 16,
        Some(K::GroupDeleteRequests(_)) => 17,
        Some(K::DeleteAccount(_)) => 18,
        Some(K::Timestamp(_)) => 19,
        None => 20,
    }
}

impl Metrics {
    /// Records one handled request: its kind, how long it took (including
    /// the flush), and what it did. `acked` is the number of envelopes an
    /// `Ack` named.
    pub fn request(
        &self,
        kind: usize,
        took: Duration,
        answer: Option<&response::Kind>,
        acked: u64,
    ) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        if let Some(counters) = self.buckets.get(kind) {
            counters[bucket].fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            self.sum_micros[kind].fetch_add(micros, Ordering::Relaxed);
        }
        match answer {
            Some(response::Kind::Error(e)) => {
                let code = usize::try_from(e.code).unwrap_or(0).min(CODES - 1);
                self.refused[code].fetch_add(1, Ordering::Relaxed);
            }
            Some(response::Kind::Sent(_)) => {
                self.envelopes_in.fetch_add(1, Ordering::Relaxed);
            }
            Some(response::Kind::SentMulti(m)) => {
                self.envelopes_in
                    .fetch_add(u64::from(m.recipients), Ordering::Relaxed);
            }
            Some(response::Kind::Done(_)) if acked > 0 => {
                self.envelopes_out.fetch_add(acked, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Counts one push handed to a connection.
    pub fn pushed(&self) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything, with `connections` and
    /// `queued` read by the caller.
    pub fn render(&self, connections: usize, queued: usize, disk_free: u64) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "sotto_disk_free_bytes",
                "gauge",
                "Free space on the database's filesystem (refusals start below min_free_disk_bytes).",
                disk_free,
            ),
            (
                "sotto_connections",
                "gauge",
                "Client connections open now (QUIC and TCP).",
                connections as u64,
            ),
            (
                "sotto_queued_envelopes",
                "gauge",
                "Envelopes waiting in mailboxes.",
                queued as u64,
            ),
            (
                "sotto_envelopes_in_total",
                "counter",
                "Envelopes stored for delivery.",
                load(&self.envelopes_in),
            ),
            (
                "sotto_envelopes_out_total",
                "counter",
                "Envelopes delivered and acknowledged by their recipient.",
                load(&self.envelopes_out),
            ),
            (
                "sotto_pushes_total",
                "counter",
                "Envelopes pushed to live connections.",
                load(&self.pushes),
            ),
        ] {
            head(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        head(
            &mut out,
            "sotto_requests_refused_total",
            "counter",
            "Requests answered with an error, by reason.",
        );
        for (code, count) in self.refused.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let reason = i32::try_from(code)
                .ok()
                .and_then(|c| ErrorCode::try_from(c).ok())
                .map_or("ERROR_UNSPECIFIED", |c| c.as_str_name());
            let _ = writeln!(
                out,
                "sotto_requests_refused_total{{reason=\"{reason}\"}} {count}"
            );
        }
        head(
            &mut out,
            "sotto_request_duration_seconds",
            "histogram",
            "Time to handle a request, durable flush included, by kind.",
        );
        for (i, kind) in KINDS.iter().enumerate() {
            let counts: Vec<u64> = self.buckets[i]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (b, le) in BUCKETS.iter().enumerate() {
                cumulative += counts[b];
                let _ = writeln!(
                    out,
                    "sotto_request_duration_seconds_bucket{{kind=\"{kind}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "sotto_request_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {total}"
            );
            let sum = self.sum_micros[i].load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "sotto_request_duration_seconds_sum{{kind=\"{kind}\"}} {sum}\n\
                 sotto_request_duration_seconds_count{{kind=\"{kind}\"}} {total}"
            );
        }
        out
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let (mut stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Ok(Some(path)) = tokio::time::timeout(READ_TIMEOUT, read_path(&mut stream))
                .await
                .map(Result::ok)
                .map(Option::flatten)
            else {
                return;
            };
            let (status, body) = if path == "/metrics" {
                let queued = shared.relay.store().queued_count();
                (
                    "200 OK",
                    shared
                        .metrics
                        .render(shared.connections(), queued, shared.disk.free_bytes()),
                )
            } else {
                (
                    "404 Not Found",
                    "only /metrics is served here\n".to_string(),
                )
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Reads an HTTP request head and returns the path of a `GET`.
async fn read_path(stream: &mut tokio::net::TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => Ok(Some(path.split('?').next().unwrap_or(path).to_string())),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_wire::relay;

    #[test]
    fn render_counts_latency_refusals_and_envelopes() {
        let m = Metrics::default();
        let send = kind_index(Some(&request::Kind::Send(relay::Send::default())));
        let sent = response::Kind::Sent(relay::Sent { seq: 1 });
        m.request(send, Duration::from_micros(700), Some(&sent), 0);
        m.request(send, Duration::from_millis(30), Some(&sent), 0);
        let limited = response::Kind::Error(relay::Error {
            code: ErrorCode::RateLimited as i32,
            ..Default::default()
        });
        m.request(send, Duration::from_micros(10), Some(&limited), 0);
        let ack = kind_index(Some(&request::Kind::Ack(relay::Ack::default())));
        m.request(
            ack,
            Duration::from_micros(10),
            Some(&response::Kind::Done(relay::Done {})),
            2,
        );
        let text = m.render(3, 5, 1024);
        for line in [
            "sotto_connections 3",
            "sotto_disk_free_bytes 1024",
            "sotto_queued_envelopes 5",
            "sotto_envelopes_in_total 2",
            "sotto_envelopes_out_total 2",
            "sotto_requests_refused_total{reason=\"RATE_LIMITED\"} 1",
            "sotto_request_duration_seconds_bucket{kind=\"send\",le=\"0.0005\"} 1",
            "sotto_request_duration_seconds_bucket{kind=\"send\",le=\"0.001\"} 2",
            "sotto_request_duration_seconds_bucket{kind=\"send\",le=\"0.05\"} 3",
            "sotto_request_duration_seconds_bucket{kind=\"send\",le=\"+Inf\"} 3",
            "sotto_request_duration_seconds_count{kind=\"ack\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Kinds never seen are left out rather than printed as zeros.
        assert!(!text.contains("kind=\"group_write\""));
    }
}
