//! Prometheus metrics: every name genq exports, its help text, and the process's recorder.
//!
//! Code records through the `metrics` facade (`metrics::counter!(names::X)`), which does nothing
//! until [`start`] installs the Prometheus exporter; the API and the worker install it when they
//! start and render it at `GET /metrics`. Names follow Prometheus's conventions (base units,
//! `_total` counters) and vLLM's or llama-server's where the meaning is the same
//! (`generation_tokens_total`, `time_to_first_token_seconds`, `requests_waiting`).

use std::sync::OnceLock;

use crate::types::{ErrorCode, JobStatus};
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Every metric's name, as a constant, and all of them in [`names::ALL`].
pub mod names {
    macro_rules! names {
        ($($(#[$doc:meta])* $id:ident = $name:literal;)*) => {
            $($(#[$doc])* pub const $id: &str = $name;)*
            /// Every name above.
            pub const ALL: &[&str] = &[$($id),*];
        };
    }

    names! {
        // The API.
        HTTP_REQUESTS = "genq_http_requests_total";
        HTTP_REQUEST_DURATION = "genq_http_request_duration_seconds";
        JOBS_SUBMITTED = "genq_jobs_submitted_total";
        QUEUE_DEPTH = "genq_queue_depth";
        QUEUE_OLDEST_AGE = "genq_queue_oldest_age_seconds";
        MODEL_QUEUE_DEPTH = "genq_model_queue_depth";
        MODEL_JOBS_RUNNING = "genq_model_jobs_running";
        MODEL_WORKERS_LIVE = "genq_model_workers_live";
        JOBS_RUNNING = "genq_jobs_running";
        WORKERS_LIVE = "genq_workers_live";
        SLOTS_LIVE = "genq_slots_live";
        RECONCILER_ACTIONS = "genq_reconciler_actions_total";
        RECONCILER_ERRORS = "genq_reconciler_errors_total";
        WEBHOOK_ATTEMPTS = "genq_webhook_attempts_total";
        WEBHOOKS_OWED = "genq_webhooks_owed";
        WEBHOOK_DESTINATIONS_PAUSED = "genq_webhook_destinations_paused_total";
        // The API, the reconciler and the worker: each counts the final statuses it writes.
        JOBS_FINISHED = "genq_jobs_finished_total";
        // The reconciler and the worker: jobs moved to their fallback model.
        FALLBACKS = "genq_fallbacks_total";
        POSTGRES_ERRORS = "genq_postgres_errors_total";
        REDIS_ERRORS = "genq_redis_errors_total";
        // The worker.
        WORKER_SLOTS = "genq_worker_slots";
        WORKER_SLOTS_BUSY = "genq_worker_slots_busy";
        REQUESTS_WAITING = "genq_worker_requests_waiting";
        WORKER_JOBS_RUNNING = "genq_worker_jobs_running";
        GENERATION_TOKENS = "genq_generation_tokens_total";
        PROMPT_TOKENS = "genq_prompt_tokens_total";
        SEQUENCES_MOVED = "genq_sequences_moved_total";
        TIME_TO_FIRST_TOKEN = "genq_time_to_first_token_seconds";
        JOB_DURATION = "genq_job_duration_seconds";
        JOB_QUEUE_WAIT = "genq_job_queue_wait_seconds";
        MODEL_LOAD = "genq_model_load_seconds";
        INFERENCE_ERRORS = "genq_inference_errors_total";
        RESULT_CACHE_HITS = "genq_result_cache_hits_total";
    }
}

use names::*;

/// Seconds, from a fast HTTP answer to a long poll's minute.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Seconds, from a cached answer to a day-long job.
const JOB_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0, 86400.0,
];

/// The process's Prometheus recorder, installed on first use. The `metrics` facade has one
/// recorder per process, so tests that start several apps in one process share it.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Prefix("genq_http_".into()), REQUEST_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), JOB_BUCKETS))
            .expect("bucket lists are not empty")
            .install_recorder()
            .expect("genq installs the only metrics recorder, once");
        describe();
        handle
    })
}

/// Starts recording (from a Tokio runtime), once per process. Histograms are drained into their
/// buckets at each render, and every few seconds in between so that a process nobody scrapes
/// does not grow.
pub fn start() {
    static UPKEEP: OnceLock<()> = OnceLock::new();
    let handle = recorder();
    UPKEEP.get_or_init(|| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    });
}

