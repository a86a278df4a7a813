//! Sharing a deliverer's slots: at most so many calls in flight per tenant and per tenant's
//! destination (scheme, host and port), and a circuit breaker per tenant's destination that
//! pauses one that keeps failing, so one tenant's dead receiver, however many deliveries it is
//! owed, costs the others nothing. Destinations are counted per tenant so that a tenant pointing
//! its callbacks at another tenant's host (or failing there) takes nothing from that tenant. The
//! state is this replica's own: each replica shares its own slots fairly.
//!
//! The breaker: after `pause_after` failures in a row (no answer, a timeout, 429 or 5xx) the
//! destination is paused for `pause`, doubled at each pause in a row up to an hour; then one call
//! probes it: an answer closes the breaker, a failure pauses it again.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use genq_shared::db::webhooks::{DueDelivery, Skip};

/// The longest pause of a failing destination.
const MAX_PAUSE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_tenant: usize,
    pub per_destination: usize,
    /// Failures in a row that pause a destination; 0 never pauses.
    pub pause_after: u32,
    pub pause: Duration,
}

/// How a call went, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The receiver answered (2xx, or a 4xx other than 429: it is up, the request was wrong).
    Answered,
    /// No answer, a timeout, 429 or 5xx.
    Failing,
    /// No call was made (the job is gone, PostgreSQL failed).
    Unknown,
}

impl Health {
    pub fn of(status_code: Option<u16>) -> Health {
        match status_code {
            Some(429 | 500..) | None => Health::Failing,
            Some(_) => Health::Answered,
        }
    }
}

#[derive(Debug)]
pub struct Fairness {
    limits: Limits,
    tenants: HashMap<String, usize>,
    /// By tenant, then destination.
    destinations: HashMap<(String, String), Destination>,
}

#[derive(Debug, Default)]
struct Destination {
    in_flight: usize,
    failures_in_a_row: u32,
    pauses_in_a_row: u32,
    paused_until: Option<Instant>,
    last_failed: Option<Instant>,
}

impl Destination {
    /// Whether forgetting it loses nothing that still matters: no call in flight, no failure
    /// and no pause within the longest pause (a probe failing doubles the pause from there).
    fn is_forgettable(&self, now: Instant) -> bool {
        let long_ago = |at: Option<Instant>| at.is_none_or(|at| at + MAX_PAUSE <= now);
        self.in_flight == 0 && long_ago(self.last_failed) && long_ago(self.paused_until)
    }

    /// Paused, or probing after a pause: only one call goes at a time then.
    fn is_closed_to_more(&self, now: Instant, per_destination: usize) -> bool {
        let probing = self.pauses_in_a_row > 0;
        self.paused_until.is_some_and(|until| until > now)
            || (probing && self.in_flight >= 1)
            || self.in_flight >= per_destination
    }
}

impl Fairness {
    pub fn new(limits: Limits) -> Fairness {
        Fairness {
            limits: Limits {
                per_tenant: limits.per_tenant.max(1),
                per_destination: limits.per_destination.max(1),
                ..limits
            },
            tenants: HashMap::new(),
            destinations: HashMap::new(),
        }
    }

    /// The tenants and tenants' destinations that may not have another call now.
    pub fn skip(&self, now: Instant) -> Skip {
        let (tenants_of, destinations) = self
            .destinations
            .iter()
            .filter(|(_, d)| d.is_closed_to_more(now, self.limits.per_destination))
            .map(|((tenant, destination), _)| (tenant.clone(), destination.clone()))
            .unzip();
        Skip {
            tenants: self
                .tenants
                .iter()
                .filter(|&(_, &in_flight)| in_flight >= self.limits.per_tenant)
                .map(|(tenant, _)| tenant.clone())
                .collect(),
            tenants_of,
            destinations,
        }
    }

    pub fn started(&mut self, due: &DueDelivery) {
        *self.tenants.entry(due.tenant.clone()).or_default() += 1;
        self.destinations.entry(key(due)).or_default().in_flight += 1;
    }

    /// Records a call's end; the pause when this one paused its destination.
    pub fn finished(
        &mut self,
        due: &DueDelivery,
        health: Health,
        now: Instant,
    ) -> Option<Duration> {
        if let Some(in_flight) = self.tenants.get_mut(&due.tenant) {
            *in_flight = in_flight.saturating_sub(1);
            if *in_flight == 0 {
                self.tenants.remove(&due.tenant);
            }
        }
        let key = key(due);
        let destination = self.destinations.get_mut(&key)?;
        destination.in_flight = destination.in_flight.saturating_sub(1);
        let paused = match health {
            Health::Unknown => None,
            Health::Answered => {
                *destination = Destination {
                    in_flight: destination.in_flight,
                    ..Destination::default()
                };
                None
            }
            Health::Failing => {
                destination.failures_in_a_row += 1;
                destination.last_failed = Some(now);
                let already_paused = destination.paused_until.is_some_and(|until| until > now);
                let pause_after = self.limits.pause_after;
                (pause_after > 0 && destination.failures_in_a_row >= pause_after && !already_paused)
                    .then(|| {
                        let doublings = destination.pauses_in_a_row.min(16);
                        let pause = self
                            .limits
                            .pause
                            .saturating_mul(1 << doublings)
                            .min(MAX_PAUSE);
                        destination.pauses_in_a_row += 1;
                        destination.paused_until = Some(now + pause);
                        pause
                    })
            }
        };
        // Whatever else has been idle long enough goes too: a tenant with many host names
        // must not grow this map, nor the list of what the next round skips.
        self.destinations.retain(|_, d| !d.is_forgettable(now));
        paused
    }
}

