//! Running jobs' live events (see `genq_shared::events`): the engine hands each prompt's bytes
//! over as they are decoded, and one task per worker turns them into text and appends it, with
//! each prompt's result as it finishes, to the jobs' Redis streams: every job's events in one
//! pipelined round trip every [`FLUSH_EVERY`]. Redis trouble costs only the preview: it is logged,
//! and jobs run and are stored as ever.

use std::{collections::HashMap, time::Duration};

use genq_engine::TextSink;
use genq_shared::{db::jobs::NewGeneration, events, events::JobEvent, redact};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// How often decoded text is published: often enough to read as live, seldom enough that a
/// worker's events cost Redis one round trip per tick, whatever the number of jobs and tokens.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// How long a job's last events may take to publish before its outcome is stored anyway.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

enum Message {
    Start {
        job: Uuid,
        attempt: i32,
    },
    Bytes {
        job: Uuid,
        prompt: usize,
        bytes: Vec<u8>,
    },
    Finished {
        job: Uuid,
        generation: NewGeneration,
    },
    Close {
        job: Uuid,
        flushed: oneshot::Sender<()>,
    },
    /// The job's handle is gone (after `Close`, or a job abandoned by a panic).
    Forget {
        job: Uuid,
    },
}

/// The worker's publisher of live events.
#[derive(Clone)]
pub(crate) struct LiveEvents {
    messages: mpsc::UnboundedSender<Message>,
}

/// One running job's live events.
pub(crate) struct LiveJob {
    job: Uuid,
    messages: mpsc::UnboundedSender<Message>,
}

impl LiveEvents {
    /// Starts the publishing task; it ends when every handle is gone.
    pub fn start(redis: ConnectionManager, queue: String) -> LiveEvents {
        let (messages, inbox) = mpsc::unbounded_channel();
        let publisher = Publisher {
            redis,
            queue,
            jobs: HashMap::new(),
            failing: false,
        };
        tokio::spawn(publisher.run(inbox));
        LiveEvents { messages }
    }

    pub fn job(&self, job: Uuid, attempt: i32) -> LiveJob {
        let _ = self.messages.send(Message::Start { job, attempt });
        LiveJob {
            job,
            messages: self.messages.clone(),
        }
    }
}

impl LiveJob {
    /// Where the engine hands prompt `prompt`'s bytes.
    pub fn sink(&self, prompt: usize) -> TextSink {
        let (job, messages) = (self.job, self.messages.clone());
        Box::new(move |bytes: &[u8]| {
            if bytes.is_empty() {
                return;
            }
            // Closed only when the worker stops: nothing left to tell.
            let _ = messages.send(Message::Bytes {
                job,
                prompt,
                bytes: bytes.to_vec(),
            });
        })
    }

    /// A prompt's result as it will be stored.
    pub fn finished(&self, generation: &NewGeneration) {
        let _ = self.messages.send(Message::Finished {
            job: self.job,
            generation: generation.clone(),
        });
    }

    /// Publishes what is left of the job's events, briefly: call before storing the outcome so
    /// the stream is whole by the time the job turns final.
    pub async fn close(&self) {
        let (flushed, done) = oneshot::channel();
        let close = Message::Close {
            job: self.job,
            flushed,
        };
        if self.messages.send(close).is_ok() {
            let _ = tokio::time::timeout(CLOSE_PATIENCE, done).await;
        }
    }
}

