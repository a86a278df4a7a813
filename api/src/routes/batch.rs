//! Submitting batches, reading their status and results, cancelling them.

use std::{collections::HashMap, time::Duration};

use axum::{
    Extension, Json,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use genq_shared::{
    db::{
        self,
        idempotency::Earlier,
        jobs::{CancelOutcome, JobRoute, Owner, RunPolicy},
    },
    metrics::{self as genq_metrics, names},
    queue::{self, Priority},
    types::{Accepted, JobStatus, JobView},
};
use sha2::{Digest, Sha256};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{parse_task_id, query_map};
use crate::openapi::{
    AcceptedJob, ErrorBody, Internal, PayloadTooLarge, RequestTimeout, TooManyRequests,
    Unauthorized, Unavailable,
};
use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, Result},
    extract::JsonBody,
    rate_limit,
    routing::{dispatch_recorded, lock_models, route_request},
    validate::{BatchRequest, ValidJob, validate},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit_batch))
        .routes(routes!(batch_result))
        .routes(routes!(cancel_batch))
}

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Submit a batch
///
/// Validates, records and queues the job, and answers at once with its id. With an
/// `Idempotency-Key`, a repeat of the same body answers the original task id (the job is not
/// submitted twice) and another body under the same key is a 409.
#[utoipa::path(
    post,
    path = "/batch",
    tag = "jobs",
    request_body = BatchRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1,
            max_length = 255,
            description = "1 to 255 visible ASCII characters, unique per request body (per \
                tenant)"),
    ),
    responses(
        (status = 202, response = AcceptedJob),
        (status = 400, body = ErrorBody,
            description = "`malformed_json`: the body is not JSON; `inappropriate_content`: a \
                prompt has a forbidden word"),
        (status = 401, response = Unauthorized),
        (status = 408, response = RequestTimeout),
        (status = 409, body = ErrorBody,
            description = "`conflict`: the `Idempotency-Key` was already used with a different \
                body"),
        (status = 413, response = PayloadTooLarge),
        (status = 422, body = ErrorBody,
            description = "`invalid_field`: a missing, unknown or out-of-range field, or a bad \
                `Idempotency-Key`, named in `field`"),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn submit_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<BatchRequest>,
) -> Result<Response> {
    let key = idempotency_key(&headers)?;
    let id = submit(&state, &caller, request, key.as_deref(), Priority::Batch).await?;
    Ok(accepted(id))
}

/// The request's `Idempotency-Key`, if it sent one that is valid.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY => {
                Ok(Some(key.to_owned()))
            }
            _ => Err(ApiError::invalid(
                "Idempotency-Key",
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
            )),
        },
    }
}

