//! Liveness (`/health`: the process answers) and readiness (`/ready`: PostgreSQL and Redis answer).

use std::time::Duration;

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use genq_shared::queue;
use serde_json::{Value, json};

use crate::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "model": state.model_name }))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database =
        tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("select 1").execute(&state.db)).await;
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
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        let message = format!("unreachable: {}", down.join(", "));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "unavailable", "error": { "code": "unavailable", "message": message } }),
            ),
        )
    }
}
