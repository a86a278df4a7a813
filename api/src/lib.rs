//! genq's HTTP API. Clients submit batches of prompts; each is validated, recorded in PostgreSQL,
//! dispatched through Redis and answered at once with a task id.
//!
//! # Layout
//! - [`Config`]: flags and environment variables.
//! - [`Application`]: build -> port -> run_until_stopped; `main` and the tests drive the same code.
//! - `routes`: one module per resource (batch, generate, history, admin, health, metrics); `bulk`
//!   takes many jobs in one request; `events` follows a job as Server-Sent Events.
//! - `auth`: API keys, tenants, admin rights; `key_cache`: keys checked lately, so a poll costs
//!   one query, and the end of what a revoked key holds open; `rate_limit`: the per-key token
//!   buckets in Redis (requests, jobs); `moderation`: forbidden words in any disguise.
//! - `validate`: request checks; `extract`: the JSON body extractor; [`error`]: the error type.
//! - `serve`: the HTTP server loop with its slow-client limits; `detach`: requests run to their
//!   end when their client leaves.
//! - `openapi`: the OpenAPI 3.1 document (served with Swagger UI by `routes::docs`).
//! - [`webhooks`]: calling each job's `callback_url` once it is final.

mod auth;
mod detach;
pub mod error;
mod extract;
mod key_cache;
mod moderation;
pub mod openai;
mod openapi;
mod rate_limit;
mod routes;
mod routing;
mod serve;
mod validate;
pub mod webhooks;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::http::{HeaderValue, Method, header};
use axum::response::IntoResponse;
use axum::{Router, extract::DefaultBodyLimit};
use genq_model::ModelFile;
use genq_shared::{
    config::{DatabaseConfig, QueueConfig},
    db, events, queue,
    reconcile::{ReconcileConfig, Reconciler},
    startup,
    wait::JobWatch,
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    catch_panic::CatchPanicLayer, cors::CorsLayer, set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

pub use moderation::ForbiddenWords;

/// Largest request body accepted: 256 prompts of a few KB each.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Whether requests need an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    On,
    /// Local development only: every caller is an admin of the tenant `local`.
    Off,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "genq-api", about = "genq's HTTP API")]
