//! Tests of genq's own attention and matrix kernels against ggml's. Which kernel llama.cpp runs is a
//! process-wide setting, so they have this binary to themselves (another test decoding meanwhile
//! would run whichever kernel is set) and take [`KERNEL_SETTINGS`] in turn. The `upstream-kernels`
//! build has no genq kernels, and this binary no tests.
#![cfg(not(feature = "upstream-kernels"))]

use std::sync::{Mutex, MutexGuard, PoisonError};

#[path = "../common/mod.rs"]
mod common;

mod attention;
mod matmul;
mod matmul_exact;

static KERNEL_SETTINGS: Mutex<()> = Mutex::new(());

/// Held while a test switches kernels and decodes; a test that failed holding it leaves the
/// settings as they were set, which the next one sets again anyway.
fn kernel_settings() -> MutexGuard<'static, ()> {
    KERNEL_SETTINGS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}
