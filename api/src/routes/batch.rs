//! Submitting batches, reading their status and results, cancelling them.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use genq_shared::{
    db::{
        self,
        idempotency::Earlier,
        jobs::{CancelOutcome, RunPolicy},
    },
    queue,
    types::{Accepted, JobStatus, JobView},
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::parse_task_id;
use crate::{
    AppState,
    error::{ApiError, Result},
    extract::JsonBody,
    validate::{BatchRequest, ValidJob, validate},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/batch", post(submit_batch))
        .route("/batch_result/{task_id}", get(batch_result))
        .route("/batch/{task_id}/cancel", post(cancel_batch))
}

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

async fn submit_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<BatchRequest>,
) -> Result<Response> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY => Some(key.to_owned()),
            _ => {
                return Err(ApiError::invalid(
                    "Idempotency-Key",
                    format!(
                        "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                    ),
                ));
            }
        },
    };
    let id = submit(&state, request, key.as_deref()).await?;
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
/// worker never receives an id PostgreSQL does not know; once recorded it is never withdrawn, so
/// an id handed out always answers.
#[tracing::instrument(skip_all, fields(task_id = tracing::field::Empty), err(level = "info"))]
pub(crate) async fn submit(
    state: &AppState,
    request: BatchRequest,
    idempotency_key: Option<&str>,
) -> Result<Uuid> {
    let job = validate(request, state.limits.clone()).await?;
    if db::control::intake_paused(&state.db).await? {
        return Err(ApiError::IntakePaused);
    }
    let id = Uuid::now_v7();
    tracing::Span::current().record("task_id", tracing::field::display(id));
    let policy = RunPolicy {
        max_attempts: state.max_attempts,
        timeout: job.timeout,
    };
    match idempotency_key {
        None => db::jobs::insert(&state.db, id, &job.prompts, &job.params, policy).await?,
        Some(key) => {
            let mut tx = state.db.begin().await?;
            db::jobs::insert(&mut *tx, id, &job.prompts, &job.params, policy).await?;
            match db::idempotency::claim(&mut tx, key, &request_hash(&job), id).await? {
                None => tx.commit().await?,
                Some(Earlier::Same(earlier)) => {
                    tx.rollback().await?;
                    tracing::info!(%earlier, "repeat of an idempotent request");
                    return Ok(earlier);
                }
                Some(Earlier::Different) => {
                    tx.rollback().await?;
                    return Err(ApiError::Conflict(format!(
                        "Idempotency-Key {key:?} was already used with a different request"
                    )));
                }
            }
        }
    }
    let mut storage = state.queue.clone();
    match queue::dispatch(&mut storage, id, id).await {
        Ok(()) => tracing::info!(prompts = job.prompts.len(), "job queued"),
        Err(e) => {
            // The job is recorded, and PostgreSQL is the record: the client gets its id like any
            // other (a concurrent request with the same Idempotency-Key may already hold it), and
            // the reconciler dispatches it once Redis answers again.
            tracing::warn!(
                error = format!("{e:#}"),
                "job recorded but not dispatched; the reconciler will dispatch it"
            );
            if let Err(e) = db::jobs::mark_undispatched(&state.db, id).await {
                // Still found, a little later: queued jobs are checked against Redis after
                // GENQ_REDISPATCH_AFTER_SECS.
                tracing::warn!(error = %e, "could not mark the job undispatched");
            }
        }
    }
    Ok(id)
}

/// What makes two requests "the same" for an idempotency key: the validated job, defaults
/// filled in.
fn request_hash(job: &ValidJob) -> Vec<u8> {
    let canonical = serde_json::json!({
        "prompts": job.prompts,
        "params": job.params,
        "timeout_secs": job.timeout.as_secs(),
    });
    Sha256::digest(canonical.to_string().as_bytes()).to_vec()
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
            if let Err(e) = queue::remove(&state.db, &mut redis, &state.queue_name, &[id]).await {
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
