//! The warnings board: warnings by person across my groups, with counts;
//! posting a warning (every field of `sotto warn`, anonymous where the
//! group allows it, previewed before anything is sent); a person's page
//! with their warnings, "Me too" (anonymous corroboration) and, for each
//! warning, the route card: where it can go next, with deadlines.
//!
//! A person is named in URLs by an opaque id made from the board's
//! matching key under the per-run key ([`subject_id`]), so neither the
//! browser's history nor a page `<title>` ever holds their name. Warning
//! ids travel only in form bodies.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde::Deserialize;

use super::AppState;
use super::chats::{Problem, engine};
use super::groups::words;
use super::ids::IdKey;
use super::layout::{self, Nav, Page, csrf_field, error_box, person};
use super::security::see_other;
use crate::engine::{AnonymousBody, KINDS, SubjectSummary, WarningInput, WarningView};
use crate::group::{AnonymousPosts, Role};
use crate::routes::{Card, GivenDate, Routes, status_text, today};
use crate::safe::{self, Lines};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/warnings", get(board))
        .route("/warnings/new", get(new_page).post(submit))
        .route("/warnings/{id}", get(subject))
        .route("/warnings/{id}/me-too", post(me_too))
}

/// The opaque id of the person whose board key is `key`: an HMAC under the
/// per-run key (through [`IdKey::group`] with a separate domain: a group's
/// hex id never contains a NUL, so the two cannot meet), never the name.
pub(crate) fn subject_id(ids: &IdKey, key: &str) -> String {
    format!("s{}", &ids.group(&format!("subject\0{key}"))[1..])
}

/// Fixed notices an action can ask for in the address (`?done=KEY`).
const DONE: &[(&str, &str)] = &[
    (
        "posted",
        "Your warning was posted. Members of the group see it on their board.",
    ),
    (
        "anonymous",
        "Your warning was posted as \"a member\": nobody in the group can tell it was you.",
    ),
    (
        "moderator",
        "Your warning went to the group's admins, who can see it is yours. Once one of them \
         approves it, members see it from \"a member (approved by a moderator)\".",
    ),
    (
        "metoo",
        "Your \"me too\" was added. Members see the count go up, not who said it.",
    ),
];

#[derive(Deserialize, Default)]
struct DoneQuery {
    done: Option<String>,
}

fn done_text(key: Option<&str>) -> Option<&'static str> {
    let key = key?;
    DONE.iter().find(|(k, _)| *k == key).map(|(_, t)| *t)
}

fn kind_words(kind: &str) -> String {
    let mut k = kind.replace('-', " ");
    if let Some(first) = k.get(..1) {
        k.replace_range(..1, &first.to_uppercase());
    }
    k
}

/// Anonymous corroborations of all of a person's warnings.
fn corroborations(s: &SubjectSummary) -> usize {
    s.warnings.iter().map(|w| w.corroborations).sum()
}

// ----- the board ------------------------------------------------------------

async fn load_board(st: &AppState) -> Result<Vec<SubjectSummary>, Problem> {
    engine(st, |e| {
        Box::pin(async move { e.warnings(None, None).map_err(words) })
    })
    .await
}

pub(crate) fn board_view(
    st: &AppState,
    subjects: &[SubjectSummary],
    notice: Option<&str>,
) -> Markup {
    html! {
        @if let Some(n) = notice { p class="notice" role="status" { (n) } }
        p { a href="/warnings/new" class="button primary" { "Post a warning" } }
        p class="help" { "Warnings from all your groups, by the person they are about. \
            First-hand and second-hand count people (those who posted and those who said \
            \"me too\"), each once; a person who reported both counts as first-hand." }
        @if subjects.is_empty() {
            p class="empty" { "No warnings in your groups yet." }
        }
        table class="board" {
            caption { "Warnings by person" }
            thead {
                tr {
                    th scope="col" { "Person" }
                    th scope="col" { "First-hand" }
                    th scope="col" { "Second-hand" }
                    th scope="col" { "Anonymous corroborations" }
                    th scope="col" { "Kinds" }
                    th scope="col" { "Newest" }
                }
            }
            tbody {
                @for s in subjects {
                    tr {
                        th scope="row" {
                            a href={"/warnings/" (subject_id(&st.ids, &s.key))} {
                                (person(s.names.first().map_or(s.key.as_str(), String::as_str)))
                            }
                            @if !s.roles.is_empty() {
                                br;
                                span class="help" { (person(&s.roles.join("; "))) }
                            }
                        }
                        td { (s.firsthand_reporters) }
                        td { (s.secondhand_reporters) }
                        td { (corroborations(s)) }
                        td {
                            @for (i, (kind, n)) in s.kinds.iter().enumerate() {
                                @if i > 0 { ", " }
                                (kind_words(kind)) @if *n > 1 { " ×" (n) }
                            }
                        }
                        td { (person(&s.newest)) }
                    }
                }
            }
        }
    }
}

