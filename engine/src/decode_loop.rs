//! The decode loop behind [`Engine`](crate::Engine): one llama.cpp context, up to `slots`
//! sequences, one decode step after another.
//!
//! Each sequence lives in a slot whose index is its llama.cpp sequence id. With a KV cache per
//! sequence, llama.cpp computes a step in one pass over the weights per run of consecutive
//! sequence ids (and per distinct prompt chunk length), and a pass has a large fixed cost: on
//! 2 cores with the GPT-2 124M shape, one token alone took 9 ms, 32 tokens in one pass 78 ms, and
//! 21 tokens spread over 9 passes 125 ms. So newcomers take slots next to the running sequences,
//! a hole left among them is filled by moving the highest one down ([`DecodeLoop::pack_slots`]),
//! and the batch is laid out in slot order. On workload (c) of the benchmark that raised tokens/s
//! by 13-15% (docs/performance.md, "Slot packing").

use std::{
    collections::VecDeque,
    fs::{self, File, TryLockError},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use llama_cpp_2::{context::LlamaContext, llama_batch::LlamaBatch, token::LlamaToken};
use tokio::sync::oneshot;

use crate::{
    model::Model,
    request::{FinishReason, Generation, GenerationError, GenerationParams, TextSink},
    sampler::Sampler,
};

/// Longest wait for the decode lock; see `DecodeLoop::lock_decode`.
pub const DECODE_LOCK_PATIENCE: Duration = Duration::from_secs(30);

/// The shortest common prompt prefix worth copying rather than decoding.
pub const MIN_SHARED_PREFIX: usize = 16;

pub(crate) struct Request {
    pub prompt: Vec<LlamaToken>,
    pub params: GenerationParams,
    pub reply: oneshot::Sender<Result<Generation, GenerationError>>,
    pub on_text: Option<TextSink>,
}

/// What the decode loop has done, read by the [`Engine`](crate::Engine) handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Tokens sampled, end-of-text tokens included.
    pub generated: AtomicU64,
    /// Prompt tokens decoded; a prefix copied from another sequence is not.
    pub prompt_decoded: AtomicU64,
    /// Sequences moved to a lower slot to fill a hole among the running ones.
    pub moved: AtomicU64,
    /// Slots holding a sequence, as of the last step.
    pub busy: AtomicU64,
    /// Requests waiting for a slot, as of the last step.
    pub waiting: AtomicU64,
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
    sampler: Sampler,
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

pub(crate) struct LoopConfig<'a> {
    pub slots: u32,
    pub context_per_slot: u32,
    pub batch_tokens: u32,
    pub counters: Arc<Counters>,
    /// Keep the running sequences in consecutive slots; pointless with one KV cache for all.
    pub pack_slots: bool,
    #[cfg(feature = "fault-injection")]
    pub panic_after_tokens: Option<u64>,
    pub decode_lock: Option<&'a Path>,
    pub share_prefixes: bool,
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

pub(crate) struct DecodeLoop<'m> {
    model: &'m Model,
    timing: StepTiming,
    context: LlamaContext<'m>,
    slots: Vec<Option<Sequence>>,
    waiting: VecDeque<Request>,
    batch: LlamaBatch<'static>,
    batch_tokens: usize,
    context_per_slot: u32,
    counters: Arc<Counters>,
    pack_slots: bool,
    #[cfg(feature = "fault-injection")]
    panic_after_tokens: Option<u64>,
    decode_lock: Option<File>,
    share_prefixes: bool,
    next_serial: u64,
}

impl<'m> DecodeLoop<'m> {
    pub(crate) fn new(model: &'m Model, context: LlamaContext<'m>, config: LoopConfig<'_>) -> Self {
        DecodeLoop {
            model,
            timing: StepTiming::default(),
            context,
            slots: (0..config.slots).map(|_| None).collect(),
            waiting: VecDeque::new(),
            batch: LlamaBatch::new(config.batch_tokens as usize, 1),
            batch_tokens: config.batch_tokens as usize,
            context_per_slot: config.context_per_slot,
            counters: config.counters,
            pack_slots: config.pack_slots,
            #[cfg(feature = "fault-injection")]
            panic_after_tokens: config.panic_after_tokens,
            decode_lock: config.decode_lock.and_then(open_decode_lock),
            share_prefixes: config.share_prefixes,
            next_serial: 0,
        }
    }

