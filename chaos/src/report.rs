//! The suite's tables, in Markdown so they paste into notes and issues as they are.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    audit::Audit,
    faults::{Fault, FaultKind},
    load::Seen,
};

pub fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "NOT RECOVERED".into(),
        |d| format!("{:.1} s", d.as_secs_f64()),
    )
}

pub fn print(audit: &Audit, seen: &Seen, faults: &[Fault], elapsed: Duration) {
    let failed_total: usize = audit.failed.values().sum();
    let failed_reasons = if audit.failed.is_empty() {
        String::new()
    } else {
        let reasons: Vec<String> = audit
            .failed
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        format!(" ({})", reasons.join(", "))
    };
    println!();
    println!("| jobs | count |");
    println!("| --- | ---: |");
    println!("| accepted | {} |", audit.accepted);
    println!("| completed | {} |", audit.completed);
    println!("| failed | {failed_total}{failed_reasons} |");
    println!("| cancelled | {} |", audit.cancelled);
    println!(
        "| **lost** (no final status, or completed without every result) | **{}** |",
        audit.lost()
    );
    println!(
        "| **duplicated** (a prompt's result stored twice) | **{}** |",
        audit.duplicated
    );
    println!(
        "| results stored for a prompt the job lacks | {} |",
        audit.misplaced
    );
    println!(
        "| final status the client read differs from PostgreSQL | {} |",
        audit.disagreements
    );
    println!(
        "| jobs no client was given an id for (unfinished) | {} ({}) |",
        audit.unknown_to_clients, audit.unknown_unfinished
    );
    println!(
        "| jobs claimed again after a fault (one outcome kept) | {} |",
        audit.rerun
    );
    println!(
        "| submissions retried with the same Idempotency-Key | {} |",
        seen.resubmitted
    );
    println!(
        "| submissions refused (4xx) / abandoned | {} / {} |",
        seen.refused.len(),
        seen.abandoned
    );
    println!("| HTTP 500 answers | {} |", seen.server_errors);
    println!("| cancel requests | {} |", seen.cancel_requests);
    println!(
        "| wall time | {:.0} s ({:.1} jobs/s) |",
        elapsed.as_secs_f64(),
        audit.accepted as f64 / elapsed.as_secs_f64()
    );
    if !audit.missing.is_empty() || !audit.unfinished.is_empty() || !audit.incomplete.is_empty() {
        println!(
            "\nlost jobs: missing {:?}, unfinished {:?}, incomplete {:?}",
            first(&audit.missing),
            first(&audit.unfinished),
            first(&audit.incomplete)
        );
    }
    if let Some(answer) = seen.refused.first() {
        println!("\nfirst refusal: {answer}");
    }

    let mut by_kind: BTreeMap<FaultKind, Vec<&Fault>> = BTreeMap::new();
    for fault in faults {
        by_kind.entry(fault.kind).or_default().push(fault);
    }
    println!();
    println!(
        "| fault | injected | unfinished jobs at the fault (max) | recovery: median | recovery: longest | killed worker's jobs running again: longest |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (kind, faults) in &by_kind {
        let unrecovered = faults.iter().filter(|f| f.recovery.is_none()).count();
        let mut recoveries: Vec<Duration> = faults.iter().filter_map(|f| f.recovery).collect();
        recoveries.sort();
        let median = recoveries.get(recoveries.len() / 2).copied();
        let longest = if unrecovered > 0 {
            format!("{unrecovered} NOT RECOVERED")
        } else {
            seconds(recoveries.last().copied())
        };
        let pickup = match kind {
            FaultKind::WorkerKill => {
                let held: usize = faults.iter().map(|f| f.held).sum();
                let longest = faults
                    .iter()
                    .map(|f| f.pickup)
                    .max_by_key(|p| p.map(|d| d.as_nanos()));
                match longest {
                    Some(p) if faults.iter().all(|f| f.pickup.is_some()) => {
                        format!("{} ({held} jobs held in all)", seconds(p))
                    }
                    _ => "NOT PICKED UP".into(),
                }
            }
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {} | {} | {longest} | {pickup} |",
            kind.label(),
            faults.len(),
            faults.iter().map(|f| f.unfinished).max().unwrap_or(0),
            seconds(median),
        );
    }
    println!();
    println!(
        "recovery: from the fault until every job unfinished at that moment had finished \
         (completed, failed or cancelled)."
    );
}

fn first(ids: &[uuid::Uuid]) -> &[uuid::Uuid] {
    &ids[..ids.len().min(5)]
}
