//! Test harness: every test gets its own PostgreSQL database and Redis queue namespace, the API on
//! port 0, and workers running the real llama.cpp on a synthesized tiny GPT-2. Nothing is mocked.
//!
//! Services: `GENQ_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`) and
//! `GENQ_TEST_REDIS` (default `redis://127.0.0.1:6379`). Set `TEST_LOG=1` to see logs.
//!
//! # Layout
//! - [`TestApp`]: the API on a fresh database and queue namespace, both dropped when it is, even
//!   if the test fails; workers in-process ([`TestApp::start_worker`]) or as binaries; its
//!   `client` sends the API key of the tenant `tests`, [`TestApp::create_key`] makes others.
//! - [`ApiProcess`]: a second API, the `genq-api` binary, on the same database and queue.
//! - [`proxy`]: a TCP proxy to cut one test's view of PostgreSQL or Redis.
//! - [`prometheus`]: reading a `/metrics` answer back.

mod api_process;
pub mod prometheus;
pub mod proxy;
pub mod sse;

pub use api_process::{ApiProcess, client_with_key};

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::{Arc, OnceLock},
    time::Duration,
};

use clap::Parser;
use genq_engine::{Model, Placement};
use genq_model::synth;
use genq_shared::{
    db::{self, keys::NewKey},
    types::{JobStatus, JobView},
    wait::JobWatch,
};
use serde_json::Value;
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};
use uuid::Uuid;

/// Upper bound for any single wait in a test; reaching it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub fn postgres_base() -> String {
    std::env::var("GENQ_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("GENQ_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A tiny model synthesized with `seed` into a temp dir that lives as long as the test binary.
fn synthesized(file: &str, seed: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(file);
    synth::write_model(&path, synth::Shape::Tiny, seed).expect("synthesizing a tiny model");
    (dir, path)
}

fn loaded(path: &Path) -> Arc<Model> {
    Arc::new(Model::load(path, Placement::default()).expect("loading a tiny model"))
}

/// The tiny model, written once per test binary.
pub fn tiny_model_path() -> &'static Path {
    static PATH: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &PATH.get_or_init(|| synthesized("gpt2-tiny.gguf", 1)).1
}

/// A second tiny model: the same shape with other weights (seed 2), so its text differs. Workers
/// serve it under the name [`OTHER_MODEL`].
pub fn other_model_path() -> &'static Path {
    static PATH: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &PATH
        .get_or_init(|| synthesized("gpt2-tiny-other.gguf", 2))
        .1
}

/// The catalogue name of [`other_model_path`]'s workers.
pub const OTHER_MODEL: &str = "tiny-other";

pub fn other_model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL.get_or_init(|| loaded(other_model_path())).clone()
}

/// The catalogue name of the tiny model (its `general.name`), the default of every [`TestApp`].
pub fn tiny_model_name() -> String {
    tiny_model().name().to_owned()
}

/// Every task waiting in a model's queue: in its lanes, ready list and scheduled set.
pub async fn waiting_tasks(ns: &str) -> Vec<String> {
    let mut redis = redis_connection().await;
    let mut tasks = genq_shared::queue::lanes::waiting_tasks(&mut redis, ns)
        .await
        .expect("reading the lanes");
    let config = genq_shared::queue::storage_config(ns);
    let (ready, scheduled): (Vec<String>, Vec<String>) = redis::pipe()
        .lrange(config.active_jobs_list(), 0, -1)
        .zrange(config.scheduled_jobs_set(), 0, -1)
        .query_async(&mut redis)
        .await
        .expect("reading the ready list");
    tasks.extend(ready);
    tasks.extend(scheduled);
    tasks
}

/// How many job consumers (apalis workers) have registered on a model's queue: a worker that
/// has one has finished starting.
pub async fn consumers(ns: &str) -> usize {
    let mut redis = redis_connection().await;
    let workers = genq_shared::queue::storage_config(ns).workers_set();
    redis::cmd("ZCARD")
        .arg(workers)
        .query_async(&mut redis)
        .await
        .expect("counting the queue's consumers")
}

