//! The printed table (markdown): one row per system and workload, with ratios to llama.cpp alone
//! and to llama-server on the same workload; a row that could not run says why.

use crate::systems::{Row, System};

pub fn print(rows: &[Row]) {
    println!(
        "| workload | system | tokens/s | spread | x llama.cpp | x llama-server | p50 s | p95 s | \
         first result s | p95 short / long s | peak RSS MiB | note |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for row in rows {
        let reference = |system: System| {
            rows.iter()
                .find(|r| r.workload == row.workload && r.system == system)
                .and_then(|r| r.outcome.as_ref().ok())
                .map(|s| s.tokens_per_s)
        };
        let name = row.workload.describe();
        let summary = match &row.outcome {
            Err(why) => {
                println!(
                    "| {name} | {} | - | - | - | - | - | - | - | - | - | {} |",
                    row.label,
                    cell(why)
                );
                continue;
            }
            Ok(summary) => summary,
        };
        let ratio =
            |to: Option<f64>| to.map_or("-".into(), |t| format!("{:.2}", summary.tokens_per_s / t));
        let spread = if summary.runs_tokens_per_s.len() > 1 {
            format!("{:.0} %", 100.0 * summary.spread())
        } else {
            "-".into()
        };
        let latency = match &summary.latency {
            Some(l) => {
                let split = match (l.p95_short_s, l.p95_long_s) {
                    (Some(short), Some(long)) => format!("{short:.2} / {long:.2}"),
                    _ => "-".into(),
                };
                format!(
                    "{:.2} | {:.2} | {:.2} | {split}",
                    l.p50_s, l.p95_s, l.first_result_s
                )
            }
            None => "- | - | - | -".into(),
        };
        let rss = summary
            .peak_rss_bytes
            .map_or("-".into(), |b| (b >> 20).to_string());
        println!(
            "| {name} | {} | {:.1} | {spread} | {} | {} | {latency} | {rss} | {} |",
            row.label,
            summary.tokens_per_s,
            ratio(reference(System::LlamaCpp)),
            ratio(reference(System::LlamaServer)),
            cell(&row.note)
        );
    }
    println!();
    println!(
        "tokens/s: completion tokens over the time from the first request to the last answer its \
         client saw; spread: fastest minus slowest run, as a share of the median; latency: from \
         a request's arrival to its client seeing it final; peak RSS: the serving process's."
    );
}

/// Text made safe for one markdown cell: one line, no column separators.
fn cell(text: &str) -> String {
    text.replace('|', "/").replace(['\n', '\r'], " ")
}
