//! The page frame every screen shares: head (CSP-safe: only our own script
//! and stylesheet), the main nav with Panic and Lock, and the three panes
//! (list, conversation, details) laid out like Signal Desktop.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::AppState;
use crate::safe;
use crate::service::State;

/// The sections of the main nav.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    /// Chats.
    Chats,
    /// Contacts.
    Contacts,
    /// Groups.
    Groups,
    /// Warnings board.
    Warnings,
    /// Evidence locker.
    Evidence,
    /// Settings.
    Settings,
}

const NAV: &[(Nav, &str, &str)] = &[
    (Nav::Chats, "/", "Chats"),
    (Nav::Contacts, "/contacts", "Contacts"),
    (Nav::Groups, "/groups", "Groups"),
    (Nav::Warnings, "/warnings", "Warnings"),
    (Nav::Evidence, "/evidence", "Evidence"),
    (Nav::Settings, "/settings", "Settings"),
];

/// One screen of the unlocked app.
pub(crate) struct Page {
    /// The `<title>` after "Sotto – " and the `<h1>` unless `heading` is
    /// set: never a person's name or a group title (browser history keeps
    /// titles).
    pub title: &'static str,
    /// A heading shown instead of `title` (may name a person; it is not the
    /// `<title>`).
    pub heading: Option<Markup>,
    /// Which nav entry is current.
    pub nav: Nav,
    /// The left pane (a chat list, a contact list), if any.
    pub list: Option<Markup>,
    /// The main pane, after the `<h1>`.
    pub main: Markup,
    /// The right-hand details panel, if any.
    pub details: Option<Markup>,
}

impl Page {
    /// A page with only a main pane.
    pub(crate) fn new(title: &'static str, nav: Nav, main: Markup) -> Page {
        Page {
            title,
            heading: None,
            nav,
            list: None,
            main,
            details: None,
        }
    }
}

/// The hidden CSRF field every state-changing form carries.
pub(crate) fn csrf_field(st: &AppState) -> Markup {
    html! { input type="hidden" name="csrf" value=(st.security.csrf()); }
}

/// A one-button form that POSTs to `action` (Lock, Quit, Remove...).
pub(crate) fn post_button(st: &AppState, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form method="post" action=(action) class="inline" {
            (csrf_field(st))
            button type="submit" class=(class) { (label) }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx must not inject its own <style> (the CSP refuses inline
            // style) nor evaluate anything.
            meta name="htmx-config"
                content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0}"#;
            meta name="referrer" content="no-referrer";
            title { "Sotto – " (title) }
            link rel="stylesheet" href="/assets/app.css";
            script src="/assets/htmx.min.js" defer {}
            script src="/assets/app.js" defer {}
        }
    }
}

