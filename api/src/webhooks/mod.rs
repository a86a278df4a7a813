//! Webhooks: once a job with a `callback_url` is final, the API POSTs the job (as
//! `GET /batch_result` shows it) to that URL, signed, and retries with backoff until the receiver
//! answers 2xx or `GENQ_WEBHOOK_RETRY_FOR_SECS` has passed. The delivery is owed in PostgreSQL by
//! the transaction that finalized the job (a trigger), and each API replica's [`Deliverer`] takes
//! due deliveries under a lease (`GENQ_WEBHOOK_LEASE_SECS`), so none is lost to an API or worker
//! restart; a receiver may see one twice (after a crash mid-call) and tells by `webhook-id`.
//!
//! - [`address`]: which URLs are accepted, and the resolver that keeps calls off private
//!   addresses.
//! - [`fairness`]: caps per tenant and per destination, and the breaker that pauses a
//!   destination that keeps failing.

pub mod address;
mod fairness;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::Context;
use genq_shared::{
    config::secret,
    db::{
        self, Scope,
        webhooks::{AttemptOutcome, DueDelivery, Standing},
    },
    metrics::{self as genq_metrics, names},
    webhook_signing,
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often an idle deliverer looks for due deliveries.
const POLL: Duration = Duration::from_millis(500);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Most of the receiver's answer kept in the attempt's error, and read to find it.
const ERROR_BODY_CHARS: usize = 200;
const ERROR_BODY_BYTES: usize = 4096;

#[derive(Debug, Clone, clap::Args)]
pub struct WebhookConfig {
    /// Signs every webhook (Standard Webhooks, HMAC-SHA256) unless the job's key has its own
    /// secret (`genqctl keys webhook-secret`); `whsec_<base64>` or any string. Without either, a
    /// `callback_url` is refused.
    #[arg(long, env = "GENQ_WEBHOOK_SECRET", hide_env_values = true, value_parser = secret)]
    pub webhook_secret: Option<SecretString>,
    /// Allow callback URLs to private, loopback and link-local addresses (refused by default: the
    /// API would call into its own network).
    #[arg(long, env = "GENQ_WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,
    /// Deliveries this process makes at once; 0: none (another replica delivers).
    #[arg(long, env = "GENQ_WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub webhook_concurrency: usize,
    /// Of those, the most for one tenant's jobs, so that one tenant's slow receivers cannot take
    /// every slot.
    #[arg(long, env = "GENQ_WEBHOOK_TENANT_CONCURRENCY", default_value_t = 4)]
    pub webhook_tenant_concurrency: usize,
    /// Of those, the most for one tenant's destination (scheme, host and port).
    #[arg(
        long,
        env = "GENQ_WEBHOOK_DESTINATION_CONCURRENCY",
        default_value_t = 4
    )]
    pub webhook_destination_concurrency: usize,
    /// How long one call may take, connecting included.
    #[arg(long, env = "GENQ_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,
    /// Failures in a row (no answer, a timeout, 429 or 5xx) after which a destination is paused;
    /// 0 never pauses one.
    #[arg(long, env = "GENQ_WEBHOOK_PAUSE_AFTER_FAILURES", default_value_t = 5)]
    pub webhook_pause_after_failures: u32,
    /// A failing destination's first pause; each further one in a row doubles it, up to an hour.
    /// After a pause one call probes the destination.
    #[arg(long, env = "GENQ_WEBHOOK_PAUSE_SECS", default_value_t = 30)]
    pub webhook_pause_secs: u64,
    /// The first retry's wait; each further one doubles it, up to an hour.
    #[arg(long, env = "GENQ_WEBHOOK_RETRY_MIN_MS", default_value_t = 5_000)]
    pub webhook_retry_min_ms: u64,
    /// How long after the job turns final attempts go on before the delivery is given up.
    #[arg(long, env = "GENQ_WEBHOOK_RETRY_FOR_SECS", default_value_t = 86_400)]
    pub webhook_retry_for_secs: u64,
    /// A taken delivery is another replica's to make after this long, should its own deliverer
    /// die mid-call; longer than a call may take (GENQ_WEBHOOK_TIMEOUT_SECS).
    #[arg(long, env = "GENQ_WEBHOOK_LEASE_SECS", default_value_t = 60)]
    pub webhook_lease_secs: u64,
}

