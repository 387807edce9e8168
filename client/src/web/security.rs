//! The security layers every request passes, outermost first:
//!
//! 1. [`headers`]: the same strict headers on every response (pages, errors,
//!    assets, refusals).
//! 2. [`check_host`]: the `Host` header must name the bound address exactly.
//! 3. [`authenticate`]: the one-time launch token becomes a session cookie;
//!    every other request needs that cookie.
//! 4. [`check_csrf`]: every request that can change something must come from
//!    our own page (`Sec-Fetch-Site`, `Origin`) and carry the session's CSRF
//!    token.
//!
//! Why each exists is written at each function (and in ARCHITECTURE.md,
//! "Local web app"). The model follows Jupyter (`check_host`, the token
//! exchanged for a cookie) and Syncthing (`localhostMiddleware`, `csrfManager`).

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use maud::html;
use std::sync::Mutex;

use super::AppState;
use super::layout;

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "sotto_session";

/// The largest form body read to find the CSRF token (a message is at most
/// 32 KiB, tripled by URL encoding).
const FORM_LIMIT: usize = 256 * 1024;

/// The largest multipart body (a file for the evidence locker plus fields).
const MULTIPART_LIMIT: usize = crate::engine::MAX_NOTE_FILE_BYTES + 256 * 1024;

/// The random values that make a browser the user's: none of them is ever
/// logged or put in a URL other than the one printed launch address.
pub(crate) struct Secrets {
    /// The current one-time launch token (32 random bytes, hex). Using it
    /// replaces it with a new one, which only `HOME/app-url` (0600) holds.
    launch: Mutex<String>,
    /// Whether a launch token was ever used (before that, no cookie works).
    launched: Mutex<bool>,
    /// The session cookie's value (32 random bytes, hex).
    session: String,
    /// The CSRF token of the session (32 random bytes, hex).
    csrf: String,
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Secrets {
    pub(crate) fn new() -> Secrets {
        Secrets {
            launch: Mutex::new(random_hex()),
            launched: Mutex::new(false),
            session: random_hex(),
            csrf: random_hex(),
        }
    }

    /// The launch token that works now.
    pub(crate) fn launch_token(&self) -> String {
        self.launch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The session's CSRF token, for forms and `hx-headers`.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Takes the launch token if `token` is it (it then never works again)
    /// and returns the next one.
    fn take_launch(&self, token: &str) -> Option<String> {
        let mut launch = self.launch.lock().unwrap_or_else(|e| e.into_inner());
        if !same(launch.as_bytes(), token.as_bytes()) {
            return None;
        }
        *launch = random_hex();
        *self.launched.lock().unwrap_or_else(|e| e.into_inner()) = true;
        Some(launch.clone())
    }

    /// Whether the request carries this session's cookie.
    fn has_session(&self, headers: &HeaderMap) -> bool {
        if !*self.launched.lock().unwrap_or_else(|e| e.into_inner()) {
            return false;
        }
        cookie(headers, COOKIE).is_some_and(|v| same(v.as_bytes(), self.session.as_bytes()))
    }
}

/// Compares two secrets in time that does not depend on where they differ,
/// so response timing cannot reveal a token byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Puts the security layers around `routes`, plus a 404 page for anything
/// else (which passes the same layers).
pub(crate) fn wrap(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), check_csrf))
        .layer(from_fn_with_state(state.clone(), authenticate))
        .layer(from_fn_with_state(state.clone(), check_host))
        .layer(from_fn(headers))
        .with_state(state)
}

async fn not_found(State(st): State<AppState>) -> Response {
    layout::message_page(
        &st,
        StatusCode::NOT_FOUND,
        "Not found",
        html! { p { "There is no such page in Sotto. " a href="/" { "Go to your chats" } "." } },
    )
}

/// The headers on every response, errors and assets included.
///
/// - `Content-Security-Policy`: only our own script and style run (no inline
///   script, no `eval`), nothing loads from elsewhere, forms post only to us,
///   and no other site may frame the app (clickjacking). A name or message
///   that slipped past escaping still could not run script.
/// - `Referrer-Policy: no-referrer`: a link followed out of the app does not
///   tell the other site the app's address.
/// - `Cache-Control: no-store`: pages with names and messages are not written
///   to the browser's disk cache, where they would outlive a panic.
/// - `X-Content-Type-Options: nosniff`: a response is never run as another
///   type than it says.
/// - `X-Frame-Options: DENY`: framing refused by browsers that ignore
///   `frame-ancestors`.
/// - `Cross-Origin-Opener-Policy` / `Cross-Origin-Resource-Policy`: other
///   sites cannot keep a handle on our window or embed our responses.
pub(crate) async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        h.insert(*name, HeaderValue::from_static(value));
    }
    resp
}

