//! The app's static files, built into the binary: nothing loads from the
//! network, so the app works offline and no third party learns it is used.

use axum::Router;
use axum::http::header;
use axum::routing::get;

use super::AppState;

/// The stylesheet.
pub(crate) const APP_CSS: &[u8] = include_bytes!("../../assets/app.css");
/// htmx 2, vendored (version and checksum in `client/assets/README`).
pub(crate) const HTMX_JS: &[u8] = include_bytes!("../../assets/htmx.min.js");
/// The app's own script (live updates, notifications, passphrase strength).
pub(crate) const APP_JS: &[u8] = include_bytes!("../../assets/app.js");

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/assets/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) }),
        )
        .route(
            "/assets/htmx.min.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    HTMX_JS,
                )
            }),
        )
        // Browsers ask for it on every page; an empty answer keeps their
        // consoles free of 404s.
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .route(
            "/assets/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
}
