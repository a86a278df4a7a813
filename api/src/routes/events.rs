//! `GET /batch_result/{id}/events`: a job followed as Server-Sent Events. Status changes come from
//! PostgreSQL (the record), decoded text and finished prompts from the job's Redis stream (no
//! PostgreSQL write per token); the stream ends with the job as `GET /batch_result` answers it.
//! Stream events carry their Redis entry id, so `Last-Event-ID` resumes after the last one seen.

use std::{collections::HashMap, convert::Infallible, time::Duration};

use axum::{
    Extension,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::Stream;
use genq_shared::{
    db::{self, Scope},
    events::{self, EventId, JobEvent},
    types::{ErrorCode, ErrorDetail, JobStatus},
    wait::SAFETY_RECHECK,
};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    batch::{task_id_of, unknown},
    query_map,
};
use crate::openapi::{ErrorBody, Internal, TooManyRequests, Unauthorized, Unavailable};
use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, Result},
};

/// Stream entries read from Redis per round trip.
const READ_BATCH: usize = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(job_events))
}

/// Follow a job
///
/// Server-Sent Events: `status` (`{"status": ...}`, on connecting and at every change), `prompt`
/// (a prompt's result as it finishes, before the job does), with `tokens=true` also `token`
/// (text as it is decoded: a prompt's token texts, joined, are its result's text; a new
/// `attempt` starts the prompt over), and last `done`, the job as `GET /batch_result` answers
/// it. `prompt` and `token` events carry an id; reconnecting with `Last-Event-ID` resumes after
/// it. Without one, every event of the job so far is sent first.
#[utoipa::path(
    get,
    path = "/batch_result/{task_id}/events",
    tag = "jobs",
    params(
        ("task_id" = uuid::Uuid, Path, description = "The task id `POST /batch` answered"),
        ("tokens" = Option<bool>, Query, nullable = false,
            description = "Also send decoded text as `token` events (default false)"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false,
            pattern = "^([0-9]+-[0-9]+)?$",
            description = "The id of the last event received, to resume after it (empty: \
                from the start)"),
    ),
    responses(
        (status = 200, description = "The job's events as a `text/event-stream` (not JSON): \
            `event:` lines name each (`status`, `prompt`, `token`, `done`, `error`), `data:` \
            lines carry it as JSON, `id:` lines the id to resume after. See docs/api.md, \
            Waiting for a job.",
            content_type = "text/event-stream", body = String,
            example = json!("event: status\ndata: {\"status\":\"queued\"}\n\nevent: done\ndata: {\"task_id\":\"…\",\"status\":\"completed\"}\n\n")),
        (status = 400, body = ErrorBody, description = "`malformed_id`: the task id is not a UUID"),
        (status = 401, response = Unauthorized),
        (status = 404, body = ErrorBody,
            description = "`not_found`: no such task (for this tenant)"),
        (status = 422, body = ErrorBody,
            description = "`invalid_field`: `tokens` or `Last-Event-ID` is not valid, named in \
                `field`"),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn job_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    task_id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response> {
    let id = task_id_of(task_id)?;
    let tokens = match query_map(query)?.get("tokens").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("tokens", "tokens must be true or false")),
    };
    // An empty Last-Event-ID is what a client that has seen no event with an id may send: it
    // resumes nothing.
    let last_event_id = headers
        .get("last-event-id")
        .filter(|value| !value.as_bytes().trim_ascii().is_empty());
    let after = match last_event_id {
        None => EventId::START,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|raw| raw.trim().parse().ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    "Last-Event-ID",
                    "Last-Event-ID must be the id of an event this stream sent",
                )
            })?,
    };
    // Unknown and another tenant's jobs are a 404 answered now: a stream cannot be one.
    db::jobs::status_in(&state.db, id, caller.scope())
        .await?
        .ok_or_else(|| unknown(id))?;
    let (sender, receiver) = mpsc::channel(64);
    let follower = Follower {
        tenant: (!caller.admin).then(|| caller.tenant.clone()),
        key_id: caller.key_id(),
        state,
        id,
        tokens,
        after,
        out: sender,
    };
    tokio::spawn(follower.run().instrument(tracing::Span::current()));
    Ok(Sse::new(events_of(receiver))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn events_of(receiver: mpsc::Receiver<Event>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        Some((Ok(event), receiver))
    })
}

/// Follows one job for one client, until the job is final, the client leaves or the API stops.
struct Follower {
    state: AppState,
    /// `None` for an admin, who may follow any tenant's job.
    tenant: Option<String>,
    /// The key the stream was opened with: the stream ends once it is revoked.
    key_id: Option<Uuid>,
    id: Uuid,
    tokens: bool,
    after: EventId,
    out: mpsc::Sender<Event>,
}

/// Why following ended early.
enum Stop {
    ClientGone,
    Revoked,
    Failed(ApiError),
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Stop::Failed(ApiError::from(e))
    }
}

