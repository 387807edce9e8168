//! The local web app (`sotto app`): server-rendered pages over the service's
//! [`Handle`], for people who never open a terminal.
//!
//! # How it is put together
//!
//! - [`WebApp::router`] is the whole app: every route, wrapped in the
//!   security layers of `security` (Host check, launch token and session
//!   cookie, CSRF, response headers). Nothing is reachable around them.
//! - Pages are [maud](https://maud.lambda.xyz) functions from plain data to
//!   [`maud::Markup`]; maud escapes every interpolated string, and text that
//!   came from another person is also wrapped in `<bdi>` (see `layout::person`
//!   and `layout::body_text`) so a bidi override cannot reorder the page
//!   around it.
//! - Data comes from the engine through [`Handle::with`] on the service's
//!   engine thread; handlers copy what a page needs into plain structs.
//! - URLs carry opaque ids only (`ids`): a per-run HMAC of a contact code
//!   or group id, never a name, so the browser's history holds nothing that
//!   names a person.
//!
//! # Adding a screen
//!
//! 1. Add `client/src/web/NAME.rs` with `pub(crate) fn routes() -> Router<AppState>`
//!    and handlers that return `layout::page` (a whole page: nav, Panic and
//!    Lock buttons, `<main>` with your `<h1>`) or a fragment for htmx.
//! 2. `mod NAME;` below, and merge `NAME::routes()` into `unlocked` (needs an
//!    open profile: the gate redirects to set-up or unlock otherwise) or
//!    `open` in [`WebApp::router`].
//! 3. Every form that changes something is `method="post"` and carries
//!    `layout::csrf_field`; htmx requests carry the token by themselves
//!    (`hx-headers` on `<body>`). No inline script or style: behaviour goes in
//!    `client/assets/app.js`, looks in `client/assets/app.css`.
//! 4. Test it in-process with `tower::ServiceExt::oneshot` (the helpers are
//!    in `tests` below: `fixture`, `launch`, `get`, `send`,
//!    `assert_no_inline`), and end to end in `tests/e2e/app.rs` (a real
//!    relay, `User::app`, and `sotto_tests::http::Browser`).
//!
//! Useful pieces: `chats::engine` runs a closure on the engine and turns
//! both failure layers into a `chats::Problem` (`.respond()` gives the
//! right page); `chats::all_chats` lists chats with their opaque ids; a
//! group's id is `st.ids.group(&hex_id)`, the same id its conversation uses
//! (`/chats/ID`), so a group screen lives at `/groups/ID`.

mod assets;
mod chats;
mod contacts;
mod entry;
mod events;
mod evidence;
mod groups;
pub(crate) mod ids;
pub(crate) mod layout;
mod security;
mod settings;
mod warnings;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::middleware::from_fn_with_state;

use crate::service::Handle;

/// The web app for one running service.
pub struct WebApp {
    state: AppState,
}

/// Everything a handler can reach: cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(pub(crate) Arc<Shared>);

/// What the handlers share.
pub(crate) struct Shared {
    /// The service.
    pub(crate) handle: Handle,
    /// The bound loopback address.
    pub(crate) addr: SocketAddr,
    /// Launch token, session cookie value and CSRF token.
    pub(crate) security: security::Secrets,
    /// Key for opaque ids in URLs (random per run).
    pub(crate) ids: ids::IdKey,
    /// Settings of this app (in memory; see [`settings`]).
    pub(crate) settings: Mutex<settings::AppSettings>,
    /// Unread messages per chat (opaque id), counted from the service's
    /// events since the chat was last opened.
    pub(crate) unread: Mutex<HashMap<String, usize>>,
    /// Why a message I sent is still queued (message id -> reason), as the
    /// send said; shown beside "Queued".
    pub(crate) queued: Mutex<HashMap<String, String>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl WebApp {
    /// The web app for `handle`, served on `addr`, which must be a loopback
    /// address (127.0.0.1 or ::1): another machine on the network must never
    /// reach a page that holds the profile.
    pub fn new(handle: Handle, addr: SocketAddr) -> anyhow::Result<WebApp> {
        if !addr.ip().is_loopback() {
            anyhow::bail!(
                "the app listens on this computer only: use --listen 127.0.0.1:PORT, not {addr}"
            );
        }
        if addr.port() == 0 {
            anyhow::bail!("give WebApp the address after binding (port 0 is not an address)");
        }
        let state = AppState(Arc::new(Shared {
            handle: handle.clone(),
            addr,
            security: security::Secrets::new(),
            ids: ids::IdKey::random(),
            settings: Mutex::new(settings::AppSettings::default()),
            unread: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashMap::new()),
        }));
        events::count_unread(state.clone());
        Ok(WebApp { state })
    }

