//! The table's rows ("systems"), which workloads each applies to, and one run of each. Every run
//! starts what it measures afresh and stops it after (genq on a fresh database, a fresh
//! llama-server), so a run finds nothing warm from another row's or repetition's run, and nothing
//! but the measured system is busy on the cores meanwhile.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use genq_engine::Model;

use crate::{
    Compare, ceiling,
    clients::Waiting,
    e2e::{self, Genq},
    measure::{Run, Summary, summarize},
    peer::{self, LlamaServer, Peer},
    python::Python,
    workload::{Request, Workload},
};

/// One line of the results table (`table::print`): a system on a workload, and its medians or
/// why there are none.
pub struct Row {
    pub workload: Workload,
    pub system: System,
    pub label: String,
    pub outcome: Result<Summary, String>,
    pub note: String,
}

/// A row of the table, as `--systems` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// llama.cpp alone through llama-cpp-2, in this process: the ceiling.
    LlamaCpp,
    /// llama-batched-bench's generation-phase tokens/s, on workload (b) only: the limit.
    BatchedBench,
    /// llama-server, one HTTP client per prompt.
    LlamaServer,
    /// llama-batched-bench built for AVX2 only, without OpenMP (`GENQ_PEER_BUILD=avx2`).
    BatchedBenchAvx2,
    /// llama-server built for AVX2 only, without OpenMP.
    LlamaServerAvx2,
    /// genq, each client polling GET /batch_result every 0.5 s.
    GenqPoll,
    /// genq, each client long-polling GET /batch_result?wait=60.
    GenqLongPoll,
    /// genq, each client following GET /batch_result/{id}/events (SSE).
    GenqSse,
    /// genq with GENQ_PREFIX_SHARING=off, polling; on workloads that share a prefix only.
    GenqNoPrefixSharing,
    /// genq's `POST /v1/completions`, answered whole; on one-sequence workloads only.
    GenqCompletions,
    /// genq's `POST /v1/completions` with `stream: true`; on one-sequence workloads only.
    GenqCompletionsStream,
    /// transformers + torch generate, one request at a time.
    Python,
}

impl System {
    fn waiting(self) -> Option<Waiting> {
        match self {
            System::GenqPoll | System::GenqNoPrefixSharing => Some(Waiting::Poll),
            System::GenqLongPoll => Some(Waiting::LongPoll),
            System::GenqSse => Some(Waiting::Sse),
            _ => None,
        }
    }

    fn label(self, workload: Workload) -> String {
        match (self, self.waiting()) {
            (System::LlamaCpp, _) => "llama.cpp alone".into(),
            (System::BatchedBench, _) => "llama-batched-bench S_TG (limit)".into(),
            (System::LlamaServer, _) if workload.shares_prefix() => {
                "llama-server, cache_prompt".into()
            }
            (System::LlamaServer, _) if workload.streams() => "llama-server, streamed".into(),
            (System::LlamaServer, _) => "llama-server".into(),
            (System::BatchedBenchAvx2, _) => {
                "llama-batched-bench S_TG, AVX2-only build (limit)".into()
            }
            (System::LlamaServerAvx2, _) if workload.shares_prefix() => {
                "llama-server, AVX2-only build, cache_prompt".into()
            }
            (System::LlamaServerAvx2, _) if workload.streams() => {
                "llama-server, AVX2-only build, streamed".into()
            }
            (System::LlamaServerAvx2, _) => "llama-server, AVX2-only build".into(),
            (System::GenqNoPrefixSharing, _) => "genq, GENQ_PREFIX_SHARING=off, polling".into(),
            (System::GenqCompletions, _) => "genq, /v1/completions".into(),
            (System::GenqCompletionsStream, _) => "genq, /v1/completions streamed".into(),
            (System::Python, _) => "python transformers".into(),
            (_, Some(waiting)) => format!("genq, {}", waiting.describe()),
            (_, None) => format!("{self:?}"),
        }
    }
}

/// What one run measured: a run of the requests, or only a throughput.
pub enum Measured {
    Run(Run),
    TokensPerS(f64),
}

impl Measured {
    fn tokens_per_s(&self) -> f64 {
        match self {
            Measured::Run(run) => run.tokens_per_s(),
            Measured::TokensPerS(t) => *t,
        }
    }
}

