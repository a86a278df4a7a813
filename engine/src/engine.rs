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
    collections::VecDeque,
    fs::{self, File, TryLockError},
    num::NonZeroU32,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use llama_cpp_2::{
    context::{LlamaContext, params::LlamaContextParams},
    llama_batch::LlamaBatch,
    sampling::LlamaSampler,
    token::LlamaToken,
};
use tokio::sync::{oneshot, watch};

use crate::model::{CONTEXT_CREATION, Model, backend};

/// How one prompt is sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: u32,
    /// 0 samples greedily.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    pub top_p: f32,
    pub seed: u32,
    /// Generation ends before the first of these appears; it is not part of the text.
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// max_tokens were generated.
    Length,
    /// A stop string or the end-of-text token.
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub completion_tokens: u32,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum GenerationError {
    #[error(
        "the prompt is {prompt_tokens} tokens; with max_tokens {max_tokens} it exceeds the context of {context} tokens"
    )]
    PromptTooLong {
        prompt_tokens: usize,
        max_tokens: u32,
        context: u32,
    },
    #[error("llama.cpp failed to decode: {0}")]
    Decode(String),
    #[error("the inference engine has stopped")]
    EngineStopped,
}

/// Longest wait for the decode lock; see `DecodeLoop::lock_decode`.
pub const DECODE_LOCK_PATIENCE: Duration = Duration::from_secs(30);

/// Context per sequence unless asked for more: room for a prompt and the API's default
/// max_tokens limit without reserving GPT-2's whole 1,024 positions in every slot.
pub const DEFAULT_CONTEXT_PER_SLOT: u32 = 512;

/// The context each sequence gets: what was asked for, else [`DEFAULT_CONTEXT_PER_SLOT`], and never
/// more than the model has positions for. The API uses it too, to refuse prompts up front.
pub fn context_per_slot(model_context: u32, asked: Option<u32>) -> u32 {
    asked
        .unwrap_or(DEFAULT_CONTEXT_PER_SLOT)
        .min(model_context)
        .max(1)
}

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
    /// Fault injection, for tests and the fault-injection suite only: the decode loop panics
    /// once the engine has sampled this many tokens in total.
    pub panic_after_tokens: Option<u64>,
    /// A prompt that begins as a running sequence's prompt does (a few-shot template, a shared
    /// system prompt) copies that sequence's KV cache for the common part instead of decoding it
    /// again, when the common part is at least [`MIN_SHARED_PREFIX`] tokens.
    pub share_prefixes: bool,
    /// llama.cpp settings, chosen by measurement (README, "Engine settings").
    pub tuning: Tuning,
}

/// llama.cpp context settings, chosen by measurement (README, "Engine settings"). Any of them
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

/// The shortest common prompt prefix worth copying rather than decoding.
pub const MIN_SHARED_PREFIX: usize = 16;

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        EngineConfig {
            slots: default_slots(),
            threads: cores as i32,
            context_per_slot: None,
            batch_tokens: 512,
            decode_lock: None,
            panic_after_tokens: None,
            share_prefixes: true,
            tuning: Tuning::default(),
        }
    }
}

/// Receives a sequence's output bytes as they are decoded, on the engine thread: it must not
/// block. Bytes that may turn out to begin a stop string are held back until they cannot, so what
/// it receives is always a prefix of the final text's bytes.
pub type TextSink = Box<dyn FnMut(&[u8]) + Send>;

struct Request {
    prompt: Vec<LlamaToken>,
    params: GenerationParams,
    reply: oneshot::Sender<Result<Generation, GenerationError>>,
    on_text: Option<TextSink>,
}

/// A handle to the engine thread. Dropping it lets the thread finish the requests it holds and exit.
pub struct Engine {
    requests: mpsc::Sender<Request>,
    thread: Option<thread::JoinHandle<()>>,
    model: Arc<Model>,
    context_per_slot: u32,
    slots: u32,
    generated: Arc<AtomicU64>,
    prompt_decoded: Arc<AtomicU64>,
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
        let generated = Arc::new(AtomicU64::new(0));
        let prompt_decoded = Arc::new(AtomicU64::new(0));
        let thread_model = Arc::clone(&model);
        let thread_generated = Arc::clone(&generated);
        let thread_prompt_decoded = Arc::clone(&prompt_decoded);
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
                            generated: thread_generated,
                            prompt_decoded: thread_prompt_decoded,
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
            generated,
            prompt_decoded,
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

