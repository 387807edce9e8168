//! Contacts: my contact code (text and QR code), adding by code, renaming,
//! removing, and the safety number with "Mark as verified" and the
//! changed-number trust button.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde::Deserialize;
use sotto_wire::code::ContactCode;

use super::AppState;
use super::chats::{Chat, Problem, all_chats, changed_alert, engine};
use super::layout::{self, Nav, Page, csrf_field, error_box, person, post_button};
use super::security::see_other;
use crate::engine::SafetyNumber;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/contacts", get(list).post(add))
        .route("/contacts/{id}", get(contact))
        .route("/contacts/{id}/verify", post(verify))
        .route("/contacts/{id}/trust", post(trust))
        .route("/contacts/{id}/rename", post(rename))
        .route("/contacts/{id}/remove", post(remove))
}

/// A QR code of `text` as inline SVG markup with an accessible name. The
/// SVG is built by `qrcode` from `text` alone (a contact code or digits we
/// made), uses presentation attributes only (no `style`, which the CSP
/// refuses), and contains no script.
pub(crate) fn qr_svg(text: &str, label: &str) -> Markup {
    let Ok(code) = qrcode::QrCode::new(text.as_bytes()) else {
        return html! {};
    };
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    let label = label
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let svg = svg
        .trim_start_matches(r#"<?xml version="1.0" standalone="yes"?>"#)
        .replacen(
            "<svg ",
            &format!(r#"<svg role="img" class="qr" aria-label="{label}" "#),
            1,
        );
    layout::trusted_svg(svg)
}

struct ContactsView {
    my_code: String,
    my_name: String,
    chats: Vec<Chat>,
}

async fn load_list(st: &AppState) -> Result<ContactsView, Problem> {
    let s = st.clone();
    engine(st, move |e| {
        Box::pin(async move {
            Ok(ContactsView {
                my_code: e.code().to_string(),
                my_name: e.name().to_string(),
                chats: all_chats(e, &s.ids)?
                    .into_iter()
                    .filter(|c| !c.group && !c.stranger)
                    .collect(),
            })
        })
    })
    .await
}

fn contact_list(chats: &[Chat], current: Option<&str>) -> Markup {
    html! {
        nav aria-label="Contacts" class="chat-list" {
            @if chats.is_empty() { p class="empty" { "No contacts yet." } }
            ul {
                @for c in chats {
                    li {
                        a href={"/contacts/" (c.id)}
                            aria-current=[(current == Some(c.id.as_str())).then_some("page")] {
                            span class="name" { (person(&c.name)) }
                            @if c.changed { span class="tag warn" { "Safety number changed" } }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct AddForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    code: String,
}

fn list_page(st: &AppState, v: &ContactsView, typed: &AddForm, error: Option<&str>) -> Response {
    let main = html! {
        section aria-labelledby="mine" {
            h2 id="mine" { "Your contact code" }
            p { "Give this code to someone so they can write to you, " (person(&v.my_name)) ". \
                 In person, they can scan the QR code." }
            p id="my-code" class="code" { (v.my_code) }
            (qr_svg(&v.my_code, "QR code of your contact code"))
        }
        section aria-labelledby="add" {
            h2 id="add" { "Add a contact" }
            @if let Some(e) = error { (error_box(e)) }
            form method="post" action="/contacts" class="stack" {
                (csrf_field(st))
                label for="name" { "Name" }
                input id="name" name="name" type="text" required
                    maxlength=(crate::safe::MAX_NAME_CHARS) value=(typed.name)
                    aria-describedby="name-help";
                p id="name-help" class="help" { "Only you see this name." }
                label for="code" { "Contact code" }
                input id="code" name="code" type="text" required autocomplete="off"
                    spellcheck="false" value=(typed.code);
                button type="submit" class="primary" { "Add contact" }
            }
        }
    };
    let mut page = Page::new("Contacts", Nav::Contacts, main);
    page.list = Some(contact_list(&v.chats, None));
    layout::page_refusing(st, page, error)
}

async fn list(State(st): State<AppState>) -> Response {
    match load_list(&st).await {
        Ok(v) => list_page(&st, &v, &AddForm::default(), None),
        Err(p) => p.respond(&st, false),
    }
}

async fn add(State(st): State<AppState>, Form(form): Form<AddForm>) -> Response {
    let (name, code) = (form.name.clone(), form.code.trim().to_string());
    let s = st.clone();
    let added = engine(&st, move |e| {
        Box::pin(async move {
            Ok(match e.add_contact(&name, &code).await {
                Ok(c) => Ok(s
                    .ids
                    .person(&ContactCode::from_account_id(c.account_id).to_string())),
                Err(err) => Err(capital(&err.to_string())),
            })
        })
    })
    .await;
    match added {
        Ok(Ok(id)) => see_other(&format!("/contacts/{id}")),
        Ok(Err(error)) => match load_list(&st).await {
            Ok(v) => list_page(&st, &v, &form, Some(&error)),
            Err(p) => p.respond(&st, false),
        },
        Err(p) => p.respond(&st, false),
    }
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

struct ContactView {
    chats: Vec<Chat>,
    chat: Chat,
    verified: bool,
    number: Result<SafetyNumber, String>,
}

async fn load_contact(st: &AppState, id: String) -> Result<Option<ContactView>, Problem> {
    let s = st.clone();
    engine(st, move |e| {
        Box::pin(async move {
            let chats: Vec<Chat> = all_chats(e, &s.ids)?
                .into_iter()
                .filter(|c| !c.group && !c.stranger)
                .collect();
            let Some(chat) = chats.iter().find(|c| c.id == id).cloned() else {
                return Ok(None);
            };
            let verified = e
                .contacts()
                .map_err(|e| e.to_string())?
                .into_iter()
                .any(|(c, _)| c.name == chat.name && c.verified);
            let number = e
                .safety_number(&chat.name)
                .await
                .map_err(|e| capital(&e.to_string()));
            Ok(Some(ContactView {
                chats,
                chat,
                verified,
                number,
            }))
        })
    })
    .await
}

fn contact_page(st: &AppState, v: &ContactView, notice: Option<Markup>) -> Response {
    let chat = &v.chat;
    let main = html! {
        @if let Some(n) = notice { (n) }
        @if chat.changed { (changed_alert(st, chat)) }
        p { a href={"/chats/" (chat.id)} class="button" { "Open chat" } }
        section aria-labelledby="sn" {
            h2 id="sn" { "Safety number" }
            p { "Compare these digits with the ones on " (person(&chat.name)) "'s screen, in \
                 person or over a call you trust. If they match, nobody is in between you." }
            @match &v.number {
                Ok(n) => {
                    p id="safety-number" class="digits" { (n.digits) }
                    @if let Some(why) = &n.offline {
                        p class="help" { "The relay could not be reached (" (why) "): this is the \
                                          number for the key seen last." }
                    }
                    (qr_svg(&n.digits.replace(' ', ""), "QR code of the safety number"))
                }
                Err(e) => { (error_box(e)) }
            }
            @if v.verified {
                p class="ok" { "✓ Verified" }
            } @else {
                form method="post" action={"/contacts/" (chat.id) "/verify"} class="inline" {
                    (csrf_field(st))
                    button type="submit" class="primary" { "Mark as verified" }
                }
            }
        }
        section aria-labelledby="manage" {
            h2 id="manage" { "Name and removal" }
            form method="post" action={"/contacts/" (chat.id) "/rename"} class="stack" {
                (csrf_field(st))
                label for="new-name" { "New name" }
                input id="new-name" name="name" type="text" required
                    maxlength=(crate::safe::MAX_NAME_CHARS) value=(chat.name);
                button type="submit" { "Rename" }
            }
            p { "Removing a contact keeps your messages with them on this computer." }
            (post_button(st, &format!("/contacts/{}/remove", chat.id), "Remove", "danger"))
        }
        (layout::details("Details", html! {
            p { "The safety number is derived from both identity keys (libsignal's numeric \
                 fingerprint, version 2). It changes when either of you resets their identity." }
        }))
    };
    let mut page = Page::new("Contact", Nav::Contacts, main);
    page.heading = Some(person(&chat.name));
    page.list = Some(contact_list(&v.chats, Some(&chat.id)));
    layout::page(st, page)
}

async fn contact(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match load_contact(&st, id).await {
        Ok(Some(v)) => contact_page(&st, &v, None),
        Ok(None) => no_contact(&st),
        Err(p) => p.respond(&st, false),
    }
}

fn no_contact(st: &AppState) -> Response {
    layout::message_page(
        st,
        StatusCode::NOT_FOUND,
        "No such contact",
        html! { p { "This contact is not here any more (addresses change each time Sotto \
        starts). " a href="/contacts" { "Go to your contacts" } "." } },
    )
}

/// Runs `f` with the name of the contact `id` names; `None` when none does.
async fn with_contact<R, F>(st: &AppState, id: String, f: F) -> Result<Option<R>, Problem>
where
    R: Send + 'static,
    F: for<'a> FnOnce(
            &'a mut crate::engine::Engine,
            String,
        ) -> futures_util::future::LocalBoxFuture<'a, Result<R, String>>
        + Send
        + 'static,
{
    let s = st.clone();
    engine(st, move |e| {
        Box::pin(async move {
            let found = all_chats(e, &s.ids)?
                .into_iter()
                .find(|c| !c.group && !c.stranger && c.id == id);
            match found {
                Some(c) => f(e, c.name).await.map(Some),
                None => Ok(None),
            }
        })
    })
    .await
}

async fn verify(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let done = with_contact(&st, id.clone(), |e, name| {
        Box::pin(async move {
            e.trust(&name, true)
                .await
                .map_err(|e| capital(&e.to_string()))
        })
    })
    .await;
    match done {
        Ok(Some(_)) => see_other(&format!("/contacts/{id}")),
        Ok(None) => no_contact(&st),
        Err(p) => p.respond(&st, false),
    }
}

#[derive(Deserialize)]
struct TrustForm {
    #[serde(default)]
    back: String,
}

/// "I have checked, trust the new number": accepts the contact's current
/// key, which lets sending go again. It marks them verified only if this
/// key's safety number was shown here (the engine's rule).
async fn trust(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<TrustForm>,
) -> Response {
    let done = with_contact(&st, id.clone(), |e, name| {
        Box::pin(async move {
            e.trust(&name, false)
                .await
                .map_err(|e| capital(&e.to_string()))
        })
    })
    .await;
    // Only back to one of our own pages for this contact (never an
    // address from the form as such).
    let back = if form.back == format!("/chats/{id}") {
        form.back
    } else {
        format!("/contacts/{id}")
    };
    match done {
        Ok(Some(_)) => see_other(&back),
        Ok(None) => no_contact(&st),
        Err(p) => p.respond(&st, false),
    }
}

#[derive(Deserialize)]
struct RenameForm {
    #[serde(default)]
    name: String,
}

async fn rename(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<RenameForm>,
) -> Response {
    let new = form.name.clone();
    let done = with_contact(&st, id.clone(), move |e, name| {
        Box::pin(async move {
            Ok(e.rename_contact(&name, &new)
                .await
                .map(|_| ())
                .map_err(|e| capital(&e.to_string())))
        })
    })
    .await;
    match done {
        // The id comes from the contact code, so it survives the rename.
        Ok(Some(Ok(()))) => see_other(&format!("/contacts/{id}")),
        Ok(Some(Err(error))) => match load_contact(&st, id).await {
            Ok(Some(v)) => {
                let mut resp = contact_page(&st, &v, Some(error_box(&error)));
                *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                resp
            }
            Ok(None) => no_contact(&st),
            Err(p) => p.respond(&st, false),
        },
        Ok(None) => no_contact(&st),
        Err(p) => p.respond(&st, false),
    }
}

async fn remove(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let done = with_contact(&st, id, |e, name| {
        Box::pin(async move {
            e.remove_contact(&name)
                .await
                .map(|_| ())
                .map_err(|e| capital(&e.to_string()))
        })
    })
    .await;
    match done {
        Ok(Some(())) => see_other("/contacts"),
        Ok(None) => no_contact(&st),
        Err(p) => p.respond(&st, false),
    }
}
