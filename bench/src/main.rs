//! genq-bench: measures genq, over HTTP as users reach it, beside what a user would compare it
//! with on the same model and requests: llama.cpp alone (the ceiling), `llama-server` (the peer
//! for CPU serving), `llama-batched-bench` (llama.cpp's own limit) and the Python stack users run
//! today, and prints one table. Run it through `bench/run.sh`, which prepares the services, the
//! build, the peer's binaries, the model and the virtualenv. `genq-bench workers-per-host`
//! (`bench/run.sh --workers-per-host`) measures instead how 1, 2 and 3 workers on one host compare.
//!
//! # Layout
//! - `workload`: the four workloads; `measure`: per-run figures and medians.
//! - `systems`: the rows, and one run of each; `table`: the printed table.
//! - `ceiling`: llama.cpp alone; `peer`: llama-server and llama-batched-bench; `e2e`: genq's API
//!   and worker processes; `clients`: the three ways a client waits for a job over HTTP;
//!   `streamed`: streamed completions and their time to first token;
//!   `python`: transformers.
//! - `reproducibility`: whether a seeded result depends on the batch around it.
//! - `workers_per_host`: the several-workers-on-one-host benchmark.
//! - `queues`: the per-model queues against an earlier single-queue build.
//! - `kernels`: genq's kernels against ggml's, in llama.cpp alone.
//! - The genq processes themselves are started and stopped by `genq-harness`.

mod ceiling;
mod clients;
mod e2e;
mod kernels;
mod measure;
mod openai_batch;
mod peer;
mod python;
mod queues;
mod reproducibility;
mod streamed;
mod systems;
mod table;
mod workers_per_host;
mod workload;

use std::{path::PathBuf, sync::Arc};

use clap::Parser;
use genq_engine::{Model, Placement};
use genq_model::synth;
use systems::{Bench, Plan, System};
use workload::Workload;

#[derive(Debug, Parser)]
#[command(
    name = "genq-bench",
    about = "genq over HTTP beside llama.cpp alone, llama-server, llama-batched-bench and the \
             Python stack",
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
    /// The OpenAI path against genq's own: a 50,000-line batch against bulk jobs, the upload and
    /// its memory, single-request latency.
    OpenaiBatch(openai_batch::Args),
    /// The per-model queues against an earlier single-queue build: throughput of many short
    /// jobs through one worker, and intake latency.
    Queues(queues::Args),
    /// genq's attention and matrix kernels against ggml's, in llama.cpp alone: one sequence at a
    /// time and 32 at once.
    Kernels(kernels::Args),
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

/// The default mode: every row on every workload, repetitions interleaved, one table.
#[derive(Debug, clap::Args)]
pub struct Compare {
    /// GGUF model; synthesized (GPT-2 124M shape, Q8_0) if the file does not exist.
    #[arg(long, default_value = "models/gpt2-124m-synthetic-q8_0.gguf")]
    model: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e")]
    workloads: Vec<Workload>,
    /// Rows to measure (each only on the workloads it applies to).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "llama-cpp,batched-bench,batched-bench-avx2,llama-server,\
                         llama-server-avx2,genq-poll,genq-long-poll,genq-sse,genq-no-prefix-sharing,\
                         genq-completions,genq-completions-stream,python"
    )]
    systems: Vec<System>,
    /// Repetitions of each row, interleaved across rows (A, B, A, B ...) with fresh seeds each;
    /// the table shows medians.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also run the Python row on workload (c): it serves requests one at a time, so this takes
    /// several minutes per repetition.
    #[arg(long)]
    python_all: bool,
    /// Skip the Python row.
    #[arg(long)]
    no_python: bool,
    /// Skip the llama-server and llama-batched-bench rows.
    #[arg(long)]
    no_peer: bool,
    /// Where scripts/peer-build.sh put llama-server and llama-batched-bench.
    #[arg(long, default_value = ".genq/peer/build/bin")]
    peer_bin: PathBuf,
    /// Where `GENQ_PEER_BUILD=avx2 scripts/peer-build.sh` put the AVX2-only build.
    #[arg(long, default_value = ".genq/peer/build-avx2/bin")]
    peer_avx2_bin: PathBuf,
    /// Worker slots (and the ceiling's and llama-server's); default: the worker's own default.
    #[arg(long)]
    slots: Option<u32>,
    /// A setting for genq's worker, KEY=VALUE (repeatable): A/B-test engine settings. GENQ_SLOTS
    /// and GENQ_CONTEXT_PER_SLOT also shape the other rows.
    #[arg(long = "worker-env", value_name = "KEY=VALUE", value_parser = key_value)]
    worker_env: Vec<(String, String)>,
    #[command(flatten)]
    services: Services,
    /// Where the processes' logs go.
    #[arg(long, default_value = ".genq")]
    logs: PathBuf,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.mode {
        Some(Mode::WorkersPerHost(hosts)) => workers_per_host::run(hosts).await,
        Some(Mode::OpenaiBatch(args)) => openai_batch::run(args).await,
        Some(Mode::Queues(args)) => queues::run(args).await,
        Some(Mode::Kernels(args)) => kernels::run(args).await,
        None => compare(args.compare).await,
    }
}

async fn compare(args: Compare) -> anyhow::Result<()> {
    if !args.model.exists() {
        eprintln!("synthesizing {} (random weights)", args.model.display());
        if let Some(dir) = args.model.parent() {
            std::fs::create_dir_all(dir)?;
        }
        synth::write_model(&args.model, synth::Shape::Gpt2_124m, 0)?;
    }
    std::fs::create_dir_all(&args.logs)?;
    let path = args.model.clone();
    let model = Arc::new(
        tokio::task::spawn_blocking(move || Model::load(&path, Placement::default())).await??,
    );
    let bench = Bench::new(&args, Arc::clone(&model))?;

    let mut rows = Vec::new();
    for &workload in &args.workloads {
        eprintln!("== {}", workload.describe());
        if workload.shares_prefix() {
            eprintln!(
                "{}",
                bench.describe_prefix(&workload::requests(workload, 0))
            );
        }
        let mut plans: Vec<Plan> = args
            .systems
            .iter()
            .filter_map(|&system| bench.plan(system, workload))
            .collect();
        for rep in 0..args.reps {
            let requests = workload::requests(workload, rep);
            for plan in plans.iter_mut().filter(|p| p.wants_run()) {
                let outcome = bench.run(plan.system, workload, &requests).await;
                plan.record(rep, outcome);
            }
        }
        let requests = workload::requests(workload, 0);
        rows.extend(plans.into_iter().map(|plan| plan.into_row(&requests)));
    }

    println!();
    println!("{}", bench.header(&args));
    table::print(&rows);
    let slots = bench.shape.slots;
    let repro_model = Arc::clone(&model);
    let repro =
        tokio::task::spawn_blocking(move || reproducibility::measure(repro_model, slots)).await??;
    println!(
        "seeded results identical alone and inside a batch of {}: {}/{}",
        repro.batch, repro.identical, repro.total
    );
    let kv =
        u64::from(slots) * u64::from(bench.shape.context_per_slot) * model.kv_bytes_per_token();
    println!(
        "RSS target for the worker: model file + KV cache + 150 MiB = {} MiB",
        (model.file_size() + kv + (150 << 20)) >> 20
    );
    Ok(())
}

/// The command as run, for the top of the output; arguments with spaces are quoted.
pub fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if arg.contains(char::is_whitespace) || arg.is_empty() {
                format!("'{arg}'")
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
