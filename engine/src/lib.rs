//! genq's use of llama.cpp: loading GGUF models and the continuous-batching inference engine. What
//! needs no llama.cpp (GGUF metadata, token counting, writing test models) is in `genq-model`.
//!
//! # Layout
//! - [`model`]: the process-wide backend, loading a model or only its vocabulary.
//! - [`engine`]: the handle to the decode loop's thread; async callers hand it tokenized prompts
//!   ([`Model::prompt_tokens`], on their own thread) and can watch for it dying
//!   ([`Engine::stopped`]).
//! - `decode_loop`: the loop itself: admission, prompt chunks, prefix sharing, slot compaction,
//!   stop strings.
//! - `request`: what a caller hands the engine for one prompt and gets back ([`GenerationParams`],
//!   [`Generation`]), shared by the handle, the loop and the sampler.
//! - `sampler`: choosing each next token, with llama.cpp's samplers on a shortlist of logits.
//! - [`kernels`]: which attention and Q8_0 matrix kernels llama.cpp's CPU backend runs: genq's
//!   (`engine/ggml/`) or ggml's.

mod decode_loop;
pub mod engine;
pub mod kernels;
pub mod model;
mod request;
mod sampler;

pub use decode_loop::MIN_SHARED_PREFIX;
pub use engine::{Engine, EngineConfig, EngineStats, Tuning, default_slots};
pub use genq_model::{DEFAULT_CONTEXT_PER_SLOT, context_per_slot};
pub use kernels::{
    Kernel, genq_kernels_available, llama_system_info, use_attention_kernel, use_matmul_kernel,
};
pub use model::{Model, Placement};
pub use request::{FinishReason, Generation, GenerationError, GenerationParams, TextSink};

/// A token id of the loaded model's vocabulary, as [`Model::prompt_tokens`] returns and
/// [`Engine::generate`] takes.
pub use llama_cpp_2::token::LlamaToken as Token;
