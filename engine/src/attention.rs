//! Which attention kernel llama.cpp's CPU backend runs on decode steps. genq compiles its own
//! into llama.cpp (`engine/ggml/`, README "Engine settings"); ggml's stays in the binary for
//! every case genq's does not handle and for comparison.

/// The kernel for decode steps. Process-wide: llama.cpp's operators have no per-context hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttentionKernel {
    /// genq's (`engine/ggml/flash_attn_decode.cpp`).
    #[default]
    Genq,
    /// ggml's own, as llama.cpp ships it.
    LlamaCpp,
}

unsafe extern "C" {
    /// Defined in `engine/ggml/flash_attn_decode.cpp`, compiled into llama.cpp's CPU backend.
    fn genq_set_upstream_attention(upstream: bool);
}

/// Selects the kernel for every engine in this process. Call it while nothing decodes (at
/// start-up): llama.cpp's threads each read the choice as an operator starts, and a change in
/// between would split one operator's rows between the two kernels.
pub fn use_attention_kernel(kernel: AttentionKernel) {
    // SAFETY: the function only stores an atomic flag.
    unsafe { genq_set_upstream_attention(kernel == AttentionKernel::LlamaCpp) }
}
