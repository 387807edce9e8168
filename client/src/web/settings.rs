//! Settings of the app: what notifications say, and Quit. Kept in memory
//! for this run (defaults are the private choice).

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Router};
use maud::html;
use serde::Deserialize;

use super::AppState;
use super::layout::{self, Nav, Page, csrf_field, post_button};
use super::security::see_other;

/// Settings of this app run.
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
    let s = st.settings();
    let main = html! {
        form method="post" action="/settings" class="stack" {
            (csrf_field(&st))
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
        h2 { "Idle lock" }
        p { "Sotto locks itself after a while without use; your passphrase opens it again. \
             Set the time when you start it: " code { "sotto app --lock-after 15m" } "." }
        h2 { "Close Sotto" }
        p { "Stops Sotto on this computer. Messages sent to you wait on the relay until you \
             start it again." }
        (post_button(&st, "/quit", "Quit", "secondary"))
    };
    layout::page(&st, Page::new("Settings", Nav::Settings, main))
}

#[derive(Deserialize)]
struct SettingsForm {
    notify_names: Option<String>,
}

async fn save(State(st): State<AppState>, Form(form): Form<SettingsForm>) -> Response {
    st.0.settings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .notify_names = form.notify_names.is_some();
    see_other("/settings")
}
