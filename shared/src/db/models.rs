//! The model catalogue (`models`, `model_aliases`): what jobs may ask for. See
//! [`crate::routing`] for how a request picks one.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, types::Json};

use crate::routing::{Alias, Arm, Catalogue, CatalogueModel};

/// Why a catalogue change is refused, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, CatalogueError>;

fn refused<T>(message: impl Into<String>) -> Result<T> {
    Err(CatalogueError::Refused(message.into()))
}

/// The catalogue as routing reads it.
pub async fn catalogue(pool: &PgPool) -> sqlx::Result<Catalogue> {
    let models: Vec<(String, bool, Option<String>, Option<i32>, bool)> = sqlx::query_as(
        r#"select name, is_default, fallback, fallback_after_secs, intake_paused
           from models order by name"#,
    )
    .fetch_all(pool)
    .await?;
    let aliases: Vec<(String, Json<Vec<Arm>>, Option<String>, Option<i32>)> = sqlx::query_as(
        r#"select name, arms, fallback, fallback_after_secs from model_aliases order by name"#,
    )
    .fetch_all(pool)
    .await?;
    Ok(Catalogue {
        models: models
            .into_iter()
            .map(
                |(name, is_default, fallback, fallback_after_secs, intake_paused)| CatalogueModel {
                    name,
                    is_default,
                    fallback,
                    fallback_after_secs,
                    intake_paused,
                },
            )
            .collect(),
        aliases: aliases
            .into_iter()
            .map(|(name, arms, fallback, fallback_after_secs)| Alias {
                name,
                arms: arms.0,
                fallback,
                fallback_after_secs,
            })
            .collect(),
    })
}

