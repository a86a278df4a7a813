//! What genq's API, workers and genqctl share: configuration, the job and generation types, all
//! PostgreSQL access, and the Redis dispatch wiring.
//!
//! # Layout
//! - [`config`]: settings groups (clap flags with environment variables).
//! - [`types`]: JSON shapes of jobs, results and generations.
//! - [`db`]: connecting, migrations, and the data access of each table.
//! - [`queue`]: apalis/Redis dispatch and the removal of waiting tasks.
//! - [`reconcile`]: re-dispatching what Redis lost, re-queueing jobs of lost workers, retention.
//! - [`redact`]: the output filter (card numbers, SSNs, e-mail addresses).
//! - [`wait`]: waking waiters of a job when its status changes (`LISTEN`) or it has new events.
//! - [`events`]: a running job's live events (decoded text, finished prompts) in Redis streams.
//! - [`startup`]: waiting at start for PostgreSQL and Redis to accept the services.
//! - [`telemetry`]: tracing setup for the binaries.
//! - [`metrics`]: the Prometheus metrics' names and the process's recorder.
//! - [`webhook_signing`]: signing webhooks as Standard Webhooks does.

pub mod config;
pub mod db;
pub mod events;
pub mod metrics;
pub mod queue;
pub mod reconcile;
pub mod redact;
pub mod routing;
pub mod startup;
pub mod telemetry;
pub mod types;
pub mod wait;
pub mod webhook_signing;
