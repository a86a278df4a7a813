//! How a user's client waits for a genq job over HTTP, three ways, each its own benchmark row:
//! polling `GET /batch_result/{id}` every 0.5 s (Celery's `AsyncResult.get` default), long-polling
//! `GET /batch_result/{id}?wait=60` until the job is final, and Server-Sent Events from
//! `GET /batch_result/{id}/events`, whose stream ends with `event: done` carrying the final job,
//! the same body `GET /batch_result` answers. What the waiting costs the API (and so the 2 cores
//! it shares with the worker) is part of what is measured.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use genq_shared::types::JobView;
use tokio::time::Instant;
use uuid::Uuid;

/// A run that takes longer than this is broken, not slow.
pub const PATIENCE: Duration = Duration::from_secs(900);
const POLL_EVERY: Duration = Duration::from_millis(500);
const LONG_POLL_WAIT_S: u64 = 60;
/// An SSE stream that ends without `event: done` is reopened after this, unless it said `retry:`.
const SSE_DEFAULT_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    Poll,
    LongPoll,
    Sse,
}

impl Waiting {
    /// The table's name for it.
    pub fn describe(self) -> &'static str {
        match self {
            Waiting::Poll => "polling every 0.5 s",
            Waiting::LongPoll => "long-poll ?wait=60",
            Waiting::Sse => "SSE /events",
        }
    }
}

/// An HTTP client for [`wait`] from `builder` (which sends the API key): a long-poll answer takes
/// up to a minute, so single requests may take 90 s; SSE streams set their own limit.
pub fn http(builder: reqwest::ClientBuilder) -> anyhow::Result<reqwest::Client> {
    Ok(builder
        .timeout(Duration::from_secs(LONG_POLL_WAIT_S + 30))
        .build()?)
}

/// Waits, the way `waiting` says, until job `id` is final, and returns it.
pub async fn wait(
    http: &reqwest::Client,
    base_url: &str,
    id: Uuid,
    waiting: Waiting,
) -> anyhow::Result<JobView> {
    match waiting {
        Waiting::Poll => poll(http, base_url, id).await,
        Waiting::LongPoll => long_poll(http, base_url, id).await,
        Waiting::Sse => sse(http, base_url, id).await,
    }
}

async fn get_job(http: &reqwest::Client, url: &str) -> anyhow::Result<JobView> {
    let response = http.get(url).send().await?;
    ensure!(
        response.status() == 200,
        "GET {} answered {}",
        path_of(url),
        response.status()
    );
    Ok(response.json().await?)
}

async fn poll(http: &reqwest::Client, base_url: &str, id: Uuid) -> anyhow::Result<JobView> {
    let url = format!("{base_url}/batch_result/{id}");
    let give_up = Instant::now() + PATIENCE;
    while Instant::now() < give_up {
        tokio::time::sleep(POLL_EVERY).await;
        let view = get_job(http, &url).await?;
        if view.status.is_final() {
            return Ok(view);
        }
    }
    bail!("job {id} was not final after {PATIENCE:?}")
}

async fn long_poll(http: &reqwest::Client, base_url: &str, id: Uuid) -> anyhow::Result<JobView> {
    // An API without long-poll ignores `wait` and answers at once: the loop would then spin as
    // fast as the API answers and measure that. A real long-poll answers early only when the job
    // changed, so a few quick answers in a row with nothing changed mean it is not there.
    const QUICK: Duration = Duration::from_secs(1);
    const QUICK_UNCHANGED_LIMIT: u32 = 3;
    let url = format!("{base_url}/batch_result/{id}?wait={LONG_POLL_WAIT_S}");
    let give_up = Instant::now() + PATIENCE;
    let mut previous = None;
    let mut quick_unchanged = 0;
    while Instant::now() < give_up {
        let asked = Instant::now();
        let view = get_job(http, &url).await?;
        if view.status.is_final() {
            return Ok(view);
        }
        let seen = (view.status, view.counts);
        if asked.elapsed() < QUICK && previous == Some(seen) {
            quick_unchanged += 1;
            ensure!(
                quick_unchanged < QUICK_UNCHANGED_LIMIT,
                "the API answered GET /batch_result/{{id}}?wait={LONG_POLL_WAIT_S} at once with \
                 the job unchanged and unfinished, {QUICK_UNCHANGED_LIMIT} times in a row: it does \
                 not long-poll"
            );
        } else {
            quick_unchanged = 0;
        }
        previous = Some(seen);
    }
    bail!("job {id} was not final after {PATIENCE:?}")
}

