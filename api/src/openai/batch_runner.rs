//! Moves OpenAI batches through their states, on every API replica: each step of a batch is
//! leased to one replica at a time (`openai_batches.lease_until`), renewed while it runs, so a
//! replica that dies mid-step hands the batch on once its lease lapses, and every step can be
//! taken again from the start.
//!
//! - `validating`: the input file's lines are checked; any bad line fails the batch (recording
//!   nothing else); else every line's jobs are recorded with the batch's lines in one transaction
//!   and dispatched, and the batch is `in_progress`.
//! - `in_progress`: once its jobs are final the output files are written (`finalizing`, then
//!   `completed`); past its window its unfinished jobs are cancelled and it is `expired`.
//! - `cancelling`: its unfinished jobs are cancelled, then its files written: `cancelled`.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use genq_shared::{
    db::{
        self, Scope,
        jobs::{JobRoute, NewJob, Owner},
        openai_batches::{BatchRow, NewRequest},
    },
    queue::{self, Priority},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    completions::plan_chat_request,
    models,
    request::{ChatRequest, CompletionRequest, Plan, openai_field, plan_completion},
};
use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    routes::batch::check_quotas,
    routing::{RoutingRefusal, dispatch_recorded, lock_models, sticky},
    validate,
};

/// How long a step holds its batch before another replica may take it; renewed while it runs.
const LEASE: Duration = Duration::from_secs(15);
/// How often a running batch is checked for the end of its jobs (besides being woken).
const RECHECK: Duration = Duration::from_secs(1);
/// Most validation errors a failed batch lists.
const MAX_ERRORS: usize = 1000;
/// Request lines read and answered at a time when writing output files.
const PAGE: i64 = 1000;

/// Runs batch steps until `stopping`; `wake` brings a check forward (a batch created or
/// cancelled on this replica).
pub async fn run(state: AppState, wake: Arc<Notify>, stopping: CancellationToken) {
    let mut counted = CountsDue::default();
    loop {
        loop {
            match db::openai_batches::take_due(&state.db, LEASE).await {
                Ok(Some(batch)) => step(&state, batch, &mut counted).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take a batch step");
                    break;
                }
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(RECHECK) => {}
            () = stopping.cancelled() => return,
        }
    }
}

/// When each running batch's counts are next refreshed: counting a large batch's lines is
/// work, so it takes at most a twentieth of the time (this replica's view; another replica
/// taking a step keeps its own).
#[derive(Default)]
struct CountsDue(HashMap<String, Instant>);

impl CountsDue {
    /// Whether the counts are due.
    fn due(&self, id: &str) -> bool {
        self.0.get(id).is_none_or(|at| Instant::now() >= *at)
    }

    fn counted(&mut self, id: &str, took: Duration) {
        // Forget batches no longer seen for a while, so the map stays small.
        self.0
            .retain(|_, at| at.elapsed() < Duration::from_secs(3600));
        self.0
            .insert(id.to_owned(), Instant::now() + (took * 20).max(RECHECK));
    }
}

async fn step(state: &AppState, batch: BatchRow, counted: &mut CountsDue) {
    // Aborted when the step ends, however it ends (a panic included): a lease renewed forever
    // would keep every replica off the batch.
    let renewing = tokio_util::task::AbortOnDropHandle::new(tokio::spawn({
        let (pool, id) = (state.db.clone(), batch.id.clone());
        async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                if let Err(e) = db::openai_batches::release(&pool, &id, LEASE).await {
                    tracing::warn!(error = %e, batch = %id, "cannot renew a batch's lease");
                }
            }
        }
    }));
    let id = batch.id.clone();
    let next_check = match take_step(state, batch, counted).await {
        Ok(next) => next,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), batch = %id, "a batch step failed; it will be taken again");
            Some(RECHECK * 5)
        }
    };
    drop(renewing);
    if let Some(after) = next_check
        && let Err(e) = db::openai_batches::release(&state.db, &id, after).await
    {
        tracing::warn!(error = %e, batch = %id, "cannot hand a batch back");
    }
}

