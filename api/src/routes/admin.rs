//! Admin routes (admin keys only): pausing and resuming intake, the queue's figures. Reading and
//! cancelling any tenant's job goes through the ordinary job routes, whose scope for an admin key
//! is every tenant.

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use genq_shared::{db, types::QueueStats};
use serde_json::{Value, json};

use crate::openapi::{
    Forbidden, IntakeState, Internal, TooManyRequests, Unauthorized, Unavailable,
};
use crate::{AppState, error::Result};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/intake/pause", post(pause))
        .route("/admin/intake/resume", post(resume))
        .route("/admin/queue", get(queue))
}

/// Pause intake
///
/// New jobs (`POST /batch`, `POST /generate`) are refused with 503 `intake_paused` until intake
/// is resumed; queued and running jobs go on.
#[utoipa::path(
    post,
    path = "/admin/intake/pause",
    operation_id = "pause_intake",
    tag = "admin",
    responses(
        (status = 200, description = "Intake is paused", body = IntakeState),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn pause(State(state): State<AppState>) -> Result<Json<Value>> {
    set_intake_paused(&state, true).await
}

/// Resume intake
#[utoipa::path(
    post,
    path = "/admin/intake/resume",
    operation_id = "resume_intake",
    tag = "admin",
    responses(
        (status = 200, description = "Intake is open", body = IntakeState),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn resume(State(state): State<AppState>) -> Result<Json<Value>> {
    set_intake_paused(&state, false).await
}

async fn set_intake_paused(state: &AppState, paused: bool) -> Result<Json<Value>> {
    db::control::set_intake_paused(&state.db, paused).await?;
    tracing::info!(paused, "intake switched over HTTP");
    Ok(Json(json!({ "intake_paused": paused })))
}

/// Queue figures
///
/// Jobs by status, live workers, and whether intake is paused.
#[utoipa::path(
    get,
    path = "/admin/queue",
    operation_id = "queue_stats",
    tag = "admin",
    responses(
        (status = 200, description = "The queue's figures", body = QueueStats),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn queue(State(state): State<AppState>) -> Result<Json<QueueStats>> {
    Ok(Json(db::jobs::stats(&state.db).await?))
}
