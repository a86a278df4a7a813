//! OpenAI's API under `/v1`: completions, chat completions, models, files and batches, for
//! clients written against OpenAI (the `openai` SDKs, LangChain, ...). Same keys, tenants, limits,
//! moderation and record as genq's own routes: each request runs as genq jobs.
//!
//! # Layout
//! - `request`: the completion bodies, checked and planned as jobs; `chat`: messages to a prompt.
//! - `completions`: the two generation routes; `stream`: their Server-Sent Events.
//! - `answer`: the answer objects built from stored results (routes and batch output alike).
//! - `models`, `files`, `batches`: the other routes; `batch_runner`: moves batches through their
//!   states on every API replica.
//! - [`in_openai_shape`]: every error under `/v1` in OpenAI's shape and status codes.

mod answer;
pub mod batch_runner;
mod batches;
pub mod chat;
mod completions;
mod files;
mod models;
mod request;
mod stream;

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(completions::router())
        .merge(models::router())
        .merge(files::router())
        .merge(batches::router())
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(status: StatusCode, code: &str, message: &str, param: Option<&str>) -> Value {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 if code == "quota_exceeded" => "insufficient_quota",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
}

/// Middleware: answers under `/v1` that are genq errors become OpenAI's: its body shape, and 400
/// where genq says 422 (the SDKs raise `BadRequestError` for what OpenAI refuses). An invalid
/// field's name becomes `param`.
pub async fn in_openai_shape(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Error bodies are small; one that is not is no genq error and is passed on as it was.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let error = &value["error"];
    if error.get("type").is_some() || !error.is_object() {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let code = error["code"].as_str().unwrap_or("internal");
    let code = if status == StatusCode::UNAUTHORIZED {
        "invalid_api_key"
    } else {
        code
    };
    let message = error["message"].as_str().unwrap_or_default();
    let body = error_body(status, code, message, error["field"].as_str());
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// The error body every `/v1` route answers with.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OpenAiErrorBody {
    error: OpenAiError,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OpenAiError {
    message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`, `rate_limit_error`,
    /// `insufficient_quota`, `server_error`, ...
    #[serde(rename = "type")]
    kind: String,
    /// The request field at fault, if one is.
    param: Option<String>,
    code: Option<String>,
}

/// Seconds since the epoch, as OpenAI's objects give times.
fn unix(time: chrono::DateTime<chrono::Utc>) -> i64 {
    time.timestamp()
}
