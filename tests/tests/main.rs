//! genq's end-to-end tests, in one binary: a module per area. Each test gets its own PostgreSQL
//! database, Redis namespace and API (`genq_tests::TestApp`), so they run side by side.
//!
//! One binary, not one per file: each test binary links the whole workspace, and linking 19 of
//! them was most of the suite's build time.

mod auth;
mod batch;
mod cache;
mod control;
mod docs;
mod errors;
mod fairness;
mod genqctl;
mod hygiene;
mod key_cache;
mod limits;
mod metrics;
mod model;
mod models;
mod openai;
mod ops;
mod outages;
mod replicas;
mod streaming;
mod ui;
mod webhooks;
mod workers;
