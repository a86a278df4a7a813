//! `genq-bench kernels`: genq's attention and matrix kernels against ggml's, each switched on its
//! own, in llama.cpp alone (the ceiling row's loop: no queue, HTTP or database). Two workloads:
//! one sequence decoded alone (what an interactive `/generate` waits on, per token) and (b), 32
//! sequences at once. Combinations interleave within each repetition, with fresh seeds.

use std::{path::PathBuf, sync::Arc};

use genq_engine::{Kernel, Model, Placement, genq_kernels_available, llama_system_info};
use genq_model::synth;

use crate::{
    ceiling::{self, Kernels},
    measure::{Run, median},
    workload::{self, Request, Workload},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model; synthesized (GPT-2 124M shape, Q8_0) if the file does not exist.
    #[arg(long, default_value = "models/gpt2-124m-synthetic-q8_0.gguf")]
    model: PathBuf,
    /// Repetitions, interleaved across the combinations.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Tokens the lone sequence generates.
    #[arg(long, default_value_t = 128)]
    alone_tokens: u32,
    /// Slots of the context (workload (b) needs 32).
    #[arg(long, default_value_t = 32)]
    slots: u32,
    #[arg(long)]
    threads: Option<usize>,
}

const COMBINATIONS: [(&str, Kernels); 4] = [
    (
        "genq attention + genq matrix (genq's default)",
        Kernels {
            attention: Kernel::Genq,
            matmul: Kernel::Genq,
        },
    ),
    (
        "ggml attention + genq matrix",
        Kernels {
            attention: Kernel::LlamaCpp,
            matmul: Kernel::Genq,
        },
    ),
    (
        "genq attention + ggml matrix",
        Kernels {
            attention: Kernel::Genq,
            matmul: Kernel::LlamaCpp,
        },
    ),
    ("ggml attention + ggml matrix (llama.cpp)", Kernels::SHIPPED),
];

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !args.model.exists() {
        eprintln!("synthesizing {} (random weights)", args.model.display());
        if let Some(dir) = args.model.parent() {
            std::fs::create_dir_all(dir)?;
        }
        synth::write_model(&args.model, synth::Shape::Gpt2_124m, 0)?;
    }
    anyhow::ensure!(
        genq_kernels_available(),
        "this build has no genq kernels (they need AVX2, FMA and F16C)"
    );
    let path = args.model.clone();
    let model = Arc::new(
        tokio::task::spawn_blocking(move || Model::load(&path, Placement::default())).await??,
    );
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let shape = ceiling::Shape {
        slots: args.slots,
        context_per_slot: genq_engine::context_per_slot(model.context_length(), None),
        threads: threads as i32,
    };

    let mut alone_ms = vec![Vec::new(); COMBINATIONS.len()];
    let mut batch_tps = vec![Vec::new(); COMBINATIONS.len()];
    for rep in 0..args.reps {
        let alone = alone_request(rep, args.alone_tokens);
        let batch = workload::requests(Workload::B, rep);
        for (i, &(label, kernels)) in COMBINATIONS.iter().enumerate() {
            let run_alone = decode(&model, &alone, &shape, kernels).await?;
            let run_batch = decode(&model, &batch, &shape, kernels).await?;
            let ms = 1000.0 * run_alone.wall_s / run_alone.tokens as f64;
            eprintln!(
                "rep {rep} {label}: alone {ms:.2} ms/token, (b) {:.0} tok/s",
                run_batch.tokens_per_s()
            );
            alone_ms[i].push(ms);
            batch_tps[i].push(run_batch.tokens_per_s());
        }
    }

    println!("{}", crate::command_line());
    println!("llama.cpp: {}", llama_system_info());
    println!(
        "{threads} threads; medians of {} repetitions, [min-max]; one sequence = {} tokens alone \
         (prompt included in the time); (b) = {}",
        args.reps,
        args.alone_tokens,
        Workload::B.describe()
    );
    println!("| kernels | one sequence, ms/token | (b) tok/s |\n| --- | ---: | ---: |");
    for (i, (label, _)) in COMBINATIONS.iter().enumerate() {
        println!(
            "| {label} | {} | {} |",
            with_range(&alone_ms[i], 2),
            with_range(&batch_tps[i], 0)
        );
    }
    Ok(())
}

fn alone_request(rep: usize, tokens: u32) -> Vec<Request> {
    let mut requests = workload::requests(Workload::B, rep);
    requests.truncate(1);
    requests[0].max_tokens = tokens;
    requests
}

async fn decode(
    model: &Arc<Model>,
    requests: &[Request],
    shape: &ceiling::Shape,
    kernels: Kernels,
) -> anyhow::Result<Run> {
    let model = Arc::clone(model);
    let requests = requests.to_vec();
    let shape = *shape;
    tokio::task::spawn_blocking(move || ceiling::run(&model, &requests, &shape, kernels)).await?
}

fn with_range(values: &[f64], decimals: usize) -> String {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.decimals$} [{low:.decimals$}-{high:.decimals$}]",
        median(values.to_vec())
    )
}
