//! genq's worker: takes job ids from Redis (apalis), runs their prompts through the llama.cpp
//! engine on its own thread, and stores results in PostgreSQL. Replicas scale independently.
//!
//! # Layout
//! - [`Config`]: flags and environment variables.
//! - [`run`] / [`run_with_model`]: start everything, serve until the shutdown future resolves,
//!   finish the jobs in hand, then stop.
//! - `consumer`: takes job ids from Redis through apalis, restarting after Redis failures.
//! - `runner`: one job's life (claim, generate, store).
//! - `reachability`: whether PostgreSQL answers; the consumer stops while it does not.
//! - `registry`: the worker's registration, heartbeat and job leases in PostgreSQL.
//! - `cache`: the result cache for deterministic requests.
//! - `live`: running jobs' live events (decoded text, finished prompts) published to Redis.
//! - `http`: the worker's own listener for `/health`, `/ready` and `/metrics`.

mod cache;
mod consumer;
mod http;
mod live;
mod reachability;
mod registry;
mod runner;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt;
use genq_engine::{Engine, EngineConfig, Kernel, Model, Placement, Tuning};
use genq_shared::{
    config::{DatabaseConfig, QueueConfig},
    db, queue, startup,
    wait::JobWatch,
};

use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};

use crate::{
    cache::ResultCache,
    consumer::{Consumer, Refill},
    http::Probe,
    live::LiveEvents,
    registry::HeldJobs,
    runner::JobRunner,
};

/// On shutdown, how long the job consumer (apalis's worker) may take to stop once the jobs in
/// hand have ended, before it is dropped.
const CONSUMER_STOP_PATIENCE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "genq-worker", about = "genq's inference worker")]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub queue: QueueConfig,
    /// GGUF model to serve.
    #[arg(long, env = "GENQ_MODEL")]
    pub model: PathBuf,
    /// The name jobs ask for this model by (`model` in a request); defaults to the GGUF's
    /// `general.name`, else its file name. Registered in the catalogue if it is not yet.
    #[arg(long, env = "GENQ_MODEL_NAME")]
    pub model_name: Option<String>,
    /// Sequences decoded together; defaults to 16 per core (16..=64), 64 on cuda builds.
    #[arg(long, env = "GENQ_SLOTS")]
    pub slots: Option<u32>,
    /// CPU threads for llama.cpp; defaults to every core.
    #[arg(long, env = "GENQ_THREADS")]
    pub threads: Option<i32>,
    /// A file every worker on this host locks while it decodes, so that several workers take
    /// turns using all cores instead of slowing each other down; `off` disables it. Defaults to
    /// `genq-decode.lock` in the temp dir, off on cuda builds or when GENQ_THREADS is set (an
    /// explicit thread budget per worker).
    #[arg(long, env = "GENQ_DECODE_LOCK")]
    pub decode_lock: Option<String>,
    /// Fault injection (tests, the fault suite; only in builds with the `fault-injection`
    /// feature): the engine panics after generating this many tokens, as a llama.cpp crash would.
    #[cfg(feature = "fault-injection")]
    #[arg(long, env = "GENQ_FAULT_ENGINE_PANIC_AFTER_TOKENS", hide = true)]
    pub fault_engine_panic_after_tokens: Option<u64>,
    /// Layers to offload to the GPU (cuda builds); defaults to all.
    #[arg(long, env = "GENQ_N_GPU_LAYERS")]
    pub n_gpu_layers: Option<u32>,
    /// Context (prompt + new tokens) per sequence; defaults to the smaller of 512 and the model's.
    /// The KV cache holds slots x this many tokens.
    #[arg(long, env = "GENQ_CONTEXT_PER_SLOT")]
    pub context_per_slot: Option<u32>,
    /// Whether a prompt that begins as a running one does copies the KV cache of the common part
    /// (at least 16 tokens) instead of decoding it again: `on` or `off`.
    #[arg(long, env = "GENQ_PREFIX_SHARING", value_enum, default_value = "on")]
    pub prefix_sharing: Switch,
    /// One KV cache for every sequence instead of one each (llama.cpp's kv_unified). Seeded
    /// results then depend on the batch around them: not recommended.
    #[arg(long, env = "GENQ_KV_UNIFIED", value_enum, default_value = "off")]
    pub kv_unified: Switch,
    /// Flash attention: `on`, `off`, or `auto` (llama.cpp decides).
    #[arg(long, env = "GENQ_FLASH_ATTN", value_enum, default_value = "auto")]
    pub flash_attn: FlashAttn,
    /// Most tokens llama.cpp computes at once within a decode step (its ubatch).
    #[arg(long, env = "GENQ_UBATCH_TOKENS", default_value_t = 512)]
    pub ubatch_tokens: u32,
    /// Attention kernel on decode steps: `genq` (genq's own, compiled into llama.cpp; see
    /// docs/performance.md, "Attention kernel") or `llama-cpp` (ggml's). Seeded results differ slightly
    /// between the two.
    #[arg(
        long,
        env = "GENQ_ATTENTION_KERNEL",
        value_enum,
        default_value = "genq"
    )]
    pub attention_kernel: Kernel,
    /// Matrix kernel for Q8_0 weights: `genq` (genq's own, compiled into llama.cpp; see
    /// docs/performance.md, "Matrix kernel") or `llama-cpp` (llamafile's tinyBLAS and ggml's).
    /// Seeded results differ slightly between the two.
    #[arg(long, env = "GENQ_MATMUL_KERNEL", value_enum, default_value = "genq")]
    pub matmul_kernel: Kernel,
    /// Jobs taken at a time; defaults to the number of slots.
    #[arg(long, env = "GENQ_MAX_JOBS")]
    pub max_jobs: Option<usize>,
    /// Name prefix; a unique suffix is always added so replicas never share a name.
    #[arg(long, env = "GENQ_WORKER_NAME")]
    pub name: Option<String>,
    /// How often an idle worker asks Redis for work.
    #[arg(long, env = "GENQ_POLL_INTERVAL_MS", default_value_t = 100)]
    pub poll_interval_ms: u64,
    /// How long a deterministic result (explicit seed, or temperature 0) answers identical
    /// requests without inference; 0 turns the result cache off.
    #[arg(long, env = "GENQ_RESULT_CACHE_TTL_SECS", default_value_t = 300)]
    pub result_cache_ttl_secs: u64,
    /// Where the worker serves `/health`, `/ready` and `/metrics`; `off` for nowhere. Defaults to
    /// 127.0.0.1:9464, or a free port when another worker on the host has it.
    #[arg(long, env = "GENQ_WORKER_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// On shutdown, how long jobs in hand may take to finish; the reconciler re-queues the rest.
    #[arg(long, env = "GENQ_SHUTDOWN_TIMEOUT_SECS", default_value_t = 600)]
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlashAttn {
    Auto,
    On,
    Off,
}

