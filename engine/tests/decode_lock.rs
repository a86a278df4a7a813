//! The host-wide decode lock: engines sharing one lock file all finish (none deadlocks or starves),
//! and an engine does not decode while another holder has the lock: together, the turns.

use std::{fs::File, time::Duration};

use crate::common::{engine_with, generate, params, test_config};
use futures::future::join_all;
use genq_engine::EngineConfig;

#[tokio::test]
async fn two_engines_sharing_a_lock_file_both_finish_without_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    // A folder that does not exist yet: the engine creates it.
    let lock = dir.path().join("locks").join("decode.lock");
    let config = EngineConfig {
        slots: 2,
        decode_lock: Some(lock.clone()),
        ..test_config()
    };
    let (a, b) = (engine_with(config.clone()), engine_with(config));
    let requests = (0..6u32).map(|i| {
        let engine = if i % 2 == 0 { &a } else { &b };
        generate(engine, &format!("Request {i}"), params(16, i))
    });
    let results = tokio::time::timeout(Duration::from_secs(60), join_all(requests))
        .await
        .expect("engines sharing a lock must not deadlock");
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result.unwrap().completion_tokens, 16, "request {i}");
    }
    assert!(lock.exists());
}

#[tokio::test]
async fn an_engine_waits_while_the_lock_is_held_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("decode.lock");
    let holder = File::create(&lock).unwrap();
    holder.lock().unwrap();
    let engine = engine_with(EngineConfig {
        slots: 1,
        decode_lock: Some(lock),
        ..test_config()
    });

    let mut pending = Box::pin(generate(&engine, "Waiting", params(8, 1)));
    // Polled for 300 ms; the future survives the timeout, so the request stays queued.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut pending).await;
    assert!(
        early.is_err(),
        "finished while the lock was held: {early:?}"
    );
    assert_eq!(engine.generated_tokens(), 0);

    holder.unlock().unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the engine goes on once the lock is free")
        .unwrap();
    assert_eq!(done.completion_tokens, 8);
}
