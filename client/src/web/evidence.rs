//! The evidence locker: notes and files kept only in my encrypted store,
//! each countersigned by the relay (proof that it existed by then), and a
//! proof file to hand to someone else.
//!
//! The upload is a plain multipart form, read here by a small parser
//! ([`parts`]) rather than axum's `multipart` feature: the security layer
//! has already read the whole body (up to its limit) to find the CSRF
//! token, so there is nothing to stream, and no new dependency is needed.

use axum::body::to_bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde::Deserialize;

use super::AppState;
use super::chats::{Problem, engine};
use super::groups::words;
use super::layout::{self, Nav, Page, csrf_field, error_box, person};
use super::security::see_other;
use crate::engine::{MAX_NOTE_FILE_BYTES, NoteView};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/evidence", get(locker).post(save))
        .route("/evidence/export", post(export))
}

/// The largest upload read: the largest file plus the note and the fields.
const UPLOAD_LIMIT: usize = MAX_NOTE_FILE_BYTES + 256 * 1024;

const DONE: &[(&str, &str)] = &[
    (
        "saved",
        "Kept in your locker, and countersigned by the relay.",
    ),
    (
        "kept",
        "Kept in your locker. The relay could not countersign it yet; Sotto asks again each \
         time you open the locker.",
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

fn size_words(bytes: usize) -> String {
    match bytes {
        b if b < 1024 => format!("{b} bytes"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// What was typed, kept in the form after a refusal (the file is not: a
/// browser never lets a page fill a file input).
#[derive(Default)]
pub(crate) struct Typed {
    note: String,
}

pub(crate) fn locker_view(
    st: &AppState,
    notes: &[NoteView],
    typed: &Typed,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    html! {
        @if let Some(n) = notice { p class="notice" role="status" { (n) } }
        p { "Write down what happened while you remember it, and keep files (screenshots, \
             emails) with it. Notes stay on this computer, encrypted. The relay countersigns \
             each one without seeing it: later you can show that the note existed by then." }
        section aria-labelledby="add-h" {
            h2 id="add-h" { "Add to the locker" }
            @if let Some(e) = error { (error_box(e)) }
            form method="post" action="/evidence" enctype="multipart/form-data" class="stack" {
                // First in the body: the CSRF check reads the first field of this name.
                (csrf_field(st))
                label for="note" { "Note" }
                textarea id="note" name="note" rows="6" maxlength=(crate::safe::MAX_TEXT_BYTES) { (typed.note) }
                label for="file" { "File" }
                input id="file" name="file" type="file" aria-describedby="file-help";
                p id="file-help" class="help" { "Optional; at most " (size_words(MAX_NOTE_FILE_BYTES)) "." }
                button type="submit" class="primary" { "Save to locker" }
            }
        }
        section aria-labelledby="notes-h" {
            h2 id="notes-h" { "Your notes" }
            @if notes.is_empty() { p class="empty" { "Nothing in the locker yet." } }
            ol class="notes" aria-label="Notes" reversed {
                @for n in notes.iter().rev() {
                    li {
                        p class="meta" { "Written " (layout::when(n.created_at_ms)) }
                        @if !n.text.is_empty() { (layout::body_text(&n.text)) }
                        @if let Some(name) = &n.file_name {
                            p { "File: " (person(name)) " (" (size_words(n.file_bytes)) ")" }
                        }
                        @match n.countersigned_at_ms {
                            Some(at) => {
                                p class="ok" { "Countersigned by the relay " (layout::when(at)) }
                                form method="post" action="/evidence/export" class="inline" {
                                    (csrf_field(st))
                                    input type="hidden" name="id" value=(n.id);
                                    button type="submit" { "Export proof" }
                                }
                            }
                            None => p class="help" { "Not countersigned yet: the relay could not \
                                be reached. Sotto asks again each time you open the locker." },
                        }
                    }
                }
            }
            (layout::details("About proofs", html! {
                p { "A proof file holds the note and its file in the clear, a salted SHA-256 \
                     hash of them, the relay's time and its signature, and the relay's \
                     certificate. Anyone can check it with " code { "sotto note verify FILE" }
                    "; it is as strong as their trust in this relay's trust root. Give it only \
                     to people who may read the note." }
            }))
        }
    }
}

async fn load(st: &AppState) -> Result<Vec<NoteView>, Problem> {
    engine(st, |e| {
        Box::pin(async move { e.notes().await.map_err(words) })
    })
    .await
}

fn locker_page(
    st: &AppState,
    notes: &[NoteView],
    typed: &Typed,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    layout::page_refusing(
        st,
        Page::new(
            "Evidence",
            Nav::Evidence,
            locker_view(st, notes, typed, notice, error),
        ),
        error,
    )
}

async fn locker(State(st): State<AppState>, Query(q): Query<DoneQuery>) -> Response {
    match load(&st).await {
        Ok(notes) => locker_page(
            &st,
            &notes,
            &Typed::default(),
            done_text(q.done.as_deref()),
            None,
        ),
        Err(p) => p.respond(&st, false),
    }
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Part<'b> {
    /// The field's name.
    pub name: String,
    /// The file name a file field came with (its last path component).
    pub filename: Option<String>,
    /// The value.
    pub data: &'b [u8],
}

/// The `boundary` parameter of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A parameter (`name="..."`) of a `Content-Disposition` header value.
fn param(value: &str, key: &str) -> Option<String> {
    value
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_string()
        })
}

/// Splits a `multipart/form-data` body (RFC 7578) into its parts; a body
/// that does not follow the format is refused as a whole.
pub(crate) fn parts<'b>(body: &'b [u8], boundary: &str) -> Result<Vec<Part<'b>>, String> {
    let bad = || "the form did not arrive whole; send it again".to_string();
    let delim = format!("--{boundary}");
    let next = format!("\r\n--{boundary}");
    let mut at = find(body, delim.as_bytes()).ok_or_else(bad)? + delim.len();
    let mut out = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        let rest = rest.strip_prefix(b"\r\n").ok_or_else(bad)?;
        let head_end = find(rest, b"\r\n\r\n").ok_or_else(bad)?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|_| bad())?;
        let data_from = head_end + 4;
        let data_len = find(&rest[data_from..], next.as_bytes()).ok_or_else(bad)?;
        let disposition = head
            .split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            .map(|(_, v)| v.trim())
            .ok_or_else(bad)?;
        let name = param(disposition, "name").ok_or_else(bad)?;
        let filename = param(disposition, "filename")
            .map(|f| f.rsplit(['/', '\\']).next().unwrap_or_default().to_string());
        out.push(Part {
            name,
            filename,
            data: &rest[data_from..data_from + data_len],
        });
        // Past the part, its CRLF and the delimiter.
        at = body.len() - rest.len() + data_from + data_len + next.len();
    }
}

