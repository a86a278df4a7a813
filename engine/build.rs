//! llama-cpp-sys-2 rebuilds llama.cpp when a GGML_* variable changes, not when genq's kernels
//! under ggml/ do, so `.cargo/config.toml` sets GGML_GENQ_OVERRIDES to a digest of those files
//! (every file there, in name order).
//! This stops a build whose digest is stale (or missing: cargo run from outside the workspace
//! reads no `.cargo/config.toml`, and llama.cpp would be built without the kernels).

use sha2::{Digest, Sha256};

const KERNEL_DIR: &str = "ggml";

fn main() {
    println!("cargo:rerun-if-env-changed=GGML_GENQ_OVERRIDES");
    println!("cargo:rerun-if-changed={KERNEL_DIR}");
    let configured = std::env::var("GGML_GENQ_OVERRIDES").unwrap_or_default();
    let upstream_kernels = std::env::var_os("CARGO_FEATURE_UPSTREAM_KERNELS").is_some();
    if upstream_kernels || configured == "off" {
        // Both or neither: the Rust side declares genq's kernel functions only when llama.cpp
        // was built with them.
        assert!(
            upstream_kernels && configured == "off",
            "genq-engine's `upstream-kernels` feature and GGML_GENQ_OVERRIDES=off go together \
             (the feature is {}, GGML_GENQ_OVERRIDES is {configured:?}): a feature cannot change \
             how llama-cpp-sys-2 builds llama.cpp. Build with both, in a target directory of \
             their own so that llama.cpp is not rebuilt each way in turn: \
             `GGML_GENQ_OVERRIDES=off cargo build --release --features \
             genq-engine/upstream-kernels --target-dir target/upstream-kernels`",
            if upstream_kernels { "on" } else { "off" }
        );
        return;
    }
    // What `cat engine/ggml/*` reads: visible files (not an editor's swap files).
    let mut files: Vec<_> = std::fs::read_dir(KERNEL_DIR)
        .and_then(|entries| {
            entries
                .map(|entry| Ok(entry?.path()))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|e| panic!("listing {KERNEL_DIR}: {e}"))
        .into_iter()
        .filter(|path| {
            path.is_file() && !path.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect();
    files.sort();
    let mut digest = Sha256::new();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let bytes =
            std::fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        digest.update(bytes);
    }
    let expected: String = digest.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert!(
        configured == expected,
        "GGML_GENQ_OVERRIDES is {configured:?}, the digest of engine/ggml/ is {expected:?}: set \
         `GGML_GENQ_OVERRIDES = \"{expected}\"` in .cargo/config.toml (and build from inside the \
         workspace) so that llama.cpp is rebuilt with genq's kernels as they are now"
    );
}
