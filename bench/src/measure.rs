//! What one run of a workload measured, and the medians over repetitions.

use std::time::Duration;

use serde::Deserialize;

use crate::{
    streamed::Streamed,
    workload::{Request, SHORT_JOB_TOKENS},
};

/// One run: every request's latency (finish minus arrival) and finish time, both from the first
/// arrival.
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub tokens: u64,
    pub wall_s: f64,
    pub latencies_s: Vec<f64>,
    pub finishes_s: Vec<f64>,
    /// Each request's time to its first token (from its arrival), where its client streams.
    #[serde(default)]
    pub first_tokens_s: Option<Vec<f64>>,
    /// The serving process's peak resident memory, where known.
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    /// A line about this run for the log (genq: what the waiting added).
    #[serde(default)]
    pub detail: Option<String>,
}

impl Run {
    /// From each request's finish time (since the first arrival): the wall time is the last
    /// finish, a latency is finish minus arrival.
    pub fn from_finishes(tokens: u64, requests: &[Request], finishes: &[Duration]) -> Run {
        let wall = finishes.iter().copied().max().unwrap_or_default();
        Run {
            tokens,
            wall_s: wall.as_secs_f64(),
            latencies_s: requests
                .iter()
                .zip(finishes)
                .map(|(r, f)| f.saturating_sub(r.arrival()).as_secs_f64())
                .collect(),
            finishes_s: finishes.iter().map(Duration::as_secs_f64).collect(),
            first_tokens_s: None,
            peak_rss_bytes: None,
            detail: None,
        }
    }

    /// From streamed requests, each with its finish time (since the first arrival).
    pub fn streamed(requests: &[Request], done: &[(Streamed, Duration)]) -> Run {
        let tokens = done.iter().map(|(s, _)| s.tokens).sum();
        let finishes: Vec<Duration> = done.iter().map(|(_, at)| *at).collect();
        let mut run = Run::from_finishes(tokens, requests, &finishes);
        run.first_tokens_s = Some(
            done.iter()
                .map(|(s, _)| s.first_token.as_secs_f64())
                .collect(),
        );
        run
    }
}

/// The figures of one table row: each the median over repetitions.
#[derive(Debug, Clone)]
pub struct Summary {
    pub tokens_per_s: f64,
    /// Each repetition's tokens/s, in order: the spread beside the median.
    pub runs_tokens_per_s: Vec<f64>,
    /// Absent for a limit that times one batch rather than requests (llama-batched-bench).
    pub latency: Option<Latency>,
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Latency {
    pub p50_s: f64,
    pub p95_s: f64,
    pub first_result_s: f64,
    pub p95_short_s: Option<f64>,
    pub p95_long_s: Option<f64>,
    /// The median request's latency over its new tokens: what a user waits per token.
    pub per_token_s: f64,
    /// The median time to first token, where the clients stream.
    pub first_token_p50_s: Option<f64>,
}

impl Summary {
    /// A row with only a throughput per repetition.
    pub fn throughput(runs_tokens_per_s: Vec<f64>) -> Summary {
        Summary {
            tokens_per_s: median(runs_tokens_per_s.clone()),
            runs_tokens_per_s,
            latency: None,
            peak_rss_bytes: None,
        }
    }

    /// Fastest minus slowest repetition, as a share of the median.
    pub fn spread(&self) -> f64 {
        let (low, high) = self
            .runs_tokens_per_s
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &t| {
                (lo.min(t), hi.max(t))
            });
        (high - low) / self.tokens_per_s
    }
}

impl Run {
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.wall_s
    }
}

pub fn summarize(runs: &[Run], requests: &[Request]) -> Summary {
    let per_run = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let split = |short: bool| {
        let picked: Vec<usize> = (0..requests.len())
            .filter(|&i| (requests[i].max_tokens <= SHORT_JOB_TOKENS) == short)
            .collect();
        let varied = requests
            .iter()
            .any(|r| r.max_tokens != requests[0].max_tokens);
        (varied && !picked.is_empty()).then(|| {
            per_run(&|run: &Run| {
                percentile(picked.iter().map(|&i| run.latencies_s[i]).collect(), 0.95)
            })
        })
    };
    Summary {
        tokens_per_s: per_run(&Run::tokens_per_s),
        runs_tokens_per_s: runs.iter().map(Run::tokens_per_s).collect(),
        latency: Some(Latency {
            p50_s: per_run(&|r| percentile(r.latencies_s.clone(), 0.50)),
            p95_s: per_run(&|r| percentile(r.latencies_s.clone(), 0.95)),
            first_result_s: per_run(&|r| {
                r.finishes_s.iter().copied().fold(f64::INFINITY, f64::min)
            }),
            p95_short_s: split(true),
            p95_long_s: split(false),
            per_token_s: per_run(&|run: &Run| {
                let per_token = requests.iter().zip(&run.latencies_s);
                median(
                    per_token
                        .map(|(r, l)| l / f64::from(r.max_tokens))
                        .collect(),
                )
            }),
            first_token_p50_s: runs
                .iter()
                .map(|run| Some(median(run.first_tokens_s.clone()?)))
                .collect::<Option<Vec<f64>>>()
                .map(median),
        }),
        peak_rss_bytes: runs.iter().filter_map(|r| r.peak_rss_bytes).max(),
    }
}

pub fn median(values: Vec<f64>) -> f64 {
    percentile(values, 0.5)
}

/// Nearest-rank percentile.
pub fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Peak resident memory of a process, from /proc (Linux).
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(values.clone(), 0.5), 10.0);
        assert_eq!(percentile(values.clone(), 0.95), 19.0);
        assert_eq!(percentile(vec![3.0], 0.95), 3.0);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
    }

    #[test]
    fn spread_is_a_share_of_the_median() {
        let summary = Summary::throughput(vec![90.0, 100.0, 110.0]);
        assert_eq!(summary.tokens_per_s, 100.0);
        assert!((summary.spread() - 0.2).abs() < 1e-9);
    }
}
