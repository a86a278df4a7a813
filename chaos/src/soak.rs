//! The soak: steady mixed traffic for an hour (batches polled, some cancelled; `POST /generate`;
//! batches followed over SSE; history pages) with a worker killed every few minutes, and every
//! minute a row: each process's resident memory, p50/p99 latency of each kind of request, and
//! the sizes of PostgreSQL's database and Redis. The rows go to stdout as a table and to a CSV
//! file, which `scripts/soak.sh` plots. Leaks and slow drifts show here, not in the fault suite.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use genq_harness::Cluster;
use serde_json::json;
use sqlx::PgPool;

/// The kinds of request timed, each its own column pair.
pub const KINDS: [&str; 4] = ["batch", "generate", "sse", "history"];

/// Latencies seen, with when each request ended.
#[derive(Default)]
pub struct Samples(Mutex<Vec<(Instant, &'static str, f64)>>);

impl Samples {
    pub fn record(&self, kind: &'static str, started: Instant) {
        let mut samples = self.0.lock().unwrap_or_else(|p| p.into_inner());
        samples.push((Instant::now(), kind, started.elapsed().as_secs_f64()));
    }

    /// p50 and p99 of each kind's requests that ended in `[from, to)`.
    fn percentiles(&self, from: Instant, to: Instant) -> BTreeMap<&'static str, (f64, f64)> {
        let samples = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_kind: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for (at, kind, secs) in samples.iter() {
            if *at >= from && *at < to {
                by_kind.entry(*kind).or_default().push(*secs);
            }
        }
        by_kind
            .into_iter()
            .map(|(kind, mut values)| {
                values.sort_by(f64::total_cmp);
                let at = |p: f64| values[((p * values.len() as f64).ceil() as usize).max(1) - 1];
                (kind, (at(0.50), at(0.99)))
            })
            .collect()
    }
}

/// One interactive client: a `POST /generate`, a batch followed over SSE and a history page, in
/// turn, each timed; errors count as such (500s are also counted by kind).
pub async fn interactive(
    http: reqwest::Client,
    base_url: String,
    samples: Arc<Samples>,
    errors: Arc<Mutex<BTreeMap<String, usize>>>,
    done: impl Fn() -> bool,
) {
    let failed = |what: String| {
        *errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what)
            .or_default() += 1;
    };
    let body = json!({ "prompts": ["the harbor at night", "a quiet garden"], "max_tokens": 12 });
    while !done() {
        let started = Instant::now();
        match http
            .post(format!("{base_url}/generate"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => samples.record("generate", started),
            Ok(r) => failed(format!("POST /generate {}", r.status())),
            Err(_) => failed("POST /generate: no answer".into()),
        }

        let started = Instant::now();
        match follow_over_sse(&http, &base_url, &body).await {
            Ok(()) => samples.record("sse", started),
            Err(what) => failed(what),
        }

        let started = Instant::now();
        match http
            .get(format!("{base_url}/history?limit=50"))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => samples.record("history", started),
            Ok(r) => failed(format!("GET /history {}", r.status())),
            Err(_) => failed("GET /history: no answer".into()),
        }
    }
}

/// Submits a batch and reads its event stream until `event: done`.
async fn follow_over_sse(
    http: &reqwest::Client,
    base_url: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    let submitted = http
        .post(format!("{base_url}/batch"))
        .json(body)
        .send()
        .await
        .map_err(|_| "POST /batch: no answer".to_owned())?;
    if submitted.status() != 202 {
        return Err(format!("POST /batch {}", submitted.status()));
    }
    let accepted: serde_json::Value = submitted.json().await.map_err(|e| e.to_string())?;
    let id = accepted["task_id"].as_str().unwrap_or_default();
    let mut stream = http
        .get(format!("{base_url}/batch_result/{id}/events"))
        .send()
        .await
        .map_err(|_| "GET /events: no answer".to_owned())?;
    if stream.status() != 200 {
        return Err(format!("GET /events {}", stream.status()));
    }
    let mut seen = String::new();
    while let Ok(Some(chunk)) = stream.chunk().await {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains("event: done") {
            return Ok(());
        }
    }
    Err("GET /events ended without `event: done`".into())
}

/// One minute's row.
pub struct Row {
    pub minute: u64,
    /// Resident memory, MiB, by process (`api0`, `api1`, `w0` ...), of the process there now.
    pub rss_mib: Vec<(String, f64)>,
    pub latency: BTreeMap<&'static str, (f64, f64)>,
    pub postgres_mib: f64,
    pub redis_mib: f64,
    pub errors: usize,
}