pub fn tiny_model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL.get_or_init(|| loaded(tiny_model_path())).clone()
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        genq_shared::telemetry::init();
    }
}

/// Options for [`TestApp::spawn_with`].
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub generate_timeout_secs: u64,
    pub with_model: bool,
    /// The API's reconciler timer; off by default so tests run passes themselves
    /// (`genqctl queue reconcile`) and their counts are exact.
    pub reconcile_interval_secs: u64,
    /// Where the API reaches PostgreSQL (`host:port`), when not directly: a [`proxy::Proxy`].
    pub postgres_via: Option<std::net::SocketAddr>,
    /// Where the API reaches Redis (`host:port`), when not directly.
    pub redis_via: Option<std::net::SocketAddr>,
    /// Further `genq-api` flags, e.g. `--cors-origins=https://app.example`.
    pub extra_args: Vec<String>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            generate_timeout_secs: 60,
            with_model: true,
            reconcile_interval_secs: 0,
            postgres_via: None,
            redis_via: None,
            extra_args: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub database_url: String,
    pub queue: String,
    pub pool: PgPool,
    /// Sends [`TestApp::key`] with every request.
    pub client: reqwest::Client,
    /// A key of the tenant `tests`, without limits.
    pub key: String,
    finals: JobWatch,
    /// The API's own waiters.
    pub api_watch: JobWatch,
    stop_api: Option<oneshot::Sender<()>>,
    api: Option<JoinHandle<anyhow::Result<()>>>,
    _cleanup: Throwaway,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(AppOptions::default()).await
    }

    pub async fn spawn_with(options: AppOptions) -> TestApp {
        init_logs();
        let name = format!("genq_test_{}", Uuid::new_v4().simple());
        let database_url = format!("{}/{name}", postgres_base());
        // First, so that whatever fails below still drops what was made.
        let cleanup = Throwaway {
            database_url: database_url.clone(),
            queue: name.clone(),
        };
        let via = |url: String, proxy: Option<std::net::SocketAddr>| match proxy {
            Some(address) => url.replacen(proxy::host_port(&url), &address.to_string(), 1),
            None => url,
        };
        let mut args = vec![
            "genq-api".to_owned(),
            "--addr=127.0.0.1:0".into(),
            format!(
                "--database-url={}",
                via(database_url.clone(), options.postgres_via)
            ),
            format!("--redis-url={}", via(redis_url(), options.redis_via)),
            format!("--queue={name}"),
            format!("--generate-timeout-secs={}", options.generate_timeout_secs),
            "--forbidden-words=hate,violence".into(),
            format!(
                "--reconcile-interval-secs={}",
                options.reconcile_interval_secs
            ),
        ];
        if options.with_model {
            args.push(format!("--model={}", tiny_model_path().display()));
        }
        args.extend(options.extra_args.iter().cloned());
        let app = genq_api::Application::build(genq_api::Config::parse_from(args))
            .await
            .expect("building the API");
        let address = format!("http://{}", app.local_addr());
        let api_watch = app.job_watch();
        let (stop_api, stopped) = oneshot::channel();
        let api = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let pool = db::connect(&database_url.parse().unwrap(), 5)
            .await
            .expect("test pool");
        let finals = JobWatch::listen(pool.clone())
            .await
            .expect("listening for final jobs");
        let key = new_key(&pool, "tests", false).await;
        TestApp {
            address,
            database_url,
            queue: name,
            pool,
            client: client_with_key(Some(&key)),
            key,
            finals,
            api_watch,
            stop_api: Some(stop_api),
            api: Some(api),
            _cleanup: cleanup,
        }
    }

    /// Makes a key as `genqctl keys create` does and returns it.
    pub async fn create_key(&self, new: NewKey) -> String {
        db::keys::create(&self.pool, &new)
            .await
            .expect("creating a key")
            .1
    }

    /// A key of its own tenant (named as the key), without limits.
    pub async fn tenant_key(&self, name: &str) -> String {
        new_key(&self.pool, name, false).await
    }

    pub async fn admin_key(&self, name: &str) -> String {
        new_key(&self.pool, name, true).await
    }

    /// Counts the changes to `api_keys` the API hears of from now on (see [`key_change_heard`]).
    pub fn key_changes_from_now(&self) -> tokio::sync::watch::Receiver<u64> {
        let mut changes = self.api_watch.key_changes();
        changes.mark_unchanged();
        changes
    }

    /// Starts a second API, the real `genq-api` binary, on this app's database and queue.
    pub async fn spawn_api_process(&self) -> ApiProcess {
        self.spawn_api_process_with(&[]).await
    }

    /// As [`TestApp::spawn_api_process`], with further environment variables (later ones win,
    /// e.g. `RUST_LOG` or a `DATABASE_URL` with a password).
    pub async fn spawn_api_process_with(&self, env: &[(&str, &str)]) -> ApiProcess {
        ApiProcess::spawn(&self.database_url, &self.queue, env).await
    }

    /// What the real `genq-api` logged, started as [`TestApp::spawn_api_process_with`] would,
    /// when it is expected to exit before it is ready.
    pub async fn api_process_exit_log(&self, env: &[(&str, &str)]) -> String {
        ApiProcess::exit_log(&self.database_url, &self.queue, env).await
    }

    /// Starts an in-process worker on the shared tiny model.
    pub async fn start_worker(&self, slots: u32) -> TestWorker {
        self.start_worker_with(slots, &[]).await
    }

    /// Waits until `model` has a live worker (registered in the catalogue, heartbeating).
    pub async fn until_model_served(&self, model: &str) {
        until(&format!("a live worker of {model}"), || async {
            sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from workers w join models m on m.name = w.model
                                where w.model = $1 and w.stopped_at is null)",
            )
            .bind(model)
            .fetch_one(&self.pool)
            .await
            .unwrap()
        })
        .await;
    }

    /// Deletes every Redis key of this app's queue, as Redis restarted empty would, for this
    /// queue only (other tests share the server).
    pub async fn empty_redis_namespace(&self) {
        let mut redis = redis_connection().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.queue))
            .query_async(&mut redis)
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .unwrap();
    }

    /// A reconciler of this app's database and queue, as the API runs it (tests run its passes
    /// themselves), with retention after `retention_secs` (0: none).
    pub async fn reconciler(&self, retention_secs: u64) -> genq_shared::reconcile::Reconciler {
        let redis = genq_shared::queue::connect(&genq_shared::config::QueueConfig {
            redis_url: redis_url().parse().unwrap(),
            queue: self.queue.clone(),
        })
        .await
        .expect("connecting to Redis");
        let config = genq_shared::reconcile::ReconcileConfig {
            worker_stale_secs: 15,
            redispatch_after_secs: 10,
            retention_secs,
        };
        genq_shared::reconcile::Reconciler::new(
            self.pool.clone(),
            redis,
            self.queue.clone(),
            config,
        )
    }

    /// Starts the real `genq-worker` binary with `args` (from [`TestApp::worker_args`], the
    /// program name first) and further environment, its output discarded; killed if dropped.
    pub fn spawn_worker_process(
        &self,
        args: &[String],
        env: &[(&str, &str)],
    ) -> tokio::process::Child {
        tokio::process::Command::new(binary("genq-worker"))
            .args(&args[1..])
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting genq-worker")
    }

    /// The tiny model's queue namespace in Redis.
    pub fn model_queue(&self) -> String {
        genq_shared::queue::model_queue(&self.queue, &tiny_model_name())
    }

    /// Starts an in-process worker of the [`other_model`], registered as [`OTHER_MODEL`].
    pub async fn start_other_worker(&self, slots: u32, extra: &[&str]) -> TestWorker {
        let mut args = self.worker_args(slots);
        args[1] = format!("--model={}", other_model_path().display());
        args.push(format!("--model-name={OTHER_MODEL}"));
        args.extend(extra.iter().map(|a| a.to_string()));
        self.start_worker_of(args, other_model()).await
    }

    /// Starts an in-process worker with extra flags, e.g. `--result-cache-ttl-secs=0`.
    pub async fn start_worker_with(&self, slots: u32, extra: &[&str]) -> TestWorker {
        let mut args = self.worker_args(slots);
        args.extend(extra.iter().map(|a| a.to_string()));
        self.start_worker_of(args, tiny_model()).await
    }

    /// Starts an in-process worker on the tiny model with `args` (from [`TestApp::worker_args`],
    /// changed as the test needs).
    pub async fn start_worker_from(&self, args: Vec<String>) -> TestWorker {
        self.start_worker_of(args, tiny_model()).await
    }

    async fn start_worker_of(&self, args: Vec<String>, model: Arc<Model>) -> TestWorker {
        let config = genq_worker::Config::parse_from(args);
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(genq_worker::run_with_model(config, model, async move {
            let _ = stopped.await;
        }));
        TestWorker {
            stop: Some(stop),
            run: Some(run),
        }
    }

    /// Arguments that point a worker (in-process or the binary) at this app's database and queue.
    pub fn worker_args(&self, slots: u32) -> Vec<String> {
        vec![
            "genq-worker".into(),
            format!("--model={}", tiny_model_path().display()),
            format!("--database-url={}", self.database_url),
            format!("--redis-url={}", redis_url()),
            format!("--queue={}", self.queue),
            format!("--slots={slots}"),
            "--threads=2".into(),
        ]
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }

    /// Submits a batch and returns its task id, failing the test unless it is accepted.
    pub async fn submit(&self, body: &Value) -> Uuid {
        submit_to(&self.client, &self.address, body).await
    }

    /// Submits jobs in one `POST /batches` and returns their task ids in order, failing the test
    /// unless all are accepted.
    pub async fn submit_bulk(&self, jobs: &[Value]) -> Vec<Uuid> {
        let response = self
            .post("/batches", &serde_json::json!({ "jobs": jobs }))
            .await;
        assert_eq!(response.status(), 202, "bulk submit refused");
        let body: Value = response.json().await.unwrap();
        let ids: Vec<Uuid> = serde_json::from_value(body["task_ids"].clone()).unwrap();
        assert_eq!(ids.len(), jobs.len());
        ids
    }

    /// How many jobs this test's database holds, of any status.
    pub async fn job_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from jobs")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits (on PostgreSQL notifications) until the job is final; fails the test after [`PATIENCE`].
    pub async fn wait_final(&self, id: Uuid) -> JobView {
        let status = self
            .finals
            .wait(id, PATIENCE)
            .await
            .expect("reading job status")
            .expect("job exists");
        assert!(
            status.is_final(),
            "job {id} still {status} after {PATIENCE:?}"
        );
        self.view(id).await
    }

    /// The job as stored, whatever its tenant.
    pub async fn view(&self, id: Uuid) -> JobView {
        db::jobs::view(&self.pool, id, db::Scope::All)
            .await
            .unwrap()
            .expect("job exists")
    }

    pub async fn status(&self, id: Uuid) -> JobStatus {
        db::jobs::status(&self.pool, id)
            .await
            .unwrap()
            .expect("job exists")
    }

    /// Runs the real `genqctl` binary against this app's database and queue (asynchronously: the
    /// API under test runs on this same runtime).
    pub async fn genqctl(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(binary("genqctl"))
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", redis_url())
            .env("GENQ_QUEUE", &self.queue)
            .env("GENQ_API_URL", &self.address)
            .env("GENQ_API_KEY", &self.key)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("running genqctl")
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop_api.take() {
            let _ = stop.send(());
        }
        if let Some(api) = self.api.take() {
            api.await.expect("API task").expect("API stopped cleanly");
        }
    }
}

