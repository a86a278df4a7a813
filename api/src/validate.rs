//! Checking a batch request before anything is stored: sizes, ranges, forbidden words, and
//! whether the longest prompt plus max_tokens fits the model's context.

use std::sync::Arc;

use genq_model::ModelFile;
use genq_shared::types::JobParams;
use serde::Deserialize;

use crate::{
    error::{ApiError, Result},
    moderation::ForbiddenWords,
};

/// Longest stop string and most stop strings a request may give.
const MAX_STOP_LEN: usize = 64;
pub(crate) const MAX_STOPS: usize = 4;
/// Longest `user` a request may give.
const MAX_USER_CHARS: usize = 256;

/// `POST /batch` and `POST /generate` body. The bounds in the OpenAPI schema are the defaults
/// of the limits (`GENQ_MAX_PROMPTS` and the like); a value past them is a 422 naming the field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(
    json!({ "prompts": ["Once upon a time"], "max_tokens": 16, "seed": 7 }),
    json!({ "prompts": ["The sea", "The sky"], "temperature": 0, "stop": ["\n\n"] })
))]
pub struct BatchRequest {
    /// 1 to 256 prompts (`GENQ_MAX_PROMPTS`), each not blank, without NUL, of at most 16,384
    /// characters (`GENQ_MAX_PROMPT_CHARS`).
    #[schema(min_items = 1, max_items = 256)]
    pub prompts: Vec<String>,
    /// Tokens to generate per prompt (default 50); at most 512 (`GENQ_MAX_TOKENS_LIMIT`), what the
    /// context leaves after the longest prompt, and 32,768 for the whole job.
    #[schema(minimum = 1, maximum = 512)]
    pub max_tokens: Option<u32>,
    /// 0 is greedy decoding (default 0.8).
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    /// 0 turns top-k off (default 40).
    #[schema(minimum = 0)]
    pub top_k: Option<i32>,
    /// Nucleus sampling (default 0.95).
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f32>,
    /// Same seed, prompt, parameters and model, same text; without one it is derived from the
    /// task id.
    #[schema(format = "uint32", minimum = 0, maximum = 4_294_967_295_u64)]
    pub seed: Option<u32>,
    pub stop: Option<Stop>,
    /// Seconds from submission until the job ends failed with code `timeout` (default 600, at
    /// most 86,400: `GENQ_JOB_TIMEOUT_SECS`, `GENQ_JOB_TIMEOUT_MAX_SECS`).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_secs: Option<u64>,
    /// Called once the job is final: a signed `POST` of the job as `GET /batch_result` answers
    /// it, retried until the receiver answers 2xx (see docs/api.md, Webhooks). http or https, at
    /// most 2,048 bytes, no credentials, not a private or loopback address.
    #[schema(min_length = 1, max_length = 2048)]
    pub callback_url: Option<String>,
    /// The model or alias to run on (`GET /v1/models` lists them); the default model without.
    #[schema(min_length = 1, max_length = 128)]
    pub model: Option<String>,
    /// Who the request is for, as OpenAI's `user`: an alias keeps each user on one of its
    /// models (else it keeps the API key on one). At most 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    pub user: Option<String>,
}

/// A stop string or a list of them, as OpenAI's API accepts: at most 4 non-empty strings of at
/// most 64 bytes each; generation stops before the first one that appears.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug)]
pub struct Limits {
    pub max_prompts: usize,
    /// Longest prompt, in characters: bounds the work of checking and tokenizing one.
    pub max_prompt_chars: usize,
    pub max_tokens: u32,
    /// Most tokens one job may generate (prompts x max_tokens).
    pub max_job_tokens: u64,
    pub forbidden_words: ForbiddenWords,
    /// The model's vocabulary and each sequence's context, when the API was given the model.
    pub context: Option<(Arc<ModelFile>, u32)>,
    pub default_timeout_secs: u64,
    pub max_timeout_secs: u64,
    /// Whether callback URLs may point to private and loopback addresses.
    pub webhook_allow_private: bool,
}

pub struct ValidJob {
    pub prompts: Vec<String>,
    pub params: JobParams,
    pub callback_url: Option<String>,
    pub timeout: std::time::Duration,
    pub model: Option<String>,
    pub user: Option<String>,
}

impl ValidJob {
    /// The most tokens the job can generate: what a key's tokens-per-day quota is charged.
    pub fn token_budget(&self) -> u64 {
        self.prompts.len() as u64 * u64::from(self.params.max_tokens)
    }
}

pub async fn validate(request: BatchRequest, limits: Arc<Limits>) -> Result<ValidJob> {
    // Normalizing and tokenizing megabytes of prompts is CPU work: keep it off the async runtime.
    tokio::task::spawn_blocking(move || check(request, &limits))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
}

