//! genq-harness: runs genq's real binaries for the benchmark (`genq-bench`) and the
//! fault-injection suite (`genq-chaos`). A throwaway database and a fresh Redis namespace, then the
//! API and N workers as child processes with one log file each, started, killed, restarted and
//! stopped as an orchestrator would; whatever it started is killed if the caller fails half-way.
//!
//! # Layout
//! - [`database`]: throwaway databases and fresh queue names.
//! - [`cluster`]: [`Cluster`], the API and its workers: start, wait until ready, kill and
//!   restart, stop; the API key it makes and clients that send it.
//! - [`balancer`]: a TCP balancer in front of API replicas.
//! - [`process`]: one child process: its environment and log, SIGTERM with a grace then SIGKILL
//!   (also the end-to-end tests' second API).
//! - [`client`]: HTTP requests as users' clients make them (with the cluster's key).
//! - [`relay`]: a TCP forwarder that turns a link slow, silent or broken.

pub mod balancer;
pub mod client;
pub mod cluster;
pub mod database;
pub mod process;
pub mod relay;

use std::path::{Path, PathBuf};

pub use cluster::{Cluster, Config};
pub use database::{Database, fresh_queue};

/// Where `genq-api` and `genq-worker` are: next to the running binary, which cargo builds into
/// the same directory (`target/release`).
pub fn default_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}
