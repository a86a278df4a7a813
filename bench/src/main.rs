//! genq-bench: measures genq end to end against llama.cpp alone (the ceiling) and against the
//! Python stack users run today, on the same model and requests, and prints one table. Run it
//! through `bench/run.sh`, which prepares the services, the build, the model and the virtualenv.
//! `genq-bench workers-per-host` (`bench/run.sh --workers-per-host`) measures instead how 1, 2
//! and 3 workers on one host compare.
//!
//! # Layout
//! - `workload`: the three workloads; `measure`: per-run figures and medians.
//! - `ceiling`: llama.cpp alone; `e2e`: genq's API and worker processes; `python`: transformers.
//! - `reproducibility`: whether a seeded result depends on the batch around it.
//! - `workers_per_host`: the several-workers-on-one-host benchmark.
//! - The processes themselves are started and stopped by `genq-harness`.

mod ceiling;
mod e2e;
mod measure;
mod python;
mod reproducibility;
mod workers_per_host;
mod workload;

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Parser;
use genq_engine::{Model, Placement, synth};
use measure::{Run, Summary, summarize};
use workload::{Request, Workload};

#[derive(Debug, Parser)]
#[command(
    name = "genq-bench",
    about = "genq against llama.cpp alone and the Python stack",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    compare: Compare,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// 1, 2 and 3 workers with default settings on this host, and 3 without the decode lock.
    WorkersPerHost(workers_per_host::Args),
}

/// Where PostgreSQL and Redis are.
#[derive(Debug, Clone, clap::Args)]
struct Services {
    #[arg(
        long,
        env = "GENQ_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    postgres: String,
    #[arg(
        long,
        env = "GENQ_BENCH_REDIS",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,
}

/// The default mode: llama.cpp alone, genq end to end and the Python stack, one table.
#[derive(Debug, clap::Args)]
struct Compare {
    /// GGUF model; synthesized (GPT-2 124M shape, Q8_0) if the file does not exist.
    #[arg(long, default_value = "models/gpt2-124m-synthetic-q8_0.gguf")]
    model: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "a,b,c")]
    workloads: Vec<Workload>,
    /// Repetitions of each row; the table shows medians.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also run the Python row on workload (c): it serves requests one at a time, so this takes
    /// several minutes per repetition.
    #[arg(long)]
    python_all: bool,
    /// Skip the Python row.
    #[arg(long)]
    no_python: bool,
    /// Worker slots (and the ceiling's concurrency); default: the worker's own default.
    #[arg(long)]
    slots: Option<u32>,
    #[command(flatten)]
    services: Services,
    /// Where the API's and worker's logs go.
    #[arg(long, default_value = ".genq")]
    logs: PathBuf,
}

struct Row {
    workload: Workload,
    system: &'static str,
    outcome: Result<Summary, String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.mode {
        Some(Mode::WorkersPerHost(hosts)) => workers_per_host::run(hosts).await,
        None => compare(args.compare).await,
    }
}

