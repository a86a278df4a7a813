//! Prompts sharing a prefix: the common part is decoded once and its KV cache copied into the
//! other sequences, and every result stays identical to decoding the prompt alone.

mod common;

use common::{engine_with, generate, params, test_config};
use futures::future::join_all;
use genq_engine::{Engine, EngineConfig, Generation, GenerationParams, Tuning};

/// A few-shot template (well over the 16 tokens worth sharing) and twelve different endings.
fn requests() -> Vec<(String, GenerationParams)> {
    let template = "Q: What colour is the sky? A: Blue. Q: What colour is grass? A: Green. \
                    Q: What colour is snow? A: White. Q: What colour is coal? A: Black. Q:";
    (0..12u32)
        .map(|i| {
            let ending = format!(" What colour is thing number {i}? A:");
            (format!("{template}{ending}"), params(12 + i % 5, 40 + i))
        })
        .collect()
}

fn engine(slots: u32, share_prefixes: bool, kv_unified: bool) -> Engine {
    engine_with(EngineConfig {
        slots,
        share_prefixes,
        tuning: Tuning {
            kv_unified,
            ..Tuning::default()
        },
        ..test_config()
    })
}

async fn together(engine: &Engine, requests: &[(String, GenerationParams)]) -> Vec<Generation> {
    join_all(
        requests
            .iter()
            .map(|(prompt, params)| generate(engine, prompt, params.clone())),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect()
}

async fn alone(requests: &[(String, GenerationParams)]) -> (Vec<Generation>, u64) {
    let engine = engine(1, false, false);
    let mut out = Vec::new();
    for (prompt, params) in requests {
        out.push(generate(&engine, prompt, params.clone()).await.unwrap());
    }
    (out, engine.prompt_tokens_decoded())
}

#[tokio::test]
async fn a_shared_prefix_is_decoded_once_and_results_match_decoding_alone() {
    let requests = requests();
    let (expected, decoded_alone) = alone(&requests).await;

    // Not with kv_unified: a sequence then attends over cells laid out by the whole batch, and
    // its seeded results already differ from decoding it alone, shared prefix or not.
    for kv_unified in [false] {
        let shared = engine(4, true, kv_unified);
        let got = together(&shared, &requests).await;

        for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(
                got, expected,
                "request {i} differs (kv_unified {kv_unified})"
            );
        }
        // 12 prompts in 4 slots: the template is decoded about once per wave of 4, not 12 times.
        let decoded = shared.prompt_tokens_decoded();
        assert!(
            decoded * 2 < decoded_alone,
            "decoded {decoded} prompt tokens with sharing, {decoded_alone} without (kv_unified {kv_unified})"
        );
    }
}

#[tokio::test]
async fn without_sharing_every_prompt_is_decoded_whole() {
    let requests = requests();
    let (expected, decoded_alone) = alone(&requests).await;

    let unshared = engine(4, false, false);
    let got = together(&unshared, &requests).await;

    assert_eq!(got, expected);
    assert_eq!(unshared.prompt_tokens_decoded(), decoded_alone);
}

#[tokio::test]
async fn borrowers_of_a_cancelled_source_decode_their_prompts_themselves() {
    let requests = requests();
    let (expected, _) = alone(&requests[1..4]).await;
    // Eight tokens a step: the source needs several steps to decode the shared prefix. The test
    // holds the engine's decode lock, so the engine stops before its first decode until let go.
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("decode.lock");
    let held = std::fs::File::create(&lock_path).unwrap();
    held.lock().unwrap();
    let shared = engine_with(EngineConfig {
        slots: 4,
        batch_tokens: 8,
        share_prefixes: true,
        decode_lock: Some(lock_path),
        ..test_config()
    });

    // Queued now, in this order: the others borrow from the first, which goes away once it has
    // put its first tokens in a step (and long before it has decoded the prefix).
    let source = generate(&shared, &requests[0].0, requests[0].1.clone());
    let borrowers: Vec<_> = requests[1..4]
        .iter()
        .map(|(prompt, params)| generate(&shared, prompt, params.clone()))
        .collect();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while shared.prompt_tokens_decoded() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the source's first tokens go into a step");
    drop(source);
    held.unlock().unwrap();
    let got: Vec<Generation> = join_all(borrowers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert_eq!(got, expected);
    // Each borrower decoded its whole prompt itself (sharing would have decoded ~10 tokens each).
    let own_prompts: usize = requests[1..4]
        .iter()
        .map(|(prompt, _)| shared.model().prompt_tokens(prompt).len())
        .sum();
    assert!(
        shared.prompt_tokens_decoded() >= own_prompts as u64,
        "decoded {} prompt tokens, the borrowers' prompts alone are {own_prompts}",
        shared.prompt_tokens_decoded()
    );
}

/// Why the engine keeps a KV cache per sequence: with one unified cache, seeded results depend on
/// the batch around them. Should llama.cpp ever make them identical, kv_unified may be
/// reconsidered by measurement (README, "Engine settings").
#[tokio::test]
async fn a_unified_kv_cache_makes_results_depend_on_the_batch() {
    let requests = requests();
    let (expected, _) = alone(&requests).await;

    let unified = engine(4, false, true);
    let got = together(&unified, &requests).await;

    assert_ne!(got, expected);
}
