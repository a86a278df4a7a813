//! HTTP routes; each module exports a `router()` and the root merges them.

pub mod admin;
pub mod batch;
pub mod bulk;
pub mod docs;
pub mod events;
pub mod generate;
pub mod health;
pub mod history;
pub mod metrics;
pub mod ui;

use std::collections::HashMap;

use axum::{
    Router,
    extract::{Query, rejection::QueryRejection},
    http::{Method, Uri},
    middleware,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::{AppState, auth, error::ApiError};

/// Health, readiness, metrics, the docs and the dashboard's page are open; every other route needs
/// a key, admin routes an admin key.
pub fn router(state: AppState) -> Router {
    let (api, document) = api_router(state.clone()).split_for_parts();
    // Only the documentation and the dashboard's page are outside the OpenAPI document.
    Router::new()
        .merge(api)
        .merge(ui::router())
        .merge(docs::router(crate::openapi::document(document)))
        .with_state(state)
        .fallback(
            |uri: Uri| async move { ApiError::NotFound(format!("no route for {}", uri.path())) },
        )
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::MethodNotAllowed(format!("{method} is not served on {}", uri.path()))
        })
        .layer(middleware::from_fn(crate::openai::in_openai_shape))
}

/// The API's routes and their OpenAPI description, built together by utoipa-axum: each route is
/// registered from its handler's `#[utoipa::path]`, so none is served undescribed.
pub fn api_router(state: AppState) -> OpenApiRouter<AppState> {
    let admin = admin::router().route_layer(middleware::from_fn(auth::require_admin));
    let keyed = OpenApiRouter::new()
        .merge(batch::router())
        .merge(events::router())
        .merge(bulk::router())
        .merge(generate::router())
        .merge(history::router())
        .merge(crate::openai::router())
        .merge(admin)
        .route_layer(middleware::from_fn_with_state(state, auth::authenticate));
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .merge(keyed)
        .merge(health::router())
        .merge(metrics::router())
}

fn parse_task_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::MalformedId(format!("'{raw}' is not a task id (a UUID)")))
}

/// A route's query parameters, or a 422 naming the query string when it cannot be decoded.
pub(crate) fn query_map(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::invalid(
            "query",
            format!("the query string is not valid: {}", e.body_text()),
        )
    })?;
    Ok(query)
}
