//! Live updates: `/events` is a server-sent event stream that tells the page
//! *that* something changed (a chat id, the service's state), and `app.js`
//! then reloads the fragments it shows. Message text never travels on it,
//! except a sender's name in the notification text when the user turned
//! that setting on.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event as Sse, KeepAlive, Sse as SseResponse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::chats::chat_of;
use crate::safe;
use crate::service::{Event, State as Svc};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/events", get(events))
}

/// The word the page gets for a state (`data-state` on `<body>` uses the
/// same words).
pub(crate) fn state_word(s: &Svc) -> &'static str {
    match s {
        Svc::NoProfile => "none",
        Svc::Locked => "locked",
        Svc::Unlocked => "unlocked",
        Svc::Erased => "erased",
        Svc::Stopped => "stopped",
    }
}

/// Counts incoming messages per chat while the app runs (in memory only);
/// opening a chat sets its count back to zero. Also loads the saved
/// settings each time the profile opens.
pub(crate) fn count_unread(st: AppState) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut rx = st.handle.subscribe();
    rt.spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Event::Message(m)) if !m.outgoing => {
                    let chat = chat_of(&st.ids, &m);
                    *st.unread
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(chat)
                        .or_default() += 1;
                }
                Ok(Event::State(Svc::Erased)) => {
                    st.unread.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    *st.settings.lock().unwrap_or_else(|e| e.into_inner()) = Default::default();
                }
                // The profile's saved settings (closed again meanwhile:
                // the next unlock loads them).
                Ok(Event::State(Svc::Unlocked)) => {
                    let _ = super::settings::load(&st).await;
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// The SSE message for one service event, if the page needs it.
pub(crate) fn to_sse(st: &AppState, event: &Event) -> Option<Sse> {
    match event {
        Event::Message(m) => {
            // A warning reaches the group's history as a message whose
            // text starts so (engine/warnings.rs, `history_text`).
            let warning = m.group.is_some() && m.text.starts_with("[warning] ");
            let notify = if m.outgoing {
                String::new()
            } else if warning {
                "New warning in a group".to_string()
            } else if st.settings().notify_names {
                format!("New message from {}", safe::line(&m.from))
            } else {
                "New message".to_string()
            };
            let data = serde_json::json!({
                "chat": chat_of(&st.ids, m),
                "notify": notify,
            });
            Some(Sse::default().event("message").data(data.to_string()))
        }
        Event::Notice(crate::engine::Notice::Group(_)) => {
            Some(Sse::default().event("notice").data("{}"))
        }
        Event::Notice(_) => None,
        Event::State(s) => Some(Sse::default().event("state").data(state_word(s))),
    }
}

async fn events(State(st): State<AppState>) -> Response {
    let rx = st.handle.subscribe();
    let mut watch = st.handle.watch_state();
    watch.mark_unchanged();
    let first = Sse::default()
        .event("state")
        .data(state_word(&st.handle.state()));
    let start = stream::iter([Ok::<_, Infallible>(first)]);
    let live = stream::unfold(Some((st, rx, watch)), |open| async move {
        // After "stopped" or "erased" the stream ends: nothing more will
        // come, and a finished stream lets the server shut down.
        let (st, mut rx, mut watch) = open?;
        loop {
            tokio::select! {
                changed = watch.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let s = *watch.borrow_and_update();
                    let ev = Sse::default().event("state").data(state_word(&s));
                    let next = (!matches!(s, Svc::Stopped | Svc::Erased)).then_some((st, rx, watch));
                    return Some((Ok(ev), next));
                }
                got = rx.recv() => match got {
                    Ok(ev) => {
                        if let Some(out) = to_sse(&st, &ev) {
                            return Some((Ok(out), Some((st, rx, watch))));
                        }
                    }
                    // Missed some: tell the page to reload what it shows.
                    Err(RecvError::Lagged(_)) => {
                        let ev = Sse::default().event("message").data(r#"{"chat":"","notify":""}"#);
                        return Some((Ok(ev), Some((st, rx, watch))));
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    });
    use futures_util::StreamExt as _;
    SseResponse::new(start.chain(live))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(20)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ShownMessage;
    use crate::web::tests::fixture;

    fn incoming(from: &str) -> Event {
        Event::Message(ShownMessage {
            id: "01".repeat(16),
            from: from.into(),
            from_contact: true,
            peer_code: "code".into(),
            outgoing: false,
            text: "the secret text".into(),
            sent_at_ms: 1,
            status: "received",
            group: None,
        })
    }

    /// What reaches the page for a message: the chat id and the
    /// notification text, which names nobody unless the setting says so,
    /// and never carries the message.
    #[tokio::test]
    async fn message_events_carry_no_text_and_names_only_when_asked() {
        let f = fixture();
        let st = &f.app.state;
        let plain = format!(
            "{:?}",
            to_sse(st, &incoming("Zed\u{202E}\nX")).expect("an event")
        );
        assert!(plain.contains("New message"), "{plain}");
        assert!(
            !plain.contains("Zed"),
            "a name without the setting: {plain}"
        );
        assert!(!plain.contains("secret"), "message text: {plain}");
        assert!(plain.contains(&st.ids.person("code")), "{plain}");
        st.0.settings.lock().expect("not poisoned").notify_names = true;
        let named = format!(
            "{:?}",
            to_sse(st, &incoming("Zed\u{202E}\nX")).expect("an event")
        );
        assert!(named.contains("New message from Zed"), "{named}");
        assert!(
            !named.contains('\u{202E}'),
            "bidi override passed on: {named}"
        );
        assert!(!named.contains("secret"), "message text: {named}");
        let Event::Message(mut m) = incoming("Zed") else {
            unreachable!("a message")
        };
        m.group = Some(("aa".into(), "Title".into()));
        m.text = "[warning] about Someone: harassment, first-hand".into();
        let warned = format!("{:?}", to_sse(st, &Event::Message(m)).expect("an event"));
        assert!(warned.contains("New warning in a group"), "{warned}");
        assert!(
            !warned.contains("Someone") && !warned.contains("Zed"),
            "{warned}"
        );
    }
}