impl Row {
    pub fn header(processes: &[String]) -> String {
        let mut cells = vec!["minute".to_owned()];
        cells.extend(processes.iter().map(|p| format!("{p} RSS MiB")));
        for kind in KINDS {
            cells.push(format!("{kind} p50 s"));
            cells.push(format!("{kind} p99 s"));
        }
        cells.extend(["PostgreSQL MiB", "Redis MiB", "errors"].map(str::to_owned));
        cells.join(",")
    }

    pub fn csv(&self) -> String {
        let mut cells = vec![self.minute.to_string()];
        cells.extend(self.rss_mib.iter().map(|(_, mib)| format!("{mib:.1}")));
        for kind in KINDS {
            let (p50, p99) = self
                .latency
                .get(kind)
                .copied()
                .unwrap_or((f64::NAN, f64::NAN));
            cells.push(format!("{p50:.3}"));
            cells.push(format!("{p99:.3}"));
        }
        cells.push(format!("{:.1}", self.postgres_mib));
        cells.push(format!("{:.1}", self.redis_mib));
        cells.push(self.errors.to_string());
        cells.join(",")
    }
}

/// Resident memory of `pid` now, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The processes' names, in the order of [`Row::rss_mib`].
pub fn process_names(cluster: &Cluster) -> Vec<String> {
    let apis = (0..cluster.api_replicas()).map(|r| format!("api{r}"));
    apis.chain((0..cluster.workers()).map(|w| format!("w{w}")))
        .collect()
}

/// Takes minute `minute`'s row, the latencies of requests that ended in the minute before `now`.
pub async fn row(
    cluster: &Cluster,
    pool: &PgPool,
    redis: &redis::Client,
    samples: &Samples,
    errors: usize,
    minute: u64,
    now: Instant,
) -> Row {
    let pids = (0..cluster.api_replicas()).map(|r| cluster.api_replica_pid(r));
    let pids: Vec<u32> = pids
        .chain((0..cluster.workers()).map(|w| cluster.worker_pid(w)))
        .collect();
    let postgres: i64 = sqlx::query_scalar("select pg_database_size(current_database())")
        .fetch_one(pool)
        .await
        .unwrap_or(0);
    let redis_bytes = async {
        let mut connection = redis.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut connection)
            .await
            .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))?
            .trim()
            .parse::<f64>()
            .ok()
    };
    Row {
        minute,
        rss_mib: process_names(cluster)
            .into_iter()
            .zip(pids.into_iter().map(rss_mib))
            .collect(),
        latency: samples.percentiles(now - Duration::from_secs(60), now),
        postgres_mib: postgres as f64 / 1048576.0,
        redis_mib: redis_bytes.await.unwrap_or(f64::NAN) / 1048576.0,
        errors,
    }
}

/// A restarted worker's own warm-up: its model is loaded and its first jobs run by then.
const RESTART_WARM_UP_MINUTES: u64 = 2;

/// How long the windows are whose p99 latencies are compared.
const LATENCY_WINDOW: Duration = Duration::from_secs(600);

/// The verdict on the targets: each process's RSS growth, from its first row after the warm-up
/// (`warm_up` minutes from the start, or [`RESTART_WARM_UP_MINUTES`] from its restart) to its
/// last; and each kind's p99 latency over the last ten minutes against the first ten after the
/// warm-up (`started` to `ended` is the whole run). Lines to print, and whether all held.
pub fn verdict(
    rows: &[Row],
    samples: &Samples,
    (started, ended): (Instant, Instant),
    warm_up: u64,
    restarted: &[(u64, String)],
) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut held = true;
    let Some(names) = rows
        .first()
        .map(|r| r.rss_mib.iter().map(|(n, _)| n.clone()))
    else {
        return (vec!["no rows".into()], false);
    };
    for (index, name) in names.enumerate() {
        let born = restarted
            .iter()
            .filter(|(_, n)| *n == name)
            .map(|(minute, _)| minute + RESTART_WARM_UP_MINUTES)
            .max()
            .unwrap_or(warm_up);
        let from = rows.iter().find(|r| r.minute >= born);
        match (from, rows.last()) {
            (Some(from), Some(to)) if to.minute > from.minute => {
                let (a, b) = (from.rss_mib[index].1, to.rss_mib[index].1);
                let growth = (b - a) / a;
                held &= growth <= 0.05;
                lines.push(format!(
                    "{name}: RSS {a:.1} MiB at minute {} -> {b:.1} MiB at minute {}: {:+.1}% \
                     (target <= +5%)",
                    from.minute,
                    to.minute,
                    100.0 * growth
                ));
            }
            _ => lines.push(format!("{name}: too young for a figure after its warm-up")),
        }
    }
    let first_from = started + Duration::from_secs(60 * warm_up);
    let first = samples.percentiles(first_from, first_from + LATENCY_WINDOW);
    let last = samples.percentiles(ended.checked_sub(LATENCY_WINDOW).unwrap_or(started), ended);
    for kind in KINDS {
        if let (Some((_, first)), Some((_, last))) = (first.get(kind), last.get(kind)) {
            held &= *last <= 1.2 * first;
            lines.push(format!(
                "{kind}: p99 {first:.3} s over the ten minutes after the warm-up, {last:.3} s \
                 over the last ten: {:.2}x (target <= 1.2x)",
                last / first
            ));
        }
    }
    (lines, held)
}

