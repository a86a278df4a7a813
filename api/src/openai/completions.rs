//! `POST /v1/completions` and `POST /v1/chat/completions`: the request becomes genq jobs (one per
//! choice), submitted like `POST /batch`'s, then the route waits for them and answers OpenAI's
//! object, or streams it (see `stream`).

use std::time::{Duration, Instant};

use axum::{
    Extension, Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use genq_shared::queue::Priority;
use genq_shared::{db, queue};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    OpenAiErrorBody, answer,
    chat::{self, ChatTemplate},
    models::check_model,
    request::{ChatRequest, CompletionRequest, Plan, openai_field, plan_chat, plan_completion},
    stream,
};
use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, Result},
    extract::JsonBody,
    routes::batch::submit,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_completion))
        .routes(routes!(create_chat_completion))
}

/// Create a completion
///
/// OpenAI's `POST /v1/completions`, run as genq jobs (one per choice): answers the
/// `text_completion` object once they finish, or streams it with `stream: true` (`data:` chunks,
/// then `data: [DONE]`). See docs/openai.md for the fields genq supports, ignores and refuses.
#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "openai",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The `text_completion` object (JSON), or with `stream` its \
            chunks as `text/event-stream`",
            content((serde_json::Value = "application/json"), (String = "text/event-stream"))),
        (status = 400, body = OpenAiErrorBody, description = "A field is malformed, out of range \
            or not supported (`param` names it), or a prompt is refused"),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 404, body = OpenAiErrorBody, description = "`model_not_found`"),
        (status = 408, body = OpenAiErrorBody, description = "The body did not arrive in time"),
        (status = 409, body = OpenAiErrorBody, description = "The request's job was cancelled"),
        (status = 413, body = OpenAiErrorBody, description = "The body is too large"),
        (status = 429, body = OpenAiErrorBody, description = "A rate limit or quota is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 502, body = OpenAiErrorBody, description = "The job failed at the worker"),
        (status = 503, body = OpenAiErrorBody, description = "Unavailable or shutting down"),
        (status = 504, body = OpenAiErrorBody, description = "`timeout`: no answer within \
            `GENQ_GENERATE_TIMEOUT_SECS`; the request was cancelled"),
    )
)]
async fn create_completion(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<CompletionRequest>,
) -> Result<Response> {
    check_model(&state, &request.model).await?;
    let plan = plan_completion(request, state.limits.max_prompts)?;
    run(state, caller, plan).await
}

/// Create a chat completion
///
/// OpenAI's `POST /v1/chat/completions`: the messages become one prompt through the model's chat
/// template (or genq's plain template, docs/openai.md), then as `/v1/completions`.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The `chat.completion` object (JSON), or with `stream` its \
            `chat.completion.chunk`s as `text/event-stream`",
            content((serde_json::Value = "application/json"), (String = "text/event-stream"))),
        (status = 400, body = OpenAiErrorBody, description = "A field is malformed, out of range \
            or not supported (`param` names it), or a message is refused"),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 404, body = OpenAiErrorBody, description = "`model_not_found`"),
        (status = 408, body = OpenAiErrorBody, description = "The body did not arrive in time"),
        (status = 409, body = OpenAiErrorBody, description = "The request's job was cancelled"),
        (status = 413, body = OpenAiErrorBody, description = "The body is too large"),
        (status = 429, body = OpenAiErrorBody, description = "A rate limit or quota is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 502, body = OpenAiErrorBody, description = "The job failed at the worker"),
        (status = 503, body = OpenAiErrorBody, description = "Unavailable or shutting down"),
        (status = 504, body = OpenAiErrorBody, description = "`timeout`: no answer within \
            `GENQ_GENERATE_TIMEOUT_SECS`; the request was cancelled"),
    )
)]
async fn create_chat_completion(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<ChatRequest>,
) -> Result<Response> {
    check_model(&state, &request.model).await?;
    let plan = plan_chat_request(&state, request)?;
    run(state, caller, plan).await
}

/// A chat request's plan: its messages rendered with the model's template.
pub(super) fn plan_chat_request(state: &AppState, request: ChatRequest) -> Result<Plan> {
    let template: Option<&ChatTemplate> = state.chat_template.as_deref();
    let (prompt, stops) = chat::render(&request.messages, template)?;
    plan_chat(request, prompt, &stops)
}