/// Everything the runs share.
pub struct Bench {
    model: Arc<Model>,
    model_path: PathBuf,
    pub shape: peer::Shape,
    genq: e2e::Options,
    peer: Result<Peer, String>,
    peer_avx2: Result<Peer, String>,
    python: Result<Python, String>,
    python_all: bool,
    logs: PathBuf,
}

impl Bench {
    pub fn new(args: &Compare, model: Arc<Model>) -> anyhow::Result<Bench> {
        let mut worker_env = Vec::new();
        if let Some(slots) = args.slots {
            worker_env.push(("GENQ_SLOTS".to_owned(), slots.to_string()));
        }
        worker_env.extend(args.worker_env.iter().cloned());
        // The last setting wins, in the worker's environment as here.
        let setting = |name: &str| -> anyhow::Result<Option<u32>> {
            worker_env
                .iter()
                .rfind(|(key, _)| key == name)
                .map(|(_, value)| value.parse().with_context(|| format!("{name}={value}")))
                .transpose()
        };
        let slots = setting("GENQ_SLOTS")?.unwrap_or_else(genq_engine::default_slots);
        let context_per_slot = genq_engine::context_per_slot(
            model.context_length(),
            setting("GENQ_CONTEXT_PER_SLOT")?,
        );
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let model_path = std::path::absolute(&args.model)?;
        let peer = if args.no_peer {
            Err("--no-peer".to_owned())
        } else {
            Peer::find(&std::path::absolute(&args.peer_bin)?)
        };
        let peer_avx2 = if args.no_peer {
            Err("--no-peer".to_owned())
        } else {
            Peer::find(&std::path::absolute(&args.peer_avx2_bin)?)
        };
        let python = if args.no_python {
            Err("--no-python".to_owned())
        } else {
            Python::find(Path::new(env!("CARGO_MANIFEST_DIR")))
        };
        Ok(Bench {
            model,
            shape: peer::Shape {
                slots,
                context_per_slot,
                threads,
            },
            genq: e2e::Options {
                bin_dir: genq_harness::default_bin_dir(),
                model: model_path.clone(),
                postgres: args.services.postgres.clone(),
                redis: args.services.redis.clone(),
                worker_env,
                logs: args.logs.clone(),
            },
            model_path,
            peer,
            peer_avx2,
            python,
            python_all: args.python_all,
            logs: args.logs.clone(),
        })
    }

    /// The row of `system` on `workload`, or `None` where it does not apply; a row that applies
    /// but cannot run here says why in the table.
    pub fn plan(&self, system: System, workload: Workload) -> Option<Plan> {
        let skip = match system {
            System::BatchedBench | System::BatchedBenchAvx2 if workload != Workload::B => {
                return None;
            }
            System::GenqNoPrefixSharing if !workload.shares_prefix() => return None,
            System::GenqCompletions | System::GenqCompletionsStream if !workload.streams() => {
                return None;
            }
            System::BatchedBench | System::LlamaServer => self.peer.as_ref().err().cloned(),
            System::BatchedBenchAvx2 | System::LlamaServerAvx2 => {
                self.peer_avx2.as_ref().err().cloned()
            }
            System::Python => match &self.python {
                Err(why) => Some(why.clone()),
                Ok(_) if workload == Workload::C && !self.python_all => Some(
                    "skipped: one request at a time takes minutes here (--python-all runs it)"
                        .into(),
                ),
                Ok(_) => None,
            },
            _ => None,
        };
        Some(Plan {
            system,
            workload,
            label: system.label(workload),
            skip,
            measured: Vec::new(),
            failed: None,
        })
    }

