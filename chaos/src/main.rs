//! genq-chaos: runs the real genq binaries (API replicas behind a balancer, workers) under load,
//! injects faults one at a time (killed workers, Redis restarted, flushed or full, PostgreSQL
//! restarted or its disk full, API replicas killed all at once or in turn, a worker or an API
//! replica cut off from PostgreSQL or Redis, a worker's links slow, silent or cut), then audits
//! every job in PostgreSQL and prints what it found. `--soak-minutes` runs the soak instead. Exits non-zero if any job was lost or any result
//! stored twice.
//!
//! `scripts/chaos.sh` builds everything, makes the tiny model and passes the restart commands.
//!
//! # Layout
//! - `load`: the clients; `faults`: injecting faults and timing recoveries.
//! - `links`: each worker's and API replica's network namespace and veth pair, with a forwarder
//!   (`genq_harness::relay`) on its host end, which can make the link slow, silent or cut;
//!   `redis_full`: Redis at `maxmemory`.
//! - `audit`: the final count from PostgreSQL; `report`: its tables.
//! - `soak`: the hour under steady load (`--soak-minutes`), one row a minute.
//! - The processes (API and workers) are started and stopped by `genq-harness`.

mod audit;
mod batches;
mod faults;
mod links;
mod load;
mod redis_full;
mod report;
mod soak;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use genq_harness::{Cluster, Config, Database, fresh_queue};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::{
    faults::{Commands, FaultKind, Injector},
    links::Link,
    load::{Client, Ledger},
};

