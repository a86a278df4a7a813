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
use uuid::Uuid;

use crate::{AppState, auth, error::ApiError};

/// Health, readiness, metrics, the docs and the dashboard's page are open; every other route needs a key, admin routes an admin
/// key.
pub fn router(state: AppState) -> Router {
    let admin = admin::router().route_layer(middleware::from_fn(auth::require_admin));
    let keyed = Router::new()
        .merge(batch::router())
        .merge(bulk::router())
        .merge(generate::router())
        .merge(history::router())
        .merge(admin)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .merge(keyed)
        .merge(health::router())
        .merge(metrics::router())
        .merge(ui::router())
        .merge(docs::router())
        .with_state(state)
        .fallback(
            |uri: Uri| async move { ApiError::NotFound(format!("no route for {}", uri.path())) },
        )
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::MethodNotAllowed(format!("{method} is not served on {}", uri.path()))
        })
}

fn parse_task_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::MalformedId(format!("'{raw}' is not a task id (a UUID)")))
}

/// A route's query parameters, or a 422 naming the query string when it cannot be decoded.
fn query_map(
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
