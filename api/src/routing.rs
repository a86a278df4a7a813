//! Routing requests to models on this replica: the catalogue, read from PostgreSQL at most every
//! [`FRESH_FOR`] (so `genqctl models alias` takes effect on every replica within seconds), and
//! the dispatch of recorded jobs to their models' queues.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use genq_shared::{
    db, metrics as genq_metrics,
    queue::{self, Lane, Priority},
    routing::{Catalogue, Route, RouteError},
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, Result},
};

/// How long a catalogue read serves requests before the next request reads it again.
const FRESH_FOR: Duration = Duration::from_secs(2);

/// The catalogue as this replica last read it.
#[derive(Default)]
pub struct ModelRouter {
    cached: RwLock<Option<(Arc<Catalogue>, Instant)>>,
}

impl ModelRouter {
    /// The catalogue, read again when older than [`FRESH_FOR`] or when `fresh` asks for it.
    pub async fn catalogue(&self, db: &PgPool, fresh: bool) -> Result<Arc<Catalogue>> {
        if !fresh {
            let cached = self.cached.read().expect("catalogue lock").clone();
            if let Some((catalogue, read_at)) = cached
                && read_at.elapsed() < FRESH_FOR
            {
                return Ok(catalogue);
            }
        }
        let catalogue = Arc::new(db::models::catalogue(db).await?);
        *self.cached.write().expect("catalogue lock") = Some((catalogue.clone(), Instant::now()));
        Ok(catalogue)
    }

    /// Routes a request naming `asked` (none: the default model) for `user`. A name this
    /// replica does not know is looked up again before it is refused: a model registered a
    /// moment ago is taken at once.
    pub async fn route(
        &self,
        db: &PgPool,
        asked: Option<&str>,
        user: &str,
    ) -> std::result::Result<Route, RoutingRefusal> {
        let catalogue = self.catalogue(db, false).await?;
        match catalogue.route(asked, user) {
            Ok(route) => Ok(route),
            Err(_) => {
                let catalogue = self.catalogue(db, true).await?;
                Ok(catalogue.route(asked, user)?)
            }
        }
    }
}

/// Why a request was not routed: the catalogue refused it, or could not be read.
#[derive(Debug)]
pub enum RoutingRefusal {
    Refused(RouteError),
    Api(ApiError),
}

impl From<RouteError> for RoutingRefusal {
    fn from(e: RouteError) -> Self {
        RoutingRefusal::Refused(e)
    }
}

impl From<ApiError> for RoutingRefusal {
    fn from(e: ApiError) -> Self {
        RoutingRefusal::Api(e)
    }
}

impl From<RoutingRefusal> for ApiError {
    /// genq's own routes: an unknown model is a 422 naming `model`; none registered, a 503.
    fn from(refusal: RoutingRefusal) -> ApiError {
        match refusal {
            RoutingRefusal::Api(e) => e,
            RoutingRefusal::Refused(e @ RouteError::Unknown { .. }) => {
                ApiError::invalid("model", e.to_string())
            }
            RoutingRefusal::Refused(e) => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// Who an alias keeps on one arm: the request's `user` (OpenAI's field), else the caller's key,
/// else its tenant.
pub fn sticky_identity(user: Option<&str>, caller: &Caller) -> String {
    sticky(user, caller.key.as_ref().map(|k| k.id), &caller.tenant)
}

/// [`sticky_identity`] of a request made with the key `key_id` (none: auth off) of `tenant`.
pub fn sticky(user: Option<&str>, key_id: Option<Uuid>, tenant: &str) -> String {
    match (user, key_id) {
        (Some(user), _) => format!("user:{user}"),
        (None, Some(key)) => format!("key:{key}"),
        (None, None) => format!("tenant:{tenant}"),
    }
}

/// Routes a request for `caller` and refuses it if its model's intake is paused.
pub async fn route_request(
    state: &AppState,
    caller: &Caller,
    asked: Option<&str>,
    user: Option<&str>,
) -> std::result::Result<Route, RoutingRefusal> {
    let route = state
        .models
        .route(&state.db, asked, &sticky_identity(user, caller))
        .await?;
    if route.paused {
        return Err(RoutingRefusal::Api(ApiError::IntakePaused));
    }
    Ok(route)
}

/// Locks the routed models for the recording transaction (see `db::models::lock_for_jobs`);
/// a model removed since this replica read the catalogue is refused as unknown.
pub async fn lock_models(tx: &mut sqlx::PgConnection, models: &[&str]) -> Result<()> {
    let mut wanted: Vec<&str> = models.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let found = db::models::lock_for_jobs(tx, &wanted).await?;
    match wanted.iter().find(|m| !found.iter().any(|f| f == *m)) {
        None => Ok(()),
        Some(gone) => Err(ApiError::invalid(
            "model",
            format!("the model '{gone}' was removed; retry to be routed anew"),
        )),
    }
}

/// Dispatches recorded jobs of one tenant, each to its model's queue and lane. Jobs Redis did not
/// take are marked for the reconciler, which dispatches them once Redis answers: the jobs are
/// recorded, and PostgreSQL is the record.
pub async fn dispatch_recorded(
    state: &AppState,
    tenant: &str,
    jobs: impl IntoIterator<Item = (Uuid, String, Priority)>,
) {
    let mut groups: HashMap<(String, Priority), Vec<Uuid>> = HashMap::new();
    for (id, model, priority) in jobs {
        groups.entry((model, priority)).or_default().push(id);
    }
    let mut redis = state.redis.clone();
    for ((model, priority), ids) in groups {
        let ns = queue::model_queue(&state.queue_name, &model);
        let lane = Lane { tenant, priority };
        match queue::dispatch(&mut redis, &ns, &ids, lane).await {
            Ok(()) => tracing::info!(jobs = ids.len(), %model, "jobs queued"),
            Err(e) => {
                genq_metrics::redis_error();
                tracing::warn!(
                    error = format!("{e:#}"),
                    jobs = ids.len(),
                    "jobs recorded but not all dispatched; the reconciler will dispatch them"
                );
                if let Err(e) = db::jobs::mark_undispatched(&state.db, &ids).await {
                    // Still found, a little later: the reconciler checks every job dispatched
                    // since its last pass, GENQ_REDISPATCH_AFTER_SECS after its dispatch.
                    tracing::warn!(error = %e, "could not mark the jobs undispatched");
                }
            }
        }
    }
}