async fn board(State(st): State<AppState>, Query(q): Query<DoneQuery>) -> Response {
    match load_board(&st).await {
        Ok(subjects) => layout::page(
            &st,
            Page::new(
                "Warnings",
                Nav::Warnings,
                board_view(&st, &subjects, done_text(q.done.as_deref())),
            ),
        ),
        Err(p) => p.respond(&st, false),
    }
}

// ----- a person's page --------------------------------------------------------

/// The route card of one warning: where it can go next, with deadlines.
pub(crate) fn route_card(card: &Card) -> Markup {
    html! {
        section class="routes" {
            h3 { "What you can do" }
            p class="help" { (card.routes_name) " (updated " (card.updated) "). "
                (card.jurisdiction) }
            @match card.date {
                Some(date) => p { "Deadlines are counted from " (date.to_string())
                    "; today is " (card.today.to_string()) "." },
                None => p { "No date was given, so no deadline can be worked out: each route \
                    says how long it allows." },
            }
            @for note in &card.date_notes { p class="help" { (note) } }
            @if card.routes.is_empty() {
                p { "The route list has no route for this kind of behaviour." }
            }
            ol class="route-list" {
                @for r in &card.routes {
                    li {
                        h4 { (r.name) }
                        p { (r.purpose) }
                        p { "Contact: " (r.contact) }
                        @if let Some(d) = &r.deadline {
                            @match (d.date, d.days_left) {
                                (Some(date), Some(left)) => p class=(if left < 0 { "deadline passed" } else { "deadline" }) {
                                    strong { "Last day: " (date.to_string()) " (" (status_text(left)) ")." }
                                    " " (d.label) " (" (d.rule) ")"
                                },
                                _ => p class="deadline" { (d.label) ": " (d.rule)
                                    " from the date of the behaviour." },
                            }
                        }
                        @if let Some(no) = &r.no_time_limit { p { (no) } }
                        @if let Some(n) = &r.deadline_note { p class="help" { (n) } }
                        @if !r.source.is_empty() {
                            p class="help" { "Based on: "
                                @for (i, src) in r.source.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    @if src.starts_with("https://") {
                                        a href=(src) rel="noreferrer noopener" { (src) }
                                    } @else { (src) }
                                }
                            }
                        }
                    }
                }
            }
            @for note in &card.notes { p class="help" { (note) } }
        }
    }
}

/// One warning as members see it (without its author: counts are what
/// members need; an anonymous one says how it appears).
fn warning_article(w: &WarningView, inner: Markup) -> Markup {
    html! {
        article class="warning" {
            h2 { (kind_words(&w.kind)) ", "
                @if w.firsthand { "first-hand" } @else { "second-hand" } }
            dl class="fields" {
                @if !w.subject.is_empty() { dt { "About" } dd { (person(&w.subject)) } }
                @if !w.role.is_empty() { dt { "Their role" } dd { (person(&w.role)) } }
                @if !w.when.is_empty() { dt { "When" } dd { (person(&w.when)) } }
                @if !w.place.is_empty() { dt { "Where" } dd { (person(&w.place)) } }
                @if !w.advice.is_empty() { dt { "Advice" } dd { (person(&w.advice)) } }
                @if !w.group.is_empty() { dt { "Group" } dd { (person(&w.group)) } }
                @if w.sent_at_ms > 0 { dt { "Posted" } dd { (layout::when(w.sent_at_ms)) } }
                @if let Some(by) = &w.anonymous { dt { "From" } dd { (person(by)) } }
            }
            @if !w.text.is_empty() { (layout::body_text(&w.text)) }
            (inner)
        }
    }
}

/// Who can and cannot learn that a "me too" was mine (see ARCHITECTURE.md,
/// "Anonymous corroboration", for what each sentence rests on).
pub(crate) fn me_too_explained() -> Markup {
    html! {
        section aria-labelledby="metoo-h" class="explain" {
            h2 id="metoo-h" { "Saying \"me too\"" }
            p { "\"Me too\" tells the group that this happened to you as well, or that you \
                 heard of it too, without saying who you are." }
            ul {
                li { "Other members and the group's admins cannot tell it was you: their apps \
                      see only that one current member of the group said it, and the count \
                      goes up by one." }
                li { "The relay cannot read it. It does see that your account sent something \
                      to each member, as it does for any message." }
                li { "Someone who runs the relay and works together with a member could match \
                      the times and tell it was you." }
                li { "You are hidden only among the group's members: in a small group, that is \
                      few people. After you say it, Sotto tells you how many." }
                li { "Each member counts once per warning, and the person who posted a warning \
                      cannot add to its count. This computer remembers that you said it." }
            }
        }
    }
}

