//! The bodies of `POST /v1/completions` and `POST /v1/chat/completions`, checked against what
//! genq can honour and turned into genq jobs: one job per choice (`n`), each with every prompt,
//! so that choice `j` of a seeded request is what the same request with `seed + j` gives.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::Message;
use crate::{
    error::ApiError,
    validate::{BatchRequest, Stop},
};

/// Most choices per prompt.
pub const MAX_N: u32 = 16;
/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: u32 = 16;

/// `POST /v1/completions`. Fields genq cannot honour are refused when set to anything but their
/// neutral value; see docs/openai.md for each.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "model": "gpt2", "prompt": "Once upon a time", "max_tokens": 16 }))]
pub struct CompletionRequest {
    /// A model `GET /v1/models` lists.
    pub model: String,
    /// A string or a list of strings (token arrays are refused).
    #[schema(value_type = Value)]
    pub prompt: Prompt,
    /// Refused unless empty: GPT-2 has no insertion mode.
    pub suffix: Option<String>,
    /// Default 16 on completions, genq's 50 on chat; at most `GENQ_MAX_TOKENS_LIMIT`.
    pub max_tokens: Option<u32>,
    /// 0 to 2, default 1.
    pub temperature: Option<f32>,
    /// Above 0 up to 1, default 1.
    pub top_p: Option<f32>,
    /// Choices per prompt, 1 to 16 (default 1).
    pub n: Option<u32>,
    /// Up to 4 strings; generation stops before the first that appears.
    #[schema(value_type = Option<Value>)]
    pub stop: Option<Stop>,
    /// 0 to 4,294,967,295; choice `j` uses `seed + j`.
    pub seed: Option<i64>,
    /// Refused unless 0.
    pub presence_penalty: Option<f32>,
    /// Refused unless 0.
    pub frequency_penalty: Option<f32>,
    /// Refused unless empty.
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Accepted; not used yet.
    #[allow(dead_code)]
    pub user: Option<String>,
    /// Default false; see docs/openai.md for the chunks.
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Refused unless null: genq does not return log probabilities.
    #[schema(value_type = Option<u32>)]
    pub logprobs: Option<Value>,
    /// Puts each prompt before its completion's text.
    pub echo: Option<bool>,
    /// Accepted only as 1 or equal to `n`.
    pub best_of: Option<u32>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "model": "gpt2", "messages": [{ "role": "user", "content": "Hello" }] }))]
pub struct ChatRequest {
    pub model: String,
    #[schema(value_type = Vec<Value>, min_items = 1)]
    pub messages: Vec<Message>,
    /// The newer name of `max_tokens`; give one or the other.
    pub max_completion_tokens: Option<u32>,
    /// Default 16 on completions, genq's 50 on chat; at most `GENQ_MAX_TOKENS_LIMIT`.
    pub max_tokens: Option<u32>,
    /// 0 to 2, default 1.
    pub temperature: Option<f32>,
    /// Above 0 up to 1, default 1.
    pub top_p: Option<f32>,
    /// Choices per prompt, 1 to 16 (default 1).
    pub n: Option<u32>,
    /// Up to 4 strings; generation stops before the first that appears.
    #[schema(value_type = Option<Value>)]
    pub stop: Option<Stop>,
    /// 0 to 4,294,967,295; choice `j` uses `seed + j`.
    pub seed: Option<i64>,
    /// Refused unless 0.
    pub presence_penalty: Option<f32>,
    /// Refused unless 0.
    pub frequency_penalty: Option<f32>,
    /// Refused unless empty.
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Accepted; not used yet.
    #[allow(dead_code)]
    pub user: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Refused unless false or null.
    pub logprobs: Option<bool>,
    /// Refused unless null.
    pub top_logprobs: Option<u32>,
    /// Refused unless `text` (or absent).
    #[schema(value_type = Option<Value>)]
    pub response_format: Option<Value>,
    /// Refused unless absent or empty: GPT-2 calls no tools.
    #[schema(value_type = Option<Vec<Value>>)]
    pub tools: Option<Vec<Value>>,
    #[schema(value_type = Option<Value>)]
    pub tool_choice: Option<Value>,
    /// Accepted and ignored: GPT-2 calls no tools.
    #[allow(dead_code)]
    pub parallel_tool_calls: Option<bool>,
    /// Accepted and ignored (genq keeps every request; see docs/openai.md).
    #[allow(dead_code)]
    pub store: Option<bool>,
    /// Accepted and ignored.
    #[schema(value_type = Option<Value>)]
    #[allow(dead_code)]
    pub metadata: Option<Value>,
}

