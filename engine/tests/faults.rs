//! A dead engine is observable: a panic in the decode loop (injected here) ends every request with
//! EngineStopped, `stopped()` says why, and later requests fail at once instead of hanging.

use std::time::Duration;

use crate::common::{engine_with, generate, params, test_config};
use futures::{FutureExt, future::join_all};
use genq_engine::{EngineConfig, GenerationError};

#[tokio::test]
async fn a_panicking_decode_loop_stops_every_request_and_says_why() {
    let engine = engine_with(EngineConfig {
        slots: 2,
        panic_after_tokens: Some(10),
        ..test_config()
    });
    assert!(!engine.is_stopped());
    let stopped = engine.stopped();

    // Two decode, two wait for a slot; none can finish before the 10th token.
    let requests = (0..4).map(|i| generate(&engine, &format!("Request {i}"), params(50, i)));
    let results = tokio::time::timeout(Duration::from_secs(60), join_all(requests))
        .await
        .expect("requests of a dead engine must end, not hang");
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result, Err(GenerationError::EngineStopped), "request {i}");
    }

    let reason = tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("stopped() resolves once the engine thread has died");
    assert!(reason.contains("fault injection"), "{reason}");
    assert!(engine.is_stopped());
    assert_eq!(engine.generated_tokens(), 10);

    let later = generate(&engine, "Too late", params(4, 1))
        .now_or_never()
        .expect("a dead engine answers at once");
    assert_eq!(later, Err(GenerationError::EngineStopped));
}