pub(crate) fn subject_view(
    st: &AppState,
    sid: &str,
    s: &SubjectSummary,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    html! {
        @if let Some(n) = notice { p class="notice" role="status" { (n) } }
        @if let Some(e) = error { (error_box(e)) }
        @if s.names.len() > 1 {
            p { "Also written as: "
                @for (i, n) in s.names[1..].iter().enumerate() {
                    @if i > 0 { ", " } (person(n))
                }
            }
        }
        @if !s.roles.is_empty() { p { "Role: " (person(&s.roles.join("; "))) } }
        dl class="counts" {
            div { dt { "First-hand" } dd { (s.firsthand_reporters) } }
            div { dt { "Second-hand" } dd { (s.secondhand_reporters) } }
            div { dt { "Anonymous corroborations" } dd { (corroborations(s)) } }
        }
        p class="help" { "In groups: " (person(&s.groups.join(", "))) ". Newest: " (person(&s.newest)) "." }
        (me_too_explained())
        @for w in &s.warnings {
            (warning_article(w, html! {
                p class="help" {
                    (w.corroborations) @if w.corroborations == 1 { " member" } @else { " members" }
                    " said \"me too\" (" (w.corroborations_firsthand) " first-hand)."
                    @if w.corroborated_by_me { " You are one of them." }
                    @if w.mine { " You posted this warning." }
                }
                @if !w.mine && !w.corroborated_by_me {
                    form method="post" action={"/warnings/" (sid) "/me-too"} class="stack metoo" {
                        (csrf_field(st))
                        input type="hidden" name="warning" value=(w.id);
                        div class="check" {
                            input type="checkbox" id={"firsthand-" (w.id)} name="firsthand" value="on";
                            label for={"firsthand-" (w.id)} { "It happened to me too" }
                        }
                        button type="submit" class="primary" { "Me too" }
                    }
                }
                @if let Some(card) = &w.routes { (route_card(card)) }
            }))
        }
    }
}

async fn load_subject(st: &AppState, sid: String) -> Result<Option<SubjectSummary>, Problem> {
    let s = st.clone();
    engine(st, move |e| {
        Box::pin(async move {
            Ok(e.warnings(None, None)
                .map_err(words)?
                .into_iter()
                .find(|x| subject_id(&s.ids, &x.key) == sid))
        })
    })
    .await
}

fn subject_page(
    st: &AppState,
    sid: &str,
    s: &SubjectSummary,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    // The <title> stays fixed: browsers keep titles in their history.
    let mut page = Page::new(
        "Warnings about a person",
        Nav::Warnings,
        subject_view(st, sid, s, notice, error),
    );
    page.heading = Some(person(
        s.names.first().map_or(s.key.as_str(), String::as_str),
    ));
    layout::page_refusing(st, page, error)
}

fn no_subject(st: &AppState) -> Response {
    layout::message_page(
        st,
        StatusCode::NOT_FOUND,
        "No such person",
        html! { p { "There are no warnings here about this person any more (addresses change \
        each time Sotto starts, and warnings expire). " a href="/warnings" { "Go to the board" } "." } },
    )
}

async fn subject(
    State(st): State<AppState>,
    Path(sid): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    match load_subject(&st, sid.clone()).await {
        Ok(Some(s)) => subject_page(&st, &sid, &s, done_text(q.done.as_deref()), None),
        Ok(None) => no_subject(&st),
        Err(p) => p.respond(&st, false),
    }
}

#[derive(Deserialize)]
struct MeTooForm {
    #[serde(default)]
    warning: String,
    firsthand: Option<String>,
}

async fn me_too(
    State(st): State<AppState>,
    Path(sid): Path<String>,
    Form(form): Form<MeTooForm>,
) -> Response {
    let s = st.clone();
    let want = sid.clone();
    let done = engine(&st, move |e| {
        Box::pin(async move {
            // Only a warning shown on this person's page, by its whole id.
            let on_page = e
                .warnings(None, None)
                .map_err(words)?
                .into_iter()
                .find(|x| subject_id(&s.ids, &x.key) == want)
                .is_some_and(|x| x.warnings.iter().any(|w| w.id == form.warning));
            if !on_page {
                return Ok(None);
            }
            Ok(Some(
                e.corroborate(&form.warning, form.firsthand.is_some())
                    .await
                    .map_err(words),
            ))
        })
    })
    .await;
    match done {
        Ok(Some(Ok(_))) => see_other(&format!("/warnings/{sid}?done=metoo")),
        Ok(Some(Err(error))) => match load_subject(&st, sid.clone()).await {
            Ok(Some(s)) => subject_page(&st, &sid, &s, None, Some(&error)),
            Ok(None) => no_subject(&st),
            Err(p) => p.respond(&st, false),
        },
        Ok(None) => no_subject(&st),
        Err(p) => p.respond(&st, false),
    }
}