/// Loads the model from `config.model`, then serves as [`run_with_model`] does. The HTTP listener
/// answers (not ready) while the model loads.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (probe, _stop_http) = start_http(&config).await?;
    let path = config.model.clone();
    let placement = Placement {
        n_gpu_layers: config.n_gpu_layers,
    };
    let loading = Instant::now();
    let model = tokio::task::spawn_blocking(move || Model::load(&path, placement)).await??;
    metrics::gauge!(genq_shared::metrics::names::MODEL_LOAD).set(loading.elapsed());
    serve(config, Arc::new(model), shutdown, probe).await
}

/// Serves jobs with an already loaded model until `shutdown` resolves, then gives the jobs in hand
/// up to the shutdown timeout to finish and returns. Should the inference engine stop (a llama.cpp
/// crash), the worker stops taking jobs, hands the ones it holds back to the queue at once and
/// returns an error, so that its supervisor restarts it.
pub async fn run_with_model(
    config: Config,
    model: Arc<Model>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (probe, _stop_http) = start_http(&config).await?;
    serve(config, model, shutdown, probe).await
}

/// Starts recording metrics and the worker's HTTP listener, which serves until the guard drops.
async fn start_http(config: &Config) -> anyhow::Result<(Probe, DropGuard)> {
    genq_shared::metrics::start();
    let probe = Probe::default();
    let stop = CancellationToken::new();
    http::start(config.http_addr.as_deref(), probe.clone(), stop.clone()).await?;
    Ok((probe, stop.drop_guard()))
}

