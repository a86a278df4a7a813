//! Running one job: claim it in PostgreSQL, hand every prompt to the engine at once, watch for
//! cancellation, and store the outcome with the claim's attempt so a stale worker cannot overwrite
//! a newer one.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable};
use futures::{StreamExt, stream::FuturesUnordered};
use genq_engine::{Engine, GenerationError, GenerationParams};
use genq_shared::{
    db::{
        self,
        jobs::{Claim, NewGeneration, Released},
    },
    metrics::{self as genq_metrics, names},
    queue,
    types::{ErrorCode, ErrorDetail, FinishReason, JobStatus},
    wait::JobWatch,
};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    cache::ResultCache,
    live::{LiveEvents, LiveJob, stored_text},
    reachability,
    registry::{Held, HeldJobs},
};

pub struct JobRunner {
    pub(crate) db: PgPool,
    pub(crate) engine: Engine,
    pub(crate) worker_name: String,
    /// The model's name in the catalogue, and its version (SHA-256 of the file).
    pub(crate) model_name: String,
    pub(crate) model_version: String,
    /// Jobs this process runs; their leases are renewed by the heartbeat.
    pub(crate) held: Arc<HeldJobs>,
    pub(crate) cache: Option<ResultCache>,
    /// Tells a running job it was cancelled (its status went final under it).
    pub(crate) watch: JobWatch,
    /// For putting a job back on the queue after a transient failure.
    pub(crate) redis: queue::RedisConnection,
    /// The deployment's queue namespace (GENQ_QUEUE).
    pub(crate) queue: String,
    /// Publishes the jobs' live events.
    pub(crate) live: LiveEvents,
    /// Marked unreachable by a claim that cannot reach PostgreSQL.
    pub(crate) postgres: reachability::Postgres,
}

enum Outcome {
    Completed(Vec<NewGeneration>),
    Failed(Vec<NewGeneration>, ErrorDetail),
    /// Worth another attempt, on this worker or another (the engine stopped or llama.cpp failed
    /// a decode).
    Transient(ErrorDetail),
    Cancelled(Vec<NewGeneration>),
}

impl JobRunner {
    /// Claims and runs the job. `claimed` is dropped once the claim has settled (taken, refused
    /// or failed): the consumer hands the task back if that takes too long.
    pub async fn run(
        self: Arc<Self>,
        job_id: Uuid,
        claimed: oneshot::Sender<()>,
    ) -> anyhow::Result<()> {
        let span = tracing::info_span!("job", task_id = %job_id, worker = %self.worker_name);
        self.run_job(job_id, claimed).instrument(span).await
    }