// ----- posting --------------------------------------------------------------

/// A group one can post a warning to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Opaque id.
    pub id: String,
    /// Hex id (never sent to the browser).
    pub hex: String,
    /// Title.
    pub title: String,
    /// Its anonymous-posts setting.
    pub anonymous: AnonymousPosts,
}

async fn load_targets(st: &AppState) -> Result<Vec<Target>, Problem> {
    let s = st.clone();
    engine(st, move |e| {
        Box::pin(async move {
            Ok(e.groups()
                .map_err(words)?
                .into_iter()
                .filter(|g| !g.waiting && may_post(g.role, g.settings.announcements_only))
                .map(|g| Target {
                    id: s.ids.group(&g.id),
                    title: g.title,
                    anonymous: g.settings.anonymous_posts,
                    hex: g.id,
                })
                .collect())
        })
    })
    .await
}

/// What the form holds.
#[derive(Deserialize, Default, Debug, Clone)]
pub(crate) struct WarnForm {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub about: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub hand: String,
    #[serde(default)]
    pub when: String,
    #[serde(default, rename = "where")]
    pub place: String,
    #[serde(default)]
    pub advice: String,
    #[serde(default)]
    pub text: String,
    pub anonymous: Option<String>,
    #[serde(default)]
    pub action: String,
}

impl WarnForm {
    fn input(&self) -> WarningInput {
        WarningInput {
            subject: self.about.trim().to_string(),
            role: self.role.trim().to_string(),
            kind: self.kind.clone(),
            firsthand: self.hand != "secondhand",
            place: self.place.trim().to_string(),
            when: self.when.trim().to_string(),
            advice: self.advice.trim().to_string(),
            text: self.text.replace("\r\n", "\n"),
        }
    }

    /// What is wrong with the form, in the words of its labels, before
    /// anything is sent (the engine checks again when posting).
    fn problem(&self, targets: &[Target]) -> Option<String> {
        let Some(target) = targets.iter().find(|t| t.id == self.group) else {
            return Some("Choose the group to post the warning to.".into());
        };
        if crate::engine::subject_key(&self.about).is_empty() {
            return Some(
                "About (person): give the name of the person the warning is about.".into(),
            );
        }
        if !KINDS.contains(&self.kind.as_str()) {
            return Some("Kind: choose what kind of behaviour it was.".into());
        }
        if crate::engine::check_when(self.when.trim()).is_err() {
            return Some(
                "When: give a month like 2024-03 or a day like 2024-03-14, or leave it empty."
                    .into(),
            );
        }
        for (label, value, max) in [
            ("About (person)", &self.about, safe::MAX_SHORT_CHARS),
            ("Their role", &self.role, safe::MAX_SHORT_CHARS),
            ("Where", &self.place, safe::MAX_SHORT_CHARS),
            ("Advice for others", &self.advice, safe::MAX_ADVICE_CHARS),
        ] {
            if !value.trim().is_empty()
                && let Err(e) = safe::check_field(label, value.trim(), max, Lines::One)
            {
                return Some(words(e));
            }
        }
        if !self.text.trim().is_empty()
            && let Err(e) = safe::check_field("What happened", &self.text, usize::MAX, Lines::Many)
        {
            return Some(words(e));
        }
        if self.text.len() > safe::MAX_TEXT_BYTES {
            return Some(format!(
                "What happened: at most {} bytes, please shorten it.",
                safe::MAX_TEXT_BYTES
            ));
        }
        if self.anonymous.is_some() && target.anonymous == AnonymousPosts::Off {
            return Some(
                "This group does not allow anonymous posts: post under your name, or choose \
                 another group."
                    .into(),
            );
        }
        None
    }
}

