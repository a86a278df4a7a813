//! The peer and the limit from llama.cpp itself, built by `scripts/peer-build.sh` into
//! `.genq/peer/build/bin`:
//! - `llama-server`, what a user would pick for CPU serving with continuous batching: started as
//!   a process with genq's worker's slots, context and threads, driven over HTTP by one client per
//!   prompt (`POST /completion`), stopped after its row.
//! - `llama-batched-bench`, llama.cpp's own throughput on one fixed batch: its generation-phase
//!   tokens/s (`S_TG`) is the limit row of workload (b).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use serde_json::json;

use crate::{
    measure::{Run, peak_rss_bytes},
    streamed::{self, Dialect, Streamed},
    workload::{Request, at_arrivals},
};

/// Where the binaries are, once found.
#[derive(Debug, Clone)]
pub struct Peer {
    bin_dir: PathBuf,
    /// `llama-server --version`'s line, for the table's header.
    pub version: String,
    /// How it was built: scripts/peer-build.sh's record of the CMake options, else "unknown".
    pub build: String,
}

impl Peer {
    /// The built binaries in `bin_dir`; else why the rows are skipped.
    pub fn find(bin_dir: &Path) -> Result<Peer, String> {
        for name in ["llama-server", "llama-batched-bench"] {
            if !bin_dir.join(name).is_file() {
                return Err(format!(
                    "no {} (scripts/peer-build.sh builds it)",
                    bin_dir.join(name).display()
                ));
            }
        }
        let version = std::process::Command::new(bin_dir.join("llama-server"))
            .arg("--version")
            .env("LD_LIBRARY_PATH", bin_dir)
            .output()
            .map_err(|e| format!("llama-server --version: {e}"))?;
        let text = String::from_utf8_lossy(&version.stderr).into_owned()
            + &String::from_utf8_lossy(&version.stdout);
        // peer-build.sh writes "<source tree> <options...>" next to bin/.
        let build = bin_dir
            .parent()
            .and_then(|dir| std::fs::read_to_string(dir.join("genq-peer-build")).ok())
            .map(|stamp| {
                let options: Vec<&str> = stamp
                    .split_whitespace()
                    .skip(1)
                    .filter(|o| o.starts_with("-DGGML_"))
                    .collect();
                if options.is_empty() {
                    "llama.cpp's default CPU options (GGML_NATIVE, OpenMP)".to_owned()
                } else {
                    format!("built with {}", options.join(" "))
                }
            })
            .unwrap_or_else(|| "build options unknown".to_owned());
        Ok(Peer {
            build,
            bin_dir: bin_dir.to_path_buf(),
            version: text
                .lines()
                .find(|l| l.starts_with("version"))
                .unwrap_or("version unknown")
                .trim()
                .to_owned(),
        })
    }

    fn command(&self, name: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.bin_dir.join(name));
        // The binaries link llama.cpp's shared libraries, built next to them.
        command.env("LD_LIBRARY_PATH", &self.bin_dir);
        command
    }
}

/// The serving shape, the same as genq's worker's.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub slots: u32,
    pub context_per_slot: u32,
    pub threads: usize,
}

pub struct LlamaServer {
    child: tokio::process::Child,
    base_url: String,
    http: reqwest::Client,
}

