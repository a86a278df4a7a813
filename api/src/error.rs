//! The API's one error type. Every error answers `{"error": {"code", "message"}}`; client errors
//! name what was wrong, server-side causes are logged and answered with a generic message.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use genq_shared::types::ErrorCode;
use serde_json::json;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("{message}")]
    InvalidField { field: String, message: String },
    #[error("prompts[{index}] contains inappropriate content")]
    InappropriateContent { index: usize },
    #[error("{0}")]
    MalformedId(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error(
        "a valid API key is required: send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
    )]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("this key's rate limit is spent; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error(
        "this key may submit {per_minute} jobs a minute, and too few are left for this request; \
         retry in {retry_after_secs} s"
    )]
    JobRateLimited {
        per_minute: u32,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("the request body did not arrive within {secs} s")]
    RequestTimeout { secs: u64 },
    #[error("intake is paused: the queue accepts no new jobs for now")]
    IntakePaused,
    #[error("{0}")]
    Unavailable(String),
    #[error("the job failed: {message}")]
    JobFailed { code: ErrorCode, message: String },
    /// An error of the OpenAI routes with a code of OpenAI's own (`model_not_found`, `timeout`),
    /// answered in OpenAI's error shape.
    #[error("{message}")]
    OpenAi {
        status: StatusCode,
        code: &'static str,
        param: Option<&'static str>,
        message: String,
    },
    /// One job of a bulk request (`POST /batches`) was refused: its index and why.
    #[error("jobs[{index}]: {error}")]
    InJob { index: usize, error: Box<ApiError> },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Seconds a client is told to wait before retrying a paused or unavailable service.
const RETRY_AFTER_SECS: &str = "30";

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, ErrorCode::MalformedJson),
            ApiError::InvalidField { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidField)
            }
            ApiError::InappropriateContent { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::InappropriateContent)
            }
            ApiError::MalformedId(_) => (StatusCode::BAD_REQUEST, ErrorCode::MalformedId),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed)
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::RateLimited { .. } | ApiError::JobRateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited)
            }
            ApiError::QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::QuotaExceeded),
            ApiError::RequestTimeout { .. } => {
                (StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout)
            }
            ApiError::IntakePaused => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::IntakePaused),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            // The worker, not the client, failed: a gateway error carrying the job's own reason.
            ApiError::JobFailed { code, .. } => (StatusCode::BAD_GATEWAY, *code),
            ApiError::InJob { error, .. } => error.status_and_code(),
            ApiError::OpenAi { status, .. } => (*status, ErrorCode::Internal),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        genq_shared::metrics::postgres_error();
        if genq_shared::db::is_unavailable(&e) {
            tracing::warn!(error = %e, "PostgreSQL unavailable");
            ApiError::Unavailable("the database is unavailable".into())
        } else {
            ApiError::Internal(e.into())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::OpenAi {
            status,
            code,
            param,
            message,
        } = &self
        {
            let body = crate::openai::error_body(*status, code, message, *param);
            return (*status, Json(body)).into_response();
        }
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = json!({ "error": { "code": code, "message": message } });
        match &self {
            ApiError::InvalidField { field, .. } => body["error"]["field"] = json!(field),
            ApiError::InJob { index, error } => {
                body["error"]["job_index"] = json!(index);
                if let ApiError::InvalidField { field, .. } = error.as_ref() {
                    let path = match field.as_str() {
                        "" => format!("jobs[{index}]"),
                        field => format!("jobs[{index}].{field}"),
                    };
                    body["error"]["field"] = json!(path);
                }
            }
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="genq""#),
                );
            }
            ApiError::RateLimited { retry_after_secs }
            | ApiError::JobRateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}