    /// Tokens this engine has sampled in total, end-of-text tokens included.
    pub fn generated_tokens(&self) -> u64 {
        self.generated.load(Ordering::Relaxed)
    }

    /// Prompt tokens this engine has decoded in total: a shared prefix copied from another
    /// sequence is not decoded again.
    pub fn prompt_tokens_decoded(&self) -> u64 {
        self.prompt_decoded.load(Ordering::Relaxed)
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

struct Sequence {
    /// Tells this sequence from a later one in the same slot.
    serial: u64,
    request: Request,
    prompt: Vec<LlamaToken>,
    prompt_fed: usize,
    /// The prompt prefix this sequence will copy from another one's KV cache once that one has
    /// decoded it; it feeds nothing until then.
    borrow: Option<Borrow>,
    /// The token sampled last step, to be fed this step.
    pending: Option<LlamaToken>,
    position: i32,
    sampler: LlamaSampler,
    output: Vec<u8>,
    /// Output bytes handed to the request's text sink so far.
    streamed: usize,
    generated: u32,
    /// Where this sequence's logits are in the batch just decoded.
    logits_at: Option<i32>,
}

impl Sequence {
    fn in_prompt(&self) -> bool {
        self.prompt_fed < self.prompt.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct Borrow {
    slot: usize,
    serial: u64,
    tokens: usize,
}

struct LoopConfig<'a> {
    slots: u32,
    context_per_slot: u32,
    batch_tokens: u32,
    generated: Arc<AtomicU64>,
    prompt_decoded: Arc<AtomicU64>,
    panic_after_tokens: Option<u64>,
    decode_lock: Option<&'a Path>,
    share_prefixes: bool,
}

/// Decode steps between two timing logs.
const STEPS_PER_TIMING_LOG: u32 = 100;

/// Where the decode loop's time went since `since`.
struct StepTiming {
    since: Instant,
    steps: u32,
    tokens: u64,
    decode: Duration,
    sample: Duration,
}

impl Default for StepTiming {
    fn default() -> Self {
        StepTiming {
            since: Instant::now(),
            steps: 0,
            tokens: 0,
            decode: Duration::ZERO,
            sample: Duration::ZERO,
        }
    }
}

struct DecodeLoop<'m> {
    model: &'m Model,
    timing: StepTiming,
    context: LlamaContext<'m>,
    slots: Vec<Option<Sequence>>,
    waiting: VecDeque<Request>,
    batch: LlamaBatch<'static>,
    batch_tokens: usize,
    context_per_slot: u32,
    generated: Arc<AtomicU64>,
    prompt_decoded: Arc<AtomicU64>,
    panic_after_tokens: Option<u64>,
    decode_lock: Option<File>,
    share_prefixes: bool,
    next_serial: u64,
}

impl<'m> DecodeLoop<'m> {
    fn new(model: &'m Model, context: LlamaContext<'m>, config: LoopConfig<'_>) -> Self {
        DecodeLoop {
            model,
            timing: StepTiming::default(),
            context,
            slots: (0..config.slots).map(|_| None).collect(),
            waiting: VecDeque::new(),
            batch: LlamaBatch::new(config.batch_tokens as usize, 1),
            batch_tokens: config.batch_tokens as usize,
            context_per_slot: config.context_per_slot,
            generated: config.generated,
            prompt_decoded: config.prompt_decoded,
            panic_after_tokens: config.panic_after_tokens,
            decode_lock: config.decode_lock.and_then(open_decode_lock),
            share_prefixes: config.share_prefixes,
            next_serial: 0,
        }
    }

    fn run(mut self, inbox: mpsc::Receiver<Request>) {
        loop {
            let idle = self.waiting.is_empty() && self.slots.iter().all(Option::is_none);
            if idle {
                self.log_timing();
                match inbox.recv() {
                    Ok(request) => {
                        self.timing = StepTiming::default();
                        self.waiting.push_back(request);
                    }
                    Err(mpsc::RecvError) => return,
                }
            }
            self.waiting.extend(inbox.try_iter());
            self.admit();
            self.step();
        }
    }

    fn admit(&mut self) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                continue;
            }
            // A request whose caller has gone is dropped here rather than given the slot.
            let live = std::iter::from_fn(|| self.waiting.pop_front())
                .find(|request| !request.reply.is_closed());
            let Some(mut request) = live else {
                return;
            };
            // Engine::generate refused what does not fit, so positions stay within the slot.
            debug_assert!(
                request.prompt.len() + request.params.max_tokens as usize
                    <= self.context_per_slot as usize
            );
            let prompt = std::mem::take(&mut request.prompt);
            let sampler = sampler_for(&request.params);
            let borrow = if self.share_prefixes {
                self.prefix_source(&prompt)
            } else {
                None
            };
            self.next_serial += 1;
            self.slots[slot] = Some(Sequence {
                serial: self.next_serial,
                request,
                prompt,
                prompt_fed: 0,
                borrow,
                pending: None,
                position: 0,
                sampler,
                output: Vec::new(),
                streamed: 0,
                generated: 0,
                logits_at: None,
            });
        }
    }

    /// The running sequence whose prompt shares the longest prefix with `prompt`, if that is
    /// worth copying. At least the prompt's last token is always decoded: it gives the logits.
    fn prefix_source(&self, prompt: &[LlamaToken]) -> Option<Borrow> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, sequence)| {
                let source = sequence.as_ref().filter(|s| s.borrow.is_none())?;
                let common = source
                    .prompt
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count()
                    .min(prompt.len() - 1);
                Some(Borrow {
                    slot,
                    serial: source.serial,
                    tokens: common,
                })
            })
            .filter(|borrow| borrow.tokens >= MIN_SHARED_PREFIX)
            .max_by_key(|borrow| borrow.tokens)
    }

    /// Copies the KV cells of each borrowed prefix whose source has decoded it. A borrower whose
    /// source has gone (finished or cancelled before it got there) decodes its prompt itself.
    fn settle_borrows(&mut self) {
        for slot in 0..self.slots.len() {
            let Some(borrow) = self.slots[slot].as_ref().and_then(|s| s.borrow) else {
                continue;
            };
            let source_fed = self.slots[borrow.slot]
                .as_ref()
                .filter(|source| source.serial == borrow.serial)
                .map(|source| source.prompt_fed);
            match source_fed {
                Some(fed) if fed < borrow.tokens => continue,
                Some(_) => {
                    // Cross-stream copies (a KV cache per sequence) must copy the whole
                    // sequence, so copy it all and drop what lies past the prefix.
                    let copied = self
                        .context
                        .copy_kv_cache_seq(borrow.slot as i32, slot as i32, None, None)
                        .is_ok()
                        && self
                            .context
                            .clear_kv_cache_seq(Some(slot as u32), Some(borrow.tokens as u32), None)
                            .unwrap_or(false);
                    let sequence = self.slots[slot].as_mut().expect("checked above");
                    if copied {
                        sequence.prompt_fed = borrow.tokens;
                        sequence.position = borrow.tokens as i32;
                    } else {
                        // Decode it all instead, on a clean slate.
                        let _ = self
                            .context
                            .clear_kv_cache_seq(Some(slot as u32), None, None);
                    }
                }
                None => {}
            }
            self.slots[slot].as_mut().expect("checked above").borrow = None;
        }
    }

    fn step(&mut self) {
        self.batch.clear();
        for slot in 0..self.slots.len() {
            let cancelled = self.slots[slot]
                .as_ref()
                .is_some_and(|s| s.request.reply.is_closed());
            if cancelled {
                self.free(slot);
            }
        }
        self.settle_borrows();
        // Running sequences first, one token each, so newcomers' prompts never stall them.
        for (slot, sequence) in self.slots.iter_mut().enumerate() {
            let Some(sequence) = sequence else { continue };
            sequence.logits_at = None;
            if let Some(token) = sequence.pending.take() {
                // Capacity is at least `slots`, so one token per sequence always fits.
                self.batch
                    .add(token, sequence.position, &[slot as i32], true)
                    .expect("batch has room");
                sequence.position += 1;
                sequence.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
        for (slot, sequence) in self.slots.iter_mut().enumerate() {
            let Some(sequence) = sequence
                .as_mut()
                .filter(|s| s.in_prompt() && s.borrow.is_none())
            else {
                continue;
            };
            let room = self.batch_tokens - self.batch.n_tokens() as usize;
            let chunk = (sequence.prompt.len() - sequence.prompt_fed).min(room);
            self.prompt_decoded
                .fetch_add(chunk as u64, Ordering::Relaxed);
            for _ in 0..chunk {
                let token = sequence.prompt[sequence.prompt_fed];
                sequence.prompt_fed += 1;
                let last = !sequence.in_prompt();
                self.batch
                    .add(token, sequence.position, &[slot as i32], last)
                    .expect("bounded by room");
                sequence.position += 1;
                if last {
                    sequence.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        // Sampling is CPU work too: done outside the lock, it would stall the threads of
        // another worker's decode (measured: 3 workers reached 0.77x of one instead of 0.8x+).
        self.lock_decode();
        self.decode_and_sample();
        self.unlock_decode();
    }

    fn decode_and_sample(&mut self) {
        let started = Instant::now();
        let decoded = self.context.decode(&mut self.batch);
        self.timing.decode += started.elapsed();
        if let Err(e) = decoded {
            // The batch's sequences are in an unknown state: end them all, keep the engine going.
            let error = GenerationError::Decode(e.to_string());
            for slot in 0..self.slots.len() {
                if self.slots[slot].is_some() {
                    self.finish(slot, Err(error.clone()));
                }
            }
            return;
        }
        let sampling = Instant::now();
        for slot in 0..self.slots.len() {
            if let Some(outcome) = self.sample(slot) {
                self.finish(slot, outcome);
            }
        }
        self.timing.sample += sampling.elapsed();
        self.timing.steps += 1;
        self.timing.tokens += self.batch.n_tokens() as u64;
        if self.timing.steps == STEPS_PER_TIMING_LOG {
            self.log_timing();
        }
    }

    /// For profiling (RUST_LOG=genq_engine=debug): where the loop's time went since the last
    /// log, at most every [`STEPS_PER_TIMING_LOG`] steps and whenever the engine turns idle.
    fn log_timing(&mut self) {
        let timing = std::mem::take(&mut self.timing);
        if timing.steps == 0 {
            return;
        }
        let total = timing.since.elapsed();
        tracing::debug!(
            steps = timing.steps,
            tokens = timing.tokens,
            decode_ms = timing.decode.as_millis() as u64,
            sample_ms = timing.sample.as_millis() as u64,
            other_ms = total
                .saturating_sub(timing.decode + timing.sample)
                .as_millis() as u64,
            "engine step timing"
        );
    }

    /// Samples the next token of the sequence in `slot`, if it has logits this step, and says
    /// whether it is done.
    fn sample(&mut self, slot: usize) -> Option<Result<Generation, GenerationError>> {
        let sequence = self.slots[slot].as_mut()?;
        let index = sequence.logits_at?;
        let token = sequence.sampler.sample(&self.context, index);
        let sampled = self.generated.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(limit) = self.panic_after_tokens
            && sampled >= limit
        {
            panic!("fault injection: panicking after {limit} generated tokens");
        }
        let vocab = self.model.inner.vocab();
        let params = &sequence.request.params;
        if vocab.is_eog(token) {
            return Some(Ok(sequence.finish(FinishReason::Stop, None)));
        }
        sequence.generated += 1;
        let old_len = sequence.output.len();
        sequence
            .output
            .extend(vocab.token_to_piece(token, false, None));
        if let Some(cut) = find_stop(&sequence.output, old_len, &params.stop) {
            return Some(Ok(sequence.finish(FinishReason::Stop, Some(cut))));
        }
        if sequence.generated >= params.max_tokens {
            return Some(Ok(sequence.finish(FinishReason::Length, None)));
        }
        sequence.stream_text();
        sequence.pending = Some(token);
        None
    }

    fn finish(&mut self, slot: usize, outcome: Result<Generation, GenerationError>) {
        if let Some(sequence) = self.free(slot) {
            let _ = sequence.request.reply.send(outcome);
        }
    }

    /// Waits for this host's turn to decode, if a decode lock is configured. The wait is bounded:
    /// a holder that stopped (SIGSTOP) or hangs in llama.cpp must not stall every worker on the
    /// host, so after [`DECODE_LOCK_PATIENCE`] this engine decodes without the lock from then on.
    /// It polls rather than blocks, as a blocking `flock` cannot time out; the pause is short
    /// next to a decode step.
    fn lock_decode(&mut self) {
        let Some(file) = &self.decode_lock else {
            return;
        };
        let started = Instant::now();
        let mut pause = Duration::from_micros(20);
        let failure = loop {
            match file.try_lock() {
                Ok(()) => return,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => break e.to_string(),
            }
            if started.elapsed() >= DECODE_LOCK_PATIENCE {
                break format!("another worker held it for over {DECODE_LOCK_PATIENCE:?}");
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_micros(200));
        };
        // Decoding without the lock only costs throughput; stopping the engine would cost jobs.
        tracing::warn!(
            error = failure,
            "cannot take the decode lock; decoding without it from now on"
        );
        self.decode_lock = None;
    }

    fn unlock_decode(&mut self) {
        let Some(file) = &self.decode_lock else {
            return;
        };
        if let Err(e) = file.unlock() {
            // Closing the file releases the lock too, so the other engines are not shut out.
            tracing::warn!(
                error = %e,
                "cannot release the decode lock; decoding without it from now on"
            );
            self.decode_lock = None;
        }
    }

    fn free(&mut self, slot: usize) -> Option<Sequence> {
        let sequence = self.slots[slot].take()?;
        // Removing a whole sequence's cells cannot fail for an in-range id.
        let _ = self
            .context
            .clear_kv_cache_seq(Some(slot as u32), None, None);
        Some(sequence)
    }
}

impl Sequence {
    /// Hands the sink the output that can no longer be cut by a stop string.
    fn stream_text(&mut self) {
        let Some(sink) = self.request.on_text.as_mut() else {
            return;
        };
        let safe = self.output.len() - stop_prefix_len(&self.output, &self.request.params.stop);
        if safe > self.streamed {
            sink(&self.output[self.streamed..safe]);
            self.streamed = safe;
        }
    }

    /// `cut_at` is a byte offset into the output, where a stop string begins.
    fn finish(&mut self, reason: FinishReason, cut_at: Option<usize>) -> Generation {
        let end = cut_at.unwrap_or(self.output.len());
        Generation {
            text: String::from_utf8_lossy(&self.output[..end]).into_owned(),
            completion_tokens: self.generated,
            finish_reason: reason,
        }
    }
}

fn sampler_for(params: &GenerationParams) -> LlamaSampler {
    if params.temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    LlamaSampler::chain_simple([
        LlamaSampler::top_k(params.top_k),
        LlamaSampler::top_p(params.top_p, 1),
        LlamaSampler::temp(params.temperature),
        LlamaSampler::dist(params.seed),
    ])
}

/// Opens (creating it and its folders if needed) the host-wide decode lock file. A failure is
/// logged once and the engine runs without the lock.
fn open_decode_lock(path: &Path) -> Option<File> {
    let opened = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fs::create_dir_all(parent),
        _ => Ok(()),
    }
    .and_then(|()| {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    });
    match opened {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot open the decode lock file; decoding without it"
            );
            None
        }
    }
}

/// The length of the longest end of `output` that a stop string begins with (and could still
/// complete): those bytes may yet be cut.
fn stop_prefix_len(output: &[u8], stops: &[String]) -> usize {
    stops
        .iter()
        .map(String::as_bytes)
        .filter_map(|stop| {
            (1..stop.len().min(output.len() + 1))
                .rev()
                .find(|&n| output.ends_with(&stop[..n]))
        })
        .max()
        .unwrap_or(0)
}

/// The byte offset where the earliest stop string begins in `output`, of those that end in the
/// bytes appended since `old_len`. A match ending before `old_len` would have stopped generation
/// at an earlier token, so only the new bytes and the `longest - 1` before them are searched.
/// Empty stop strings are ignored.
fn find_stop(output: &[u8], old_len: usize, stops: &[String]) -> Option<usize> {
    let longest = stops.iter().map(String::len).max()?;
    let from = old_len
        .saturating_sub(longest.saturating_sub(1))
        .min(output.len());
    let window = &output[from..];
    stops
        .iter()
        .map(String::as_bytes)
        .filter(|stop| !stop.is_empty())
        .filter_map(|stop| window.windows(stop.len()).position(|w| w == stop))
        .min()
        .map(|at| from + at)
}

#[cfg(test)]
mod tests {
    use super::{find_stop, stop_prefix_len};

    fn stops(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Feeds `pieces` one at a time, as the decode loop does, and returns the cut, if any.
    fn feed(pieces: &[&[u8]], stop: &[&str]) -> Option<usize> {
        let stop = stops(stop);
        let mut output = Vec::new();
        for piece in pieces {
            let old_len = output.len();
            output.extend_from_slice(piece);
            if let Some(cut) = find_stop(&output, old_len, &stop) {
                return Some(cut);
            }
        }
        None
    }

    #[test]
    fn finds_a_stop_string_split_across_two_pieces() {
        assert_eq!(
            feed(&[b"Hello wor", b"ld\n", b"\nmore"], &["\n\n"]),
            Some(11)
        );
        assert_eq!(feed(&[b"ab", b"cd", b"ef"], &["bcde"]), Some(1));
    }

    #[test]
    fn cuts_before_a_multi_byte_character() {
        // "é" is two bytes, and a token piece may hold only half of it.
        let e = "é".as_bytes();
        let cut = feed(&[b"caf", &e[..1], &e[1..], b"!"], &["é"]).unwrap();
        assert_eq!(cut, 3);
        let cut = feed(&["naïve ".as_bytes(), "→ next".as_bytes()], &["→"]).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&"naïve → next".as_bytes()[..cut]),
            "naïve "
        );
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        let output = b"one two three";
        assert_eq!(
            find_stop(output, 0, &stops(&["three", "two", "e t"])),
            Some(2)
        );
        assert_eq!(feed(&[b"one t", b"wo three"], &["three", "two"]), Some(4));
    }

    #[test]
    fn matches_wholly_before_the_window_are_not_searched_again() {
        // "XY" ended before the last piece; only matches reaching into new bytes count.
        assert_eq!(find_stop(b"abXYcd", 4, &stops(&["XY"])), None);
        assert_eq!(find_stop(b"abXYcdXY", 6, &stops(&["XY"])), Some(6));
        // One byte of overlap is searched, so a match straddling old and new bytes is found.
        assert_eq!(find_stop(b"abXYcd", 3, &stops(&["XY"])), Some(2));
    }

    #[test]
    fn the_end_that_may_begin_a_stop_string_is_held_back() {
        assert_eq!(stop_prefix_len(b"hello wor", &stops(&["world!"])), 3);
        assert_eq!(stop_prefix_len(b"hello\n", &stops(&["\n\n", "lo\nX"])), 3);
        assert_eq!(stop_prefix_len(b"hello", &stops(&["xyz"])), 0);
        assert_eq!(stop_prefix_len(b"ab", &stops(&["abc"])), 2);
        assert_eq!(stop_prefix_len(b"anything", &[]), 0);
        assert_eq!(stop_prefix_len(b"anything", &stops(&[""])), 0);
    }

    #[test]
    fn no_stop_strings_or_only_empty_ones_never_match() {
        assert_eq!(find_stop(b"anything", 0, &[]), None);
        assert_eq!(find_stop(b"anything", 0, &stops(&[""])), None);
    }
}