/// Checks many jobs in one blocking task (bulk intake); the first bad one is refused with its
/// index (see [`ApiError::InJob`]).
pub async fn validate_all(
    requests: Vec<BatchRequest>,
    limits: Arc<Limits>,
) -> Result<Vec<ValidJob>> {
    tokio::task::spawn_blocking(move || {
        requests
            .into_iter()
            .enumerate()
            .map(|(index, request)| {
                check(request, &limits).map_err(|error| ApiError::InJob {
                    index,
                    error: Box::new(error),
                })
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
}

/// Checks many jobs in one blocking task, each on its own (a batch file's requests).
pub async fn validate_each(
    requests: Vec<BatchRequest>,
    limits: Arc<Limits>,
) -> Result<Vec<Result<ValidJob>>> {
    tokio::task::spawn_blocking(move || {
        requests
            .into_iter()
            .map(|request| check(request, &limits))
            .collect()
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))
}

fn check(request: BatchRequest, limits: &Limits) -> Result<ValidJob> {
    let job = check_fields(request, limits)?;
    check_context(&job, limits)?;
    Ok(job)
}

fn check_fields(request: BatchRequest, limits: &Limits) -> Result<ValidJob> {
    let prompts = request.prompts;
    if prompts.is_empty() || prompts.len() > limits.max_prompts {
        return Err(ApiError::invalid(
            "prompts",
            format!(
                "give between 1 and {} prompts; got {}",
                limits.max_prompts,
                prompts.len()
            ),
        ));
    }
    for (index, prompt) in prompts.iter().enumerate() {
        if prompt.trim().is_empty() {
            return Err(ApiError::invalid(
                format!("prompts[{index}]"),
                format!("prompts[{index}] is empty"),
            ));
        }
        let chars = prompt.chars().count();
        if chars > limits.max_prompt_chars {
            return Err(ApiError::invalid(
                format!("prompts[{index}]"),
                format!(
                    "prompts[{index}] is {chars} characters; the limit is {} (GENQ_MAX_PROMPT_CHARS)",
                    limits.max_prompt_chars
                ),
            ));
        }
        if prompt.contains('\0') {
            // PostgreSQL text cannot hold NUL.
            return Err(ApiError::invalid(
                format!("prompts[{index}]"),
                format!("prompts[{index}] contains a NUL character"),
            ));
        }
        if limits.forbidden_words.matches(prompt) {
            return Err(ApiError::InappropriateContent { index });
        }
    }
    let max_tokens = request.max_tokens.unwrap_or(JobParams::DEFAULT_MAX_TOKENS);
    if !(1..=limits.max_tokens).contains(&max_tokens) {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("max_tokens must be between 1 and {}", limits.max_tokens),
        ));
    }
    let job_tokens = prompts.len() as u64 * u64::from(max_tokens);
    if job_tokens > limits.max_job_tokens {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "{} prompts x max_tokens {max_tokens} is {job_tokens} tokens; a job may generate at most {} (GENQ_MAX_JOB_TOKENS)",
                prompts.len(),
                limits.max_job_tokens
            ),
        ));
    }
    let temperature = request
        .temperature
        .unwrap_or(JobParams::DEFAULT_TEMPERATURE);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            "temperature must be between 0 and 2",
        ));
    }
    let top_k = request.top_k.unwrap_or(JobParams::DEFAULT_TOP_K);
    if top_k < 0 {
        return Err(ApiError::invalid(
            "top_k",
            "top_k must be 0 (disabled) or more",
        ));
    }
    let top_p = request.top_p.unwrap_or(JobParams::DEFAULT_TOP_P);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            "top_p must be greater than 0 and at most 1",
        ));
    }
    let stop = match request.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(list)) => list,
    };
    if stop.len() > MAX_STOPS
        || stop
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_LEN || s.contains('\0'))
    {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "stop takes at most {MAX_STOPS} non-empty strings of at most {MAX_STOP_LEN} bytes"
            ),
        ));
    }
    let timeout_secs = request.timeout_secs.unwrap_or(limits.default_timeout_secs);
    if !(1..=limits.max_timeout_secs).contains(&timeout_secs) {
        return Err(ApiError::invalid(
            "timeout_secs",
            format!(
                "timeout_secs must be between 1 and {}",
                limits.max_timeout_secs
            ),
        ));
    }
    let params = JobParams {
        max_tokens,
        temperature,
        top_k,
        top_p,
        seed: request.seed,
        stop,
    };
    let callback_url = request
        .callback_url
        .map(|url| {
            // Kept as parsed: control characters (a NUL, which PostgreSQL text cannot hold) come
            // out percent-encoded.
            crate::webhooks::address::check_url(&url, limits.webhook_allow_private)
                .map(String::from)
                .map_err(|message| ApiError::invalid("callback_url", message))
        })
        .transpose()?;
    if let Some(model) = &request.model
        && let Some(problem) = genq_shared::routing::check_name(model)
    {
        return Err(ApiError::invalid("model", problem));
    }
    if let Some(user) = &request.user
        && (user.is_empty() || user.chars().count() > MAX_USER_CHARS || user.contains('\0'))
    {
        return Err(ApiError::invalid(
            "user",
            format!("user must be 1 to {MAX_USER_CHARS} characters, without NUL"),
        ));
    }
    Ok(ValidJob {
        prompts,
        params,
        callback_url,
        timeout: std::time::Duration::from_secs(timeout_secs),
        model: request.model,
        user: request.user,
    })
}

fn check_context(job: &ValidJob, limits: &Limits) -> Result<()> {
    let Some((model, context)) = &limits.context else {
        return Ok(());
    };
    let max_tokens = job.params.max_tokens as usize;
    for (index, prompt) in job.prompts.iter().enumerate() {
        let tokens = model.count_prompt_tokens(prompt);
        if tokens + max_tokens > *context as usize {
            let field = if tokens >= *context as usize {
                format!("prompts[{index}]")
            } else {
                "max_tokens".into()
            };
            return Err(ApiError::invalid(
                field,
                format!(
                    "prompts[{index}] is {tokens} tokens; with max_tokens {max_tokens} it exceeds the model's context of {context} tokens"
                ),
            ));
        }
    }
    Ok(())
}
