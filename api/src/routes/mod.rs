//! HTTP routes; each module exports a `router()` and the root merges them.

pub mod batch;
pub mod generate;
pub mod health;
pub mod history;

use axum::{Router, http::Uri};
use uuid::Uuid;

use crate::{AppState, error::ApiError};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(batch::router())
        .merge(generate::router())
        .merge(history::router())
        .merge(health::router())
        .fallback(
            |uri: Uri| async move { ApiError::NotFound(format!("no route for {}", uri.path())) },
        )
}

fn parse_task_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::MalformedId(format!("'{raw}' is not a task id (a UUID)")))
}
