//! Admin routes (admin keys only): pausing and resuming intake, the queue's figures. Reading and
//! cancelling any tenant's job goes through the ordinary job routes, whose scope for an admin key
//! is every tenant.

use axum::{Json, extract::State};
use genq_shared::{
    db::{
        self,
        models::{ArmStats, ModelOverview},
    },
    routing::Arm,
    types::{JobSummary, QueueStats, WorkerOverview},
};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::openapi::{
    Forbidden, IntakeState, Internal, TooManyRequests, Unauthorized, Unavailable,
};
use crate::{AppState, error::Result};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(queue))
        .routes(routes!(overview))
}

/// Pause intake
///
/// New jobs (`POST /batch`, `POST /generate`) are refused with 503 `intake_paused` until intake
/// is resumed; queued and running jobs go on.
#[utoipa::path(
    post,
    path = "/admin/intake/pause",
    operation_id = "pause_intake",
    tag = "admin",
    responses(
        (status = 200, description = "Intake is paused", body = IntakeState),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn pause(State(state): State<AppState>) -> Result<Json<Value>> {
    set_intake_paused(&state, true).await
}

/// Resume intake
#[utoipa::path(
    post,
    path = "/admin/intake/resume",
    operation_id = "resume_intake",
    tag = "admin",
    responses(
        (status = 200, description = "Intake is open", body = IntakeState),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn resume(State(state): State<AppState>) -> Result<Json<Value>> {
    set_intake_paused(&state, false).await
}

async fn set_intake_paused(state: &AppState, paused: bool) -> Result<Json<Value>> {
    db::control::set_intake_paused(&state.db, paused).await?;
    tracing::info!(paused, "intake switched over HTTP");
    Ok(Json(json!({ "intake_paused": paused })))
}

/// Queue figures
///
/// Jobs by status, live workers, and whether intake is paused.
#[utoipa::path(
    get,
    path = "/admin/queue",
    operation_id = "queue_stats",
    tag = "admin",
    responses(
        (status = 200, description = "The queue's figures", body = QueueStats),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn queue(State(state): State<AppState>) -> Result<Json<QueueStats>> {
    Ok(Json(db::jobs::stats(&state.db, None).await?))
}

/// What the dashboard (`/ui`) shows: the backlog, live workers, the latest jobs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overview {
    pub queued: i64,
    pub running: i64,
    pub oldest_queued_secs: f64,
    pub intake_paused: bool,
    /// Tokens the live workers have sampled since they started, as of their last heartbeats: the
    /// change between two reads is the cluster's tokens/s.
    pub generated_tokens: i64,
    pub workers: Vec<WorkerOverview>,
    /// The newest jobs of every tenant, newest first.
    pub jobs: Vec<JobSummary>,
    /// The model catalogue, with each model's workers and backlog.
    pub models: Vec<ModelOverview>,
    /// Each alias, its split, and how its models compare over the last hour.
    pub aliases: Vec<AliasOverview>,
}

/// An alias on the dashboard: its arms and their figures (`genqctl models stats`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AliasOverview {
    pub name: String,
    pub arms: Vec<Arm>,
    /// Per model that answered the alias's jobs of the last hour.
    pub stats: Vec<ArmStats>,
}

/// The window the dashboard compares an alias's arms over.
const ARM_STATS_WINDOW_SECS: f64 = 3600.0;

/// How many of the newest jobs the overview lists.
const OVERVIEW_JOBS: i64 = 25;

/// Dashboard overview
///
/// The backlog, the live workers with their slots and heartbeats, and the newest jobs. Cheap to
/// poll: every query is an index range, however many jobs are kept.
#[utoipa::path(
    get,
    path = "/admin/overview",
    operation_id = "overview",
    tag = "admin",
    responses(
        (status = 200, description = "The cluster now", body = Overview),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn overview(State(state): State<AppState>) -> Result<Json<Overview>> {
    let backlog = db::jobs::backlog(&state.db, None).await?;
    let workers = db::workers::overview(&state.db).await?;
    let jobs = db::jobs::list(&state.db, None, OVERVIEW_JOBS).await?;
    let models = db::models::overview(&state.db).await?;
    let mut aliases = Vec::new();
    for alias in db::models::catalogue(&state.db).await?.aliases {
        let stats = db::models::arm_stats(&state.db, &alias.name, ARM_STATS_WINDOW_SECS).await?;
        aliases.push(AliasOverview {
            name: alias.name,
            arms: alias.arms,
            stats,
        });
    }
    Ok(Json(Overview {
        queued: backlog.queued,
        running: backlog.running,
        oldest_queued_secs: backlog.oldest_queued_secs,
        intake_paused: db::control::intake_paused(&state.db).await?,
        generated_tokens: workers.iter().map(|w| w.generated_tokens).sum(),
        workers,
        jobs,
        models,
        aliases,
    }))
}
