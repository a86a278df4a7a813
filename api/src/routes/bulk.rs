//! Bulk intake: up to [`MAX_BULK_JOBS`] jobs in one request, recorded in one transaction and
//! dispatched in pipelined Redis writes. For batch users whose submissions outrun one request per
//! job; each job is then read, waited on and cancelled like any other.

use axum::{
    Extension, Json,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use genq_shared::{
    db::{
        self,
        jobs::{JobRoute, NewJob, Owner},
    },
    metrics::names,
    queue::Priority,
    types::JobStatus,
};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::openapi::{
    ErrorBody, Internal, PayloadTooLarge, RequestTimeout, TooManyRequests, Unauthorized,
    Unavailable,
};
use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, Result},
    extract::{BodyLimit, JsonBody},
    routes::batch::{check_quotas, check_webhook_secret},
    routing::{dispatch_recorded, lock_models, route_request},
    validate::{BatchRequest, validate_all},
};

/// Most jobs in one `POST /batches`.
pub const MAX_BULK_JOBS: usize = 10_000;
/// Largest `POST /batches` body: 10,000 jobs of a few KB each.
pub const BULK_BODY_LIMIT: usize = 64 * 1024 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit_batches))
        .route_layer(DefaultBodyLimit::max(BULK_BODY_LIMIT))
        .route_layer(Extension(BodyLimit(BULK_BODY_LIMIT)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "jobs": [
    { "prompts": ["Once upon a time"], "max_tokens": 16 },
    { "prompts": ["The sea", "The sky"], "temperature": 0 }
] }))]
pub struct BulkRequest {
    /// Each a `POST /batch` body.
    #[schema(min_items = 1, max_items = 10000)]
    pub jobs: Vec<BatchRequest>,
}

/// `202` answer of `POST /batches`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptedJobs {
    /// One per job, in the order of `jobs`.
    pub task_ids: Vec<Uuid>,
    pub status: JobStatus,
}

/// Submit many batches
///
/// Validates every job, records them all in one transaction (or none: the first bad job is
/// refused with its index) and queues them; answers their task ids in order.
#[utoipa::path(
    post,
    path = "/batches",
    tag = "jobs",
    request_body = BulkRequest,
    responses(
        (status = 202, description = "Every job recorded and queued", body = AcceptedJobs),
        (status = 400, body = ErrorBody,
            description = "`malformed_json`: the body is not JSON; `inappropriate_content`: a \
                prompt has a forbidden word (`job_index` names the job)"),
        (status = 401, response = Unauthorized),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 422, body = ErrorBody,
            description = "`invalid_field`: `jobs` is empty or too long, a job's field is \
                missing, unknown or out of range (`field` is `jobs[i].name`, `job_index` is i), \
                or an `Idempotency-Key` was sent"),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn submit_batches(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    request: std::result::Result<JsonBody<BulkRequest>, ApiError>,
) -> Result<Response> {
    let JsonBody(request) = request.map_err(name_the_job)?;
    if headers.contains_key("idempotency-key") {
        // A retried bulk request cannot be told from a new one without it: say so rather than
        // record the jobs twice.
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "POST /batches does not take an Idempotency-Key; send jobs that must not run twice \
             through POST /batch",
        ));
    }
    let count = request.jobs.len();
    if count == 0 || count > MAX_BULK_JOBS {
        return Err(ApiError::invalid(
            "jobs",
            format!("give between 1 and {MAX_BULK_JOBS} jobs; got {count}"),
        ));
    }
    let jobs = validate_all(request.jobs, state.limits.clone()).await?;
    if db::control::intake_paused(&state.db).await? {
        return Err(ApiError::IntakePaused);
    }
    if let Some(index) = jobs.iter().position(|j| j.callback_url.is_some()) {
        check_webhook_secret(&state, &caller)
            .await
            .map_err(|error| ApiError::InJob {
                index,
                error: Box::new(error),
            })?;
    }
    let mut routes = Vec::with_capacity(jobs.len());
    for (index, job) in jobs.iter().enumerate() {
        let route = route_request(&state, &caller, job.model.as_deref(), job.user.as_deref())
            .await
            .map_err(|refusal| ApiError::InJob {
                index,
                error: Box::new(refusal.into()),
            })?;
        routes.push(route);
    }
    let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
    let new_jobs: Vec<NewJob> = jobs
        .iter()
        .zip(&ids)
        .zip(&routes)
        .map(|((job, &id), route)| NewJob {
            id,
            prompts: &job.prompts,
            params: &job.params,
            timeout: job.timeout,
            callback_url: job.callback_url.as_deref(),
            route: JobRoute::of(route, Priority::Batch),
        })
        .collect();
    let owner = Owner {
        tenant: &caller.tenant,
        key_id: caller.key.as_ref().map(|k| k.id),
    };
    let budget = jobs.iter().map(|j| j.token_budget()).sum();
    let mut tx = state.db.begin().await?;
    let models: Vec<&str> = routes.iter().map(|r| r.model.as_str()).collect();
    lock_models(&mut tx, &models).await?;
    db::jobs::insert_many(&mut *tx, &new_jobs, state.max_attempts, owner, None).await?;
    if let Some(refusal) = check_quotas(&mut tx, &caller, budget, "these jobs need").await? {
        tx.rollback().await?;
        return Err(refusal);
    }
    // Last, so that only jobs that are accepted are charged.
    if let Err(refusal) = crate::rate_limit::charge_jobs(&state, &caller, count).await {
        tx.rollback().await?;
        return Err(refusal);
    }
    tx.commit().await?;
    metrics::counter!(names::JOBS_SUBMITTED).increment(count as u64);
    let dispatches = ids
        .iter()
        .zip(routes)
        .map(|(&id, route)| (id, route.model, Priority::Batch));
    dispatch_recorded(&state, &caller.tenant, dispatches).await;
    let body = AcceptedJobs {
        task_ids: ids,
        status: JobStatus::Queued,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// A job whose field did not deserialize (`jobs[3].max_tokens` not a number) is refused like one
/// that did not validate: with its `job_index`.
fn name_the_job(error: ApiError) -> ApiError {
    let ApiError::InvalidField { field, message } = &error else {
        return error;
    };
    // `jobs[3].max_tokens`, or `jobs[3]` when the job itself is not an object.
    let in_job = field
        .strip_prefix("jobs[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(index, rest)| Some((index.parse().ok()?, rest.trim_start_matches('.'))));
    match in_job {
        Some((index, field)) => ApiError::InJob {
            index,
            error: Box::new(ApiError::invalid(field, message.clone())),
        },
        None => error,
    }
}
