//! A running job's live events: text as it is decoded and each prompt's result as it finishes.
//! Workers append them to a Redis stream per job and announce the job's id on one channel; the
//! API's event streams read them from there. They cost no PostgreSQL write, and they are a
//! preview: PostgreSQL's record of the finished job is what counts, and a lost event (Redis down)
//! loses nothing a client cannot read from `GET /batch_result`.

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::FinishReason;

/// How long a job's events stay in Redis after the last one: long enough for a client to resume
/// a dropped stream. Longer costs memory (several KB a job: kept an hour, the soak's Redis grew
/// to 1.2 GB) and serves little: a stream opened after its events expired still ends with
/// `done`, whose results are whole.
pub const RETENTION_SECS: i64 = 600;

/// Most entries one job's stream keeps (approximately): far above what a job's prompts produce
/// in normal use, it only bounds memory against a runaway.
const MAX_ENTRIES: usize = 100_000;

/// The stream's field that holds an event's JSON.
const FIELD: &str = "e";

pub fn stream_key(queue: &str, id: Uuid) -> String {
    format!("{queue}:events:{id}")
}

/// The channel a job's id is published on when its stream has new entries.
pub fn channel(queue: &str) -> String {
    format!("{queue}:job-events")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobEvent {
    /// Text decoded since the prompt's previous token event. A prompt's token texts, joined,
    /// are its result's text (after the output filter).
    Token {
        attempt: i32,
        prompt: i32,
        text: String,
    },
    /// A prompt's result, as it will be stored.
    Prompt {
        attempt: i32,
        index: i32,
        generated_text: String,
        completion_tokens: i32,
        finish_reason: FinishReason,
        redacted: bool,
    },
}

impl JobEvent {
    pub fn is_token(&self) -> bool {
        matches!(self, JobEvent::Token { .. })
    }
}

/// Appends each job's events to its stream and announces the jobs, all in one round trip.
pub async fn publish(
    conn: &mut impl ConnectionLike,
    queue: &str,
    jobs: &[(Uuid, Vec<JobEvent>)],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for (id, events) in jobs.iter().filter(|(_, events)| !events.is_empty()) {
        let key = stream_key(queue, *id);
        for event in events {
            let json = serde_json::to_string(event).expect("events serialize");
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(MAX_ENTRIES)
                .arg("*")
                .arg(FIELD)
                .arg(json)
                .ignore();
        }
        pipe.cmd("EXPIRE").arg(&key).arg(RETENTION_SECS).ignore();
        pipe.cmd("PUBLISH")
            .arg(channel(queue))
            .arg(id.to_string())
            .ignore();
    }
    if pipe.is_empty() {
        return Ok(());
    }
    pipe.query_async(conn).await
}

/// A stream entry's id, as Redis writes it (`<ms>-<seq>`): the event id clients resume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId(pub u64, pub u64);

impl EventId {
    pub const START: EventId = EventId(0, 0);
}

impl std::str::FromStr for EventId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        Ok(EventId(
            ms.parse().map_err(|_| ())?,
            seq.parse().map_err(|_| ())?,
        ))
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// Some of a job's events, as [`read_after`] reads them.
#[derive(Debug)]
pub struct Page {
    /// Oldest first.
    pub events: Vec<(EventId, JobEvent)>,
    /// The id of the last entry read, parsed or not: where to read on from.
    pub cursor: Option<EventId>,
    /// Whether the stream has nothing after this page (for now).
    pub complete: bool,
}

/// Up to `count` stream entries after `after`. Entries that do not parse (written by a newer
/// version) are skipped but still move the cursor.
pub async fn read_after(
    conn: &mut impl ConnectionLike,
    queue: &str,
    id: Uuid,
    after: EventId,
    count: usize,
) -> redis::RedisResult<Page> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream_key(queue, id))
        .arg(format!("({after}"))
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    let complete = entries.len() < count;
    let cursor = entries
        .last()
        .and_then(|(entry_id, _)| entry_id.parse().ok());
    let events = entries
        .into_iter()
        .filter_map(|(entry_id, fields)| {
            let entry_id = entry_id.parse().ok()?;
            let (_, json) = fields.into_iter().find(|(name, _)| name == FIELD)?;
            Some((entry_id, serde_json::from_str(&json).ok()?))
        })
        .collect();
    Ok(Page {
        events,
        cursor,
        complete,
    })
}