async fn new_key(pool: &PgPool, name: &str, admin: bool) -> String {
    let new = NewKey {
        name: name.into(),
        admin,
        ..NewKey::default()
    };
    db::keys::create(pool, &new)
        .await
        .expect("creating a key")
        .1
}

/// A test's database and Redis namespace, dropped when this is, passed or failed. The cleanup
/// runs on a thread of its own: `Drop` cannot await, and the test's runtime may be the one
/// unwinding.
pub struct Throwaway {
    pub database_url: String,
    pub queue: String,
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let (database_url, queue) = (self.database_url.clone(), self.queue.clone());
        let cleaning = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                use sqlx::migrate::MigrateDatabase;
                if let Err(e) = sqlx::Postgres::force_drop_database(&database_url).await {
                    eprintln!("could not drop test database {database_url}: {e}");
                }
                let deleted = async {
                    let client = redis::Client::open(redis_url())?;
                    let mut redis = client.get_multiplexed_async_connection().await?;
                    genq_shared::queue::delete_namespace(&mut redis, &queue).await
                };
                if let Err(e) = deleted.await {
                    eprintln!("could not delete Redis keys of {queue}: {e}");
                }
            });
        });
        let _ = cleaning.join();
    }
}

pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    /// Asks the worker to stop as SIGTERM does and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(run) = self.run.take() {
            run.await
                .expect("worker task")
                .expect("worker stopped cleanly");
        }
    }
}

