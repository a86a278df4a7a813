//! The inference engine: one llama.cpp context on a dedicated thread, running a single decode loop
//! over up to `slots` sequences. A request takes a free slot as soon as one exists, its prompt is
//! fed in chunks alongside the sequences already generating, and a finished sequence frees its
//! slot (and KV cells) at once, so requests from different jobs share every decode step.

use std::{
    collections::VecDeque,
    num::NonZeroU32,
    sync::{Arc, mpsc},
    thread,
};

use anyhow::{Context as _, anyhow};
use llama_cpp_2::{
    context::{LlamaContext, params::LlamaContextParams},
    llama_batch::LlamaBatch,
    sampling::LlamaSampler,
    token::LlamaToken,
};
use tokio::sync::oneshot;

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        EngineConfig {
            slots: default_slots(),
            threads: cores as i32,
            context_per_slot: None,
            batch_tokens: 512,
        }
    }
}

struct Request {
    prompt: String,
    params: GenerationParams,
    reply: oneshot::Sender<Result<Generation, GenerationError>>,
}

/// A handle to the engine thread. Dropping it lets the thread finish the requests it holds and exit.
pub struct Engine {
    requests: mpsc::Sender<Request>,
    thread: Option<thread::JoinHandle<()>>,
    model: Arc<Model>,
    context_per_slot: u32,
    slots: u32,
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
            .with_n_ubatch(batch_tokens.min(512))
            .with_n_threads(config.threads)
            .with_n_threads_batch(config.threads);
        let (requests, inbox) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_model = Arc::clone(&model);
        let thread = thread::Builder::new()
            .name("genq-engine".into())
            .spawn(move || {
                let context = {
                    let _serialised = CONTEXT_CREATION.lock().unwrap_or_else(|e| e.into_inner());
                    thread_model.inner.new_context(backend(), params)
                };
                match context {
                    Ok(context) => {
                        let _ = ready_tx.send(Ok(()));
                        DecodeLoop::new(
                            &thread_model,
                            context,
                            slots,
                            context_per_slot,
                            batch_tokens,
                        )
                        .run(inbox);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!(e)));
                    }
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
        })
    }

    /// Queues one prompt. Dropping the returned future cancels the sequence at its next step.
    pub fn generate(
        &self,
        prompt: String,
        params: GenerationParams,
    ) -> impl Future<Output = Result<Generation, GenerationError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(Request {
            prompt,
            params,
            reply,
        });
        async move {
            sent.map_err(|_| GenerationError::EngineStopped)?;
            answer.await.unwrap_or(Err(GenerationError::EngineStopped))
        }
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

struct Sequence {
    request: Request,
    prompt: Vec<LlamaToken>,
    prompt_fed: usize,
    /// The token sampled last step, to be fed this step.
    pending: Option<LlamaToken>,
    position: i32,
    sampler: LlamaSampler,
    output: Vec<u8>,
    generated: u32,
    /// Where this sequence's logits are in the batch just decoded.
    logits_at: Option<i32>,
}

impl Sequence {
    fn in_prompt(&self) -> bool {
        self.prompt_fed < self.prompt.len()
    }
}

struct DecodeLoop<'m> {
    model: &'m Model,
    context: LlamaContext<'m>,
    slots: Vec<Option<Sequence>>,
    waiting: VecDeque<Request>,
    batch: LlamaBatch<'static>,
    batch_tokens: usize,
    context_per_slot: u32,
}

impl<'m> DecodeLoop<'m> {
    fn new(
        model: &'m Model,
        context: LlamaContext<'m>,
        slots: u32,
        context_per_slot: u32,
        batch_tokens: u32,
    ) -> Self {
        DecodeLoop {
            model,
            context,
            slots: (0..slots).map(|_| None).collect(),
            waiting: VecDeque::new(),
            batch: LlamaBatch::new(batch_tokens as usize, 1),
            batch_tokens: batch_tokens as usize,
            context_per_slot,
        }
    }

    fn run(mut self, inbox: mpsc::Receiver<Request>) {
        loop {
            let idle = self.waiting.is_empty() && self.slots.iter().all(Option::is_none);
            if idle {
                match inbox.recv() {
                    Ok(request) => self.waiting.push_back(request),
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
            let Some(request) = self.waiting.pop_front() else {
                return;
            };
            if request.reply.is_closed() {
                continue;
            }
            let prompt = self.model.prompt_tokens(&request.prompt);
            let needed = prompt.len() + request.params.max_tokens as usize;
            if needed > self.context_per_slot as usize {
                let _ = request.reply.send(Err(GenerationError::PromptTooLong {
                    prompt_tokens: prompt.len(),
                    max_tokens: request.params.max_tokens,
                    context: self.context_per_slot,
                }));
                continue;
            }
            let sampler = sampler_for(&request.params);
            self.slots[slot] = Some(Sequence {
                request,
                prompt,
                prompt_fed: 0,
                pending: None,
                position: 0,
                sampler,
                output: Vec::new(),
                generated: 0,
                logits_at: None,
            });
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
            let Some(sequence) = sequence.as_mut().filter(|s| s.in_prompt()) else {
                continue;
            };
            let room = self.batch_tokens - self.batch.n_tokens() as usize;
            let chunk = (sequence.prompt.len() - sequence.prompt_fed).min(room);
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
        if let Err(e) = self.context.decode(&mut self.batch) {
            // The batch's sequences are in an unknown state: end them all, keep the engine going.
            let error = GenerationError::Decode(e.to_string());
            for slot in 0..self.slots.len() {
                if self.slots[slot].is_some() {
                    self.finish(slot, Err(error.clone()));
                }
            }
            return;
        }
        for slot in 0..self.slots.len() {
            if let Some(outcome) = self.sample(slot) {
                self.finish(slot, outcome);
            }
        }
    }

    /// Samples the next token of the sequence in `slot`, if it has logits this step, and says
    /// whether it is done.
    fn sample(&mut self, slot: usize) -> Option<Result<Generation, GenerationError>> {
        let sequence = self.slots[slot].as_mut()?;
        let index = sequence.logits_at?;
        let token = sequence.sampler.sample(&self.context, index);
        let vocab = self.model.inner.vocab();
        let params = &sequence.request.params;
        if vocab.is_eog(token) {
            return Some(Ok(sequence.finish(FinishReason::Stop, None)));
        }
        sequence.generated += 1;
        sequence
            .output
            .extend(vocab.token_to_piece(token, false, None));
        if !params.stop.is_empty() {
            let text = String::from_utf8_lossy(&sequence.output);
            if let Some(cut) = params
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                return Some(Ok(sequence.finish(FinishReason::Stop, Some(cut))));
            }
        }
        if sequence.generated >= params.max_tokens {
            return Some(Ok(sequence.finish(FinishReason::Length, None)));
        }
        sequence.pending = Some(token);
        None
    }

    fn finish(&mut self, slot: usize, outcome: Result<Generation, GenerationError>) {
        if let Some(sequence) = self.free(slot) {
            let _ = sequence.request.reply.send(outcome);
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
    fn finish(&mut self, reason: FinishReason, cut_at: Option<usize>) -> Generation {
        let mut text = String::from_utf8_lossy(&self.output).into_owned();
        if let Some(cut) = cut_at {
            text.truncate(cut);
        }
        Generation {
            text,
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
