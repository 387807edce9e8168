//! A tiny HTTP/1.1 client for driving `sotto app` from tests the way a
//! browser does: one cookie, the CSRF token read from the pages, forms
//! posted URL-encoded, and the `/events` stream read line by line. Written
//! on `std::net::TcpStream` (no HTTP client in the workspace).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Location` of a redirect (panics when there is none).
    pub fn location(&self) -> &str {
        self.header("location")
            .unwrap_or_else(|| panic!("no Location in {} {}", self.status, self.body))
    }
}

/// A browser session on one app.
pub struct Browser {
    addr: SocketAddr,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Browser {
    /// A browser with no cookie for the app at `addr`.
    pub fn new(addr: SocketAddr) -> Browser {
        Browser {
            addr,
            cookie: None,
            csrf: None,
        }
    }

    /// Opens the launch address `sotto app` printed and keeps the cookie.
    pub fn launch(url: &str) -> Browser {
        let rest = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("not an http URL: {url}"));
        let slash = rest.find('/').unwrap_or(rest.len());
        let addr: SocketAddr = rest[..slash]
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {url}: {e}"));
        let mut b = Browser::new(addr);
        let reply = b.get(&rest[slash..]);
        assert_eq!(reply.status, 303, "launch refused: {}", reply.body);
        let cookie = reply
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("launch set no cookie: {:?}", reply.headers))
            .to_string();
        b.cookie = Some(cookie);
        b
    }

    /// The address of the app.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// GET `path`.
    pub fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, &[], None)
    }

    /// POST the form `fields` (and the CSRF token) to `path`.
    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        if self.csrf.is_none() {
            self.get("/");
        }
        let token = self
            .csrf
            .clone()
            .unwrap_or_else(|| panic!("no CSRF token seen on any page yet"));
        let mut body = format!("csrf={}", encode(&token));
        for (k, v) in fields {
            body.push('&');
            body.push_str(&encode(k));
            body.push('=');
            body.push_str(&encode(v));
        }
        self.request(
            "POST",
            path,
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Origin", &format!("http://{}", self.addr)),
                ("Sec-Fetch-Site", "same-origin"),
            ],
            Some(body.into_bytes()),
        )
    }

    /// Any request, with extra headers.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut stream = self.open(method, path, headers, body.as_deref());
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("{method} {path}: reading the reply: {e}"));
        let reply = parse(&raw).unwrap_or_else(|| {
            panic!(
                "{method} {path}: not an HTTP reply: {}",
                String::from_utf8_lossy(&raw)
            )
        });
        if let Some(t) = csrf_in(&reply.body) {
            self.csrf = Some(t);
        }
        reply
    }

    fn open(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr)
            .unwrap_or_else(|e| panic!("cannot connect to the app at {}: {e}", self.addr));
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(c) = &self.cookie {
            head.push_str(&format!("Cookie: {c}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.unwrap_or_default()))
            .unwrap_or_else(|e| panic!("{method} {path}: sending: {e}"));
        stream
    }

    /// Opens `/events` and returns its `(event, data)` pairs as they come.
    pub fn events(&self) -> mpsc::Receiver<(String, String)> {
        let stream = self.open("GET", "/events", &[("Accept", "text/event-stream")], None);
        stream.set_read_timeout(None).ok();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            // Status line and headers.
            let mut chunked = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line
                    .to_ascii_lowercase()
                    .starts_with("transfer-encoding: chunked")
                {
                    chunked = true;
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut text = String::new();
            let (mut event, mut data) = (String::new(), String::new());
            loop {
                let piece = if chunked {
                    let mut size = String::new();
                    if reader.read_line(&mut size).unwrap_or(0) == 0 {
                        return;
                    }
                    let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                        return;
                    };
                    let mut buf = vec![0; n + 2];
                    if reader.read_exact(&mut buf).is_err() || n == 0 {
                        return;
                    }
                    buf.truncate(n);
                    String::from_utf8_lossy(&buf).into_owned()
                } else {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    line
                };
                text.push_str(&piece);
                while let Some(end) = text.find('\n') {
                    let line: String = text.drain(..=end).collect();
                    let line = line.trim_end_matches(['\r', '\n']);
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = v.trim().to_string();
                    } else if line.is_empty()
                        && !event.is_empty()
                        && tx
                            .send((std::mem::take(&mut event), std::mem::take(&mut data)))
                            .is_err()
                    {
                        return;
                    }
                }
            }
        });
        rx
    }
}

/// Waits for an event `kind` whose data contains `needle`.
pub fn wait_event(
    rx: &mpsc::Receiver<(String, String)>,
    kind: &str,
    needle: &str,
    within: Duration,
) -> String {
    let deadline = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((k, d)) if k == kind && d.contains(needle) => return d,
            Ok(other) => seen.push(other),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no `{kind}` event with {needle:?} within {within:?}; saw {seen:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!(
                    "the event stream ended before a `{kind}` event with {needle:?}; saw {seen:?}"
                )
            }
        }
    }
}

/// The CSRF token in a page's hidden field, if any.
fn csrf_in(body: &str) -> Option<String> {
    let at = body.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    let end = body[at..].find('"')?;
    Some(body[at..at + end].to_string())
}

/// Percent-encodes a form value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn parse(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = unchunk(&body)?;
    }
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn unchunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n")?;
        let n = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).ok()?.trim(), 16).ok()?;
        raw = &raw[eol + 2..];
        if n == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..n)?);
        raw = raw.get(n + 2..)?;
    }
}
