//! Shared by the engine's test files: the tiny synthesized model and engines on it.
// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

pub mod logits;

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use genq_engine::{
    Engine, EngineConfig, Generation, GenerationError, GenerationParams, Model, Placement,
};
use genq_model::synth;

pub fn tiny_model() -> Arc<Model> {
    static MODEL: OnceLock<(tempfile::TempDir, Arc<Model>)> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path: PathBuf = dir.path().join("tiny.gguf");
            synth::write_model(&path, synth::Shape::Tiny, 1).unwrap();
            let model = Arc::new(Model::load(&path, Placement::default()).unwrap());
            (dir, model)
        })
        .1
        .clone()
}

pub fn params(max_tokens: u32, seed: u32) -> GenerationParams {
    GenerationParams {
        max_tokens,
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        seed,
        stop: vec![],
    }
}

pub fn engine(slots: u32) -> Engine {
    engine_with(EngineConfig {
        slots,
        ..test_config()
    })
}

/// The configuration [`engine`] uses, to build variants of it.
pub fn test_config() -> EngineConfig {
    EngineConfig {
        // One thread: a test binary runs several engines, and llama.cpp's worker threads
        // contending for the cores made two tests in a row take 8 s instead of 1.2 s.
        threads: 1,
        ..EngineConfig::default()
    }
}

pub fn engine_with(config: EngineConfig) -> Engine {
    Engine::start(tiny_model(), config).unwrap()
}

/// Tokenizes `prompt` as callers do and hands it to the engine. Not async: the request is queued
/// now, which tests that depend on the order requests arrive in rely on.
pub fn generate(
    engine: &Engine,
    prompt: &str,
    params: GenerationParams,
) -> impl Future<Output = Result<Generation, GenerationError>> + Send + 'static + use<> {
    engine.generate(engine.model().prompt_tokens(prompt), params)
}