/// Every registered model's name.
pub async fn names(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(r#"select name from models order by name"#)
        .fetch_all(pool)
        .await
}

/// Registers a model a worker (or API replica) loaded, unless registered already; records the
/// file's version either way. The first model ever registered becomes the default.
pub async fn register_loaded(pool: &PgPool, name: &str, version: &str) -> sqlx::Result<()> {
    let register = |as_default: bool| {
        sqlx::query(
            r#"insert into models (name, version, is_default)
               values ($1, $2, $3 and not exists (select 1 from models where is_default))
               on conflict (name) do update set version = excluded.version"#,
        )
        .bind(name)
        .bind(version)
        .bind(as_default)
        .execute(pool)
    };
    match register(true).await {
        // Two first registrations at once both tried to be the default: this one lost, and
        // registers as an ordinary model.
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("models_one_default") => {
            register(false).await.map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// Of `models`, those registered, locked (`FOR KEY SHARE`) until the caller's transaction ends:
/// jobs recorded in it for them cannot outlive a concurrent `genqctl models remove`, which waits
/// for the transaction and then finds them.
pub async fn lock_for_jobs(
    tx: &mut sqlx::PgConnection,
    models: &[&str],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(r#"select name from models where name = any($1) for key share"#)
        .bind(models)
        .fetch_all(tx)
        .await
}

/// A model as `genqctl models add` registers it.
#[derive(Debug, Clone, Default)]
pub struct NewModel {
    pub name: String,
    pub fallback: Option<String>,
    pub fallback_after_secs: Option<i32>,
    pub make_default: bool,
}

/// Registers a model or changes its fallback; returns whether it is new.
pub async fn add(pool: &PgPool, new: &NewModel) -> Result<bool> {
    if let Some(problem) = crate::routing::check_name(&new.name) {
        return refused(problem);
    }
    let mut tx = pool.begin().await?;
    if alias_exists(&mut tx, &new.name).await? {
        return refused(format!("'{}' is an alias; pick another name", new.name));
    }
    if let Some(fallback) = &new.fallback {
        check_fallback(&mut tx, &new.name, fallback).await?;
    }
    let inserted: bool = sqlx::query_scalar(
        r#"insert into models (name, fallback, fallback_after_secs)
           values ($1, $2, $3)
           on conflict (name) do update set fallback = excluded.fallback,
               fallback_after_secs = excluded.fallback_after_secs
           returning xmax = 0"#,
    )
    .bind(&new.name)
    .bind(&new.fallback)
    .bind(new.fallback_after_secs)
    .fetch_one(&mut *tx)
    .await?;
    let has_default: bool =
        sqlx::query_scalar(r#"select exists (select 1 from models where is_default)"#)
            .fetch_one(&mut *tx)
            .await?;
    if new.make_default || !has_default {
        set_default_in(&mut tx, &new.name).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

async fn check_fallback(tx: &mut sqlx::PgConnection, name: &str, fallback: &str) -> Result<()> {
    if fallback == name {
        return refused(format!("{name} cannot be its own fallback"));
    }
    if !model_exists(tx, fallback).await? {
        return refused(format!(
            "the fallback model '{fallback}' is not registered (genqctl models add {fallback})"
        ));
    }
    Ok(())
}

async fn model_exists(tx: &mut sqlx::PgConnection, name: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(r#"select exists (select 1 from models where name = $1)"#)
        .bind(name)
        .fetch_one(tx)
        .await
}

async fn alias_exists(tx: &mut sqlx::PgConnection, name: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(r#"select exists (select 1 from model_aliases where name = $1)"#)
        .bind(name)
        .fetch_one(tx)
        .await
}

async fn set_default_in(tx: &mut sqlx::PgConnection, name: &str) -> Result<()> {
    sqlx::query(r#"update models set is_default = false where is_default and name <> $1"#)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let found = sqlx::query(r#"update models set is_default = true where name = $1"#)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if found == 0 {
        return refused(format!("the model '{name}' is not registered"));
    }
    Ok(())
}

/// Makes `name` the model of jobs that name none.
pub async fn set_default(pool: &PgPool, name: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    set_default_in(&mut tx, name).await?;
    tx.commit().await?;
    Ok(())
}

/// Pauses or resumes a model's intake; `false` for an unknown model.
pub async fn set_intake_paused(pool: &PgPool, name: &str, paused: bool) -> sqlx::Result<bool> {
    let found = sqlx::query(r#"update models set intake_paused = $2 where name = $1"#)
        .bind(name)
        .bind(paused)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(found == 1)
}

/// Removes a model. Refused while jobs wait for it or run on it (unless `force`, which cancels
/// the queued ones; returned), while an alias or another model points at it, or while it is the
/// default and others exist.
pub async fn remove(pool: &PgPool, name: &str, force: bool) -> Result<Vec<uuid::Uuid>> {
    let mut tx = pool.begin().await?;
    // Locks the row: a job routed to it meanwhile waits for this transaction.
    let is_default: Option<bool> =
        sqlx::query_scalar(r#"select is_default from models where name = $1 for update"#)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(is_default) = is_default else {
        return refused(format!("the model '{name}' is not registered"));
    };
    let others: i64 = sqlx::query_scalar(r#"select count(*) from models where name <> $1"#)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    if is_default && others > 0 {
        return refused(format!(
            "{name} is the default model; make another the default first (genqctl models default NAME)"
        ));
    }
    let users: Vec<String> = sqlx::query_scalar(
        r#"select 'alias ' || name from model_aliases
               where fallback = $1 or arms @> jsonb_build_array(jsonb_build_object('model', $1::text))
           union all
           select 'model ' || name from models where fallback = $1
           order by 1"#,
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    if !users.is_empty() {
        return refused(format!("{name} is used by {}", users.join(", ")));
    }
    let falling_back: i64 = sqlx::query_scalar(
        r#"select count(*) from jobs where status in ('queued', 'running') and fallback_model = $1
               and routed_model <> $1"#,
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    if falling_back > 0 {
        return refused(format!(
            "{falling_back} unfinished job(s) of other models would fall back to {name}; \
             remove it once they are done"
        ));
    }
    let (queued, running): (i64, i64) = sqlx::query_as(
        r#"select count(*) filter (where status = 'queued'), count(*) filter (where status = 'running')
           from jobs where routed_model = $1 and status in ('queued', 'running')"#,
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    if (queued > 0 || running > 0) && !force {
        return refused(format!(
            "{queued} job(s) wait for {name} and {running} run on it; \
             --force cancels the waiting ones (running ones finish)"
        ));
    }
    let cancelled: Vec<uuid::Uuid> = sqlx::query_scalar(
        r#"update jobs set status = 'cancelled', finished_at = now(), error_code = 'cancelled',
                  error_message = 'its model (' || $1 || ') was removed'
           where routed_model = $1 and status = 'queued'
           returning id"#,
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(r#"delete from models where name = $1"#)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(cancelled)
}

/// Creates or replaces an alias.
pub async fn set_alias(pool: &PgPool, alias: &Alias) -> Result<()> {
    if let Some(problem) = crate::routing::check_name(&alias.name) {
        return refused(problem);
    }
    if let Some(problem) = crate::routing::check_arms(&alias.arms) {
        return refused(problem);
    }
    let mut tx = pool.begin().await?;
    if model_exists(&mut tx, &alias.name).await? {
        return refused(format!(
            "'{}' is a model; an alias needs a name of its own",
            alias.name
        ));
    }
    for arm in &alias.arms {
        if !model_exists(&mut tx, &arm.model).await? {
            return refused(format!(
                "the model '{}' is not registered (genqctl models add {})",
                arm.model, arm.model
            ));
        }
    }
    if let Some(fallback) = &alias.fallback {
        check_fallback(&mut tx, &alias.name, fallback).await?;
    }
    sqlx::query(
        r#"insert into model_aliases (name, arms, fallback, fallback_after_secs) values ($1, $2, $3, $4)
           on conflict (name) do update set arms = excluded.arms, fallback = excluded.fallback,
               fallback_after_secs = excluded.fallback_after_secs, updated_at = now()"#,
    )
    .bind(&alias.name)
    .bind(Json(&alias.arms))
    .bind(&alias.fallback)
    .bind(alias.fallback_after_secs)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes an alias; `false` when there is none of that name.
pub async fn remove_alias(pool: &PgPool, name: &str) -> sqlx::Result<bool> {
    let found = sqlx::query(r#"delete from model_aliases where name = $1"#)
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(found == 1)
}

/// A model as `genqctl models list` and the API show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ModelOverview {
    pub name: String,
    /// SHA-256 of the GGUF its last registering worker loaded.
    pub version: Option<String>,
    pub is_default: bool,
    pub fallback: Option<String>,
    pub fallback_after_secs: Option<i32>,
    pub intake_paused: bool,
    pub live_workers: i64,
    pub queued: i64,
    pub running: i64,
    pub created_at: DateTime<Utc>,
}

pub async fn overview(pool: &PgPool) -> sqlx::Result<Vec<ModelOverview>> {
    sqlx::query_as(
        r#"select m.name, m.version, m.is_default, m.fallback, m.fallback_after_secs,
                  m.intake_paused, m.created_at,
                  (select count(*) from workers w where w.model = m.name and w.stopped_at is null
                       and w.last_seen > now() - make_interval(secs => $1)) as live_workers,
                  (select count(*) from jobs j where j.routed_model = m.name and j.status = 'queued') as queued,
                  (select count(*) from jobs j where j.routed_model = m.name and j.status = 'running') as running
           from models m order by m.name"#,
    )
    .bind(super::workers::LIVE_WITHIN_SECS)
    .fetch_all(pool)
    .await
}

/// One arm's figures over a window, for comparing an alias's arms.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ArmStats {
    pub model: String,
    pub jobs: i64,
    pub completed: i64,
    pub failed: i64,
    /// Failed of the finished jobs, 0 to 1.
    pub failure_rate: f64,
    /// Generated tokens per second of running time, over the arm's completed jobs.
    pub tokens_per_sec: f64,
    pub queue_wait_p50_secs: Option<f64>,
    pub latency_p50_secs: Option<f64>,
    pub latency_p95_secs: Option<f64>,
}

/// Figures per model that answered jobs which asked for `requested` (an alias or a model) in the
/// last `window_secs`.
pub async fn arm_stats(
    pool: &PgPool,
    requested: &str,
    window_secs: f64,
) -> sqlx::Result<Vec<ArmStats>> {
    sqlx::query_as(
        r#"with j as (
               select id, routed_model, status, created_at, started_at, finished_at
               from jobs where requested_model = $1
                 and created_at > now() - make_interval(secs => $2))
           select j.routed_model as model,
                  count(*) as jobs,
                  count(*) filter (where status = 'completed') as completed,
                  count(*) filter (where status = 'failed') as failed,
                  coalesce(count(*) filter (where status = 'failed')::float8
                      / nullif(count(*) filter (where status in ('completed', 'failed')), 0), 0)
                      as failure_rate,
                  coalesce((select sum(g.completion_tokens) from generations g
                            join j j2 on j2.id = g.job_id
                            where j2.routed_model = j.routed_model and j2.status = 'completed')::float8
                      / nullif(sum(extract(epoch from finished_at - started_at))
                            filter (where status = 'completed'), 0), 0) as tokens_per_sec,
                  percentile_cont(0.5) within group (order by extract(epoch from started_at - created_at))
                      filter (where started_at is not null) as queue_wait_p50_secs,
                  percentile_cont(0.5) within group (order by extract(epoch from finished_at - created_at))
                      filter (where status = 'completed') as latency_p50_secs,
                  percentile_cont(0.95) within group (order by extract(epoch from finished_at - created_at))
                      filter (where status = 'completed') as latency_p95_secs
           from j group by j.routed_model order by j.routed_model"#,
    )
    .bind(requested)
    .bind(window_secs)
    .fetch_all(pool)
    .await
}
