//! The inference engine: one llama.cpp context on a dedicated thread, running a single decode loop
//! over up to `slots` sequences. A request takes a free slot as soon as one exists, its prompt is
//! fed in chunks alongside the sequences already generating, and a finished sequence frees its
//! slot (and KV cells) at once, so requests from different jobs share every decode step.
//!
//! Callers hand in prompts already tokenized ([`Model::prompt_tokens`]) so that tokenizing never
//! holds up the decode loop. Stop strings are searched only in each token's new bytes (plus the
//! overlap a stop string can straddle), so a long output costs no more per token than a short one.
//!
//! The engine thread can end abnormally: a panic in the decode loop is caught and logged, every
//! request then ends with [`GenerationError::EngineStopped`], and [`Engine::stopped`] tells the
//! owner why, so a worker can stop taking jobs instead of failing them one by one.
//!
//! Several worker processes on one machine can share a [`EngineConfig::decode_lock`] file so their
//! decode steps take turns on the cores instead of oversubscribing them.

use std::{
    any::Any,
    num::NonZeroU32,
    panic::{self, AssertUnwindSafe},
    path::PathBuf,
    sync::{Arc, atomic::Ordering, mpsc},
    thread,
};

use anyhow::{Context as _, anyhow};
use genq_model::context_per_slot;
use llama_cpp_2::{context::params::LlamaContextParams, token::LlamaToken};
use tokio::sync::{oneshot, watch};

use crate::{
    decode_loop::{Counters, DecodeLoop, LoopConfig, Request},
    model::{CONTEXT_CREATION, Model, backend},
    request::{Generation, GenerationError, GenerationParams, TextSink},
};

/// Sequences decoded together by default. On CPU, throughput grows with the batch until about 16
/// sequences per core (measured on 2 cores: 87 tok/s alone, 338 at 32) and then flattens while
/// each sequence slows; GPUs keep gaining well past that.
pub fn default_slots() -> u32 {
    if cfg!(feature = "cuda") {
        return 64;
    }
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    (16 * cores).clamp(16, 64)
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences decoded together.
    pub slots: u32,
    pub threads: i32,
    /// Context (prompt + generated tokens) each sequence may use; see [`context_per_slot`].
    pub context_per_slot: Option<u32>,
    /// Most tokens in one decode step: prompt chunks fill what running sequences leave free.
    pub batch_tokens: u32,
    /// A file every engine on the host locks (exclusively) while it decodes and samples a step, so
    /// workers sharing the cores take turns: llama.cpp's threads wait on each other, and three
    /// processes each using every core ran at 0.24x the throughput of one. Created if missing;
    /// if it cannot be opened the engine logs a warning and decodes without it.
    pub decode_lock: Option<PathBuf>,
    /// Fault injection, for tests and the fault-injection suite only (the `fault-injection`
    /// feature, which release builds leave off): the decode loop panics once the engine has
    /// sampled this many tokens in total.
    #[cfg(feature = "fault-injection")]
    pub panic_after_tokens: Option<u64>,
    /// A prompt that begins as a running sequence's prompt does (a few-shot template, a shared
    /// system prompt) copies that sequence's KV cache for the common part instead of decoding it
    /// again, when the common part is at least [`MIN_SHARED_PREFIX`](crate::MIN_SHARED_PREFIX)
    /// tokens.
    pub share_prefixes: bool,
    /// llama.cpp settings, chosen by measurement (docs/performance.md, "Engine settings").
    pub tuning: Tuning,
}

/// llama.cpp context settings, chosen by measurement (docs/performance.md, "Engine settings"). Any of them
/// may change the floating-point results, so a seeded result is reproducible only under the same
/// settings; with `kv_unified` it is not reproducible at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// One KV cache shared by every sequence, instead of one per sequence: each sequence then
    /// attends over cells laid out by the whole batch, so its seeded results depend on the batch
    /// around it (`engine/tests/prefix.rs`). Off by default.
    pub kv_unified: bool,
    /// `None` lets llama.cpp decide.
    pub flash_attention: Option<bool>,
    /// Most tokens computed at once inside a decode step.
    pub ubatch_tokens: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            kv_unified: false,
            flash_attention: None,
            ubatch_tokens: 512,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        EngineConfig {
            slots: default_slots(),
            threads: cores as i32,
            context_per_slot: None,
            batch_tokens: 512,
            decode_lock: None,
            #[cfg(feature = "fault-injection")]
            panic_after_tokens: None,
            share_prefixes: true,
            tuning: Tuning::default(),
        }
    }
}

/// A handle to the engine thread. Dropping it lets the thread finish the requests it holds and exit.
pub struct Engine {
    requests: mpsc::Sender<Request>,
    thread: Option<thread::JoinHandle<()>>,
    model: Arc<Model>,
    context_per_slot: u32,
    slots: u32,
    counters: Arc<Counters>,
    /// Becomes `Some(reason)` when the engine thread ends abnormally.
    stopped: watch::Receiver<Option<String>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.model)
            .field("slots", &self.slots)
            .finish()
    }
}

