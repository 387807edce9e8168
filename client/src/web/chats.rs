//! Chats: the chat list (left), a conversation (right), sending with its
//! status, unread counts, deleting a message here, and searching my history.
//! New messages arrive live: `events.rs` tells the page, whose `app.js`
//! reloads the list and conversation fragments served here.

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use futures_util::future::LocalBoxFuture;
use maud::{Markup, html};
use serde::Deserialize;
use sotto_wire::code::ContactCode;

use super::AppState;
use super::entry::{elsewhere, go};
use super::layout::{self, Nav, Page, csrf_field, error_box, person};
use super::security::see_other;
use crate::engine::{DeletedHere, Delivery, Engine, EngineError, ShownMessage};
use crate::service::ServiceError;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/fragments/chats", get(list_fragment))
        .route("/chats/{id}", get(conversation).post(send))
        .route("/chats/{id}/messages", get(messages_fragment))
        .route("/chats/{id}/delete", post(delete))
        .route("/chats/{id}/clear", get(clear_page).post(clear))
        .route("/search", get(search_page).post(search))
        .route("/join-link", post(join_link))
}

/// Why an engine call gave nothing to show.
pub(crate) enum Problem {
    /// The profile is not open (locked meanwhile, erased, stopped).
    Closed,
    /// The engine refused, in user words.
    Refused(String),
}

impl Problem {
    /// The response for a page request that hit this problem.
    pub(crate) fn respond(self, st: &AppState, htmx: bool) -> Response {
        match self {
            Problem::Closed => go(htmx, elsewhere(&st.handle.state()).unwrap_or("/unlock")),
            Problem::Refused(text) => layout::message_page(
                st,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Something went wrong",
                html! { (error_box(&text)) p { a href="/" { "Back to your chats" } } },
            ),
        }
    }
}

/// Runs `f` on the engine; the two layers of failure (service closed,
/// engine refused) become one [`Problem`].
pub(crate) async fn engine<R, F>(st: &AppState, f: F) -> Result<R, Problem>
where
    R: Send + 'static,
    F: for<'a> FnOnce(&'a mut Engine) -> LocalBoxFuture<'a, Result<R, String>> + Send + 'static,
{
    settle(st.handle.with(f).await)
}

/// [`engine`] for a fragment the page reloads by itself after an event:
/// not a person's use, so it does not postpone the idle lock.
pub(crate) async fn engine_unattended<R, F>(st: &AppState, f: F) -> Result<R, Problem>
where
    R: Send + 'static,
    F: for<'a> FnOnce(&'a mut Engine) -> LocalBoxFuture<'a, Result<R, String>> + Send + 'static,
{
    settle(st.handle.with_unattended(f).await)
}

fn settle<R>(outcome: Result<Result<R, String>, ServiceError>) -> Result<R, Problem> {
    match outcome {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(text)) => Err(Problem::Refused(text)),
        Err(ServiceError::Failed(text)) => Err(Problem::Refused(text)),
        Err(_) => Err(Problem::Closed),
    }
}

/// One chat in the list.
#[derive(Debug, Clone)]
pub(crate) struct Chat {
    /// Opaque id for URLs.
    pub id: String,
    /// The contact's name (my name for them) or the group's title.
    pub name: String,
    /// What the engine calls it: a contact name, or a group's hex id.
    pub key: String,
    /// True for a group.
    pub group: bool,
    /// A person's safety number changed and is not yet trusted again.
    pub changed: bool,
    /// A group's disappearing-message timer (0: off).
    pub disappearing_ms: u64,
    /// Someone who wrote to me and is not a contact (`name` is the name
    /// they chose; `key` their contact code).
    pub stranger: bool,
}

