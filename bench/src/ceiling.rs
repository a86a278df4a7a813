//! The ceiling row: llama.cpp alone through llama-cpp-2, with no queue, HTTP or database. The
//! same model, context shape, sampler and requests as genq; sequences are kept decoding together
//! up to `slots` at a time, a finished one's place taken by the next arrived prompt. As in genq,
//! a step holds at most 512 tokens: running sequences' next tokens first, then newcomers' prompts
//! in chunks. There is no prefix reuse: every prompt is decoded whole.

use std::{
    collections::VecDeque,
    num::NonZeroU32,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use genq_engine::{Kernel, Model, model::backend, use_attention_kernel, use_matmul_kernel};
use llama_cpp_2::{
    context::params::LlamaContextParams, llama_batch::LlamaBatch, sampling::LlamaSampler,
    token::LlamaToken,
};

use crate::{measure::Run, workload::Request};

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub slots: u32,
    pub context_per_slot: u32,
    pub threads: i32,
}

struct Sequence {
    request: usize,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already in the batch or the KV cache.
    fed: usize,
    next: Option<LlamaToken>,
    position: i32,
    generated: u32,
    max_tokens: u32,
    sampler: LlamaSampler,
    /// Where in this step's batch its logits are, if it gets any this step.
    logits_at: Option<i32>,
}

/// Which kernels llama.cpp's CPU backend runs (`genq_engine::kernels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    pub attention: Kernel,
    pub matmul: Kernel,
}

impl Kernels {
    /// llama.cpp as it ships: the ceiling row's, while genq rows run genq's kernels
    /// (docs/performance.md, "Engine settings").
    pub const SHIPPED: Kernels = Kernels {
        attention: Kernel::LlamaCpp,
        matmul: Kernel::LlamaCpp,
    };
}

/// Selects kernels while it lives, genq's defaults again after.
struct SelectedKernels;

impl SelectedKernels {
    fn select(kernels: Kernels) -> SelectedKernels {
        use_attention_kernel(kernels.attention);
        use_matmul_kernel(kernels.matmul);
        SelectedKernels
    }
}

impl Drop for SelectedKernels {
    fn drop(&mut self) {
        use_attention_kernel(Kernel::default());
        use_matmul_kernel(Kernel::default());
    }
}

pub fn run(
    model: &Model,
    requests: &[Request],
    shape: &Shape,
    kernels: Kernels,
) -> anyhow::Result<Run> {
    const BATCH_TOKENS: u32 = 512;
    let _kernels = SelectedKernels::select(kernels);
    let llama = model.llama();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(shape.slots * shape.context_per_slot))
        .with_n_seq_max(shape.slots)
        .with_n_batch(BATCH_TOKENS)
        .with_n_ubatch(BATCH_TOKENS)
        .with_n_threads(shape.threads)
        .with_n_threads_batch(shape.threads);
    let mut context = llama
        .new_context(backend(), params)
        .context("creating the context")?;
    let mut batch = LlamaBatch::new(BATCH_TOKENS as usize, 1);
    let vocab = llama.vocab();

    // Every prompt of every request, in arrival order.
    let mut arriving: VecDeque<(usize, &String)> = requests
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.prompts.iter().map(move |p| (i, p)))
        .collect();
    let mut unfinished: Vec<usize> = requests.iter().map(|r| r.prompts.len()).collect();
    let mut finishes = vec![Duration::ZERO; requests.len()];
    let mut slots: Vec<Option<Sequence>> = (0..shape.slots).map(|_| None).collect();
    let mut tokens = 0u64;
    let start = Instant::now();

    while !arriving.is_empty() || slots.iter().any(Option::is_some) {
        for (seq_id, slot) in slots.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Some(&(request, prompt)) = arriving.front() else {
                break;
            };
            if requests[request].arrival() > start.elapsed() {
                break;
            }
            arriving.pop_front();
            let _ = context.clear_kv_cache_seq(Some(seq_id as u32), None, None);
            let r = &requests[request];
            *slot = Some(Sequence {
                request,
                prompt: model.prompt_tokens(prompt),
                fed: 0,
                next: None,
                position: 0,
                generated: 0,
                max_tokens: r.max_tokens,
                sampler: LlamaSampler::chain_simple([
                    LlamaSampler::top_k(40),
                    LlamaSampler::top_p(0.95, 1),
                    LlamaSampler::temp(0.8),
                    LlamaSampler::dist(r.seed),
                ]),
                logits_at: None,
            });
        }
        if slots.iter().all(Option::is_none) {
            // Nothing running: wait for the next arrival, as a server would.
            if let Some(&(request, _)) = arriving.front() {
                thread::sleep(requests[request].arrival().saturating_sub(start.elapsed()));
            }
            continue;
        }

        batch.clear();
        // Running sequences first, one token each: they are never held back by newcomers.
        for (seq_id, sequence) in slots.iter_mut().enumerate() {
            let Some(sequence) = sequence else { continue };
            sequence.logits_at = None;
            if let Some(token) = sequence.next.take() {
                batch.add(token, sequence.position, &[seq_id as i32], true)?;
                sequence.position += 1;
                sequence.logits_at = Some(batch.n_tokens() - 1);
            }
        }
        // Then prompts, in chunks, as far as the step has room; logits at a prompt's end only.
        for (seq_id, sequence) in slots.iter_mut().enumerate() {
            let Some(sequence) = sequence else { continue };
            let room = BATCH_TOKENS as usize - batch.n_tokens() as usize;
            let chunk = (sequence.prompt.len() - sequence.fed).min(room);
            if chunk == 0 {
                continue;
            }
            for i in sequence.fed..sequence.fed + chunk {
                let last = i + 1 == sequence.prompt.len();
                batch.add(
                    sequence.prompt[i],
                    sequence.position,
                    &[seq_id as i32],
                    last,
                )?;
                sequence.position += 1;
                if last {
                    sequence.logits_at = Some(batch.n_tokens() - 1);
                }
            }
            sequence.fed += chunk;
        }
        context
            .decode(&mut batch)
            .map_err(|e| anyhow!("decode: {e}"))?;

        for slot in slots.iter_mut() {
            let Some(sequence) = slot else { continue };
            let Some(logits_at) = sequence.logits_at else {
                continue;
            };
            let token = sequence.sampler.sample(&context, logits_at);
            let done = vocab.is_eog(token) || {
                sequence.generated += 1;
                tokens += 1;
                // Detokenized as genq does, so both pay for it.
                let _ = vocab.token_to_piece(token, false, None);
                sequence.generated >= sequence.max_tokens
            };
            if done {
                let request = sequence.request;
                unfinished[request] -= 1;
                if unfinished[request] == 0 {
                    finishes[request] = start.elapsed();
                }
                *slot = None;
            } else {
                sequence.next = Some(token);
            }
        }
    }
    Ok(Run::from_finishes(tokens, requests, &finishes))
}
