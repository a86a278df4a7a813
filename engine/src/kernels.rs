//! Which kernels llama.cpp's CPU backend runs for decode-step attention and for Q8_0 matrix
//! products. genq compiles its own into llama.cpp (`engine/ggml/`, docs/performance.md, "Engine settings");
//! ggml's stay in the binary for every case genq's do not handle and for comparison.

/// A kernel choice. Process-wide: llama.cpp's operators have no per-context hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Kernel {
    /// genq's (`engine/ggml/`).
    #[default]
    Genq,
    /// ggml's own, as llama.cpp ships it.
    LlamaCpp,
}

#[cfg(not(feature = "upstream-kernels"))]
mod hook {
    unsafe extern "C" {
        /// Defined in `engine/ggml/flash_attn_decode.cpp`, compiled into llama.cpp's CPU backend.
        pub fn genq_set_upstream_attention(upstream: bool);
        /// Defined in `engine/ggml/q8_0_matmul.cpp`, likewise.
        pub fn genq_set_upstream_matmul(upstream: bool);
        /// Likewise; false where the build lacks AVX2, FMA or F16C.
        pub fn genq_kernels_compiled() -> bool;
    }
}

/// The `upstream-kernels` build: llama.cpp as it ships, without genq's files.
#[cfg(feature = "upstream-kernels")]
#[allow(clippy::missing_safety_doc)]
mod hook {
    pub unsafe fn genq_set_upstream_attention(_upstream: bool) {}
    pub unsafe fn genq_set_upstream_matmul(_upstream: bool) {}
    pub unsafe fn genq_kernels_compiled() -> bool {
        false
    }
}

/// Whether genq's kernels are in this build. They need AVX2, FMA and F16C; without them (other
/// CPU architectures, or the `upstream-kernels` feature) ggml's run whatever
/// [`use_attention_kernel`] and [`use_matmul_kernel`] say.
pub fn genq_kernels_available() -> bool {
    // SAFETY: the function only returns a constant.
    unsafe { hook::genq_kernels_compiled() }
}

/// Selects the decode attention kernel for every engine in this process. Call it while nothing
/// decodes (at start-up): llama.cpp's threads each read the choice as an operator starts, and a
/// change in between would split one operator's rows between the two kernels.
pub fn use_attention_kernel(kernel: Kernel) {
    // SAFETY: the function only stores an atomic flag.
    unsafe { hook::genq_set_upstream_attention(kernel == Kernel::LlamaCpp) }
}

/// Selects the Q8_0 matrix kernel for every engine in this process, under the same rule as
/// [`use_attention_kernel`].
pub fn use_matmul_kernel(kernel: Kernel) {
    // SAFETY: the function only stores an atomic flag.
    unsafe { hook::genq_set_upstream_matmul(kernel == Kernel::LlamaCpp) }
}

/// llama.cpp's account of its build, one line: the CPU backend's instruction sets (`AVX2 = 1`,
/// `AVX512_VNNI = 1`, ...), llamafile, OpenMP.
pub fn llama_system_info() -> &'static str {
    // llama.cpp rebuilds one static string on every call: two threads asking at once would race.
    static INFO: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INFO.get_or_init(|| {
        // SAFETY: llama.cpp returns a NUL-terminated string it owns, copied here at once; the
        // OnceLock makes this the only call.
        let info = unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) };
        info.to_string_lossy().trim().to_owned()
    })
}
