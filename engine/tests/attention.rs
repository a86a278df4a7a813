//! genq's decode attention kernel (`engine/ggml/`) against ggml's, on the same decode steps. The
//! only test in this file: the kernel choice is process-wide.
//!
//! f16 rounding makes any two attention kernels disagree a little, and this 2-layer random model
//! amplifies it, so the yardstick is ggml's other attention path (the plain matrix products,
//! flash attention off): genq's kernel must land no further from it than ggml's flash attention
//! does. The test model's heads are 16 wide; GPT-2's 64 are covered by the benchmark's check
//! that seeded results are identical alone and in a batch.

use std::num::NonZeroU32;

use genq_engine::{Kernel, Model, Placement, model::backend, synth, use_attention_kernel};
use llama_cpp_2::{
    context::params::LlamaContextParams, llama_batch::LlamaBatch, token::LlamaToken,
};

/// Prompt lengths, four sequences with a KV cache each: llama.cpp decodes their prompts in
/// separate passes of one sequence each, all under 64 tokens (genq's kernel), then every step
/// holds one token of each.
const PROMPTS: [usize; 4] = [3, 17, 40, 60];
const STEPS: usize = 12;

#[test]
fn genq_attention_kernel_is_no_further_from_ggmls_plain_attention_than_ggmls_own_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    synth::write_model(&path, synth::Shape::Tiny, 1).unwrap();
    // On the CPU: a cuda build would otherwise run attention on the GPU, neither kernel's.
    let model = Model::load(
        &path,
        Placement {
            n_gpu_layers: Some(0),
        },
    )
    .unwrap();
    let genq = decode_logits(&model, Kernel::Genq, FlashAttention::On);
    let ggml = decode_logits(&model, Kernel::LlamaCpp, FlashAttention::On);
    let ggml_plain = decode_logits(&model, Kernel::LlamaCpp, FlashAttention::Off);
    use_attention_kernel(Kernel::default());

    let (genq_worst, genq_mean) = differences(&genq, &ggml_plain);
    let (ggml_worst, ggml_mean) = differences(&ggml, &ggml_plain);
    assert!(
        genq_worst <= ggml_worst && genq_mean <= ggml_mean,
        "off ggml's plain path by {genq_worst} at most and {genq_mean} on average with genq's \
         kernel, by {ggml_worst} and {ggml_mean} with ggml's flash attention"
    );
    // Identical logits would mean one kernel ran both times.
    let (apart, _) = differences(&genq, &ggml);
    assert!(apart > 0.0, "the two kernels gave bit-identical logits");
}

/// The largest and the mean absolute difference between two runs' logits.
fn differences(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let gaps: Vec<f32> = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .collect();
    assert!(gaps.iter().all(|g| g.is_finite()));
    let worst = gaps.iter().copied().fold(0.0, f32::max);
    (worst, gaps.iter().sum::<f32>() / gaps.len() as f32)
}

#[derive(Clone, Copy, PartialEq)]
enum FlashAttention {
    On,
    Off,
}

/// Every sequence's logits after its prompt and after each of STEPS fixed next tokens, four
/// sequences decoding together with a KV cache each.
fn decode_logits(model: &Model, kernel: Kernel, flash_attention: FlashAttention) -> Vec<Vec<f32>> {
    use_attention_kernel(kernel);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(PROMPTS.len() as u32 * 128))
        .with_n_seq_max(PROMPTS.len() as u32)
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(2)
        .with_n_threads_batch(2)
        .with_flash_attention_policy(match flash_attention {
            FlashAttention::On => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttention::Off => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        });
    let mut context = model.llama().new_context(backend(), params).unwrap();
    let token = |seq: usize, i: usize| LlamaToken::new(((seq * 131 + i * 17) % 5000) as i32 + 100);

    let mut batch = LlamaBatch::new(512, 1);
    for (seq, &length) in PROMPTS.iter().enumerate() {
        for i in 0..length {
            batch
                .add(token(seq, i), i as i32, &[seq as i32], i + 1 == length)
                .unwrap();
        }
    }
    let mut logits = Vec::new();
    context.decode(&mut batch).unwrap();
    let mut logit_rows: Vec<i32> = PROMPTS
        .iter()
        .scan(0, |end, &l| {
            *end += l as i32;
            Some(*end - 1)
        })
        .collect();
    for step in 0..=STEPS {
        for &row in &logit_rows {
            logits.push(context.get_logits_ith(row).to_vec());
        }
        if step == STEPS {
            break;
        }
        batch.clear();
        for (seq, &length) in PROMPTS.iter().enumerate() {
            let position = length + step;
            batch
                .add(token(seq, position), position as i32, &[seq as i32], true)
                .unwrap();
        }
        context.decode(&mut batch).unwrap();
        logit_rows = (0..PROMPTS.len() as i32).collect();
    }
    logits
}