/// The Content-Security-Policy of every response.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Every header [`headers`] sets, for the layer and its tests.
pub(crate) const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CSP),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// The `Host` values this app answers to: the bound address, and
/// `localhost` with the same port.
fn allowed_hosts(st: &AppState) -> [String; 2] {
    [st.addr.to_string(), format!("localhost:{}", st.addr.port())]
}

/// Refuses a request whose `Host` is not exactly our bound address.
///
/// Protects against DNS rebinding: a web page on `evil.example` can make
/// its own name resolve to 127.0.0.1 and then talk to this port as "same
/// origin", but its requests still say `Host: evil.example:PORT`.
pub(crate) async fn check_host(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match host {
        Some(h) if allowed_hosts(&st).iter().any(|a| a == h) => next.run(req).await,
        _ => (
            StatusCode::MISDIRECTED_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This address is not the Sotto app. Open the address `sotto app` printed.\n",
        )
            .into_response(),
    }
}

/// Exchanges the one-time launch token for the session cookie, and refuses
/// every other request without that cookie (the static assets excepted:
/// they are the public files of the source tree and hold nothing of the
/// profile; the refusal page needs its stylesheet).
///
/// Protects against other local users and other programs (and web pages,
/// which cannot read our cookie) using the app: only the browser that
/// opened the printed address holds the cookie. The cookie is `HttpOnly`
/// (no script reads it) and `SameSite=Strict` (no other site's page sends
/// it). The token works once, so an address left in a shell history, the
/// `app-url` file or the browser's history opens nothing later; the
/// redirect removes it from the address bar.
pub(crate) async fn authenticate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/launch" {
        return launch(&st, &req);
    }
    if path.starts_with("/assets/") || st.security.has_session(req.headers()) {
        return next.run(req).await;
    }
    layout::message_page(
        &st,
        StatusCode::UNAUTHORIZED,
        "Open Sotto",
        html! {
            p { "Open the address `sotto app` printed." }
            p { "Each address works once. If you have used it already in another window, go back \
                 to that window, or run " code { "sotto app" } " again: while Sotto runs, it \
                 prints a fresh address." }
        },
    )
}

fn launch(st: &AppState, req: &Request) -> Response {
    if st.security.has_session(req.headers()) {
        return see_other("/");
    }
    let token = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or("");
    let next = if req.method() == Method::GET {
        st.security.take_launch(token)
    } else {
        None
    };
    let Some(next) = next else {
        return layout::message_page(
            st,
            StatusCode::UNAUTHORIZED,
            "Open Sotto",
            html! {
                p { "This address has been used already or is not the one Sotto printed. \
                     Open the address `sotto app` printed." }
                p { "Each address works once. For a new one, run " code { "sotto app" }
                    " again: while Sotto runs, it prints a fresh address." }
            },
        );
    };
    replace_app_url(st, &next);
    // Opened from another site or a local file (the page `sotto app` hands
    // to xdg-open so the token stays out of the browser's command line),
    // browsers withhold a SameSite=Strict cookie from the whole redirect
    // chain, so a 303 would land on the refusal page. A page of ours that
    // moves on by itself (meta refresh, no script) starts a same-site
    // navigation that carries the cookie. Typed or pasted addresses get
    // the plain 303.
    let direct = req
        .headers()
        .get("sec-fetch-site")
        .is_none_or(|v| v.as_bytes() == b"none" || v.as_bytes() == b"same-origin");
    let mut resp = if direct {
        see_other("/")
    } else {
        layout::continue_page()
    };
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        st.security.session
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// Puts the next launch address in `HOME/app-url`, where `sotto app` keeps
/// it (0600) and where a second `sotto app` for the running profile reads
/// what to print: a person who closed the browser can get in again, while
/// every used address stays dead. Only a file `sotto app` wrote is replaced
/// (written beside it and renamed, so it is never half there).
fn replace_app_url(st: &AppState, token: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = st.handle.home().join("app-url");
    if !path.exists() {
        return;
    }
    let fresh = st.handle.home().join(".app-url.new");
    let _ = std::fs::remove_file(&fresh);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&fresh)
        .and_then(|mut f| {
            f.write_all(format!("http://{}/launch?token={token}\n", st.addr).as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&fresh, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&fresh);
        tracing::warn!("could not write the next launch address to app-url");
    }
}

/// A 303 to `to` (after a POST, the browser GETs the page: reloading it
/// does not send the form again).
pub(crate) fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
        )],
    )
        .into_response()
}

