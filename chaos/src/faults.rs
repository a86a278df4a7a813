//! Injecting faults one at a time while the load runs, and timing each recovery in PostgreSQL.
//!
//! Recovery of a fault: from the moment it is injected until every job that was unfinished at
//! that moment has finished (completed, failed or cancelled), timed while the fault lasts. A
//! fault that lasts (a partition, a slow link, a full Redis) is healed after 5 to 60 s, and its
//! recovery is also given from the healing (0 when every job finished before it). For a fault
//! that hits one worker the pickup is timed too: until every job the worker held runs again
//! elsewhere or has finished.

use std::time::{Duration, Instant};

use anyhow::Context;
use genq_harness::Cluster;
use genq_shared::db::jobs::report;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sqlx::PgPool;
use uuid::Uuid;

use genq_harness::relay::Mode;

use crate::{
    links::{Cut, Link},
    redis_full,
};

/// A partition's jobs must all have finished this long after it healed (the run fails otherwise).
pub const PARTITION_RECOVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum FaultKind {
    /// SIGKILL a worker that holds running jobs, then start a new one.
    WorkerKill,
    /// Restart Redis, which comes back empty (it keeps nothing on disk).
    RedisRestart,
    /// FLUSHALL: Redis stays up but forgets every queue, task and worker registration.
    RedisFlushall,
    /// Restart PostgreSQL (fast shutdown: open connections are cut).
    PostgresRestart,
    /// SIGKILL every API replica at once, then start each again on its address.
    ApiRestart,
    /// SIGKILL one API replica and restart it, then the next once it is ready, and so on: the
    /// balancer in front sends new connections to the others meanwhile.
    ApiReplicasInTurn,
    /// Drop every packet from a worker to PostgreSQL, then heal.
    PartitionPostgres,
    /// Drop every packet from a worker to Redis, then heal.
    PartitionRedis,
    /// Drop every packet from a worker to PostgreSQL and Redis, then heal.
    PartitionBoth,
    /// A worker's links to PostgreSQL and Redis 200 ms slower each way, then back.
    SlowLink,
    /// A worker's links go silent, connections left open, then speak again.
    StalledLink,
    /// Every connection from a worker to PostgreSQL and Redis closed at once.
    DroppedConnections,
    /// Drop every packet from an API replica to PostgreSQL, then heal.
    ApiPartitionPostgres,
    /// Drop every packet from an API replica to Redis, then heal.
    ApiPartitionRedis,
    /// Redis at `maxmemory` (noeviction): every write refused with OOM, then room again.
    RedisMaxmemory,
    /// The disk under PostgreSQL's tablespace for the suite's database full, then freed.
    PostgresDiskFull,
}