/// What the upload form sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Upload {
    /// The note's text.
    pub note: String,
    /// The file, with its name, if one was chosen.
    pub file: Option<(String, Vec<u8>)>,
}

/// The note and file of the upload form's body.
pub(crate) fn upload(body: &[u8], content_type: &str) -> Result<Upload, String> {
    let b = boundary(content_type).ok_or("the form was not sent as a file upload")?;
    let mut out = Upload::default();
    for part in parts(body, &b)? {
        match part.name.as_str() {
            "note" => {
                out.note = String::from_utf8(part.data.to_vec())
                    .map_err(|_| "the note is not text (UTF-8)".to_string())?
                    .replace("\r\n", "\n");
            }
            // A browser sends an empty file part with no name when no
            // file was chosen.
            "file" => match part.filename {
                Some(name) if !name.is_empty() || !part.data.is_empty() => {
                    let name = if name.is_empty() {
                        "file".to_string()
                    } else {
                        name
                    };
                    out.file = Some((name, part.data.to_vec()));
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(out)
}

async fn save(State(st): State<AppState>, req: Request) -> Response {
    let kind = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let parsed = match to_bytes(req.into_body(), UPLOAD_LIMIT).await {
        Ok(bytes) => upload(&bytes, &kind),
        Err(_) => Err(format!(
            "That is too large: a file may be at most {}. Nothing was kept.",
            size_words(MAX_NOTE_FILE_BYTES)
        )),
    };
    let up = match parsed {
        Ok(up) => up,
        Err(error) => {
            return match load(&st).await {
                Ok(notes) => locker_page(&st, &notes, &Typed::default(), None, Some(&words(error))),
                Err(p) => p.respond(&st, false),
            };
        }
    };
    if let Some((name, _)) = &up.file
        && let Err(e) = crate::safe::check_field(
            "the file's name",
            name,
            crate::safe::MAX_SHORT_CHARS,
            crate::safe::Lines::One,
        )
    {
        let typed = Typed { note: up.note };
        return match load(&st).await {
            Ok(notes) => locker_page(
                &st,
                &notes,
                &typed,
                None,
                Some(&format!(
                    "{}. Rename the file and choose it again.",
                    words(e)
                )),
            ),
            Err(p) => p.respond(&st, false),
        };
    }
    let note = up.note.clone();
    let kept = engine(&st, move |e| {
        Box::pin(async move { Ok(e.note_add(&note, up.file).await.map_err(words)) })
    })
    .await;
    match kept {
        Ok(Ok(n)) if n.countersigned_at_ms.is_some() => see_other("/evidence?done=saved"),
        Ok(Ok(_)) => see_other("/evidence?done=kept"),
        Ok(Err(error)) => {
            let typed = Typed { note: up.note };
            match load(&st).await {
                Ok(notes) => locker_page(&st, &notes, &typed, None, Some(&error)),
                Err(p) => p.respond(&st, false),
            }
        }
        Err(p) => p.respond(&st, false),
    }
}

#[derive(Deserialize)]
struct ExportForm {
    #[serde(default)]
    id: String,
}

/// The download name of a note's proof: its id only, never the file's or
/// a person's name (downloads folders and browser download lists keep it).
pub(crate) fn proof_file_name(id: &str) -> String {
    let short: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    format!("sotto-note-{short}.proof.json")
}

async fn export(State(st): State<AppState>, Form(form): Form<ExportForm>) -> Response {
    // A whole id (32 hex digits): a prefix could match another note.
    let id = form.id.trim().to_ascii_lowercase();
    if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return match load(&st).await {
            Ok(notes) => locker_page(
                &st,
                &notes,
                &Typed::default(),
                None,
                Some("That note is not known here; reload the page."),
            ),
            Err(p) => p.respond(&st, false),
        };
    }
    let want = id.clone();
    let proof = engine(&st, move |e| {
        Box::pin(async move {
            Ok(e.note_export(&want)
                .await
                .map_err(words)
                .and_then(|p| serde_json::to_vec_pretty(&p).map_err(words)))
        })
    })
    .await;
    match proof {
        Ok(Ok(bytes)) => {
            let disposition = format!("attachment; filename=\"{}\"", proof_file_name(&id));
            let mut resp = bytes.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Ok(Err(error)) => match load(&st).await {
            Ok(notes) => locker_page(&st, &notes, &Typed::default(), None, Some(&error)),
            Err(p) => p.respond(&st, false),
        },
        Err(p) => p.respond(&st, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::groups::tests::{HOSTILE, assert_escaped, assert_inert, body_of, title_of};
    use crate::web::tests::fixture;
    use axum::http::StatusCode;

    const CT: &str = "multipart/form-data; boundary=----WebKitFormBoundaryAbC123";

    fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, file, data) in parts {
            out.extend_from_slice(b"------WebKitFormBoundaryAbC123\r\n");
            match file {
                Some(f) => out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"------WebKitFormBoundaryAbC123--\r\n");
        out
    }

    #[test]
    fn an_upload_gives_its_note_and_file_byte_for_byte() {
        // A file whose bytes look like the form's own structure.
        let file: &[u8] = b"\r\n--not-the-boundary\r\n\r\n\x00\xff name=\"note\"\r\n";
        let b = body(&[
            ("csrf", None, b"abc"),
            ("note", None, b"line one\r\nline two"),
            ("file", Some("C:\\Users\\ann\\shot.png"), file),
        ]);
        let up = upload(&b, CT).expect("parses");
        assert_eq!(up.note, "line one\nline two");
        assert_eq!(up.file, Some(("shot.png".to_string(), file.to_vec())));
        // No file chosen: browsers send an empty, unnamed file part.
        let b = body(&[("note", None, b"hi"), ("file", Some(""), b"")]);
        assert_eq!(
            upload(&b, CT).expect("parses"),
            Upload {
                note: "hi".into(),
                file: None
            }
        );
        // A quoted boundary, as some browsers send it.
        let quoted = "multipart/form-data; boundary=\"----WebKitFormBoundaryAbC123\"";
        assert_eq!(upload(&b, quoted).expect("parses").note, "hi");
    }

    #[test]
    fn a_broken_upload_is_refused_whole() {
        let good = body(&[("note", None, b"hi")]);
        assert!(upload(&good, "application/x-www-form-urlencoded").is_err());
        assert!(upload(&good, "multipart/form-data").is_err(), "no boundary");
        assert!(upload(&good, "multipart/form-data; boundary=other").is_err());
        // Cut short: the closing delimiter never comes.
        let cut = &good[..good.len() - 40];
        assert!(upload(cut, CT).is_err());
        let no_name = b"------WebKitFormBoundaryAbC123\r\nContent-Disposition: form-data\r\n\r\nx\r\n------WebKitFormBoundaryAbC123--\r\n";
        assert!(upload(no_name, CT).is_err());
        assert!(
            upload(&body(&[("note", None, b"\xff\xfe")]), CT).is_err(),
            "not UTF-8"
        );
    }

    fn note(text: &str, file: Option<&str>, signed: bool) -> NoteView {
        NoteView {
            id: "0123456789abcdef0123456789abcdef".into(),
            text: text.into(),
            file_name: file.map(str::to_string),
            file_bytes: 2048,
            created_at_ms: 1_700_000_000_000,
            countersigned_at_ms: signed.then_some(1_700_000_001_000),
            countersign_error: None,
        }
    }

    #[tokio::test]
    async fn the_locker_renders_hostile_notes_and_file_names_inert() {
        let f = fixture();
        let st = &f.app.state;
        for h in HOSTILE {
            let notes = [note(h, Some(h), true), note(h, None, false)];
            let page = body_of(locker_page(st, &notes, &Typed::default(), None, None)).await;
            assert_inert(&page);
            // What I typed is kept in the box after a refusal, escaped.
            let kept =
                locker_view(st, &[], &Typed { note: (*h).into() }, None, Some("No.")).into_string();
            assert_escaped(&kept);
            assert_eq!(title_of(&page), "Sotto – Evidence");
            for label in [">Note<", ">File<", ">Save to locker<"] {
                assert!(page.contains(label), "{label}");
            }
            assert!(page.contains(r#"enctype="multipart/form-data""#));
            // The CSRF field comes first in the upload form.
            let form = &page[page.find(r#"action="/evidence""#).expect("form")..];
            let csrf = form.find(r#"name="csrf""#).expect("token");
            assert!(csrf < form.find(r#"name="note""#).expect("note"));
            // Only a countersigned note can be exported.
            assert_eq!(page.matches("Countersigned by the relay").count(), 1);
            assert_eq!(page.matches(">Export proof<").count(), 1);
            assert!(page.contains("Not countersigned yet"));
        }
    }

    #[test]
    fn a_proof_file_is_named_by_the_note_id_only() {
        assert_eq!(
            proof_file_name("0123456789abcdef0123456789abcdef"),
            "sotto-note-0123456789ab.proof.json"
        );
        let odd = proof_file_name("\"; filename=John Smith.json");
        assert!(odd.starts_with("sotto-note-") && odd.ends_with(".proof.json"));
        assert!(!odd.contains("Smith") && !odd.contains('"'), "{odd}");
    }

    #[tokio::test]
    async fn the_locker_is_behind_the_gate_and_csrf_for_uploads_too() {
        use crate::web::tests::{get, launch, send};
        use axum::body::Body;
        let f = fixture();
        let cookie = launch(&f).await;
        let req = get("/evidence")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("test setup");
        let (status, headers, _) = send(&f.router, req).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/setup");
        let upload = |csrf: &str| {
            get("/evidence")
                .method("POST")
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, CT)
                .body(Body::from(body(&[
                    ("csrf", None, csrf.as_bytes()),
                    ("note", None, b"hi"),
                ])))
                .expect("test setup")
        };
        assert_eq!(
            send(&f.router, upload("nope")).await.0,
            StatusCode::FORBIDDEN
        );
        // With the token it reaches the gate (no profile here).
        let token = f.app.state.security.csrf().to_string();
        let (status, headers, _) = send(&f.router, upload(&token)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/setup");
        let req = get("/evidence/export")
            .method("POST")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("id=00"))
            .expect("test setup");
        assert_eq!(send(&f.router, req).await.0, StatusCode::FORBIDDEN);
    }
}
