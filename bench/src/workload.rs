//! The four workloads of the benchmark, identical for every system measured within a repetition;
//! each repetition gets fresh seeds ([`requests`]).

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
    /// 64 prompts sharing one ~300-token few-shot prefix, each with its own ~20-token ending,
    /// 32 new tokens each: one genq job, 64 requests at once to llama-server.
    D,
    /// One sequence at a time: 8 single-prompt requests of 16 to 256 new tokens, 3 s apart (each
    /// done before the next arrives), what an interactive user waits per token and for the first.
    E,
}

impl Workload {
    pub fn describe(self) -> &'static str {
        match self {
            Workload::A => "(a) 1 request x 10 prompts x 64 tokens",
            Workload::B => "(b) 32 requests at once x 64 tokens",
            Workload::C => "(c) 200 requests over time, 8..128 tokens",
            Workload::D => "(d) 64 prompts, one ~300-token prefix, x 32 tokens",
            Workload::E => "(e) one sequence at a time, 8 x 16..256 tokens",
        }
    }

    /// Whether the prompts share a long prefix, so that reusing its KV cache is the point.
    pub fn shares_prefix(self) -> bool {
        self == Workload::D
    }

    /// Whether the clients that can stream do, so that the time to first token shows: one
    /// sequence at a time, as an interactive user waits.
    pub fn streams(self) -> bool {
        self == Workload::E
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

/// New tokens of workload (e)'s requests, in order: short answers pay the fixed costs (the queue,
/// the prompt) over few tokens, long ones show the decode step.
const ALONE_TOKENS: [u32; 8] = [16, 256, 64, 128, 32, 256, 128, 16];

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

/// Seeds of repetition `rep` (from 0) start here: every repetition samples afresh, so genq's result
/// cache could not answer a repeated one even if it were on, while every system measured in one
/// repetition gets the same seeds.
fn seed_base(rep: usize) -> u32 {
    rep as u32 * 100_000
}

/// The requests of `workload` in repetition `rep`.
pub fn requests(workload: Workload, rep: usize) -> Vec<Request> {
    let mut requests = base_requests(workload);
    for request in &mut requests {
        request.seed += seed_base(rep);
    }
    requests
}

fn base_requests(workload: Workload) -> Vec<Request> {
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
        Workload::D => vec![Request {
            prompts: (0..64).map(few_shot_prompt).collect(),
            max_tokens: 32,
            arrival_s: 0.0,
            seed: 1,
        }],
        Workload::E => (0..ALONE_TOKENS.len())
            .map(|i| Request {
                prompts: vec![prompt(i)],
                max_tokens: ALONE_TOKENS[i],
                arrival_s: 3.0 * i as f64,
                seed: i as u32 + 1,
            })
            .collect(),
    }
}

/// Workload (d)'s shared prefix: a few-shot template of 302 GPT-2 tokens.
const FEW_SHOT: &str = "The following is a conversation with a helpful assistant that answers every \
question in one or two plain sentences, without jargon.\n\n\
Q: What is the capital of France?\nA: The capital of France is Paris, a city on the river Seine.\n\n\
Q: How many legs does a spider have?\nA: A spider has eight legs, which sets it apart from insects \
with six.\n\n\
Q: Why is the sky blue on a clear day?\nA: Air scatters blue sunlight more than red light, so blue \
reaches our eyes from every direction.\n\n\
Q: What does a thermometer measure?\nA: A thermometer measures temperature, usually in degrees \
Celsius or Fahrenheit.\n\n\
Q: How long does it take the Earth to go around the Sun?\nA: It takes about 365 days, which is why \
a year has that many days.\n\n\
Q: What do plants need to grow?\nA: Plants need light, water, air and nutrients from the soil.\n\n\
Q: Why do we have seasons?\nA: The Earth's axis is tilted, so each half gets more direct sunlight \
for part of the year.\n\n\
Q: What is the largest ocean on Earth?\nA: The Pacific Ocean is the largest, covering about a third \
of the planet's surface.\n\n\
Q: How does a bicycle stay upright?\nA: Its moving wheels and the rider's small steering \
corrections keep it balanced.\n\n";

/// Eight questions about eight topics: 64 different endings of 19 to 22 tokens.
const QUESTIONS: [&str; 8] = [
    "Why does {} matter to people who live in small towns far from the sea?",
    "What is the simplest way to explain {} to a curious child of about ten?",
    "How has {} changed over the last hundred years, in a few words?",
    "What is one common mistake that people make when they think about {}?",
    "Where would a student find a good first book about {} at the library?",
    "Who should I ask if I want to learn more about {} this summer?",
    "When did people first start to write down what they knew about {}?",
    "Which single fact about {} surprises most people when they hear it?",
];
const TOPICS: [&str; 8] = [
    "the weather",
    "honey bees",
    "old bridges",
    "the moon",
    "bread making",
    "volcanoes",
    "city parks",
    "migrating birds",
];

/// The `i`th (0..64) of workload (d)'s prompts: the shared prefix, then its own question.
pub fn few_shot_prompt(i: usize) -> String {
    let question =
        QUESTIONS[i / TOPICS.len() % QUESTIONS.len()].replace("{}", TOPICS[i % TOPICS.len()]);
    format!("{FEW_SHOT}Q: {question}\nA:")
}

/// Workload (d)'s shared prefix.
pub fn few_shot_prefix() -> &'static str {
    FEW_SHOT
}

/// Runs `client` for each request from its arrival on (measured from now), and waits for every
/// one, so none outlives a failed run and talks to the next one's server. Returns each client's
/// answer with the time from start to its end, in request order, or the first error.
pub async fn at_arrivals<T, F, Fut>(
    requests: &[Request],
    client: F,
) -> anyhow::Result<Vec<(T, Duration)>>
where
    T: Send + 'static,
    F: Fn(Request) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|request| {
            let arrival = start + request.arrival();
            let answer = client(request);
            tokio::spawn(async move {
                tokio::time::sleep_until(arrival).await;
                anyhow::Ok((answer.await?, start.elapsed()))
            })
        })
        .collect();
    let mut done = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for task in tasks {
        match task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(answer) => done.push(answer),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}