    async fn run_job(&self, job_id: Uuid, claimed: oneshot::Sender<()>) -> anyhow::Result<()> {
        if self.engine.is_stopped() {
            // This worker is on its way out: hand the job to another without spending an attempt.
            let mut redis = self.redis.clone();
            queue::redispatch(&self.db, &mut redis, &self.queue, &[job_id]).await?;
            tracing::info!("engine stopped; job handed back unclaimed");
            return Ok(());
        }
        let model = self.model_name.as_str();
        let claiming = db::jobs::claim(
            &self.db,
            job_id,
            &self.worker_name,
            model,
            &self.model_version,
        );
        let claim = claiming.await;
        drop(claimed);
        let claim = claim.inspect_err(|e| {
            if db::is_unavailable(e) {
                self.postgres
                    .mark_unreachable("a claim could not reach PostgreSQL");
            }
        });
        let Some(claim) = claim? else {
            // Cancelled, already taken by another delivery, or unknown: nothing to run.
            tracing::info!("job is not queued; skipping");
            return Ok(());
        };
        // Should this claim's answer have been lost instead, the job is not held and its lease
        // lapses, so the reconciler takes it back.
        let held = self.held.hold(claim.id, claim.attempt);
        let started = Instant::now();
        metrics::histogram!(names::JOB_QUEUE_WAIT).record(claim.queue_wait_secs.max(0.0));
        tracing::info!(
            prompts = claim.prompts.len(),
            attempt = claim.attempt,
            "job started"
        );
        let live = self.live.job(claim.id, claim.attempt);
        let outcome = self.generate(&claim, &held, &live).await;
        live.close().await;
        let outcome = outcome?;
        let status = outcome.status();
        let stored = match outcome {
            Outcome::Cancelled(finished) => {
                let write = || db::jobs::keep_cancelled_results(&self.db, &claim, model, &finished);
                let kept = write.retry(write_backoff()).notify(log_retry).await?;
                tracing::info!(
                    finished = finished.len(),
                    kept,
                    "job cancelled while running"
                );
                // Counted as finished by whoever cancelled it.
                record_duration(status, started);
                return Ok(());
            }
            Outcome::Transient(error) => {
                let release = || {
                    db::jobs::release(
                        &self.db,
                        claim.id,
                        claim.attempt,
                        error.code,
                        &error.message,
                    )
                };
                let released = release.retry(write_backoff()).notify(log_retry).await?;
                tracing::warn!(code = %error.code, message = %error.message, ?released, "job attempt failed");
                if released == Released::Failed {
                    genq_metrics::jobs_finished(JobStatus::Failed, Some(error.code), 1);
                    record_duration(JobStatus::Failed, started);
                }
                if released == Released::Requeued {
                    let mut redis = self.redis.clone();
                    // If this fails the reconciler finds the queued job missing from Redis.
                    let ids = [claim.id];
                    let redispatched = queue::redispatch(&self.db, &mut redis, &self.queue, &ids);
                    if let Err(e) = redispatched.await {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "could not re-dispatch; the reconciler will"
                        );
                    }
                }
                return Ok(());
            }
            Outcome::Completed(results) => {
                let write = || db::jobs::complete(&self.db, &claim, model, &results);
                write.retry(write_backoff()).notify(log_retry).await?
            }
            Outcome::Failed(finished, error) => {
                tracing::warn!(code = %error.code, message = %error.message, "job failed");
                let write = || db::jobs::fail(&self.db, &claim, model, &finished, &error);
                let stored = write.retry(write_backoff()).notify(log_retry).await?;
                if stored {
                    genq_metrics::jobs_finished(JobStatus::Failed, Some(error.code), 1);
                }
                stored
            }
        };
        if stored {
            if status == JobStatus::Completed {
                genq_metrics::jobs_finished(JobStatus::Completed, None, 1);
            }
            record_duration(status, started);
            tracing::info!("job finished");
        } else {
            tracing::info!("job was cancelled or reclaimed meanwhile; outcome discarded");
        }
        Ok(())
    }

    async fn generate(
        &self,
        claim: &Claim,
        held: &Held<'_>,
        live: &LiveJob,
    ) -> anyhow::Result<Outcome> {
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
                // The cache only saves work: if PostgreSQL cannot answer now, generate.
                cache.lookup(&self.db, &claim.tenant, &wanted).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "result cache lookup failed; generating instead");
                    Vec::new()
                })
            }
            None => Vec::new(),
        };
        if !finished.is_empty() {
            metrics::counter!(names::RESULT_CACHE_HITS).increment(finished.len() as u64);
            tracing::info!(hits = finished.len(), "answered from the result cache");
        }
        finished.iter().for_each(|g| live.finished(g));
        let answered: Vec<bool> = (0..claim.prompts.len())
            .map(|i| finished.iter().any(|g| g.index as usize == i))
            .collect();
        // Tokenizing is CPU work: off the runtime, and off the engine thread, which only decodes.
        let model = self.engine.model().clone();
        let to_generate: Vec<(usize, String)> = claim
            .prompts
            .iter()
            .enumerate()
            .filter(|(index, _)| !answered[*index])
            .map(|(index, prompt)| (index, prompt.clone()))
            .collect();
        let tokenized = tokio::task::spawn_blocking(move || {
            to_generate
                .into_iter()
                .map(|(index, prompt)| (index, model.prompt_tokens(&prompt)))
                .collect::<Vec<_>>()
        })
        .await?;
        let mut prompt_tokens = vec![0; claim.prompts.len()];
        for (index, tokens) in &tokenized {
            prompt_tokens[*index] = tokens.len();
        }
        // Every other prompt goes to the engine now, so they share decode steps. Dropping
        // `pending` cancels whatever has not finished.
        let mut pending: FuturesUnordered<_> = tokenized
            .into_iter()
            .map(|(index, tokens)| {
                let generation = self.engine.generate_streaming(
                    tokens,
                    params.clone(),
                    Some(timing_first_token(live.sink(index))),
                );
                async move { (index, generation.await) }
            })
            .collect();
        // The job's status turning final under us means it was cancelled: PostgreSQL notifies at
        // once (see `JobWatch`).
        let cancelled = async {
            loop {
                match self.watch.wait(claim.id, Duration::from_secs(3600)).await {
                    Ok(Some(status)) if status.is_final() => return,
                    // Deleted under us: nobody wants the results.
                    Ok(None) => return,
                    Ok(Some(_)) => {}
                    // PostgreSQL unreachable: that is no cancellation; keep generating.
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
        };
        tokio::pin!(cancelled);
        let deadline = claim.deadline.map_or(Duration::MAX, |d| {
            (d - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO)
        });
        let past_deadline = tokio::time::sleep(deadline);
        tokio::pin!(past_deadline);
        loop {
            tokio::select! {
                next = pending.next() => match next {
                    None => break,
                    Some((index, Ok(generation))) => {
                        held.generated_one();
                        let result = inferred(
                            index,
                            generation,
                            keys[index].clone(),
                            prompt_tokens[index],
                        );
                        live.finished(&result);
                        finished.push(result);
                    }
                    Some((index, Err(error))) => {
                        finished.sort_by_key(|g| g.index);
                        let detail = error_detail(index, &error);
                        metrics::counter!(names::INFERENCE_ERRORS, "kind" => detail.code.as_str())
                            .increment(1);
                        return Ok(match error {
                            GenerationError::PromptTooLong { .. } => Outcome::Failed(finished, detail),
                            GenerationError::Decode(_) | GenerationError::EngineStopped => {
                                Outcome::Transient(detail)
                            }
                        });
                    }
                },
                _ = &mut cancelled => {
                    finished.sort_by_key(|g| g.index);
                    return Ok(Outcome::Cancelled(finished));
                }
                _ = &mut past_deadline => {
                    finished.sort_by_key(|g| g.index);
                    let error = ErrorDetail {
                        code: ErrorCode::Timeout,
                        message: format!(
                            "the deadline passed with {} of {} prompts finished",
                            finished.len(),
                            claim.prompts.len()
                        ),
                    };
                    return Ok(Outcome::Failed(finished, error));
                }
            }
        }
        finished.sort_by_key(|g| g.index);
        Ok(Outcome::Completed(finished))
    }
}