/// Every chat: my contacts, people who wrote to me and the groups I am in,
/// newest conversation first (see [`sort_chats`]).
pub(crate) fn all_chats(e: &Engine, ids: &super::ids::IdKey) -> Result<Vec<Chat>, String> {
    let mut chats = Vec::new();
    for (c, changed) in e.contacts().map_err(|e| e.to_string())? {
        let code = ContactCode::from_account_id(c.account_id).to_string();
        chats.push(Chat {
            id: ids.person(&code),
            name: c.name,
            key: code,
            group: false,
            changed,
            disappearing_ms: 0,
            stranger: false,
        });
    }
    for (code, name) in e.strangers().map_err(|e| e.to_string())? {
        chats.push(Chat {
            id: ids.person(&code),
            name,
            key: code,
            group: false,
            changed: false,
            disappearing_ms: 0,
            stranger: true,
        });
    }
    for g in e.groups().map_err(|e| e.to_string())? {
        if g.waiting || g.role.is_none() {
            continue;
        }
        chats.push(Chat {
            id: ids.group(&g.id),
            name: g.title,
            key: g.id,
            group: true,
            changed: false,
            disappearing_ms: g.settings.disappearing_ms,
            stranger: false,
        });
    }
    sort_chats(&mut chats, &e.last_message_at().map_err(|e| e.to_string())?);
    Ok(chats)
}

/// Newest conversation first, as in Signal or WhatsApp (`last`: when each
/// chat's `key` last had a message); chats without messages after them, by
/// name.
fn sort_chats(chats: &mut [Chat], last: &std::collections::HashMap<String, u64>) {
    chats.sort_by_cached_key(|c| {
        (
            std::cmp::Reverse(last.get(&c.key).copied()),
            c.name.to_lowercase(),
        )
    });
}

/// The chat id a message belongs to.
pub(crate) fn chat_of(ids: &super::ids::IdKey, m: &ShownMessage) -> String {
    match &m.group {
        Some((hex, _)) => ids.group(hex),
        None => ids.person(&m.peer_code),
    }
}

fn history(e: &Engine, chat: &Chat) -> Result<Vec<ShownMessage>, String> {
    if chat.group {
        e.group_history(&chat.key)
    } else {
        e.history(&chat.key)
    }
    .map_err(|e| e.to_string())
}

/// What the conversation page shows.
struct Conversation {
    chats: Vec<Chat>,
    chat: Chat,
    messages: Vec<ShownMessage>,
}

async fn load(st: &AppState, id: String) -> Result<Option<Conversation>, Problem> {
    load_as(st, id, true).await
}

/// [`load`]; `person`: a person asked (else the page reloads by itself).
async fn load_as(st: &AppState, id: String, person: bool) -> Result<Option<Conversation>, Problem> {
    let job = load_job(st.clone(), id);
    if person {
        engine(st, job).await
    } else {
        engine_unattended(st, job).await
    }
}

type LoadJob = Result<Option<Conversation>, String>;

fn load_job(
    s: AppState,
    id: String,
) -> impl for<'a> FnOnce(&'a mut Engine) -> LocalBoxFuture<'a, LoadJob> + Send + 'static {
    move |e| {
        Box::pin(async move {
            let chats = all_chats(e, &s.ids)?;
            let Some(chat) = chats.iter().find(|c| c.id == id).cloned() else {
                return Ok(None);
            };
            let messages = history(e, &chat)?;
            Ok(Some(Conversation {
                chats,
                chat,
                messages,
            }))
        })
    }
}

fn is_htmx(req: &Request) -> bool {
    req.headers().contains_key("hx-request")
}

/// The chat list, with unread badges.
pub(crate) fn chat_list(st: &AppState, chats: &[Chat], current: Option<&str>) -> Markup {
    let unread = st.unread.lock().unwrap_or_else(|e| e.into_inner()).clone();
    html! {
        nav id="chat-list" aria-label="Chats" class="chat-list" {
            @if chats.is_empty() {
                p class="empty" { "No chats yet. " a href="/contacts" { "Add a contact" } " to start one." }
            }
            ul {
                @for c in chats {
                    @let n = unread.get(&c.id).copied().unwrap_or(0);
                    li {
                        a href={"/chats/" (c.id)}
                            aria-current=[(current == Some(c.id.as_str())).then_some("page")] {
                            span class="avatar" aria-hidden="true" { (initial(&c.name)) }
                            span class="name" { @if c.stranger { "~" } (person(&c.name)) }
                            @if c.group { span class="tag" { "Group" } }
                            @if c.stranger { span class="tag" { "Not a contact" } }
                            @if c.changed { span class="tag warn" { "Safety number changed" } }
                            @if n > 0 {
                                span class="unread" { (n) span class="visually-hidden" { " unread" } }
                            }
                        }
                    }
                }
            }
            p class="search-link" { a href="/search" { "Search messages" } }
        }
    }
}

