//! The output filter: generated text that looks like a payment-card number (Luhn-valid), a US
//! Social Security number or an e-mail address is redacted before it is stored, so a model that
//! memorised such data never hands it out. Workers apply it to every result.

use std::sync::LazyLock;

use regex::{Captures, Regex};

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
        .expect("a valid pattern")
});
/// Area 001-899 but not 666, group 01-99, serial 0001-9999, as the SSA issues them.
static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{3})-(\d{2})-(\d{4})\b").expect("a valid pattern"));
/// 13 to 19 digits, optionally grouped by single spaces or dashes.
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("a valid pattern"));

pub const EMAIL_MARK: &str = "[redacted email]";
pub const SSN_MARK: &str = "[redacted ssn]";
pub const CARD_MARK: &str = "[redacted card]";

/// The text with every match replaced, or `None` when nothing matched.
pub fn redact(text: &str) -> Option<String> {
    let mut changed = false;
    let text = EMAIL.replace_all(text, |_: &Captures| {
        changed = true;
        EMAIL_MARK
    });
    let text = SSN.replace_all(&text, |c: &Captures| {
        if is_issued_ssn(&c[1], &c[2], &c[3]) {
            changed = true;
            SSN_MARK.to_owned()
        } else {
            c[0].to_owned()
        }
    });
    let text = CARD.replace_all(&text, |c: &Captures| {
        if luhn_valid(&c[0]) {
            changed = true;
            CARD_MARK.to_owned()
        } else {
            c[0].to_owned()
        }
    });
    changed.then(|| text.into_owned())
}

fn is_issued_ssn(area: &str, group: &str, serial: &str) -> bool {
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

fn luhn_valid(number: &str) -> bool {
    let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2 == 1, d * 2) {
            (true, doubled) if doubled > 9 => doubled - 9,
            (true, doubled) => doubled,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_valid_card_numbers_are_redacted_in_any_grouping() {
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
        ] {
            assert_eq!(
                redact(&format!("pay with {card} today")).as_deref(),
                Some("pay with [redacted card] today"),
                "{card}"
            );
        }
        // One digit off: not a card number.
        assert_eq!(redact("order 4111111111111112 shipped"), None);
    }

    #[test]
    fn issued_ssns_and_emails_are_redacted() {
        assert_eq!(
            redact("SSN 123-45-6789, mail jane.doe+x@mail.example.com").as_deref(),
            Some("SSN [redacted ssn], mail [redacted email]")
        );
        // Never issued: area 000, 666 or 9xx, group 00, serial 0000.
        for fake in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert_eq!(redact(fake), None, "{fake}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        assert_eq!(redact("Once upon a time, in 1999, at 10:45 @home"), None);
    }
}