/// Takes the batch's next step; `Some(after)` hands it back to be looked at again then.
async fn take_step(
    state: &AppState,
    batch: BatchRow,
    counted: &mut CountsDue,
) -> anyhow::Result<Option<Duration>> {
    let now = chrono::Utc::now();
    match batch.status.as_str() {
        // A batch whose validation keeps failing (a replica dying at it, PostgreSQL refusing
        // its jobs) must still end: within its window.
        "validating" if now >= batch.expires_at => {
            let error = line_error(
                0,
                "batch_expired",
                "the batch could not be validated within its window",
                None,
            );
            db::openai_batches::fail(&state.db, &batch.id, &json!([error])).await?;
            Ok(None)
        }
        "validating" => {
            validate_and_start(state, &batch).await?;
            Ok(Some(Duration::ZERO))
        }
        "in_progress"
            if now >= batch.expires_at
                && db::openai_batches::unfinished_jobs(&state.db, &batch.id).await? > 0 =>
        {
            cancel_jobs(state, &batch, "the batch's completion window ended").await?;
            db::openai_batches::set_finalizing(&state.db, &batch.id).await?;
            finalize(state, &batch, "expired").await?;
            Ok(None)
        }
        "in_progress" => {
            if db::openai_batches::unfinished_jobs(&state.db, &batch.id).await? > 0 {
                if counted.due(&batch.id) {
                    let started = Instant::now();
                    db::openai_batches::refresh_counts(&state.db, &batch.id).await?;
                    counted.counted(&batch.id, started.elapsed());
                }
                return Ok(Some(RECHECK));
            }
            db::openai_batches::set_finalizing(&state.db, &batch.id).await?;
            finalize(state, &batch, "completed").await?;
            Ok(None)
        }
        "cancelling" => {
            cancel_jobs(state, &batch, "the batch was cancelled").await?;
            db::openai_batches::set_finalizing(&state.db, &batch.id).await?;
            finalize(state, &batch, "cancelled").await?;
            Ok(None)
        }
        "finalizing" => {
            let counts = db::openai_batches::refresh_counts(&state.db, &batch.id).await?;
            let status = if batch.cancelling_at.is_some() {
                "cancelled"
            } else if now >= batch.expires_at && counts.completed + counts.failed < counts.total {
                "expired"
            } else {
                "completed"
            };
            finalize(state, &batch, status).await?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

async fn cancel_jobs(state: &AppState, batch: &BatchRow, reason: &str) -> anyhow::Result<()> {
    let cancelled = db::openai_batches::cancel_jobs(&state.db, &batch.id, reason).await?;
    if !cancelled.is_empty() {
        genq_shared::metrics::jobs_finished(
            genq_shared::types::JobStatus::Cancelled,
            None,
            cancelled.len() as u64,
        );
        let mut redis = state.redis.clone();
        if let Err(e) = queue::remove(&state.db, &mut redis, &state.queue_name, &cancelled).await {
            tracing::debug!(error = %e, "cancelled batch jobs stay in Redis until workers skip them");
        }
    }
    Ok(())
}

/// One line of a batch file.
#[derive(Deserialize)]
struct Line {
    custom_id: Option<String>,
    method: Option<String>,
    url: Option<String>,
    body: Option<Value>,
}

/// A line's problem, as OpenAI's `errors.data[]` gives it.
fn line_error(line: usize, code: &str, message: impl Into<String>, param: Option<&str>) -> Value {
    json!({ "code": code, "message": message.into(), "param": param, "line": line })
}

/// Checks every line; with none bad, records and dispatches the jobs and starts the batch.
async fn validate_and_start(state: &AppState, batch: &BatchRow) -> anyhow::Result<()> {
    let lines = match read_lines(state, batch).await? {
        Ok(lines) => lines,
        Err(error) => {
            return Ok(db::openai_batches::fail(&state.db, &batch.id, &json!([error])).await?);
        }
    };
    let served = models::served(state)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut planned: Vec<(usize, String, Plan)> = Vec::new();
    for (index, raw) in lines.iter().enumerate() {
        let number = index + 1;
        match plan_line(state, batch, raw, &served, &mut seen) {
            Ok((custom_id, plan)) => planned.push((number, custom_id, plan)),
            Err(error) => errors.push(line_error(number, error.0, error.1, error.2)),
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
    }
    // genq's own checks (moderation, context), for every job of every line, off the runtime.
    let requests: Vec<_> = planned
        .iter_mut()
        .flat_map(|(_, _, plan)| std::mem::take(&mut plan.jobs))
        .collect();
    let checked = validate::validate_each(requests, state.limits.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut checked = checked.into_iter();
    let mut lines_jobs = Vec::with_capacity(planned.len());
    for (number, custom_id, plan) in &planned {
        let mut jobs = Vec::new();
        for _ in 0..plan.shape.n {
            match checked.next().context("a checked job per planned job")? {
                Ok(job) => jobs.push(job),
                Err(error) if errors.len() < MAX_ERRORS => {
                    let (param, message) = match openai_field(error) {
                        ApiError::InvalidField { field, message } => (Some(field), message),
                        other => (None, other.to_string()),
                    };
                    errors.push(json!({ "code": "invalid_request", "message": message, "param": param, "line": number }));
                }
                Err(_) => {}
            }
        }
        lines_jobs.push((*number, custom_id, &plan.shape, jobs));
    }
    if !errors.is_empty() {
        tracing::info!(batch = %batch.id, errors = errors.len(), "batch failed validation");
        return Ok(db::openai_batches::fail(&state.db, &batch.id, &Value::Array(errors)).await?);
    }
    // Every job ends by the batch's window (or the longest timeout allowed, if that is sooner).
    let left = (batch.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::from_secs(1));
    let timeout = left
        .min(Duration::from_secs(state.limits.max_timeout_secs))
        .max(Duration::from_secs(1));
    let ids: Vec<Vec<Uuid>> = lines_jobs
        .iter()
        .map(|(.., jobs)| jobs.iter().map(|_| Uuid::now_v7()).collect())
        .collect();
    let shapes: Vec<Value> = lines_jobs
        .iter()
        .map(|(_, _, shape, _)| serde_json::to_value(shape))
        .collect::<Result<_, _>>()?;
    let owner = Owner {
        tenant: &batch.tenant,
        key_id: batch.api_key_id,
    };
    // Routed before the transaction: a model removed since validation fails the batch.
    let mut routes = Vec::new();
    for (number, .., jobs) in &lines_jobs {
        for job in jobs {
            let user = sticky(job.user.as_deref(), batch.api_key_id, &batch.tenant);
            match state
                .models
                .route(&state.db, job.model.as_deref(), &user)
                .await
            {
                Ok(route) => routes.push(route),
                // The catalogue could not be read: the step is tried again under its lease.
                Err(RoutingRefusal::Api(e)) => return Err(anyhow::anyhow!("{e}")),
                Err(refusal) => {
                    let message = ApiError::from(refusal).to_string();
                    let error = line_error(*number, "model_not_found", message, Some("body.model"));
                    return Ok(
                        db::openai_batches::fail(&state.db, &batch.id, &json!([error])).await?,
                    );
                }
            }
        }
    }
    let mut tx = state.db.begin().await?;
    let models: Vec<&str> = routes.iter().map(|r| r.model.as_str()).collect();
    if let Err(gone) = lock_models(&mut tx, &models).await {
        tx.rollback().await?;
        let error = line_error(0, "model_not_found", gone.to_string(), Some("body.model"));
        return Ok(db::openai_batches::fail(&state.db, &batch.id, &json!([error])).await?);
    }
    let mut route = routes.iter();
    let new_jobs: Vec<NewJob> = lines_jobs
        .iter()
        .zip(&ids)
        .flat_map(|((.., jobs), ids)| jobs.iter().zip(ids))
        .map(|(job, &id)| NewJob {
            id,
            prompts: &job.prompts,
            params: &job.params,
            timeout,
            callback_url: None,
            route: JobRoute::of(route.next().expect("a route per job"), Priority::Batch),
        })
        .collect();
    for chunk in new_jobs.chunks(5000) {
        db::jobs::insert_many(&mut *tx, chunk, state.max_attempts, owner, Some(&batch.id)).await?;
    }
    if let Some(refusal) = quota_refusal(state, batch, &mut tx, &lines_jobs).await? {
        tx.rollback().await?;
        let error = line_error(0, "quota_exceeded", refusal, None);
        return Ok(db::openai_batches::fail(&state.db, &batch.id, &json!([error])).await?);
    }
    let requests: Vec<NewRequest> = lines_jobs
        .iter()
        .zip(&ids)
        .zip(&shapes)
        .map(|(((number, custom_id, ..), ids), shape)| NewRequest {
            line: *number as i32,
            custom_id,
            request: shape,
            job_ids: ids,
        })
        .collect();
    if !db::openai_batches::start(&mut tx, &batch.id, &requests).await? {
        // Cancelled while validated: the next step ends it.
        tx.rollback().await?;
        return Ok(());
    }
    tx.commit().await?;
    let all: Vec<Uuid> = ids.iter().flatten().copied().collect();
    metrics::counter!(genq_shared::metrics::names::JOBS_SUBMITTED).increment(all.len() as u64);
    let dispatches = all
        .iter()
        .zip(routes)
        .map(|(&id, route)| (id, route.model, Priority::Batch));
    dispatch_recorded(state, &batch.tenant, dispatches).await;
    tracing::info!(batch = %batch.id, lines = requests.len(), jobs = all.len(), "batch in progress");
    Ok(())
}

/// The batch's key's queue and token quotas, charged for all its jobs at once.
async fn quota_refusal(
    state: &AppState,
    batch: &BatchRow,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    lines: &[(
        usize,
        &String,
        &super::request::Shape,
        Vec<validate::ValidJob>,
    )],
) -> anyhow::Result<Option<String>> {
    let Some(key_id) = batch.api_key_id else {
        return Ok(None);
    };
    let Some(key) = db::keys::get(&state.db, key_id).await? else {
        return Ok(None);
    };
    let caller = Caller {
        tenant: batch.tenant.clone(),
        admin: key.admin,
        key: Some(key),
    };
    let budget = lines
        .iter()
        .flat_map(|(.., jobs)| jobs)
        .map(|j| j.token_budget())
        .sum();
    Ok(check_quotas(tx, &caller, budget, "this batch needs")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .map(|refusal| refusal.to_string()))
}

/// A line's custom id and plan, or its error: (code, message, param).
fn plan_line(
    state: &AppState,
    batch: &BatchRow,
    raw: &str,
    served: &[models::Model],
    seen: &mut HashSet<String>,
) -> Result<(String, Plan), (&'static str, String, Option<&'static str>)> {
    let line: Line = serde_json::from_str(raw).map_err(|e| {
        (
            "invalid_json_line",
            format!("the line is not a request object: {e}"),
            None,
        )
    })?;
    let custom_id = line.custom_id.filter(|c| !c.is_empty()).ok_or((
        "missing_custom_id",
        "the line has no custom_id".into(),
        Some("custom_id"),
    ))?;
    if custom_id.len() > 512 {
        return Err((
            "invalid_custom_id",
            "custom_id is longer than 512 bytes".into(),
            Some("custom_id"),
        ));
    }
    if !seen.insert(custom_id.clone()) {
        return Err((
            "duplicate_custom_id",
            format!("custom_id '{custom_id}' is used by an earlier line"),
            Some("custom_id"),
        ));
    }
    if line.method.as_deref() != Some("POST") {
        return Err((
            "invalid_method",
            "method must be POST".into(),
            Some("method"),
        ));
    }
    if line.url.as_deref() != Some(batch.endpoint.as_str()) {
        return Err((
            "mismatched_url",
            format!("url must be the batch's endpoint, {}", batch.endpoint),
            Some("url"),
        ));
    }
    let body = line.body.filter(Value::is_object).ok_or((
        "invalid_body",
        "body must be a JSON object".into(),
        Some("body"),
    ))?;
    let invalid = |e: serde_path_to_error::Error<serde_json::Error>| {
        (
            "invalid_request",
            format!("body.{}: {}", e.path(), e.inner()),
            None,
        )
    };
    let plan = if batch.endpoint == "/v1/completions" {
        let request: CompletionRequest = serde_path_to_error::deserialize(body).map_err(invalid)?;
        check_served(&request.model, served)?;
        plan_completion(request, state.limits.max_prompts)
    } else {
        let request: ChatRequest = serde_path_to_error::deserialize(body).map_err(invalid)?;
        check_served(&request.model, served)?;
        plan_chat_request(state, request)
    };
    let plan = plan.map_err(|e| match e {
        ApiError::InvalidField { field, message } => {
            ("invalid_request", format!("{field}: {message}"), None)
        }
        other => ("invalid_request", other.to_string(), None),
    })?;
    if plan.stream {
        return Err((
            "invalid_request",
            "stream is not supported in a batch".into(),
            Some("body"),
        ));
    }
    Ok((custom_id, plan))
}

fn check_served(
    model: &str,
    served: &[models::Model],
) -> Result<(), (&'static str, String, Option<&'static str>)> {
    if served.is_empty() || served.iter().any(|m| m.id == model) {
        return Ok(());
    }
    let names: Vec<&str> = served.iter().map(|m| m.id.as_str()).collect();
    Err((
        "model_not_found",
        format!(
            "the model '{model}' does not exist; genq serves: {}",
            names.join(", ")
        ),
        Some("body.model"),
    ))
}

/// The input file's lines (a trailing empty line dropped), or why there are none to read.
async fn read_lines(
    state: &AppState,
    batch: &BatchRow,
) -> anyhow::Result<Result<Vec<String>, Value>> {
    let Some(file) = db::files::get(
        &state.db,
        &batch.input_file_id,
        Scope::Tenant(&batch.tenant),
    )
    .await?
    else {
        return Ok(Err(line_error(
            0,
            "file_not_found",
            format!("the input file '{}' was deleted", batch.input_file_id),
            Some("input_file_id"),
        )));
    };
    let mut bytes = Vec::with_capacity(file.bytes.max(0) as usize);
    let mut seq = 0;
    while let Some(chunk) = db::files::chunk(&state.db, &file.id, seq).await? {
        bytes.extend_from_slice(&chunk);
        seq += 1;
    }
    let text =
        String::from_utf8(bytes).context("a batch file is checked as UTF-8 when uploaded")?;
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
        .collect();
    if lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    Ok(Ok(lines))
}

/// Writes the output and error files from the stored results and ends the batch as `status`.
async fn finalize(state: &AppState, batch: &BatchRow, status: &str) -> anyhow::Result<()> {
    // Final: no job of the batch changes any more.
    db::openai_batches::refresh_counts(&state.db, &batch.id).await?;
    let mut tx = state.db.begin().await?;
    // Open while the pages are read on other connections.
    db::allow_idle_in(&mut tx).await?;
    let mut output = FileWriter::open(&mut tx, batch, "output").await?;
    let mut errors = FileWriter::open(&mut tx, batch, "error").await?;
    let created = batch.in_progress_at.unwrap_or(batch.created_at).timestamp();
    let mut after = 0;
    loop {
        let page = db::openai_batches::lines(&state.db, &batch.id, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.line;
        let ids: Vec<Uuid> = page
            .iter()
            .flat_map(|l| l.job_ids.iter().copied())
            .collect();
        let outcomes = db::generations::outcomes(&state.db, &ids).await?;
        let results = db::generations::of_jobs(&state.db, &ids).await?;
        for line in &page {
            let shape = serde_json::from_value(line.request.0.clone())?;
            let request_id = line
                .job_ids
                .first()
                .map(Uuid::to_string)
                .unwrap_or_default();
            let id = format!(
                "batch_req_{}",
                line.job_ids
                    .first()
                    .map(|u| u.simple().to_string())
                    .unwrap_or_default()
            );
            match super::answer::body(&shape, created, &line.job_ids, &outcomes, &results) {
                Ok(body) => {
                    let entry = json!({ "id": id, "custom_id": line.custom_id, "response": { "status_code": 200, "request_id": request_id, "body": body }, "error": null });
                    output.write(&mut tx, &entry).await?;
                }
                Err(failure) => {
                    let ended = match (status, failure.code.as_str()) {
                        ("expired", "timeout" | "cancelled") => Some((
                            "batch_expired",
                            "This request could not be executed before the completion window expired.",
                        )),
                        ("cancelled", "cancelled") => Some((
                            "batch_cancelled",
                            "This request was cancelled with its batch before it ran.",
                        )),
                        _ => None,
                    };
                    let entry = match ended {
                        Some((code, message)) => {
                            json!({ "id": id, "custom_id": line.custom_id, "response": null, "error": { "code": code, "message": message } })
                        }
                        None => {
                            let http = axum::http::StatusCode::from_u16(failure.status)
                                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                            let body =
                                super::error_body(http, &failure.code, &failure.message, None);
                            json!({ "id": id, "custom_id": line.custom_id, "response": { "status_code": failure.status, "request_id": request_id, "body": body }, "error": null })
                        }
                    };
                    errors.write(&mut tx, &entry).await?;
                }
            }
        }
    }
    let output_id = output.close(&mut tx).await?;
    let error_id = errors.close(&mut tx).await?;
    let ended = db::openai_batches::finish(
        &mut tx,
        &batch.id,
        status,
        output_id.as_deref(),
        error_id.as_deref(),
    )
    .await?;
    if !ended {
        // Another replica ended it first (its lease lapsed under this one): keep its files.
        tx.rollback().await?;
        return Ok(());
    }
    tx.commit().await?;
    tracing::info!(batch = %batch.id, status, "batch ended");
    Ok(())
}

/// A batch's output or error file, written in chunks inside the finalizing transaction.
struct FileWriter {
    id: String,
    buffer: Vec<u8>,
    seq: i32,
    bytes: i64,
    lines: i32,
}

impl FileWriter {
    async fn open(
        tx: &mut sqlx::PgConnection,
        batch: &BatchRow,
        kind: &str,
    ) -> anyhow::Result<FileWriter> {
        let id = db::files::new_id();
        let name = format!("{}_{kind}.jsonl", batch.id);
        db::files::insert(
            tx,
            &id,
            &batch.tenant,
            batch.api_key_id,
            "batch_output",
            &name,
        )
        .await?;
        Ok(FileWriter {
            id,
            buffer: Vec::new(),
            seq: 0,
            bytes: 0,
            lines: 0,
        })
    }

    async fn write(&mut self, tx: &mut sqlx::PgConnection, entry: &Value) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.buffer, entry)?;
        self.buffer.push(b'\n');
        self.lines += 1;
        if self.buffer.len() >= db::files::CHUNK_BYTES {
            self.flush(tx).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, tx: &mut sqlx::PgConnection) -> anyhow::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        db::files::insert_chunk(tx, &self.id, self.seq, &self.buffer).await?;
        self.seq += 1;
        self.bytes += self.buffer.len() as i64;
        self.buffer.clear();
        Ok(())
    }

    /// The file's id, or `None` (and no file) when nothing was written to it.
    async fn close(mut self, tx: &mut sqlx::PgConnection) -> anyhow::Result<Option<String>> {
        self.flush(tx).await?;
        if self.lines == 0 {
            db::files::discard(tx, &self.id).await?;
            return Ok(None);
        }
        db::files::finish(tx, &self.id, "batch_output", self.bytes, self.lines).await?;
        Ok(Some(self.id))
    }
}
