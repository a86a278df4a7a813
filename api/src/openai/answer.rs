//! OpenAI's answer objects (`text_completion`, `chat.completion`) built from a request's jobs and
//! their stored results: the synchronous routes and a batch's output file give the same body.

use genq_shared::{
    db::generations::{JobOutcome, JobResult},
    types::{FinishReason, JobStatus},
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::request::{Kind, Shape};

/// Why a request has no answer: one of its jobs did not complete.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The HTTP status the request gets (a batch line's `response.status_code`).
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// The answer's id: the first job's, as OpenAI's prefixes it.
pub fn answer_id(kind: Kind, first_job: Uuid) -> String {
    match kind {
        Kind::Completion => format!("cmpl-{}", first_job.simple()),
        Kind::Chat => format!("chatcmpl-{}", first_job.simple()),
    }
}

pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop => "stop",
    }
}

/// The answer body of a request whose jobs (`job_ids`, one per choice) are all final.
pub fn body(
    shape: &Shape,
    created: i64,
    job_ids: &[Uuid],
    outcomes: &[JobOutcome],
    results: &[JobResult],
) -> Result<Value, Failure> {
    for id in job_ids {
        let outcome = outcomes
            .iter()
            .find(|o| o.id == *id)
            .ok_or_else(|| Failure {
                status: 500,
                code: "not_found".into(),
                message: format!("job {id} is no longer stored"),
            })?;
        if let Some(failure) = failure_of(outcome) {
            return Err(failure);
        }
    }
    let result = |job: Uuid, prompt: i32| {
        results
            .iter()
            .find(|r| r.job_id == job && r.prompt_index == prompt)
    };
    let prompts = results
        .iter()
        .filter(|r| r.job_id == job_ids[0])
        .map(|r| r.prompt_index + 1)
        .max()
        .unwrap_or(0);
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0i64, 0i64);
    for prompt in 0..prompts {
        for (choice, job) in job_ids.iter().enumerate() {
            let Some(r) = result(*job, prompt) else {
                return Err(Failure {
                    status: 500,
                    code: "internal".into(),
                    message: format!("job {job} completed without prompt {prompt}'s result"),
                });
            };
            if choice == 0 {
                prompt_tokens += i64::from(r.prompt_tokens.unwrap_or(0));
            }
            completion_tokens += i64::from(r.completion_tokens);
            let index = prompt as usize * job_ids.len() + choice;
            choices.push(match shape.kind {
                Kind::Completion => {
                    let text = if shape.echo {
                        format!("{}{}", r.prompt, r.generated_text)
                    } else {
                        r.generated_text.clone()
                    };
                    json!({
                        "text": text,
                        "index": index,
                        "logprobs": null,
                        "finish_reason": finish_reason(r.finish_reason),
                    })
                }
                Kind::Chat => json!({
                    "index": index,
                    "message": { "role": "assistant", "content": r.generated_text, "refusal": null },
                    "logprobs": null,
                    "finish_reason": finish_reason(r.finish_reason),
                }),
            });
        }
    }
    let object = match shape.kind {
        Kind::Completion => "text_completion",
        Kind::Chat => "chat.completion",
    };
    Ok(json!({
        "id": answer_id(shape.kind, job_ids[0]),
        "object": object,
        "created": created,
        "model": shape.model,
        "system_fingerprint": null,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }))
}

pub fn usage(prompt_tokens: i64, completion_tokens: i64) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// Why a final job gives no answer; `None` when it completed.
pub fn failure_of(outcome: &JobOutcome) -> Option<Failure> {
    let message = outcome.error_message.clone().unwrap_or_default();
    let code = outcome
        .error_code
        .clone()
        .unwrap_or_else(|| "internal".into());
    match outcome.status {
        JobStatus::Completed => None,
        JobStatus::Cancelled => Some(Failure {
            status: 409,
            code: "cancelled".into(),
            message: format!("the request was cancelled: {message}"),
        }),
        JobStatus::Failed => Some(Failure {
            status: match code.as_str() {
                "prompt_too_long" => 400,
                "timeout" => 504,
                _ => 502,
            },
            code,
            message,
        }),
        JobStatus::Queued | JobStatus::Running => Some(Failure {
            status: 500,
            code: "internal".into(),
            message: "the request has not finished".into(),
        }),
    }
}
