//! `POST /generate`: a batch that answers with its generations once done, in the record shape of
//! Python GPT-2 services, or with `202` and the task id if the wait runs out.

use axum::{
    Extension, Json,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use genq_shared::queue::Priority;
use genq_shared::{
    db,
    types::{ErrorCode, GenerationRecord, JobStatus},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::batch::{accepted, idempotency_key, submit, unknown};
use crate::openapi::{
    AcceptedJob, ErrorBody, Internal, PayloadTooLarge, RequestTimeout, TooManyRequests,
    Unauthorized, Unavailable,
};
use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, Result},
    extract::JsonBody,
    validate::BatchRequest,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(generate))
}

/// Generate and wait
///
/// Submits the prompts as a batch and waits for the job (60 s by default,
/// `GENQ_GENERATE_TIMEOUT_SECS`): its generations in prompt order, or `202` with the task id if
/// the wait runs out (the job goes on; poll `Location`). With an `Idempotency-Key`, a repeat of
/// the same body waits for the original job instead of submitting another, and another body
/// under the same key is a 409 (keys are shared with `POST /batch`).
#[utoipa::path(
    post,
    path = "/generate",
    tag = "generations",
    request_body = BatchRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1,
            max_length = 255,
            description = "1 to 255 visible ASCII characters, unique per request body (per \
                tenant)"),
    ),
    responses(
        (status = 200, description = "The job's generations, in prompt order",
            body = [GenerationRecord]),
        (status = 202, response = AcceptedJob),
        (status = 400, body = ErrorBody,
            description = "`malformed_json`: the body is not JSON; `inappropriate_content`: a \
                prompt has a forbidden word"),
        (status = 401, response = Unauthorized),
        (status = 408, response = RequestTimeout),
        (status = 409, body = ErrorBody,
            description = "`conflict`: the job was cancelled while waited for, or the \
                `Idempotency-Key` was already used with a different body"),
        (status = 413, response = PayloadTooLarge),
        (status = 422, body = ErrorBody,
            description = "`invalid_field`: a missing, unknown or out-of-range field, or a bad \
                `Idempotency-Key`, named in `field`"),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 502, body = ErrorBody,
            description = "The job failed; `code` is the job's own (`timeout`, `prompt_too_long`, \
                `worker_lost`, `worker_stopped`, `inference_error`)"),
        (status = 503, response = Unavailable),
    )
)]
async fn generate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<BatchRequest>,
) -> Result<Response> {
    let key = idempotency_key(&headers)?;
    let id = submit(
        &state,
        &caller,
        request,
        key.as_deref(),
        Priority::Interactive,
    )
    .await?;
    // Shutting down: answer 202 with the task id now rather than hold the replica up.
    let status = tokio::select! {
        status = state.watch.wait(id, state.generate_wait) => status?,
        () = state.stopping.cancelled() => Some(JobStatus::Queued),
        () = state.key_cache.until_revoked(&state.db, caller.key_id()) => {
            return Err(ApiError::Unauthorized);
        }
    }
    .ok_or_else(|| unknown(id))?;
    match status {
        JobStatus::Completed => {
            Ok(Json(db::generations::of_job(&state.db, id).await?).into_response())
        }
        JobStatus::Queued | JobStatus::Running => Ok(accepted(id)),
        JobStatus::Cancelled => Err(ApiError::Conflict(format!("task {id} was cancelled"))),
        JobStatus::Failed => {
            let view = db::jobs::view(&state.db, id, caller.scope())
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