#[derive(Debug, Parser)]
#[command(
    name = "genq-chaos",
    about = "genq's fault-injection suite",
    args_override_self = true
)]
struct Args {
    /// Jobs to have accepted at least; the load goes on until every fault is injected too.
    #[arg(long, default_value_t = 5000)]
    jobs: usize,
    /// Faults of each kind to inject.
    #[arg(long, default_value_t = 20)]
    faults_per_kind: usize,
    /// The last `--kinds` given wins (scripts/chaos.sh passes the kinds this machine can run).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        action = clap::ArgAction::Set,
        default_value = "worker-kill,redis-restart,redis-flushall,postgres-restart,api-restart,\
                         api-replicas-in-turn,partition-postgres,partition-redis,partition-both,\
                         slow-link,stalled-link,dropped-connections,api-partition-postgres,\
                         api-partition-redis,redis-maxmemory"
    )]
    kinds: Vec<FaultKind>,
    /// Faults that last (partitions, slow or silent links, a full Redis or disk) last 5 s, and
    /// partitions 25 s (past a lease), rather than 5 to 60 s: CI's run.
    #[arg(long)]
    short_faults: bool,
    /// Workers, serving the models in turn: two per model by default, so that the jobs of a
    /// worker that is cut off or killed can run on another.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// API replicas, behind a TCP balancer that the clients connect to.
    #[arg(long, default_value_t = 3)]
    api_replicas: usize,
    /// Models the workers serve, in turn: the first is the model file's own name (the default),
    /// the others `chaos-m1`, ... (the same file under other names). Clients spread their jobs
    /// over them, so every fault meets several model queues.
    #[arg(long, default_value_t = 2)]
    models: usize,
    #[arg(long, default_value_t = 8)]
    slots: u32,
    /// Concurrent clients; each has one job in flight at a time.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Percent of accepted jobs their client cancels shortly after submitting.
    #[arg(long, default_value_t = 3)]
    cancel_percent: u32,
    /// GGUF model for the workers (the tiny synthesized one keeps jobs short).
    #[arg(long)]
    model: PathBuf,
    /// Where genq-api and genq-worker are; defaults to this binary's directory.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Shell command that restarts Redis (needed for redis-restart faults).
    #[arg(long)]
    redis_restart: Option<String>,
    /// Shell command that empties Redis; defaults to `redis-cli -u <redis> flushall`.
    #[arg(long)]
    redis_flushall: Option<String>,
    /// Shell command that restarts PostgreSQL (needed for postgres-restart faults).
    #[arg(long)]
    postgres_restart: Option<String>,
    /// The tablespace to make the suite's database in: on a disk of its own, small, which
    /// `--postgres-fill` fills and `--postgres-free` frees (needed for postgres-disk-full faults).
    #[arg(long)]
    postgres_tablespace: Option<String>,
    #[arg(long)]
    postgres_fill: Option<String>,
    #[arg(long)]
    postgres_free: Option<String>,
    /// How long one fault may take to recover before it counts as not recovered.
    #[arg(long, default_value_t = 180)]
    recovery_patience_secs: u64,
    /// Pause after each recovery before the next fault.
    #[arg(long, default_value_t = 1000)]
    gap_ms: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = ".genq/chaos")]
    logs: PathBuf,
    /// Instead of the faults: steady mixed traffic for this many minutes, a worker killed every
    /// `--kill-every-minutes`, one row of memory, latency and store sizes a minute (the soak).
    #[arg(long)]
    soak_minutes: Option<u64>,
    #[arg(long, default_value_t = 10)]
    kill_every_minutes: u64,
    /// Minutes of the soak before memory and latency are compared.
    #[arg(long, default_value_t = 10)]
    warm_up_minutes: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let commands = commands(&args)?;
    // A fresh database each run, so the audit sees only this run's jobs.
    let database = match &args.postgres_tablespace {
        Some(space) => {
            Database::recreate_in_tablespace(&args.postgres, "genq_chaos", space).await?
        }
        None => Database::recreate(&args.postgres, "genq_chaos").await?,
    };
    let pool = database.pool.clone();
    let suite_url = database.url.clone();
    let mut config = Config::new(
        args.bin_dir
            .clone()
            .unwrap_or_else(genq_harness::default_bin_dir),
        database.url,
        args.redis.clone(),
        fresh_queue("genq_chaos"),
        args.model.clone(),
        args.logs.clone(),
    );
    config.worker_names = (0..args.workers).map(|i| format!("chaos-w{i}")).collect();
    config.api_replicas = args.api_replicas;
    config.worker_env = vec![
        ("GENQ_SLOTS".into(), args.slots.to_string()),
        // Several workers share two cores here; one thread each keeps them from fighting.
        ("GENQ_THREADS".into(), "1".into()),
    ];
    // `None`: the default model (the file's name, which the API registers).
    let models: Vec<Option<String>> = (0..args.models.max(1))
        .map(|m| (m > 0).then(|| format!("chaos-m{m}")))
        .collect();
    config.worker_env_each = (0..args.workers)
        .map(|i| match &models[i % models.len()] {
            Some(name) => vec![("GENQ_MODEL_NAME".into(), name.clone())],
            None => Vec::new(),
        })
        .collect();
    // Each worker on a network link of its own, where a fault needs one. Declared before the
    // cluster, so dropped after it: the links go once the workers are gone.
    let needs = |which: fn(FaultKind) -> bool| args.kinds.iter().any(|&k| which(k));
    let why = "making the links of partition and link faults (as root: ip netns, iptables)";
    let links = match needs(FaultKind::on_worker_link) {
        true => make_links(&args, 1, args.workers).await.context(why)?,
        false => Vec::new(),
    };
    for (index, link) in links.iter().enumerate() {
        config.worker_env_each[index].extend(link.env(&config.database_url, &args.redis));
    }
    config.worker_wrapper_each = links.iter().map(Link::wrapper).collect();
    let api_links = match needs(FaultKind::on_api_link) {
        true => make_links(&args, links::API_LINKS, args.api_replicas)
            .await
            .context(why)?,
        false => Vec::new(),
    };
    config.api_env_each = api_links
        .iter()
        .map(|link| link.env(&config.database_url, &args.redis))
        .collect();
    config.api_wrapper_each = api_links.iter().map(Link::wrapper).collect();
    config.api_host_each = api_links
        .iter()
        .map(|link| Some(link.inner_ip.into()))
        .collect();
    config.ready_within = Duration::from_secs(120);
    let mut cluster = Cluster::start(config).await?;
    // Every model registered before clients name them.
    cluster
        .wait_workers_registered(&pool, Duration::from_secs(120))
        .await?;
    eprintln!(
        "genq is up at {} ({} API replicas) with {} workers; logs in {}",
        cluster.base_url(),
        args.api_replicas,
        args.workers,
        args.logs.display()
    );

    if let Some(minutes) = args.soak_minutes {
        let plan = soak::Plan {
            minutes,
            kill_every_minutes: args.kill_every_minutes.max(1),
            warm_up_minutes: args.warm_up_minutes,
            // Fewer batch clients than the fault suite: steady load, not a flood.
            clients: args.clients / 4,
            interactive_clients: 4,
            cancel_percent: args.cancel_percent,
            models: models.clone(),
            seed: args.seed,
            csv: args.logs.join("soak.csv"),
        };
        let redis = redis::Client::open(args.redis.as_str())?;
        let outcome = soak::run(&mut cluster, &pool, &redis, plan).await;
        cluster.stop().await;
        return outcome;
    }

    let started = Instant::now();
    let ledger = Arc::new(Ledger::default());
    let faults_done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let client = Client::new(
                &cluster,
                ledger.clone(),
                args.seed.wrapping_mul(1000).wrapping_add(i as u64),
                args.cancel_percent,
                models.clone(),
            );
            let (ledger, faults_done, target) = (ledger.clone(), faults_done.clone(), args.jobs);
            tokio::spawn(
                client.run(move || {
                    ledger.accepted() >= target && faults_done.load(Ordering::Relaxed)
                }),
            )
        })
        .collect();

    // The OpenAI batch path beside the clients, under the same faults.
    let model = genq_harness::client::first_model(&cluster.client(), &cluster.base_url()).await?;
    let batch_client = batches::BatchClient::new(&cluster, model);
    let batches = tokio::spawn({
        let faults_done = faults_done.clone();
        batch_client.run(move || faults_done.load(Ordering::Relaxed))
    });

    let mut schedule: Vec<FaultKind> = args
        .kinds
        .iter()
        .flat_map(|kind| std::iter::repeat_n(*kind, args.faults_per_kind))
        .collect();
    schedule.shuffle(&mut ChaCha8Rng::seed_from_u64(args.seed));
    let mut injector = Injector {
        cluster: &mut cluster,
        pool: pool.clone(),
        commands,
        patience: Duration::from_secs(args.recovery_patience_secs),
        links: &links,
        api_links: &api_links,
        redis: redis::Client::open(args.redis.as_str())?,
        rng: ChaCha8Rng::seed_from_u64(args.seed.wrapping_add(1)),
        short: args.short_faults,
    };
    let mut faults = Vec::with_capacity(schedule.len());
    for (n, kind) in schedule.iter().enumerate() {
        let fault = injector.inject(*kind).await?;
        let pickup = match kind.has_victim() {
            true => format!(
                " ({} held jobs running again or finished in {})",
                fault.held,
                report::seconds(fault.pickup)
            ),
            false => String::new(),
        };
        let lasted = fault
            .lasted
            .map_or(String::new(), |l| format!(" after {} s", l.as_secs()));
        let back = report::seconds(fault.rejoined);
        let rejoined = match (fault.lasted, kind.on_api_link(), kind.on_worker_link()) {
            (Some(_), true, _) => format!(", the replica ready again {back} after healing"),
            (Some(_), _, true) => format!(", the worker claiming again {back} after healing"),
            _ => String::new(),
        };
        eprintln!(
            "[{:>7.1} s] fault {}/{}: {:<28} {:>4} unfinished jobs, recovered in {}{lasted}{pickup}{rejoined}; {} jobs accepted so far",
            started.elapsed().as_secs_f64(),
            n + 1,
            schedule.len(),
            kind.label(),
            fault.unfinished,
            report::seconds(fault.recovery),
            ledger.accepted(),
        );
        if let Some(story) = &fault.slowest {
            eprintln!("           the last to finish: {story}");
        }
        faults.push(fault);
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    faults_done.store(true, Ordering::Relaxed);
    eprintln!(
        "all faults injected; waiting for the clients to reach {} jobs and finish",
        args.jobs
    );
    for client in clients {
        client.await.context("a client task panicked")?;
    }
    let batches = batches.await.context("the batch client panicked")?;
    cluster.wait_ready(Duration::from_secs(60)).await?;
    cluster.stop().await;
    let elapsed = started.elapsed();

    let seen = ledger.take();
    let audit = audit::run(&pool, &seen).await?;
    report::print(&audit, &seen, &faults, elapsed);
    report::print_batches(&batches);
    // Past the probes' whole course (idle, then every probe unanswered), for a partition that
    // was the last fault.
    let within = genq_shared::db::SERVER_KEEPALIVE.gives_up_after() + Duration::from_secs(10);
    let sessions_left = audit::sessions_left(pool, &suite_url, within).await?;
    eprintln!(
        "PostgreSQL sessions left open once genq's processes stopped: {sessions_left} (waited up to {} s)",
        within.as_secs()
    );
    let all_recovered = faults.iter().all(|f| f.recovery.is_some());
    // A worker or an API replica whose link healed must work again by itself, without a restart.
    let all_rejoined = faults
        .iter()
        .filter(|f| f.kind.needs_links() && f.lasted.is_some())
        .all(|f| f.rejoined.is_some());
    let partitions_in_time = faults.iter().filter(|f| f.kind.cut().is_some()).all(|f| {
        f.after_healing
            .is_some_and(|a| a <= faults::PARTITION_RECOVERY)
    });
    if !audit.passed()
        || !all_recovered
        || !all_rejoined
        || !partitions_in_time
        || sessions_left > 0
        || seen.server_errors > 0
        || seen.unavailable_without_retry_after > 0
        || !batches.passed()
    {
        anyhow::bail!("the fault-injection suite FAILED (see the table above)");
    }
    eprintln!("the fault-injection suite passed");
    Ok(())
}

