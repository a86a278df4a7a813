//! Submitting batches, reading their status and results, cancelling them.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use genq_shared::{
    db::{self, jobs::CancelOutcome},
    queue,
    types::{Accepted, JobStatus, JobView},
};
use uuid::Uuid;

use super::parse_task_id;
use crate::{
    AppState,
    error::{ApiError, Result},
    extract::JsonBody,
    validate::{BatchRequest, validate},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/batch", post(submit_batch))
        .route("/batch_result/{task_id}", get(batch_result))
        .route("/batch/{task_id}/cancel", post(cancel_batch))
}

async fn submit_batch(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<BatchRequest>,
) -> Result<Response> {
    let id = submit(&state, request).await?;
    Ok(accepted(id))
}

/// `202` with the task id and where to poll it.
pub(crate) fn accepted(id: Uuid) -> Response {
    let location = HeaderValue::from_str(&format!("/batch_result/{id}"))
        .expect("a UUID path is a valid header");
    let body = Json(Accepted {
        task_id: id,
        status: JobStatus::Queued,
    });
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], body).into_response()
}

/// Validates, records and dispatches a job. The job is recorded before it is dispatched, so a
/// worker never receives an id PostgreSQL does not know.
#[tracing::instrument(skip_all, fields(task_id = tracing::field::Empty), err(level = "info"))]
pub(crate) async fn submit(state: &AppState, request: BatchRequest) -> Result<Uuid> {
    let job = validate(request, state.limits.clone()).await?;
    if db::control::intake_paused(&state.db).await? {
        return Err(ApiError::IntakePaused);
    }
    let id = Uuid::now_v7();
    tracing::Span::current().record("task_id", tracing::field::display(id));
    db::jobs::insert(&state.db, id, &job.prompts, &job.params).await?;
    let mut storage = state.queue.clone();
    if let Err(e) = queue::dispatch(&mut storage, id).await {
        tracing::warn!(error = ?e, "dispatch failed; withdrawing the job");
        // The client hears 503 and was never given the id, so the job must not linger as queued.
        if let Err(e) = db::jobs::delete_unacknowledged(&state.db, id).await {
            tracing::error!(error = %e, "could not withdraw an undispatched job");
        }
        return Err(ApiError::Unavailable(
            "the job queue (Redis) is unavailable".into(),
        ));
    }
    tracing::info!(prompts = job.prompts.len(), "job queued");
    Ok(id)
}

async fn batch_result(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
) -> Result<Json<JobView>> {
    let id = parse_task_id(&task_id)?;
    let view = db::jobs::view(&state.db, id)
        .await?
        .ok_or_else(|| unknown(id))?;
    Ok(Json(view))
}

async fn cancel_batch(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
) -> Result<Json<JobView>> {
    let id = parse_task_id(&task_id)?;
    match db::jobs::cancel(&state.db, id).await? {
        CancelOutcome::Cancelled => {
            // Best effort: a task left in Redis is skipped by the worker that fetches it.
            let mut redis = state.redis.clone();
            if let Err(e) = queue::remove(&mut redis, &state.queue_name, &[id]).await {
                tracing::warn!(error = ?e, %id, "cancelled job's task stays in Redis until a worker skips it");
            }
        }
        CancelOutcome::AlreadyFinal(status) => {
            return Err(ApiError::Conflict(format!("task {id} is already {status}")));
        }
        CancelOutcome::NotFound => return Err(unknown(id)),
    }
    let view = db::jobs::view(&state.db, id)
        .await?
        .ok_or_else(|| unknown(id))?;
    Ok(Json(view))
}

pub(crate) fn unknown(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no task {id}"))
}