fn initial(name: &str) -> String {
    name.chars()
        .find(|c| c.is_alphanumeric())
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_else(|| "?".into())
}

async fn home(State(st): State<AppState>, req: Request) -> Response {
    let s = st.clone();
    let chats = match engine(&st, move |e| Box::pin(async move { all_chats(e, &s.ids) })).await {
        Ok(c) => c,
        Err(p) => return p.respond(&st, is_htmx(&req)),
    };
    let link = st
        .handle
        .peek_link()
        .filter(|l| l.starts_with("sotto://group?"));
    let mut page = Page::new(
        "Chats",
        Nav::Chats,
        html! {
            @if link.is_some() {
                section class="alert" aria-labelledby="join" {
                    h2 id="join" { "A link to join a group" }
                    p { "Sotto was opened with a link to join a group. Asking sends your name \
                         to the group's admins; they decide whether to let you in." }
                    form method="post" action="/join-link" class="inline" {
                        (csrf_field(&st))
                        button type="submit" class="primary" name="ask" value="yes" { "Ask to join" }
                        " "
                        button type="submit" name="ask" value="no" { "Not now" }
                    }
                }
            }
            p { "Choose a chat on the left, or " a href="/contacts" { "add a contact" } "." }
        },
    );
    page.list = Some(chat_list(&st, &chats, None));
    layout::page(&st, page)
}

async fn list_fragment(State(st): State<AppState>, req: Request) -> Response {
    let s = st.clone();
    match engine_unattended(&st, move |e| Box::pin(async move { all_chats(e, &s.ids) })).await {
        Ok(chats) => {
            let current = req
                .headers()
                .get("x-sotto-chat")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Html(chat_list(&st, &chats, current.as_deref()).into_string()).into_response()
        }
        Err(p) => p.respond(&st, true),
    }
}

fn mark_read(st: &AppState, id: &str) {
    st.unread
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
}

/// What a person typed that did not go, kept in the box.
#[derive(Default)]
struct Draft<'a> {
    text: &'a str,
    error: Option<String>,
    /// What the last action did, said once above the messages.
    done: Option<&'static str>,
}

fn conversation_page(st: &AppState, c: &Conversation, draft: Draft<'_>) -> Response {
    mark_read(st, &c.chat.id);
    let chat = &c.chat;
    let main = html! {
        @if chat.disappearing_ms > 0 {
            p class="timer" { "Messages here disappear " (duration_words(chat.disappearing_ms)) " after they are sent." }
        }
        @if chat.changed {
            (changed_alert(st, chat))
        }
        @if let Some(done) = draft.done {
            p class="done" role="status" { (done) }
        }
        (messages(st, chat, &c.messages))
        @if let Some(e) = &draft.error {
            @if !chat.changed { (error_box(e)) }
        }
        @if chat.stranger {
            (stranger_box(st, chat))
        } @else {
            form method="post" action={"/chats/" (chat.id)} class="composer" {
                (csrf_field(st))
                label for="text" { "Message" }
                textarea id="text" name="text" rows="3" required
                    maxlength=(crate::safe::MAX_TEXT_BYTES) { (draft.text) }
                button type="submit" class="primary" { "Send" }
            }
        }
    };
    let details = html! {
        h2 { "About this chat" }
        @if chat.group {
            p { "A group. " a href={"/groups/" (chat.id)} { "Members and settings" } }
        } @else if !chat.stranger {
            p { a href={"/contacts/" (chat.id)} { "Contact and safety number" } }
        }
        p { a href={"/chats/" (chat.id) "/clear"} { "Delete this chat from this computer" } }
        (layout::details("Details", html! {
            p { "Messages are end-to-end encrypted with the Signal protocol and sent with \
                 sealed sender: the relay cannot read them or see who sent them." }
        }))
    };
    let mut page = Page::new("Conversation", Nav::Chats, main);
    page.heading = Some(person(&chat.name));
    page.list = Some(chat_list(st, &c.chats, Some(&chat.id)));
    page.details = Some(details);
    let status = if draft.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let mut resp = layout::page(st, page);
    *resp.status_mut() = status;
    resp
}

