//! The engine on a synthesized tiny GPT-2: real llama.cpp, no mocks.

use crate::common::{engine, generate, params, tiny_model};
use genq_engine::{FinishReason, GenerationError, GenerationParams, Token};

#[test]
fn tokenizes_like_gpt2() {
    let model = tiny_model();
    let ids: Vec<i32> = model
        .prompt_tokens("Hello, my name is")
        .iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(ids, [15496, 11, 616, 1438, 318]);
    assert_eq!(model.context_length(), 256);
    assert_eq!(model.name(), "gpt2-tiny-synthetic");
}

#[tokio::test]
async fn generates_max_tokens_and_repeats_with_the_same_seed() {
    let engine = engine(4);
    let first = generate(&engine, "Hello, my name is", params(12, 7))
        .await
        .unwrap();
    let again = generate(&engine, "Hello, my name is", params(12, 7))
        .await
        .unwrap();
    let other_seed = generate(&engine, "Hello, my name is", params(12, 8))
        .await
        .unwrap();
    assert_eq!(first.completion_tokens, 12);
    assert_eq!(first.finish_reason, FinishReason::Length);
    assert!(!first.text.is_empty());
    assert_eq!(first, again);
    assert_ne!(first.text, other_seed.text);
}

#[tokio::test]
async fn stop_strings_end_generation_before_them() {
    let engine = engine(2);
    let free = generate(&engine, "The weather today", params(24, 3))
        .await
        .unwrap();
    // A stop string taken from the text itself: generation must end right before it.
    let stop: String = free
        .text
        .chars()
        .skip(free.text.chars().count() / 2)
        .take(3)
        .collect();
    let cut = free.text.find(&stop).unwrap();
    let stopped = generate(
        &engine,
        "The weather today",
        GenerationParams {
            stop: vec![stop.clone()],
            ..params(24, 3)
        },
    )
    .await
    .unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.text, free.text[..cut]);
}

#[tokio::test]
async fn refuses_prompts_that_do_not_fit_the_context() {
    let engine = engine(1);
    let long = "word ".repeat(300);
    let err = generate(&engine, &long, params(10, 1)).await.unwrap_err();
    assert!(
        matches!(err, GenerationError::PromptTooLong { context: 256, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_empty_token_list_is_conditioned_on_end_of_text_like_an_empty_prompt() {
    let engine = engine(1);
    let from_tokens = engine.generate(vec![], params(6, 2)).await.unwrap();
    let from_text = generate(&engine, "", params(6, 2)).await.unwrap();
    assert_eq!(from_tokens, from_text);
}

#[tokio::test]
async fn refuses_tokens_outside_the_vocabulary_before_queueing_them() {
    let engine = engine(1);
    let err = engine
        .generate(vec![Token(15496), Token(1_000_000)], params(4, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, GenerationError::Decode(_)), "{err:?}");
    assert_eq!(engine.generated_tokens(), 0);
}
