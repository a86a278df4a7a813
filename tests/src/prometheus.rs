//! Reading a `/metrics` answer (Prometheus text format) back: series by name and labels.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a scrape; comment lines (`# HELP`, `# TYPE`) are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("not a sample line: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, rest)) = series.split_once('{') else {
        return Some(Sample {
            name: series.to_owned(),
            labels: BTreeMap::new(),
            value,
        });
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.strip_suffix('}')?.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut label = String::new();
        loop {
            match chars.next()? {
                '\\' => label.push(match chars.next()? {
                    'n' => '\n',
                    other => other,
                }),
                '"' => break,
                c => label.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), label);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The value of the series `name` whose labels are exactly `labels`, if it was exported.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_braces_commas_and_escapes_are_read_whole() {
        let text = "# TYPE x counter\nx{route=\"/batch/{task_id}/cancel\",note=\"a,\\\"b\\\"\"} 3\ny 1.5\nz_bucket{le=\"+Inf\"} 2\n";

        let samples = parse(text);

        assert_eq!(
            value(
                &samples,
                "x",
                &[("route", "/batch/{task_id}/cancel"), ("note", "a,\"b\"")]
            ),
            Some(3.0)
        );
        assert_eq!(value(&samples, "y", &[]), Some(1.5));
        assert_eq!(value(&samples, "z_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(value(&samples, "x", &[]), None);
    }
}
