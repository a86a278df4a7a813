//! A running job's live events (see `genq_shared::events`): the engine hands each prompt's bytes
//! over as they are decoded, and a task per job turns them into text and appends it to the job's
//! Redis stream every [`FLUSH_EVERY`], with each prompt's result as it finishes. Redis trouble
//! costs only the preview: it is logged once per job, and the job runs and is stored as ever.

use std::{collections::HashMap, time::Duration};

use genq_engine::TextSink;
use genq_shared::{db::jobs::NewGeneration, events, events::JobEvent, redact};
use redis::aio::ConnectionManager;
use tokio::{sync::mpsc, task::JoinHandle};
use uuid::Uuid;

/// How often decoded text is published: often enough to read as live, seldom enough that
/// a job's events cost Redis a round trip per tick rather than one per token.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// How long the last events may take to publish before the job's outcome is stored anyway.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

enum Update {
    Bytes { prompt: usize, bytes: Vec<u8> },
    Finished(NewGeneration),
}

pub(crate) struct LiveEvents {
    updates: mpsc::UnboundedSender<Update>,
    task: JoinHandle<()>,
}

impl LiveEvents {
    pub fn start(redis: ConnectionManager, queue: String, job: Uuid, attempt: i32) -> LiveEvents {
        let (updates, inbox) = mpsc::unbounded_channel();
        let pump = Pump {
            redis,
            queue,
            job,
            attempt,
            prompts: HashMap::new(),
            pending: Vec::new(),
            failed: false,
        };
        LiveEvents {
            updates,
            task: tokio::spawn(pump.run(inbox)),
        }
    }

    /// Where the engine hands prompt `prompt`'s bytes.
    pub fn sink(&self, prompt: usize) -> TextSink {
        let updates = self.updates.clone();
        Box::new(move |bytes: &[u8]| {
            // Closed only once the job is over: nothing left to tell.
            let _ = updates.send(Update::Bytes {
                prompt,
                bytes: bytes.to_vec(),
            });
        })
    }

    /// A prompt's result as it will be stored.
    pub fn finished(&self, generation: &NewGeneration) {
        let _ = self.updates.send(Update::Finished(generation.clone()));
    }

    /// Publishes what is left, briefly: call before storing the outcome so the stream is whole
    /// by the time the job turns final.
    pub async fn close(self) {
        drop(self.updates);
        let mut task = self.task;
        if tokio::time::timeout(CLOSE_PATIENCE, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// What of a prompt's output has been published.
#[derive(Default)]
struct PromptText {
    raw: Vec<u8>,
    /// Bytes of `raw` already turned into text and published.
    published_bytes: usize,
    published: String,
}

struct Pump {
    redis: ConnectionManager,
    queue: String,
    job: Uuid,
    attempt: i32,
    prompts: HashMap<usize, PromptText>,
    pending: Vec<JobEvent>,
    failed: bool,
}

impl Pump {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Update>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                update = inbox.recv() => match update {
                    Some(update) => self.apply(update),
                    None => break,
                },
                _ = tick.tick() => self.flush().await,
            }
        }
        self.flush().await;
    }

    fn apply(&mut self, update: Update) {
        match update {
            Update::Bytes { prompt, bytes } => self
                .prompts
                .entry(prompt)
                .or_default()
                .raw
                .extend_from_slice(&bytes),
            Update::Finished(generation) => {
                let prompt = self.prompts.remove(&(generation.index as usize));
                let published = prompt.map(|p| p.published).unwrap_or_default();
                // The rest of the text, so a prompt's token events always add up to its result.
                if let Some(rest) = generation.text.strip_prefix(&published)
                    && !rest.is_empty()
                {
                    self.pending.push(JobEvent::Token {
                        attempt: self.attempt,
                        prompt: generation.index,
                        text: rest.to_owned(),
                    });
                }
                self.pending.push(JobEvent::Prompt {
                    attempt: self.attempt,
                    index: generation.index,
                    generated_text: generation.text,
                    completion_tokens: generation.completion_tokens,
                    finish_reason: generation.finish_reason,
                    redacted: generation.redacted,
                });
            }
        }
    }