impl Engine {
    /// Starts the engine thread and waits until its llama.cpp context exists.
    pub fn start(model: Arc<Model>, config: EngineConfig) -> anyhow::Result<Engine> {
        let slots = config.slots.clamp(1, 256);
        let context_per_slot = context_per_slot(model.context_length(), config.context_per_slot);
        let batch_tokens = config.batch_tokens.max(slots);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(slots * context_per_slot))
            .with_n_seq_max(slots)
            .with_n_batch(batch_tokens)
            .with_n_ubatch(batch_tokens.min(config.tuning.ubatch_tokens.max(1)))
            .with_n_threads(config.threads)
            .with_n_threads_batch(config.threads)
            .with_kv_unified(config.tuning.kv_unified)
            .with_flash_attention_policy(match config.tuning.flash_attention {
                None => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
                Some(true) => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
                Some(false) => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
            });
        let (requests, inbox) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stopped_tx, stopped) = watch::channel(None);
        let counters = Arc::new(Counters::default());
        let thread_model = Arc::clone(&model);
        let thread_counters = Arc::clone(&counters);
        let thread = thread::Builder::new()
            .name("genq-engine".into())
            .spawn(move || {
                let mut stop_signal = StopSignal {
                    sender: stopped_tx,
                    reason: None,
                };
                let context = {
                    let _serialised = CONTEXT_CREATION.lock().unwrap_or_else(|e| e.into_inner());
                    thread_model.inner.new_context(backend(), params)
                };
                let context = match context {
                    Ok(context) => context,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!(e)));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                // The loop owns the inbox and every request it has taken: unwinding drops them
                // all, so each waiting caller gets EngineStopped and later sends fail at once.
                // Nothing the loop touched is used after a panic, hence AssertUnwindSafe.
                let ran = panic::catch_unwind(AssertUnwindSafe(|| {
                    DecodeLoop::new(
                        &thread_model,
                        context,
                        LoopConfig {
                            slots,
                            context_per_slot,
                            batch_tokens,
                            counters: thread_counters,
                            pack_slots: !config.tuning.kv_unified,
                            #[cfg(feature = "fault-injection")]
                            panic_after_tokens: config.panic_after_tokens,
                            decode_lock: config.decode_lock.as_deref(),
                            share_prefixes: config.share_prefixes,
                        },
                    )
                    .run(inbox);
                }));
                if let Err(payload) = ran {
                    let reason = format!(
                        "the decode loop panicked: {}",
                        panic_message(payload.as_ref())
                    );
                    tracing::error!(%reason, "the inference engine has stopped");
                    stop_signal.reason = Some(reason);
                }
            })
            .context("spawning the engine thread")?;
        ready_rx
            .recv()
            .context("the engine thread died while creating its context")?
            .with_context(|| {
                format!(
                    "creating a llama.cpp context for {slots} slots x {context_per_slot} tokens"
                )
            })?;
        Ok(Engine {
            requests,
            thread: Some(thread),
            model,
            context_per_slot,
            slots,
            counters,
            stopped,
        })
    }

    /// Queues one prompt, tokenized with [`Model::prompt_tokens`] (an empty one is conditioned on
    /// the end-of-text token, as there). The request is handed in when this is called, not when
    /// the future is first polled; dropping the future cancels the sequence at its next step.
    pub fn generate(
        &self,
        prompt: Vec<LlamaToken>,
        params: GenerationParams,
    ) -> impl Future<Output = Result<Generation, GenerationError>> + Send + 'static + use<> {
        self.generate_streaming(prompt, params, None)
    }

    /// [`Engine::generate`], handing the output to `on_text` as it is decoded.
    pub fn generate_streaming(
        &self,
        prompt: Vec<LlamaToken>,
        params: GenerationParams,
        on_text: Option<TextSink>,
    ) -> impl Future<Output = Result<Generation, GenerationError>> + Send + 'static + use<> {
        let (reply, answer) = oneshot::channel();
        let sent = self.admissible(prompt, &params).and_then(|prompt| {
            self.requests
                .send(Request {
                    prompt,
                    params,
                    reply,
                    on_text,
                })
                .map_err(|_| GenerationError::EngineStopped)
        });
        async move {
            sent?;
            // The engine drops the reply sender only when it dies with the request in hand.
            answer.await.unwrap_or(Err(GenerationError::EngineStopped))
        }
    }

    /// Refuses, before it is queued, a prompt that cannot be decoded: one that leaves no room for
    /// max_tokens, or a token outside the vocabulary (llama.cpp would fail the whole batch for it,
    /// ending every other sequence in it).
    fn admissible(
        &self,
        mut prompt: Vec<LlamaToken>,
        params: &GenerationParams,
    ) -> Result<Vec<LlamaToken>, GenerationError> {
        let vocab = self.model.inner.vocab();
        if prompt.is_empty() {
            // Without a token there are no logits to sample from and the slot would never free.
            prompt.push(vocab.bos());
        }
        let n_vocab = self.model.inner.n_vocab();
        if let Some(bad) = prompt.iter().find(|t| !(0..n_vocab).contains(&t.0)) {
            return Err(GenerationError::Decode(format!(
                "prompt token {} is outside the vocabulary of {n_vocab} tokens",
                bad.0
            )));
        }
        if prompt.len() + params.max_tokens as usize > self.context_per_slot as usize {
            return Err(GenerationError::PromptTooLong {
                prompt_tokens: prompt.len(),
                max_tokens: params.max_tokens,
                context: self.context_per_slot,
            });
        }
        Ok(prompt)
    }

    /// Resolves with the reason once the engine thread has ended abnormally (its decode loop
    /// panicked); from then on every request ends with [`GenerationError::EngineStopped`]. After a
    /// normal shutdown it never resolves.
    pub fn stopped(&self) -> impl Future<Output = String> + Send + 'static + use<> {
        let mut stopped = self.stopped.clone();
        async move {
            // `ok()` and the clone end the borrow of the value here, which keeps the future Send.
            let reason = stopped
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|reason| reason.clone());
            match reason {
                Some(reason) => reason,
                // The thread exited without a reason: a normal shutdown.
                None => std::future::pending().await,
            }
        }
    }

    /// Whether the engine thread has ended abnormally; see [`Engine::stopped`].
    pub fn is_stopped(&self) -> bool {
        self.stopped.borrow().is_some()
    }

    /// What the engine has done and holds now, readable from any thread while it runs.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            counters: Arc::clone(&self.counters),
            stopped: self.stopped.clone(),
            slots: self.slots,
        }
    }

    /// Tokens this engine has sampled in total, end-of-text tokens included.
    pub fn generated_tokens(&self) -> u64 {
        self.stats().generated_tokens()
    }

    /// Prompt tokens this engine has decoded in total; see [`EngineStats::prompt_tokens_decoded`].
    pub fn prompt_tokens_decoded(&self) -> u64 {
        self.stats().prompt_tokens_decoded()
    }

    /// See [`EngineStats::sequences_moved`].
    pub fn sequences_moved(&self) -> u64 {
        self.stats().sequences_moved()
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn context_per_slot(&self) -> u32 {
        self.context_per_slot
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Bytes the KV cache takes: every slot's context, in f16.
    pub fn kv_cache_bytes(&self) -> u64 {
        u64::from(self.slots) * u64::from(self.context_per_slot) * self.model.kv_bytes_per_token()
    }

    /// Finishes every request already handed in, then stops the thread. Blocks: call it from a
    /// blocking context.
    pub fn shutdown(mut self) {
        let thread = self.thread.take();
        drop(self);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// A read-only view of a running engine's figures, for metrics; it outlives neither the figures
/// nor the engine's stop reason, which it shares.
#[derive(Debug, Clone)]
pub struct EngineStats {
    counters: Arc<Counters>,
    stopped: watch::Receiver<Option<String>>,
    slots: u32,
}

impl EngineStats {
    /// Tokens sampled in total, end-of-text tokens included.
    pub fn generated_tokens(&self) -> u64 {
        self.counters.generated.load(Ordering::Relaxed)
    }

    /// Prompt tokens decoded in total: a shared prefix copied from another sequence is not
    /// decoded again.
    pub fn prompt_tokens_decoded(&self) -> u64 {
        self.counters.prompt_decoded.load(Ordering::Relaxed)
    }

    /// Sequences moved to a lower slot to fill a hole among the running ones: with a KV cache
    /// per sequence, llama.cpp decodes each run of consecutive slots in a pass of its own.
    pub fn sequences_moved(&self) -> u64 {
        self.counters.moved.load(Ordering::Relaxed)
    }

    /// Slots holding a sequence, as of the last decode step.
    pub fn slots_busy(&self) -> u64 {
        self.counters.busy.load(Ordering::Relaxed)
    }

    /// Prompts handed in and waiting for a slot, as of the last decode step.
    pub fn requests_waiting(&self) -> u64 {
        self.counters.waiting.load(Ordering::Relaxed)
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Whether the engine thread has ended abnormally; see [`Engine::stopped`].
    pub fn is_stopped(&self) -> bool {
        self.stopped.borrow().is_some()
    }
}

/// Set on the engine thread and dropped when it ends, so an abnormal end is published even when
/// the thread unwinds past the decode loop's `catch_unwind`.
struct StopSignal {
    sender: watch::Sender<Option<String>>,
    reason: Option<String>,
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        let reason = self.reason.take().or_else(|| {
            thread::panicking().then(|| "the inference engine thread panicked".to_owned())
        });
        if let Some(reason) = reason {
            self.sender.send_replace(Some(reason));
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
