//! Prompts sharing a prefix: the common part is decoded once and its KV cache copied into the
//! other sequences, and every result stays identical to decoding the prompt alone.

use crate::common::{engine_with, generate, params, test_config};
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
    // Eight tokens a step: the source needs several steps to decode the shared prefix. The
    // engine stops before its first decode until the test lets go of the lock.
    let (_dir, held, shared) = held_engine(4);

    // Queued now, in this order: the others borrow from the first, which goes away once it has
    // put its first tokens in a step (and long before it has decoded the prefix).
    let source = generate(&shared, &requests[0].0, requests[0].1.clone());
    let borrowers: Vec<_> = requests[1..4]
        .iter()
        .map(|(prompt, params)| generate(&shared, prompt, params.clone()))
        .collect();
    prompt_tokens_reach(&shared, 1).await;
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

#[tokio::test]
async fn a_source_moved_to_a_lower_slot_still_lends_its_prefix() {
    let requests = requests();
    let (expected, _) = alone(&requests[..2]).await;
    // The engine stops before each decode until the test lets go of the lock.
    let (_dir, held, shared) = held_engine(5);

    // A blocker fills the first step, so the rest are all waiting when the engine next admits
    // them: three fillers in slots 1 to 3, the source in 4, and its borrower in the blocker's
    // slot once the blocker is gone.
    let blocker = generate(&shared, "Hold on", params(50, 1));
    prompt_tokens_reach(&shared, 1).await;
    let fillers = [
        generate(&shared, "Hi", params(5, 2)),
        generate(&shared, "Yo", params(1, 3)),
        generate(&shared, "Hey", params(2, 4)),
    ];
    let source = generate(&shared, &requests[0].0, requests[0].1.clone());
    let borrower = generate(&shared, &requests[1].0, requests[1].1.clone());
    drop(blocker);
    held.unlock().unwrap();
    // At 8 tokens a step the source takes several steps over its prefix; meanwhile the fillers
    // end one by one (after 1, 2 and 5 tokens) and the source, the highest sequence, moves down
    // into their slots (4 to 2, then 2 to 1), its borrower following it.
    let (source, borrower, _) = tokio::join!(source, borrower, join_all(fillers));

    assert_eq!(vec![source.unwrap(), borrower.unwrap()], expected);
    assert!(
        shared.sequences_moved() >= 2,
        "{} sequences moved",
        shared.sequences_moved()
    );
    let whole_prompts: usize = ["Hold on", "Hi", "Yo", "Hey", &requests[0].0, &requests[1].0]
        .iter()
        .map(|prompt| shared.model().prompt_tokens(prompt).len())
        .sum();
    assert!(
        shared.prompt_tokens_decoded() < whole_prompts as u64 - 16,
        "decoded {} prompt tokens of {whole_prompts}: the borrower did not share the prefix",
        shared.prompt_tokens_decoded()
    );
}

/// An engine sharing prefixes, 8 tokens a step, whose decode lock the returned file holds: it
/// stops before each decode until that lets go. The directory holds the lock file.
fn held_engine(slots: u32) -> (tempfile::TempDir, std::fs::File, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("decode.lock");
    let held = std::fs::File::create(&lock_path).unwrap();
    held.lock().unwrap();
    let engine = engine_with(EngineConfig {
        slots,
        batch_tokens: 8,
        share_prefixes: true,
        decode_lock: Some(lock_path),
        ..test_config()
    });
    (dir, held, engine)
}

/// Waits until the engine has put `tokens` prompt tokens in its steps: a step is built before the
/// engine takes the decode lock, so one the test holds stops it right after.
async fn prompt_tokens_reach(engine: &Engine, tokens: u64) {
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while engine.prompt_tokens_decoded() < tokens {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the engine's next step never came");
}
