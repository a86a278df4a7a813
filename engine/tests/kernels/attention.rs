//! genq's decode attention kernel (`engine/ggml/`) against ggml's, on the same decode steps. The
//! kernel choice is process-wide, so it holds `kernel_settings()` (see main.rs).
//!
//! f16 rounding makes any two attention kernels disagree a little, and this 2-layer random model
//! amplifies it, so the yardstick is ggml's other attention path (the plain matrix products,
//! flash attention off): genq's kernel must land no further from it than ggml's flash attention
//! does. On the tiny model (heads 16 wide) and on GPT-2's widths (12 heads of 64).

use crate::common::logits::{Together, context_params, cpu_model, decode_logits};
use genq_engine::{Kernel, Model, use_attention_kernel};
use genq_model::synth;

/// Prompt lengths, four sequences with a KV cache each: llama.cpp decodes their prompts in
/// separate passes of one sequence each, all under 64 tokens (genq's kernel), then every step
/// holds one token of each.
const PROMPTS: [usize; 4] = [3, 17, 40, 60];
const STEPS: usize = 12;

#[test]
fn genq_attention_kernel_is_no_further_from_ggmls_plain_attention_than_ggmls_own_kernel() {
    no_further_than_ggmls_kernel(synth::Shape::Tiny);
}

#[test]
fn genq_attention_kernel_is_no_further_from_ggmls_plain_attention_on_gpt2_widths() {
    no_further_than_ggmls_kernel(synth::Shape::Gpt2Widths);
}

fn no_further_than_ggmls_kernel(shape: synth::Shape) {
    let _settings = crate::kernel_settings();
    let (_dir, model) = cpu_model(shape);
    let genq = logits_with(&model, Kernel::Genq, FlashAttention::On);
    let ggml = logits_with(&model, Kernel::LlamaCpp, FlashAttention::On);
    let ggml_plain = logits_with(&model, Kernel::LlamaCpp, FlashAttention::Off);
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

/// Every sequence's logits after its prompt and after each of STEPS fixed next tokens, the four
/// sequences decoding together with a KV cache each, under `kernel`.
fn logits_with(model: &Model, kernel: Kernel, flash_attention: FlashAttention) -> Vec<Vec<f32>> {
    use_attention_kernel(kernel);
    let params = context_params(PROMPTS.len()).with_flash_attention_policy(match flash_attention {
        FlashAttention::On => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        FlashAttention::Off => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
    });
    decode_logits(model, &PROMPTS, STEPS, Together::Yes, params)
        .into_iter()
        .flatten()
        .collect()
}
