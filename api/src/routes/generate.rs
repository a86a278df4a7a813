//! `POST /generate`: a batch that answers with its generations once done, in the record shape of
//! Python GPT-2 services, or with `202` and the task id if the wait runs out.

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::post,
};
use genq_shared::{
    db,
    types::{ErrorCode, JobStatus},
};

use super::batch::{accepted, submit, unknown};
use crate::{
    AppState,
    error::{ApiError, Result},
    extract::JsonBody,
    validate::BatchRequest,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/generate", post(generate))
}

async fn generate(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<BatchRequest>,
) -> Result<Response> {
    let id = submit(&state, request, None).await?;
    let status = state
        .finals
        .wait(id, state.generate_wait)
        .await?
        .ok_or_else(|| unknown(id))?;
    match status {
        JobStatus::Completed => {
            Ok(Json(db::generations::of_job(&state.db, id).await?).into_response())
        }
        JobStatus::Queued | JobStatus::Running => Ok(accepted(id)),
        JobStatus::Cancelled => Err(ApiError::Conflict(format!("task {id} was cancelled"))),
        JobStatus::Failed => {
            let view = db::jobs::view(&state.db, id)
                .await?
                .ok_or_else(|| unknown(id))?;
            // A failed job always has an error; `internal` marks the impossible case.
            let error = view
                .error
                .unwrap_or_else(|| genq_shared::types::ErrorDetail {
                    code: ErrorCode::Internal,
                    message: "the job failed without a recorded reason".into(),
                });
            Err(ApiError::JobFailed {
                code: error.code,
                message: format!("task {id}: {}", error.message),
            })
        }
    }
}
