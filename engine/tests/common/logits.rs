//! Logits straight from a llama.cpp context on the tiny model, for tests that compare kernels or
//! batch layouts bit for bit, below the engine and its sampling.

use std::num::NonZeroU32;

use genq_engine::{Model, Placement, model::backend};
use genq_model::synth;
use llama_cpp_2::{
    context::params::LlamaContextParams, llama_batch::LlamaBatch, token::LlamaToken,
};

/// A synthesized model on the CPU: a cuda build would otherwise run the layers on the GPU,
/// through none of the CPU kernels these tests are about.
pub fn cpu_model(shape: synth::Shape) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    synth::write_model(&path, shape, 1).unwrap();
    let placement = Placement {
        n_gpu_layers: Some(0),
    };
    let model = Model::load(&path, placement).unwrap();
    (dir, model)
}

/// The tiny model (heads 16 wide) on the CPU.
pub fn tiny_cpu_model() -> (tempfile::TempDir, Model) {
    cpu_model(synth::Shape::Tiny)
}

#[derive(Clone, Copy, PartialEq)]
pub enum Together {
    /// Every sequence in each step.
    Yes,
    /// One sequence after another in the same context, each in steps of its own: with a KV cache
    /// per sequence (not `with_kv_unified`), exactly as if alone.
    No,
}

/// Most tokens in one call to decode: every prompt of a test at once.
const BATCH_TOKENS: usize = 1024;

/// A context for `sequences` sequences of up to 128 positions, each with a KV cache of its own;
/// tests change what they compare (`with_kv_unified`, `with_flash_attention_policy`).
pub fn context_params(sequences: usize) -> LlamaContextParams {
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(sequences as u32 * 128))
        .with_n_seq_max(sequences as u32)
        .with_n_batch(BATCH_TOKENS as u32)
        .with_n_ubatch(BATCH_TOKENS as u32)
        .with_n_threads(2)
        .with_n_threads_batch(2)
}

/// Per sequence (one per prompt length), its logits after its prompt and after each of `steps`
/// fixed next tokens, in a context made with `params` (from [`context_params`]).
pub fn decode_logits(
    model: &Model,
    prompts: &[usize],
    steps: usize,
    together: Together,
    params: LlamaContextParams,
) -> Vec<Vec<Vec<f32>>> {
    let token = |seq: usize, i: usize| LlamaToken::new(((seq * 131 + i * 17) % 5000) as i32 + 100);
    let groups: Vec<Vec<usize>> = match together {
        Together::Yes => vec![(0..prompts.len()).collect()],
        Together::No => (0..prompts.len()).map(|seq| vec![seq]).collect(),
    };

    let mut logits = vec![Vec::new(); prompts.len()];
    let mut batch = LlamaBatch::new(BATCH_TOKENS, 1);
    // One context throughout: with a KV cache per sequence, the others' caches are never read.
    let mut context = model.llama().new_context(backend(), params).unwrap();
    for group in groups {
        batch.clear();
        for &seq in &group {
            for i in 0..prompts[seq] {
                let last = i + 1 == prompts[seq];
                batch
                    .add(token(seq, i), i as i32, &[seq as i32], last)
                    .unwrap();
            }
        }
        context.decode(&mut batch).unwrap();
        let mut rows: Vec<i32> = group
            .iter()
            .scan(0, |end, &seq| {
                *end += prompts[seq] as i32;
                Some(*end - 1)
            })
            .collect();
        for step in 0..=steps {
            for (&seq, &row) in group.iter().zip(&rows) {
                logits[seq].push(context.get_logits_ith(row).to_vec());
            }
            if step == steps {
                break;
            }
            batch.clear();
            for &seq in &group {
                let position = prompts[seq] + step;
                batch
                    .add(token(seq, position), position as i32, &[seq as i32], true)
                    .unwrap();
            }
            context.decode(&mut batch).unwrap();
            rows = (0..group.len() as i32).collect();
        }
    }
    logits
}

/// How many logits differ in their bits between two runs.
pub fn differing_logits(a: &[Vec<Vec<f32>>], b: &[Vec<Vec<f32>>]) -> usize {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter()
                .zip(y)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count()
        })
        .sum()
}