/// The form, with what was typed; `preview` (the warning as members will
/// see it) adds the "Post warning" button.
pub(crate) fn form_view(
    st: &AppState,
    targets: &[Target],
    f: &WarnForm,
    preview: Option<Markup>,
    error: Option<&str>,
) -> Markup {
    let anon_groups: Vec<&Target> = targets
        .iter()
        .filter(|t| t.anonymous != AnonymousPosts::Off)
        .collect();
    html! {
        @if targets.is_empty() {
            p class="empty" { "You need to be in a group where you can post to post a warning. "
                a href="/groups" { "Go to your groups" } "." }
        } @else {
            @if let Some(e) = error { (error_box(e)) }
            p class="help" { "A warning goes to every member of the group you choose. Fill in \
                what you know; only the person and the kind are needed. Nothing is sent until \
                you press Post warning." }
            form method="post" action="/warnings/new" class="stack warn-form" {
                (csrf_field(st))
                label for="w-group" { "Group" }
                select id="w-group" name="group" required {
                    @for t in targets {
                        option value=(t.id) selected[t.id == f.group] { (safe::line(&t.title)) }
                    }
                }
                label for="w-about" { "About (person)" }
                input id="w-about" name="about" type="text" required autocomplete="off"
                    maxlength=(safe::MAX_SHORT_CHARS) value=(f.about) aria-describedby="w-about-help";
                p id="w-about-help" class="help" { "Their name as people know it; titles such as \
                    Sir or MP do not matter for matching." }
                label for="w-role" { "Their role" }
                input id="w-role" name="role" type="text" autocomplete="off"
                    maxlength=(safe::MAX_SHORT_CHARS) value=(f.role);
                label for="w-kind" { "Kind" }
                select id="w-kind" name="kind" required {
                    @for k in KINDS {
                        option value=(k) selected[*k == f.kind] { (kind_words(k)) }
                    }
                }
                fieldset {
                    legend { "How do you know?" }
                    div class="check" {
                        input type="radio" id="w-first" name="hand" value="firsthand"
                            checked[f.hand != "secondhand"];
                        label for="w-first" { "First-hand: it happened to me or in front of me" }
                    }
                    div class="check" {
                        input type="radio" id="w-second" name="hand" value="secondhand"
                            checked[f.hand == "secondhand"];
                        label for="w-second" { "Second-hand: someone told me" }
                    }
                }
                label for="w-when" { "When" }
                input id="w-when" name="when" type="text" autocomplete="off" value=(f.when)
                    placeholder="2024-03" aria-describedby="w-when-help";
                p id="w-when-help" class="help" { "A month like 2024-03 or a day like 2024-03-14. \
                    With a date, Sotto works out the deadlines of each place you can go." }
                label for="w-where" { "Where" }
                input id="w-where" name="where" type="text" autocomplete="off"
                    maxlength=(safe::MAX_SHORT_CHARS) value=(f.place) placeholder="constituency office";
                label for="w-advice" { "Advice for others" }
                input id="w-advice" name="advice" type="text" autocomplete="off"
                    maxlength=(safe::MAX_ADVICE_CHARS) value=(f.advice) placeholder="don't share taxis";
                label for="w-text" { "What happened" }
                textarea id="w-text" name="text" rows="5" maxlength=(safe::MAX_TEXT_BYTES) { (f.text) }
                @if !anon_groups.is_empty() {
                    div class="check" {
                        input type="checkbox" id="w-anonymous" name="anonymous" value="on"
                            checked[f.anonymous.is_some()] aria-describedby="w-anonymous-help";
                        label for="w-anonymous" { "Post anonymously" }
                    }
                    p id="w-anonymous-help" class="help" {
                        "Only in groups that allow it: "
                        @for (i, t) in anon_groups.iter().enumerate() {
                            @if i > 0 { "; " }
                            (person(&t.title)) " ("
                            @if t.anonymous == AnonymousPosts::On {
                                "shown as \"a member\"; nobody can tell who"
                            } @else {
                                "an admin sees it is yours and approves it"
                            }
                            ")"
                        }
                        "."
                    }
                }
                button type="submit" name="action" value="preview" { "Preview" }
                @if let Some(p) = preview {
                    section class="preview" aria-labelledby="preview-h" {
                        h2 id="preview-h" { "Preview" }
                        p class="help" { "This is how members will see it. Nothing has been sent yet." }
                        (p)
                    }
                    button type="submit" name="action" value="post" class="primary" { "Post warning" }
                }
            }
        }
    }
}

/// The warning as members will see it, with its route card.
pub(crate) fn preview_of(f: &WarnForm, target: &Target) -> Markup {
    let input = f.input();
    let card = Routes::from_env().ok().and_then(|r| {
        r.card_data(&input.kind, GivenDate::parse(&input.when).ok(), today())
            .ok()
    });
    let view = WarningView {
        id: String::new(),
        group: target.title.clone(),
        subject: input.subject,
        role: input.role,
        kind: input.kind,
        firsthand: input.firsthand,
        place: input.place,
        when: input.when,
        advice: input.advice,
        text: input.text,
        sent_at_ms: 0,
        mine: true,
        anonymous: f.anonymous.is_some().then(|| match target.anonymous {
            AnonymousPosts::ViaModerator => "a member (approved by a moderator)".to_string(),
            _ => "a member".to_string(),
        }),
        corroborations: 0,
        corroborations_firsthand: 0,
        corroborated_by_me: false,
        routes: None,
    };
    warning_article(
        &view,
        html! { @if let Some(card) = &card { (route_card(card)) } },
    )
}