/// How an `Idempotency-Key` appears in logs: clients may put secrets or personal data in them.
fn key_in_logs(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
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

/// Validates, routes (to its model), records and dispatches a job for the caller's tenant, within
/// its key's quotas. The job is recorded before it is dispatched, so a worker never receives an
/// id PostgreSQL does not know; once recorded it is never withdrawn, so an id handed out always
/// answers.
#[tracing::instrument(skip_all, fields(task_id = tracing::field::Empty), err(level = "info"))]
pub(crate) async fn submit(
    state: &AppState,
    caller: &Caller,
    request: BatchRequest,
    idempotency_key: Option<&str>,
    priority: Priority,
) -> Result<Uuid> {
    let job = validate(request, state.limits.clone()).await?;
    if db::control::intake_paused(&state.db).await? {
        return Err(ApiError::IntakePaused);
    }
    let route = route_request(state, caller, job.model.as_deref(), job.user.as_deref()).await?;
    if job.callback_url.is_some() {
        check_webhook_secret(state, caller).await?;
    }
    let id = Uuid::now_v7();
    tracing::Span::current().record("task_id", tracing::field::display(id));
    let policy = RunPolicy {
        max_attempts: state.max_attempts,
        timeout: job.timeout,
    };
    let owner = Owner {
        tenant: &caller.tenant,
        key_id: caller.key.as_ref().map(|k| k.id),
    };
    let mut tx = state.db.begin().await?;
    lock_models(&mut tx, &[&route.model]).await?;
    let callback_url = job.callback_url.as_deref();
    db::jobs::insert(
        &mut *tx,
        id,
        &job.prompts,
        &job.params,
        policy,
        owner,
        callback_url,
        JobRoute::of(&route, priority),
    )
    .await?;
    if let Some(key) = idempotency_key {
        match db::idempotency::claim(&mut tx, &caller.tenant, key, &request_hash(&job), id).await? {
            None => {}
            Some(Earlier::Same(earlier)) => {
                tx.rollback().await?;
                tracing::info!(
                    %earlier,
                    idempotency_key = %key_in_logs(key),
                    "repeat of an idempotent request"
                );
                return Ok(earlier);
            }
            Some(Earlier::Different) => {
                tx.rollback().await?;
                tracing::info!(
                    idempotency_key = %key_in_logs(key),
                    "idempotency key reused with a different request"
                );
                return Err(ApiError::Conflict(
                    "this Idempotency-Key was already used with a different request".into(),
                ));
            }
        }
    }
    if let Some(refusal) =
        check_quotas(&mut tx, caller, job.token_budget(), "this job needs").await?
    {
        tx.rollback().await?;
        return Err(refusal);
    }
    // Last, so that only a job that is accepted is charged (a repeat returned above is not).
    if let Err(refusal) = rate_limit::charge_jobs(state, caller, 1).await {
        tx.rollback().await?;
        return Err(refusal);
    }
    tx.commit().await?;
    metrics::counter!(names::JOBS_SUBMITTED).increment(1);
    tracing::info!(prompts = job.prompts.len(), model = %route.model, "job recorded");
    dispatch_recorded(state, &caller.tenant, [(id, route.model, priority)]).await;
    Ok(id)
}

/// Refuses the job(s) just inserted, inside their recording transaction, when the key's queued
/// jobs or tokens today are spent; otherwise charges their token `budget`. `needs` begins the
/// refusal's second half ("this job needs"). Checked after the idempotency key, so a repeat of
/// an accepted request gets its job even at the limit.
pub(crate) async fn check_quotas(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    caller: &Caller,
    budget: u64,
    needs: &str,
) -> Result<Option<ApiError>> {
    let Some(key) = &caller.key else {
        return Ok(None);
    };
    if key.max_queued.is_none() && key.tokens_per_day.is_none() {
        return Ok(None);
    }
    db::keys::lock_for_quota(tx, key.id).await?;
    if let Some(max_queued) = key.max_queued {
        // The job just inserted counts too.
        let unfinished = db::keys::unfinished_jobs(tx, key.id, i64::from(max_queued) + 1).await?;
        if unfinished > i64::from(max_queued) {
            return Ok(Some(ApiError::QuotaExceeded(format!(
                "this key may have {max_queued} jobs queued or running; wait for some to finish"
            ))));
        }
    }
    if let Some(per_day) = key.tokens_per_day {
        let budget = budget as i64;
        if !db::keys::charge_tokens(tx, key.id, budget, per_day).await? {
            return Ok(Some(ApiError::QuotaExceeded(format!(
                "this key may use {per_day} tokens a day (UTC) and {needs} {budget} (prompts x max_tokens)"
            ))));
        }
    }
    Ok(None)
}

/// A `callback_url` needs a secret to sign its webhook with: the caller's key's own, or the
/// API's `GENQ_WEBHOOK_SECRET`.
pub(crate) async fn check_webhook_secret(state: &AppState, caller: &Caller) -> Result<()> {
    if state.webhook_secret_configured {
        return Ok(());
    }
    if let Some(key) = &caller.key
        && db::webhooks::key_has_secret(&state.db, key.id).await?
    {
        return Ok(());
    }
    Err(ApiError::invalid(
        "callback_url",
        "webhooks are not set up: the API has no GENQ_WEBHOOK_SECRET and this key no secret of \
         its own (genqctl keys webhook-secret) to sign them with",
    ))
}

/// What makes two requests "the same" for an idempotency key: the validated job, defaults
/// filled in.
fn request_hash(job: &ValidJob) -> Vec<u8> {
    let mut canonical = serde_json::json!({
        "prompts": job.prompts,
        "params": job.params,
        "timeout_secs": job.timeout.as_secs(),
    });
    // Only when given, so that keys stored before webhooks existed still match their repeats.
    if let Some(url) = &job.callback_url {
        canonical["callback_url"] = url.as_str().into();
    }
    if let Some(model) = &job.model {
        canonical["model"] = model.as_str().into();
    }
    if let Some(user) = &job.user {
        canonical["user"] = user.as_str().into();
    }
    Sha256::digest(canonical.to_string().as_bytes()).to_vec()
}

/// Read a job
///
/// Its status, parameters, timestamps, counts, the results so far in prompt order, and why it
/// failed if it did. A tenant key sees its tenant's jobs only; an admin key sees every job. With
/// `wait`, answers as soon as the job is final, or after that many seconds with its state then
/// (a long poll: no need to poll often).
#[utoipa::path(
    get,
    path = "/batch_result/{task_id}",
    tag = "jobs",
    params(
        ("task_id" = uuid::Uuid, Path, description = "The task id `POST /batch` answered"),
        ("wait" = Option<u64>, Query, nullable = false, minimum = 0, maximum = 60,
            description = "Seconds to wait for the job to be final (0 to 60, default 0)"),
    ),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, body = ErrorBody, description = "`malformed_id`: the task id is not a UUID"),
        (status = 401, response = Unauthorized),
        (status = 404, body = ErrorBody,
            description = "`not_found`: no such task (for this tenant)"),
        (status = 422, body = ErrorBody,
            description = "`invalid_field`: `wait` is not 0 to 60, named in `field`"),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn batch_result(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    task_id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<JobView>> {
    let id = task_id_of(task_id)?;
    let wait = match query_map(query)?.get("wait") {
        None => Duration::ZERO,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= MAX_WAIT_SECS)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                ApiError::invalid(
                    "wait",
                    format!("wait must be a whole number of seconds from 0 to {MAX_WAIT_SECS}"),
                )
            })?,
    };
    let view = db::jobs::view(&state.db, id, caller.scope())
        .await?
        .ok_or_else(|| unknown(id))?;
    if wait.is_zero() || view.status.is_final() {
        return Ok(Json(view));
    }
    tokio::select! {
        waited = state.watch.wait(id, wait) => { waited?; }
        // Shutting down: answer now rather than hold the replica up.
        () = state.stopping.cancelled() => {}
        () = state.key_cache.until_revoked(&state.db, caller.key_id()) => {
            return Err(ApiError::Unauthorized);
        }
    }
    let view = db::jobs::view(&state.db, id, caller.scope())
        .await?
        .ok_or_else(|| unknown(id))?;
    Ok(Json(view))
}