fn key(due: &DueDelivery) -> (String, String) {
    (due.tenant.clone(), due.destination.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(tenant: &str, destination: &str) -> DueDelivery {
        DueDelivery {
            job_id: uuid::Uuid::now_v7(),
            url: format!("http://{destination}/hook"),
            round: 1,
            attempt: 1,
            round_attempt: 1,
            owed_at: chrono::Utc::now(),
            key_secret: None,
            tenant: tenant.into(),
            destination: destination.into(),
        }
    }

    fn limits() -> Limits {
        Limits {
            per_tenant: 2,
            per_destination: 3,
            pause_after: 2,
            pause: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_tenant_or_its_destination_at_its_cap_is_skipped_until_a_call_ends() {
        let mut fairness = Fairness::new(Limits {
            per_tenant: 3,
            per_destination: 2,
            ..limits()
        });
        let now = Instant::now();
        let (a1, a2, a3, b1) = (
            due("a", "x:80"),
            due("a", "x:80"),
            due("a", "y:80"),
            due("b", "x:80"),
        );
        for call in [&a1, &a2, &b1] {
            fairness.started(call);
        }
        // A's two calls to x fill its share of x; B's use of x is B's own.
        let skip = fairness.skip(now);
        assert_eq!(
            (skip.tenants_of, skip.destinations),
            (vec!["a".into()], vec!["x:80".into()])
        );
        assert!(skip.tenants.is_empty());
        fairness.started(&a3);
        assert_eq!(fairness.skip(now).tenants, ["a"]);

        for call in [&a1, &a2, &a3, &b1] {
            fairness.finished(call, Health::Answered, now);
        }

        assert_eq!(fairness.skip(now), Skip::default());
        assert!(fairness.destinations.is_empty() && fairness.tenants.is_empty());
    }

    #[test]
    fn one_tenants_failures_at_a_host_do_not_pause_it_for_another() {
        let mut fairness = Fairness::new(limits());
        let now = Instant::now();
        let failing: Vec<DueDelivery> = (0..2).map(|_| due("a", "shared:80")).collect();
        failing.iter().for_each(|c| fairness.started(c));
        failing.iter().for_each(|c| {
            fairness.finished(c, Health::Failing, now);
        });

        let skip = fairness.skip(now);

        assert_eq!(
            (skip.tenants_of, skip.destinations),
            (vec!["a".into()], vec!["shared:80".into()])
        );
    }

    #[test]
    fn failures_in_a_row_pause_a_destination_then_one_probe_goes() {
        let mut fairness = Fairness::new(limits());
        let start = Instant::now();
        let calls: Vec<DueDelivery> = (0..3).map(|_| due("a", "dead:80")).collect();
        calls.iter().for_each(|c| fairness.started(c));

        assert_eq!(fairness.finished(&calls[0], Health::Failing, start), None);
        let paused = fairness.finished(&calls[1], Health::Failing, start);
        // A call already in flight failing too does not pause it again.
        let again = fairness.finished(&calls[2], Health::Failing, start);

        assert_eq!((paused, again), (Some(Duration::from_secs(30)), None));
        assert_eq!(fairness.skip(start).destinations, ["dead:80"]);
        let after = start + Duration::from_secs(31);
        assert!(fairness.skip(after).destinations.is_empty());
        // One probe at a time; it fails: paused twice as long.
        let probe = due("a", "dead:80");
        fairness.started(&probe);
        assert_eq!(fairness.skip(after).destinations, ["dead:80"]);
        let paused = fairness.finished(&probe, Health::Failing, after);
        assert_eq!(paused, Some(Duration::from_secs(60)));
        // The next probe is answered: the destination is as new.
        let later = after + Duration::from_secs(61);
        let probe = due("a", "dead:80");
        fairness.started(&probe);
        fairness.finished(&probe, Health::Answered, later);
        assert!(fairness.destinations.is_empty() && fairness.tenants.is_empty());
    }

    #[test]
    fn a_destination_is_forgotten_an_hour_after_its_last_failure() {
        let mut fairness = Fairness::new(limits());
        let now = Instant::now();
        let failed = due("a", "gone:80");
        fairness.started(&failed);
        fairness.finished(&failed, Health::Failing, now);
        assert_eq!(
            fairness.destinations.len(),
            1,
            "one failure counts towards a pause"
        );

        // Any call's end sweeps: a tenant with many host names does not grow the map.
        let other = due("b", "elsewhere:80");
        fairness.started(&other);
        fairness.finished(&other, Health::Answered, now + MAX_PAUSE);

        assert!(fairness.destinations.is_empty() && fairness.tenants.is_empty());
    }

    #[test]
    fn a_receiver_that_answers_4xx_is_up_but_429_and_5xx_are_failing() {
        assert_eq!(Health::of(Some(204)), Health::Answered);
        assert_eq!(Health::of(Some(404)), Health::Answered);
        assert_eq!(Health::of(Some(429)), Health::Failing);
        assert_eq!(Health::of(Some(503)), Health::Failing);
        assert_eq!(Health::of(None), Health::Failing);
    }
}