/// `count` links, numbered from `first`: workers' below [`links::API_LINKS`], API replicas' from
/// it.
async fn make_links(args: &Args, first: u8, count: usize) -> anyhow::Result<Vec<Link>> {
    let last = usize::from(first) + count;
    anyhow::ensure!(
        last <= usize::from(links::API_LINKS) || first >= links::API_LINKS && last <= 255,
        "too many processes on links: at most 100 workers and 154 API replicas"
    );
    let mut links = Vec::with_capacity(count);
    for offset in 0..count {
        let n = u8::try_from(usize::from(first) + offset).context("too many links")?;
        let postgres = links::host_port(&args.postgres);
        links.push(Link::create("gqchaos", n, postgres, links::host_port(&args.redis)).await?);
    }
    Ok(links)
}

fn commands(args: &Args) -> anyhow::Result<Commands> {
    let needs = |kind: FaultKind, command: &Option<String>, flag: &str| {
        anyhow::ensure!(
            !args.kinds.contains(&kind) || command.is_some(),
            "{flag} is needed for {} faults",
            kind.label()
        );
        Ok(command.clone().unwrap_or_default())
    };
    anyhow::ensure!(
        !args.kinds.contains(&FaultKind::PostgresDiskFull) || args.postgres_tablespace.is_some(),
        "--postgres-tablespace is needed for {} faults",
        FaultKind::PostgresDiskFull.label()
    );
    Ok(Commands {
        redis_restart: needs(
            FaultKind::RedisRestart,
            &args.redis_restart,
            "--redis-restart",
        )?,
        postgres_restart: needs(
            FaultKind::PostgresRestart,
            &args.postgres_restart,
            "--postgres-restart",
        )?,
        postgres_fill: needs(
            FaultKind::PostgresDiskFull,
            &args.postgres_fill,
            "--postgres-fill",
        )?,
        postgres_free: needs(
            FaultKind::PostgresDiskFull,
            &args.postgres_free,
            "--postgres-free",
        )?,
        redis_flushall: args
            .redis_flushall
            .clone()
            .unwrap_or_else(|| format!("redis-cli -u {} flushall >/dev/null", args.redis)),
    })
}