/// Writes the CSV next to the logs.
pub fn write_csv(path: &Path, header: &str, rows: &[Row]) -> std::io::Result<()> {
    let body: Vec<String> = rows.iter().map(Row::csv).collect();
    std::fs::write(path, format!("{header}\n{}\n", body.join("\n")))
}

/// What the soak needs beyond the cluster.
pub struct Plan {
    pub minutes: u64,
    pub kill_every_minutes: u64,
    pub warm_up_minutes: u64,
    pub clients: usize,
    pub interactive_clients: usize,
    pub cancel_percent: u32,
    pub models: Vec<Option<String>>,
    pub seed: u64,
    pub csv: std::path::PathBuf,
}

/// Runs the soak on `cluster` and prints its table and verdict; fails if a target was missed, an
/// accepted job was lost, or any request failed.
pub async fn run(
    cluster: &mut Cluster,
    pool: &PgPool,
    redis: &redis::Client,
    plan: Plan,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};

    let samples = Arc::new(Samples::default());
    let errors = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let ledger = Arc::new(crate::load::Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..plan.clients {
        let seed = plan.seed.wrapping_mul(1000).wrapping_add(i as u64);
        let mut client = crate::load::Client::new(
            cluster,
            ledger.clone(),
            seed,
            plan.cancel_percent,
            plan.models.clone(),
        );
        client.samples = Some(samples.clone());
        let stop = stop.clone();
        tasks.push(tokio::spawn(
            client.run(move || stop.load(Ordering::Relaxed)),
        ));
    }
    let http = cluster
        .client_builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    for _ in 0..plan.interactive_clients {
        let stop = stop.clone();
        tasks.push(tokio::spawn(interactive(
            http.clone(),
            cluster.base_url(),
            samples.clone(),
            errors.clone(),
            move || stop.load(Ordering::Relaxed),
        )));
    }

    let names = process_names(cluster);
    let header = Row::header(&names);
    println!("| {} |", header.replace(',', " | "));
    println!("|{}", " ---: |".repeat(header.split(',').count()));
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut restarted = Vec::new();
    for minute in 1..=plan.minutes {
        tokio::time::sleep_until((started + Duration::from_secs(60 * minute)).into()).await;
        let failed: usize = errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum();
        let failed = failed + ledger.server_errors();
        let sampled = row(
            cluster,
            pool,
            redis,
            &samples,
            failed,
            minute,
            Instant::now(),
        )
        .await;
        println!("| {} |", sampled.csv().replace(',', " | "));
        rows.push(sampled);
        write_csv(&plan.csv, &header, &rows)?;
        if minute % plan.kill_every_minutes == 0 && minute < plan.minutes {
            // Workers in turn, so that each lives several periods and its memory can be read.
            let index = (minute / plan.kill_every_minutes - 1) as usize % cluster.workers();
            cluster.kill_and_restart_worker(index).await?;
            restarted.push((minute, names[cluster.api_replicas() + index].clone()));
            eprintln!("[minute {minute}] worker {index} SIGKILLed and restarted");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }

    let seen = ledger.take();
    let audit = crate::audit::run(pool, &seen).await?;
    let window = (started, Instant::now());
    let (lines, targets_held) = verdict(&rows, &samples, window, plan.warm_up_minutes, &restarted);
    println!();
    for line in &lines {
        println!("- {line}");
    }
    let errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!(
        "- jobs: {} accepted, {} lost, {} stored twice; request errors {:?}, HTTP 500s {}",
        audit.accepted,
        audit.lost(),
        audit.stored_twice,
        errors,
        seen.server_errors
    );
    println!("- the table as CSV: {}", plan.csv.display());
    anyhow::ensure!(
        targets_held && audit.passed() && errors.is_empty() && seen.server_errors == 0,
        "the soak FAILED (see above)"
    );
    Ok(())
}
