//! The admin console's page: the built `admin-console/` served at `/admin` from `server.admin_dir`, with the
//! headers that keep the service key it signs in with inside this origin.
//!
//! Invariants: every `/admin` response (the page, its assets, a 404) carries a Content-Security-Policy that lets
//! the page load and call only its own origin (`connect-src 'self'`), never be framed (`frame-ancestors
//! 'none'`), run no inline script and submit no form elsewhere; `Referrer-Policy: no-referrer` and
//! `X-Content-Type-Options: nosniff`. The page keeps the key in `sessionStorage` and sends it only as
//! `Authorization: Bearer` to `/api/v1/admin/*`, which carries no CORS ([`super::cors`]): another origin's page
//! can neither frame the console nor read an admin answer. Not built (no `index.html`): a JSON 404 that says so.

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use tower_http::services::ServeDir;

use super::{ApiError, AppState};
use crate::config::ServerSettings;

/// Where the console is served.
pub const PATH: &str = "/admin";

/// The page's Content-Security-Policy: its own scripts, styles and API, nothing else.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `/admin` and everything under it: the built console, or a JSON 404 when it is not built.
pub fn router(server: &ServerSettings) -> Router<AppState> {
    let router = match server.admin_console() {
        Some(dir) => {
            // No SPA fallback: the console is one page; an unknown asset is a 404, not index.html.
            let files = ServeDir::new(dir).append_index_html_on_directories(true);
            Router::new().nest_service(PATH, files)
        }
        None => {
            if !server.admin_dir.as_os_str().is_empty() {
                tracing::info!(
                    admin_dir = %server.admin_dir.display(),
                    "the admin console is not built: /admin answers 404 (build it: cd admin-console && npm run build)"
                );
            }
            let not_built =
                || async { ApiError::NotFound("the admin console is not built or is disabled (server.admin_dir)") };
            Router::new().route(PATH, any(not_built)).route(&format!("{PATH}/{{*rest}}"), any(not_built))
        }
    };
    router.layer(axum::middleware::map_response(secure))
}

async fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The page is small and changes with each build: revalidated every load (assets are content-hashed).
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    resp
}