    async fn flush(&mut self) {
        let mut indexes: Vec<usize> = self.prompts.keys().copied().collect();
        indexes.sort_unstable();
        for index in indexes {
            let prompt = self.prompts.get_mut(&index).expect("listed above");
            let Some(end) = filter_safe_end(&prompt.raw, prompt.published_bytes) else {
                continue;
            };
            let text = as_stored(&prompt.raw[prompt.published_bytes..end]);
            prompt.published_bytes = end;
            prompt.published.push_str(&text);
            self.pending.push(JobEvent::Token {
                attempt: self.attempt,
                prompt: index as i32,
                text,
            });
        }
        if self.pending.is_empty() || self.failed {
            self.pending.clear();
            return;
        }
        let events = std::mem::take(&mut self.pending);
        if let Err(e) = events::publish(&mut self.redis, &self.queue, self.job, &events).await {
            // Later events would leave gaps in the stream: stop publishing for this job.
            tracing::warn!(error = %e, "cannot publish the job's live events; stopping them");
            self.failed = true;
        }
    }
}

/// The end of the longest prefix of `raw` that the output filter treats the same alone as
/// followed by anything: it ends in ASCII whitespace not preceded by a digit. The filter's
/// patterns (e-mail addresses, SSNs, card numbers) never span such a point (only a card number
/// spans whitespace, between digits), and an ASCII byte ends any UTF-8 sequence, so the text
/// up to there is final. `None` when there is no such point past `after`.
fn filter_safe_end(raw: &[u8], after: usize) -> Option<usize> {
    (after + 1..=raw.len()).rev().find(|&end| {
        raw[end - 1].is_ascii_whitespace() && (end < 2 || !raw[end - 2].is_ascii_digit())
    })
}

/// Bytes as a result's text is stored: decoded (invalid UTF-8 replaced), NUL replaced, filtered.
fn as_stored(bytes: &[u8]) -> String {
    stored_text(&String::from_utf8_lossy(bytes)).0
}

/// Text as it is stored, and whether the output filter changed it.
pub(crate) fn stored_text(text: &str) -> (String, bool) {
    // PostgreSQL text cannot hold a NUL byte.
    let text = text.replace('\0', "\u{FFFD}");
    match redact::redact(&text) {
        Some(filtered) => (filtered, true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `raw` at every safe end, as flushes would, and joins the filtered pieces.
    fn published_in_pieces(raw: &[u8]) -> String {
        let mut out = String::new();
        let mut at = 0;
        for len in 1..=raw.len() {
            if let Some(end) = filter_safe_end(&raw[..len], at) {
                out.push_str(&as_stored(&raw[at..end]));
                at = end;
            }
        }
        out
    }

    #[test]
    fn text_published_piece_by_piece_is_a_prefix_of_the_stored_text() {
        let outputs: [&[u8]; 5] = [
            b"mail bob@example.org or call 123-45-6789 today ",
            b"card 4111 1111 1111 1111 ends here ",
            b"split \xe2\x82 euro \xe2\x82\xac and \0 nul ",
            b"no spaces at all",
            b"12 34 56 78 90 12 34 5 ",
        ];
        for raw in outputs {
            let whole = as_stored(raw);
            let pieces = published_in_pieces(raw);
            assert!(
                whole.starts_with(&pieces),
                "{pieces:?} is not a prefix of {whole:?}"
            );
        }
        assert_eq!(
            published_in_pieces(b"mail bob@example.org now "),
            "mail [redacted email] now "
        );
        assert_eq!(
            published_in_pieces(b"card 4111 1111 1111 1111 x"),
            "card "
        );
    }
}
