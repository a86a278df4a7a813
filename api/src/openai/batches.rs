//! OpenAI's Batch API: `POST /v1/batches`, retrieve, list, cancel. Creating a batch records it
//! as `validating` and answers at once; `batch_runner` does the rest on whichever API replica
//! takes it.

use std::{collections::HashMap, time::Duration};

use axum::{
    Extension, Json,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::StatusCode,
};
use genq_shared::db::{
    self, Scope,
    openai_batches::{BatchRow, NewBatch},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{OpenAiErrorBody, files::path_id, unix};
use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, Result},
    extract::JsonBody,
    routes::query_map,
};

/// The endpoints a batch's requests may go to.
pub const ENDPOINTS: [&str; 2] = ["/v1/completions", "/v1/chat/completions"];
/// The one completion window OpenAI offers.
const WINDOW: (&str, Duration) = ("24h", Duration::from_secs(24 * 3600));

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_batch, list_batches))
        .routes(routes!(retrieve_batch))
        .routes(routes!(cancel_batch))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "input_file_id": "file-…", "endpoint": "/v1/completions", "completion_window": "24h" }))]
pub struct CreateBatch {
    /// A file uploaded with purpose `batch`.
    pub input_file_id: String,
    /// `/v1/completions` or `/v1/chat/completions`; every line's `url` must be it.
    pub endpoint: String,
    /// `24h`.
    pub completion_window: String,
    /// Up to 16 pairs; keys up to 64 characters, values up to 512.
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub metadata: Option<Value>,
    /// Accepted and ignored: output files last until deleted.
    #[schema(value_type = Option<Value>)]
    #[allow(dead_code)]
    pub output_expires_after: Option<Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchObject {
    pub id: String,
    /// Always `batch`.
    pub object: &'static str,
    pub endpoint: String,
    #[schema(value_type = Option<Object>)]
    pub errors: Option<Value>,
    pub input_file_id: String,
    pub completion_window: String,
    /// `validating`, `failed`, `in_progress`, `finalizing`, `completed`, `expired`,
    /// `cancelling` or `cancelled`.
    pub status: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: i64,
    pub in_progress_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub request_counts: RequestCounts,
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequestCounts {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<BatchObject>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

/// The batch as OpenAI's `batch` object; its counts are those the runner last refreshed (about
/// every second while it runs).
pub fn object(row: BatchRow) -> BatchObject {
    let errors = row
        .errors
        .map(|e| serde_json::json!({ "object": "list", "data": e.0 }));
    BatchObject {
        id: row.id,
        object: "batch",
        endpoint: row.endpoint,
        errors,
        input_file_id: row.input_file_id,
        completion_window: row.completion_window,
        status: row.status,
        output_file_id: row.output_file_id,
        error_file_id: row.error_file_id,
        created_at: unix(row.created_at),
        in_progress_at: row.in_progress_at.map(unix),
        expires_at: Some(unix(row.expires_at)),
        finalizing_at: row.finalizing_at.map(unix),
        completed_at: row.completed_at.map(unix),
        failed_at: row.failed_at.map(unix),
        expired_at: row.expired_at.map(unix),
        cancelling_at: row.cancelling_at.map(unix),
        cancelled_at: row.cancelled_at.map(unix),
        request_counts: RequestCounts {
            total: row.total.into(),
            completed: row.completed.into(),
            failed: row.failed.into(),
        },
        metadata: row.metadata.map(|m| m.0),
    }
}

/// Create a batch
///
/// Starts a batch from an uploaded `batch` file: answered at once as `validating`; its requests
/// are then checked (`failed` with `errors` naming each bad line, recording nothing else) and run
/// as genq jobs (`in_progress`), and once every one is done its output and error files are
/// written (`finalizing`, then `completed`). After 24 hours what has not run is `expired`.
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "openai",
    request_body = CreateBatch,
    responses(
        (status = 200, description = "The batch, `validating`", body = BatchObject),
        (status = 400, body = OpenAiErrorBody, description = "A field is missing or not valid, \
            or the file's purpose is not `batch`"),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 404, body = OpenAiErrorBody, description = "No such input file (for this tenant)"),
        (status = 408, body = OpenAiErrorBody, description = "The body did not arrive in time"),
        (status = 413, body = OpenAiErrorBody, description = "The body is too large"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable, or \
            intake is paused"),
    )
)]
async fn create_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<CreateBatch>,
) -> Result<Json<BatchObject>> {
    if !ENDPOINTS.contains(&request.endpoint.as_str()) {
        return Err(ApiError::invalid(
            "endpoint",
            format!("endpoint must be one of {}", ENDPOINTS.join(", ")),
        ));
    }
    if request.completion_window != WINDOW.0 {
        return Err(ApiError::invalid(
            "completion_window",
            "completion_window must be 24h",
        ));
    }
    check_metadata(request.metadata.as_ref())?;
    // The caller's own tenant's file, even for an admin's key: the batch is that tenant's.
    let file = db::files::get(
        &state.db,
        &request.input_file_id,
        Scope::Tenant(&caller.tenant),
    )
    .await?
    .ok_or_else(|| super::files::no_file(&request.input_file_id))?;
    if file.purpose != "batch" {
        return Err(ApiError::invalid(
            "input_file_id",
            format!(
                "file '{}' has purpose '{}'; a batch needs a file uploaded with purpose batch",
                file.id, file.purpose
            ),
        ));
    }
    if db::control::intake_paused(&state.db).await? {
        return Err(ApiError::IntakePaused);
    }
    let id = db::openai_batches::new_id();
    let row = db::openai_batches::insert(
        &state.db,
        NewBatch {
            id: &id,
            tenant: &caller.tenant,
            api_key_id: caller.key_id(),
            endpoint: &request.endpoint,
            input_file_id: &file.id,
            completion_window: WINDOW.0,
            window: WINDOW.1,
            metadata: request.metadata.as_ref(),
        },
    )
    .await?;
    state.batch_runner.notify_one();
    tracing::info!(batch = %id, file = %file.id, "batch created");
    Ok(Json(object(row)))
}