/// Everything recorded, in Prometheus's text format.
pub fn render() -> String {
    recorder().render()
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request latency, by method and route"
    );
    describe_counter!(JOBS_SUBMITTED, "Jobs accepted by this API");
    describe_gauge!(
        QUEUE_DEPTH,
        "Jobs queued, from PostgreSQL (the whole cluster)"
    );
    describe_gauge!(
        MODEL_QUEUE_DEPTH,
        "Jobs queued for each model (label model), from PostgreSQL"
    );
    describe_gauge!(
        MODEL_JOBS_RUNNING,
        "Jobs running on each model (label model)"
    );
    describe_gauge!(
        MODEL_WORKERS_LIVE,
        "Live workers of each model (label model); 0 means its jobs wait (scale from zero)"
    );
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "How long the oldest queued job has waited (0 when none)"
    );
    describe_gauge!(
        JOBS_RUNNING,
        "Jobs running, from PostgreSQL (the whole cluster)"
    );
    describe_gauge!(WORKERS_LIVE, "Workers with a heartbeat in the last 15 s");
    describe_gauge!(SLOTS_LIVE, "Sequence slots of the live workers");
    describe_counter!(
        RECONCILER_ACTIONS,
        "Jobs the reconciler acted on, by action"
    );
    describe_counter!(RECONCILER_ERRORS, "Reconciler steps that failed, by step");
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        "Webhook calls made, by what followed: delivered, retrying, gave_up, gone"
    );
    describe_gauge!(
        WEBHOOKS_OWED,
        "Webhook deliveries owed (not yet delivered nor given up), the whole cluster"
    );
    describe_counter!(
        WEBHOOK_DESTINATIONS_PAUSED,
        "Times a webhook destination was paused for failing calls in a row (this replica)"
    );
    describe_counter!(
        JOBS_FINISHED,
        "Jobs this process turned final, by status and, for failures, error code"
    );
    describe_counter!(
        FALLBACKS,
        "Jobs moved to their fallback model, by fallback and reason (failed, unserved)"
    );
    describe_counter!(POSTGRES_ERRORS, "PostgreSQL operations that failed");
    describe_counter!(REDIS_ERRORS, "Redis operations that failed");
    describe_gauge!(WORKER_SLOTS, "This worker's sequence slots");
    describe_gauge!(WORKER_SLOTS_BUSY, "Slots holding a sequence");
    describe_gauge!(REQUESTS_WAITING, "Prompts waiting in the engine for a slot");
    describe_gauge!(WORKER_JOBS_RUNNING, "Jobs this worker is running");
    describe_counter!(
        GENERATION_TOKENS,
        "Tokens sampled, end-of-text tokens included"
    );
    describe_counter!(
        PROMPT_TOKENS,
        "Prompt tokens decoded; a shared prefix copied from another sequence is not"
    );
    describe_counter!(
        SEQUENCES_MOVED,
        "Sequences moved to a lower slot to keep the running ones together"
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "From a prompt's hand-over to the engine to its first generated token"
    );
    describe_histogram!(
        JOB_DURATION,
        Unit::Seconds,
        "From a job's claim to its stored outcome, by status"
    );
    describe_histogram!(
        JOB_QUEUE_WAIT,
        Unit::Seconds,
        "From a job's (re-)queueing to its claim by a worker"
    );
    describe_gauge!(MODEL_LOAD, Unit::Seconds, "How long loading the model took");
    describe_counter!(
        INFERENCE_ERRORS,
        "Prompts whose generation failed, by kind (an error code)"
    );
    describe_counter!(RESULT_CACHE_HITS, "Prompts answered from the result cache");
}

/// Counts a failed PostgreSQL operation.
pub fn postgres_error() {
    metrics::counter!(POSTGRES_ERRORS).increment(1);
}

/// Counts a job moved to its fallback model `fallback`, for `reason`.
pub fn fell_back(fallback: &str, reason: &'static str) {
    metrics::counter!(FALLBACKS, "fallback" => fallback.to_owned(), "reason" => reason)
        .increment(1);
}

/// Counts a failed Redis operation.
pub fn redis_error() {
    metrics::counter!(REDIS_ERRORS).increment(1);
}

/// Counts jobs this process turned final.
pub fn jobs_finished(status: JobStatus, code: Option<ErrorCode>, jobs: u64) {
    match code {
        Some(code) => {
            metrics::counter!(JOBS_FINISHED, "status" => status.as_str(), "code" => code.as_str())
        }
        None => metrics::counter!(JOBS_FINISHED, "status" => status.as_str()),
    }
    .increment(jobs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grafana_dashboard_uses_only_exported_names() {
        let dashboard = include_str!("../../deploy/grafana/genq.json");
        let used: std::collections::BTreeSet<&str> = regex::Regex::new(r"genq_[a-z_]+")
            .unwrap()
            .find_iter(dashboard)
            .map(|m| m.as_str())
            .collect();
        let unknown: Vec<_> = used
            .iter()
            .filter(|name| {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name);
                !names::ALL.contains(&base)
            })
            .collect();

        assert!(used.len() > 15, "the dashboard reads {used:?}");
        assert!(unknown.is_empty(), "not exported by genq: {unknown:?}");
    }

    #[test]
    fn the_operations_doc_describes_every_metric() {
        let doc = include_str!("../../docs/operations.md");
        let missing: Vec<_> = names::ALL
            .iter()
            .filter(|name| !doc.contains(&format!("`{name}")))
            .collect();

        assert!(missing.is_empty(), "docs/operations.md lacks {missing:?}");
    }
}
