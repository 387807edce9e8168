//! Getting in and out: set-up, unlock, Lock, Panic, Quit, and the gate that
//! sends a browser to the right one of them.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde::Deserialize;

use super::AppState;
use super::layout::{self, bare_page, csrf_field, error_box};
use super::security::see_other;
use crate::service::State as Svc;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/setup", get(setup_page).post(setup))
        .route("/unlock", get(unlock_page).post(unlock))
        .route("/lock", post(lock))
        .route("/panic", get(panic_page).post(panic))
        .route("/erased", get(erased_page))
        .route("/quit", post(quit))
        .route("/stopped", get(stopped_page))
}

/// Where a browser belongs when the profile is not open.
pub(crate) fn elsewhere(state: &Svc) -> Option<&'static str> {
    match state {
        Svc::Unlocked => None,
        Svc::NoProfile => Some("/setup"),
        Svc::Locked => Some("/unlock"),
        Svc::Erased => Some("/erased"),
        Svc::Stopped => Some("/stopped"),
    }
}

/// A redirect that works for a whole page and for an htmx fragment request
/// (htmx follows `HX-Redirect` with a full navigation instead of swapping
/// the unlock screen into a fragment).
pub(crate) fn go(req_is_htmx: bool, to: &'static str) -> Response {
    if req_is_htmx {
        (StatusCode::OK, [("hx-redirect", to)]).into_response()
    } else {
        see_other(to)
    }
}

/// In front of every screen that needs the open profile: the set-up screen
/// while there is none, the unlock screen while locked (after the idle lock
/// too), the erased page after panic.
pub(crate) async fn gate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match elsewhere(&st.handle.state()) {
        None => next.run(req).await,
        Some(to) => go(req.headers().contains_key("hx-request"), to),
    }
}

/// Sends a browser that is on the wrong entry screen to the right one.
fn misplaced(st: &AppState, here: Svc) -> Option<Response> {
    let now = st.handle.state();
    (now != here).then(|| see_other(elsewhere(&now).unwrap_or("/")))
}

#[derive(Deserialize, Default)]
pub(crate) struct SetUp {
    #[serde(default)]
    invite: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    passphrase: String,
    #[serde(default)]
    passphrase2: String,
}

async fn setup_page(State(st): State<AppState>) -> Response {
    if let Some(r) = misplaced(&st, Svc::NoProfile) {
        return r;
    }
    // Opened with an invite link (`sotto app LINK`, or the desktop entry):
    // the form starts with it.
    let invite = st
        .handle
        .peek_link()
        .filter(|l| l.starts_with("sotto://join?"))
        .unwrap_or_default();
    let typed = SetUp {
        invite,
        ..SetUp::default()
    };
    setup_view(&st, StatusCode::OK, &typed, None)
}

/// The set-up screen: everything on one form. Passphrases are never sent
/// back into the page (a failed attempt asks for them again).
pub(crate) fn setup_view(
    st: &AppState,
    status: StatusCode,
    typed: &SetUp,
    error: Option<&str>,
) -> Response {
    bare_page(
        st,
        status,
        "Join Sotto",
        false,
        html! {
            p { "Paste the invite link your union or staff association gave you, choose the \
                 name others will see, and a passphrase that protects everything on this computer." }
            @if let Some(e) = error { (error_box(e)) }
            form method="post" action="/setup" class="stack" {
                (csrf_field(st))
                label for="invite" { "Invite link" }
                input id="invite" name="invite" type="text" required
                    autocomplete="off" spellcheck="false" value=(typed.invite)
                    aria-describedby="invite-help";
                p id="invite-help" class="help" { "It starts with " code { "sotto://join?" } "." }
                label for="name" { "Your name" }
                input id="name" name="name" type="text" required autocomplete="nickname"
                    maxlength=(crate::safe::MAX_NAME_CHARS) value=(typed.name)
                    aria-describedby="name-help";
                p id="name-help" class="help" { "Shown to the people you write to. You can use a first name only." }
                label for="passphrase" { "Passphrase" }
                input id="passphrase" name="passphrase" type="password" required
                    autocomplete="new-password" aria-describedby="strength";
                p id="strength" class="help" aria-live="polite" {
                    "At least " (crate::engine::MIN_PASSPHRASE_CHARS) " characters; several \
                     unrelated words are easy to remember and hard to guess."
                }
                label for="passphrase2" { "Passphrase again" }
                input id="passphrase2" name="passphrase2" type="password" required
                    autocomplete="new-password";
                button type="submit" class="primary" { "Join" }
            }
            (layout::details("Details", html! {
                p { "Joining creates your keys on this computer, registers them with the relay \
                     named in the link (its certificate is pinned from the link), and keeps \
                     everything in a store encrypted with your passphrase." }
            }))
        },
    )
}

