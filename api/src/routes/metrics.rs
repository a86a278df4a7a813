//! Prometheus metrics: `GET /metrics` (open, like `/health`), and the middleware that counts and
//! times every request by route. Names and help texts are in `genq_shared::metrics`.

use std::time::{Duration, Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use genq_shared::{
    db,
    metrics::{self as genq_metrics, names},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

/// A scrape answers even when PostgreSQL does not: the cluster gauges then keep their last value.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus metrics
///
/// This process's counters and histograms in Prometheus's text format, with the cluster's
/// backlog and live workers read from PostgreSQL at each scrape.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    security(()),
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let read = async {
        let backlog = db::jobs::backlog(&state.db, None).await?;
        let workers = db::workers::live(&state.db).await?;
        let webhooks_owed = db::webhooks::owed_count(&state.db).await?;
        let by_model = db::jobs::backlog_by_model(&state.db).await?;
        Ok::<_, sqlx::Error>((backlog, workers, webhooks_owed, by_model))
    };
    match tokio::time::timeout(BACKLOG_TIMEOUT, read).await {
        Ok(Ok((backlog, workers, webhooks_owed, by_model))) => {
            for (model, queued, running) in by_model {
                let live = workers.iter().filter(|w| w.model == model).count();
                metrics::gauge!(names::MODEL_QUEUE_DEPTH, "model" => model.clone())
                    .set(queued as f64);
                metrics::gauge!(names::MODEL_JOBS_RUNNING, "model" => model.clone())
                    .set(running as f64);
                metrics::gauge!(names::MODEL_WORKERS_LIVE, "model" => model).set(live as f64);
            }
            metrics::gauge!(names::WEBHOOKS_OWED).set(webhooks_owed as f64);
            metrics::gauge!(names::QUEUE_DEPTH).set(backlog.queued as f64);
            metrics::gauge!(names::JOBS_RUNNING).set(backlog.running as f64);
            metrics::gauge!(names::QUEUE_OLDEST_AGE).set(backlog.oldest_queued_secs);
            metrics::gauge!(names::WORKERS_LIVE).set(workers.len() as f64);
            let slots: i64 = workers.iter().map(|w| i64::from(w.slots)).sum();
            metrics::gauge!(names::SLOTS_LIVE).set(slots as f64);
        }
        Ok(Err(e)) => {
            genq_metrics::postgres_error();
            tracing::warn!(error = %e, "metrics: reading the backlog failed");
        }
        Err(_) => {
            genq_metrics::postgres_error();
            tracing::warn!("metrics: reading the backlog timed out");
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        genq_metrics::render(),
    )
        .into_response()
}

/// Counts and times a request under its route's pattern (`/batch_result/{task_id}`), so that the
/// number of series stays bounded whatever paths clients send.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(names::HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A client may send any method name; only the standard ones become labels.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}
