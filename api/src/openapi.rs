//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`. The operations come
//! from the `#[utoipa::path]` attributes on the handlers, registered with their routes
//! (`routes::api_router`), the shapes from the shared types; what only exists as `json!` in the
//! code (error bodies, health answers) is described here.
//!
//! # Layout
//! - [`ApiDoc`]: the document's frame: schemas, security schemes, tags (the router adds the
//!   operations).
//! - Error answers shared by many routes, as reusable responses ([`Unauthorized`],
//!   [`TooManyRequests`], [`Unavailable`], ...), and the shapes the code builds with `json!`
//!   ([`ErrorBody`], [`HealthStatus`], ...).
//! - [`document`]: the document as JSON, with what utoipa cannot say added.

// The structs below are never built: error.rs and the handlers build these bodies with `json!`,
// and the structs only describe them to utoipa.
#![allow(dead_code)]

use genq_shared::types::{
    Accepted, Counts, ErrorCode, ErrorDetail, FinishReason, GenerationRecord, HistoryPage,
    JobParams, JobStatus, JobView, QueueStats, ResultItem,
};
use serde_json::Value;
use utoipa::{
    Modify, OpenApi, ToResponse, ToSchema,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::validate::{BatchRequest, Stop};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "genq",
        description = "Batch text generation: submit prompts, then wait for the results (a long \
            poll, `?wait=`), follow them as Server-Sent Events, or poll.\n\n\
            Every route but `/health`, `/ready`, `/metrics`, `/docs`, `/openapi.json` and the \
            dashboard's page `/ui` needs an API key \
            (`genqctl keys create`), sent as `Authorization: Bearer <key>` or \
            `X-API-Key: <key>`. A key with a rate limit gets \
            `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` on every answer. \
            Errors are `{\"error\": {\"code\", \"message\", \"field\"?}}`.",
        license(name = "MIT"),
    ),
    components(
        schemas(
            Accepted, BatchRequest, Counts, ErrorBody, ErrorCode, ErrorDetail, ErrorObject,
            FinishReason, GenerationRecord, HealthStatus, HistoryPage, IntakeState, JobParams,
            JobStatus, JobView, QueueStats, ReadyStatus, ResultItem, Stop,
        ),
        responses(
            AcceptedJob, Unauthorized, Forbidden, RequestTimeout, PayloadTooLarge,
            TooManyRequests, Unavailable, Internal,
        ),
    ),
    modifiers(&SecuritySchemes),
    // Either scheme will do; /health and /ready override this with an empty requirement.
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "jobs", description = "Batches of prompts: submit, poll, cancel."),
        (name = "generations",
            description = "Stored generations: wait for a job's, list past ones."),
        (name = "openai", description = "OpenAI's API: completions, chat, models, files, \
            batches; errors in OpenAI's shape (docs/openai.md)."),
        (name = "admin", description = "Operators only (an admin key)."),
        (name = "health", description = "Liveness and readiness; no key needed."),
    )
)]
pub struct ApiDoc;