impl FaultKind {
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::WorkerKill => "worker SIGKILL + restart",
            FaultKind::RedisRestart => "Redis restart (empty)",
            FaultKind::RedisFlushall => "Redis FLUSHALL",
            FaultKind::PostgresRestart => "PostgreSQL restart",
            FaultKind::ApiRestart => "API SIGKILL + restart",
            FaultKind::ApiReplicasInTurn => "API replicas killed in turn",
            FaultKind::PartitionPostgres => "worker cut from PostgreSQL",
            FaultKind::PartitionRedis => "worker cut from Redis",
            FaultKind::PartitionBoth => "worker cut from both",
            FaultKind::SlowLink => "worker's links +200 ms",
            FaultKind::StalledLink => "worker's links silent",
            FaultKind::DroppedConnections => "worker's connections dropped",
            FaultKind::ApiPartitionPostgres => "API replica cut from PostgreSQL",
            FaultKind::ApiPartitionRedis => "API replica cut from Redis",
            FaultKind::RedisMaxmemory => "Redis at maxmemory",
            FaultKind::PostgresDiskFull => "PostgreSQL's disk full",
        }
    }

    /// Whether it hits one worker, whose jobs must then run elsewhere or finish.
    pub fn has_victim(self) -> bool {
        self == FaultKind::WorkerKill || self.on_worker_link()
    }

    /// Whether it needs workers or API replicas on links of their own.
    pub fn needs_links(self) -> bool {
        self.on_worker_link() || self.on_api_link()
    }

    /// Whether it hits an API replica's link.
    pub fn on_api_link(self) -> bool {
        matches!(
            self,
            FaultKind::ApiPartitionPostgres | FaultKind::ApiPartitionRedis
        )
    }

    /// Whether it hits a worker's link.
    pub fn on_worker_link(self) -> bool {
        matches!(
            self,
            FaultKind::PartitionPostgres
                | FaultKind::PartitionRedis
                | FaultKind::PartitionBoth
                | FaultKind::SlowLink
                | FaultKind::StalledLink
                | FaultKind::DroppedConnections
        )
    }

    /// Whether it lasts until healed.
    fn lasts(self) -> bool {
        self.needs_links() && self != FaultKind::DroppedConnections
            || matches!(
                self,
                FaultKind::RedisMaxmemory | FaultKind::PostgresDiskFull
            )
    }

    pub fn cut(self) -> Option<Cut> {
        match self {
            FaultKind::PartitionPostgres | FaultKind::ApiPartitionPostgres => Some(Cut::Postgres),
            FaultKind::PartitionRedis | FaultKind::ApiPartitionRedis => Some(Cut::Redis),
            FaultKind::PartitionBoth => Some(Cut::Both),
            _ => None,
        }
    }
}

/// How long a partition lasts in the short run.
const SHORT_PARTITION: Duration = Duration::from_secs(25);

/// The added latency of a slow link, each way.
const SLOW_LINK_DELAY: Duration = Duration::from_millis(200);

/// Shell commands that restart the stores; they differ from machine to machine.
pub struct Commands {
    pub redis_restart: String,
    pub redis_flushall: String,
    pub postgres_restart: String,
    /// Fills the disk under the suite's database, and frees it.
    pub postgres_fill: String,
    pub postgres_free: String,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// Jobs unfinished when it was injected.
    pub unfinished: usize,
    /// `None`: not recovered within the patience given.
    pub recovery: Option<Duration>,
    /// Faults with a victim only: jobs it held, and how long until they all ran again or
    /// finished.
    pub held: usize,
    pub pickup: Option<Duration>,
    /// Faults that last: how long, and the recovery from their healing on.
    pub lasted: Option<Duration>,
    pub after_healing: Option<Duration>,
    /// Lasting faults on one worker's links: from the healing until that worker, still the same
    /// process, claimed a job again; on an API replica's: until it answered `/ready` with 200
    /// again (`None`: not within patience).
    pub rejoined: Option<Duration>,
    /// What happened to the job that finished last of those unfinished at the fault, in seconds
    /// from the injection: where the recovery waited.
    pub slowest: Option<String>,
}

pub struct Injector<'a> {
    pub cluster: &'a mut Cluster,
    pub pool: PgPool,
    pub commands: Commands,
    pub patience: Duration,
    /// One per worker, by index; empty unless a kind needs them.
    pub links: &'a [Link],
    /// One per API replica, by index; empty unless a kind needs them.
    pub api_links: &'a [Link],
    pub redis: redis::Client,
    /// Picks how long each lasting fault lasts.
    pub rng: ChaCha8Rng,
    /// Lasting faults last 5 s, partitions 25 s (CI's run), not 5 to 60.
    pub short: bool,
}