async fn sse(http: &reqwest::Client, base_url: &str, id: Uuid) -> anyhow::Result<JobView> {
    let url = format!("{base_url}/batch_result/{id}/events");
    let give_up = Instant::now() + PATIENCE;
    let mut last_event_id: Option<String> = None;
    let mut retry = SSE_DEFAULT_RETRY;
    // As a browser's EventSource does: a stream that ends early is reopened (with the last event
    // id seen), a refused one is an error.
    while Instant::now() < give_up {
        let mut request = http
            .get(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .timeout(give_up - Instant::now());
        if let Some(last) = &last_event_id {
            request = request.header("Last-Event-ID", last);
        }
        let mut response = request.send().await?;
        ensure!(
            response.status() == 200,
            "GET /batch_result/{{id}}/events answered {}",
            response.status()
        );
        let mut events = SseParser::default();
        while let Some(chunk) = response.chunk().await? {
            for event in events.push(&chunk) {
                if event.id.is_some() {
                    last_event_id = event.id;
                }
                if let Some(ms) = event.retry_ms {
                    retry = Duration::from_millis(ms);
                }
                if event.name == "done" {
                    let view: JobView = serde_json::from_str(&event.data)
                        .context("the data of `event: done` is not a job")?;
                    ensure!(
                        view.status.is_final(),
                        "`event: done` carried job {id} {:?}, not final",
                        view.status
                    );
                    return Ok(view);
                }
            }
        }
        tokio::time::sleep(retry).await;
    }
    bail!("no `event: done` for job {id} within {PATIENCE:?}")
}

/// POSTs `body` as JSON to `url`; any answer but 200 is an error naming the request (`what`, say
/// `POST /completion`) with the answer's body.
pub async fn post_ok(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    what: &str,
) -> anyhow::Result<reqwest::Response> {
    let response = http.post(url).json(body).send().await?;
    let status = response.status();
    ensure!(
        status == 200,
        "{what} answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
    Ok(response)
}

/// The path of `url` (after the host), for messages that need not repeat the port.
fn path_of(url: &str) -> &str {
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.find('/').map(|at| &rest[at..]))
        .unwrap_or(url)
}

/// One Server-Sent Event; `name` is `message` where no `event:` field was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub name: String,
    pub data: String,
    pub id: Option<String>,
    pub retry_ms: Option<u64>,
}

/// A Server-Sent Events parser (the WHATWG "event stream" format): bytes in as they arrive, whole
/// events out. Lines end with LF, CRLF or CR; a blank line ends an event; `:` lines are comments
/// (keep-alives); several `data:` lines join with LF; an event with no data is not dispatched.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry_ms: Option<u64>,
    /// The last line ended with CR: an LF next belongs to it.
    after_cr: bool,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        loop {
            // The LF of a CRLF whose CR ended the previous line, perhaps in an earlier chunk.
            if self.after_cr && self.pending.first() == Some(&b'\n') {
                self.pending.remove(0);
            }
            let Some(end) = self.pending.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.after_cr &= self.pending.is_empty();
                break;
            };
            self.after_cr = self.pending[end] == b'\r';
            let line: Vec<u8> = self.pending.drain(..=end).take(end).collect();
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take();
            let name = self.name.take();
            return data.map(|data| SseEvent {
                name: name.unwrap_or_else(|| "message".into()),
                data,
                id: self.id.clone(),
                retry_ms: self.retry_ms.take(),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" => self.retry_ms = value.parse().ok().or(self.retry_ms),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_and_line_endings() {
        let mut parser = SseParser::default();
        let mut events = parser.push(b": keep-alive\n\nevent: progress\ndata: {\"a\"");
        assert!(events.is_empty());
        events.extend(parser.push(b":1}\r\n\r"));
        events.extend(parser.push(b"\nid: 7\nretry: 250\nevent: done\ndata: x\ndata:y\r\r"));
        assert_eq!(
            events,
            vec![
                SseEvent {
                    name: "progress".into(),
                    data: "{\"a\":1}".into(),
                    id: None,
                    retry_ms: None,
                },
                SseEvent {
                    name: "done".into(),
                    data: "x\ny".into(),
                    id: Some("7".into()),
                    retry_ms: Some(250),
                },
            ]
        );
    }

    #[test]
    fn sse_default_name_and_no_dispatch_without_data() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: ping\n\n").is_empty());
        let events = parser.push(b"data: hello\n\n");
        assert_eq!(events[0].name, "message");
        assert_eq!(events[0].data, "hello");
    }

    #[test]
    fn paths_without_the_host() {
        assert_eq!(
            path_of("http://127.0.0.1:8/batch_result/x?wait=60"),
            "/batch_result/x?wait=60"
        );
    }
}
