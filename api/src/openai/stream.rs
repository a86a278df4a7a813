//! Streamed completions: OpenAI's `data: {chunk}` lines, then `data: [DONE]`. Text comes from the
//! jobs' Redis event streams as workers decode it (as `GET /batch_result/{id}/events` sends it);
//! the stored results close each choice, so the chunks of a choice always join to its final text.
//!
//! A job retried after its worker died starts its prompts over: text already sent is not sent
//! again, and if the new attempt's text departs from it (it should not: the seed is the same), the
//! stream ends with an error rather than a text that is not the stored one.

use std::{collections::HashMap, convert::Infallible, time::Duration};

use axum::response::{
    IntoResponse, Response,
    sse::{Event, KeepAlive, Sse},
};
use futures::FutureExt;
use genq_shared::{
    db,
    events::{self, EventId, JobEvent},
    types::JobStatus,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    answer::{self, Failure},
    completions::cancel,
    request::{Kind, Shape},
};
use crate::{AppState, auth::Caller};

/// How often the jobs' status is read again without a notice (a lost notice costs this long).
const RECHECK: Duration = Duration::from_secs(1);

pub fn respond(
    state: AppState,
    caller: Caller,
    shape: Shape,
    ids: Vec<Uuid>,
    include_usage: bool,
) -> Response {
    let (out, receiver) = mpsc::channel(64);
    let streamer = Streamer {
        created: chrono::Utc::now().timestamp(),
        id: answer::answer_id(shape.kind, ids[0]),
        choices: HashMap::new(),
        cursors: vec![EventId::START; ids.len()],
        state,
        caller,
        shape,
        ids,
        include_usage,
        out,
    };
    tokio::spawn(streamer.run().instrument(tracing::Span::current()));
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        Some((Ok::<_, Infallible>(event), receiver))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// One choice's text: what was sent, and what the attempt now running has decoded.
#[derive(Default)]
struct Choice {
    sent: String,
    attempt: i32,
    decoded: String,
    diverged: bool,
}

struct Streamer {
    state: AppState,
    caller: Caller,
    shape: Shape,
    /// One job per choice of every prompt.
    ids: Vec<Uuid>,
    include_usage: bool,
    created: i64,
    id: String,
    /// By (job, prompt).
    choices: HashMap<(usize, i32), Choice>,
    cursors: Vec<EventId>,
    out: mpsc::Sender<Event>,
}

/// Why streaming ended before the jobs did.
enum Ended {
    ClientGone,
    Failed(Failure),
}

impl Streamer {
    async fn run(mut self) {
        let ended = match self.stream().await {
            Ok(()) => return,
            Err(ended) => ended,
        };
        // Nobody waits for the rest: stop the work.
        cancel(&self.state, &self.ids).await;
        if let Ended::Failed(failure) = ended {
            let status = axum::http::StatusCode::from_u16(failure.status)
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            let body = super::error_body(status, &failure.code, &failure.message, None);
            let _ = self.out.try_send(Event::default().data(body.to_string()));
        }
    }

    async fn stream(&mut self) -> Result<(), Ended> {
        let mut subscriptions: Vec<_> = self
            .ids
            .iter()
            .map(|id| self.state.watch.subscribe(*id))
            .collect();
        if self.shape.kind == Kind::Chat {
            for choice in 0..self.ids.len() {
                self.send_delta(choice, json!({ "role": "assistant", "content": "" }), None)
                    .await?;
            }
        }
        let first_token_by = tokio::time::Instant::now() + self.state.generate_wait;
        // Before any generated text, which the jobs may already have.
        if self.shape.echo {
            self.echo_prompts().await?;
        }
        let state = self.state.clone();
        let revoked = state
            .key_cache
            .until_revoked(&state.db, self.caller.key_id());
        tokio::pin!(revoked);
        loop {
            let outcomes = db::generations::outcomes(&self.state.db, &self.ids)
                .await
                .map_err(unavailable)?;
            // Events after the status: workers publish a prompt's last text before its outcome.
            for job in 0..self.ids.len() {
                self.send_events(job).await?;
            }
            let all_final = self
                .ids
                .iter()
                .all(|id| outcomes.iter().any(|o| o.id == *id && o.status.is_final()));
            if all_final {
                return self.finish(&outcomes).await;
            }
            let started =
                outcomes.iter().any(|o| o.status != JobStatus::Queued) || !self.choices.is_empty();
            if !started && tokio::time::Instant::now() >= first_token_by {
                return Err(Ended::Failed(Failure {
                    status: 504,
                    code: "timeout".into(),
                    message: format!(
                        "no worker started the request within {} s (GENQ_GENERATE_TIMEOUT_SECS); it was cancelled",
                        self.state.generate_wait.as_secs()
                    ),
                }));
            }
            let any_change =
                futures::future::select_all(subscriptions.iter_mut().map(|s| s.changed().boxed()));
            tokio::select! {
                _ = any_change => {}
                () = tokio::time::sleep(RECHECK) => {}
                () = self.out.closed() => return Err(Ended::ClientGone),
                () = &mut revoked => return Err(Ended::Failed(Failure {
                    status: 401,
                    code: "invalid_api_key".into(),
                    message: "the key this stream was opened with was revoked".into(),
                })),
                () = self.state.stopping.cancelled() => return Err(Ended::Failed(Failure {
                    status: 503,
                    code: "unavailable".into(),
                    message: "this API replica is shutting down; the request was cancelled, retry it".into(),
                })),
            }
        }
    }

    /// Sends the job's decoded text since the last read. Redis failing costs only the preview:
    /// the stored results still close every choice.
    async fn send_events(&mut self, job: usize) -> Result<(), Ended> {
        loop {
            let mut redis = self.state.redis.clone();
            let page = match events::read_after(
                &mut redis,
                &self.state.queue_name,
                self.ids[job],
                self.cursors[job],
                500,
            )
            .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read a job's events");
                    return Ok(());
                }
            };
            for (_, event) in page.events {
                if let JobEvent::Token {
                    attempt,
                    prompt,
                    text,
                } = event
                {
                    self.decoded(job, prompt, attempt, &text).await?;
                }
            }
            if let Some(cursor) = page.cursor {
                self.cursors[job] = cursor;
            }
            if page.complete {
                return Ok(());
            }
        }
    }

    async fn decoded(
        &mut self,
        job: usize,
        prompt: i32,
        attempt: i32,
        text: &str,
    ) -> Result<(), Ended> {
        let choice = self.choices.entry((job, prompt)).or_default();
        if attempt < choice.attempt || choice.diverged {
            return Ok(());
        }
        if attempt > choice.attempt {
            choice.attempt = attempt;
            choice.decoded.clear();
        }
        choice.decoded.push_str(text);
        let delta = if choice.decoded.starts_with(&choice.sent) {
            choice.decoded[choice.sent.len()..].to_owned()
        } else {
            if !choice.sent.starts_with(&choice.decoded) {
                choice.diverged = true;
            }
            return Ok(());
        };
        if delta.is_empty() {
            return Ok(());
        }
        choice.sent.push_str(&delta);
        let index = self.index(job, prompt);
        self.send_text(index, &delta, None).await
    }

    async fn echo_prompts(&mut self) -> Result<(), Ended> {
        let prompts = db::jobs::prompts(&self.state.db, self.ids[0])
            .await
            .map_err(unavailable)?;
        for (prompt, text) in prompts.iter().enumerate() {
            for job in 0..self.ids.len() {
                let index = self.index(job, prompt as i32);
                self.send_text(index, text, None).await?;
            }
        }
        Ok(())
    }

    /// Closes every choice from the stored results: the text not yet sent, then its finish.
    async fn finish(&mut self, outcomes: &[db::generations::JobOutcome]) -> Result<(), Ended> {
        for id in &self.ids {
            if let Some(failure) = outcomes
                .iter()
                .find(|o| o.id == *id)
                .and_then(answer::failure_of)
            {
                return Err(Ended::Failed(failure));
            }
        }
        let results = db::generations::of_jobs(&self.state.db, &self.ids)
            .await
            .map_err(unavailable)?;
        let (mut prompt_tokens, mut completion_tokens) = (0i64, 0i64);
        let mut results_by_index: Vec<_> = results
            .iter()
            .map(|r| {
                let job = self.ids.iter().position(|id| *id == r.job_id).unwrap_or(0);
                (self.index(job, r.prompt_index), job, r)
            })
            .collect();
        results_by_index.sort_by_key(|(index, ..)| *index);
        for (index, job, result) in results_by_index {
            if job == 0 {
                prompt_tokens += i64::from(result.prompt_tokens.unwrap_or(0));
            }
            completion_tokens += i64::from(result.completion_tokens);
            let choice = self.choices.entry((job, result.prompt_index)).or_default();
            let Some(rest) = result.generated_text.strip_prefix(choice.sent.as_str()) else {
                return Err(Ended::Failed(Failure {
                    status: 502,
                    code: "stream_diverged".into(),
                    message: "the request was retried after a worker failed and its text differs \
                              from what was streamed; ask again without stream"
                        .into(),
                }));
            };
            let rest = rest.to_owned();
            choice.sent.push_str(&rest);
            let reason = answer::finish_reason(result.finish_reason);
            if !rest.is_empty() {
                self.send_text(index, &rest, None).await?;
            }
            self.send_text(index, "", Some(reason)).await?;
        }
        if self.include_usage {
            let mut chunk = self.chunk(Vec::new());
            chunk["usage"] = answer::usage(prompt_tokens, completion_tokens);
            self.send(chunk).await?;
        }
        self.out
            .send(Event::default().data("[DONE]"))
            .await
            .map_err(|_| Ended::ClientGone)
    }

    fn index(&self, job: usize, prompt: i32) -> usize {
        prompt as usize * self.ids.len() + job
    }

    async fn send_text(&self, index: usize, text: &str, finish: Option<&str>) -> Result<(), Ended> {
        match self.shape.kind {
            Kind::Completion => {
                let choice = json!({ "text": text, "index": index, "logprobs": null, "finish_reason": finish });
                self.send(self.chunk(vec![choice])).await
            }
            Kind::Chat => {
                let delta = if finish.is_some() {
                    json!({})
                } else {
                    json!({ "content": text })
                };
                self.send_delta(index, delta, finish).await
            }
        }
    }

    async fn send_delta(
        &self,
        index: usize,
        delta: Value,
        finish: Option<&str>,
    ) -> Result<(), Ended> {
        let choice =
            json!({ "index": index, "delta": delta, "logprobs": null, "finish_reason": finish });
        self.send(self.chunk(vec![choice])).await
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        let object = match self.shape.kind {
            Kind::Completion => "text_completion",
            Kind::Chat => "chat.completion.chunk",
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.shape.model,
            "system_fingerprint": null,
            "choices": choices,
        })
    }

    async fn send(&self, chunk: Value) -> Result<(), Ended> {
        self.out
            .send(Event::default().data(chunk.to_string()))
            .await
            .map_err(|_| Ended::ClientGone)
    }
}

fn unavailable(e: sqlx::Error) -> Ended {
    tracing::warn!(error = %e, "a streamed completion lost PostgreSQL");
    Ended::Failed(Failure {
        status: 503,
        code: "unavailable".into(),
        message: "the database is unavailable; the request was cancelled, retry it".into(),
    })
}
