//! The API's documentation, open like `/health`: the OpenAPI document at `/openapi.json` and
//! Swagger UI at `/docs`, served from the binary (api/assets/swagger-ui, vendored by
//! scripts/vendor-swagger-ui.sh) so the page works with no network.

use axum::{
    Router,
    body::Bytes,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::AppState;

/// The page's own policy: Swagger UI runs the bundle and init.js from here, styles from here,
/// inline SVG icons as data: URLs, and calls the API on this origin; nothing inline, nothing from
/// elsewhere. It replaces the API's `default-src 'none'` (lib.rs sets that only when absent).
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; \
    form-action 'none'";

/// Swagger UI's own files change only with its version (api/assets/swagger-ui/VERSION); their
/// URLs do not carry it, so a week rather than a year keeps an upgrade from being hidden long.
const ASSET_CACHE: &str = "public, max-age=604800";
/// Ours (the page, init.js, the document) change with genq: revalidate every time.
const NO_CACHE: &str = "no-cache";

const INDEX_HTML: &str = include_str!("../../assets/swagger-ui/index.html");
const INIT_JS: &str = include_str!("../../assets/swagger-ui/init.js");
const BUNDLE_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");
const FAVICON: &[u8] = include_bytes!("../../assets/swagger-ui/favicon-32x32.png");

/// The docs' routes; `document` is the OpenAPI document the API's router was built with.
pub fn router(document: serde_json::Value) -> Router<AppState> {
    // Serialized once: the document does not change while the process runs.
    let json = Bytes::from(serde_json::to_vec(&document).expect("a JSON value serializes"));
    Router::new()
        .route("/openapi.json", get(move || openapi_json(json.clone())))
        .route("/docs", get(index))
        .route("/docs/", get(index))
        .route(
            "/docs/init.js",
            get(|| async { page(INIT_JS, "text/javascript; charset=utf-8", NO_CACHE) }),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            get(|| async { page(BUNDLE_JS, "text/javascript; charset=utf-8", ASSET_CACHE) }),
        )
        .route(
            "/docs/swagger-ui.css",
            get(|| async { page(CSS, "text/css; charset=utf-8", ASSET_CACHE) }),
        )
        .route(
            "/docs/favicon-32x32.png",
            get(|| async { page(FAVICON, "image/png", ASSET_CACHE) }),
        )
}

async fn openapi_json(json: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, NO_CACHE),
        ],
        json,
    )
        .into_response()
}

async fn index() -> Response {
    page(INDEX_HTML, "text/html; charset=utf-8", NO_CACHE)
}

/// One of the page's files, with the page's CSP.
fn page(body: impl Into<Bytes>, content_type: &'static str, cache: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body.into(),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    );
    response
}
