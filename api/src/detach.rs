//! Requests run to their end even when their client goes away.
//!
//! hyper drops a request's future when its client disconnects. Dropped while `BEGIN` is in flight,
//! sqlx 0.8 (and 0.9.0) returns the PostgreSQL connection to the pool inside a transaction it does
//! not track (launchbadge/sqlx#4393, fixed upstream after 0.9.0): the next borrowers' statements
//! then run in it, uncommitted, holding their locks; a reconciler pass was seen waiting on one for
//! minutes. So every request runs on its own task, which a disconnect does not cancel; the answer
//! to a client gone is dropped. A long-poll whose client left waits out its own timeout.

use axum::{extract::Request, middleware::Next, response::Response};
use tracing::Instrument;

pub async fn run_to_completion(request: Request, next: Next) -> Response {
    match tokio::spawn(next.run(request).in_current_span()).await {
        Ok(response) => response,
        // Nothing aborts the task: it ended by a panic, which goes on up as before.
        Err(ended) => std::panic::resume_unwind(ended.into_panic()),
    }
}