pub struct Config {
    /// API keys (`genqctl keys create`) required on every route but /health, /ready, /metrics, the
    /// docs (/docs, /openapi.json) and the dashboard's page (/ui).
    #[arg(long, env = "GENQ_AUTH", value_enum, default_value = "on")]
    pub auth: AuthMode,
    /// How long a key that authenticated is trusted without asking PostgreSQL again. A revoked
    /// key is refused as soon as PostgreSQL tells this replica (milliseconds), or after this long
    /// should that notice be lost; 0 asks PostgreSQL on every request.
    #[arg(long, env = "GENQ_KEY_CACHE_SECS", default_value_t = 10)]
    pub key_cache_secs: u64,
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
    /// The name GENQ_MODEL goes by in the catalogue, which the API registers it under if it is not
    /// yet (as a worker does); defaults to the GGUF's `general.name`, else its file name.
    #[arg(long, env = "GENQ_MODEL_NAME")]
    pub model_name: Option<String>,
    /// Context per sequence; must match the workers' (default: the smaller of 512 and the model's).
    #[arg(long, env = "GENQ_CONTEXT_PER_SLOT")]
    pub context_per_slot: Option<u32>,
    #[arg(long, env = "GENQ_MAX_PROMPTS", default_value_t = 256)]
    pub max_prompts: usize,
    /// Longest prompt in characters (GPT-2's whole context is 1,024 tokens, a few thousand
    /// characters).
    #[arg(long, env = "GENQ_MAX_PROMPT_CHARS", default_value_t = 16_384)]
    pub max_prompt_chars: usize,
    #[arg(long, env = "GENQ_MAX_TOKENS_LIMIT", default_value_t = 512)]
    pub max_tokens_limit: u32,
    /// Most tokens one job may generate: prompts x max_tokens.
    #[arg(long, env = "GENQ_MAX_JOB_TOKENS", default_value_t = 32_768)]
    pub max_job_tokens: u64,
    /// A client must send each request head within this long, and take each part of an answer
    /// within as long, or its connection is closed; this also closes keep-alive connections idle
    /// for as long.
    #[arg(long, env = "GENQ_CLIENT_TIMEOUT_SECS", default_value_t = 30)]
    pub client_timeout_secs: u64,
    /// A client must send its whole request body within this long (408 otherwise).
    #[arg(long, env = "GENQ_REQUEST_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub request_body_timeout_secs: u64,
    /// Comma-separated words that make a prompt refused: whole words, in any case, in any
    /// disguise (fullwidth letters, lookalike letters of other scripts, invisible characters).
    #[arg(
        long,
        env = "GENQ_FORBIDDEN_WORDS",
        value_delimiter = ',',
        default_value = "hate,violence"
    )]
    pub forbidden_words: Vec<String>,
    /// A file of further forbidden words, one a line (`#` starts a comment).
    #[arg(long, env = "GENQ_FORBIDDEN_WORDS_FILE")]
    pub forbidden_words_file: Option<PathBuf>,
    /// A client must send a whole file to `POST /v1/files` within this long (408 otherwise).
    #[arg(long, env = "GENQ_UPLOAD_TIMEOUT_SECS", default_value_t = 600)]
    pub upload_timeout_secs: u64,
    /// How long `POST /generate` waits for its job before answering 202 with the task id, and
    /// `/v1/completions` and `/v1/chat/completions` before answering 504 (a stream: for a worker
    /// to start it).
    #[arg(long, env = "GENQ_GENERATE_TIMEOUT_SECS", default_value_t = 60)]
    pub generate_timeout_secs: u64,
    #[arg(long, env = "GENQ_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
    /// Claims a job may have before a lost worker or a transient failure fails it for good.
    #[arg(long, env = "GENQ_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: i32,
    /// A job's deadline when the request gives no `timeout_secs`.
    #[arg(long, env = "GENQ_JOB_TIMEOUT_SECS", default_value_t = 600)]
    pub job_timeout_secs: u64,
    /// The largest `timeout_secs` a request may ask for.
    #[arg(long, env = "GENQ_JOB_TIMEOUT_MAX_SECS", default_value_t = 86_400)]
    pub job_timeout_max_secs: u64,
    /// Origins (comma-separated, e.g. `https://app.example.com`) whose browser pages may call
    /// the API; none by default, so browsers refuse cross-origin calls.
    #[arg(long, env = "GENQ_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    #[command(flatten)]
    pub reconcile: ReconcileConfig,
    #[command(flatten)]
    pub webhooks: webhooks::WebhookConfig,
    /// How often the reconciler runs; 0 turns it off in this process.
    #[arg(long, env = "GENQ_RECONCILE_INTERVAL_SECS", default_value_t = 5)]
    pub reconcile_interval_secs: u64,
}

#[derive(Clone)]
pub struct AppState {
    db: PgPool,
    /// The deployment's queue namespace (GENQ_QUEUE); each model's queue is under it.
    queue_name: String,
    /// The model catalogue, for routing requests to models.
    models: Arc<routing::ModelRouter>,
    redis: redis::aio::ConnectionManager,
    watch: JobWatch,
    limits: Arc<validate::Limits>,
    max_attempts: i32,
    generate_wait: Duration,
    model_name: Option<String>,
    auth_enabled: bool,
    key_cache: Arc<key_cache::KeyCache>,
    rate_limiter: rate_limit::RateLimiter,
    body_timeout: Duration,
    /// The model's chat template, for `/v1/chat/completions` (genq's plain one without).
    chat_template: Option<Arc<openai::chat::ChatTemplate>>,
    /// Wakes this replica's batch runner (a batch created or cancelled here).
    batch_runner: Arc<tokio::sync::Notify>,
    upload_timeout: Duration,
    /// Uploads in progress on this replica, each holding a PostgreSQL connection (its transaction)
    /// until the file is whole.
    uploads: Arc<tokio::sync::Semaphore>,
    /// Whether `GENQ_WEBHOOK_SECRET` is set (else a callback needs its key's own secret).
    webhook_secret_configured: bool,
    /// Cancelled when shutdown begins: long waits answer at once and event streams end, so
    /// clients reconnect to another replica instead of holding this one up.
    stopping: CancellationToken,
}