fn form_page(
    st: &AppState,
    targets: &[Target],
    f: &WarnForm,
    preview: Option<Markup>,
    error: Option<&str>,
) -> Response {
    layout::page_refusing(
        st,
        Page::new(
            "Post a warning",
            Nav::Warnings,
            form_view(st, targets, f, preview, error),
        ),
        error,
    )
}

async fn new_page(State(st): State<AppState>) -> Response {
    match load_targets(&st).await {
        Ok(targets) => form_page(&st, &targets, &WarnForm::default(), None, None),
        Err(p) => p.respond(&st, false),
    }
}

async fn submit(State(st): State<AppState>, Form(f): Form<WarnForm>) -> Response {
    let targets = match load_targets(&st).await {
        Ok(t) => t,
        Err(p) => return p.respond(&st, false),
    };
    if let Some(problem) = f.problem(&targets) {
        return form_page(&st, &targets, &f, None, Some(&problem));
    }
    let Some(target) = targets.iter().find(|t| t.id == f.group).cloned() else {
        return form_page(&st, &targets, &f, None, Some("Choose a group."));
    };
    if f.action != "post" {
        let preview = preview_of(&f, &target);
        return form_page(&st, &targets, &f, Some(preview), None);
    }
    let input = f.input();
    let anonymous = f.anonymous.is_some();
    let hex = target.hex.clone();
    let posted = engine(&st, move |e| {
        Box::pin(async move {
            // The engine finds a group by title before id: check the hex
            // names this group and no other.
            let (found, _) = e.group_title(&hex).map_err(words)?;
            if found != hex {
                return Ok(Err(
                    "Another of your groups is titled like this group's id, so \
                               Sotto cannot tell them apart safely. Nothing was sent."
                        .to_string(),
                ));
            }
            Ok(if anonymous {
                e.post_anonymously(&hex, AnonymousBody::Warning(input), None)
                    .await
                    .map(|p| {
                        if p.via_moderator {
                            "moderator"
                        } else {
                            "anonymous"
                        }
                    })
                    .map_err(words)
            } else {
                e.warn(&hex, input).await.map(|_| "posted").map_err(words)
            })
        })
    })
    .await;
    match posted {
        Ok(Ok(done)) => see_other(&format!("/warnings?done={done}")),
        Ok(Err(error)) => form_page(&st, &targets, &f, None, Some(&error)),
        Err(p) => p.respond(&st, false),
    }
}