fn body_attrs_json(st: &AppState) -> String {
    format!(r#"{{"X-CSRF-Token":"{}"}}"#, st.security.csrf())
}

/// [`page`] for a form shown again with `error`: answered 422 when there is
/// one, so a refused submission is not mistaken for success.
pub(crate) fn page_refusing(st: &AppState, p: Page, error: Option<&str>) -> Response {
    let mut resp = page(st, p);
    if error.is_some() {
        *resp.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    resp
}

/// A whole page of the unlocked app.
pub(crate) fn page(st: &AppState, p: Page) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(p.title))
            body hx-headers=(body_attrs_json(st)) data-state="unlocked"
                data-notify=(if st.settings().notify_names { "names" } else { "plain" }) {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    span class="brand" { "Sotto" }
                    nav aria-label="Main" class="main-nav" {
                        ul {
                            @for (which, href, label) in NAV {
                                li {
                                    @if *which == p.nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div class="actions" {
                        (post_button(st, "/lock", "Lock", "secondary"))
                        form method="get" action="/panic" class="inline" {
                            button type="submit" class="danger" { "Panic" }
                        }
                    }
                }
                div class=(if p.list.is_some() { "panes with-list" } else { "panes" }) {
                    @if let Some(list) = &p.list {
                        aside class="list" { (list) }
                    }
                    main id="main" tabindex="-1" {
                        h1 { @if let Some(h) = &p.heading { (h) } @else { (p.title) } }
                        (p.main)
                    }
                    @if let Some(details) = &p.details {
                        aside class="details" aria-label="Details" { (details) }
                    }
                }
                div id="live" class="visually-hidden" aria-live="polite" {}
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page outside the unlocked app (set-up, unlock, refusals, erased):
/// no nav, since nothing behind it can be reached. `panic` adds the Panic
/// button (the unlock screen has it: under pressure, one need not unlock
/// to erase).
pub(crate) fn bare_page(
    st: &AppState,
    status: StatusCode,
    title: &'static str,
    panic: bool,
    main: Markup,
) -> Response {
    frame(st, status, title, panic, true, main)
}

/// [`bare_page`], with the CSRF token in `hx-headers` only when `token`:
/// pages that anyone may get (the 401 before the cookie, 403, 404) carry
/// none.
fn frame(
    st: &AppState,
    status: StatusCode,
    title: &'static str,
    panic: bool,
    token: bool,
    main: Markup,
) -> Response {
    let state = match st.handle.state() {
        State::NoProfile => "none",
        State::Locked => "locked",
        State::Unlocked => "unlocked",
        State::Erased => "erased",
        State::Stopped => "stopped",
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body hx-headers=[token.then(|| body_attrs_json(st))] data-state=(state) {
                header class="top" {
                    span class="brand" { "Sotto" }
                    @if panic {
                        div class="actions" {
                            form method="get" action="/panic" class="inline" {
                                button type="submit" class="danger" { "Panic" }
                            }
                        }
                    }
                }
                main id="main" class="narrow" {
                    h1 { (title) }
                    (main)
                }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// The page after a launch from another site or a file: it moves on to `/`
/// by itself (a meta refresh, which the CSP allows and which needs no
/// script), with a link for browsers that do not.
pub(crate) fn continue_page() -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="0;url=/";
                meta name="referrer" content="no-referrer";
                title { "Sotto – Opening" }
                link rel="stylesheet" href="/assets/app.css";
            }
            body {
                main id="main" class="narrow" {
                    h1 { "Opening Sotto" }
                    p { a href="/" { "Continue to Sotto" } }
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A short page that says one thing (errors, refusals).
pub(crate) fn message_page(
    st: &AppState,
    status: StatusCode,
    title: &'static str,
    main: Markup,
) -> Response {
    frame(st, status, title, false, false, main)
}

/// A person's name (or a group title, a subject...) from another person:
/// made safe as [`safe::line`] does (line breaks and controls shown, bidi
/// overrides replaced) and isolated in `<bdi>`, so right-to-left text
/// cannot reorder what is around it. maud escapes the HTML.
pub(crate) fn person(name: &str) -> Markup {
    html! { bdi { (safe::line(name)) } }
}

/// A message body from another person: line breaks kept (the CSS shows them
/// with `white-space: pre-wrap`), every other control and bidi control
/// replaced by `�`, in an element with `dir="auto"` (an isolate).
pub(crate) fn body_text(text: &str) -> Markup {
    let clean: String = text
        .replace("\r\n", "\n")
        .chars()
        .map(|c| match c {
            '\n' => '\n',
            '\u{2028}' | '\u{2029}' => '\n',
            c if safe::is_unsafe(c) => '\u{FFFD}',
            c => c,
        })
        .collect();
    html! { p class="body" dir="auto" { (clean) } }
}

/// An error shown at the top of a form, announced to screen readers.
pub(crate) fn error_box(text: &str) -> Markup {
    html! { p class="error" role="alert" { (text) } }
}

/// A "Details" disclosure holding protocol terms.
pub(crate) fn details(summary: &str, inner: Markup) -> Markup {
    html! { details class="tech" { summary { (summary) } (inner) } }
}

/// Time of day (UTC) or date for a message.
pub(crate) fn when(ms: u64) -> Markup {
    let text = crate::engine::day_time(ms);
    html! { time { (text) } }
}

/// Markup that is already safe (an SVG the server built from digits).
pub(crate) fn trusted_svg(svg: String) -> Markup {
    PreEscaped(svg)
}
