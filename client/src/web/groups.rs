//! Groups: the groups I am in, a new group, joining by link, and each
//! group's page: members with role badges and what I may do to them,
//! adding contacts, settings with one sentence each, the join link, join
//! requests with their vouches, proposals waiting for admins, the
//! moderation log, leaving. The conversation itself is the chat screen's
//! (`/chats/ID`).
//!
//! A group is named in URLs by its opaque id ([`super::ids`]); members and
//! join requests are named in form bodies by their contact code (never by a
//! name, which two people can share). The engine is always given the
//! group's full hex id, after checking that it names that one group (the
//! engine looks a title up before an id, so a group titled like another's
//! id could otherwise take its place).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use futures_util::future::LocalBoxFuture;
use maud::{Markup, html};
use serde::Deserialize;
use sotto_wire::code::ContactCode;

use super::AppState;
use super::chats::{Problem, duration_words, engine};
use super::ids::IdKey;
use super::layout::{self, Nav, Page, csrf_field, error_box, person};
use super::security::see_other;
use crate::engine::{Engine, GroupInfo, MemberInfo, Moderation, ProposalInfo, SettingsChange};
use crate::group::{AnonymousPosts, LogEntry, Role, Settings};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/groups", get(list).post(create))
        .route("/groups/new", get(new_page))
        .route("/groups/join", post(join))
        .route("/groups/{id}", get(group))
        .route("/groups/{id}/member", post(member))
        .route("/groups/{id}/add", post(add))
        .route("/groups/{id}/settings", post(save_settings))
        .route("/groups/{id}/link", post(link))
        .route("/groups/{id}/request", post(request))
        .route("/groups/{id}/proposal", post(proposal))
        .route("/groups/{id}/leave", post(leave))
}

/// An engine error in user words, starting with a capital.
pub(crate) fn words(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// What an action did, shown on the page it returns to. Only these fixed
/// keys travel in the address (`?done=KEY`), never a name.
const DONE: &[(&str, &str)] = &[
    (
        "created",
        "Group created. You are its owner: add members below, or make a join link.",
    ),
    ("done", "Done."),
    (
        "proposed",
        "Proposed. It is carried out once enough admins agree (see Proposals).",
    ),
    (
        "agreed",
        "You agreed. It is carried out once enough admins agree.",
    ),
    ("saved", "Settings saved."),
    (
        "link",
        "A new join link was made; the old one no longer works.",
    ),
    ("added", "Added. They can read new messages from now on."),
    ("vouched", "You vouched for them."),
    ("left", "You left the group."),
    (
        "asked",
        "Your request to join was sent. You will see the group here once you are let in.",
    ),
];

fn done_text(key: Option<&str>) -> Option<&'static str> {
    let key = key?;
    DONE.iter().find(|(k, _)| *k == key).map(|(_, t)| *t)
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    done: Option<String>,
}

/// The group of mine the opaque `id` names, checked so that its hex id
/// finds it and only it in the engine.
fn find(e: &Engine, ids: &IdKey, id: &str) -> Result<Option<GroupInfo>, String> {
    let Some(g) = e
        .groups()
        .map_err(words)?
        .into_iter()
        .find(|g| !g.waiting && ids.group(&g.id) == id)
    else {
        return Ok(None);
    };
    let (hex, _) = e.group_title(&g.id).map_err(words)?;
    if hex != g.id {
        return Err(
            "Another of your groups is titled like this group's id, so Sotto cannot \
                    tell them apart safely. Nothing was changed."
                .into(),
        );
    }
    Ok(Some(g))
}

// ----- the list of groups ---------------------------------------------------

/// One of my groups in the list.
#[derive(Debug, Clone)]
pub(crate) struct GroupRow {
    /// Opaque id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Members.
    pub members: usize,
    /// My role (None: I left or was removed).
    pub role: Option<Role>,
    /// My join request waits.
    pub waiting: bool,
    /// Join requests waiting for approval.
    pub pending: usize,
}

async fn load_rows(st: &AppState) -> Result<Vec<GroupRow>, Problem> {
    let s = st.clone();
    engine(st, move |e| {
        Box::pin(async move {
            Ok(e.groups()
                .map_err(words)?
                .into_iter()
                .map(|g| GroupRow {
                    id: s.ids.group(&g.id),
                    title: g.title,
                    members: g.members,
                    role: g.role,
                    waiting: g.waiting,
                    pending: g.pending,
                })
                .collect())
        })
    })
    .await
}

fn role_words(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Owner) => "you are the owner",
        Some(Role::Admin) => "you are an admin",
        Some(Role::Member) => "you are a member",
        None => "you are no longer a member",
    }
}