    /// One run of `system` on `requests`.
    pub async fn run(
        &self,
        system: System,
        workload: Workload,
        requests: &[Request],
    ) -> anyhow::Result<Measured> {
        match system {
            System::LlamaCpp => {
                let shape = ceiling::Shape {
                    slots: self.shape.slots,
                    context_per_slot: self.shape.context_per_slot,
                    threads: self.shape.threads as i32,
                };
                // Decoding blocks this thread for the whole run; nothing else runs meanwhile.
                tokio::task::block_in_place(|| {
                    ceiling::run(&self.model, requests, &shape, ceiling::Kernels::SHIPPED)
                })
                .map(Measured::Run)
            }
            System::BatchedBench | System::BatchedBenchAvx2 => {
                let peer = self.peer(system)?;
                let prompts: Vec<&String> = requests.iter().flat_map(|r| &r.prompts).collect();
                let prompt_tokens: usize = prompts
                    .iter()
                    .map(|p| self.model.prompt_tokens(p).len())
                    .sum::<usize>()
                    .div_ceil(prompts.len().max(1));
                let batch = peer::Batch {
                    prompt_tokens,
                    new_tokens: requests[0].max_tokens,
                    parallel: prompts.len() as u32,
                };
                let log = self.logs.join("llama-batched-bench.log");
                peer::batched_bench(peer, &self.model_path, self.shape, batch, &log)
                    .await
                    .map(Measured::TokensPerS)
            }
            System::LlamaServer | System::LlamaServerAvx2 => {
                let log = self.logs.join("llama-server.log");
                let server = Arc::new(
                    LlamaServer::start(self.peer(system)?, &self.model_path, self.shape, &log)
                        .await?,
                );
                let run = if workload.streams() {
                    server.run_streamed(requests).await?
                } else {
                    server.run(requests, workload.shares_prefix()).await?
                };
                if let Ok(server) = Arc::try_unwrap(server) {
                    server.stop().await;
                }
                Ok(Measured::Run(run))
            }
            System::Python => {
                let python = self
                    .python
                    .as_ref()
                    .map_err(|why| anyhow::anyhow!("{why}"))?;
                tokio::task::block_in_place(|| python.run(requests)).map(Measured::Run)
            }
            System::GenqCompletions | System::GenqCompletionsStream => {
                let genq = Arc::new(
                    Genq::start(&self.genq, &[])
                        .await
                        .context("starting genq")?,
                );
                let stream = system == System::GenqCompletionsStream;
                let run = genq.run_completions(requests, stream).await?;
                if let Ok(genq) = Arc::try_unwrap(genq) {
                    genq.stop().await;
                }
                Ok(Measured::Run(run))
            }
            System::GenqPoll
            | System::GenqLongPoll
            | System::GenqSse
            | System::GenqNoPrefixSharing => {
                let extra = if system == System::GenqNoPrefixSharing {
                    vec![("GENQ_PREFIX_SHARING".to_owned(), "off".to_owned())]
                } else {
                    Vec::new()
                };
                let waiting = system.waiting().context("a genq row waits somehow")?;
                let genq = Arc::new(
                    Genq::start(&self.genq, &extra)
                        .await
                        .context("starting genq")?,
                );
                // A failed run drops `genq`, which kills the processes rather than letting the
                // worker finish the jobs in hand.
                let run = genq.run(requests, waiting).await?;
                if let Ok(genq) = Arc::try_unwrap(genq) {
                    genq.stop().await;
                }
                Ok(Measured::Run(run))
            }
        }
    }

    fn peer(&self, system: System) -> anyhow::Result<&Peer> {
        let peer = match system {
            System::BatchedBenchAvx2 | System::LlamaServerAvx2 => &self.peer_avx2,
            _ => &self.peer,
        };
        peer.as_ref().map_err(|why| anyhow::anyhow!("{why}"))
    }

    /// The lines above the table: what was measured, and how.
    pub fn header(&self, args: &Compare) -> String {
        let kv = u64::from(self.shape.slots)
            * u64::from(self.shape.context_per_slot)
            * self.model.kv_bytes_per_token();
        let mut header = format!(
            "model {} ({} MiB), {} cores, {} slots x {} tokens of context for genq's worker, \
             llama.cpp alone and llama-server alike (KV cache {} MiB), {} threads; medians of {} \
             runs, interleaved (one run of each row in turn), fresh seeds each repetition, the \
             same for every row",
            args.model.display(),
            self.model.file_size() >> 20,
            self.shape.threads,
            self.shape.slots,
            self.shape.context_per_slot,
            kv >> 20,
            self.shape.threads,
            args.reps,
        );
        match &self.peer {
            Ok(peer) => header += &format!("; peer: llama-server {}, {}", peer.version, peer.build),
            Err(why) => header += &format!("; no peer rows: {why}"),
        }
        if let Err(why) = &self.peer_avx2 {
            header += &format!("; no AVX2-only peer rows: {why}");
        }
        if !self.genq.worker_env.is_empty() {
            let env: Vec<String> = self
                .genq
                .worker_env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            header += &format!("; genq worker env: {}", env.join(" "));
        }
        if args.workloads.iter().any(|w| w.shares_prefix()) {
            let sharing = match self
                .genq
                .worker_env
                .iter()
                .rfind(|(k, _)| k == "GENQ_PREFIX_SHARING")
            {
                Some((_, value)) => format!("GENQ_PREFIX_SHARING={value}, from --worker-env"),
                None => "the worker's default, prefix sharing on".to_owned(),
            };
            header += &format!(
                ". (d) keeps {} slots: its 64 prompts run in waves of {}; genq rows but the \
                 GENQ_PREFIX_SHARING=off one run with {sharing}",
                self.shape.slots, self.shape.slots
            );
        }
        header
    }

