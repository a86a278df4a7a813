//! `genqctl model ...`: synthesize a GPT-2-shaped test model, or download a real GGUF.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use genq_engine::synth::{self, Shape};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::Done;

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
    /// Download a GGUF model (for example a GPT-2 GGUF from Hugging Face) and check it.
    Download {
        url: String,
        #[arg(long)]
        out: PathBuf,
        /// Expected SHA-256 of the file, hex.
        #[arg(long)]
        sha256: Option<String>,
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
            download(&url, &out, sha256.as_deref()).await?
        }
    }
    Ok(Done::Ok)
}

/// Streams to a `.partial` file, checks the GGUF magic and the checksum, then renames into place,
/// so an interrupted or corrupt download never sits where a worker would load it. Whatever goes
/// wrong after the `.partial` file is created, it is removed. Each error names its reason: the
/// HTTP status, "not a GGUF file", or "checksum mismatch".
pub async fn download(url: &str, out: &Path, expected_sha256: Option<&str>) -> anyhow::Result<()> {
    let response = reqwest::get(url)
        .await
        .with_context(|| format!("requesting {url}"))?;
    if !response.status().is_success() {
        bail!(
            "downloading {url}: the server answered HTTP {}",
            response.status()
        );
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let partial = out.with_extension("gguf.partial");
    let fetched = fetch_and_check(response, url, &partial, expected_sha256).await;
    let (digest, size) = match fetched {
        Ok(fetched) => fetched,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    if let Err(e) = tokio::fs::rename(&partial, out).await {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e).with_context(|| format!("moving the download to {}", out.display()));
    }
    println!(
        "downloaded {} ({:.1} MB, sha256 {digest})",
        out.display(),
        size as f64 / 1e6
    );
    Ok(())
}

/// Writes the body to `partial` and checks it; returns its SHA-256 (hex) and size. The caller
/// removes `partial` on error.
async fn fetch_and_check(
    response: reqwest::Response,
    url: &str,
    partial: &Path,
    expected_sha256: Option<&str>,
) -> anyhow::Result<(String, u64)> {
    let mut file = tokio::fs::File::create(partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut hasher = Sha256::new();
    let mut head: Vec<u8> = Vec::with_capacity(4);
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("downloading {url}"))?;
        if head.len() < 4 {
            head.extend(chunk.iter().take(4 - head.len()));
        }
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
    }
    file.flush().await?;
    drop(file);
    let digest = format!("{:x}", hasher.finalize());
    if head != b"GGUF".as_slice() {
        bail!("{url} is not a GGUF file (it does not start with 'GGUF')");
    }
    if let Some(expected) = expected_sha256
        && !expected.eq_ignore_ascii_case(&digest)
    {
        bail!("checksum mismatch for {url}: expected SHA-256 {expected}, got {digest}");
    }
    Ok((digest, size))
}