pub(crate) fn list_view(
    st: &AppState,
    rows: &[GroupRow],
    notice: Option<&str>,
    error: Option<&str>,
    link: &str,
) -> Markup {
    html! {
        @if let Some(n) = notice { p class="notice" role="status" { (n) } }
        p { a href="/groups/new" class="button primary" { "New group" } }
        @if rows.is_empty() {
            p class="empty" { "You are not in any group yet. Make one, or join one with a \
                               link an admin gave you." }
        } @else {
            ul class="groups" aria-label="Your groups" {
                @for g in rows {
                    li {
                        @if g.waiting {
                            span class="name" { "A group you asked to join" }
                            " " span class="tag" { "Waiting to be let in" }
                        } @else {
                            a href={"/groups/" (g.id)} class="name" { (person(&g.title)) }
                            " " span class="help" {
                                (g.members) @if g.members == 1 { " member" } @else { " members" }
                                "; " (role_words(g.role))
                            }
                            @if g.pending > 0 && g.role.is_some() {
                                " " span class="tag" { (g.pending) " join request"
                                    @if g.pending != 1 { "s" } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="join-h" {
            h2 id="join-h" { "Join a group" }
            @if let Some(e) = error { (error_box(e)) }
            form method="post" action="/groups/join" class="stack" {
                (csrf_field(st))
                label for="group-link" { "Group link" }
                input id="group-link" name="link" type="text" required autocomplete="off"
                    spellcheck="false" value=(link) aria-describedby="group-link-help";
                p id="group-link-help" class="help" { "Paste the whole link an admin sent you \
                    (it starts with sotto://group). An admin may have to let you in." }
                button type="submit" { "Join group" }
            }
        }
    }
}

async fn list(State(st): State<AppState>, Query(q): Query<DoneQuery>) -> Response {
    match load_rows(&st).await {
        Ok(rows) => layout::page(
            &st,
            Page::new(
                "Groups",
                Nav::Groups,
                list_view(&st, &rows, done_text(q.done.as_deref()), None, ""),
            ),
        ),
        Err(p) => p.respond(&st, false),
    }
}

#[derive(Deserialize, Default)]
struct JoinForm {
    #[serde(default)]
    link: String,
}

async fn join(State(st): State<AppState>, Form(form): Form<JoinForm>) -> Response {
    let link = form.link.trim().to_string();
    let joined = engine(&st, move |e| {
        Box::pin(async move { Ok(e.group_join(&link).await.map_err(words)) })
    })
    .await;
    match joined {
        Ok(Ok(())) => see_other("/groups?done=asked"),
        Ok(Err(error)) => match load_rows(&st).await {
            Ok(rows) => unprocessable(layout::page(
                &st,
                Page::new(
                    "Groups",
                    Nav::Groups,
                    list_view(&st, &rows, None, Some(&error), &form.link),
                ),
            )),
            Err(p) => p.respond(&st, false),
        },
        Err(p) => p.respond(&st, false),
    }
}

fn unprocessable(mut resp: Response) -> Response {
    *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    resp
}

fn new_view(st: &AppState, title: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error { (error_box(e)) }
        form method="post" action="/groups" class="stack" {
            (csrf_field(st))
            label for="group-name" { "Group name" }
            input id="group-name" name="title" type="text" required
                maxlength=(crate::safe::MAX_TITLE_CHARS) value=(title)
                aria-describedby="group-name-help";
            p id="group-name-help" class="help" { "Every member sees this name. You will be the \
                group's owner: you can add members, make a join link and choose its settings." }
            button type="submit" class="primary" { "Create group" }
        }
    }
}

async fn new_page(State(st): State<AppState>) -> Response {
    layout::page(
        &st,
        Page::new("New group", Nav::Groups, new_view(&st, "", None)),
    )
}

#[derive(Deserialize, Default)]
struct CreateForm {
    #[serde(default)]
    title: String,
}

async fn create(State(st): State<AppState>, Form(form): Form<CreateForm>) -> Response {
    let title = form.title.clone();
    let s = st.clone();
    let made = engine(&st, move |e| {
        Box::pin(async move {
            Ok(e.group_create(&title)
                .await
                .map(|g| s.ids.group(&g.id))
                .map_err(words))
        })
    })
    .await;
    match made {
        Ok(Ok(id)) => see_other(&format!("/groups/{id}?done=created")),
        Ok(Err(error)) => unprocessable(layout::page(
            &st,
            Page::new(
                "New group",
                Nav::Groups,
                new_view(&st, &form.title, Some(&error)),
            ),
        )),
        Err(p) => p.respond(&st, false),
    }
}

// ----- one group ------------------------------------------------------------

/// A join request as the page shows it.
#[derive(Debug, Clone)]
pub(crate) struct RequestRow {
    /// The name they chose.
    pub name: String,
    /// Their contact code (names them in the form).
    pub code: String,
    /// Vouches from current members.
    pub vouches: usize,
    /// I vouched already.
    pub mine: bool,
    /// When they asked.
    pub at_ms: u64,
}

/// Everything a group's page shows. Each part the relay is asked for
/// separately may fail on its own (offline), without hiding the rest.
#[derive(Debug, Clone)]
pub(crate) struct GroupView {
    /// Opaque id.
    pub id: String,
    /// Title.
    pub title: String,
    /// My role (None: no longer a member).
    pub role: Option<Role>,
    /// Settings.
    pub settings: Settings,
    /// Admins a moderation action needs now.
    pub quorum: usize,
    /// Members.
    pub members: Result<Vec<MemberInfo>, String>,
    /// The join link (admins only), if there is one.
    pub link: Option<String>,
    /// Join requests.
    pub requests: Result<Vec<RequestRow>, String>,
    /// Proposals waiting for admins.
    pub proposals: Result<Vec<ProposalInfo>, String>,
    /// The moderation log, oldest first.
    pub log: Result<Vec<LogEntry>, String>,
    /// My contacts who are not members: (code, name).
    pub addable: Vec<(String, String)>,
}

impl GroupView {
    fn admin(&self) -> bool {
        self.role.is_some_and(Role::is_admin)
    }
}

async fn load_group(st: &AppState, id: String) -> Result<Option<GroupView>, Problem> {
    let s = st.clone();
    engine(st, move |e| {
        Box::pin(async move {
            let Some(g) = find(e, &s.ids, &id)? else {
                return Ok(None);
            };
            let hex = g.id.clone();
            let active = g.role.is_some();
            let admin = g.role.is_some_and(Role::is_admin);
            let members = e.group_members(&hex).await.map_err(words);
            let member_codes: Vec<String> = match &members {
                Ok(ms) => ms.iter().map(|m| m.code.clone()).collect(),
                Err(_) => Vec::new(),
            };
            let my_code = e.code().to_string();
            let requests = if active {
                e.group_requests(&hex).await.map_err(words).map(|ps| {
                    ps.into_iter()
                        .map(|p| {
                            let codes: Vec<String> = p
                                .vouches
                                .iter()
                                .map(|v| ContactCode::from_account_id(*v).to_string())
                                .collect();
                            RequestRow {
                                code: ContactCode::from_account_id(p.account).to_string(),
                                vouches: codes.iter().filter(|c| member_codes.contains(c)).count(),
                                mine: codes.contains(&my_code),
                                name: p.name,
                                at_ms: p.requested_at_ms,
                            }
                        })
                        .collect()
                })
            } else {
                Ok(Vec::new())
            };
            let proposals = e.group_proposals(&hex).await.map_err(words);
            let log = e.group_log(&hex).await.map_err(words);
            let link = if admin {
                e.group_link_here(&hex).map_err(words)?
            } else {
                None
            };
            let quorum = e.group_quorum_needed(&hex).map_err(words)?;
            let addable = if admin {
                e.contacts()
                    .map_err(words)?
                    .into_iter()
                    .map(|(c, _)| {
                        (
                            ContactCode::from_account_id(c.account_id).to_string(),
                            c.name,
                        )
                    })
                    .filter(|(code, _)| !member_codes.contains(code))
                    .collect()
            } else {
                Vec::new()
            };
            Ok(Some(GroupView {
                id,
                title: g.title,
                role: g.role,
                settings: g.settings,
                quorum,
                members,
                link,
                requests,
                proposals,
                log,
                addable,
            }))
        })
    })
    .await
}

/// Choices offered for a duration setting: (ms, words).
const DISAPPEARING: &[(u64, &str)] = &[
    (0, "Off"),
    (3_600_000, "1 hour"),
    (86_400_000, "1 day"),
    (7 * 86_400_000, "7 days"),
    (30 * 86_400_000, "30 days"),
    (90 * 86_400_000, "90 days"),
];
const RETENTION: &[(u64, &str)] = &[
    (0, "Until deleted"),
    (30 * 86_400_000, "30 days"),
    (90 * 86_400_000, "90 days"),
    (180 * 86_400_000, "180 days"),
    (365 * 86_400_000, "1 year"),
    (730 * 86_400_000, "2 years"),
];
const RECONFIRM: &[(u64, &str)] = &[
    (0, "Off"),
    (30 * 86_400_000, "Every 30 days"),
    (90 * 86_400_000, "Every 90 days"),
    (180 * 86_400_000, "Every 180 days"),
    (365 * 86_400_000, "Every year"),
];

/// One plain sentence per setting, saying what it does.
pub(crate) const SAYS_ANNOUNCEMENTS: &str =
    "Only admins can post; everyone else can read but not write.";
pub(crate) const SAYS_APPROVAL: &str =
    "People who use the join link wait until an admin lets them in.";
pub(crate) const SAYS_VOUCHES: &str = "A join request is let in only after this many members \
     have vouched for the person (0: no vouching needed).";
pub(crate) const SAYS_RECONFIRM: &str = "Members must confirm every so often that they still \
     want to be in the group, and whoever does not is removed (the owner never has to).";
pub(crate) const SAYS_DISAPPEARING: &str =
    "Messages are deleted from every member's device this long after they are sent.";
pub(crate) const SAYS_ANONYMOUS: &str = "Whether members may post messages and warnings \
     without their name: never, through an admin who sees who wrote it and approves it, or \
     straight away as \"a member\" with nobody able to tell who.";
pub(crate) const SAYS_QUORUM: &str = "How many admins must agree before a member is removed, \
     someone else's post is deleted, a role changes or this number changes (1: any one admin).";
pub(crate) const SAYS_RETENTION: &str = "Warnings are kept this long on members' devices, \
     whatever the disappearing timer says.";

fn duration_select(id: &str, name: &str, choices: &[(u64, &str)], current: u64) -> Markup {
    let known = choices.iter().any(|(ms, _)| *ms == current);
    html! {
        select id=(id) name=(name) aria-describedby={(id) "-help"} {
            @if !known {
                option value=(current) selected { (duration_words(current)) }
            }
            @for (ms, label) in choices {
                option value=(ms) selected[*ms == current] { (*label) }
            }
        }
    }
}

fn anonymous_words(a: AnonymousPosts) -> &'static str {
    match a {
        AnonymousPosts::Off => "Off: every post names its author",
        AnonymousPosts::ViaModerator => "Through an admin, who sees who wrote it",
        AnonymousPosts::On => "On: shown as \"a member\", nobody can tell who",
    }
}

fn settings_form(st: &AppState, v: &GroupView) -> Markup {
    let s = &v.settings;
    html! {
        form method="post" action={"/groups/" (v.id) "/settings"} class="stack settings" {
            (csrf_field(st))
            div class="check" {
                input type="checkbox" id="announcements_only" name="announcements_only"
                    value="on" checked[s.announcements_only]
                    aria-describedby="announcements_only-help";
                label for="announcements_only" { "Announcements only" }
            }
            p id="announcements_only-help" class="help" { (SAYS_ANNOUNCEMENTS) }
            div class="check" {
                input type="checkbox" id="approval" name="approval" value="on"
                    checked[s.approval] aria-describedby="approval-help";
                label for="approval" { "Approve new members" }
            }
            p id="approval-help" class="help" { (SAYS_APPROVAL) }
            label for="vouches" { "Vouches needed to join" }
            input type="number" id="vouches" name="vouches" min="0" max="20"
                value=(s.vouches_required) aria-describedby="vouches-help";
            p id="vouches-help" class="help" { (SAYS_VOUCHES) }
            label for="reconfirm" { "Re-confirm membership" }
            (duration_select("reconfirm", "reconfirm_ms", RECONFIRM, s.reconfirm_ms))
            p id="reconfirm-help" class="help" { (SAYS_RECONFIRM) }
            label for="disappearing" { "Disappearing messages" }
            (duration_select("disappearing", "disappearing_ms", DISAPPEARING, s.disappearing_ms))
            p id="disappearing-help" class="help" { (SAYS_DISAPPEARING) }
            label for="anonymous" { "Anonymous posts" }
            select id="anonymous" name="anonymous_posts" aria-describedby="anonymous-help" {
                @for a in [AnonymousPosts::Off, AnonymousPosts::ViaModerator, AnonymousPosts::On] {
                    option value=(a.as_str()) selected[a == s.anonymous_posts] { (anonymous_words(a)) }
                }
            }
            p id="anonymous-help" class="help" { (SAYS_ANONYMOUS) }
            label for="quorum" { "Admins who must agree" }
            input type="number" id="quorum" name="quorum" min="1" max="20"
                value=(s.quorum.max(1)) aria-describedby="quorum-help";
            p id="quorum-help" class="help" { (SAYS_QUORUM) }
            label for="retention" { "Keep warnings" }
            (duration_select("retention", "warning_retention_ms", RETENTION, s.warning_retention_ms))
            p id="retention-help" class="help" { (SAYS_RETENTION) }
            button type="submit" class="primary" { "Save settings" }
        }
    }
}

fn settings_read_only(s: &Settings) -> Markup {
    let on = |b: bool| if b { "On" } else { "Off" };
    let dur = |ms: u64, zero: &'static str| {
        if ms == 0 {
            zero.to_string()
        } else {
            duration_words(ms)
        }
    };
    let rows: Vec<(&str, String, &str)> = vec![
        (
            "Announcements only",
            on(s.announcements_only).into(),
            SAYS_ANNOUNCEMENTS,
        ),
        ("Approve new members", on(s.approval).into(), SAYS_APPROVAL),
        (
            "Vouches needed to join",
            s.vouches_required.to_string(),
            SAYS_VOUCHES,
        ),
        (
            "Re-confirm membership",
            dur(s.reconfirm_ms, "Off"),
            SAYS_RECONFIRM,
        ),
        (
            "Disappearing messages",
            dur(s.disappearing_ms, "Off"),
            SAYS_DISAPPEARING,
        ),
        (
            "Anonymous posts",
            anonymous_words(s.anonymous_posts).into(),
            SAYS_ANONYMOUS,
        ),
        (
            "Admins who must agree",
            s.quorum.max(1).to_string(),
            SAYS_QUORUM,
        ),
        (
            "Keep warnings",
            dur(s.warning_retention_ms, "Until deleted"),
            SAYS_RETENTION,
        ),
    ];
    html! {
        p { "Only admins can change these." }
        dl class="settings" {
            @for (name, value, says) in rows {
                dt { (name) }
                dd { strong { (value) } " — " (says) }
            }
        }
    }
}

/// Whether I may promote, demote or remove `m`.
fn may_moderate(v: &GroupView, m: &MemberInfo) -> bool {
    v.admin() && !m.me && m.role != Role::Owner
}

fn members_view(st: &AppState, v: &GroupView) -> Markup {
    html! {
        @match &v.members {
            Err(e) => { (error_box(e)) }
            Ok(members) => {
                @if v.quorum > 1 && v.admin() {
                    p class="help" { "In this group " (v.quorum) " admins must agree to remove \
                        someone or change a role: these buttons make a proposal, which the other \
                        admins see under Proposals." }
                }
                ul aria-label="Members" class="members" {
                    @for (i, m) in members.iter().enumerate() {
                        li {
                            span class="name" id={"member-" (i)} { (person(&m.name))
                                @if m.me { " (you)" } }
                            " "
                            @if m.role.is_admin() {
                                span class="badge admin" { "Admin" }
                            } @else {
                                span class="badge" { "Member" }
                            }
                            @if m.role == Role::Owner { " " span class="tag" { "Owner" } }
                            @if may_moderate(v, m) {
                                form method="post" action={"/groups/" (v.id) "/member"}
                                    class="inline member-actions" {
                                    (csrf_field(st))
                                    input type="hidden" name="member" value=(m.code);
                                    @if m.role == Role::Member {
                                        button type="submit" name="action" value="promote"
                                            aria-describedby={"member-" (i)} { "Promote" }
                                    } @else {
                                        button type="submit" name="action" value="demote"
                                            aria-describedby={"member-" (i)} { "Demote" }
                                    }
                                    button type="submit" name="action" value="remove"
                                        class="danger" aria-describedby={"member-" (i)} { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if v.admin() && !v.addable.is_empty() {
            form method="post" action={"/groups/" (v.id) "/add"} class="stack" {
                (csrf_field(st))
                label for="add-contact" { "Add a contact" }
                select id="add-contact" name="code" {
                    @for (code, name) in &v.addable {
                        option value=(code) { (crate::safe::line(name)) }
                    }
                }
                button type="submit" { "Add to group" }
            }
        }
    }
}

fn requests_view(st: &AppState, v: &GroupView) -> Markup {
    let needed = v.settings.vouches_required as usize;
    html! {
        @match &v.requests {
            Err(e) => { (error_box(e)) }
            Ok(rows) if rows.is_empty() => { p class="empty" { "No one is waiting to join." } }
            Ok(rows) => {
                ul aria-label="Join requests" class="requests" {
                    @for (i, r) in rows.iter().enumerate() {
                        li {
                            span class="name" id={"request-" (i)} { (person(&r.name)) }
                            " " span class="help" { "asked " (layout::when(r.at_ms)) }
                            @if needed > 0 {
                                " " span class="tag" { (r.vouches) " of " (needed) " vouches" }
                            }
                            form method="post" action={"/groups/" (v.id) "/request"} class="inline" {
                                (csrf_field(st))
                                input type="hidden" name="who" value=(r.code);
                                @if needed > 0 && !r.mine {
                                    button type="submit" name="action" value="vouch"
                                        aria-describedby={"request-" (i)} { "Vouch" }
                                }
                                @if v.admin() {
                                    button type="submit" name="action" value="approve"
                                        class="primary" aria-describedby={"request-" (i)} { "Approve" }
                                    button type="submit" name="action" value="deny"
                                        class="danger" aria-describedby={"request-" (i)} { "Deny" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn proposals_view(st: &AppState, v: &GroupView) -> Markup {
    html! {
        @match &v.proposals {
            Err(e) => { (error_box(e)) }
            Ok(ps) if ps.is_empty() => { p class="empty" { "Nothing is waiting for admins to agree." } }
            Ok(ps) => {
                ul aria-label="Proposals" class="proposals" {
                    @for (i, p) in ps.iter().enumerate() {
                        li {
                            p id={"proposal-" (i)} { (person(&p.by)) " proposed to "
                                (person(&p.action)) "." }
                            p class="help" { (p.approvals) " of " (p.needed) " admins agree; proposed "
                                (layout::when(p.at_ms)) }
                            @if let Some(m) = &p.message {
                                @if let Some(text) = &m.text {
                                    blockquote {
                                        @if let Some(a) = &m.author { p { (person(a)) " wrote:" } }
                                        (layout::body_text(text))
                                    }
                                }
                                @if let Some((subject, kind)) = &m.warning {
                                    p { "It is a warning about " (person(subject)) " ("
                                        (kind.replace('-', " ")) ")." }
                                }
                                @if m.text.is_none() && m.warning.is_none() {
                                    p class="help" { "That message is not on this computer." }
                                }
                            }
                            @if v.admin() {
                                form method="post" action={"/groups/" (v.id) "/proposal"} class="inline" {
                                    (csrf_field(st))
                                    input type="hidden" name="proposal" value=(p.id);
                                    button type="submit" name="action" value="agree" class="primary"
                                        aria-describedby={"proposal-" (i)} { "Agree" }
                                    button type="submit" name="action" value="withdraw"
                                        aria-describedby={"proposal-" (i)} { "Withdraw" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn log_view(v: &GroupView) -> Markup {
    html! {
        @match &v.log {
            Err(e) => { (error_box(e)) }
            Ok(log) if log.is_empty() => { p class="empty" { "Nothing yet." } }
            Ok(log) => {
                ol aria-label="Moderation log" class="log" reversed {
                    @for entry in log.iter().rev() {
                        li { (layout::when(entry.at_ms)) " " (person(&entry.by_name)) " "
                            (person(&entry.action)) }
                    }
                }
            }
        }
    }
}

pub(crate) fn group_view(
    st: &AppState,
    v: &GroupView,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    html! {
        @if let Some(n) = notice { p class="notice" role="status" { (n) } }
        @if let Some(e) = error { (error_box(e)) }
        @if v.role.is_none() {
            p class="alert" { "You are no longer a member of this group. What it held on this \
                computer stays readable here." }
        }
        p { a href={"/chats/" (v.id)} class="button" { "Open the conversation" } }
        section aria-labelledby="members-h" {
            h2 id="members-h" { "Members" }
            (members_view(st, v))
        }
        section aria-labelledby="settings-h" {
            h2 id="settings-h" { "Settings" }
            @if v.admin() { (settings_form(st, v)) } @else { (settings_read_only(&v.settings)) }
        }
        @if v.admin() {
            section aria-labelledby="link-h" {
                h2 id="link-h" { "Join link" }
                p { "Anyone who has this link can ask to join. Send it only to people you \
                     trust, over a private channel; reset it if it reaches the wrong person." }
                @if let Some(link) = &v.link {
                    label for="join-link" { "Join link" }
                    input id="join-link" type="text" readonly value=(link) class="code";
                    form method="post" action={"/groups/" (v.id) "/link"} class="inline" {
                        (csrf_field(st))
                        input type="hidden" name="reset" value="1";
                        button type="submit" { "Reset join link" }
                    }
                } @else {
                    form method="post" action={"/groups/" (v.id) "/link"} class="inline" {
                        (csrf_field(st))
                        button type="submit" { "Create join link" }
                    }
                }
            }
        }
        @if v.role.is_some() {
            section aria-labelledby="requests-h" {
                h2 id="requests-h" { "Join requests" }
                (requests_view(st, v))
            }
        }
        section aria-labelledby="proposals-h" {
            h2 id="proposals-h" { "Proposals" }
            (proposals_view(st, v))
        }
        section aria-labelledby="log-h" {
            h2 id="log-h" { "Moderation log" }
            p class="help" { "Every member sees what admins did here, newest first." }
            (log_view(v))
        }
        @if v.role.is_some() {
            section aria-labelledby="leave-h" {
                h2 id="leave-h" { "Leave the group" }
                p { "You stop receiving its messages. To come back you need a new join link \
                     or an admin to add you." }
                form method="post" action={"/groups/" (v.id) "/leave"} class="inline" {
                    (csrf_field(st))
                    button type="submit" class="danger" { "Leave group" }
                }
            }
        }
    }
}

fn group_page(st: &AppState, v: &GroupView, notice: Option<&str>, error: Option<&str>) -> Response {
    let mut page = Page::new("Group", Nav::Groups, group_view(st, v, notice, error));
    page.heading = Some(person(&v.title));
    let resp = layout::page(st, page);
    if error.is_some() {
        unprocessable(resp)
    } else {
        resp
    }
}

fn no_group(st: &AppState) -> Response {
    layout::message_page(
        st,
        StatusCode::NOT_FOUND,
        "No such group",
        html! { p { "This group is not here any more (addresses change each time Sotto \
        starts). " a href="/groups" { "Go to your groups" } "." } },
    )
}

async fn group(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    match load_group(&st, id).await {
        Ok(Some(v)) => group_page(&st, &v, done_text(q.done.as_deref()), None),
        Ok(None) => no_group(&st),
        Err(p) => p.respond(&st, false),
    }
}

/// An action on the group `id` names: `f` gets the engine and the group's
/// hex id and says which notice to show (a key of [`DONE`]) or why it was
/// refused, which the group page then shows above everything.
async fn act<F>(st: AppState, id: String, f: F) -> Response
where
    F: for<'a> FnOnce(&'a mut Engine, String) -> LocalBoxFuture<'a, Result<&'static str, String>>
        + Send
        + 'static,
{
    let s = st.clone();
    let want = id.clone();
    let res = engine(&st, move |e| {
        Box::pin(async move {
            let Some(g) = find(e, &s.ids, &want)? else {
                return Ok(None);
            };
            Ok(Some(f(e, g.id).await))
        })
    })
    .await;
    match res {
        Ok(Some(Ok("left"))) => see_other("/groups?done=left"),
        Ok(Some(Ok(done))) => see_other(&format!("/groups/{id}?done={done}")),
        Ok(Some(Err(error))) => match load_group(&st, id).await {
            Ok(Some(v)) => group_page(&st, &v, None, Some(&error)),
            Ok(None) => no_group(&st),
            Err(p) => p.respond(&st, false),
        },
        Ok(None) => no_group(&st),
        Err(p) => p.respond(&st, false),
    }
}

fn moderated(m: Moderation) -> &'static str {
    match m {
        Moderation::Done(_) => "done",
        Moderation::Proposed { .. } => "proposed",
    }
}

#[derive(Deserialize)]
struct MemberForm {
    #[serde(default)]
    member: String,
    #[serde(default)]
    action: String,
}

async fn member(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<MemberForm>,
) -> Response {
    act(st, id, move |e, hex| {
        Box::pin(async move {
            // A contact code, checked: it names one account and is no name.
            let who = form
                .member
                .parse::<ContactCode>()
                .map_err(|_| "That member is not known here; reload the page.".to_string())?
                .to_string();
            let m = match form.action.as_str() {
                "promote" => e.group_set_role(&hex, &who, true).await,
                "demote" => e.group_set_role(&hex, &who, false).await,
                "remove" => e.group_remove(&hex, &who).await,
                _ => return Err("Choose Promote, Demote or Remove.".into()),
            };
            m.map(moderated).map_err(words)
        })
    })
    .await
}

#[derive(Deserialize)]
struct AddForm {
    #[serde(default)]
    code: String,
}

async fn add(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<AddForm>,
) -> Response {
    act(st, id, move |e, hex| {
        Box::pin(async move {
            // The engine adds contacts by name: find mine by its code.
            let name = e
                .contacts()
                .map_err(words)?
                .into_iter()
                .find(|(c, _)| ContactCode::from_account_id(c.account_id).to_string() == form.code)
                .map(|(c, _)| c.name)
                .ok_or("That contact is not here any more; reload the page.")?;
            e.group_add(&hex, &[name]).await.map_err(words)?;
            Ok("added")
        })
    })
    .await
}

#[derive(Deserialize, Default)]
struct SettingsForm {
    announcements_only: Option<String>,
    approval: Option<String>,
    #[serde(default)]
    vouches: String,
    #[serde(default)]
    reconfirm_ms: String,
    #[serde(default)]
    disappearing_ms: String,
    #[serde(default)]
    anonymous_posts: String,
    #[serde(default)]
    quorum: String,
    #[serde(default)]
    warning_retention_ms: String,
}

impl SettingsForm {
    /// The change the form asks for, or what is wrong with it.
    fn change(&self) -> Result<SettingsChange, String> {
        let number = |what: &str, v: &str, max: u64| -> Result<u64, String> {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{what}: give a whole number from 0 to {max}."))
        };
        let year_ms = 10 * 365 * 86_400_000;
        Ok(SettingsChange {
            announcements_only: Some(self.announcements_only.is_some()),
            approval: Some(self.approval.is_some()),
            vouches_required: Some(number("Vouches needed to join", &self.vouches, 20)? as u32),
            reconfirm_ms: Some(number(
                "Re-confirm membership",
                &self.reconfirm_ms,
                year_ms,
            )?),
            disappearing_ms: Some(number(
                "Disappearing messages",
                &self.disappearing_ms,
                year_ms,
            )?),
            anonymous_posts: Some(self.anonymous_posts.parse::<AnonymousPosts>()?),
            quorum: Some(number("Admins who must agree", &self.quorum, 20)?.max(1) as u32),
            warning_retention_ms: Some(number(
                "Keep warnings",
                &self.warning_retention_ms,
                year_ms,
            )?),
        })
    }
}

async fn save_settings(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<SettingsForm>,
) -> Response {
    act(st, id, move |e, hex| {
        Box::pin(async move {
            let change = form.change()?;
            match e.group_settings(&hex, change).await.map_err(words)? {
                Moderation::Done(_) => Ok("saved"),
                Moderation::Proposed { .. } => Ok("proposed"),
            }
        })
    })
    .await
}

#[derive(Deserialize)]
struct LinkForm {
    reset: Option<String>,
}

async fn link(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<LinkForm>,
) -> Response {
    let reset = form.reset.is_some();
    act(st, id, move |e, hex| {
        Box::pin(async move {
            e.group_link(&hex, reset).await.map_err(words)?;
            Ok(if reset { "link" } else { "done" })
        })
    })
    .await
}

#[derive(Deserialize)]
struct RequestForm {
    #[serde(default)]
    who: String,
    #[serde(default)]
    action: String,
}

async fn request(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<RequestForm>,
) -> Response {
    act(st, id, move |e, hex| {
        Box::pin(async move {
            let who = form
                .who
                .parse::<ContactCode>()
                .map_err(|_| "That request is not known here; reload the page.".to_string())?
                .to_string();
            let done = match form.action.as_str() {
                "approve" => e.group_resolve(&hex, &who, true).await.map(|()| "done"),
                "deny" => e.group_resolve(&hex, &who, false).await.map(|()| "done"),
                "vouch" => e
                    .group_vouch(&hex, &who)
                    .await
                    .map(|v| if v.admitted { "done" } else { "vouched" }),
                _ => return Err("Choose Approve, Deny or Vouch.".into()),
            };
            done.map_err(words)
        })
    })
    .await
}

#[derive(Deserialize)]
struct ProposalForm {
    #[serde(default)]
    proposal: String,
    #[serde(default)]
    action: String,
}

async fn proposal(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<ProposalForm>,
) -> Response {
    act(st, id, move |e, hex| {
        Box::pin(async move {
            let done = match form.action.as_str() {
                "agree" => e.group_agree(&hex, &form.proposal).await.map(|m| match m {
                    Moderation::Done(_) => "done",
                    Moderation::Proposed { .. } => "agreed",
                }),
                "withdraw" => e
                    .group_withdraw(&hex, &form.proposal)
                    .await
                    .map(|()| "done"),
                _ => return Err("Choose Agree or Withdraw.".into()),
            };
            done.map_err(words)
        })
    })
    .await
}

async fn leave(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    act(st, id, |e, hex| {
        Box::pin(async move {
            e.group_leave(&hex).await.map_err(words)?;
            Ok("left")
        })
    })
    .await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::ProposedMessage;
    use crate::web::tests::{assert_no_inline, fixture};

    /// What another person could put in a name, a title or a text.
    pub(crate) const HOSTILE: &[&str] = &[
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "\u{202E}gnp.exe",
        "Eve\n[12:00] rosa: send me your notes",
        "\"><svg onload=alert(1)>",
        "a\u{1b}[2Jb",
    ];

    /// Nothing in `html` can run or reorder the page: another person's
    /// text, shown.
    pub(crate) fn assert_inert(html: &str) {
        assert_escaped(html);
        assert!(!html.contains('\u{202E}'), "bidi override kept");
        assert!(!html.contains('\u{1b}'), "escape kept");
    }

    /// Nothing in `html` can run: what I typed, kept in a form as typed
    /// (escaped, so it cannot leave its attribute or element).
    pub(crate) fn assert_escaped(html: &str) {
        assert_no_inline(&without_values(html));
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(!html.contains("<svg onload"), "{html}");
    }

    /// `page` with every quoted attribute value emptied (maud escapes `"`
    /// inside values, so a value ends at the next `"`): what is left of
    /// each tag is its real attributes, which `assert_no_inline` checks
    /// (it would take `value="&lt;img onerror=x&gt;"` for a handler).
    fn without_values(page: &str) -> String {
        let (mut out, mut in_tag, mut in_value, mut prev) =
            (String::with_capacity(page.len()), false, false, ' ');
        for c in page.chars() {
            if in_value {
                if c == '"' {
                    in_value = false;
                    out.push(c);
                }
                prev = c;
                continue;
            }
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                // `src` stays: the check looks at where scripts come from.
                '"' if in_tag && prev == '=' && !out.ends_with(" src=") => in_value = true,
                _ => {}
            }
            out.push(c);
            prev = c;
        }
        out
    }

    #[test]
    fn without_values_keeps_real_attributes_only() {
        let page =
            r#"<input value="&lt;img onerror=x&gt;" onclick="y"><p>a="b"</p><script src="/a">"#;
        assert_eq!(
            without_values(page),
            r#"<input value="" onclick=""><p>a="b"</p><script src="/a">"#
        );
    }

    /// The `<title>` of a page.
    pub(crate) fn title_of(page: &str) -> &str {
        let start = page.find("<title>").expect("a title") + "<title>".len();
        let end = page[start..].find("</title>").expect("a closed title") + start;
        &page[start..end]
    }

    /// Every `href` and `action` of a page.
    pub(crate) fn addresses(page: &str) -> Vec<String> {
        let mut out = Vec::new();
        for attr in ["href=\"", "action=\""] {
            for (i, _) in page.match_indices(attr) {
                let rest = &page[i + attr.len()..];
                out.push(rest[..rest.find('"').expect("closed")].to_string());
            }
        }
        out
    }

    pub(crate) async fn body_of(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), 4 << 20)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    fn member(name: &str, code: &str, role: Role, me: bool) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            code: code.into(),
            role,
            me,
        }
    }

    fn view(h: &str, my_role: Role) -> GroupView {
        GroupView {
            id: "g0123456789abcdef01234567".into(),
            title: h.into(),
            role: Some(my_role),
            settings: Settings::default(),
            quorum: 1,
            members: Ok(vec![
                member("Me", "me-code", my_role, true),
                member(h, "code-1", Role::Member, false),
                member(h, "code-2", Role::Admin, false),
                member(h, "code-3", Role::Owner, false),
            ]),
            link: Some("sotto://group?id=AB&secret=cd".into()),
            requests: Ok(vec![RequestRow {
                name: h.into(),
                code: "code-4".into(),
                vouches: 1,
                mine: false,
                at_ms: 1_700_000_000_000,
            }]),
            proposals: Ok(vec![ProposalInfo {
                id: "0a1b2c3d".into(),
                action: format!("remove {h}"),
                by: h.into(),
                approvals: 1,
                needed: 2,
                at_ms: 1_700_000_000_000,
                message: Some(ProposedMessage {
                    id: "00".into(),
                    author: Some(h.into()),
                    sent_at_ms: Some(1),
                    text: Some(h.into()),
                    warning: Some((h.into(), "bullying".into())),
                }),
            }]),
            log: Ok(vec![LogEntry {
                at_ms: 1_700_000_000_000,
                by: uuid::Uuid::nil(),
                by_name: h.into(),
                action: format!("removed {h}"),
            }]),
            addable: vec![("code-5".into(), h.into())],
        }
    }

    #[tokio::test]
    async fn a_group_page_renders_hostile_names_and_titles_inert() {
        let f = fixture();
        let st = &f.app.state;
        for h in HOSTILE {
            let v = view(h, Role::Owner);
            let page = body_of(group_page(st, &v, None, None)).await;
            assert_inert(&page);
            if h.contains('<') {
                assert!(page.contains("&lt;"), "escaped, not dropped");
            }
            assert!(page.contains("<bdi>"), "names are isolated");
            // The title is the group's on the page, never in <title> or a URL.
            assert_eq!(title_of(&page), "Sotto – Group");
            for a in addresses(&page) {
                assert!(!a.contains("alert") && !a.contains("Eve"), "{a}");
            }
            let list = list_view(
                st,
                &[GroupRow {
                    id: "g01".into(),
                    title: (*h).into(),
                    members: 3,
                    role: Some(Role::Member),
                    waiting: false,
                    pending: 1,
                }],
                None,
                None,
                "",
            )
            .into_string();
            assert_inert(&list);
            // A link I pasted is kept in the box as typed, escaped.
            let typed = list_view(st, &[], None, None, h).into_string();
            assert_escaped(&typed);
            if h.contains('"') {
                assert!(typed.contains("value=\"&quot;&gt;&lt;svg"), "{typed}");
            }
        }
    }

    #[tokio::test]
    async fn an_admin_sees_every_tool_with_the_contract_labels() {
        let f = fixture();
        let v = view("Staff network", Role::Owner);
        let page = group_view(&f.app.state, &v, Some("Done."), None).into_string();
        for label in [
            r#"<ul aria-label="Members""#,
            ">Admin<",
            ">Member<",
            ">Promote<",
            ">Demote<",
            ">Remove<",
            ">Save settings<",
            ">Join link<",
            ">Reset join link<",
            ">Join requests<",
            ">Approve<",
            ">Deny<",
            ">Proposals<",
            ">Agree<",
            ">Withdraw<",
            ">Moderation log<",
            ">Leave group<",
            ">Add to group<",
        ] {
            assert!(page.contains(label), "{label} missing");
        }
        // One sentence per setting, tied to its control.
        for says in [
            SAYS_ANNOUNCEMENTS,
            SAYS_APPROVAL,
            SAYS_VOUCHES,
            SAYS_RECONFIRM,
            SAYS_DISAPPEARING,
            SAYS_ANONYMOUS,
            SAYS_QUORUM,
            SAYS_RETENTION,
        ] {
            let shown = maud::html! { (says) }.into_string();
            assert!(page.contains(&shown), "{says}");
        }
        for control in [
            "announcements_only",
            "approval",
            "vouches",
            "reconfirm",
            "disappearing",
            "anonymous",
            "quorum",
            "retention",
        ] {
            assert!(
                page.contains(&format!(r#"id="{control}" "#))
                    && page.contains(&format!(r#"aria-describedby="{control}-help""#)),
                "{control}"
            );
        }
        // Members are named by contact code in the forms, never by name.
        assert!(page.contains(r#"name="member" value="code-1""#));
        // Not on me, not on the owner: three members, two with actions.
        assert_eq!(page.matches(">Remove<").count(), 2);
        assert_eq!(page.matches(">Promote<").count(), 1);
        assert_eq!(page.matches(">Demote<").count(), 1);
        assert!(page.contains("Done."));
    }

    #[tokio::test]
    async fn a_member_sees_no_admin_tools_and_reads_the_settings() {
        let f = fixture();
        let mut v = view("Staff network", Role::Member);
        v.settings.vouches_required = 2;
        let page = group_view(&f.app.state, &v, None, None).into_string();
        for absent in [
            ">Promote<",
            ">Demote<",
            ">Remove<",
            ">Save settings<",
            ">Reset join link<",
            ">Approve<",
            ">Deny<",
            ">Agree<",
            "sotto://group",
        ] {
            assert!(!page.contains(absent), "{absent} shown to a member");
        }
        assert!(page.contains("Only admins can change these."));
        assert!(page.contains(&maud::html! { (SAYS_QUORUM) }.into_string()));
        // Vetting on: a member may vouch, and sees the count.
        assert!(page.contains(">Vouch<"));
        assert!(page.contains("1 of 2 vouches"));
        assert!(page.contains(">Leave group<"));
    }

    #[tokio::test]
    async fn a_quorum_group_says_the_buttons_make_proposals() {
        let f = fixture();
        let mut v = view("Staff network", Role::Admin);
        v.quorum = 2;
        let page = group_view(&f.app.state, &v, None, None).into_string();
        assert!(page.contains("2 admins must agree"), "{page}");
        v.quorum = 1;
        let page = group_view(&f.app.state, &v, None, None).into_string();
        assert!(!page.contains("admins must agree to remove"));
    }

    #[tokio::test]
    async fn a_former_member_sees_no_actions() {
        let f = fixture();
        let mut v = view("Staff network", Role::Member);
        v.role = None;
        let page = group_view(&f.app.state, &v, None, None).into_string();
        assert!(page.contains("no longer a member"));
        for absent in [">Leave group<", ">Join requests<", ">Save settings<"] {
            assert!(!page.contains(absent), "{absent}");
        }
    }

    #[test]
    fn the_settings_form_reads_every_field_and_refuses_bad_numbers() {
        let form = SettingsForm {
            announcements_only: Some("on".into()),
            approval: None,
            vouches: "2".into(),
            reconfirm_ms: "0".into(),
            disappearing_ms: "86400000".into(),
            anonymous_posts: "via-moderator".into(),
            quorum: "0".into(),
            warning_retention_ms: "2592000000".into(),
        };
        let c = form.change().expect("valid");
        assert_eq!(c.announcements_only, Some(true));
        assert_eq!(c.approval, Some(false));
        assert_eq!(c.vouches_required, Some(2));
        assert_eq!(c.reconfirm_ms, Some(0));
        assert_eq!(c.disappearing_ms, Some(86_400_000));
        assert_eq!(c.anonymous_posts, Some(AnonymousPosts::ViaModerator));
        assert_eq!(c.quorum, Some(1), "0 admins means one admin");
        assert_eq!(c.warning_retention_ms, Some(2_592_000_000));
        for (field, bad) in [("vouches", "-1"), ("vouches", "21"), ("quorum", "x")] {
            let mut f = SettingsForm {
                vouches: "0".into(),
                reconfirm_ms: "0".into(),
                disappearing_ms: "0".into(),
                anonymous_posts: "off".into(),
                quorum: "1".into(),
                warning_retention_ms: "0".into(),
                ..SettingsForm::default()
            };
            match field {
                "vouches" => f.vouches = bad.into(),
                _ => f.quorum = bad.into(),
            }
            let err = f.change().expect_err(bad);
            assert!(err.contains("whole number"), "{err}");
        }
        let f = SettingsForm {
            anonymous_posts: "sometimes".into(),
            ..SettingsForm::default()
        };
        assert!(f.change().is_err());
    }

    #[test]
    fn only_fixed_notices_come_from_the_address() {
        assert_eq!(done_text(Some("saved")), Some("Settings saved."));
        assert_eq!(done_text(Some("<script>")), None);
        assert_eq!(done_text(None), None);
    }

    #[tokio::test]
    async fn group_screens_are_behind_the_gate_and_csrf() {
        use crate::web::tests::{get, launch, send};
        use axum::body::Body;
        use axum::http::header;
        let f = fixture();
        let cookie = launch(&f).await;
        // No profile here: every screen sends the browser to set-up.
        for path in ["/groups", "/groups/new", "/groups/g00"] {
            let req = get(path)
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .expect("test setup");
            let (status, headers, _) = send(&f.router, req).await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
            assert_eq!(headers[header::LOCATION], "/setup", "{path}");
        }
        // A change without the token is refused before any handler.
        for path in [
            "/groups",
            "/groups/join",
            "/groups/g00/member",
            "/groups/g00/leave",
        ] {
            let req = get(path)
                .method("POST")
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("title=x"))
                .expect("test setup");
            assert_eq!(
                send(&f.router, req).await.0,
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
    }
}
