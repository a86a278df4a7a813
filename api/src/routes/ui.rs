//! The dashboard at `/ui`: one page, its script and stylesheet, bundled in the binary (no CDN). The
//! page itself is open; everything it shows comes from the admin routes, called with the admin
//! key the operator types in.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::AppState;

/// Scripts and styles from here only, calls to this origin only; nothing inline.
const UI_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; \
    connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

const INDEX_HTML: &str = include_str!("../../assets/ui/index.html");
const UI_JS: &str = include_str!("../../assets/ui/ui.js");
const UI_CSS: &str = include_str!("../../assets/ui/ui.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/ui",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/ui.js",
            get(|| async { asset(UI_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/ui.css",
            get(|| async { asset(UI_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(UI_CSP),
            ),
            // They change with genq: revalidate every time.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