/// The sampling fields both routes share.
#[derive(Debug, Default)]
pub struct Sampling {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u32>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
}

/// Both requests' sampling fields, moved into a [`Sampling`].
macro_rules! sampling_of {
    ($request:expr) => {
        Sampling {
            max_tokens: $request.max_tokens,
            temperature: $request.temperature,
            top_p: $request.top_p,
            n: $request.n,
            stop: $request.stop,
            seed: $request.seed,
            presence_penalty: $request.presence_penalty,
            frequency_penalty: $request.frequency_penalty,
            logit_bias: $request.logit_bias,
        }
    };
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// A last chunk with `usage` and no choices.
    pub include_usage: Option<bool>,
    /// Accepted and ignored.
    #[allow(dead_code)]
    pub include_obfuscation: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
    Other(serde::de::IgnoredAny),
}

/// What the request's answer is built from, besides its jobs' results; stored with each request
/// line of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Shape {
    pub kind: Kind,
    pub model: String,
    pub n: u32,
    pub echo: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Completion,
    Chat,
}

/// A request checked: its answer's shape, the jobs to run, and how to answer.
pub struct Plan {
    pub shape: Shape,
    pub jobs: Vec<BatchRequest>,
    pub stream: bool,
    pub include_usage: bool,
}

/// The sampling fields checked, with OpenAI's defaults.
struct Checked {
    n: u32,
    max_tokens: Option<u32>,
    temperature: f32,
    top_p: f32,
    seed: Option<u32>,
    stop: Vec<String>,
}

/// A completion request checked; `max_prompts` is genq's limit, checked before the prompts are
/// copied into a job per choice.
pub fn plan_completion(request: CompletionRequest, max_prompts: usize) -> Result<Plan, ApiError> {
    let prompts = match request.prompt {
        Prompt::One(prompt) => vec![prompt],
        Prompt::Many(prompts) if !prompts.is_empty() => prompts,
        Prompt::Many(_) => return Err(ApiError::invalid("prompt", "prompt must not be empty")),
        Prompt::Other(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "prompt must be a string or a list of strings; token arrays are not supported",
            ));
        }
    };
    if prompts.len() > max_prompts {
        return Err(ApiError::invalid(
            "prompt",
            format!("give at most {max_prompts} prompts; got {}", prompts.len()),
        ));
    }
    if request.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(
            "suffix",
            "suffix is not supported: GPT-2 only continues text",
        ));
    }
    if request.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid("logprobs", "logprobs is not supported"));
    }
    let mut checked = check(sampling_of!(request), DEFAULT_MAX_TOKENS)?;
    if let Some(best_of) = request.best_of
        && best_of != 1
        && best_of != checked.n
    {
        return Err(ApiError::invalid(
            "best_of",
            "best_of must be 1 or equal to n: genq does not rank candidates",
        ));
    }
    let stream = request.stream.unwrap_or(false);
    let include_usage = stream_usage(stream, request.stream_options)?;
    checked.max_tokens.get_or_insert(DEFAULT_MAX_TOKENS);
    let jobs = jobs(prompts, &checked, &request.model, request.user.as_deref());
    Ok(Plan {
        shape: Shape {
            kind: Kind::Completion,
            model: request.model,
            n: checked.n,
            echo: request.echo.unwrap_or(false),
        },
        jobs,
        stream,
        include_usage,
    })
}

