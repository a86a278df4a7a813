//! Is a seeded result the same when the batch around it differs? Decodes seeded prompts alone,
//! then again among other sequences, through genq's engine on the benchmark's model, and counts
//! identical texts. llama.cpp may pick different kernels (and so rounding) for different batch
//! shapes; this measures whether it does here.

use std::sync::Arc;

use futures::future::join_all;
use genq_engine::{Engine, EngineConfig, GenerationParams, Model};

pub struct Outcome {
    pub identical: usize,
    pub total: usize,
    pub batch: u32,
}

pub fn measure(model: Arc<Model>, slots: u32) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let params = |seed: u32| GenerationParams {
        max_tokens: 32,
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        seed,
        stop: vec![],
    };
    let probes: Vec<(String, GenerationParams)> = (0..8)
        .map(|i| (format!("Probe {i}: once upon a time"), params(1000 + i)))
        .collect();
    let alone_engine = Engine::start(
        Arc::clone(&model),
        EngineConfig {
            slots: 1,
            ..EngineConfig::default()
        },
    )?;
    let alone: Vec<_> = runtime.block_on(async {
        let mut out = Vec::new();
        for (prompt, p) in &probes {
            out.push(
                alone_engine
                    .generate(model.prompt_tokens(prompt), p.clone())
                    .await,
            );
        }
        out
    });
    alone_engine.shutdown();

    let batched_engine = Engine::start(
        Arc::clone(&model),
        EngineConfig {
            slots,
            ..EngineConfig::default()
        },
    )?;
    let fillers = (0..slots.saturating_sub(probes.len() as u32)).map(|i| {
        (
            format!("Filler {i} with a longer prompt than the probes have"),
            params(i),
        )
    });
    let everything: Vec<_> = probes.iter().cloned().chain(fillers).collect();
    let together =
        runtime.block_on(join_all(everything.iter().map(|(prompt, p)| {
            batched_engine.generate(model.prompt_tokens(prompt), p.clone())
        })));
    batched_engine.shutdown();

    let identical = alone
        .iter()
        .zip(&together)
        .filter(|(a, b)| matches!((a, b), (Ok(a), Ok(b)) if a == b))
        .count();
    Ok(Outcome {
        identical,
        total: probes.len(),
        batch: everything.len() as u32,
    })
}
