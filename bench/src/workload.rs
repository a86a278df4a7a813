//! The three workloads of the benchmark, identical for every system measured.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// One request of 10 prompts x 64 new tokens.
    A,
    /// 32 single-prompt requests submitted at once, 64 new tokens each.
    B,
    /// 200 single-prompt requests, max_tokens 8..=128, arriving over about 15 s.
    C,
}

impl Workload {
    pub fn describe(self) -> &'static str {
        match self {
            Workload::A => "(a) 1 request x 10 prompts x 64 tokens",
            Workload::B => "(b) 32 requests at once x 64 tokens",
            Workload::C => "(c) 200 requests over time, 8..128 tokens",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub prompts: Vec<String>,
    pub max_tokens: u32,
    pub arrival_s: f64,
    /// Explicit so every system samples each request the same way.
    pub seed: u32,
}

impl Request {
    pub fn arrival(&self) -> Duration {
        Duration::from_secs_f64(self.arrival_s)
    }
}

/// Requests at or under this many tokens are "short" in workload (c)'s latency split.
pub const SHORT_JOB_TOKENS: u32 = 32;

const PROMPTS: [&str; 10] = [
    "Once upon a time in a small village",
    "The meaning of life is",
    "In the year 2050, cities will",
    "The best way to learn a new language is",
    "Scientists have discovered that",
    "Here is a recipe for a simple dinner:",
    "The history of the printing press",
    "My favourite thing about the ocean is",
    "To build a reliable distributed system, you",
    "The old lighthouse keeper looked out and saw",
];

/// The `i`th of the benchmark's prompts, cycling through them.
pub fn prompt(i: usize) -> String {
    PROMPTS[i % PROMPTS.len()].to_owned()
}

pub fn requests(workload: Workload) -> Vec<Request> {
    match workload {
        Workload::A => vec![Request {
            prompts: (0..10).map(prompt).collect(),
            max_tokens: 64,
            arrival_s: 0.0,
            seed: 1,
        }],
        Workload::B => (0..32)
            .map(|i| Request {
                prompts: vec![prompt(i)],
                max_tokens: 64,
                arrival_s: 0.0,
                seed: i as u32 + 1,
            })
            .collect(),
        Workload::C => {
            // Seeded, so every system and every repetition sees the same arrivals and lengths.
            let mut rng = ChaCha8Rng::seed_from_u64(42);
            let mut at = 0.0;
            (0..200)
                .map(|i| {
                    let request = Request {
                        prompts: vec![prompt(i)],
                        max_tokens: rng.random_range(8..=128),
                        arrival_s: at,
                        seed: i as u32 + 1,
                    };
                    // Exponential gaps, mean 75 ms: about 15 s of arrivals, more than one worker
                    // on 2 cores can keep up with, so queueing and batching both show.
                    at += -0.075 * (1.0 - rng.random::<f64>()).ln();
                    request
                })
                .collect()
        }
    }
}