/// Registers the API's own model in the catalogue, as a worker loading it would.
async fn register_model(pool: &PgPool, name: &str, path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(problem) = genq_shared::routing::check_name(name) {
        anyhow::bail!("GENQ_MODEL_NAME: {problem}");
    }
    let path = path.to_owned();
    let version =
        tokio::task::spawn_blocking(move || genq_shared::routing::file_version(&path)).await??;
    db::models::register_loaded(pool, name, &version).await?;
    Ok(())
}

pub struct Application {
    stopping: CancellationToken,
    watch: JobWatch,
    listener: TcpListener,
    router: Router,
    client_timeout: Duration,
    reconciler: Option<(Reconciler, Duration)>,
    deliverer: Option<webhooks::Deliverer>,
    /// What the OpenAI batch runner works with.
    batch_runner: AppState,
}

impl Application {
    /// Connects to PostgreSQL (creating and migrating the database) and Redis, loads the model's
    /// vocabulary if configured, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        genq_shared::metrics::start();
        let (pool, watch) = startup::patiently(
            "PostgreSQL",
            startup::PATIENCE,
            db::connect_unavailable,
            || async {
                let pool =
                    db::connect(&config.database.database_url, config.db_max_connections).await?;
                db::migrate(&pool).await?;
                let watch = JobWatch::listen(pool.clone())
                    .await
                    .context("listening for job status changes")?;
                Ok((pool, watch))
            },
        )
        .await?;
        let redis_client = queue::client(&config.queue.redis_url)?;
        let events_channel = events::channel(&config.queue.queue);
        let (redis, watch) = startup::patiently(
            "Redis",
            startup::PATIENCE,
            queue::connect_unavailable,
            || async {
                let redis = queue::connect(&config.queue).await?;
                let watch = watch
                    .clone()
                    .with_events(redis_client.clone(), events_channel.clone())
                    .await
                    .context("subscribing to job events")?;
                Ok((redis, watch))
            },
        )
        .await?;
        let context = match &config.model {
            Some(path) => {
                let path = path.clone();
                let model = tokio::task::spawn_blocking(move || ModelFile::read(&path)).await??;
                let context =
                    genq_model::context_per_slot(model.context_length(), config.context_per_slot);
                Some((Arc::new(model), context))
            }
            None => None,
        };
        let model_name = match (&context, &config.model) {
            (Some((model, _)), Some(path)) => {
                let name = config
                    .model_name
                    .clone()
                    .unwrap_or_else(|| model.name().to_owned());
                register_model(&pool, &name, path).await?;
                Some(name)
            }
            _ => None,
        };
        let chat_template = match context.as_ref().and_then(|(m, _)| m.chat_template()) {
            Some(source) => match openai::chat::ChatTemplate::new(
                &source.template,
                &source.bos_token,
                &source.eos_token,
            ) {
                Ok(template) => Some(Arc::new(template)),
                Err(e) => {
                    tracing::warn!(error = %e, "the model's chat template does not compile; chat uses genq's plain template");
                    None
                }
            },
            None => None,
        };
        let forbidden_words = ForbiddenWords::load(
            &config.forbidden_words,
            config.forbidden_words_file.as_deref(),
        )?;
        let limits = validate::Limits {
            max_prompts: config.max_prompts,
            max_prompt_chars: config.max_prompt_chars,
            max_tokens: config.max_tokens_limit,
            max_job_tokens: config.max_job_tokens,
            forbidden_words,
            context,
            default_timeout_secs: config.job_timeout_secs,
            max_timeout_secs: config.job_timeout_max_secs,
            webhook_allow_private: config.webhooks.webhook_allow_private,
        };
        let deliverer = webhooks::Deliverer::new(pool.clone(), &config.webhooks)?;
        let reconciler = (config.reconcile_interval_secs > 0).then(|| {
            Reconciler::new(
                pool.clone(),
                redis.clone(),
                config.queue.queue.clone(),
                config.reconcile.clone(),
            )
        });
        if config.auth == AuthMode::Off {
            tracing::warn!(
                "GENQ_AUTH=off: no API key is asked for and every caller is an admin; use this only for local development"
            );
        }
        let state = AppState {
            db: pool,
            queue_name: config.queue.queue.clone(),
            models: Arc::new(routing::ModelRouter::default()),
            rate_limiter: rate_limit::RateLimiter::new(redis.clone(), &config.queue.queue),
            auth_enabled: config.auth == AuthMode::On,
            key_cache: Arc::new(key_cache::KeyCache::new(
                Duration::from_secs(config.key_cache_secs),
                watch.key_changes(),
            )),
            body_timeout: Duration::from_secs(config.request_body_timeout_secs),
            webhook_secret_configured: config.webhooks.webhook_secret.is_some(),
            chat_template,
            batch_runner: Arc::new(tokio::sync::Notify::new()),
            upload_timeout: Duration::from_secs(config.upload_timeout_secs),
            // A fifth of the pool at most, so uploads never starve every other request.
            uploads: Arc::new(tokio::sync::Semaphore::new(
                (config.db_max_connections as usize / 5).max(1),
            )),
            redis,
            watch,
            model_name,
            limits: Arc::new(limits),
            max_attempts: config.max_attempts.max(1),
            generate_wait: Duration::from_secs(config.generate_timeout_secs),
            stopping: CancellationToken::new(),
        };
        let stopping = state.stopping.clone();
        let watch = state.watch.clone();
        let batch_runner = state.clone();
        let mut router = with_answer_layers(routes::router(state));
        if let Some(cors) = cors_layer(&config.cors_origins)? {
            router = router.layer(cors);
        }
        let router = router
            .layer(axum::middleware::from_fn(routes::metrics::record))
            .layer(axum::middleware::from_fn(detach::run_to_completion))
            .layer(TraceLayer::new_for_http());
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding the API to {}", config.addr))?;
        Ok(Application {
            stopping,
            watch,
            listener,
            router,
            client_timeout: Duration::from_secs(config.client_timeout_secs),
            reconciler: reconciler
                .map(|r| (r, Duration::from_secs(config.reconcile_interval_secs))),
            deliverer,
            batch_runner,
        })
    }

    /// The waiters this API wakes (for tests: whether a long poll or stream is waiting yet).
    pub fn job_watch(&self) -> JobWatch {
        self.watch.clone()
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
        let (stop_reconciler, reconciler_stopped) = tokio::sync::oneshot::channel::<()>();
        let reconciling = self.reconciler.map(|(reconciler, every)| {
            tokio::spawn(reconciler.run(every, async move {
                let _ = reconciler_stopped.await;
            }))
        });
        let delivering = self
            .deliverer
            .map(|deliverer| tokio::spawn(deliverer.run(self.stopping.clone())));
        let wake = self.batch_runner.batch_runner.clone();
        let running_batches = tokio::spawn(openai::batch_runner::run(
            self.batch_runner,
            wake,
            self.stopping.clone(),
        ));
        let stopping = self.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.cancel();
        };
        serve::serve(self.listener, self.router, self.client_timeout, shutdown).await;
        drop(stop_reconciler);
        if let Some(task) = reconciling {
            let _ = task.await;
        }
        if let Some(task) = delivering {
            let _ = task.await;
        }
        let _ = running_batches.await;
        Ok(())
    }
}

/// What every answer goes through: a handler that panics answers a JSON 500 (not a dropped
/// connection), and answers are JSON for programs: never sniffed as another type, never framed,
/// and no active content may load from them.
fn with_answer_layers(router: Router) -> Router {
    router
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                // The panic's message and place are already logged by the panic hook.
                error::ApiError::Internal(anyhow::anyhow!("a request handler panicked"))
                    .into_response()
            },
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
}

/// CORS for the configured origins only; `None` (no CORS headers at all) when there are none.
fn cors_layer(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(|o| {
            HeaderValue::from_str(o)
                .with_context(|| format!("GENQ_CORS_ORIGINS: invalid origin {o:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::HeaderName::from_static("idempotency-key"),
                header::HeaderName::from_static("x-api-key"),
            ]),
    ))
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, extract::Request, routing::get};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_handler_that_panics_answers_500_in_json_with_the_security_headers() {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let router = with_answer_layers(Router::new().route("/boom", get(boom)));

        let response = router
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();

        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(
            response.headers()["content-security-policy"],
            "default-src 'none'; frame-ancestors 'none'"
        );
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "error": { "code": "internal", "message": "internal error" } })
        );
    }
}