async fn compare(args: Compare) -> anyhow::Result<()> {
    if !args.model.exists() {
        eprintln!("synthesizing {} (random weights)", args.model.display());
        synth::write_model(&args.model, synth::Shape::Gpt2_124m, 0)?;
    }
    std::fs::create_dir_all(&args.logs)?;
    let path = args.model.clone();
    let model = Arc::new(
        tokio::task::spawn_blocking(move || Model::load(&path, Placement::default())).await??,
    );
    let slots = args.slots.unwrap_or_else(genq_engine::default_slots);
    let context_per_slot = genq_engine::context_per_slot(model.context_length(), None);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = if args.no_python {
        Err("--no-python".to_owned())
    } else {
        python::Python::find(&bench_dir)
    };
    let options = e2e::Options {
        bin_dir: genq_harness::default_bin_dir(),
        model: std::path::absolute(&args.model)?,
        postgres: args.services.postgres.clone(),
        redis: args.services.redis.clone(),
        slots: args.slots,
        logs: args.logs.clone(),
    };

    let mut rows = Vec::new();
    for &workload in &args.workloads {
        let requests = workload::requests(workload);
        eprintln!("== {}", workload.describe());

        let shape = ceiling::Shape {
            slots,
            context_per_slot,
            threads: cores as i32,
        };
        let ceiling_model = Arc::clone(&model);
        let ceiling_requests = requests.clone();
        let runs = repeat(args.reps, "llama.cpp alone", || {
            ceiling::run(&ceiling_model, &ceiling_requests, &shape)
        });
        rows.push(row(workload, "llama.cpp alone", runs, &requests));

        let genq = Arc::new(e2e::Genq::start(&options).await.context("starting genq")?);
        let mut runs = Vec::new();
        for rep in 0..args.reps {
            let run = genq.run(&requests).await?;
            eprintln!(
                "  genq end to end, run {}: {:.1} tok/s",
                rep + 1,
                run.tokens as f64 / run.wall_s
            );
            runs.push(run);
        }
        if let Ok(genq) = Arc::try_unwrap(genq) {
            genq.stop().await;
        }
        rows.push(row(workload, "genq end to end", Ok(runs), &requests));

        let outcome = match &python {
            Err(why) => Err(why.clone()),
            Ok(_) if workload == Workload::C && !args.python_all => Err(
                "skipped: one request at a time takes minutes here (--python-all runs it)".into(),
            ),
            Ok(python) => {
                repeat(args.reps, "python", || python.run(&requests)).map_err(|e| e.to_string())
            }
        };
        rows.push(Row {
            workload,
            system: "python transformers",
            outcome: outcome.map(|runs| summarize(&runs, &requests)),
        });
    }

    println!();
    println!(
        "model {} ({} MiB), {cores} cores, {slots} slots x {context_per_slot} tokens of context, \
         KV cache {} MiB; medians of {} runs",
        args.model.display(),
        model.file_size() >> 20,
        (u64::from(slots) * u64::from(context_per_slot) * model.kv_bytes_per_token()) >> 20,
        args.reps
    );
    print_table(&rows);
    let repro_model = Arc::clone(&model);
    let repro =
        tokio::task::spawn_blocking(move || reproducibility::measure(repro_model, slots)).await??;
    println!(
        "seeded results identical alone and inside a batch of {}: {}/{}",
        repro.batch, repro.identical, repro.total
    );
    let kv = u64::from(slots) * u64::from(context_per_slot) * model.kv_bytes_per_token();
    println!(
        "RSS target for the worker: model file + KV cache + 150 MiB = {} MiB",
        (model.file_size() + kv + (150 << 20)) >> 20
    );
    Ok(())
}

fn repeat(
    reps: usize,
    system: &str,
    mut once: impl FnMut() -> anyhow::Result<Run>,
) -> anyhow::Result<Vec<Run>> {
    (0..reps)
        .map(|rep| {
            let run = once()?;
            eprintln!(
                "  {system}, run {}: {:.1} tok/s",
                rep + 1,
                run.tokens as f64 / run.wall_s
            );
            Ok(run)
        })
        .collect()
}

fn row(
    workload: Workload,
    system: &'static str,
    runs: anyhow::Result<Vec<Run>>,
    requests: &[Request],
) -> Row {
    Row {
        workload,
        system,
        outcome: runs
            .map(|r| summarize(&r, requests))
            .map_err(|e| format!("{e:#}")),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "| workload | system | tokens/s | x llama.cpp | p50 s | p95 s | first result s | p95 short / long s | peak RSS MiB |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let ceiling = rows
            .iter()
            .find(|r| r.workload == row.workload && r.system == "llama.cpp alone")
            .and_then(|r| r.outcome.as_ref().ok())
            .map(|s| s.tokens_per_s);
        let name = row.workload.describe();
        match &row.outcome {
            Err(why) => println!(
                "| {name} | {} | - | - | - | - | - | - | {why} |",
                row.system
            ),
            Ok(s) => {
                let ratio = ceiling.map_or("-".into(), |c| format!("{:.2}", s.tokens_per_s / c));
                let split = match (s.p95_short_s, s.p95_long_s) {
                    (Some(short), Some(long)) => format!("{short:.2} / {long:.2}"),
                    _ => "-".into(),
                };
                let rss = s
                    .peak_rss_bytes
                    .map_or("-".into(), |b| (b >> 20).to_string());
                println!(
                    "| {name} | {} | {:.1} | {ratio} | {:.2} | {:.2} | {:.2} | {split} | {rss} |",
                    row.system, s.tokens_per_s, s.p50_s, s.p95_s, s.first_result_s
                );
            }
        }
    }
}