/// A chat request checked; `prompt` is its messages rendered with the model's template.
pub fn plan_chat(
    request: ChatRequest,
    prompt: String,
    extra_stops: &[&str],
) -> Result<Plan, ApiError> {
    if request.logprobs == Some(true) {
        return Err(ApiError::invalid("logprobs", "logprobs is not supported"));
    }
    if request.top_logprobs.is_some() {
        return Err(ApiError::invalid(
            "top_logprobs",
            "top_logprobs is not supported",
        ));
    }
    if let Some(format) = &request.response_format
        && format.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(ApiError::invalid(
            "response_format",
            "only response_format {\"type\": \"text\"} is supported",
        ));
    }
    if request.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid(
            "tools",
            "tools are not supported: GPT-2 calls no functions",
        ));
    }
    if request.tool_choice.as_ref().is_some_and(|c| c != "none") {
        return Err(ApiError::invalid(
            "tool_choice",
            "tool_choice must be \"none\": GPT-2 calls no functions",
        ));
    }
    let max_completion_tokens = request.max_completion_tokens;
    let (stream, stream_options) = (request.stream, request.stream_options);
    let model = request.model;
    let user = request.user.clone();
    let mut sampling = sampling_of!(request);
    if let Some(max) = max_completion_tokens {
        if sampling.max_tokens.is_some() {
            return Err(ApiError::invalid(
                "max_completion_tokens",
                "give max_completion_tokens or max_tokens, not both",
            ));
        }
        sampling.max_tokens = Some(max);
    }
    let mut checked = check(sampling, 0)?;
    // The template's own end of turn, where there is room beside the client's stops.
    for stop in extra_stops {
        if checked.stop.len() < crate::validate::MAX_STOPS
            && !checked.stop.iter().any(|s| s == stop)
        {
            checked.stop.push((*stop).to_owned());
        }
    }
    let stream = stream.unwrap_or(false);
    let include_usage = stream_usage(stream, stream_options)?;
    let jobs = jobs(vec![prompt], &checked, &model, user.as_deref());
    Ok(Plan {
        shape: Shape {
            kind: Kind::Chat,
            model,
            n: checked.n,
            echo: false,
        },
        jobs,
        stream,
        include_usage,
    })
}

fn stream_usage(stream: bool, options: Option<StreamOptions>) -> Result<bool, ApiError> {
    match options {
        None => Ok(false),
        Some(_) if !stream => Err(ApiError::invalid(
            "stream_options",
            "stream_options is only allowed with stream: true",
        )),
        Some(options) => Ok(options.include_usage.unwrap_or(false)),
    }
}

fn check(sampling: Sampling, default_max_tokens: u32) -> Result<Checked, ApiError> {
    let n = sampling.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::invalid("n", format!("n must be 1 to {MAX_N}")));
    }
    for (name, value) in [
        ("presence_penalty", sampling.presence_penalty),
        ("frequency_penalty", sampling.frequency_penalty),
    ] {
        if value.is_some_and(|v| v != 0.0) {
            return Err(ApiError::invalid(
                name,
                format!("{name} is not supported: give 0 or leave it out"),
            ));
        }
    }
    if sampling.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::invalid(
            "logit_bias",
            "logit_bias is not supported",
        ));
    }
    let seed = match sampling.seed {
        None => None,
        Some(seed) => Some(
            u32::try_from(seed)
                .map_err(|_| ApiError::invalid("seed", "seed must be 0 to 4294967295"))?,
        ),
    };
    let stop = match sampling.stop {
        None => Vec::new(),
        Some(Stop::One(stop)) => vec![stop],
        Some(Stop::Many(stops)) => stops,
    };
    Ok(Checked {
        n,
        max_tokens: sampling
            .max_tokens
            .or((default_max_tokens > 0).then_some(default_max_tokens)),
        temperature: sampling.temperature.unwrap_or(1.0),
        top_p: sampling.top_p.unwrap_or(1.0),
        seed,
        stop,
    })
}

/// One job per choice, each with every prompt; top-k off, as OpenAI has none.
fn jobs(
    prompts: Vec<String>,
    checked: &Checked,
    model: &str,
    user: Option<&str>,
) -> Vec<BatchRequest> {
    (0..checked.n)
        .map(|choice| BatchRequest {
            prompts: prompts.clone(),
            max_tokens: checked.max_tokens,
            temperature: Some(checked.temperature),
            top_k: Some(0),
            top_p: Some(checked.top_p),
            seed: checked.seed.map(|s| s.wrapping_add(choice)),
            stop: (!checked.stop.is_empty()).then(|| Stop::Many(checked.stop.clone())),
            timeout_secs: None,
            callback_url: None,
            model: Some(model.to_owned()),
            user: user.map(str::to_owned),
        })
        .collect()
}

/// Errors of genq's job checks, in the names of OpenAI's fields.
pub fn openai_field(error: ApiError) -> ApiError {
    match error {
        ApiError::InvalidField { field, message } if field.starts_with("prompts") => {
            ApiError::InvalidField {
                field: "prompt".into(),
                message,
            }
        }
        other => other,
    }
}