impl LlamaServer {
    /// Starts `llama-server` on a free port, its output in `log`, and waits for its `/health` and
    /// one short completion before anything is timed.
    pub async fn start(
        peer: &Peer,
        model: &Path,
        shape: Shape,
        log: &Path,
    ) -> anyhow::Result<LlamaServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = peer
            .command("llama-server")
            .arg("-m")
            .arg(model)
            .args(["-np", &shape.slots.to_string()])
            .args(["-c", &(shape.slots * shape.context_per_slot).to_string()])
            .args(["-t", &shape.threads.to_string()])
            .args(["-cb", "--no-webui", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // A benchmark that fails half-way leaves no server behind.
            .kill_on_drop(true)
            .spawn()
            .context("starting llama-server")?;
        let mut server = LlamaServer {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(crate::clients::PATIENCE)
                .build()?,
        };
        server.wait_healthy(log).await?;
        server.complete("Hello", 4, 1, false).await?;
        Ok(server)
    }

    async fn wait_healthy(&mut self, log: &Path) -> anyhow::Result<()> {
        let give_up = Instant::now() + Duration::from_secs(120);
        while Instant::now() < give_up {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "llama-server exited with {status} before it was healthy; see {}",
                    log.display()
                );
            }
            // 503 while the model loads, 200 once it serves.
            if let Ok(response) = self
                .http
                .get(format!("{}/health", self.base_url))
                .send()
                .await
                && response.status() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "llama-server was not healthy within 120 s; see {}",
            log.display()
        )
    }

    /// One `POST /completion`; the number of tokens it generated.
    async fn complete(
        &self,
        prompt: &str,
        max_tokens: u32,
        seed: u32,
        cache_prompt: bool,
    ) -> anyhow::Result<u64> {
        #[derive(Deserialize)]
        struct Completion {
            tokens_predicted: u64,
        }
        let response = self
            .post_completion(prompt, max_tokens, seed, cache_prompt, false)
            .await?;
        Ok(response.json::<Completion>().await?.tokens_predicted)
    }

    /// One `POST /completion` with `stream: true`, read as it arrives.
    async fn complete_streamed(
        &self,
        prompt: &str,
        max_tokens: u32,
        seed: u32,
    ) -> anyhow::Result<Streamed> {
        let sent = tokio::time::Instant::now();
        let response = self
            .post_completion(prompt, max_tokens, seed, false, true)
            .await?;
        streamed::read(response, sent, Dialect::LlamaServer).await
    }

    async fn post_completion(
        &self,
        prompt: &str,
        max_tokens: u32,
        seed: u32,
        cache_prompt: bool,
        stream: bool,
    ) -> anyhow::Result<reqwest::Response> {
        // genq's sampler chain and nothing else: llama-server's default chain adds min_p 0.05
        // (and penalties, DRY, XTC, typical-p, all off by default).
        let body = json!({
            "prompt": prompt,
            "n_predict": max_tokens,
            "temperature": 0.8,
            "top_k": 40,
            "top_p": 0.95,
            "min_p": 0.0,
            "samplers": ["top_k", "top_p", "temperature"],
            "seed": seed,
            "ignore_eos": true,
            "cache_prompt": cache_prompt,
            "stream": stream,
        });
        let url = format!("{}/completion", self.base_url);
        crate::clients::post_ok(&self.http, &url, &body, "POST /completion").await
    }

    /// One run of `requests`: every prompt its own `POST /completion`, sent at its request's
    /// arrival; a request is done when all its prompts are. `cache_prompt` lets a slot reuse the
    /// KV cache of the prompt it last served (workload (d)).
    pub async fn run(
        self: &Arc<Self>,
        requests: &[Request],
        cache_prompt: bool,
    ) -> anyhow::Result<Run> {
        let done = at_arrivals(requests, |request| {
            let server = Arc::clone(self);
            async move {
                let prompts = request.prompts.iter().map(|prompt| {
                    server.complete(prompt, request.max_tokens, request.seed, cache_prompt)
                });
                let tokens: u64 = futures::future::try_join_all(prompts).await?.iter().sum();
                anyhow::Ok(tokens)
            }
        })
        .await?;
        let tokens = done.iter().map(|(n, _)| n).sum();
        let finishes: Vec<Duration> = done.iter().map(|(_, at)| *at).collect();
        let mut run = Run::from_finishes(tokens, requests, &finishes);
        run.peak_rss_bytes = self.child.id().and_then(peak_rss_bytes);
        Ok(run)
    }

    /// One run of single-prompt `requests`, each a streamed `POST /completion` sent at its
    /// arrival: also the time to each one's first token.
    pub async fn run_streamed(self: &Arc<Self>, requests: &[Request]) -> anyhow::Result<Run> {
        let done = at_arrivals(requests, |request| {
            let server = Arc::clone(self);
            async move {
                let [prompt] = &request.prompts[..] else {
                    bail!("a streamed request has one prompt");
                };
                server
                    .complete_streamed(prompt, request.max_tokens, request.seed)
                    .await
            }
        })
        .await?;
        let mut run = Run::streamed(requests, &done);
        run.peak_rss_bytes = self.child.id().and_then(peak_rss_bytes);
        Ok(run)
    }

    /// Kills the server and waits for it: it keeps nothing that a graceful stop would save.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The batched-bench's shape: `parallel` sequences of `prompt_tokens` each, `new_tokens` each.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    pub prompt_tokens: usize,
    pub new_tokens: u32,
    pub parallel: u32,
}

/// Runs `llama-batched-bench` once, its output in `log`, and returns its generation-phase
/// tokens/s (`S_TG`): every sequence decoding at once, no scheduling, prompt processing excluded.
pub async fn batched_bench(
    peer: &Peer,
    model: &Path,
    shape: Shape,
    batch: Batch,
    log: &Path,
) -> anyhow::Result<f64> {
    let output = peer
        .command("llama-batched-bench")
        .arg("-m")
        .arg(model)
        .args(["-c", &(shape.slots * shape.context_per_slot).to_string()])
        .args(["-b", "2048", "-ub", "512"])
        .args(["-npp", &batch.prompt_tokens.to_string()])
        .args(["-ntg", &batch.new_tokens.to_string()])
        .args(["-npl", &batch.parallel.to_string()])
        .args(["-t", &shape.threads.to_string()])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("starting llama-batched-bench")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    std::fs::write(log, &text).with_context(|| format!("writing {}", log.display()))?;
    ensure!(
        output.status.success(),
        "llama-batched-bench exited with {}; see {}",
        output.status,
        log.display()
    );
    s_tg(&text).with_context(|| format!("no S_TG figure in {}", log.display()))
}

/// The `S_TG t/s` cell of the first data row of batched-bench's markdown table.
fn s_tg(output: &str) -> Option<f64> {
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let mut lines = output.lines().map(str::trim).filter(|l| l.starts_with('|'));
    let header = lines.by_ref().find(|l| l.contains("S_TG"))?;
    let column = cells(header).iter().position(|c| c.starts_with("S_TG"))?;
    lines
        .filter(|l| !l.contains("---"))
        .find_map(|row| cells(row).get(column)?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::s_tg;

    #[test]
    fn reads_the_generation_throughput() {
        let output = "main: n_kv_max = 16384, n_batch = 2048\n\n\
            |    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |\n\
            |-------|--------|------|--------|----------|----------|----------|----------|----------|----------|\n\
            |     8 |     64 |   32 |   2304 |    0.210 |  1219.05 |    6.512 |   314.50 |    6.722 |   342.74 |\n\n\
            llama_perf_context_print: load time = 1 ms\n";
        assert_eq!(s_tg(output), Some(314.50));
        assert_eq!(s_tg("nothing here"), None);
    }
}
