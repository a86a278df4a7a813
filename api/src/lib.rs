//! genq's HTTP API. Clients submit batches of prompts; each is validated, recorded in PostgreSQL,
//! dispatched through Redis and answered at once with a task id.
//!
//! # Layout
//! - [`Config`]: flags and environment variables.
//! - [`Application`]: build -> port -> run_until_stopped; `main` and the tests drive the same code.
//! - `routes`: one module per resource (batch, generate, history, health).
//! - `validate`: request checks; `extract`: the JSON body extractor; [`error`]: the error type.

pub mod error;
mod extract;
mod routes;
mod validate;

use std::{collections::HashSet, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, extract::DefaultBodyLimit};
use genq_engine::Model;
use genq_shared::{
    config::{DatabaseConfig, QueueConfig},
    db, queue,
    wait::FinalJobs,
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use validate::has_forbidden_word;

/// Largest request body accepted: 256 prompts of a few KB each.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "genq-api", about = "genq's HTTP API")]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub queue: QueueConfig,
    #[arg(long, env = "GENQ_API_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,
    /// The workers' GGUF model. With it the API refuses, up front, prompts that cannot fit the
    /// context; without it such jobs fail at the worker.
    #[arg(long, env = "GENQ_MODEL")]
    pub model: Option<PathBuf>,
    /// Context per sequence; must match the workers' (default: the smaller of 512 and the model's).
    #[arg(long, env = "GENQ_CONTEXT_PER_SLOT")]
    pub context_per_slot: Option<u32>,
    #[arg(long, env = "GENQ_MAX_PROMPTS", default_value_t = 256)]
    pub max_prompts: usize,
    #[arg(long, env = "GENQ_MAX_TOKENS_LIMIT", default_value_t = 512)]
    pub max_tokens_limit: u32,
    /// Comma-separated words that make a prompt refused (whole words, any case).
    #[arg(
        long,
        env = "GENQ_FORBIDDEN_WORDS",
        value_delimiter = ',',
        default_value = "hate,violence"
    )]
    pub forbidden_words: Vec<String>,
    /// How long `POST /generate` waits for its job before answering 202 with the task id.
    #[arg(long, env = "GENQ_GENERATE_TIMEOUT_SECS", default_value_t = 60)]
    pub generate_timeout_secs: u64,
    #[arg(long, env = "GENQ_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
}

#[derive(Clone)]
pub struct AppState {
    db: PgPool,
    queue: queue::Storage,
    queue_name: String,
    redis: redis::aio::ConnectionManager,
    finals: FinalJobs,
    limits: Arc<validate::Limits>,
    generate_wait: Duration,
    model_name: Option<String>,
}

pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Connects to PostgreSQL (creating and migrating the database) and Redis, loads the model's
    /// vocabulary if configured, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let pool = db::connect(&config.database.database_url, config.db_max_connections).await?;
        db::migrate(&pool).await?;
        let (storage, redis) = queue::connect(&config.queue).await?;
        let finals = FinalJobs::listen(pool.clone())
            .await
            .context("listening for finished jobs")?;
        let context = match &config.model {
            Some(path) => {
                let path = path.clone();
                let model =
                    tokio::task::spawn_blocking(move || Model::load_vocabulary(&path)).await??;
                let context =
                    genq_engine::context_per_slot(model.context_length(), config.context_per_slot);
                Some((Arc::new(model), context))
            }
            None => None,
        };
        let limits = validate::Limits {
            max_prompts: config.max_prompts,
            max_tokens: config.max_tokens_limit,
            forbidden_words: config
                .forbidden_words
                .iter()
                .map(|w| w.trim().to_lowercase())
                .filter(|w| !w.is_empty())
                .collect::<HashSet<_>>(),
            context,
        };
        let state = AppState {
            db: pool,
            queue: storage,
            queue_name: config.queue.queue.clone(),
            redis,
            finals,
            model_name: limits.context.as_ref().map(|(m, _)| m.name().to_owned()),
            limits: Arc::new(limits),
            generate_wait: Duration::from_secs(config.generate_timeout_secs),
        };
        let router = routes::router()
            .with_state(state)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .layer(TraceLayer::new_for_http());
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding the API to {}", config.addr))?;
        Ok(Application { listener, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")
    }
}
