//! Streamed completions, read as a user's client reads them: the time to the first chunk that
//! carries text, and the number of tokens the stream reports at its end. Two dialects: OpenAI's
//! `/v1/completions` (genq) and llama-server's own `/completion`.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tokio::time::Instant;

use crate::clients::SseParser;

/// What one streamed completion took.
#[derive(Debug, Clone, Copy)]
pub struct Streamed {
    pub tokens: u64,
    /// From the request's sending to the first chunk with text.
    pub first_token: Duration,
}

#[derive(Debug, Clone, Copy)]
pub enum Dialect {
    /// `data: {"choices":[{"text":…}]}` chunks, a last chunk with `usage` (the request must ask
    /// for it with `stream_options`), then `data: [DONE]`.
    OpenAi,
    /// llama-server's `/completion`: `data: {"content":…,"stop":false}` chunks, the last with
    /// `"stop":true` and `tokens_predicted`; the stream then ends.
    LlamaServer,
}

impl Dialect {
    /// The chunk's text, and the completion's token count if this chunk reports it.
    fn read(self, chunk: &Value) -> (Option<&str>, Option<u64>) {
        match self {
            Dialect::OpenAi => (
                chunk["choices"][0]["text"].as_str(),
                chunk["usage"]["completion_tokens"].as_u64(),
            ),
            Dialect::LlamaServer => (
                chunk["content"].as_str(),
                chunk["stop"]
                    .as_bool()
                    .filter(|&stop| stop)
                    .and_then(|_| chunk["tokens_predicted"].as_u64()),
            ),
        }
    }
}

/// Reads `response` (already answered 200) to its end; `sent` is when the request went out.
pub async fn read(
    mut response: reqwest::Response,
    sent: Instant,
    dialect: Dialect,
) -> anyhow::Result<Streamed> {
    let mut parser = SseParser::default();
    let mut first_token = None;
    let mut tokens = None;
    while let Some(bytes) = response.chunk().await? {
        for event in parser.push(&bytes) {
            if event.data == "[DONE]" {
                continue;
            }
            let chunk: Value = serde_json::from_str(&event.data)
                .with_context(|| format!("a streamed chunk is not JSON: {}", event.data))?;
            if let Some(error) = chunk.get("error") {
                bail!("the stream sent an error: {error}");
            }
            let (text, reported) = dialect.read(&chunk);
            if text.is_some_and(|t| !t.is_empty()) && first_token.is_none() {
                first_token = Some(sent.elapsed());
            }
            tokens = reported.or(tokens);
        }
    }
    let tokens = tokens.context("the stream ended without reporting its token count")?;
    ensure!(tokens > 0, "the stream reported no tokens");
    Ok(Streamed {
        tokens,
        first_token: first_token.context("the stream ended without any text")?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Dialect;

    #[test]
    fn each_dialect_reports_text_and_the_final_count() {
        let openai = json!({"choices": [{"index": 0, "text": " the"}]});
        assert_eq!(Dialect::OpenAi.read(&openai), (Some(" the"), None));
        let usage = json!({"choices": [], "usage": {"completion_tokens": 16}});
        assert_eq!(Dialect::OpenAi.read(&usage), (None, Some(16)));
        let token = json!({"content": " a", "stop": false, "tokens_predicted": 3});
        assert_eq!(Dialect::LlamaServer.read(&token), (Some(" a"), None));
        let last = json!({"content": "", "stop": true, "tokens_predicted": 64});
        assert_eq!(Dialect::LlamaServer.read(&last), (Some(""), Some(64)));
    }
}
