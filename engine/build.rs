//! llama-cpp-sys-2 rebuilds llama.cpp when a GGML_* variable changes, not when genq's kernel
//! under ggml/ does, so `.cargo/config.toml` sets GGML_GENQ_OVERRIDES to a digest of those files.
//! This stops a build whose digest is stale (or missing: cargo run from outside the workspace
//! reads no `.cargo/config.toml`, and llama.cpp would be built without the kernel).

use sha2::{Digest, Sha256};

const KERNEL_FILES: [&str; 2] = ["ggml/flash_attn_decode.cpp", "ggml/overrides.cmake"];

fn main() {
    println!("cargo:rerun-if-env-changed=GGML_GENQ_OVERRIDES");
    let mut digest = Sha256::new();
    for file in KERNEL_FILES {
        println!("cargo:rerun-if-changed={file}");
        digest.update(std::fs::read(file).unwrap_or_else(|e| panic!("reading {file}: {e}")));
    }
    let expected: String = digest.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let configured = std::env::var("GGML_GENQ_OVERRIDES").unwrap_or_default();
    assert!(
        configured == expected,
        "GGML_GENQ_OVERRIDES is {configured:?}, the digest of engine/ggml/ is {expected:?}: set \
         `GGML_GENQ_OVERRIDES = \"{expected}\"` in .cargo/config.toml (and build from inside the \
         workspace) so that llama.cpp is rebuilt with genq's kernel as it is now"
    );
}
