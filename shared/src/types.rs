//! The JSON shapes of jobs and generations, shared by the API, the worker and genqctl.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    sqlx::Type,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sampling parameters of a job, defaults filled in, as stored with the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobParams {
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    /// `None` when the client gave none: the worker then derives one from the job id, so a job
    /// that runs twice still produces the same text.
    #[schema(required = true, format = "uint32")]
    pub seed: Option<u32>,
    pub stop: Vec<String>,
}

impl JobParams {
    pub const DEFAULT_MAX_TOKENS: u32 = 50;
    pub const DEFAULT_TEMPERATURE: f32 = 0.8;
    pub const DEFAULT_TOP_K: i32 = 40;
    pub const DEFAULT_TOP_P: f32 = 0.95;

    pub fn effective_seed(&self, job_id: Uuid) -> u32 {
        self.seed.unwrap_or_else(|| {
            let bytes = job_id.as_bytes();
            // The random tail of a v7 id (its head is a timestamp).
            u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]])
        })
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum FinishReason {
    Length,
    Stop,
}

/// One prompt's result inside a job view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResultItem {
    pub index: i32,
    pub prompt: String,
    pub generated_text: String,
    pub completion_tokens: i32,
    pub finish_reason: FinishReason,
    /// Answered from the result cache: an identical deterministic request ran within the TTL.
    pub cached: bool,
    /// The output filter replaced a card number, SSN or e-mail address in the text.
    pub redacted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    pub total: i32,
    pub completed: i32,
    pub failed: i32,
}

/// Every error code a job or an HTTP error answer carries. docs/api.md's error table lists each one
/// (a test checks that it does), so clients can rely on the set.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    strum::EnumIter,
    strum::IntoStaticStr,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
#[schema(description = "The `code` of an error answer, or of a failed or cancelled job's `error`.")]
pub enum ErrorCode {
    /// Job: its deadline (`timeout_secs`) passed.
    Timeout,
    /// Job: a prompt plus `max_tokens` does not fit the context.
    PromptTooLong,
    /// Job: its worker stopped renewing the lease (killed, cut off) and no attempts were left.
    WorkerLost,
    /// Job: its worker's inference engine stopped and no attempts were left.
    WorkerStopped,
    /// Job: llama.cpp failed to decode and no attempts were left.
    InferenceError,
    /// Job: cancelled on request (or purged by an operator).
    Cancelled,
    MalformedJson,
    MalformedId,
    InvalidField,
    InappropriateContent,
    NotFound,
    /// A route called with a method it does not serve.
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    /// No API key, an unknown one or a revoked one (one answer for all three).
    Unauthorized,
    /// A valid key without the right, e.g. a tenant key on an admin route.
    Forbidden,
    /// The key's requests per minute are spent; `Retry-After` says when to come back.
    RateLimited,
    /// The key's queued jobs or tokens per day are spent.
    QuotaExceeded,
    /// The client sent its request too slowly.
    RequestTimeout,
    IntakePaused,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job failed or was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// `GET /batch_result/{id}`. Every field is always sent; those that may not apply yet are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    pub task_id: Uuid,
    pub status: JobStatus,
    #[schema(required = true)]
    pub model: Option<String>,
    pub params: JobParams,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    pub counts: Counts,
    pub results: Vec<ResultItem>,
    #[schema(required = true)]
    pub error: Option<ErrorDetail>,
    /// The job's `callback_url` and how its delivery stands; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookView>,
    /// The model or alias asked for and the model the job went to (docs/models.md); absent on
    /// jobs recorded before genq served several models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteView>,
}

/// Where a job went: what it asked for, the model (and version) that runs it, and why it moved
/// to its fallback model if it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteView {
    /// The model or alias the request named (the default model's name when it named none).
    pub requested: String,
    /// The model whose queue the job is in; after a fallback, the fallback model.
    pub model: String,
    /// SHA-256 of the GGUF that ran it, once a worker claimed it.
    #[schema(required = true)]
    pub version: Option<String>,
    /// Why the job moved to its fallback model; null if it did not.
    #[schema(required = true)]
    pub fallback_reason: Option<String>,
}

/// A job's webhook: where it goes and every attempt so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub url: String,
    pub status: WebhookStatus,
    /// When the next attempt is due, while one is owed.
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub delivered_at: Option<DateTime<Utc>>,
    pub attempts: Vec<WebhookAttempt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// The job is not final yet.
    Waiting,
    /// Owed: not yet attempted, or retrying after a failed attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed for `GENQ_WEBHOOK_RETRY_FOR_SECS` (a day by default).
    Failed,
}

/// One call of the receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookAttempt {
    pub attempt: i32,
    pub attempted_at: DateTime<Utc>,
    /// The receiver's status; none when it did not answer.
    #[schema(required = true)]
    pub status_code: Option<i32>,
    /// Why the attempt failed, when it did.
    #[schema(required = true)]
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// One stored generation, in the record shape Python GPT-2 services use (`/generate`, `/history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct GenerationRecord {
    pub id: Uuid,
    pub prompt: String,
    pub generated_text: String,
    pub model_name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryPage {
    pub items: Vec<GenerationRecord>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// `202` answer of `POST /batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    pub task_id: Uuid,
    pub status: JobStatus,
}

/// Queue-wide figures for `genqctl queue stats` and `GET /admin/queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueStats {
    pub queued: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub live_workers: i64,
    pub intake_paused: bool,
}

/// A live worker as the dashboard (`GET /admin/overview`) shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WorkerOverview {
    pub name: String,
    pub hostname: String,
    pub model: String,
    pub slots: i32,
    /// As of its last heartbeat (every 5 s).
    pub slots_busy: i32,
    /// Tokens sampled since it started, as of its last heartbeat.
    pub generated_tokens: i64,
    pub jobs_running: i64,
    pub heartbeat_age_secs: f64,
}

/// One line of `genqctl jobs list`.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct JobSummary {
    pub id: Uuid,
    pub status: JobStatus,
    pub prompt_count: i32,
    pub attempt: i32,
    pub error_code: Option<ErrorCode>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    use strum::IntoEnumIterator;

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in ErrorCode::iter() {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        assert_eq!(ErrorCode::PromptTooLong.as_str(), "prompt_too_long");
    }

    #[test]
    fn the_api_doc_lists_every_error_code() {
        let doc = include_str!("../../docs/api.md");
        let missing: Vec<_> = ErrorCode::iter()
            .filter(|c| !doc.contains(&format!("| `{}` |", c.as_str())))
            .collect();
        assert!(missing.is_empty(), "docs/api.md lacks {missing:?}");
    }
}