    /// The address to open once: `http://127.0.0.1:PORT/launch?token=...`.
    pub fn launch_url(&self) -> String {
        format!(
            "http://{}/launch?token={}",
            self.state.addr,
            self.state.security.launch_token()
        )
    }

    /// Every route, with the security layers.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        // Screens that need an open profile: the gate sends a browser to
        // set-up, unlock or the erased page otherwise.
        let unlocked = Router::new()
            .merge(chats::routes())
            .merge(contacts::routes())
            .merge(settings::routes())
            .merge(groups::routes())
            .merge(warnings::routes())
            .merge(evidence::routes())
            .route_layer(from_fn_with_state(state.clone(), entry::gate));
        let open = Router::new()
            .merge(entry::routes())
            .merge(events::routes())
            .merge(assets::routes());
        security::wrap(unlocked.merge(open), state)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! In-process tests of the whole router (security layers included), with
    //! a service on an empty temporary home (no profile yet).

    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, Response, StatusCode, header};
    use tower::ServiceExt as _;

    pub(crate) const ADDR: &str = "127.0.0.1:4321";

    pub(crate) struct Fixture {
        pub app: WebApp,
        pub router: Router,
        _home: tempfile::TempDir,
    }

    pub(crate) fn fixture() -> Fixture {
        let home = tempfile::tempdir().expect("temp home");
        let (handle, _runner) = crate::service::start(
            home.path().to_path_buf(),
            crate::service::Settings {
                lock_after: std::time::Duration::from_secs(900),
            },
        );
        let app = WebApp::new(handle, ADDR.parse().expect("addr")).expect("loopback");
        let router = app.router();
        Fixture {
            app,
            router,
            _home: home,
        }
    }

    pub(crate) fn get(path: &str) -> axum::http::request::Builder {
        Request::get(path).header(header::HOST, ADDR)
    }

    pub(crate) async fn send(
        router: &Router,
        req: Request<Body>,
    ) -> (StatusCode, HeaderMapOf, String) {
        let resp: Response<Body> = router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = to_bytes(resp.into_body(), 4 << 20).await.expect("body");
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    pub(crate) type HeaderMapOf = axum::http::HeaderMap;

    /// Opens the launch address; returns the `Cookie` header value.
    pub(crate) async fn launch(f: &Fixture) -> String {
        let url = f.app.launch_url();
        let path = url
            .strip_prefix(&format!("http://{ADDR}"))
            .expect("our address");
        let (status, headers, _) = send(
            &f.router,
            get(path).body(Body::empty()).expect("test setup"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let set = headers[header::SET_COOKIE]
            .to_str()
            .expect("test setup")
            .to_string();
        set.split(';').next().expect("test setup").to_string()
    }

    fn csrf(f: &Fixture) -> String {
        f.app.state.security.csrf().to_string()
    }

    fn assert_security_headers(what: &str, headers: &HeaderMapOf) {
        for (name, value) in security::SECURITY_HEADERS {
            assert_eq!(
                headers.get(*name).and_then(|v| v.to_str().ok()),
                Some(*value),
                "{what}: header {name}"
            );
        }
    }

    #[test]
    fn only_loopback_addresses_are_accepted() {
        let home = tempfile::tempdir().expect("test setup");
        let (handle, _r) = crate::service::start(
            home.path().to_path_buf(),
            crate::service::Settings {
                lock_after: std::time::Duration::from_secs(60),
            },
        );
        for bad in [
            "0.0.0.0:4321",
            "192.168.1.5:4321",
            "[::]:4321",
            "127.0.0.1:0",
        ] {
            assert!(
                WebApp::new(handle.clone(), bad.parse().expect("test setup")).is_err(),
                "{bad} accepted"
            );
        }
        let ok = WebApp::new(handle, ADDR.parse().expect("test setup")).expect("test setup");
        assert!(
            ok.launch_url()
                .starts_with("http://127.0.0.1:4321/launch?token=")
        );
        let token = ok
            .launch_url()
            .rsplit('=')
            .next()
            .expect("test setup")
            .to_string();
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[tokio::test]
    async fn a_wrong_or_missing_host_is_refused() {
        let f = fixture();
        let cookie = launch(&f).await;
        for host in [
            "evil.example:4321",
            "127.0.0.1:9999",
            "127.0.0.1",
            "attacker.127.0.0.1.nip.io:4321",
        ] {
            let req = Request::get("/setup")
                .header(header::HOST, host)
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .expect("test setup");
            let (status, headers, body) = send(&f.router, req).await;
            assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "Host {host}");
            assert!(!body.contains("Join"), "Host {host} got the page");
            assert_security_headers("wrong host", &headers);
        }
        let req = Request::get("/setup")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("test setup");
        assert_eq!(
            send(&f.router, req).await.0,
            StatusCode::MISDIRECTED_REQUEST
        );
        // localhost with our port is the same app.
        let req = Request::get("/setup")
            .header(header::HOST, "localhost:4321")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("test setup");
        assert_eq!(send(&f.router, req).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn without_the_cookie_every_page_is_refused() {
        let f = fixture();
        for path in [
            "/",
            "/setup",
            "/unlock",
            "/contacts",
            "/chats/p00",
            "/events",
            "/settings",
            "/nope",
        ] {
            let (status, headers, body) = send(
                &f.router,
                get(path).body(Body::empty()).expect("test setup"),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert!(
                body.contains("Open the address `sotto app` printed"),
                "{path}: {body}"
            );
            assert!(
                !body.contains(&csrf(&f)),
                "{path}: the CSRF token given away"
            );
            assert_security_headers(path, &headers);
        }
        // A guessed cookie is no cookie, even after the real one was handed out.
        let _real = launch(&f).await;
        let req = get("/setup")
            .header(
                header::COOKIE,
                format!("{}={}", security::COOKIE, "0".repeat(64)),
            )
            .body(Body::empty())
            .expect("test setup");
        assert_eq!(send(&f.router, req).await.0, StatusCode::UNAUTHORIZED);
        let req = get("/lock")
            .method("POST")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={}", csrf(&f))))
            .expect("test setup");
        assert_eq!(send(&f.router, req).await.0, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_launch_token_works_once_and_sets_a_strict_cookie() {
        let f = fixture();
        let url = f.app.launch_url();
        let path = url
            .strip_prefix("http://127.0.0.1:4321")
            .expect("test setup")
            .to_string();
        // A wrong token neither works nor uses up the real one.
        let (status, _, _) = send(
            &f.router,
            get(&format!("/launch?token={}", "ab".repeat(32)))
                .body(Body::empty())
                .expect("test setup"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, headers, _) = send(
            &f.router,
            get(&path).body(Body::empty()).expect("test setup"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            headers[header::LOCATION],
            "/",
            "the token leaves the address bar"
        );
        let set = headers[header::SET_COOKIE].to_str().expect("test setup");
        assert!(set.starts_with("sotto_session="), "{set}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.split("; ").any(|a| a == attr), "{attr} missing: {set}");
        }
        let value = set
            .split(';')
            .next()
            .expect("test setup")
            .split('=')
            .nth(1)
            .expect("test setup");
        assert_eq!(value.len(), 64);
        assert!(!url.contains(value), "the cookie is not the token");
        assert_security_headers("launch", &headers);
        // Used: a second browser (no cookie) gets nothing.
        let (status, headers, body) = send(
            &f.router,
            get(&path).body(Body::empty()).expect("test setup"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.get(header::SET_COOKIE).is_none());
        assert!(body.contains("used already"), "{body}");
    }

    /// A used launch address is dead, and the next one (which only
    /// `HOME/app-url` holds, 0600) lets a second browser in once.
    #[tokio::test]
    async fn after_a_launch_the_next_address_is_in_app_url_and_works_once() {
        use std::os::unix::fs::PermissionsExt as _;
        let f = fixture();
        let file = f.app.state.handle.home().join("app-url");
        let first = f.app.launch_url();
        std::fs::write(&file, format!("{first}\n")).expect("app-url as sotto app writes it");
        launch(&f).await;
        let next = std::fs::read_to_string(&file)
            .expect("app-url")
            .trim()
            .to_string();
        assert_ne!(next, first, "the used address was left in app-url");
        assert_eq!(next, f.app.launch_url());
        let mode = std::fs::metadata(&file)
            .expect("app-url")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "app-url is {mode:o}");
        let path = |url: &str| {
            url.strip_prefix("http://127.0.0.1:4321")
                .expect("ours")
                .to_string()
        };
        let old = get(&path(&first)).body(Body::empty()).expect("test setup");
        assert_eq!(send(&f.router, old).await.0, StatusCode::UNAUTHORIZED);
        let new = get(&path(&next)).body(Body::empty()).expect("test setup");
        assert_eq!(send(&f.router, new).await.0, StatusCode::SEE_OTHER);
        let again = get(&path(&next)).body(Body::empty()).expect("test setup");
        assert_eq!(send(&f.router, again).await.0, StatusCode::UNAUTHORIZED);
        // Without an app-url (not started by `sotto app`), none is written.
        let g = fixture();
        launch(&g).await;
        assert!(!g.app.state.handle.home().join("app-url").exists());
    }

    /// Opened from the file `sotto app` gives xdg-open (or from another
    /// site), the browser would not send the Strict cookie along a redirect
    /// chain: the launch answers with a page that moves on by itself.
    #[tokio::test]
    async fn a_launch_from_a_file_or_another_site_moves_on_without_a_redirect() {
        for site in ["cross-site", "same-site"] {
            let f = fixture();
            let url = f.app.launch_url();
            let path = url.strip_prefix("http://127.0.0.1:4321").expect("ours");
            let req = get(path)
                .header("sec-fetch-site", site)
                .body(Body::empty())
                .expect("test setup");
            let (status, headers, body) = send(&f.router, req).await;
            assert_eq!(status, StatusCode::OK, "{site}");
            assert!(
                body.contains(r#"<meta http-equiv="refresh" content="0;url=/">"#),
                "{body}"
            );
            assert!(
                headers[header::SET_COOKIE]
                    .to_str()
                    .expect("ascii")
                    .contains("HttpOnly")
            );
            assert_security_headers(site, &headers);
            assert_no_inline(&body);
            // Used all the same.
            let again = get(path).body(Body::empty()).expect("test setup");
            assert_eq!(send(&f.router, again).await.0, StatusCode::UNAUTHORIZED);
        }
        let f = fixture();
        let url = f.app.launch_url();
        let path = url.strip_prefix("http://127.0.0.1:4321").expect("ours");
        let req = get(path)
            .header("sec-fetch-site", "none")
            .body(Body::empty())
            .expect("test setup");
        assert_eq!(
            send(&f.router, req).await.0,
            StatusCode::SEE_OTHER,
            "typed address"
        );
    }

    /// A POST to `/lock` with the given extra headers and body.
    fn lock_post(cookie: &str, extra: &[(&str, &str)], body: String) -> Request<Body> {
        let mut req = get("/lock")
            .method("POST")
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.body(Body::from(body)).expect("test setup")
    }

    /// What a refused request is, its extra headers and its body.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], String);

    #[tokio::test]
    async fn a_cross_site_post_is_refused() {
        let f = fixture();
        let cookie = launch(&f).await;
        let token = format!("csrf={}", csrf(&f));
        let refused: &[Case<'_>] = &[
            (
                "cross-site fetch",
                &[("sec-fetch-site", "cross-site")],
                token.clone(),
            ),
            (
                "same-site fetch",
                &[("sec-fetch-site", "same-site")],
                token.clone(),
            ),
            (
                "other origin",
                &[("origin", "http://evil.example")],
                token.clone(),
            ),
            ("null origin", &[("origin", "null")], token.clone()),
            (
                "null origin, cross-site",
                &[("origin", "null"), ("sec-fetch-site", "cross-site")],
                token.clone(),
            ),
            (
                "other port",
                &[("origin", "http://127.0.0.1:9999")],
                token.clone(),
            ),
            (
                "no token",
                &[("origin", "http://127.0.0.1:4321")],
                String::new(),
            ),
            ("wrong token", &[], format!("csrf={}", "0".repeat(64))),
            (
                "wrong header token",
                &[("x-csrf-token", "nope")],
                String::new(),
            ),
        ];
        for (what, headers, body) in refused {
            let (status, h, page) =
                send(&f.router, lock_post(&cookie, headers, body.clone())).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
            assert!(page.contains("Nothing was changed"), "{what}");
            assert_security_headers(what, &h);
        }
        // The same request from our own page goes through (the gate then
        // sends it on, since no profile exists here).
        let ok = lock_post(
            &cookie,
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://127.0.0.1:4321"),
            ],
            token.clone(),
        );
        assert_eq!(send(&f.router, ok).await.0, StatusCode::SEE_OTHER);
        // Chromium's form post under our no-referrer policy.
        let ok = lock_post(
            &cookie,
            &[("sec-fetch-site", "same-origin"), ("origin", "null")],
            token.clone(),
        );
        assert_eq!(send(&f.router, ok).await.0, StatusCode::SEE_OTHER);
        // htmx's way: the token in a header.
        let ok = lock_post(&cookie, &[("x-csrf-token", &csrf(&f))], String::new());
        assert_eq!(send(&f.router, ok).await.0, StatusCode::SEE_OTHER);
        // Not a form at all, without the header.
        let req = get("/lock")
            .method("POST")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(token))
            .expect("test setup");
        assert_eq!(send(&f.router, req).await.0, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn every_response_has_the_security_headers() {
        let f = fixture();
        // Before the cookie: the launch refusal, a 401, an asset.
        for path in [
            "/launch?token=x",
            "/",
            "/assets/app.css",
            "/assets/htmx.min.js",
            "/assets/app.js",
        ] {
            let (_, headers, _) = send(
                &f.router,
                get(path).body(Body::empty()).expect("test setup"),
            )
            .await;
            assert_security_headers(path, &headers);
        }
        let cookie = launch(&f).await;
        for (path, want) in [
            ("/", StatusCode::SEE_OTHER),
            ("/setup", StatusCode::OK),
            ("/no/such/page", StatusCode::NOT_FOUND),
            ("/assets/nope.js", StatusCode::NOT_FOUND),
            ("/erased", StatusCode::SEE_OTHER),
        ] {
            let req = get(path)
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .expect("test setup");
            let (status, headers, _) = send(&f.router, req).await;
            assert_eq!(status, want, "{path}");
            assert_security_headers(path, &headers);
        }
        let (status, headers, body) = send(
            &f.router,
            get("/assets/app.css")
                .body(Body::empty())
                .expect("test setup"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
        assert!(body.contains(":focus-visible"));
    }

    #[tokio::test]
    async fn pages_have_no_inline_script_or_style() {
        let f = fixture();
        let cookie = launch(&f).await;
        let req = get("/setup")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("test setup");
        let (_, _, page) = send(&f.router, req).await;
        assert_no_inline(&page);
        for label in [
            "Invite link",
            "Your name",
            "Passphrase",
            "Passphrase again",
            "Join",
        ] {
            assert!(page.contains(&format!(">{label}<")), "{label}");
        }
        assert!(page.contains(r#"id="strength""#));
        assert!(page.contains("<main"));
        assert!(page.contains("<h1>"));
    }

    /// No `<script>` without `src`, no `style` element or attribute, no
    /// `on...=` handler attribute, in any tag of `page` (escaped text has no
    /// raw `<`, so only real tags are looked at).
    pub(crate) fn assert_no_inline(page: &str) {
        for (i, _) in page.match_indices('<') {
            let end = page[i..].find('>').map_or(page.len(), |e| i + e);
            let tag = page[i..end].to_ascii_lowercase();
            if tag.starts_with("<script") {
                assert!(tag.contains(" src=\"/assets/"), "inline script: {tag}");
            }
            assert!(!tag.starts_with("<style"), "style element: {tag}");
            assert!(!tag.contains(" style="), "style attribute: {tag}");
            let handler = tag
                .split_whitespace()
                .skip(1)
                .any(|attr| attr.starts_with("on") && attr.contains('='));
            assert!(!handler, "handler attribute: {tag}");
        }
    }

    /// `sotto app LINK` with an invite: the set-up form starts with it.
    #[tokio::test]
    async fn setup_offers_the_invite_the_app_was_opened_with() {
        let f = fixture();
        let link = "sotto://join?relay=127.0.0.1:1&pin=aa&root=bb&token=cc";
        f.app.state.handle.offer_link(link.into());
        let cookie = launch(&f).await;
        let req = get("/setup")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("test setup");
        let (_, _, page) = send(&f.router, req).await;
        assert!(
            page.contains(
                r#"value="sotto://join?relay=127.0.0.1:1&amp;pin=aa&amp;root=bb&amp;token=cc""#
            ),
            "{page}"
        );
    }

    #[tokio::test]
    async fn setup_refuses_mismatched_passphrases_and_never_echoes_them() {
        let f = fixture();
        let cookie = launch(&f).await;
        let body = format!(
            "csrf={}&invite=sotto%3A%2F%2Fjoin%3Frelay%3Dx&name=Ana&passphrase=correct+horse+1&passphrase2=correct+horse+2",
            csrf(&f)
        );
        let req = get("/setup")
            .method("POST")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .expect("test setup");
        let (status, _, page) = send(&f.router, req).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("not the same"), "{page}");
        assert!(page.contains(r#"value="Ana""#), "typed name kept");
        assert!(!page.contains("correct horse"), "passphrase echoed");
    }
}
