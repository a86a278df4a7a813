//! `genqctl model ...`: synthesize a GPT-2-shaped test model, download a GGUF from a URL, or pull
//! one from Hugging Face (resumable, checked against the hub's SHA-256).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use genq_model::synth::{self, Shape};

use crate::{
    Done,
    fetch::{Fetch, fetch},
};

/// A GPT-2 (124M) GGUF at Q8_0, the quantization genq's figures use.
pub const DEFAULT_REPO: &str = "QuantFactory/gpt2-GGUF";
pub const DEFAULT_FILE: &str = "gpt2.Q8_0.gguf";
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// A network that drops packets fails the fetch this soon instead of at the OS's TCP timeout.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Write a GPT-2-architecture GGUF with the real GPT-2 tokenizer and seeded random weights.
    /// Its text is meaningless: it is for tests and benchmarks.
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = Shape::Gpt2_124m)]
        shape: Shape,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Download a GGUF model from a URL and check it.
    Download {
        url: String,
        #[arg(long)]
        out: PathBuf,
        /// Expected SHA-256 of the file, hex.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Fetch a GGUF from a Hugging Face repository, resuming a partial file left by an earlier
    /// try, and check it against the SHA-256 the hub gives for it (or --sha256). HF_ENDPOINT
    /// points at a mirror; HF_TOKEN is sent for gated or private repositories.
    Pull {
        #[arg(long, env = "GENQ_MODEL_REPO", default_value = DEFAULT_REPO)]
        repo: String,
        #[arg(long, env = "GENQ_MODEL_FILE", default_value = DEFAULT_FILE)]
        file: String,
        /// A branch, tag or commit.
        #[arg(long, default_value = "main")]
        revision: String,
        #[arg(long, default_value = "models/model.gguf")]
        out: PathBuf,
        /// Expected SHA-256, hex; instead of the hub's.
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long, env = "HF_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
        endpoint: String,
        #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

pub async fn run(args: ModelArgs) -> anyhow::Result<Done> {
    match args.command {
        ModelCommand::Synth { out, shape, seed } => {
            let path = out.clone();
            tokio::task::spawn_blocking(move || synth::write_model(&path, shape, seed)).await??;
            let size = std::fs::metadata(&out)?.len();
            println!(
                "wrote {} ({:.1} MB, {shape:?} shape, seed {seed})",
                out.display(),
                size as f64 / 1e6
            );
        }
        ModelCommand::Download { url, out, sha256 } => {
            let request = Fetch {
                url: &url,
                out: &out,
                expected_sha256: sha256.as_deref(),
                bearer: None,
                resume: false,
            };
            let (digest, size) =
                fetch(&client(reqwest::redirect::Policy::default())?, request).await?;
            println!(
                "downloaded {} ({:.1} MB, sha256 {digest})",
                out.display(),
                size as f64 / 1e6
            );
        }
        ModelCommand::Pull {
            repo,
            file,
            revision,
            out,
            sha256,
            endpoint,
            token,
        } => {
            let token = token.filter(|t| !t.is_empty());
            let url = format!(
                "{}/{repo}/resolve/{revision}/{file}",
                endpoint.trim_end_matches('/')
            );
            let expected = match sha256 {
                Some(sha256) => Some(sha256),
                None => hub_sha256(&url, token.as_deref()).await?,
            };
            if expected.is_none() {
                eprintln!("genqctl: the hub gave no SHA-256 for {url}; the file is not checked");
            }
            let request = Fetch {
                url: &url,
                out: &out,
                expected_sha256: expected.as_deref(),
                bearer: token.as_deref(),
                resume: true,
            };
            let (digest, size) =
                fetch(&client(reqwest::redirect::Policy::default())?, request).await?;
            println!(
                "pulled {repo}/{file}@{revision} to {} ({:.1} MB, sha256 {digest})",
                out.display(),
                size as f64 / 1e6
            );
        }
    }
    Ok(Done::Ok)
}

/// The SHA-256 the hub gives for a file: `X-Linked-Etag` on the answer that redirects a large
/// (LFS) file to its storage, as huggingface_hub reads it; `ETag` for a small one, when it is a
/// SHA-256 and not a git hash.
async fn hub_sha256(url: &str, token: Option<&str>) -> anyhow::Result<Option<String>> {
    let mut request = client(reqwest::redirect::Policy::none())?.head(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("asking the hub about {url}"))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "{url}: the hub answered HTTP {status}: a gated or private repository needs HF_TOKEN"
        );
    }
    if !(status.is_success() || status.is_redirection()) {
        bail!("{url}: the hub answered HTTP {status} (is the repository, file or revision right?)");
    }
    let headers = response.headers();
    let etag = headers
        .get("x-linked-etag")
        .or_else(|| headers.get(reqwest::header::ETAG))
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim_start_matches("W/")
                .trim_matches('"')
                .to_ascii_lowercase()
        });
    Ok(etag.filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit())))
}

fn client(redirects: reqwest::redirect::Policy) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(redirects)
        .build()?)
}