/// Whether I may post to a group: a member, and an admin where only
/// admins may post.
fn may_post(role: Option<Role>, announcements_only: bool) -> bool {
    role.is_some_and(|r| r.is_admin() || !announcements_only)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Date;
    use crate::web::groups::tests::{
        HOSTILE, addresses, assert_escaped, assert_inert, body_of, title_of,
    };
    use crate::web::tests::fixture;
    use std::collections::BTreeMap;

    fn card() -> Card {
        let today = Date::new(2024, 4, 1).expect("date");
        Routes::builtin()
            .card_data(
                "harassment",
                Some(GivenDate::parse("2024-03-14").expect("date")),
                today,
            )
            .expect("a card")
    }

    fn warning(h: &str, mine: bool, by_me: bool) -> WarningView {
        WarningView {
            id: "ab".repeat(16),
            group: h.into(),
            subject: h.into(),
            role: h.into(),
            kind: "harassment".into(),
            firsthand: true,
            place: h.into(),
            when: "2024-03-14".into(),
            advice: h.into(),
            text: h.into(),
            sent_at_ms: 1_700_000_000_000,
            mine,
            anonymous: None,
            corroborations: 2,
            corroborations_firsthand: 1,
            corroborated_by_me: by_me,
            routes: Some(card()),
        }
    }

    fn summary(h: &str) -> SubjectSummary {
        SubjectSummary {
            key: "john smith".into(),
            matched: None,
            names: vec![h.into(), format!("Sir {h}")],
            roles: vec![h.into()],
            firsthand_reporters: 3,
            secondhand_reporters: 1,
            kinds: BTreeMap::from([("harassment".to_string(), 2), ("bullying".to_string(), 1)]),
            newest: "2024-03-14".into(),
            groups: vec![h.into()],
            warnings: vec![warning(h, false, false), warning(h, true, false)],
        }
    }

    #[tokio::test]
    async fn the_board_renders_hostile_names_inert_and_links_by_opaque_id() {
        let f = fixture();
        let st = &f.app.state;
        for h in HOSTILE {
            let s = summary(h);
            let page = board_view(st, std::slice::from_ref(&s), None).into_string();
            assert_inert(&page);
            assert!(page.contains("<caption>Warnings by person</caption>"));
            for head in [
                "First-hand",
                "Second-hand",
                "Anonymous corroborations",
                "Kinds",
                "Newest",
            ] {
                assert!(page.contains(&format!(">{head}<")), "{head}");
            }
            // 2 + 2 corroborations over the person's warnings.
            assert!(page.contains("<td>4</td>"), "{page}");
            assert!(page.contains("Harassment ×2"));
            let sid = subject_id(&st.ids, &s.key);
            assert!(page.contains(&format!(r#"href="/warnings/{sid}""#)));
            assert!(sid[1..].chars().all(|c| c.is_ascii_hexdigit()), "{sid}");
            assert!(page.contains(">Post a warning<"));
        }
    }

    #[tokio::test]
    async fn a_persons_page_keeps_their_name_out_of_the_title_and_addresses() {
        let f = fixture();
        let st = &f.app.state;
        for name in HOSTILE.iter().copied().chain(["John Smith"]) {
            let s = summary(name);
            let sid = subject_id(&st.ids, &s.key);
            let page = body_of(subject_page(st, &sid, &s, None, None)).await;
            assert_inert(&page);
            assert_eq!(title_of(&page), "Sotto – Warnings about a person");
            for a in addresses(&page) {
                assert!(!a.to_lowercase().contains("smith"), "{a}");
                assert!(!a.contains("alert") && !a.contains("Eve"), "{a}");
            }
            assert!(!sid.to_lowercase().contains("smith"));
            for label in [
                "<dt>First-hand</dt><dd>3</dd>",
                "<dt>Second-hand</dt><dd>1</dd>",
                "<dt>Anonymous corroborations</dt><dd>4</dd>",
                ">What you can do<",
                ">Me too<",
            ] {
                assert!(page.contains(label), "{label} missing");
            }
        }
    }

    #[tokio::test]
    async fn me_too_is_offered_only_where_it_would_count() {
        let f = fixture();
        let st = &f.app.state;
        let mut s = summary("John Smith");
        s.warnings = vec![
            warning("John Smith", false, false),
            warning("John Smith", true, false),
            warning("John Smith", false, true),
        ];
        let page = subject_view(st, "s01", &s, None, None).into_string();
        assert_eq!(page.matches(">Me too<").count(), 1, "{page}");
        assert!(page.contains("You posted this warning."));
        assert!(page.contains("You are one of them."));
        assert!(page.contains(r#"action="/warnings/s01/me-too""#));
        assert!(page.contains(&format!(r#"name="warning" value="{}""#, "ab".repeat(16))));
        // Who can learn it was me, in plain words.
        for words in [
            "Other members and the group's admins cannot tell it was you",
            "The relay cannot read it",
            "works together with a member",
            "hidden only among the group",
        ] {
            assert!(page.contains(words), "{words}");
        }
    }

    #[test]
    fn the_route_card_shows_each_deadline_with_its_status() {
        let c = card();
        let html = route_card(&c).into_string();
        assert!(html.contains("<h3>What you can do</h3>"));
        let with_deadline = c
            .routes
            .iter()
            .filter_map(|r| r.deadline.as_ref())
            .filter_map(|d| d.date)
            .collect::<Vec<_>>();
        assert!(!with_deadline.is_empty(), "the built-in file has deadlines");
        for date in with_deadline {
            assert!(html.contains(&format!("Last day: {date}")), "{date}");
        }
        for r in &c.routes {
            assert!(
                html.contains(&maud::html! { (r.name) }.into_string()),
                "{}",
                r.name
            );
        }
    }

    fn targets() -> Vec<Target> {
        vec![
            Target {
                id: "g01".into(),
                hex: "00".repeat(16),
                title: "<b>Staff</b>".into(),
                anonymous: AnonymousPosts::Off,
            },
            Target {
                id: "g02".into(),
                hex: "11".repeat(16),
                title: "\u{202E}Union".into(),
                anonymous: AnonymousPosts::On,
            },
        ]
    }

    fn filled() -> WarnForm {
        WarnForm {
            group: "g01".into(),
            about: "Sir John Smith MP".into(),
            role: "MP for Anytown".into(),
            kind: "harassment".into(),
            hand: "firsthand".into(),
            when: "2024-03".into(),
            place: "late votes".into(),
            advice: "don't share taxis".into(),
            text: "He followed me\nto the car park.".into(),
            anonymous: None,
            action: "preview".into(),
        }
    }

    #[test]
    fn the_form_says_what_is_missing_before_anything_is_sent() {
        let t = targets();
        assert_eq!(filled().problem(&t), None);
        let cases: Vec<(WarnForm, &str)> = vec![
            (
                WarnForm {
                    group: "g99".into(),
                    ..filled()
                },
                "Choose the group",
            ),
            (
                WarnForm {
                    about: " ... ".into(),
                    ..filled()
                },
                "About (person)",
            ),
            (
                WarnForm {
                    kind: "rude".into(),
                    ..filled()
                },
                "Kind",
            ),
            (
                WarnForm {
                    when: "March".into(),
                    ..filled()
                },
                "When",
            ),
            (
                WarnForm {
                    when: "2024-02-30".into(),
                    ..filled()
                },
                "When",
            ),
            (
                WarnForm {
                    place: "a\u{202E}b".into(),
                    ..filled()
                },
                "Where",
            ),
            (
                WarnForm {
                    about: "x".repeat(200),
                    ..filled()
                },
                "About (person)",
            ),
            (
                WarnForm {
                    anonymous: Some("on".into()),
                    ..filled()
                },
                "does not allow anonymous posts",
            ),
        ];
        for (form, want) in cases {
            let got = form.problem(&t).expect(want);
            assert!(got.contains(want), "{want}: {got}");
        }
        let anon = WarnForm {
            group: "g02".into(),
            anonymous: Some("on".into()),
            ..filled()
        };
        assert_eq!(anon.problem(&t), None);
        let input = WarnForm {
            hand: "secondhand".into(),
            ..filled()
        }
        .input();
        assert!(!input.firsthand);
        assert_eq!(input.subject, "Sir John Smith MP");
        assert_eq!(input.place, "late votes");
    }

    #[tokio::test]
    async fn the_form_has_every_field_and_the_preview_adds_post_warning() {
        let f = fixture();
        let st = &f.app.state;
        let t = targets();
        let page = form_view(st, &t, &WarnForm::default(), None, None).into_string();
        assert_inert(&page);
        for label in [
            ">About (person)<",
            ">Their role<",
            ">Group<",
            ">Kind<",
            ">When<",
            ">Where<",
            ">Advice for others<",
            ">What happened<",
            ">Post anonymously<",
            ">Preview<",
        ] {
            assert!(page.contains(label), "{label} missing");
        }
        assert!(page.contains("First-hand"));
        assert!(page.contains("Second-hand"));
        assert!(
            !page.contains(">Post warning<"),
            "no posting before a preview"
        );
        for h in HOSTILE {
            let form = WarnForm {
                about: (*h).into(),
                text: (*h).into(),
                advice: (*h).into(),
                ..filled()
            };
            // The preview shows it as members will see it: inert.
            let preview = preview_of(&form, &t[0]).into_string();
            assert_inert(&preview);
            // The form keeps what I typed, escaped.
            let page =
                form_view(st, &t, &form, Some(maud::PreEscaped(preview)), None).into_string();
            assert_escaped(&page);
            assert!(page.contains(">Post warning<"));
            assert!(page.contains("Nothing has been sent yet."));
            assert!(
                page.contains("What you can do"),
                "the route card in the preview"
            );
        }
        // Without a group that allows it, no anonymous box.
        let page = form_view(st, &t[..1], &WarnForm::default(), None, None).into_string();
        assert!(!page.contains("Post anonymously"));
        let page = form_view(st, &[], &WarnForm::default(), None, None).into_string();
        assert!(page.contains("You need to be in a group"));
    }

    #[test]
    fn subject_ids_are_opaque_stable_and_apart_from_group_ids() {
        let ids = IdKey::random();
        let a = subject_id(&ids, "john smith");
        assert_eq!(a, subject_id(&ids, "john smith"));
        assert_ne!(a, subject_id(&ids, "jane smith"));
        assert_ne!(a, subject_id(&IdKey::random(), "john smith"));
        assert!(a.starts_with('s') && a[1..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a[1..], ids.group("john smith")[1..]);
    }

    #[test]
    fn only_members_who_may_post_get_a_group_in_the_form() {
        assert!(may_post(Some(Role::Member), false));
        assert!(!may_post(Some(Role::Member), true));
        assert!(may_post(Some(Role::Admin), true));
        assert!(!may_post(None, false));
    }

    #[tokio::test]
    async fn warning_screens_are_behind_the_gate_and_csrf() {
        use crate::web::tests::{get, launch, send};
        use axum::body::Body;
        use axum::http::header;
        let f = fixture();
        let cookie = launch(&f).await;
        for path in ["/warnings", "/warnings/new", "/warnings/s00"] {
            let req = get(path)
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .expect("test setup");
            let (status, headers, _) = send(&f.router, req).await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
            assert_eq!(headers[header::LOCATION], "/setup", "{path}");
        }
        for path in ["/warnings/new", "/warnings/s00/me-too"] {
            let req = get(path)
                .method("POST")
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("about=x"))
                .expect("test setup");
            assert_eq!(
                send(&f.router, req).await.0,
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
    }
}
