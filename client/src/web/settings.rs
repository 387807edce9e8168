//! Settings of the app: the idle-lock time, what notifications say, and
//! Quit. Saved in the profile (`store::AppPrefs`, encrypted like the rest),
//! so they survive a restart; defaults are the private choice.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Router};
use maud::html;
use serde::Deserialize;

use super::AppState;
use super::chats::{Problem, engine, engine_unattended};
use super::layout::{self, Nav, Page, csrf_field, post_button};
use super::security::see_other;
use crate::store::AppPrefs;

/// What the app keeps in memory of the saved settings (loaded when the
/// profile opens, see `events::count_unread`), for notifications.
#[derive(Debug, Clone, Default)]
pub(crate) struct AppSettings {
    /// Notifications name the sender (off: they say only "New message").
    pub notify_names: bool,
}

impl AppState {
    /// A copy of the settings.
    pub(crate) fn settings(&self) -> AppSettings {
        self.0
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/settings", get(page).post(save))
}

async fn page(State(st): State<AppState>) -> Response {
    match load(&st).await {
        Ok(()) => settings_page(&st, None, None),
        Err(p) => p.respond(&st, false),
    }
}

/// Reads the saved settings into memory.
pub(crate) async fn load(st: &AppState) -> Result<(), Problem> {
    let prefs = engine_unattended(st, |e| {
        Box::pin(async move { e.app_prefs().map_err(|e| e.to_string()) })
    })
    .await?;
    st.0.settings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .notify_names = prefs.notify_names;
    Ok(())
}

/// A duration as the lock field shows it (what `parse_duration` reads).
fn duration_text(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        "off".into()
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn settings_page(st: &AppState, typed_lock: Option<&str>, error: Option<&str>) -> Response {
    let s = st.settings();
    let lock = typed_lock
        .map(str::to_string)
        .unwrap_or_else(|| duration_text(st.handle.lock_after()));
    let main = html! {
        @if let Some(e) = error { (layout::error_box(e)) }
        form method="post" action="/settings" class="stack" {
            (csrf_field(st))
            fieldset {
                legend { "Idle lock" }
                p { "Sotto locks itself after this long without use; your passphrase opens it \
                     again. Someone who finds this computer unlocked then finds Sotto locked." }
                label for="lock_after" { "Lock after" }
                input id="lock_after" name="lock_after" type="text" required value=(lock)
                    aria-describedby="lock-help" autocomplete="off";
                p id="lock-help" class="help" { "For example 5m, 15m or 1h (minutes or hours); \
                    off never locks. Saved in your profile: it applies at every start, in place \
                    of " code { "sotto app --lock-after" } "." }
            }
            fieldset {
                legend { "Notifications" }
                p { "When a message arrives while Sotto is in the background, your computer can \
                     show a notification. By default it says only \"New message\" or \"New \
                     warning in a group\", so someone looking at your screen learns nothing more." }
                p { button type="button" id="allow-notifications" class="secondary" hidden {
                    "Allow notifications" } }
                p id="notification-state" class="help" aria-live="polite" {}
                div class="check" {
                    input type="checkbox" id="notify_names" name="notify_names" value="on"
                        checked[s.notify_names];
                    label for="notify_names" { "Show who wrote in notifications" }
                }
            }
            button type="submit" class="primary" { "Save settings" }
        }
        h2 { "Close Sotto" }
        p { "Stops Sotto on this computer. Messages sent to you wait on the relay until you \
             start it again." }
        (post_button(st, "/quit", "Quit", "secondary"))
    };
    layout::page_refusing(st, Page::new("Settings", Nav::Settings, main), error)
}

#[derive(Deserialize)]
struct SettingsForm {
    notify_names: Option<String>,
    #[serde(default)]
    lock_after: String,
}

async fn save(State(st): State<AppState>, Form(form): Form<SettingsForm>) -> Response {
    let lock = match crate::service::parse_duration(&form.lock_after) {
        Ok(d) => d,
        Err(e) => {
            let e = format!("{e}. Nothing was changed.");
            return settings_page(&st, Some(&form.lock_after), Some(&e));
        }
    };
    let prefs = AppPrefs {
        notify_names: form.notify_names.is_some(),
        lock_after_ms: Some(u64::try_from(lock.as_millis()).unwrap_or(u64::MAX)),
    };
    let saved = prefs.clone();
    let stored = engine(&st, move |e| {
        Box::pin(async move { e.set_app_prefs(&saved).await.map_err(|e| e.to_string()) })
    })
    .await;
    if let Err(p) = stored {
        return p.respond(&st, false);
    }
    st.handle.set_lock_after(lock);
    st.0.settings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .notify_names = prefs.notify_names;
    see_other("/settings")
}
