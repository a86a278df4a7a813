//! Fetching a model file over HTTP into `<out>.partial`, with a progress bar on a terminal,
//! optionally resumed where an earlier try stopped (a `Range` request), then checked (the GGUF
//! magic, the SHA-256) and only then renamed into place, so a worker never loads a partial or
//! corrupt file.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{StatusCode, header};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to fetch, and how.
pub struct Fetch<'a> {
    pub url: &'a str,
    pub out: &'a Path,
    /// Hex; checked when given.
    pub expected_sha256: Option<&'a str>,
    /// Sent as `Authorization: Bearer` (reqwest drops it on a redirect to another host).
    pub bearer: Option<&'a str>,
    /// Keep the partial file when the transfer fails, and continue it next time.
    pub resume: bool,
}

/// The file's SHA-256 (hex) and size once it is in place.
pub async fn fetch(client: &reqwest::Client, fetch: Fetch<'_>) -> anyhow::Result<(String, u64)> {
    if let Some(dir) = fetch.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let partial = partial_path(fetch.out);
    let transferred = transfer(client, &fetch, &partial).await;
    let checked = match transferred {
        Ok(hashed) => check(&fetch, hashed),
        Err(e) => {
            if !fetch.resume {
                let _ = tokio::fs::remove_file(&partial).await;
            }
            return Err(e);
        }
    };
    let (digest, size) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            // Wrong bytes: resuming them would only fail again.
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    if let Err(e) = tokio::fs::rename(&partial, fetch.out).await {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e).with_context(|| format!("moving the download to {}", fetch.out.display()));
    }
    Ok((digest, size))
}

pub fn partial_path(out: &Path) -> PathBuf {
    out.with_extension("gguf.partial")
}

/// The whole file's bytes as fetched: their hash, size and first four bytes.
struct Hashed {
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
}

impl Hashed {
    fn update(&mut self, bytes: &[u8]) {
        if self.head.len() < 4 {
            self.head
                .extend(bytes.iter().take(4 - self.head.len()).copied());
        }
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }
}

async fn transfer(
    client: &reqwest::Client,
    fetch: &Fetch<'_>,
    partial: &Path,
) -> anyhow::Result<Hashed> {
    let url = fetch.url;
    let have = match fetch.resume {
        true => tokio::fs::metadata(partial).await.map_or(0, |m| m.len()),
        false => 0,
    };
    let mut request = client.get(url);
    if let Some(token) = fetch.bearer {
        request = request.bearer_auth(token);
    }
    if have > 0 {
        request = request.header(header::RANGE, format!("bytes={have}-"));
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("requesting {url}"))?;
    let status = response.status();
    let mut hashed = Hashed {
        hasher: Sha256::new(),
        size: 0,
        head: Vec::with_capacity(4),
    };
    let append = match status {
        StatusCode::PARTIAL_CONTENT if have > 0 => true,
        // The partial file already holds the whole file.
        StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
            hash_existing(partial, &mut hashed).await?;
            return Ok(hashed);
        }
        status if status.is_success() => false,
        status => bail!("downloading {url}: the server answered HTTP {status}"),
    };
    if append {
        let resumed_at = resumed_at(&response);
        if resumed_at != Some(have) {
            // Appending would splice the wrong bytes in: start over next time.
            let _ = tokio::fs::remove_file(partial).await;
            bail!(
                "downloading {url}: asked to resume at byte {have}, the server sent {} instead; the partial file is removed, run again",
                resumed_at.map_or("no Content-Range".to_owned(), |at| format!(
                    "bytes from {at}"
                ))
            );
        }
        hash_existing(partial, &mut hashed).await?;
        eprintln!(
            "resuming {} at {:.1} MB",
            fetch.out.display(),
            have as f64 / 1e6
        );
    }
    let mut file = match append {
        true => {
            tokio::fs::OpenOptions::new()
                .append(true)
                .open(partial)
                .await
        }
        false => tokio::fs::File::create(partial).await,
    }
    .with_context(|| format!("opening {}", partial.display()))?;
    let progress = progress_bar(response.content_length().map(|rest| hashed.size + rest));
    progress.set_position(hashed.size);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("downloading {url}"))?;
        hashed.update(&chunk);
        file.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        progress.set_position(hashed.size);
    }
    file.flush().await?;
    progress.finish_and_clear();
    Ok(hashed)
}

/// Where a `206 Partial Content` answer starts: `Content-Range: bytes START-END/TOTAL`.
fn resumed_at(response: &reqwest::Response) -> Option<u64> {
    let range = response
        .headers()
        .get(header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    range
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Hashes what an earlier try left in `partial`.
async fn hash_existing(partial: &Path, hashed: &mut Hashed) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(partial)
        .await
        .with_context(|| format!("reading {}", partial.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        hashed.update(&buffer[..read]);
    }
}

fn check(fetch: &Fetch<'_>, hashed: Hashed) -> anyhow::Result<(String, u64)> {
    let url = fetch.url;
    let digest = format!("{:x}", hashed.hasher.finalize());
    if hashed.head != b"GGUF".as_slice() {
        bail!("{url} is not a GGUF file (it does not start with 'GGUF')");
    }
    if let Some(expected) = fetch.expected_sha256
        && !expected.eq_ignore_ascii_case(&digest)
    {
        bail!("checksum mismatch for {url}: expected SHA-256 {expected}, got {digest}");
    }
    Ok((digest, hashed.size))
}

/// Drawn on stderr when it is a terminal (indicatif hides it otherwise, so logs stay clean).
fn progress_bar(total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .expect("a valid template"),
        ),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}