/// Under a chat with someone who is not a contact: who they say they are is
/// only their word; adding them (under a name I choose) lets me reply.
fn stranger_box(st: &AppState, chat: &Chat) -> Markup {
    html! {
        section class="alert" aria-labelledby="stranger" {
            h2 id="stranger" { "Not in your contacts" }
            p { "This person wrote to you but is not one of your contacts. The name "
                (person(&chat.name)) " is the one they chose: anyone can choose any name. \
                Check with them another way before you trust it. To reply, add them:" }
            form method="post" action="/contacts" class="stack" {
                (csrf_field(st))
                label for="name" { "Name" }
                input id="name" name="name" type="text" required
                    maxlength=(crate::safe::MAX_NAME_CHARS) value=(crate::safe::line(&chat.name));
                input type="hidden" name="code" value=(chat.key);
                button type="submit" { "Add contact" }
            }
        }
    }
}

/// The banner on a conversation whose safety number changed; sending stays
/// refused until the person says they checked.
pub(crate) fn changed_alert(st: &AppState, chat: &Chat) -> Markup {
    html! {
        div class="alert" role="alert" {
            p { (person(&chat.name)) "'s safety number has changed. Their key is not the one \
                you trusted: they may have reinstalled Sotto, or someone may be pretending to be \
                them. Nothing will be sent until you check." }
            p { a href={"/contacts/" (chat.id)} { "Compare the safety number" }
                " with them in person or on another channel." }
            form method="post" action={"/contacts/" (chat.id) "/trust"} class="inline" {
                (csrf_field(st))
                input type="hidden" name="back" value={"/chats/" (chat.id)};
                button type="submit" { "I have checked, trust the new number" }
            }
        }
    }
}

