//! Running one job: claim it in PostgreSQL, hand every prompt to the engine at once, watch for
//! cancellation, and store the outcome with the claim's attempt so a stale worker cannot overwrite
//! a newer one.

use std::{sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use futures::{StreamExt, stream::FuturesUnordered};
use genq_engine::{Engine, GenerationError, GenerationParams};
use genq_shared::{
    db::{
        self,
        jobs::{Claim, NewGeneration},
    },
    types::{ErrorDetail, FinishReason, JobStatus},
};
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::cache::ResultCache;

/// How often a running job's status is re-read to notice a cancellation.
const CANCEL_CHECK: Duration = Duration::from_millis(500);

pub struct JobRunner {
    pub(crate) db: PgPool,
    pub(crate) engine: Engine,
    pub(crate) worker_name: String,
    pub(crate) cache: Option<ResultCache>,
}

enum Outcome {
    Completed(Vec<NewGeneration>),
    Failed(Vec<NewGeneration>, ErrorDetail),
    Cancelled,
}

impl JobRunner {
    pub async fn run(self: Arc<Self>, job_id: Uuid) -> anyhow::Result<()> {
        let span = tracing::info_span!("job", task_id = %job_id, worker = %self.worker_name);
        self.run_job(job_id).instrument(span).await
    }

    async fn run_job(&self, job_id: Uuid) -> anyhow::Result<()> {
        let model = self.engine.model().name();
        let Some(claim) = db::jobs::claim(&self.db, job_id, &self.worker_name, model).await? else {
            // Cancelled, already taken by another delivery, or unknown: nothing to run.
            tracing::info!("job is not queued; skipping");
            return Ok(());
        };
        tracing::info!(
            prompts = claim.prompts.len(),
            attempt = claim.attempt,
            "job started"
        );
        let stored = match self.generate(&claim).await? {
            Outcome::Cancelled => {
                tracing::info!("job cancelled while running");
                return Ok(());
            }
            Outcome::Completed(results) => {
                let write = || db::jobs::complete(&self.db, &claim, model, &results);
                write.retry(write_backoff()).notify(log_retry).await?
            }
            Outcome::Failed(finished, error) => {
                tracing::warn!(code = %error.code, message = %error.message, "job failed");
                let write = || db::jobs::fail(&self.db, &claim, model, &finished, &error);
                write.retry(write_backoff()).notify(log_retry).await?
            }
        };
        if stored {
            tracing::info!("job finished");
        } else {
            tracing::info!("job was cancelled or reclaimed meanwhile; outcome discarded");
        }
        Ok(())
    }

    async fn generate(&self, claim: &Claim) -> anyhow::Result<Outcome> {
        let params = GenerationParams {
            max_tokens: claim.params.max_tokens,
            temperature: claim.params.temperature,
            top_k: claim.params.top_k,
            top_p: claim.params.top_p,
            seed: claim.params.effective_seed(claim.id),
            stop: claim.params.stop.clone(),
        };
        let keys: Vec<Option<Vec<u8>>> = claim
            .prompts
            .iter()
            .map(|p| self.cache.as_ref().and_then(|c| c.key(p, &claim.params)))
            .collect();
        let mut finished = match &self.cache {
            Some(cache) => {
                let wanted: Vec<(usize, Vec<u8>)> = keys
                    .iter()
                    .enumerate()
                    .filter_map(|(i, k)| Some((i, k.clone()?)))
                    .collect();
                cache.lookup(&self.db, &wanted).await?
            }
            None => Vec::new(),
        };
        if !finished.is_empty() {
            tracing::info!(hits = finished.len(), "answered from the result cache");
        }
        let answered: Vec<bool> = (0..claim.prompts.len())
            .map(|i| finished.iter().any(|g| g.index as usize == i))
            .collect();
        // Every other prompt goes to the engine now, so they share decode steps. Dropping
        // `pending` cancels whatever has not finished.
        let mut pending: FuturesUnordered<_> = claim
            .prompts
            .iter()
            .enumerate()
            .filter(|(index, _)| !answered[*index])
            .map(|(index, prompt)| {
                let generation = self.engine.generate(prompt.clone(), params.clone());
                async move { (index, generation.await) }
            })
            .collect();
        let mut cancel_check = tokio::time::interval(CANCEL_CHECK);
        cancel_check.tick().await;
        loop {
            tokio::select! {
                next = pending.next() => match next {
                    None => break,
                    Some((index, Ok(generation))) => finished.push(NewGeneration {
                        index: index as i32,
                        // GPT-2 can emit a NUL byte, which PostgreSQL text cannot store.
                        text: generation.text.replace('\0', "\u{FFFD}"),
                        completion_tokens: generation.completion_tokens as i32,
                        finish_reason: match generation.finish_reason {
                            genq_engine::FinishReason::Length => FinishReason::Length,
                            genq_engine::FinishReason::Stop => FinishReason::Stop,
                        },
                        cache_key: keys[index].clone(),
                        cached: false,
                    }),
                    Some((index, Err(error))) => {
                        finished.sort_by_key(|g| g.index);
                        return Ok(Outcome::Failed(finished, error_detail(index, &error)));
                    }
                },
                _ = cancel_check.tick() => {
                    if db::jobs::status(&self.db, claim.id).await? != Some(JobStatus::Running) {
                        return Ok(Outcome::Cancelled);
                    }
                }
            }
        }
        finished.sort_by_key(|g| g.index);
        Ok(Outcome::Completed(finished))
    }
}

fn error_detail(index: usize, error: &GenerationError) -> ErrorDetail {
    let code = match error {
        GenerationError::PromptTooLong { .. } => "prompt_too_long",
        GenerationError::Decode(_) => "inference_error",
        GenerationError::EngineStopped => "worker_stopped",
    };
    ErrorDetail {
        code: code.into(),
        message: format!("prompts[{index}]: {error}"),
    }
}

/// A finished job's outcome is held and retried through database blips rather than lost.
fn write_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(30)
}

fn log_retry(error: &sqlx::Error, after: Duration) {
    tracing::warn!(error = %error, retry_in = ?after, "storing the job's outcome failed; retrying");
}
