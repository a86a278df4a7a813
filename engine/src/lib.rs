//! genq's use of llama.cpp: loading GGUF models, the continuous-batching inference engine, and the
//! synthesizer of GPT-2-shaped test models.
//!
//! # Layout
//! - [`model`]: the process-wide backend, loading a model or only its vocabulary.
//! - [`engine`]: the handle to the decode loop's thread; async callers hand it tokenized prompts
//!   ([`Model::prompt_tokens`], on their own thread) and can watch for it dying
//!   ([`Engine::stopped`]).
//! - `decode_loop`: the loop itself: admission, prompt chunks, prefix sharing, slot compaction,
//!   stop strings.
//! - `sampler`: choosing each next token, with llama.cpp's samplers on a shortlist of logits.
//! - [`kernels`]: which attention and Q8_0 matrix kernels llama.cpp's CPU backend runs: genq's
//!   (`engine/ggml/`) or ggml's.
//! - [`synth`]: writes GPT-2-architecture GGUF files with the real tokenizer and random weights.
//! - [`gguf`]: the small GGUF writer `synth` uses.

mod decode_loop;
pub mod engine;
pub mod gguf;
pub mod kernels;
pub mod model;
mod sampler;
pub mod synth;

pub use engine::{
    DEFAULT_CONTEXT_PER_SLOT, Engine, EngineConfig, EngineStats, FinishReason, Generation,
    GenerationError, GenerationParams, MIN_SHARED_PREFIX, TextSink, Tuning, context_per_slot,
    default_slots,
};
pub use kernels::{Kernel, genq_kernels_available, use_attention_kernel, use_matmul_kernel};
pub use model::{Model, Placement};

/// A token id of the loaded model's vocabulary, as [`Model::prompt_tokens`] returns and
/// [`Engine::generate`] takes.
pub use llama_cpp_2::token::LlamaToken as Token;