/// "5 minutes", "1 day"...
pub(crate) fn duration_words(ms: u64) -> String {
    let s = ms / 1000;
    let (n, unit) = if s >= 86_400 && s.is_multiple_of(86_400) {
        (s / 86_400, "day")
    } else if s >= 3600 && s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else if s >= 60 && s.is_multiple_of(60) {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The status words of an outgoing message (a queued one's reason is shown
/// beside it when this run's send knew it).
fn status_words(m: &ShownMessage) -> &'static str {
    match m.status {
        "sent" | "received" => "Sent",
        "failed" => "Failed: it could not be delivered; send it again",
        _ => "Queued",
    }
}

fn messages(st: &AppState, chat: &Chat, list: &[ShownMessage]) -> Markup {
    let queued = st.queued.lock().unwrap_or_else(|e| e.into_inner()).clone();
    html! {
        ol id="messages" class="messages" aria-label="Messages"
            data-refresh={"/chats/" (chat.id) "/messages"} data-chat=(chat.id) {
            @if list.is_empty() {
                li class="empty" { "No messages yet. Say hello below." }
            }
            @for m in list {
                li class=(if m.outgoing { "out" } else { "in" }) id={"m-" (m.id)} {
                    div class="meta" {
                        @if m.outgoing {
                            span class="from" { "You" }
                        } @else if chat.group || !m.from_contact {
                            span class="from" {
                                @if !m.from_contact { "~" }
                                (person(&m.from))
                                @if !m.from_contact { span class="tag" { "not a contact" } }
                            }
                        }
                        " " (layout::when(m.sent_at_ms))
                    }
                    (layout::body_text(&m.text))
                    @if m.outgoing {
                        p class={"status " (m.status)} {
                            (status_words(m))
                            @if m.status == "pending" {
                                @if let Some(reason) = queued.get(&m.id) {
                                    span class="reason" { " (" (reason) "; it goes out by itself when the relay is back)" }
                                }
                            }
                        }
                    }
                    form method="post" action={"/chats/" (chat.id) "/delete"} class="inline delete" {
                        (csrf_field(st))
                        input type="hidden" name="message" value=(m.id);
                        input type="hidden" name="peer" value=(m.peer_code);
                        button type="submit" class="link" { "Delete" span class="visually-hidden" {
                            @if m.outgoing && m.status == "pending" {
                                " this unsent message (it will not be sent)"
                            } @else {
                                " this message from this computer"
                            }
                        } }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct ConversationQuery {
    /// Set after a delete: "cancelled" (it had not gone out) or "here".
    deleted: Option<String>,
}

async fn conversation(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ConversationQuery>,
    req: Request,
) -> Response {
    let done = match q.deleted.as_deref() {
        Some("cancelled") => {
            Some("Message cancelled: it had not been sent yet, and it will not be sent.")
        }
        Some("here") => Some(
            "Message deleted from this computer only; the others in this chat keep their copy.",
        ),
        _ => None,
    };
    match load(&st, id).await {
        Ok(Some(c)) => conversation_page(
            &st,
            &c,
            Draft {
                done,
                ..Draft::default()
            },
        ),
        Ok(None) => no_chat(&st),
        Err(p) => p.respond(&st, is_htmx(&req)),
    }
}

fn no_chat(st: &AppState) -> Response {
    layout::message_page(
        st,
        StatusCode::NOT_FOUND,
        "No such chat",
        html! { p { "This chat is not here any more (addresses change each time Sotto starts). "
        a href="/" { "Go to your chats" } "." } },
    )
}

async fn messages_fragment(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match load_as(&st, id, false).await {
        Ok(Some(c)) => {
            mark_read(&st, &c.chat.id);
            Html(messages(&st, &c.chat, &c.messages).into_string()).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "").into_response(),
        Err(p) => p.respond(&st, true),
    }
}

#[derive(Deserialize)]
struct SendForm {
    #[serde(default)]
    text: String,
}

/// What a send did, for the page.
enum SendOutcome {
    Went { id: String, queued: Option<String> },
    Refused(String),
}

async fn send(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<SendForm>,
) -> Response {
    let s = st.clone();
    let text = form.text.clone();
    let want = id.clone();
    let outcome = engine(&st, move |e| {
        Box::pin(async move {
            let chats = all_chats(e, &s.ids)?;
            let Some(chat) = chats.into_iter().find(|c| c.id == want) else {
                return Ok(None);
            };
            let sent = if chat.group {
                e.group_send_outcome(&chat.key, &text).await
            } else {
                e.send_text_outcome(&chat.name, &text).await
            };
            Ok(Some(match sent {
                Ok(sent) => SendOutcome::Went {
                    id: sent.id,
                    queued: match sent.delivery {
                        Delivery::Relayed => None,
                        Delivery::Queued(reason) => Some(reason),
                    },
                },
                Err(EngineError::IdentityChanged(_)) => SendOutcome::Refused(
                    "Not sent: the safety number has changed. Check it, then trust the new number."
                        .into(),
                ),
                Err(e) => SendOutcome::Refused(e.to_string()),
            }))
        })
    })
    .await;
    match outcome {
        Ok(Some(SendOutcome::Went { id: msg, queued })) => {
            if let Some(reason) = queued {
                st.queued
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(msg, reason);
            }
            see_other(&format!("/chats/{id}"))
        }
        Ok(Some(SendOutcome::Refused(error))) => match load(&st, id).await {
            Ok(Some(c)) => conversation_page(
                &st,
                &c,
                Draft {
                    text: &form.text,
                    error: Some(error),
                    done: None,
                },
            ),
            Ok(None) => no_chat(&st),
            Err(p) => p.respond(&st, false),
        },
        Ok(None) => no_chat(&st),
        Err(p) => p.respond(&st, false),
    }
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    message: String,
    #[serde(default)]
    peer: String,
}

async fn delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<DeleteForm>,
) -> Response {
    let done = engine(&st, move |e| {
        Box::pin(async move {
            e.delete_message_here(&form.peer, &form.message)
                .await
                .map_err(|e| e.to_string())
        })
    })
    .await;
    // The page after says what happened (the address carries a word, no text).
    match done {
        Ok(DeletedHere::Cancelled) => see_other(&format!("/chats/{id}?deleted=cancelled")),
        Ok(DeletedHere::Deleted) => see_other(&format!("/chats/{id}?deleted=here")),
        Ok(DeletedHere::Missing) => see_other(&format!("/chats/{id}")),
        Err(p) => p.respond(&st, false),
    }
}

async fn clear_page(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let c = match load(&st, id).await {
        Ok(Some(c)) => c,
        Ok(None) => return no_chat(&st),
        Err(p) => return p.respond(&st, is_htmx(&req)),
    };
    let main = html! {
        p { "This deletes every message of this chat from this computer. The other people \
             in it keep theirs, and new messages still arrive here." }
        form method="post" action={"/chats/" (c.chat.id) "/clear"} class="stack" {
            (csrf_field(&st))
            button type="submit" class="danger" { "Delete chat" }
        }
        p { a href={"/chats/" (c.chat.id)} { "Cancel" } }
    };
    let mut page = Page::new("Delete chat", Nav::Chats, main);
    page.list = Some(chat_list(&st, &c.chats, Some(&c.chat.id)));
    layout::page(&st, page)
}

async fn clear(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let s = st.clone();
    let want = id.clone();
    let done = engine(&st, move |e| {
        Box::pin(async move {
            let Some(chat) = all_chats(e, &s.ids)?.into_iter().find(|c| c.id == want) else {
                return Ok(None);
            };
            e.delete_history_here(&chat.key, chat.group)
                .await
                .map(Some)
                .map_err(|e| e.to_string())
        })
    })
    .await;
    match done {
        Ok(Some(_)) => see_other(&format!("/chats/{id}")),
        Ok(None) => no_chat(&st),
        Err(p) => p.respond(&st, false),
    }
}

#[derive(Deserialize)]
struct JoinForm {
    #[serde(default)]
    ask: String,
}

/// Asks to join the group whose link the app was opened with (or drops
/// the link). The link itself never reaches a URL.
async fn join_link(State(st): State<AppState>, Form(form): Form<JoinForm>) -> Response {
    let Some(link) = st
        .handle
        .take_link()
        .filter(|l| l.starts_with("sotto://group?"))
    else {
        return see_other("/");
    };
    if form.ask != "yes" {
        return see_other("/");
    }
    let asked = engine(&st, move |e| {
        Box::pin(async move { Ok(e.group_join(&link).await.map_err(|e| e.to_string())) })
    })
    .await;
    match asked {
        Ok(Ok(())) => layout::page(
            &st,
            Page::new(
                "Asked to join",
                Nav::Chats,
                html! {
                    p { "Your request was sent. An admin of the group has to let you in; the \
                         group appears in your chats when they do." }
                    p { a href="/" { "Back to your chats" } }
                },
            ),
        ),
        Ok(Err(error)) => layout::message_page(
            &st,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not sent",
            html! { (error_box(&error)) p { a href="/" { "Back to your chats" } } },
        ),
        Err(p) => p.respond(&st, false),
    }
}

#[derive(Deserialize)]
struct SearchForm {
    #[serde(default)]
    q: String,
}

async fn search_page(State(st): State<AppState>) -> Response {
    search_view(&st, "", None)
}

/// The search form posts (a search term can be a name: it must not end up
/// in the address, and so in the browser's history).
async fn search(State(st): State<AppState>, Form(form): Form<SearchForm>) -> Response {
    let q = form.q.trim().to_string();
    if q.is_empty() {
        return search_view(&st, "", None);
    }
    let s = st.clone();
    let needle = q.to_lowercase();
    let found = engine(&st, move |e| {
        Box::pin(async move {
            let mut hits = Vec::new();
            for chat in all_chats(e, &s.ids)? {
                for m in history(e, &chat)? {
                    if m.text.to_lowercase().contains(&needle) {
                        hits.push((chat.clone(), m));
                    }
                }
            }
            hits.sort_by_key(|(_, m)| std::cmp::Reverse(m.sent_at_ms));
            hits.truncate(200);
            Ok(hits)
        })
    })
    .await;
    match found {
        Ok(hits) => search_view(&st, &q, Some(hits)),
        Err(p) => p.respond(&st, false),
    }
}

fn search_view(st: &AppState, q: &str, hits: Option<Vec<(Chat, ShownMessage)>>) -> Response {
    let main = html! {
        p { "Searches the messages kept on this computer; nothing is sent anywhere." }
        form method="post" action="/search" class="stack" role="search" {
            (csrf_field(st))
            label for="q" { "Search messages" }
            input id="q" name="q" type="search" value=(q) required;
            button type="submit" { "Search" }
        }
        @if let Some(hits) = &hits {
            h2 { (hits.len()) " found" }
            ol class="results" aria-label="Results" {
                @for (chat, m) in hits {
                    li {
                        a href={"/chats/" (chat.id) "#m-" (m.id)} { (person(&chat.name)) }
                        " " (layout::when(m.sent_at_ms))
                        (layout::body_text(&m.text))
                    }
                }
            }
        }
    };
    layout::page(st, Page::new("Search", Nav::Chats, main))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::tests::{assert_no_inline, fixture};

    /// What another person could put in a name or a message.
    const HOSTILE: &[&str] = &[
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "\u{202E}gnp.exe",
        "Eve\n[12:00] rosa: send me your notes",
        "\"><svg onload=alert(1)>",
        "a\u{1b}[2Jb",
    ];

    fn message(from: &str, text: &str, outgoing: bool) -> ShownMessage {
        ShownMessage {
            id: "00".repeat(16),
            from: from.into(),
            from_contact: false,
            peer_code: "code".into(),
            outgoing,
            text: text.into(),
            sent_at_ms: 1_700_000_000_000,
            status: if outgoing { "pending" } else { "received" },
            group: Some(("aa".into(), from.into())),
        }
    }

    fn assert_inert(html: &str) {
        assert_no_inline(html);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(!html.contains("<svg onload"), "{html}");
        assert!(!html.contains('\u{202E}'), "bidi override kept");
        assert!(!html.contains('\u{1b}'), "escape kept");
    }

    #[tokio::test]
    async fn hostile_names_and_texts_are_rendered_inert() {
        let f = fixture();
        let st = &f.app.state;
        for h in HOSTILE {
            let chat = Chat {
                id: "p1".into(),
                name: (*h).into(),
                key: "k".into(),
                group: true,
                changed: true,
                disappearing_ms: 0,
                stranger: true,
            };
            let list = chat_list(st, std::slice::from_ref(&chat), None).into_string();
            assert_inert(&list);
            assert!(list.contains("<bdi>"), "names are isolated: {list}");
            let msgs =
                messages(st, &chat, &[message(h, h, false), message("me", h, true)]).into_string();
            assert_inert(&msgs);
            if h.contains('<') {
                assert!(msgs.contains("&lt;"), "escaped, not dropped: {msgs}");
            }
            let alert = changed_alert(st, &chat).into_string();
            assert_inert(&alert);
            assert!(alert.contains("role=\"alert\""));
        }
        // A name's line break is shown, not obeyed: it cannot start a line
        // that looks like another message.
        let name = layout::person("Eve\n[12:00] rosa: hi").into_string();
        assert!(name.contains("Eve\\n[12:00]"), "{name}");
        // A message keeps its line breaks (shown by CSS), in its own isolate.
        let body = layout::body_text("one\ntwo\u{202E}").into_string();
        assert_eq!(body, "<p class=\"body\" dir=\"auto\">one\ntwo\u{FFFD}</p>");
    }

    #[test]
    fn chats_are_sorted_newest_first_then_by_name() {
        let chat = |name: &str, key: &str| Chat {
            id: key.into(),
            name: name.into(),
            key: key.into(),
            group: false,
            changed: false,
            disappearing_ms: 0,
            stranger: false,
        };
        let mut chats = vec![
            chat("anna", "a"),
            chat("Bob", "b"),
            chat("Zed", "z"),
            chat("cleo", "c"),
        ];
        let last = std::collections::HashMap::from([("b".to_string(), 10), ("z".to_string(), 20)]);
        sort_chats(&mut chats, &last);
        let names: Vec<&str> = chats.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Zed", "Bob", "anna", "cleo"]);
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration_words(60_000), "1 minute");
        assert_eq!(duration_words(7 * 86_400_000), "7 days");
        assert_eq!(duration_words(90_000), "90 seconds");
        assert_eq!(duration_words(3_600_000), "1 hour");
    }
}