fn check_metadata(metadata: Option<&Value>) -> Result<()> {
    let Some(metadata) = metadata.filter(|m| !m.is_null()) else {
        return Ok(());
    };
    let refuse = |message: &str| Err(ApiError::invalid("metadata", message.to_owned()));
    let Some(pairs) = metadata.as_object() else {
        return refuse("metadata must be an object of strings");
    };
    if pairs.len() > 16 {
        return refuse("metadata has more than 16 keys");
    }
    for (key, value) in pairs {
        match value.as_str() {
            Some(value) if key.chars().count() <= 64 && value.chars().count() <= 512 => {}
            Some(_) => {
                return refuse("metadata keys are at most 64 characters and values at most 512");
            }
            None => return refuse("metadata values must be strings"),
        }
    }
    Ok(())
}

/// Retrieve a batch
#[utoipa::path(
    get,
    path = "/v1/batches/{batch_id}",
    tag = "openai",
    params(("batch_id" = String, Path, description = "The batch's id")),
    responses(
        (status = 200, description = "The batch", body = BatchObject),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 404, body = OpenAiErrorBody, description = "No such batch (for this tenant)"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable"),
    )
)]
async fn retrieve_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    batch_id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<BatchObject>> {
    let id = path_id(batch_id)?;
    let row = find(&state, caller.scope(), &id).await?;
    Ok(Json(object(row)))
}

/// Cancel a batch
///
/// `cancelling` at once; its queued and running requests are cancelled, those finished keep
/// their results, and the batch ends `cancelled` with files of what it has.
#[utoipa::path(
    post,
    path = "/v1/batches/{batch_id}/cancel",
    tag = "openai",
    params(("batch_id" = String, Path, description = "The batch's id")),
    responses(
        (status = 200, description = "The batch, `cancelling` (or already final)", body = BatchObject),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 404, body = OpenAiErrorBody, description = "No such batch (for this tenant)"),
        (status = 409, body = OpenAiErrorBody, description = "The batch already ended"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable"),
    )
)]
async fn cancel_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    batch_id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<BatchObject>> {
    let id = path_id(batch_id)?;
    let status = db::openai_batches::request_cancel(&state.db, &id, caller.scope())
        .await?
        .ok_or_else(|| no_batch(&id))?;
    if matches!(
        status.as_str(),
        "completed" | "failed" | "expired" | "cancelled"
    ) {
        return Err(ApiError::OpenAi {
            status: StatusCode::CONFLICT,
            code: "batch_already_ended",
            param: None,
            message: format!("batch '{id}' is already {status}"),
        });
    }
    state.batch_runner.notify_one();
    let row = find(&state, caller.scope(), &id).await?;
    Ok(Json(object(row)))
}

/// List batches
#[utoipa::path(
    get,
    path = "/v1/batches",
    tag = "openai",
    params(
        ("limit" = Option<i64>, Query, nullable = false, minimum = 1, maximum = 100,
            description = "At most this many (default 20)"),
        ("after" = Option<String>, Query, nullable = false,
            description = "The last id of the previous page"),
    ),
    responses(
        (status = 200, description = "The caller's batches, newest first", body = BatchList),
        (status = 400, body = OpenAiErrorBody, description = "A query parameter is not valid"),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable"),
    )
)]
async fn list_batches(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<BatchList>> {
    let query = query_map(query)?;
    let limit = limit_of(&query, 20, 100)?;
    let after = query.get("after").map(String::as_str);
    let mut rows = db::openai_batches::list(&state.db, caller.scope(), limit + 1, after).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let data: Vec<BatchObject> = rows.into_iter().map(object).collect();
    Ok(Json(BatchList {
        object: "list",
        first_id: data.first().map(|b| b.id.clone()),
        last_id: data.last().map(|b| b.id.clone()),
        has_more,
        data,
    }))
}

/// `limit` of a list route: 1 to `max`, `default` when not given.
pub(super) fn limit_of(query: &HashMap<String, String>, default: i64, max: i64) -> Result<i64> {
    match query.get("limit") {
        None => Ok(default),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", format!("limit must be 1 to {max}"))),
    }
}

async fn find(state: &AppState, scope: Scope<'_>, id: &str) -> Result<BatchRow> {
    db::openai_batches::get(&state.db, id, scope)
        .await?
        .ok_or_else(|| no_batch(id))
}

fn no_batch(id: &str) -> ApiError {
    ApiError::NotFound(format!("no batch '{id}'"))
}
