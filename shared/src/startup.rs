//! Reaching PostgreSQL and Redis at start. Either may be starting beside the services (compose, a
//! fleet's restart), or PostgreSQL may be full of connections that are ending: the services wait
//! for them a while, as a supervisor restarting them would, rather than exit at the first refusal.

use std::{future::Future, time::Duration};

/// How long to keep trying, and the pauses between tries (doubling from the first).
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub total: Duration,
    pub first_pause: Duration,
    pub longest_pause: Duration,
}

/// How long the services wait at start for PostgreSQL and for Redis.
pub const PATIENCE: Patience = Patience {
    total: Duration::from_secs(60),
    first_pause: Duration::from_millis(250),
    longest_pause: Duration::from_secs(5),
};

/// Runs `attempt` until it succeeds, its error is not `transient`, or the next try would start
/// after `patience.total`; the last error is returned. A try still running at `patience.total`
/// (a connection whose packets are dropped waits minutes for TCP) is given up. Each retried
/// failure is logged as a warning naming `what`.
pub async fn patiently<T, F, Fut>(
    what: &str,
    patience: Patience,
    transient: impl Fn(&anyhow::Error) -> bool,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + patience.total;
    let mut pause = patience.first_pause;
    loop {
        let outcome = tokio::time::timeout_at(deadline, attempt())
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "{what} did not answer within {:?}",
                    patience.total
                ))
            });
        match outcome {
            Ok(value) => return Ok(value),
            Err(e) if transient(&e) && tokio::time::Instant::now() + pause <= deadline => {
                tracing::warn!(error = format!("{e:#}"), retry_in = ?pause, "{what} is not reachable yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(patience.longest_pause);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Pauses of 0.1, 0.2 and 0.4 s fit in 1 s; the next, 0.8 s, would end past it. The margins
    /// (0.3 s and more) absorb a loaded machine's scheduling.
    const SHORT: Patience = Patience {
        total: Duration::from_secs(1),
        first_pause: Duration::from_millis(100),
        longest_pause: Duration::from_millis(800),
    };

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let tries = AtomicU32::new(0);
        let value = patiently(
            "thing",
            SHORT,
            |_| true,
            || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Err(anyhow::anyhow!("refused")),
                    _ => Ok(7),
                }
            },
        )
        .await
        .unwrap();
        assert_eq!((value, tries.load(Ordering::SeqCst)), (7, 4));
    }

    #[tokio::test]
    async fn other_errors_end_it_at_once() {
        let tries = AtomicU32::new(0);
        let error = patiently(
            "thing",
            SHORT,
            |_| false,
            || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(anyhow::anyhow!("bad password"))
            },
        )
        .await
        .unwrap_err();
        assert_eq!(error.to_string(), "bad password");
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn it_gives_up_once_the_next_try_would_be_too_late() {
        let tries = AtomicU32::new(0);
        let error = patiently(
            "thing",
            SHORT,
            |_| true,
            || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(anyhow::anyhow!("refused"))
            },
        )
        .await
        .unwrap_err();
        assert_eq!(error.to_string(), "refused");
        assert_eq!(tries.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_try_that_hangs_is_given_up_at_the_deadline() {
        let started = tokio::time::Instant::now();
        let error = patiently(
            "thing",
            SHORT,
            |_| true,
            || async { std::future::pending::<anyhow::Result<()>>().await },
        )
        .await
        .unwrap_err();
        assert_eq!(error.to_string(), "thing did not answer within 1s");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
