//! The engine's tests, in one binary (one link of llama.cpp instead of one per file): a module
//! per area, sharing the tiny synthesized model (`common`). The kernel tests, which switch
//! process-wide settings, have a binary of their own (`kernels/`).

mod batching;
mod common;
mod decode_lock;
mod engine;
mod faults;
mod prefix;
mod tokenizer;