impl Follower {
    async fn run(mut self) {
        // Raced against the whole of following, a wait to send included: a client that stops
        // reading must not keep a revoked key's stream open.
        let state = self.state.clone();
        let revoked = state.key_cache.until_revoked(&state.db, self.key_id);
        let followed = tokio::select! {
            followed = self.follow() => followed,
            () = revoked => Err(Stop::Revoked),
        };
        let detail = match followed {
            Ok(()) | Err(Stop::ClientGone) => return,
            Err(Stop::Revoked) => ErrorDetail {
                code: ErrorCode::Unauthorized,
                message: "the key this stream was opened with was revoked".into(),
            },
            Err(Stop::Failed(error)) => {
                tracing::warn!(task_id = %self.id, error = %error, "a job's event stream failed");
                ErrorDetail {
                    code: ErrorCode::Unavailable,
                    message: "the event stream failed; reconnect with Last-Event-ID".into(),
                }
            }
        };
        // Not waited for: a client that stopped reading gets the stream's end, not this event.
        let event = Event::default().event("error").json_data(detail);
        let _ = self.out.try_send(event.expect("events serialize"));
    }

    fn scope(&self) -> Scope<'_> {
        self.tenant.as_deref().map_or(Scope::All, Scope::Tenant)
    }

    async fn follow(&mut self) -> std::result::Result<(), Stop> {
        // Before the first read, so that no change after it goes unseen.
        let mut subscription = self.state.watch.subscribe(self.id);
        let mut sent_status = None;
        let (mut read_status, mut read_events) = (true, true);
        let mut status = JobStatus::Queued;
        // A fixed beat, not a timeout re-armed at every wake-up: events flowing every 100 ms
        // must not put off the status re-read forever.
        let mut safety = tokio::time::interval(SAFETY_RECHECK);
        safety.reset();
        loop {
            if read_status {
                status = match db::jobs::status_in(&self.state.db, self.id, self.scope()).await? {
                    Some(status) => status,
                    // Deleted (retention, an operator) while followed: nothing more will happen.
                    None => {
                        let gone = ErrorDetail {
                            code: ErrorCode::NotFound,
                            message: format!("task {} was deleted", self.id),
                        };
                        self.send(Event::default().event("error").json_data(gone))
                            .await?;
                        return Ok(());
                    }
                };
            }
            if sent_status != Some(status) && !status.is_final() {
                self.send(status_event(status)).await?;
                sent_status = Some(status);
            }
            // Read after the status: once it is final the stream is whole, as workers publish
            // their last events before storing the outcome.
            if read_events || status.is_final() {
                self.send_stream_events().await?;
            }
            if status.is_final() {
                self.send(status_event(status)).await?;
                let view = db::jobs::view(&self.state.db, self.id, self.scope()).await?;
                if let Some(view) = view {
                    self.send(Event::default().event("done").json_data(view))
                        .await?;
                }
                return Ok(());
            }
            tokio::select! {
                changes = subscription.changed() => {
                    read_status = changes.status > 0;
                    read_events = changes.events > 0;
                }
                _ = safety.tick() => (read_status, read_events) = (true, true),
                () = self.out.closed() => return Err(Stop::ClientGone),
                // The client reconnects, to this replica's successor, with Last-Event-ID.
                () = self.state.stopping.cancelled() => return Ok(()),
            }
        }
    }

    /// Sends the stream's entries after the last one sent. Redis failing costs only the live
    /// preview: the job's outcome still comes from PostgreSQL.
    async fn send_stream_events(&mut self) -> std::result::Result<(), Stop> {
        let queue = &self.state.queue_name;
        loop {
            let mut redis = self.state.redis.clone();
            let page = match events::read_after(&mut redis, queue, self.id, self.after, READ_BATCH)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(task_id = %self.id, error = %e, "cannot read a job's events");
                    return Ok(());
                }
            };
            for (entry_id, event) in page.events {
                if event.is_token() && !self.tokens {
                    continue;
                }
                let name = match event {
                    JobEvent::Token { .. } => "token",
                    JobEvent::Prompt { .. } => "prompt",
                };
                let event = Event::default()
                    .id(entry_id.to_string())
                    .event(name)
                    .json_data(event);
                self.send(event).await?;
            }
            if let Some(cursor) = page.cursor {
                self.after = cursor;
            }
            if page.complete {
                return Ok(());
            }
        }
    }

    async fn send(
        &self,
        event: std::result::Result<Event, axum::Error>,
    ) -> std::result::Result<(), Stop> {
        // Serializing our own types cannot fail.
        let event = event.expect("events serialize");
        self.out.send(event).await.map_err(|_| Stop::ClientGone)
    }
}

fn status_event(status: JobStatus) -> std::result::Result<Event, axum::Error> {
    Event::default()
        .event("status")
        .json_data(json!({ "status": status }))
}
