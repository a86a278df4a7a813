//! The genq processes under measurement or test: one `genq-api` on a free local port (or several
//! replicas behind a [`Balancer`]) and N `genq-worker`s, started from the built binaries. Each
//! process slot has one log file, `{logs}/{name}.log`, emptied when the cluster starts and
//! appended to by every process that takes the slot, so a restarted process's log follows its
//! predecessor's.
//!
//! The API asks for an API key on every route but `/health`, `/ready` and the docs. Once it is
//! ready the cluster makes a tenant key with no limits, straight in PostgreSQL, and hands out
//! clients that send it ([`Cluster::client`]); readiness itself is asked for without one.

use std::{
    ffi::OsStr,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, bail};
use genq_shared::db::keys::{self, NewKey};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::{
    balancer::Balancer,
    process::{Process, Spawn},
};

/// How often readiness is asked for while waiting: a separate process has no other way to say it
/// is up.
const POLL: Duration = Duration::from_millis(50);

/// What to start. [`Config::new`] fills in the defaults; the fields are public to change them.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `genq-api` and `genq-worker` are.
    pub bin_dir: PathBuf,
    pub database_url: String,
    pub redis_url: String,
    /// `GENQ_QUEUE`, the Redis namespace; see [`crate::fresh_queue`].
    pub queue: String,
    /// `GENQ_MODEL` for every process (the API uses it to check prompt lengths).
    pub model: PathBuf,
    /// Directory of the log files; created if missing.
    pub logs: PathBuf,
    /// The API's log file is `{logs}/{api_name}.log` (replica N > 0's `{api_name}-N.log`); the
    /// cluster's API key is named after it.
    pub api_name: String,
    /// API replicas: more than one run on ports of their own behind a [`Balancer`], which
    /// [`Cluster::base_url`] then names.
    pub api_replicas: usize,
    /// As `worker_wrapper_each`, for API replicas (by index).
    pub api_wrapper_each: Vec<Vec<String>>,
    /// Set for one API replica (by index), after `env`: its own way to PostgreSQL, say.
    pub api_env_each: Vec<Vec<(String, String)>>,
    /// The address an API replica (by index) listens on, where not 127.0.0.1: its own network
    /// namespace's. The port is one free on this host's loopback.
    pub api_host_each: Vec<Option<std::net::IpAddr>>,
    /// One per worker: its log file `{logs}/{name}.log` and the prefix of the name it registers
    /// under (`GENQ_WORKER_NAME`; the worker appends its pid and a unique suffix).
    pub worker_names: Vec<String>,
    /// Set for every process, after the connection settings (so they can override those).
    pub env: Vec<(String, String)>,
    /// Set for the workers only, after `env`.
    pub worker_env: Vec<(String, String)>,
    /// Set for one worker (by index in `worker_names`), after `worker_env`: a worker of another
    /// model (`GENQ_MODEL_NAME`), say.
    pub worker_env_each: Vec<Vec<(String, String)>>,
    /// A command to start one worker through (by index), the binary and its arguments after it:
    /// `ip netns exec NAME` runs it in a network namespace of its own, say. It must exec the
    /// binary, so that the pid is the worker's.
    pub worker_wrapper_each: Vec<Vec<String>>,
    /// How long [`Cluster::start`] waits for `/ready`.
    pub ready_within: Duration,
    /// How long [`Cluster::stop`] waits after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl Config {
    /// One worker named `worker`, an API named `api`, nothing extra in the environment, 60 s to
    /// get ready and 30 s to stop.
    pub fn new(
        bin_dir: PathBuf,
        database_url: String,
        redis_url: String,
        queue: String,
        model: PathBuf,
        logs: PathBuf,
    ) -> Config {
        Config {
            bin_dir,
            database_url,
            redis_url,
            queue,
            model,
            logs,
            api_name: "api".into(),
            api_replicas: 1,
            api_wrapper_each: Vec::new(),
            api_env_each: Vec::new(),
            api_host_each: Vec::new(),
            worker_names: vec!["worker".into()],
            env: Vec::new(),
            worker_env: Vec::new(),
            worker_env_each: Vec::new(),
            worker_wrapper_each: Vec::new(),
            ready_within: Duration::from_secs(60),
            stop_grace: Duration::from_secs(30),
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    fn api_log_name(&self, replica: usize) -> String {
        match replica {
            0 => self.api_name.clone(),
            n => format!("{}-{n}", self.api_name),
        }
    }
}

/// One API replica, on its own port.
struct Api {
    process: Process,
    addr: SocketAddr,
}

/// The running API and workers. Dropping it SIGKILLs every process it started that is still
/// running (see `process`), so a caller that fails half-way leaves nothing behind; [`stop`]
/// stops them as an orchestrator would.
///
/// [`stop`]: Cluster::stop
pub struct Cluster {
    config: Config,
    /// Where clients connect: the only replica, or the balancer.
    addr: SocketAddr,
    apis: Vec<Api>,
    _balancer: Option<Balancer>,
    workers: Vec<Process>,
    /// For `/ready` only, which asks for no key.
    http: reqwest::Client,
    /// A tenant key with no limits, made once the API had migrated the database. It lives in
    /// PostgreSQL, so it stays valid across [`Cluster::kill_and_restart_api`].
    api_key: String,
}

impl Cluster {
    /// Starts the API on a free port and the workers, waits until the API is ready, then makes
    /// the cluster's API key.
    pub async fn start(config: Config) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(&config.logs)
            .with_context(|| format!("creating {}", config.logs.display()))?;
        // The port is free now and the API binds it a moment later: another process may take it
        // in between, and the API then exits saying so. The start is then made again on another.
        let mut config = config;
        for attempt in 1.. {
            let mut cluster = Self::start_once(config).await?;
            match cluster.wait_ready(cluster.config.ready_within).await {
                Ok(()) => {
                    cluster.api_key = create_api_key(&cluster.config).await?;
                    return Ok(cluster);
                }
                Err(e) if attempt < 5 && cluster.api_lost_its_port() => {
                    eprintln!("{e:#}: its port was taken; starting again on another");
                    config = cluster.config.clone();
                    cluster.stop().await;
                }
                Err(e) => {
                    cluster.stop().await;
                    return Err(e);
                }
            }
        }
        unreachable!("the loop returns")
    }

    async fn start_once(config: Config) -> anyhow::Result<Cluster> {
        // Logs append across restarts within a run, so an earlier run's go first.
        let api_names = (0..config.api_replicas.max(1)).map(|r| config.api_log_name(r));
        for name in api_names.chain(config.worker_names.iter().cloned()) {
            let _ = std::fs::remove_file(config.log(&name));
        }
        let mut apis = Vec::new();
        for replica in 0..config.api_replicas.max(1) {
            let mut addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            if let Some(Some(host)) = config.api_host_each.get(replica) {
                addr.set_ip(*host);
            }
            let process = spawn_api(&config, addr, replica)?;
            apis.push(Api { process, addr });
        }
        let balancer = match apis.len() {
            1 => None,
            _ => Some(Balancer::start(apis.iter().map(|api| api.addr).collect()).await?),
        };
        let addr = balancer.as_ref().map_or(apis[0].addr, Balancer::address);
        let workers = (0..config.worker_names.len())
            .map(|index| spawn_worker(&config, addr, index))
            .collect::<anyhow::Result<_>>()?;
        Ok(Cluster {
            config,
            addr,
            apis,
            _balancer: balancer,
            workers,
            http: reqwest::Client::builder()
                // A readiness answer takes milliseconds; a hung one must not stall the wait.
                .timeout(Duration::from_secs(2))
                .build()?,
            // Made once the API has migrated the database; nothing reads it before.
            api_key: String::new(),
        })
    }

    /// Whether an API replica exited because its port was taken before it could bind it.
    fn api_lost_its_port(&mut self) -> bool {
        (0..self.apis.len()).any(|replica| {
            self.apis[replica].process.exited().is_some()
                && std::fs::read_to_string(self.api_log(replica))
                    .is_ok_and(|log| log.contains("Address already in use"))
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The cluster's API key: a tenant key (not an admin) with no rate limit or quota.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// A client that sends [`Cluster::api_key`] with every request.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder()
            .build()
            .expect("a plain HTTP client with a default header builds")
    }

    /// A builder for a client that sends [`Cluster::api_key`] with every request, for callers
    /// that set more (a timeout).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.api_key))
            .expect("a generated key is ASCII hex");
        // Kept out of reqwest's and hyper's debug output.
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        reqwest::Client::builder()
            .default_headers(headers)
            // The API closes keep-alive connections idle for its header read timeout (30 s by
            // default); dropping them sooner here keeps a request off a connection it is closing.
            .pool_idle_timeout(Duration::from_secs(15))
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The name prefix worker `index` registers under.
    pub fn worker_name(&self, index: usize) -> &str {
        &self.config.worker_names[index]
    }

    /// The pid of the (first) API replica's current process.
    pub fn api_pid(&self) -> u32 {
        self.apis[0].process.pid()
    }

    /// The pid of API replica `replica`'s current process.
    pub fn api_replica_pid(&self, replica: usize) -> u32 {
        self.apis[replica].process.pid()
    }

    pub fn api_replicas(&self) -> usize {
        self.apis.len()
    }

    /// The pid of worker `index`'s current process.
    pub fn worker_pid(&self, index: usize) -> u32 {
        self.workers[index].pid()
    }

    /// SIGKILL worker `index` and start a fresh one in its place (a new process, a new name).
    pub async fn kill_and_restart_worker(&mut self, index: usize) -> anyhow::Result<()> {
        self.workers[index].kill().await;
        self.workers[index] = spawn_worker(&self.config, self.addr, index)?;
        Ok(())
    }

    /// SIGKILL every API replica at once, and start each again on its address.
    pub async fn kill_and_restart_api(&mut self) -> anyhow::Result<()> {
        for api in &mut self.apis {
            api.process.kill().await;
        }
        for replica in 0..self.apis.len() {
            self.apis[replica].process = spawn_api(&self.config, self.apis[replica].addr, replica)?;
        }
        Ok(())
    }

    /// SIGKILL API replica `replica` and start it again on its address.
    pub async fn kill_and_restart_api_replica(&mut self, replica: usize) -> anyhow::Result<()> {
        let api = &mut self.apis[replica];
        api.process.kill().await;
        api.process = spawn_api(&self.config, api.addr, replica)?;
        Ok(())
    }

    /// Waits until every replica's `/ready` answers 200 (PostgreSQL and Redis reachable from the
    /// API). Fails at once if an API process has exited.
    pub async fn wait_ready(&mut self, patience: Duration) -> anyhow::Result<()> {
        for replica in 0..self.apis.len() {
            self.wait_replica_ready(replica, patience).await?;
        }
        Ok(())
    }

    /// As [`Cluster::wait_ready`], for one replica.
    pub async fn wait_replica_ready(
        &mut self,
        replica: usize,
        patience: Duration,
    ) -> anyhow::Result<()> {
        let give_up = Instant::now() + patience;
        let url = format!("http://{}/ready", self.apis[replica].addr);
        while Instant::now() < give_up {
            if let Some(status) = self.apis[replica].process.exited() {
                bail!(
                    "genq-api exited ({status}); see {}",
                    self.api_log(replica).display()
                );
            }
            let ready = self.http.get(&url).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        bail!(
            "genq-api was not ready within {patience:?}; see {}",
            self.api_log(replica).display()
        )
    }

    /// Whether replica `replica`'s `/ready` answers 200 within `patience`: for a caller that
    /// watches the rest of the cluster meanwhile (a replica that exited never answers).
    pub async fn replica_ready_within(&self, replica: usize, patience: Duration) -> bool {
        let give_up = Instant::now() + patience;
        let url = format!("http://{}/ready", self.apis[replica].addr);
        while Instant::now() < give_up {
            let ready = self.http.get(&url).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(POLL).await;
        }
        false
    }

    /// Waits until every worker has registered in the database `pool` reaches (each registers
    /// once its model is loaded and its engine started). On a database of its own the live
    /// workers are this cluster's. Fails at once if a worker process has exited.
    pub async fn wait_workers_registered(
        &mut self,
        pool: &PgPool,
        patience: Duration,
    ) -> anyhow::Result<()> {
        let give_up = Instant::now() + patience;
        while Instant::now() < give_up {
            for (index, worker) in self.workers.iter_mut().enumerate() {
                if let Some(status) = worker.exited() {
                    let log = self.config.log(&self.config.worker_names[index]);
                    bail!("a genq-worker exited ({status}); see {}", log.display());
                }
            }
            // Errors are "not yet": the caller's database may be starting.
            let live = genq_shared::db::workers::live(pool).await;
            if live.is_ok_and(|live| live.len() >= self.workers.len()) {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        bail!(
            "{} workers did not all register within {patience:?}; see {}",
            self.workers.len(),
            self.config.logs.display()
        )
    }

    /// SIGTERM to every worker, then to the API, as an orchestrator would; a process still there
    /// after the grace gets SIGKILL. Then the run's Redis namespace is deleted.
    pub async fn stop(mut self) {
        let deadline = Instant::now() + self.config.stop_grace;
        // Workers first, together: they finish the jobs in hand, which needs the database, not
        // the API.
        for worker in &mut self.workers {
            worker.terminate();
        }
        for worker in &mut self.workers {
            worker.wait_or_kill(deadline).await;
        }
        for api in &mut self.apis {
            api.process.terminate();
        }
        let deadline = Instant::now() + self.config.stop_grace;
        for api in &mut self.apis {
            api.process.wait_or_kill(deadline).await;
        }
        // Each run takes a fresh namespace; leave none behind in Redis.
        let deleted = async {
            let client = redis::Client::open(self.config.redis_url.as_str())?;
            let mut redis = client.get_multiplexed_async_connection().await?;
            genq_shared::queue::delete_namespace(&mut redis, &self.config.queue).await
        };
        if let Err(e) = deleted.await {
            eprintln!(
                "could not delete Redis namespace {}: {e}",
                self.config.queue
            );
        }
    }

    fn api_log(&self, replica: usize) -> PathBuf {
        self.config.log(&self.config.api_log_name(replica))
    }
}

/// Makes a tenant key with no limits in the cluster's database, named after the API and unique
/// (a database may outlive a cluster), and returns the key.
async fn create_api_key(config: &Config) -> anyhow::Result<String> {
    let url: genq_shared::config::SecretUrl = config.database_url.parse()?;
    let pool = genq_shared::db::connect_existing(&url, 1)
        .await?
        .with_context(|| format!("the database at {url} is gone"))?;
    let new = NewKey {
        name: format!(
            "{}-harness-{}",
            config.api_name,
            &Uuid::new_v4().simple().to_string()[..8]
        ),
        ..NewKey::default()
    };
    let created = keys::create(&pool, &new).await;
    pool.close().await;
    let (_, key) = created.with_context(|| format!("creating API key {:?}", new.name))?;
    Ok(key)
}

fn spawn_api(config: &Config, addr: SocketAddr, replica: usize) -> anyhow::Result<Process> {
    let binary = config.bin_dir.join("genq-api");
    let addr = addr.to_string();
    let env = common_env(config, &addr)
        // Keys are checked as in production, whatever the caller's shell exports; `env` may
        // still override it.
        .chain([("GENQ_AUTH", OsStr::new("on"))])
        .chain(pairs(&config.env))
        .chain(pairs(each(&config.api_env_each, replica)))
        .collect();
    Process::spawn(Spawn {
        wrapper: each(&config.api_wrapper_each, replica),
        binary: &binary,
        env,
        log: &config.log(&config.api_log_name(replica)),
    })
}

fn spawn_worker(config: &Config, addr: SocketAddr, index: usize) -> anyhow::Result<Process> {
    let binary = config.bin_dir.join("genq-worker");
    let addr = addr.to_string();
    let name = config.worker_names[index].as_str();
    let env = common_env(config, &addr)
        .chain(pairs(&config.env))
        .chain([("GENQ_WORKER_NAME", OsStr::new(name))])
        .chain(pairs(&config.worker_env))
        .chain(pairs(each(&config.worker_env_each, index)))
        .collect();
    Process::spawn(Spawn {
        wrapper: each(&config.worker_wrapper_each, index),
        binary: &binary,
        env,
        log: &config.log(name),
    })
}

fn common_env<'a>(config: &'a Config, addr: &'a str) -> impl Iterator<Item = (&'a str, &'a OsStr)> {
    [
        ("DATABASE_URL", OsStr::new(&config.database_url)),
        ("REDIS_URL", OsStr::new(&config.redis_url)),
        ("GENQ_QUEUE", OsStr::new(&config.queue)),
        ("GENQ_API_ADDR", OsStr::new(addr)),
        ("GENQ_MODEL", config.model.as_os_str()),
        ("RUST_LOG", OsStr::new("info")),
    ]
    .into_iter()
}

/// Entry `index` of a per-process list, empty where the list is shorter.
fn each<T>(list: &[Vec<T>], index: usize) -> &[T] {
    list.get(index).map_or(&[][..], Vec::as_slice)
}

fn pairs(env: &[(String, String)]) -> impl Iterator<Item = (&str, &OsStr)> {
    env.iter().map(|(k, v)| (k.as_str(), OsStr::new(v)))
}
