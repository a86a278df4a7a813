//! The genq processes under test: one `genq-api` and a few `genq-worker`s, started from the built
//! binaries, killed with SIGKILL and started again on demand. Their logs append to one file per
//! process slot, so a restarted process's log follows its predecessor's.

use std::{
    fs::OpenOptions,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{sys::signal, unistd::Pid};

pub struct Options {
    pub bin_dir: PathBuf,
    pub model: PathBuf,
    pub database_url: String,
    pub redis_url: String,
    pub queue: String,
    pub workers: usize,
    pub slots: u32,
    pub logs: PathBuf,
}

pub struct Cluster {
    options: Options,
    addr: String,
    api: Child,
    workers: Vec<Child>,
}

/// Worker `index` registers under names starting with this.
pub fn worker_prefix(index: usize) -> String {
    format!("chaos-w{index}")
}

impl Cluster {
    /// Starts the API on a free port and the workers, and waits until the API is ready.
    pub async fn start(options: Options) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(&options.logs)?;
        // Logs append across restarts within a run, so an earlier run's go first.
        let slots =
            std::iter::once("api".to_owned()).chain((0..options.workers).map(worker_prefix));
        for slot in slots {
            let _ = std::fs::remove_file(options.logs.join(format!("{slot}.log")));
        }
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
        let api = spawn(&options, &addr, "genq-api", "api")?;
        let workers = (0..options.workers)
            .map(|i| spawn_worker(&options, &addr, i))
            .collect::<anyhow::Result<_>>()?;
        let cluster = Cluster {
            options,
            addr,
            api,
            workers,
        };
        cluster.wait_ready(Duration::from_secs(120)).await?;
        Ok(cluster)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn worker_pid(&self, index: usize) -> u32 {
        self.workers[index].id()
    }

    /// SIGKILL worker `index` and start a fresh one in its place (a new process, a new name).
    pub fn kill_and_restart_worker(&mut self, index: usize) -> anyhow::Result<()> {
        kill_hard(&mut self.workers[index]);
        self.workers[index] = spawn_worker(&self.options, &self.addr, index)?;
        Ok(())
    }

    /// SIGKILL the API and start it again on the same address.
    pub fn kill_and_restart_api(&mut self) -> anyhow::Result<()> {
        kill_hard(&mut self.api);
        self.api = spawn(&self.options, &self.addr, "genq-api", "api")?;
        Ok(())
    }

    /// Waits until `/ready` answers 200 (PostgreSQL and Redis reachable from the API).
    pub async fn wait_ready(&self, patience: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let give_up = Instant::now() + patience;
        while Instant::now() < give_up {
            let ready = client
                .get(format!("{}/ready", self.base_url()))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "genq-api was not ready within {patience:?}; see {}",
            self.options.logs.display()
        )
    }

    /// SIGTERM to every process, as an orchestrator would, and wait for them.
    pub fn stop(mut self) {
        for child in self.workers.iter_mut().chain([&mut self.api]) {
            let _ = signal::kill(Pid::from_raw(child.id() as i32), signal::Signal::SIGTERM);
            let _ = child.wait();
        }
        self.workers.clear();
    }
}

impl Drop for Cluster {
    /// A run that fails half-way must not leave genq processes behind.
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain([&mut self.api]) {
            kill_hard(child);
        }
    }
}

fn kill_hard(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn_worker(options: &Options, addr: &str, index: usize) -> anyhow::Result<Child> {
    spawn(options, addr, "genq-worker", &worker_prefix(index))
}

fn spawn(options: &Options, addr: &str, binary: &str, slot: &str) -> anyhow::Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(options.logs.join(format!("{slot}.log")))?;
    let mut command = Command::new(options.bin_dir.join(binary));
    if binary == "genq-worker" {
        command.env("GENQ_WORKER_NAME", slot);
    }
    command
        .env("DATABASE_URL", &options.database_url)
        .env("REDIS_URL", &options.redis_url)
        .env("GENQ_QUEUE", &options.queue)
        .env("GENQ_API_ADDR", addr)
        .env("GENQ_MODEL", &options.model)
        .env("GENQ_SLOTS", options.slots.to_string())
        // Several workers share two cores here; one thread each keeps them from fighting.
        .env("GENQ_THREADS", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {binary} from {}", options.bin_dir.display()))
}