    pub(crate) fn run(mut self, inbox: mpsc::Receiver<Request>) {
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
            self.publish_occupancy();
        }
    }

    fn publish_occupancy(&self) {
        let busy = self.slots.iter().flatten().count() as u64;
        self.counters.busy.store(busy, Ordering::Relaxed);
        let waiting = self.waiting.len() as u64;
        self.counters.waiting.store(waiting, Ordering::Relaxed);
    }

    fn admit(&mut self) {
        while let Some(slot) = self.slot_for_newcomer() {
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
            let sampler = Sampler::new(&request.params);
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

    /// A free slot that keeps the running sequences one run of consecutive ids without moving
    /// any: a hole among them, else the slot just above them, else the one just below.
    fn slot_for_newcomer(&self) -> Option<usize> {
        let Some((lowest, highest)) = self.occupied_span() else {
            return (!self.slots.is_empty()).then_some(0);
        };
        (lowest..highest)
            .find(|&slot| self.slots[slot].is_none())
            .or_else(|| (highest + 1 < self.slots.len()).then_some(highest + 1))
            .or_else(|| lowest.checked_sub(1))
    }

    /// The lowest and highest occupied slots.
    fn occupied_span(&self) -> Option<(usize, usize)> {
        let lowest = self.slots.iter().position(Option::is_some)?;
        let highest = self.slots.iter().rposition(Option::is_some)?;
        Some((lowest, highest))
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

    /// Fills each hole among the running sequences (one finished while nothing waited) with the
    /// highest of them, so a step's sequences have consecutive ids; see the module's comment.
    /// Runs after `admit`, which fills holes first when requests wait.
    fn pack_slots(&mut self) {
        while let Some((lowest, highest)) = self.occupied_span() {
            let Some(hole) = (lowest..highest).find(|&slot| self.slots[slot].is_none()) else {
                return;
            };
            self.move_sequence(highest, hole);
        }
    }

    /// Moves the sequence in slot `from` to the free slot `to`, KV cache and all.
    fn move_sequence(&mut self, from: usize, to: usize) {
        let sequence = self.slots[from].take().expect("moving an occupied slot");
        if sequence.position > 0 {
            // llama.cpp copies the whole stream (18 MiB for GPT-2 124M at 512 tokens per slot)
            // at the next decode, before that decode writes anything, and keeps each cell at
            // its index, so the sequence's results stay as they were.
            self.context
                .copy_kv_cache_seq(from as i32, to as i32, None, None)
                .expect("a whole-sequence copy has no positions to refuse");
            self.clear_sequence(from);
        }
        // Sequences waiting to copy this one's prompt prefix now find it in its new slot.
        for borrower in self.slots.iter_mut().flatten() {
            if let Some(borrow) = borrower.borrow.as_mut()
                && borrow.slot == from
                && borrow.serial == sequence.serial
            {
                borrow.slot = to;
            }
        }
        self.slots[to] = Some(sequence);
        self.counters.moved.fetch_add(1, Ordering::Relaxed);
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
        // A waiting request takes a slot a cancellation freed before anything moves into it.
        self.admit();
        if self.pack_slots {
            self.pack_slots();
        }
        self.settle_borrows();
        // Running sequences' tokens are counted first, so newcomers' prompts never stall them;
        // the batch is then laid out in slot order, which keeps the step in as few compute
        // passes as the slots allow (see the module's comment).
        let running = self
            .slots
            .iter()
            .flatten()
            .filter(|s| s.pending.is_some())
            .count();
        let mut prompt_room = self.batch_tokens.saturating_sub(running);
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
                continue;
            }
            if !sequence.in_prompt() || sequence.borrow.is_some() {
                continue;
            }
            let chunk = (sequence.prompt.len() - sequence.prompt_fed).min(prompt_room);
            prompt_room -= chunk;
            self.counters
                .prompt_decoded
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
        // For profiling one step at a time (RUST_LOG=genq_engine=trace).
        tracing::trace!(
            tokens = self.batch.n_tokens(),
            sequences = self.slots.iter().flatten().count(),
            decode_us = started.elapsed().as_micros() as u64,
            "decode step"
        );
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
        let token = sequence.sampler.sample(self.context.get_logits_ith(index));
        // Read only by the fault-injection build's panic below.
        #[cfg_attr(not(feature = "fault-injection"), allow(unused_variables))]
        let sampled = self.counters.generated.fetch_add(1, Ordering::Relaxed) + 1;
        #[cfg(feature = "fault-injection")]
        if let Some(limit) = self.panic_after_tokens
            && sampled >= limit
        {
            panic!("fault injection: panicking after {limit} generated tokens");
        }
        if sequence.generated == 0
            && let Some(sink) = sequence.request.on_text.as_mut()
        {
            // The first token is sampled: the caller may be timing it (time to first token).
            sink(&[]);
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
        self.clear_sequence(slot);
        Some(sequence)
    }

    fn clear_sequence(&mut self, slot: usize) {
        // Removing a whole sequence's cells cannot fail for an in-range id.
        let _ = self
            .context
            .clear_kv_cache_seq(Some(slot as u32), None, None);
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