/// The names the operations' `security` requirements use.
pub const BEARER: &str = "bearer";
pub const API_KEY: &str = "api_key";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer <key>`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The same API key in its own header.",
            ))),
        );
    }
}

/// Response headers that every answer of the response carries. OpenAPI calls these `required`;
/// utoipa 5's `Header` has no such field, so [`document`] adds it.
const ALWAYS_SENT: &[(&str, &str)] = &[
    ("AcceptedJob", "Location"),
    ("Unauthorized", "WWW-Authenticate"),
    ("Unavailable", "Retry-After"),
];

/// The document as served: `api`, the router's, with what utoipa cannot say added.
pub fn document(api: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(api).expect("the OpenAPI document is JSON");
    for (response, header) in ALWAYS_SENT {
        let pointer = format!("/components/responses/{response}/headers/{header}");
        let header = doc
            .pointer_mut(&pointer)
            .unwrap_or_else(|| panic!("the document has no {pointer}"));
        header["required"] = Value::Bool(true);
    }
    doc
}

/// Every error answer. Its `code` says which of the situations a status stands for.
#[derive(ToSchema)]
#[schema(examples(json!({ "error": {
    "code": "invalid_field",
    "message": "max_tokens must be between 1 and 512",
    "field": "max_tokens"
}})))]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(ToSchema)]
pub struct ErrorObject {
    pub code: ErrorCode,
    /// For people; server-side causes are logged, never sent.
    pub message: String,
    /// The request field at fault: only with `invalid_field`, and never `null`.
    #[schema(value_type = String, required = false)]
    pub field: Option<String>,
    /// `POST /batches` only: the index in `jobs` of the job refused (`field` names it too, as
    /// `jobs[3].max_tokens`); never `null`.
    #[schema(value_type = u64, required = false)]
    pub job_index: Option<usize>,
}

/// `GET /health`.
#[derive(ToSchema)]
pub struct HealthStatus {
    #[schema(inline)]
    pub status: OkStatus,
    /// The model the API checks prompts against (`GENQ_MODEL`); `null` without one.
    #[schema(required = true)]
    pub model: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum OkStatus {
    Ok,
}

/// `GET /ready` when PostgreSQL and Redis both answer.
#[derive(ToSchema)]
pub struct ReadyStatus {
    #[schema(inline)]
    pub status: ReadyState,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ReadyState {
    Ready,
}

/// Whether the queue accepts new jobs after the call.
#[derive(ToSchema)]
pub struct IntakeState {
    pub intake_paused: bool,
}

/// `unauthorized`: no API key, an unknown one or a revoked one (one answer for all three).
#[derive(ToResponse)]
#[response(headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"genq\"`")))]
pub struct Unauthorized(ErrorBody);

/// `forbidden`: a tenant key on an admin route.
#[derive(ToResponse)]
pub struct Forbidden(ErrorBody);

/// `request_timeout`: the request body did not arrive within `GENQ_REQUEST_BODY_TIMEOUT_SECS`.
#[derive(ToResponse)]
pub struct RequestTimeout(ErrorBody);

/// `payload_too_large`: a body over 4 MiB (64 MiB on `POST /batches`).
#[derive(ToResponse)]
pub struct PayloadTooLarge(ErrorBody);

/// `rate_limited`: the key's requests per minute are spent (with `Retry-After` and `RateLimit-*`);
/// on `POST /batch`, `POST /batches` and `POST /generate` also `quota_exceeded`: the key's queued
/// jobs or tokens per day are spent.
#[derive(ToResponse)]
#[response(headers(
    ("Retry-After" = u64,
        description = "Seconds until a request is allowed again (`rate_limited`)"),
    ("RateLimit-Limit" = u32, description = "Requests per minute of the key"),
    ("RateLimit-Remaining" = u32, description = "Requests left in the bucket"),
    ("RateLimit-Reset" = u64, description = "Seconds until the bucket is full again"),
))]
pub struct TooManyRequests(ErrorBody);

/// `unavailable`: PostgreSQL does not answer (on `/ready`: PostgreSQL or Redis, named in the
/// message); on `POST /batch` and `POST /generate` also `intake_paused`: an operator paused intake.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds to wait before retrying (30)")))]
pub struct Unavailable(ErrorBody);

/// `internal`: a bug; the cause is logged, never sent.
#[derive(ToResponse)]
pub struct Internal(ErrorBody);

/// `202`: the job is recorded and queued; poll `Location`.
#[derive(ToResponse)]
#[response(headers(("Location" = String, description = "`/batch_result/<task_id>`")))]
pub struct AcceptedJob(Accepted);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_its_required_headers() {
        let doc = document(ApiDoc::openapi());
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        for (response, header) in ALWAYS_SENT {
            assert_eq!(
                doc["components"]["responses"][response]["headers"][header]["required"],
                true
            );
        }
    }
}
