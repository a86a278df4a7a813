//! The engine on a synthesized tiny GPT-2: real llama.cpp, no mocks.

mod common;

use common::{engine, params, tiny_model};
use genq_engine::{FinishReason, GenerationError, GenerationParams, Model, synth};

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
    let first = engine
        .generate("Hello, my name is".into(), params(12, 7))
        .await
        .unwrap();
    let again = engine
        .generate("Hello, my name is".into(), params(12, 7))
        .await
        .unwrap();
    let other_seed = engine
        .generate("Hello, my name is".into(), params(12, 8))
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
    let free = engine
        .generate("The weather today".into(), params(24, 3))
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
    let stopped = engine
        .generate(
            "The weather today".into(),
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
    let err = engine.generate(long, params(10, 1)).await.unwrap_err();
    assert!(
        matches!(err, GenerationError::PromptTooLong { context: 256, .. }),
        "{err:?}"
    );
}

#[test]
fn a_vocabulary_only_load_knows_the_context_and_tokens() {
    let full = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    synth::write_model(&path, synth::Shape::Tiny, 1).unwrap();
    let vocab = Model::load_vocabulary(&path).unwrap();
    assert_eq!(vocab.context_length(), full.context_length());
    assert_eq!(vocab.count_prompt_tokens("Hello, my name is"), 5);
}
