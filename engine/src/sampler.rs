//! Choosing a sequence's next token from its logits.
//!
//! llama.cpp's `llama_sampler_sample` copies every logit (50,257 for GPT-2) into a candidate
//! struct and partially sorts them all for top-k. Only the k highest logits can survive top-k, so
//! [`Sampler`] finds those (one vectorized pass over the logits, then only the chunks that can hold
//! them) and hands llama.cpp's same chain (top-k, top-p, temperature, seeded draw) just those k:
//! the same token for the same seed, as the tests below check against the chain given every
//! logit, unless two of the k highest logits are exactly equal (llama.cpp's sorts leave equal
//! logits in no set order, so either path may draw the other) or a logit is NaN (never chosen
//! here). On workload (b) of the benchmark, sampling 65 steps of 32 sequences took 213-244 ms the
//! first way and 61-62 ms this way (`RUST_LOG=genq_engine=debug`), against about 7 s of decoding.

use llama_cpp_2::{
    sampling::LlamaSampler,
    token::{LlamaToken, data::LlamaTokenData, data_array::LlamaTokenDataArray},
};

use crate::request::GenerationParams;

pub(crate) struct Sampler {
    chain: LlamaSampler,
    /// How many of the highest logits can be chosen at all: top-k's k, or 1 when greedy. `None`
    /// when top-k is off and every token stays a candidate.
    shortlist: Option<usize>,
    highest: Highest,
    /// Reused between tokens, as a sequence samples one per step.
    candidates: LlamaTokenDataArray,
}

impl Sampler {
    pub(crate) fn new(params: &GenerationParams) -> Self {
        let (chain, shortlist) = if params.temperature <= 0.0 {
            (LlamaSampler::greedy(), Some(1))
        } else {
            let chain = LlamaSampler::chain_simple([
                LlamaSampler::top_k(params.top_k),
                LlamaSampler::top_p(params.top_p, 1),
                LlamaSampler::temp(params.temperature),
                LlamaSampler::dist(params.seed),
            ]);
            (chain, usize::try_from(params.top_k).ok().filter(|&k| k > 0))
        };
        Self {
            chain,
            shortlist,
            highest: Highest::default(),
            candidates: LlamaTokenDataArray::new(Vec::new(), false),
        }
    }

    /// `logits` holds one logit per token of the vocabulary, indexed by token id.
    pub(crate) fn sample(&mut self, logits: &[f32]) -> LlamaToken {
        let data = &mut self.candidates.data;
        data.clear();
        match self.shortlist {
            Some(k) if self.highest.find(logits, k) => data.extend(
                self.highest
                    .found
                    .iter()
                    .map(|&(logit, id)| LlamaTokenData::new(LlamaToken(id), logit, 0.0)),
            ),
            _ => data.extend(
                (0_i32..)
                    .zip(logits)
                    .map(|(id, &logit)| LlamaTokenData::new(LlamaToken(id), logit, 0.0)),
            ),
        }
        self.candidates.selected = None;
        self.candidates.sorted = false;
        self.chain.apply(&mut self.candidates);
        // Every sampler in the chain keeps at least one candidate, and greedy and the seeded draw
        // always select one.
        let token = self
            .candidates
            .selected_token()
            .expect("llama.cpp's sampler selects a token");
        self.chain.accept(token);
        token
    }
}

/// Logits are scanned in chunks this long: a chunk whose highest logit is below the bar is
/// passed over after one vectorized test.
const CHUNK: usize = 32;

/// Finds the `k` highest logits and their token ids, ties going to the lower id (which is how
/// llama.cpp's greedy sampler breaks them; its top-k breaks them in no set order). Its buffers
/// are kept between tokens.
#[derive(Default)]
struct Highest {
    /// Each chunk's highest logit, in order.
    chunk_maxima: Vec<f32>,
    ranked: Vec<f32>,
    /// The result: `(logit, token id)`, in no particular order.
    found: Vec<(f32, i32)>,
}

impl Highest {
    /// Fills `found`, or says `false` when fewer than `k` chunks hold a logit above minus
    /// infinity (the caller then hands the sampler every logit). NaN never qualifies.
    fn find(&mut self, logits: &[f32], k: usize) -> bool {
        self.chunk_maxima.clear();
        self.chunk_maxima
            .extend(logits.chunks(CHUNK).map(chunk_max));
        if k == 0 || self.chunk_maxima.len() < k {
            return false;
        }
        // k chunks reach the k-th highest chunk maximum, so at least k logits do: the k highest
        // logits are among those that reach it, found in those chunks alone.
        self.ranked.clone_from(&self.chunk_maxima);
        let (_, &mut bar, _) = self
            .ranked
            .select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        if bar == f32::NEG_INFINITY {
            return false;
        }
        self.found.clear();
        let chunks = (0_i32..).step_by(CHUNK).zip(logits.chunks(CHUNK));
        for ((first_id, chunk), &max) in chunks.zip(&self.chunk_maxima) {
            if max >= bar {
                let ids = first_id..;
                self.found.extend(
                    ids.zip(chunk)
                        .filter(|&(_, &logit)| logit >= bar)
                        .map(|(id, &logit)| (logit, id)),
                );
            }
        }
        if self.found.len() > k {
            self.found
                .select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            self.found.truncate(k);
        }
        true
    }
}