impl Outcome {
    /// The job's status once this outcome is stored; a transient failure's job is queued again
    /// unless it has no attempt left.
    fn status(&self) -> JobStatus {
        match self {
            Outcome::Completed(_) => JobStatus::Completed,
            Outcome::Failed(..) | Outcome::Transient(_) => JobStatus::Failed,
            Outcome::Cancelled(_) => JobStatus::Cancelled,
        }
    }
}

fn record_duration(status: JobStatus, started: Instant) {
    metrics::histogram!(names::JOB_DURATION, "status" => status.as_str())
        .record(started.elapsed().as_secs_f64());
}

/// `sink`, recording the time from now to its first call, which the engine makes as it samples
/// the prompt's first token: however long the prompt waited for a slot and took to decode.
fn timing_first_token(mut sink: genq_engine::TextSink) -> genq_engine::TextSink {
    let handed_over = Instant::now();
    let mut first = true;
    Box::new(move |bytes: &[u8]| {
        if std::mem::take(&mut first) {
            metrics::histogram!(names::TIME_TO_FIRST_TOKEN)
                .record(handed_over.elapsed().as_secs_f64());
        }
        sink(bytes)
    })
}

/// A prompt's result as it is stored: through the output filter, and storable.
fn inferred(
    index: usize,
    generation: genq_engine::Generation,
    cache_key: Option<Vec<u8>>,
    prompt_tokens: usize,
) -> NewGeneration {
    let (text, redacted) = stored_text(&generation.text);
    NewGeneration {
        index: index as i32,
        text,
        redacted,
        completion_tokens: generation.completion_tokens as i32,
        prompt_tokens: Some(prompt_tokens as i32),
        finish_reason: match generation.finish_reason {
            genq_engine::FinishReason::Length => FinishReason::Length,
            genq_engine::FinishReason::Stop => FinishReason::Stop,
        },
        cache_key,
        cached: false,
    }
}

fn error_detail(index: usize, error: &GenerationError) -> ErrorDetail {
    let code = match error {
        GenerationError::PromptTooLong { .. } => ErrorCode::PromptTooLong,
        GenerationError::Decode(_) => ErrorCode::InferenceError,
        GenerationError::EngineStopped => ErrorCode::WorkerStopped,
    };
    ErrorDetail {
        code,
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
    genq_metrics::postgres_error();
    tracing::warn!(error = %error, retry_in = ?after, "storing the job's outcome failed; retrying");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_pass_the_output_filter_before_they_are_stored() {
        let generation = |text: &str| genq_engine::Generation {
            text: text.to_owned(),
            completion_tokens: 9,
            finish_reason: genq_engine::FinishReason::Length,
        };

        let leaked = inferred(
            0,
            generation("call 123-45-6789 or bob@example.org\0"),
            None,
            3,
        );
        let plain = inferred(1, generation("nothing to hide"), None, 3);

        assert_eq!(
            leaked.text,
            "call [redacted ssn] or [redacted email]\u{FFFD}"
        );
        assert!(leaked.redacted);
        assert_eq!(plain.text, "nothing to hide");
        assert!(!plain.redacted);
    }
}