/// Takes due deliveries and makes them, until stopped.
pub struct Deliverer {
    db: PgPool,
    client: reqwest::Client,
    secret: Option<SecretString>,
    allow_private: bool,
    concurrency: usize,
    retry_min: Duration,
    retry_for: Duration,
    lease: Duration,
    /// Never held across an await.
    fairness: Mutex<fairness::Fairness>,
}

impl Deliverer {
    /// `None` when this process makes no deliveries.
    pub fn new(db: PgPool, config: &WebhookConfig) -> anyhow::Result<Option<Deliverer>> {
        if config.webhook_concurrency == 0 {
            return Ok(None);
        }
        anyhow::ensure!(
            config.webhook_timeout_secs < config.webhook_lease_secs,
            "GENQ_WEBHOOK_TIMEOUT_SECS ({}) must be shorter than GENQ_WEBHOOK_LEASE_SECS ({}): \
             a call still running when its lease ends is made again by another replica",
            config.webhook_timeout_secs,
            config.webhook_lease_secs
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.webhook_timeout_secs.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and reach the host itself, past the address check.
            .no_proxy()
            .dns_resolver(Arc::new(address::PublicOnly {
                allow_private: config.webhook_allow_private,
            }))
            .user_agent(concat!("genq-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the webhook HTTP client")?;
        Ok(Some(Deliverer {
            db,
            client,
            secret: config.webhook_secret.clone(),
            allow_private: config.webhook_allow_private,
            concurrency: config.webhook_concurrency,
            retry_min: Duration::from_millis(config.webhook_retry_min_ms.max(1)),
            retry_for: Duration::from_secs(config.webhook_retry_for_secs),
            lease: Duration::from_secs(config.webhook_lease_secs.max(1)),
            fairness: Mutex::new(fairness::Fairness::new(fairness::Limits {
                per_tenant: config.webhook_tenant_concurrency,
                per_destination: config.webhook_destination_concurrency,
                pause_after: config.webhook_pause_after_failures,
                pause: Duration::from_secs(config.webhook_pause_secs.max(1)),
            })),
        }))
    }

    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        let mut calls = JoinSet::new();
        let mut failing = false;
        while !stop.is_cancelled() {
            // Rounds, each taking at most one delivery per tenant and per destination, until the
            // slots are full or nothing more may be taken now.
            let mut took_any = false;
            while calls.len() < this.concurrency {
                let room = (this.concurrency - calls.len()) as i64;
                let skip = this.fairness().skip(Instant::now());
                let taken = match db::webhooks::take_due(&this.db, room, this.lease, &skip).await {
                    Ok(taken) => {
                        failing = false;
                        taken
                    }
                    Err(e) => {
                        genq_metrics::postgres_error();
                        // Once per outage, not at every poll.
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(error = %e, "webhooks: reading due deliveries failed");
                        }
                        Vec::new()
                    }
                };
                if taken.is_empty() {
                    break;
                }
                took_any = true;
                for due in taken {
                    this.fairness().started(&due);
                    let this = this.clone();
                    calls.spawn(async move { this.deliver(due).await });
                }
            }
            if !took_any {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    Some(_) = calls.join_next(), if !calls.is_empty() => {}
                    _ = stop.cancelled() => {}
                }
            }
            while calls.try_join_next().is_some() {}
        }
        // Calls in flight finish (bounded by the call timeout); their leases cover the rest.
        while calls.join_next().await.is_some() {}
    }

    fn fairness(&self) -> MutexGuard<'_, fairness::Fairness> {
        // Poisoned only by a panic while held, and no method of Fairness panics.
        self.fairness.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes one attempt and frees its slot.
    async fn deliver(&self, due: DueDelivery) {
        let health = self.attempt(&due).await;
        let paused = self.fairness().finished(&due, health, Instant::now());
        if let Some(pause) = paused {
            metrics::counter!(names::WEBHOOK_DESTINATIONS_PAUSED).increment(1);
            tracing::warn!(
                destination = %destination(&due.url),
                pause = ?pause,
                "webhook destination keeps failing; paused, then probed with one call"
            );
        }
    }

    async fn attempt(&self, due: &DueDelivery) -> fairness::Health {
        let id = format!("{}_{}", due.job_id, due.round);
        let destination = destination(&due.url);
        let outcome = match self.call(due, &id).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // The job is gone (deleted meanwhile), or PostgreSQL failed; the lease retries it.
                tracing::warn!(error = %e, task_id = %due.job_id, %destination, "webhook not attempted");
                return fairness::Health::Unknown;
            }
        };
        let health = fairness::Health::of(outcome.status_code);
        let retry_in = backoff(self.retry_min, due.round_attempt);
        let recorded =
            db::webhooks::record_attempt(&self.db, due, &outcome, retry_in, self.retry_for).await;
        let standing = match recorded {
            Ok(standing) => standing,
            Err(e) => {
                // The lease brings it back: the receiver may get this call twice (same id).
                genq_metrics::postgres_error();
                tracing::warn!(
                    error = %e,
                    task_id = %due.job_id,
                    %destination,
                    "webhook attempt not recorded"
                );
                return health;
            }
        };
        let label = match standing {
            Standing::Delivered => "delivered",
            Standing::Retrying => "retrying",
            Standing::GaveUp => "gave_up",
            Standing::Gone => "gone",
        };
        metrics::counter!(names::WEBHOOK_ATTEMPTS, "outcome" => label).increment(1);
        match standing {
            Standing::Delivered => {
                tracing::info!(
                    task_id = %due.job_id,
                    attempt = due.attempt,
                    %destination,
                    "webhook delivered"
                )
            }
            Standing::GaveUp => tracing::warn!(
                task_id = %due.job_id,
                attempts = due.attempt,
                %destination,
                error = outcome.error,
                "webhook given up"
            ),
            _ => tracing::info!(
                task_id = %due.job_id,
                attempt = due.attempt,
                %destination,
                error = outcome.error,
                retry_in = ?retry_in,
                "webhook attempt failed"
            ),
        }
        health
    }

    /// One call; `Err` only when there is nothing to send: the job is gone, or PostgreSQL failed.
    async fn call(&self, due: &DueDelivery, id: &str) -> anyhow::Result<AttemptOutcome> {
        // reqwest does not resolve an address written in the URL: check it here, at each call, as
        // the setting may have changed since the job was accepted.
        if let Err(reason) = address::check_url(&due.url, self.allow_private) {
            return Ok(AttemptOutcome {
                status_code: None,
                error: Some(reason),
                duration: Duration::ZERO,
                delivered: false,
            });
        }
        let job = db::jobs::view(&self.db, due.job_id, Scope::All)
            .await?
            .context("the job is gone")?;
        let secret = due
            .key_secret
            .clone()
            .or_else(|| self.secret.as_ref().map(|s| s.expose_secret().to_owned()));
        let Some(secret) = secret else {
            // Submission refuses this; the secret was removed since. Recorded, and retried.
            return Ok(AttemptOutcome {
                status_code: None,
                error: Some(
                    "no webhook secret: neither the job's key nor GENQ_WEBHOOK_SECRET has one"
                        .into(),
                ),
                duration: Duration::ZERO,
                delivered: false,
            });
        };
        let body = serde_json::to_vec(&job)?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = webhook_signing::signature(&secret, id, timestamp, &body);
        let started = std::time::Instant::now();
        let sent = self
            .client
            .post(&due.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => {
                let status = response.status();
                let delivered = status.is_success();
                let error = if delivered {
                    None
                } else {
                    let text = body_start(response).await;
                    Some(format!("the receiver answered {status}: {text}"))
                };
                AttemptOutcome {
                    status_code: Some(status.as_u16()),
                    error,
                    duration: started.elapsed(),
                    delivered,
                }
            }
            Err(e) => AttemptOutcome {
                status_code: None,
                // reqwest names the whole URL, which the logs must not carry (see `destination`).
                error: Some(error_chain(&e.without_url())),
                duration: started.elapsed(),
                delivered: false,
            },
        };
        Ok(outcome)
    }
}

/// The start of a receiver's answer, read no further than needed: it may be long, or endless.
async fn body_start(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes)
        .chars()
        .take(ERROR_BODY_CHARS)
        .collect()
}

/// A callback URL as logs show it: scheme, host and port. The path and query often carry the
/// receiver's own tokens.
fn destination(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// The wait after attempt `attempt` failed: `min`, doubled per attempt, at most an hour.
fn backoff(min: Duration, attempt: i32) -> Duration {
    let doublings = attempt.clamp(1, 30) as u32 - 1;
    min.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// reqwest's error with its causes: "error sending request" alone says nothing.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_an_hour() {
        let min = Duration::from_secs(5);

        assert_eq!(backoff(min, 1), Duration::from_secs(5));
        assert_eq!(backoff(min, 2), Duration::from_secs(10));
        assert_eq!(backoff(min, 5), Duration::from_secs(80));
        assert_eq!(backoff(min, 40), MAX_BACKOFF);
    }
}
