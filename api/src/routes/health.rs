//! Liveness (`/health`: the process answers) and readiness (`/ready`: PostgreSQL and Redis answer).

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use genq_shared::{db, queue};
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::openapi::{HealthStatus, ReadyStatus, Unavailable};
use crate::{AppState, error::ApiError};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
}

/// Liveness
///
/// The process answers; says nothing of PostgreSQL or Redis.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    security(()),
    responses((status = 200, description = "The process is up", body = HealthStatus))
)]
async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "model": state.model_name }))
}

/// Readiness
///
/// PostgreSQL and Redis both answer (within 2 s each).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready to take requests", body = ReadyStatus),
        (status = 503, response = Unavailable),
    )
)]
async fn ready(State(state): State<AppState>) -> Response {
    let database = tokio::time::timeout(CHECK_TIMEOUT, db::ping(&state.db)).await;
    let database_ok = matches!(database, Ok(Ok(_)));
    let mut redis = state.redis.clone();
    let redis_ok = matches!(
        tokio::time::timeout(CHECK_TIMEOUT, queue::ping(&mut redis)).await,
        Ok(Ok(()))
    );
    let down: Vec<&str> = [("postgresql", database_ok), ("redis", redis_ok)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n)
        .collect();
    if down.is_empty() {
        return (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response();
    }
    ApiError::Unavailable(format!("unreachable: {}", down.join(", "))).into_response()
}