/// The longest long poll; clients wanting longer ask again.
const MAX_WAIT_SECS: u64 = 60;

/// Cancel a job
///
/// A queued job never runs; a running one stops at its next decode step and keeps the prompts
/// already finished. Answers the job as it is after the cancel.
#[utoipa::path(
    post,
    path = "/batch/{task_id}/cancel",
    tag = "jobs",
    params(("task_id" = uuid::Uuid, Path, description = "The task id `POST /batch` answered")),
    responses(
        (status = 200, description = "The job, now `cancelled`", body = JobView),
        (status = 400, body = ErrorBody, description = "`malformed_id`: the task id is not a UUID"),
        (status = 401, response = Unauthorized),
        (status = 404, body = ErrorBody,
            description = "`not_found`: no such task (for this tenant)"),
        (status = 409, body = ErrorBody, description = "`conflict`: the job already finished"),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn cancel_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    task_id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>> {
    let id = task_id_of(task_id)?;
    match db::jobs::cancel(&state.db, id, caller.scope()).await? {
        CancelOutcome::Cancelled => {
            genq_metrics::jobs_finished(JobStatus::Cancelled, None, 1);
            // Best effort: a task left in Redis is skipped by the worker that fetches it.
            let mut redis = state.redis.clone();
            if let Err(e) = queue::remove(&state.db, &mut redis, &state.queue_name, &[id]).await {
                genq_metrics::redis_error();
                tracing::warn!(error = ?e, %id, "cancelled job's task stays in Redis until a worker skips it");
            }
        }
        CancelOutcome::AlreadyFinal(status) => {
            return Err(ApiError::Conflict(format!("task {id} is already {status}")));
        }
        CancelOutcome::NotFound => return Err(unknown(id)),
    }
    let view = db::jobs::view(&state.db, id, caller.scope())
        .await?
        .ok_or_else(|| unknown(id))?;
    Ok(Json(view))
}

/// The task id of the path; one that axum cannot even decode (bad percent-encoding, not UTF-8) is
/// as malformed as one that is not a UUID.
pub(crate) fn task_id_of(path: Result<Path<String>, PathRejection>) -> Result<Uuid> {
    let Path(raw) = path.map_err(|e| {
        ApiError::MalformedId(format!("the task id is not a UUID: {}", e.body_text()))
    })?;
    parse_task_id(&raw)
}

pub(crate) fn unknown(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no task {id}"))
}