impl Injector<'_> {
    pub async fn inject(&mut self, kind: FaultKind) -> anyhow::Result<Fault> {
        self.until_jobs_run().await;
        let victim = match kind.has_victim() {
            true => Some(self.busiest_worker().await?),
            false => None,
        };
        let unfinished = retry_query(self.patience, || report::unfinished(&self.pool)).await?;
        let held: Vec<Uuid> = match &victim {
            Some((_, name)) => {
                retry_query(self.patience, || report::running_on(&self.pool, name)).await?
            }
            None => Vec::new(),
        };

        let lasts = kind.lasts().then(|| match (self.short, kind.cut()) {
            (false, _) => Duration::from_secs(self.rng.random_range(5..=60)),
            // Longer than a lease (15 s) and a reconciler pass, so that the short run too sees
            // the cut worker's jobs run elsewhere and its late writes refused.
            (true, Some(_)) => SHORT_PARTITION,
            (true, None) => Duration::from_secs(5),
        });
        // Copied out, so that the link outlives this borrow of `self`.
        let (links, api_links) = (self.links, self.api_links);
        let replica = kind
            .on_api_link()
            .then(|| self.rng.random_range(0..api_links.len().max(1)));
        let link = match replica {
            Some(replica) => api_links.get(replica),
            None => victim.as_ref().and_then(|(index, _)| links.get(*index)),
        };
        let mut redis_settings = Vec::new();
        let injected = Instant::now();
        match (kind, &victim) {
            (FaultKind::WorkerKill, Some((index, _))) => {
                self.cluster.kill_and_restart_worker(*index).await?
            }
            (FaultKind::ApiRestart, _) => self.cluster.kill_and_restart_api().await?,
            (FaultKind::ApiReplicasInTurn, _) => {
                for replica in 0..self.cluster.api_replicas() {
                    self.cluster.kill_and_restart_api_replica(replica).await?;
                    self.cluster
                        .wait_replica_ready(replica, self.patience)
                        .await?;
                }
            }
            (FaultKind::RedisRestart, _) => shell(&self.commands.redis_restart).await?,
            (FaultKind::RedisFlushall, _) => shell(&self.commands.redis_flushall).await?,
            (FaultKind::PostgresRestart, _) => shell(&self.commands.postgres_restart).await?,
            (FaultKind::RedisMaxmemory, _) => {
                redis_settings = redis_full::fill(&self.redis).await?
            }
            (FaultKind::PostgresDiskFull, _) => shell(&self.commands.postgres_fill).await?,
            (kind, _) if kind.needs_links() => {
                let link = link.context("no link for this fault: were the links made?")?;
                match kind.cut() {
                    Some(cut) => link.partition(cut).await?,
                    None if kind == FaultKind::SlowLink => {
                        link.set_mode(Mode::Delay(SLOW_LINK_DELAY))
                    }
                    None if kind == FaultKind::StalledLink => link.set_mode(Mode::Stall),
                    None => link.drop_connections(),
                }
            }
            (kind, _) => unreachable!("{kind:?} needs a victim"),
        }

        // The victim's jobs are watched while the fault lasts: they should run elsewhere.
        let pickup = async {
            match &victim {
                Some((_, name)) => self.until_picked_up(&held, name, injected).await,
                None => None,
            }
        };
        let heal = async {
            let Some(lasting) = lasts else {
                return anyhow::Ok(());
            };
            tokio::time::sleep(lasting).await;
            match (kind, kind.cut(), link) {
                (_, Some(cut), Some(link)) => link.heal(cut).await,
                (_, None, Some(link)) => {
                    link.set_mode(Mode::Pass);
                    Ok(())
                }
                (FaultKind::PostgresDiskFull, ..) => shell(&self.commands.postgres_free).await,
                _ => redis_full::restore(&self.redis, &redis_settings).await,
            }
        };
        // Timed from the injection, while the fault lasts: jobs may well finish before it heals.
        let recovery = self.until_finished(&unfinished, injected);
        let healed_then_rejoined = async {
            heal.await
                .with_context(|| format!("healing {}", kind.label()))?;
            let healed = Instant::now();
            anyhow::Ok(match (&victim, replica, link, lasts) {
                (Some((_, name)), _, Some(_), Some(_)) => self.until_claims(name, healed).await,
                (None, Some(replica), Some(_), Some(_)) => {
                    let ready = self.cluster.replica_ready_within(replica, self.patience);
                    ready.await.then(|| healed.elapsed())
                }
                _ => None,
            })
        };
        let (pickup, rejoined, recovery) = tokio::join!(pickup, healed_then_rejoined, recovery);
        let rejoined = rejoined?;
        let slowest = self.slowest_story(&unfinished, injected).await;
        Ok(Fault {
            kind,
            unfinished: unfinished.len(),
            recovery,
            held: held.len(),
            pickup,
            lasted: lasts,
            after_healing: lasts.zip(recovery).map(|(l, r)| r.saturating_sub(l)),
            rejoined,
            slowest,
        })
    }

    /// The job of `ids` that finished last, told in seconds since `injected`.
    async fn slowest_story(&self, ids: &[Uuid], injected: Instant) -> Option<String> {
        let story = report::last_to_finish(&self.pool, ids).await.ok()??;
        let now = injected.elapsed().as_secs_f64();
        let at = |ago: f64| format!("{:+.1}", now - ago);
        let claims: Vec<String> = story
            .claims
            .iter()
            .map(|c| {
                format!(
                    "{} claimed {} ended {} {}",
                    c.worker,
                    at(c.claimed_ago),
                    c.ended_ago.map_or("-".into(), at),
                    c.outcome.as_deref().unwrap_or("running")
                )
            })
            .collect();
        Some(format!(
            "{} {:?}: created {} queued {} finished {}; claims: [{}]",
            story.id,
            story.status,
            at(story.created_ago),
            at(story.queued_ago),
            story.finished_ago.map_or("-".into(), at),
            claims.join("; ")
        ))
    }

    /// Waits until `worker` (a registered name, or the prefix of its current process's) claims a
    /// job after `since`: it works again without a restart.
    async fn until_claims(&self, worker: &str, since: Instant) -> Option<Duration> {
        while since.elapsed() < self.patience {
            let lately = since.elapsed().as_secs_f64();
            let claimed = report::claimed_lately(&self.pool, worker, lately).await;
            if claimed.is_ok_and(|n| n > 0) {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Faults are injected while jobs run, so they land mid-job.
    async fn until_jobs_run(&self) {
        let give_up = Instant::now() + Duration::from_secs(30);
        while Instant::now() < give_up {
            let running = report::running_count(&self.pool).await;
            if running.is_ok_and(|n| n > 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The worker (index and registered name) holding the most running jobs; worker 0 if none does.
    async fn busiest_worker(&self) -> anyhow::Result<(usize, String)> {
        let holders = retry_query(self.patience, || report::running_by_worker(&self.pool)).await?;
        for (name, _) in holders {
            for index in 0..self.cluster.workers() {
                // Names are `{prefix}-{pid}-{suffix}`: only the current process of a slot counts.
                let current = format!(
                    "{}-{}-",
                    self.cluster.worker_name(index),
                    self.cluster.worker_pid(index)
                );
                if name.starts_with(&current) {
                    return Ok((index, name));
                }
            }
        }
        let pid = self.cluster.worker_pid(0);
        Ok((0, format!("{}-{pid}-", self.cluster.worker_name(0))))
    }

    async fn until_picked_up(&self, held: &[Uuid], dead: &str, since: Instant) -> Option<Duration> {
        self.until_zero(since, || report::still_held_by(&self.pool, held, dead))
            .await
    }

    async fn until_finished(&self, ids: &[Uuid], since: Instant) -> Option<Duration> {
        self.until_zero(since, || report::unfinished_among(&self.pool, ids))
            .await
    }

    /// Polls `count` until it reads zero; the time since `since` then, or `None` past patience.
    async fn until_zero<F, Fut>(&self, since: Instant, count: F) -> Option<Duration>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = sqlx::Result<i64>>,
    {
        while since.elapsed() < self.patience {
            // Errors while PostgreSQL restarts just mean: not yet.
            if count().await.is_ok_and(|n| n == 0) {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// Runs a query until PostgreSQL answers it (it may be restarting from the previous fault), for
/// at most `patience`.
async fn retry_query<T, F, Fut>(patience: Duration, query: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = sqlx::Result<T>>,
{
    let give_up = Instant::now() + patience;
    loop {
        match query().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= give_up => {
                return Err(e).context("PostgreSQL did not answer the suite's query");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn shell(command: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await
        .with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(status.success(), "{command:?} exited with {status}");
    Ok(())
}
