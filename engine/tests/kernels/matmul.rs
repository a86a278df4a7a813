//! genq's Q8_0 matrix kernel (`engine/ggml/q8_0_matmul.cpp`) against itself alone and in a
//! batch, and against ggml's. The kernel choice is process-wide: it holds `kernel_settings()`.
//!
//! The kernel multiplies a batch of 12 rows or more with weights it repacks, and fewer rows with
//! the weights as stored; both must give every row exactly the same result, or a sequence's
//! seeded output would depend on what else is decoding.

use crate::common::logits::{
    Together, context_params, decode_logits, differing_logits, tiny_cpu_model,
};
use genq_engine::{Kernel, use_matmul_kernel};

/// Prompt lengths of the sequences, each with a KV cache of its own. 16 decoding together put 16
/// rows in every step's matrix products (the repacked path); alone, a step has one row (the
/// direct path). Prompts share passes only when together, so their rows cover both paths too.
const PROMPTS: [usize; 16] = [3, 5, 8, 11, 12, 13, 17, 20, 24, 29, 31, 33, 40, 47, 52, 60];
const STEPS: usize = 6;

#[test]
fn genq_matmul_kernel_gives_a_sequence_the_same_logits_alone_as_in_a_batch_and_stays_near_ggmls() {
    let _settings = crate::kernel_settings();
    let (_dir, model) = tiny_cpu_model();
    let logits = |together| {
        decode_logits(
            &model,
            &PROMPTS,
            STEPS,
            together,
            context_params(PROMPTS.len()),
        )
    };
    use_matmul_kernel(Kernel::Genq);
    let together = logits(Together::Yes);
    let alone = logits(Together::No);
    use_matmul_kernel(Kernel::LlamaCpp);
    let ggml = logits(Together::Yes);
    use_matmul_kernel(Kernel::default());

    assert_eq!(
        differing_logits(&together, &alone),
        0,
        "logits differ between decoding in a batch of {} and alone",
        PROMPTS.len()
    );
    let (worst, scale) = difference(&together, &ggml);
    // Both kernels multiply the same quantized values exactly and round the sums differently:
    // the gap stays at rounding level (seen: 8e-8 of the largest logit), far below what a wrong
    // row, block or scale gives (a scale off by 1e-4 moved logits by 1e-2).
    assert!(
        worst <= 1e-5 * scale,
        "genq's kernel is off ggml's by {worst}, with logits up to {scale}"
    );
    // Identical logits would mean one kernel ran both times.
    assert!(worst > 0.0, "the two kernels gave bit-identical logits");
}

/// The largest absolute difference between two runs' logits, and the largest logit.
fn difference(a: &[Vec<Vec<f32>>], b: &[Vec<Vec<f32>>]) -> (f32, f32) {
    let a: Vec<f32> = a.iter().flatten().flatten().copied().collect();
    let b: Vec<f32> = b.iter().flatten().flatten().copied().collect();
    assert_eq!(a.len(), b.len());
    assert!(a.iter().chain(&b).all(|x| x.is_finite()));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    (worst, a.iter().map(|x| x.abs()).fold(0.0, f32::max))
}