    /// Workload (d)'s shape in tokens, for the log: the shared prefix, and the prompts' range.
    pub fn describe_prefix(&self, requests: &[Request]) -> String {
        let prefix = self
            .model
            .prompt_tokens(crate::workload::few_shot_prefix())
            .len();
        let lengths: Vec<usize> = requests
            .iter()
            .flat_map(|r| &r.prompts)
            .map(|p| self.model.prompt_tokens(p).len())
            .collect();
        format!(
            "   shared prefix {prefix} tokens; prompts {} to {} tokens",
            lengths.iter().min().unwrap_or(&0),
            lengths.iter().max().unwrap_or(&0)
        )
    }
}

/// A row being measured: its runs so far, or why it does not run.
pub struct Plan {
    pub system: System,
    workload: Workload,
    label: String,
    skip: Option<String>,
    measured: Vec<Measured>,
    failed: Option<String>,
}

impl Plan {
    /// Whether the next repetition should run it: not skipped, and no run failed yet (a row that
    /// failed once, e.g. an API route that is not there, would only fail again).
    pub fn wants_run(&self) -> bool {
        self.skip.is_none() && self.failed.is_none()
    }

    pub fn record(&mut self, rep: usize, outcome: anyhow::Result<Measured>) {
        match outcome {
            Ok(measured) => {
                let detail = match &measured {
                    Measured::Run(run) => {
                        let slowest = run.latencies_s.iter().copied().fold(0.0, f64::max);
                        let more = run
                            .detail
                            .as_ref()
                            .map_or(String::new(), |d| format!("; {d}"));
                        format!(" (slowest request {slowest:.2} s{more})")
                    }
                    Measured::TokensPerS(_) => String::new(),
                };
                eprintln!(
                    "  {}, run {}: {:.1} tok/s{detail}",
                    self.label,
                    rep + 1,
                    measured.tokens_per_s()
                );
                self.measured.push(measured);
            }
            Err(e) => {
                eprintln!("  {}, run {}: FAILED: {e:#}", self.label, rep + 1);
                self.failed = Some(format!("failed in run {}: {e:#}", rep + 1));
            }
        }
    }

    /// The table row: medians over the runs, or why there are none.
    pub fn into_row(self, requests: &[Request]) -> Row {
        let outcome = match (self.skip, self.failed) {
            (Some(why), _) | (None, Some(why)) => Err(why),
            (None, None) => {
                let runs: Vec<Run> = self
                    .measured
                    .iter()
                    .filter_map(|m| match m {
                        Measured::Run(run) => Some(run.clone()),
                        Measured::TokensPerS(_) => None,
                    })
                    .collect();
                if runs.len() == self.measured.len() {
                    Ok(summarize(&runs, requests))
                } else {
                    Ok(Summary::throughput(
                        self.measured.iter().map(Measured::tokens_per_s).collect(),
                    ))
                }
            }
        };
        let note = match self.system {
            System::BatchedBench | System::BatchedBenchAvx2 => {
                "generation phase only: one batch of equal prompts, no scheduling or HTTP"
            }
            System::LlamaServer | System::LlamaServerAvx2 if self.workload.shares_prefix() => {
                "each slot reuses the cached prefix of the prompt it served before"
            }
            System::LlamaCpp if self.workload.shares_prefix() => "no prefix reuse",
            _ => "",
        };
        // Alone, a request's latency over its tokens is what a user waits per token.
        let note = match (&outcome, self.workload) {
            (
                Ok(Summary {
                    latency: Some(latency),
                    ..
                }),
                Workload::E,
            ) => {
                let first = latency.first_token_p50_s.map_or(String::new(), |s| {
                    format!(", first token {:.0} ms (p50)", 1000.0 * s)
                });
                format!(
                    "{:.2} ms per token (median request){first}",
                    1000.0 * latency.per_token_s
                )
            }
            _ => note.to_owned(),
        };
        Row {
            workload: self.workload,
            system: self.system,
            label: self.label,
            outcome,
            note,
        }
    }
}