/// Submits a batch to the API at `base` (this app's, or an [`ApiProcess`]'s) with `client`'s
/// key; its task id, failing the test unless it is accepted.
pub async fn submit_to(client: &reqwest::Client, base: &str, body: &Value) -> Uuid {
    let response = client
        .post(format!("{base}/batch"))
        .json(body)
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.status(),
        202,
        "submit refused: {}",
        response.text().await.unwrap_or_default()
    );
    let body: Value = response.json().await.unwrap();
    body["task_id"].as_str().unwrap().parse().unwrap()
}

/// A connection to the tests' Redis server.
pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("a valid Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to Redis")
}

/// Polls `holds` until it is true; fails the test with `what` after [`PATIENCE`].
pub async fn until<F, Fut>(what: &str, holds: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !holds().await {
        assert!(tokio::time::Instant::now() < give_up, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the API hears of a change to `api_keys` that `changes` (from
/// [`TestApp::key_changes_from_now`]) has not seen yet: its key cache then holds nothing read
/// before.
pub async fn key_change_heard(changes: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::time::timeout(PATIENCE, changes.changed())
        .await
        .expect("the API heard of no change to the keys")
        .expect("the API's listener is gone");
}

/// A workspace binary next to the test executable (target/<profile>/).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run scripts/test.sh (it builds the binaries first)",
        path.display()
    );
    path
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Fails the test unless the process exited with `code` (not by a signal); shows its stderr.
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status {}; stderr:\n{}",
        output.status,
        stderr(output)
    );
}

/// A port no listener has at the moment. Whoever is handed it may find it taken by another
/// process by the time it binds: see [`on_free_port`].
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts something that must bind a port it is given: `start` gets a free port and answers
/// `Err(why)` if what it started exited before it was up (its port taken meanwhile, say). Up to
/// five ports are tried.
pub async fn on_free_port<T, Fut>(mut start: impl FnMut(u16) -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for _ in 0..5 {
        match start(free_port()).await {
            Ok(started) => return started,
            Err(why) => last = why,
        }
    }
    panic!("nothing started in 5 tries on free ports; the last: {last}");
}

/// Waits until `url` answers 200, while `child` runs; `Err` if it exits first. Fails the test
/// after [`PATIENCE`].
pub async fn until_answers(child: &mut tokio::process::Child, url: &str) -> Result<(), String> {
    let client = reqwest::Client::new();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("checking the child") {
            return Err(format!("exited ({status}) before {url} answered"));
        }
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Ok(());
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{url} not answering after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