/// Submits the plan's jobs and answers, or streams, their outcome.
async fn run(state: AppState, caller: Caller, plan: Plan) -> Result<Response> {
    let ids = submit_all(&state, &caller, plan.jobs).await?;
    if plan.stream {
        return Ok(stream::respond(
            state,
            caller,
            plan.shape,
            ids,
            plan.include_usage,
        ));
    }
    let started = Instant::now();
    if !wait_final(&state, &caller, &ids, state.generate_wait).await? {
        cancel(&state, &ids).await;
        return Err(timed_out(&state, started));
    }
    let outcomes = db::generations::outcomes(&state.db, &ids).await?;
    let results = db::generations::of_jobs(&state.db, &ids).await?;
    let created = chrono::Utc::now().timestamp();
    match answer::body(&plan.shape, created, &ids, &outcomes, &results) {
        Ok(body) => Ok(Json(body).into_response()),
        Err(failure) => Err(ApiError::OpenAi {
            status: StatusCode::from_u16(failure.status).unwrap_or(StatusCode::BAD_GATEWAY),
            code: static_code(&failure.code),
            param: (failure.status == 400).then_some("prompt"),
            message: failure.message,
        }),
    }
}

/// Submits each job as `POST /batch` would; if one is refused, those already submitted are
/// cancelled and the refusal answered.
pub(super) async fn submit_all(
    state: &AppState,
    caller: &Caller,
    jobs: Vec<crate::validate::BatchRequest>,
) -> Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(jobs.len());
    for job in jobs {
        match submit(state, caller, job, None, Priority::Interactive).await {
            Ok(id) => ids.push(id),
            Err(error) => {
                cancel(state, &ids).await;
                return Err(openai_field(error));
            }
        }
    }
    Ok(ids)
}

/// Waits until every job is final (true) or `limit` passes (false).
pub(super) async fn wait_final(
    state: &AppState,
    caller: &Caller,
    ids: &[Uuid],
    limit: Duration,
) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + limit;
    for &id in ids {
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let status = tokio::select! {
                status = state.watch.wait(id, left) => status?,
                () = state.stopping.cancelled() => {
                    cancel(state, ids).await;
                    return Err(ApiError::Unavailable(
                        "this API replica is shutting down; the request was cancelled, retry it".into(),
                    ));
                }
                () = state.key_cache.until_revoked(&state.db, caller.key_id()) => {
                    cancel(state, ids).await;
                    return Err(ApiError::Unauthorized);
                }
            };
            match status {
                Some(status) if status.is_final() => break,
                Some(_) if left.is_zero() => return Ok(false),
                Some(_) => {}
                None => return Err(ApiError::NotFound(format!("job {id} was deleted"))),
            }
        }
    }
    Ok(true)
}

/// Cancels whichever of the jobs are not final (no one waits for them any more), best effort.
pub(super) async fn cancel(state: &AppState, ids: &[Uuid]) {
    for &id in ids {
        match db::jobs::cancel(&state.db, id, db::Scope::All).await {
            Ok(db::jobs::CancelOutcome::Cancelled) => {
                let mut redis = state.redis.clone();
                if let Err(e) = queue::remove(&state.db, &mut redis, &state.queue_name, &[id]).await
                {
                    tracing::debug!(error = %e, %id, "a cancelled job's task stays in Redis until a worker skips it");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, %id, "could not cancel an abandoned job"),
        }
    }
}

fn timed_out(state: &AppState, started: Instant) -> ApiError {
    ApiError::OpenAi {
        status: StatusCode::GATEWAY_TIMEOUT,
        code: "timeout",
        param: None,
        message: format!(
            "no answer within {} s (GENQ_GENERATE_TIMEOUT_SECS; waited {:.1} s); the request was \
             cancelled: retry later, or use the Batch API",
            state.generate_wait.as_secs(),
            started.elapsed().as_secs_f64()
        ),
    }
}

/// The job error codes a failed request answers with.
fn static_code(code: &str) -> &'static str {
    match code {
        "prompt_too_long" => "context_length_exceeded",
        "timeout" => "timeout",
        "cancelled" => "cancelled",
        "worker_lost" => "worker_lost",
        "worker_stopped" => "worker_stopped",
        "inference_error" => "inference_error",
        _ => "internal",
    }
}