async fn serve(
    config: Config,
    model: Arc<Model>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    probe: Probe,
) -> anyhow::Result<()> {
    // Both before the worker registers: it must not show as live while it cannot take jobs.
    let (pool, watch) = startup::patiently(
        "PostgreSQL",
        startup::PATIENCE,
        db::connect_unavailable,
        || async {
            let pool = db::connect(&config.database.database_url, 8).await?;
            db::migrate(&pool).await?;
            let watch = JobWatch::listen(pool.clone()).await?;
            Ok((pool, watch))
        },
    )
    .await?;
    let redis = startup::patiently(
        "Redis",
        startup::PATIENCE,
        queue::connect_unavailable,
        || queue::connect(&config.queue),
    )
    .await?;
    let engine_config = EngineConfig {
        slots: config.slots.unwrap_or_else(genq_engine::default_slots),
        threads: config.threads.unwrap_or(EngineConfig::default().threads),
        context_per_slot: config.context_per_slot,
        decode_lock: decode_lock(&config),
        #[cfg(feature = "fault-injection")]
        panic_after_tokens: config.fault_engine_panic_after_tokens,
        share_prefixes: config.prefix_sharing == Switch::On,
        tuning: Tuning {
            kv_unified: config.kv_unified == Switch::On,
            flash_attention: match config.flash_attn {
                FlashAttn::Auto => None,
                FlashAttn::On => Some(true),
                FlashAttn::Off => Some(false),
            },
            ubatch_tokens: config.ubatch_tokens,
        },
        ..EngineConfig::default()
    };
    genq_engine::use_attention_kernel(config.attention_kernel);
    genq_engine::use_matmul_kernel(config.matmul_kernel);
    let genq_kernels_chosen =
        [config.attention_kernel, config.matmul_kernel].contains(&Kernel::Genq);
    if genq_kernels_chosen && !genq_engine::genq_kernels_available() {
        tracing::warn!(
            "genq's attention and matrix kernels are not in this build (the upstream-kernels feature, or a CPU target without AVX2, FMA and F16C): ggml's run instead"
        );
    }
    // Which instruction sets this build of llama.cpp uses: a distribution build on a CPU with
    // more than it was compiled for leaves them unused (docs/performance.md, "CPU builds").
    tracing::info!(
        llama_cpp = %genq_engine::llama_system_info(),
        attention_kernel = ?config.attention_kernel,
        matmul_kernel = ?config.matmul_kernel,
        "llama.cpp build"
    );
    if engine_config.tuning.kv_unified {
        tracing::warn!(
            "GENQ_KV_UNIFIED=on: seeded results now depend on the batch around them (not reproducible, and the result cache may answer with results another batch would not give)"
        );
    }
    let engine_config_lock = engine_config.decode_lock.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::start(model, engine_config)).await??;
    let engine_failed = engine.stopped();
    let name = unique_name(config.name.as_deref());
    let model_name = config
        .model_name
        .clone()
        .unwrap_or_else(|| engine.model().name().to_owned());
    if let Some(problem) = genq_shared::routing::check_name(&model_name) {
        anyhow::bail!("GENQ_MODEL_NAME: {problem}");
    }
    let model_file = engine.model().path().to_owned();
    let model_version =
        tokio::task::spawn_blocking(move || genq_shared::routing::file_version(&model_file))
            .await??;
    db::models::register_loaded(&pool, &model_name, &model_version).await?;
    let model_queue = queue::model_queue(&config.queue.queue, &model_name);
    let held = Arc::new(HeldJobs::default());
    let engine_stats = engine.stats();
    let registration = registry::register(
        &pool,
        &name,
        &model_name,
        engine.slots(),
        held.clone(),
        engine_stats.clone(),
    )
    .await?;
    tracing::info!(
        worker = %name,
        model = %model_name,
        version = genq_shared::routing::short_version(&model_version),
        slots = engine.slots(),
        context_per_slot = engine.context_per_slot(),
        kv_cache_mib = engine.kv_cache_bytes() >> 20,
        decode_lock = ?engine_config_lock,
        prefix_sharing = ?config.prefix_sharing,
        "worker ready"
    );

    let cache_ttl = Duration::from_secs(config.result_cache_ttl_secs);
    let cache = ResultCache::open(&model_version, cache_ttl);
    let runner = Arc::new(JobRunner {
        db: pool.clone(),
        engine,
        worker_name: name.clone(),
        model_name: model_name.clone(),
        model_version,
        held,
        cache,
        watch,
        redis: redis.clone(),
        queue: config.queue.queue.clone(),
        live: LiveEvents::start(redis.clone(), config.queue.queue.clone()),
        postgres: reachability::Postgres::default(),
    });
    let max_jobs = config
        .max_jobs
        .unwrap_or(runner.engine.slots() as usize)
        .max(1);
    let jobs = TaskTracker::new();
    // Stops consuming on shutdown, or at once when the engine has died.
    let stop_consuming = CancellationToken::new();
    let poll = Duration::from_millis(config.poll_interval_ms.max(10));
    let refill = Refill {
        redis,
        queue: model_queue.clone(),
        max_jobs,
        jobs: jobs.clone(),
    };
    tokio::spawn(
        refill
            .clone()
            .every(poll, stop_consuming.clone().cancelled_owned()),
    );
    let consumer = Consumer {
        name: name.clone(),
        storage: queue::storage_for(&refill.redis, &model_queue),
        poll,
        max_jobs,
        runner: runner.clone(),
        jobs: jobs.clone(),
        refill,
    };
    let consuming =
        tokio::spawn(consumer.run(stop_consuming.clone().cancelled_owned().boxed().shared()));
    probe.serving(
        engine_stats,
        runner.held.clone(),
        model_name,
        runner.postgres.clone(),
    );
    let engine_failure = tokio::select! {
        _ = shutdown => None,
        reason = engine_failed => Some(reason),
    };
    stop_consuming.cancel();
    probe.stopping();
    match &engine_failure {
        None => tracing::info!(
            running = jobs.len(),
            "shutting down: finishing the jobs in hand"
        ),
        // The jobs in hand end at once (the engine answers them EngineStopped) and are released
        // to the queue for another worker.
        Some(reason) => tracing::error!(
            reason,
            running = jobs.len(),
            "the inference engine stopped: handing the jobs back and exiting"
        ),
    }
    jobs.close();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(config.shutdown_timeout_secs);
    let _ = tokio::time::timeout_at(deadline, jobs.wait()).await;
    let mut consuming = consuming;
    if tokio::time::timeout(CONSUMER_STOP_PATIENCE, &mut consuming)
        .await
        .is_err()
    {
        // apalis 1.0's worker cannot finish a stop while more than four task acknowledgements
        // wait in its channel of batch_size x 4: it reads that channel only when it polls Redis,
        // which it no longer does once stopping. Dropped instead: the jobs ended above, and other
        // workers' heartbeats re-queue the tasks it held, which find their jobs final or still
        // queued in PostgreSQL.
        tracing::info!("the job consumer did not stop by itself; dropping it");
        consuming.abort();
        let _ = consuming.await;
    }
    // Again, now that no handler is left to start a job: one may have started after the wait.
    let finished = tokio::time::timeout_at(deadline, jobs.wait()).await;
    if finished.is_err() {
        // Marking the worker stopped below lets the reconciler re-queue them at once.
        tracing::warn!(
            running = jobs.len(),
            "jobs still running at the shutdown timeout are left to the reconciler"
        );
    }

    // Every job has returned, so the runner (and the engine inside it) is ours alone again.
    match Arc::try_unwrap(runner) {
        Ok(runner) => tokio::task::spawn_blocking(move || runner.engine.shutdown()).await?,
        Err(_) => tracing::warn!("a job outlived the shutdown timeout; not waiting for the engine"),
    }
    registration.stop(&pool).await;
    match engine_failure {
        None => Ok(()),
        Some(reason) => Err(anyhow::anyhow!("the inference engine stopped: {reason}")),
    }
}

/// The decode lock file, per `--decode-lock` and its defaults.
fn decode_lock(config: &Config) -> Option<PathBuf> {
    match config.decode_lock.as_deref() {
        Some("off") => None,
        Some(path) => Some(PathBuf::from(path)),
        None if cfg!(feature = "cuda") || config.threads.is_some() => None,
        None => Some(std::env::temp_dir().join("genq-decode.lock")),
    }
}

fn unique_name(prefix: Option<&str>) -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!(
        "{}-{}-{suffix}",
        prefix.unwrap_or(&host),
        std::process::id()
    )
}