impl Drop for LiveJob {
    fn drop(&mut self) {
        let _ = self.messages.send(Message::Forget { job: self.job });
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

struct Job {
    attempt: i32,
    prompts: HashMap<usize, PromptText>,
    pending: Vec<JobEvent>,
}

struct Publisher {
    redis: ConnectionManager,
    queue: String,
    jobs: HashMap<Uuid, Job>,
    /// The last publish failed (logged once per streak).
    failing: bool,
}

impl Publisher {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Message>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = inbox.recv() => match message {
                    Some(message) => self.apply(message).await,
                    None => return,
                },
                _ = tick.tick() => {
                    let all: Vec<Uuid> = self.jobs.keys().copied().collect();
                    self.publish(&all).await;
                }
            }
        }
    }

    async fn apply(&mut self, message: Message) {
        match message {
            Message::Start { job, attempt } => {
                let job_state = Job {
                    attempt,
                    prompts: HashMap::new(),
                    pending: Vec::new(),
                };
                self.jobs.insert(job, job_state);
            }
            Message::Bytes { job, prompt, bytes } => {
                if let Some(job) = self.jobs.get_mut(&job) {
                    let text = job.prompts.entry(prompt).or_default();
                    text.raw.extend_from_slice(&bytes);
                }
            }
            Message::Finished { job, generation } => {
                if let Some(job) = self.jobs.get_mut(&job) {
                    job.finish_prompt(generation);
                }
            }
            Message::Close { job, flushed } => {
                self.publish(&[job]).await;
                self.jobs.remove(&job);
                let _ = flushed.send(());
            }
            Message::Forget { job } => {
                self.jobs.remove(&job);
            }
        }
    }

    /// Publishes the given jobs' pending events, and their text decoded so far, in one round trip.
    async fn publish(&mut self, ids: &[Uuid]) {
        let batch: Vec<(Uuid, Vec<JobEvent>)> = ids
            .iter()
            .filter_map(|id| {
                let job = self.jobs.get_mut(id)?;
                job.release_text();
                Some((*id, std::mem::take(&mut job.pending)))
            })
            .filter(|(_, events)| !events.is_empty())
            .collect();
        if batch.is_empty() {
            return;
        }
        match events::publish(&mut self.redis, &self.queue, &batch).await {
            Ok(()) => self.failing = false,
            Err(e) => {
                genq_shared::metrics::redis_error();
                // Those events are lost; the jobs' outcomes are not (PostgreSQL).
                if !self.failing {
                    tracing::warn!(error = %e, "cannot publish live job events; they are lost until Redis answers");
                }
                self.failing = true;
            }
        }
    }
}

impl Job {
    /// Queues each prompt's text that the output filter can no longer change.
    fn release_text(&mut self) {
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
    }

    fn finish_prompt(&mut self, generation: NewGeneration) {
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

/// The end of the longest prefix of `raw` that the output filter treats the same alone as
/// followed by anything: it ends in ASCII whitespace not preceded by a digit (of any script: the
/// filter's `\d` is Unicode's). The filter's patterns (e-mail addresses, SSNs, card numbers)
/// never span such a point (only a card number spans whitespace, between digits), and an ASCII
/// byte ends any UTF-8 sequence, so the text up to there is final. `None` when there is no such
/// point past `after`: text without spaces is published when its prompt finishes.
fn filter_safe_end(raw: &[u8], after: usize) -> Option<usize> {
    (after + 1..=raw.len())
        .rev()
        .find(|&end| raw[end - 1].is_ascii_whitespace() && !ends_in_digit(&raw[..end - 1]))
}

/// Whether the last character of `bytes` is numeric in any script (undecodable bytes are not).
fn ends_in_digit(bytes: &[u8]) -> bool {
    let start = bytes.len().saturating_sub(4);
    (start..bytes.len())
        .filter_map(|from| std::str::from_utf8(&bytes[from..]).ok())
        .find_map(|tail| tail.chars().next_back())
        .is_some_and(char::is_numeric)
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
        let outputs: [&[u8]; 6] = [
            b"mail bob@example.org or call 123-45-6789 today ",
            b"card 4111 1111 1111 1111 ends here ",
            b"split \xe2\x82 euro \xe2\x82\xac and \0 nul ",
            b"no spaces at all",
            b"12 34 56 78 90 12 34 5 ",
            // Full-width digits: the card pattern's \d matches them too.
            "card \u{ff14}\u{ff11}\u{ff11}\u{ff11} \u{ff11}\u{ff11}\u{ff11}\u{ff11} \u{ff11}\u{ff11}\u{ff11}\u{ff11} \u{ff11}\u{ff11}\u{ff11}\u{ff11} ok ".as_bytes(),
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
        assert_eq!(published_in_pieces(b"card 4111 1111 1111 1111 x"), "card ");
    }
}