/// Refuses a request that could change something (any method but GET and
/// HEAD) unless it comes from our own page.
///
/// Protects against cross-site request forgery: another site's page can
/// make the browser POST here, and SameSite=Strict already keeps our cookie
/// off such requests in current browsers. Three more checks, each enough on
/// its own in a browser that sends it: `Sec-Fetch-Site` must be absent or
/// `same-origin`; `Origin`, when sent, must be our own; and the request must
/// carry the session's CSRF token (a hidden `csrf` form field, or the
/// `X-CSRF-Token` header that htmx sends from `hx-headers` on `<body>`),
/// which no other origin can read.
pub(crate) async fn check_csrf(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let refuse = |st: &AppState| {
        layout::message_page(
            st,
            StatusCode::FORBIDDEN,
            "Not sent",
            html! {
                p { "Nothing was changed: this request did not come from a Sotto page. \
                     Go back to the app and try again." }
            },
        )
    };
    let headers = req.headers();
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    let site_ok = fetch_site.is_none_or(|v| v == b"same-origin");
    // Our own `Referrer-Policy: no-referrer` makes Chromium send
    // `Origin: null` on our own form posts; that is accepted only when the
    // browser also says `Sec-Fetch-Site: same-origin` (a header no page can
    // set), never on its own (a sandboxed frame elsewhere also says null).
    let origin_ok = headers.get(header::ORIGIN).is_none_or(|o| {
        allowed_hosts(&st)
            .iter()
            .any(|h| o.as_bytes() == format!("http://{h}").as_bytes())
            || (o.as_bytes() == b"null" && fetch_site == Some(b"same-origin"))
    });
    if !site_ok || !origin_ok {
        return refuse(&st);
    }
    let want = st.security.csrf().as_bytes();
    if headers
        .get("x-csrf-token")
        .is_some_and(|t| same(t.as_bytes(), want))
    {
        return next.run(req).await;
    }
    // No header: the token must be a field of the form. Read the body (up
    // to a limit), look for it, and hand the same bytes on.
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (multipart, limit) = if kind.starts_with("application/x-www-form-urlencoded") {
        (false, FORM_LIMIT)
    } else if kind.starts_with("multipart/form-data") {
        (true, MULTIPART_LIMIT)
    } else {
        return refuse(&st);
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, limit).await else {
        return layout::message_page(
            &st,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            html! { p { "That is more than Sotto takes in one go; nothing was changed." } },
        );
    };
    let found = if multipart {
        multipart_field(&bytes, "csrf")
    } else {
        form_field(&bytes, "csrf")
    };
    if !found.is_some_and(|t| same(t, want)) {
        return refuse(&st);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The raw value of field `name` in a URL-encoded form (the token is hex,
/// so it needs no decoding; an encoded one simply does not match).
fn form_field<'b>(body: &'b [u8], name: &str) -> Option<&'b [u8]> {
    body.split(|b| *b == b'&').find_map(|kv| {
        let eq = kv.iter().position(|b| *b == b'=')?;
        (&kv[..eq] == name.as_bytes()).then(|| &kv[eq + 1..])
    })
}

/// The value of a small text field `name` in a multipart body.
fn multipart_field<'b>(body: &'b [u8], name: &str) -> Option<&'b [u8]> {
    let needle = format!("name=\"{name}\"");
    let at = find(body, needle.as_bytes())?;
    let rest = &body[at + needle.len()..];
    // The field's own headers end at the first blank line; its value runs
    // to the next line break (the boundary follows it).
    let start = find(rest, b"\r\n\r\n")? + 4;
    let value = &rest[start..];
    let end = find(value, b"\r\n")?;
    Some(&value[..end])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_field_finds_exact_names_only() {
        assert_eq!(form_field(b"a=1&csrf=ab&x=2", "csrf"), Some(&b"ab"[..]));
        assert_eq!(form_field(b"xcsrf=ab", "csrf"), None);
        assert_eq!(form_field(b"csrfx=ab", "csrf"), None);
        assert_eq!(form_field(b"", "csrf"), None);
    }

    #[test]
    fn multipart_field_reads_the_value() {
        let body = b"--B\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n--B\r\n\
                     Content-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--B--\r\n";
        assert_eq!(multipart_field(body, "csrf"), Some(&b"abc"[..]));
        assert_eq!(multipart_field(body, "note"), Some(&b"hi"[..]));
        assert_eq!(multipart_field(body, "file"), None);
    }

    #[test]
    fn same_compares_whole_values() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sotto_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "sotto"), None);
    }
}