async fn setup(State(st): State<AppState>, Form(form): Form<SetUp>) -> Response {
    if let Some(r) = misplaced(&st, Svc::NoProfile) {
        return r;
    }
    let invite = form
        .invite
        .trim()
        .trim_matches(['<', '>', '"', '\''])
        .to_string();
    let mistake = if form.passphrase != form.passphrase2 {
        Some("The two passphrases are not the same. Type them again.".to_string())
    } else if let Err(e) = crate::engine::check_new_passphrase(&form.passphrase) {
        Some(capitalise(&e.to_string()))
    } else if let Err(e) = crate::safe::check_field(
        "your name",
        &form.name,
        crate::safe::MAX_NAME_CHARS,
        crate::safe::Lines::One,
    ) {
        Some(capitalise(&e))
    } else if !invite.starts_with("sotto://join?") {
        Some("That is not a Sotto invite link: it starts with sotto://join? — copy the whole link again.".to_string())
    } else {
        None
    };
    if let Some(e) = mistake {
        return setup_view(&st, StatusCode::UNPROCESSABLE_ENTITY, &form, Some(&e));
    }
    match st
        .handle
        .set_up(
            invite,
            form.name.trim().to_string(),
            form.passphrase.clone(),
        )
        .await
    {
        Ok(()) => {
            if st
                .handle
                .peek_link()
                .is_some_and(|l| l.starts_with("sotto://join?"))
            {
                st.handle.take_link();
            }
            see_other("/")
        }
        Err(e) => setup_view(
            &st,
            StatusCode::UNPROCESSABLE_ENTITY,
            &form,
            Some(&capitalise(&e.to_string())),
        ),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[derive(Deserialize)]
struct Unlock {
    #[serde(default)]
    passphrase: String,
}

async fn unlock_page(State(st): State<AppState>) -> Response {
    if let Some(r) = misplaced(&st, Svc::Locked) {
        return r;
    }
    unlock_view(&st, StatusCode::OK, None)
}

fn unlock_view(st: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    bare_page(
        st,
        status,
        "Unlock Sotto",
        true,
        html! {
            p { "Sotto is locked. Your passphrase opens it on this computer." }
            @if let Some(e) = error { (error_box(e)) }
            form method="post" action="/unlock" class="stack" {
                (csrf_field(st))
                label for="passphrase" { "Passphrase" }
                input id="passphrase" name="passphrase" type="password" required
                    autocomplete="current-password" autofocus;
                button type="submit" class="primary" { "Unlock" }
            }
        },
    )
}

async fn unlock(State(st): State<AppState>, Form(form): Form<Unlock>) -> Response {
    if let Some(r) = misplaced(&st, Svc::Locked) {
        return r;
    }
    match st.handle.unlock(form.passphrase).await {
        Ok(()) => see_other("/"),
        Err(crate::service::ServiceError::WrongPassphrase) => unlock_view(
            &st,
            StatusCode::UNAUTHORIZED,
            Some("Wrong passphrase. Try again."),
        ),
        Err(e) => unlock_view(
            &st,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&capitalise(&e.to_string())),
        ),
    }
}

async fn lock(State(st): State<AppState>) -> Response {
    st.handle.lock();
    see_other("/unlock")
}

async fn panic_page(State(st): State<AppState>) -> Response {
    match st.handle.state() {
        Svc::Unlocked | Svc::Locked => {}
        other => return see_other(elsewhere(&other).unwrap_or("/")),
    }
    bare_page(
        &st,
        StatusCode::OK,
        "Erase everything?",
        false,
        html! {
            p { "This erases your profile from this computer at once: your messages, contacts, \
                 groups, warnings and evidence notes. It cannot be undone." }
            form method="post" action="/panic" class="stack" {
                (csrf_field(&st))
                button type="submit" class="danger big" autofocus { "Erase everything now" }
            }
            p { a href="/" { "Cancel and go back" } }
        },
    )
}

async fn panic(State(st): State<AppState>) -> Response {
    let outcome = st.handle.panic().await;
    st.unread.lock().unwrap_or_else(|e| e.into_inner()).clear();
    st.queued.lock().unwrap_or_else(|e| e.into_inner()).clear();
    match outcome {
        Ok(report) => {
            let ok = report.files_removed.is_ok() && report.erased.is_ok();
            erased_view(&st, ok)
        }
        Err(e) => bare_page(
            &st,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not erased",
            false,
            html! {
                (error_box(&capitalise(&e.to_string())))
                p { "Run " code { "sotto panic" } " in a terminal, or delete the Sotto folder." }
            },
        ),
    }
}

async fn erased_page(State(st): State<AppState>) -> Response {
    if st.handle.state() != Svc::Erased {
        return see_other("/");
    }
    erased_view(&st, true)
}

/// What is left after panic: nothing of the profile, and what the browser
/// may still hold.
fn erased_view(st: &AppState, complete: bool) -> Response {
    bare_page(st, StatusCode::OK, "Erased", false, erased_text(complete))
}

fn erased_text(complete: bool) -> Markup {
    html! {
        @if complete {
            p { "Erased. The profile is gone from this computer." }
        } @else {
            p { "Erased, but some files could not be deleted; their key is destroyed, so \
                 they cannot be read." }
        }
        h2 { "What this browser may still hold" }
        p { "Sotto told the browser not to store its pages (no cache) and never puts names or \
             messages in addresses or page titles. The browser's history still lists that \
             Sotto pages were open on this computer (addresses like 127.0.0.1 with random \
             numbers). To remove that too, clear this browser's history, or close this private \
             window." }
    }
}

async fn quit(State(st): State<AppState>) -> Response {
    st.handle.quit();
    stopped_view(&st)
}

async fn stopped_page(State(st): State<AppState>) -> Response {
    stopped_view(&st)
}

fn stopped_view(st: &AppState) -> Response {
    bare_page(
        st,
        StatusCode::OK,
        "Sotto has stopped",
        false,
        html! {
            p { "Sotto is closed. You can close this window. Start it again with "
                code { "sotto app" } "." }
        },
    )
}