/// The highest of `chunk`'s logits, in lanes the compiler turns into vector instructions.
fn chunk_max(chunk: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut groups = chunk.chunks_exact(8);
    for group in groups.by_ref() {
        for (lane, &logit) in lanes.iter_mut().zip(group) {
            *lane = if logit > *lane { logit } else { *lane };
        }
    }
    for &logit in groups.remainder() {
        lanes[0] = if logit > lanes[0] { logit } else { lanes[0] };
    }
    lanes.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::{CHUNK, Highest, Sampler};
    use crate::request::GenerationParams;

    const VOCAB: usize = 50_257;

    fn params(temperature: f32, top_k: i32, top_p: f32, seed: u32) -> GenerationParams {
        GenerationParams {
            max_tokens: 1,
            temperature,
            top_k,
            top_p,
            seed,
            stop: Vec::new(),
        }
    }

    /// Most logits low, a flat head of a few hundred near the top: top-k cuts it, and top-p cuts
    /// when it is small.
    fn logits(rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..VOCAB)
            .map(|_| {
                let x: f32 = rng.random();
                -8.0 * x.ln().abs().sqrt() + rng.random::<f32>()
            })
            .collect()
    }

    /// Logits of minus infinity but for `finite` of them, scattered: a banned vocabulary. Some
    /// draws leave fewer than k chunks with a finite logit, where the sampler falls back to
    /// giving the chain every logit.
    fn sparse_logits(rng: &mut ChaCha8Rng, finite: usize) -> Vec<f32> {
        let mut logits = vec![f32::NEG_INFINITY; VOCAB];
        for _ in 0..finite {
            logits[rng.random_range(0..VOCAB)] = rng.random::<f32>() * 4.0;
        }
        logits
    }

    /// The same draws as llama.cpp's chain given every logit, as `llama_sampler_sample` gives it.
    fn assert_same_draws(
        params: &GenerationParams,
        make_logits: impl Fn(&mut ChaCha8Rng) -> Vec<f32>,
    ) {
        let mut shortlisted = Sampler::new(params);
        assert!(shortlisted.shortlist.is_some(), "{params:?}");
        let mut every_logit = Sampler::new(params);
        every_logit.shortlist = None;
        let mut rng = ChaCha8Rng::seed_from_u64(u64::from(params.seed));
        let draws: Vec<(i32, i32)> = (0..200)
            .map(|_| {
                let logits = make_logits(&mut rng);
                (shortlisted.sample(&logits).0, every_logit.sample(&logits).0)
            })
            .collect();
        let differing = draws.iter().filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{params:?}: {draws:?}");
        let distinct = draws
            .iter()
            .map(|d| d.0)
            .collect::<std::collections::HashSet<_>>();
        if params.temperature > 0.0 && params.top_k != 1 {
            // Fresh logits each draw: a sampler stuck on one token would pass the equality above.
            assert!(distinct.len() > 100, "{} distinct tokens", distinct.len());
        }
    }

    #[test]
    fn shortlist_draws_what_the_chain_draws_from_every_logit() {
        for (temperature, top_k, top_p, seed) in [
            (0.8, 40, 0.95, 1),
            (0.8, 40, 0.95, 7),
            (1.5, 5, 1.0, 2),
            (0.3, 200, 0.5, 3),
            (1.0, 1, 1.0, 4),
            (0.0, 40, 0.95, 5),
            (0.8, 1000, 0.99, 6),
        ] {
            assert_same_draws(&params(temperature, top_k, top_p, seed), logits);
        }
    }

    #[test]
    fn shortlist_draws_what_the_chain_draws_from_a_banned_vocabulary() {
        for finite in [30, 100, 2000] {
            assert_same_draws(&params(0.8, 40, 0.95, 9), |rng| sparse_logits(rng, finite));
        }
    }

    #[test]
    fn chain_gets_every_logit_without_top_k_or_past_one_candidate_a_chunk() {
        assert!(Sampler::new(&params(0.8, 0, 0.9, 1)).shortlist.is_none());
        let logits = logits(&mut ChaCha8Rng::seed_from_u64(1));
        let chunks = VOCAB.div_ceil(CHUNK);
        let mut highest = Highest::default();
        assert!(highest.find(&logits, chunks));
        assert!(!highest.find(&logits, chunks + 1));
    }

    #[test]
    fn highest_keeps_the_k_highest_ties_to_the_lower_id() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        // Few distinct values, so ties straddle the k-th place.
        let logits: Vec<f32> = (0..VOCAB)
            .map(|_| f32::from(rng.random_range(0_u8..50)))
            .collect();
        let mut expected: Vec<(f32, i32)> =
            (0_i32..).zip(&logits).map(|(id, &l)| (l, id)).collect();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for k in [1, 40, 1000] {
            let mut highest = Highest::default();
            assert!(highest.find(&logits, k));
            let mut got = highest.found;
            got.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            assert_eq!(got, expected[..k], "k = {k}");
        }
    }

    #[test]
    fn highest_passes_over_nan_and_minus_infinity() {
        let mut logits = vec![f32::NEG_INFINITY; VOCAB];
        logits[3] = f32::NAN;
        logits[10] = 1.0;
        logits[20] = 2.0;
        let mut highest = Highest::default();
        assert!(highest.find(&logits, 1));
        assert_eq!(highest.found, [(2.0, 20)]);
        // Both finite logits share a chunk, so the second chunk reaching the bar holds only minus
        // infinity: the sampler then gives the chain every logit instead.
        assert!(!highest.find(&logits, 2));
        logits[100] = 1.5;
        assert!(highest.find(&logits, 2));
        highest.found.sort_by(|a, b| b.0.total_cmp(&a.0));
        assert_eq!(highest.found, [(2.0, 20), (1.5, 100)]);
    }
}
