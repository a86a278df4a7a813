//! The output filter: generated text that looks like a payment-card number (Luhn-valid), a US
//! Social Security number or an e-mail address is redacted before it is stored, so a model that
//! memorised such data never hands it out. Workers apply it to every result.
//!
//! Digits of every script count as the digits they are (`١٢٣` is 123, so is `１２３`): the text
//! is checked with each Unicode decimal digit folded to ASCII, and what matches is cut from the
//! text as it was. Numbers may be grouped by spaces, dots or dashes, or not at all.

use std::sync::LazyLock;

use regex::Regex;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
        .expect("a valid pattern")
});
/// Area, group and serial, with the same separator (or none) between them.
static SSN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b([0-9]{3})([ .-]?)([0-9]{2})([ .-]?)([0-9]{4})\b").expect("a valid pattern")
});
/// 13 to 19 digits, optionally grouped by single spaces, dots or dashes.
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[0-9](?:[ .-]?[0-9]){12,18}\b").expect("a valid pattern"));
static DECIMAL_DIGIT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\p{Nd}$").expect("a valid pattern"));

pub const EMAIL_MARK: &str = "[redacted email]";
pub const SSN_MARK: &str = "[redacted ssn]";
pub const CARD_MARK: &str = "[redacted card]";

/// The text with every match replaced, or `None` when nothing matched.
pub fn redact(text: &str) -> Option<String> {
    let folded = Folded::new(text);
    let mut found: Vec<(usize, usize, &str)> = Vec::new();
    let mut add = |start: usize, end: usize, mark: &'static str| {
        // An earlier kind wins where two overlap (an e-mail address's digits are no card).
        if found.iter().all(|&(s, e, _)| end <= s || e <= start) {
            found.push((start, end, mark));
        }
    };
    for m in EMAIL.find_iter(&folded.text) {
        add(m.start(), m.end(), EMAIL_MARK);
    }
    for c in SSN.captures_iter(&folded.text) {
        if c[2] == c[4] && is_issued_ssn(&c[1], &c[3], &c[5]) {
            let whole = c.get(0).expect("group 0 always matches");
            add(whole.start(), whole.end(), SSN_MARK);
        }
    }
    for m in CARD.find_iter(&folded.text) {
        if luhn_valid(m.as_str()) {
            add(m.start(), m.end(), CARD_MARK);
        }
    }
    if found.is_empty() {
        return None;
    }
    found.sort_unstable_by_key(|&(start, ..)| start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, mark) in found {
        out.push_str(&text[at..folded.origin[start]]);
        out.push_str(mark);
        at = folded.origin[end];
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// The text with every decimal digit in ASCII, and for each of its byte offsets (one past the
/// end included) the offset in the original it came from.
struct Folded {
    text: String,
    origin: Vec<usize>,
}

impl Folded {
    fn new(original: &str) -> Folded {
        let mut text = String::with_capacity(original.len());
        let mut origin = Vec::with_capacity(original.len() + 1);
        for (at, c) in original.char_indices() {
            let folded = decimal_value(c).map_or(c, |d| char::from(b'0' + d));
            origin.extend(std::iter::repeat_n(at, folded.len_utf8()));
            text.push(folded);
        }
        origin.push(original.len());
        Folded { text, origin }
    }
}

/// The value of a decimal digit of any script. Unicode assigns these only in runs of ten
/// consecutive code points from 0 to 9 (a stability policy), so a digit's value is its place in
/// the stretch of decimal digits that holds it.
fn decimal_value(c: char) -> Option<u8> {
    if c.is_ascii_digit() {
        return Some(c as u8 - b'0');
    }
    if c.is_ascii() || !is_decimal_digit(c) {
        return None;
    }
    let mut before = 0u32;
    while char::from_u32(c as u32 - before - 1).is_some_and(is_decimal_digit) {
        before += 1;
    }
    Some((before % 10) as u8)
}

fn is_decimal_digit(c: char) -> bool {
    DECIMAL_DIGIT.is_match(c.encode_utf8(&mut [0; 4]))
}

fn is_issued_ssn(area: &str, group: &str, serial: &str) -> bool {
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// Takes the folded (ASCII) digits of a candidate number, separators ignored.
fn luhn_valid(number: &str) -> bool {
    let sum: u32 = number
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
        .rev()
        .enumerate()
        .map(|(i, d)| match (i % 2 == 1, d * 2) {
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

    /// The same text with its ASCII digits written in another script's digits, whose zero is `zero`.
    fn in_digits_from(zero: char, text: &str) -> String {
        text.chars()
            .map(|c| match c.to_digit(10) {
                Some(d) => char::from_u32(zero as u32 + d).unwrap(),
                None => c,
            })
            .collect()
    }

    #[test]
    fn luhn_valid_card_numbers_are_redacted_in_any_grouping() {
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
            "4111.1111.1111.1111",
        ] {
            assert_eq!(
                redact(&format!("pay with {card} today")).as_deref(),
                Some("pay with [redacted card] today"),
                "{card}"
            );
        }
        // One digit off: not a card number.
        assert_eq!(redact("order 4111111111111112 shipped"), None);
        assert_eq!(redact("order 4111.1111.1111.1112 shipped"), None);
    }

    #[test]
    fn issued_ssns_are_redacted_with_any_one_separator_or_none() {
        for ssn in ["123-45-6789", "123 45 6789", "123.45.6789", "123456789"] {
            assert_eq!(
                redact(&format!("SSN {ssn}, filed")).as_deref(),
                Some("SSN [redacted ssn], filed"),
                "{ssn}"
            );
        }
        // Mixed separators are not how an SSN is written; 10 digits are not one.
        assert_eq!(redact("ref 123-45.6789"), None);
        assert_eq!(redact("ref 1234567890"), None);
        // Never issued: area 000, 666 or 9xx, group 00, serial 0000.
        for fake in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123004567",
        ] {
            assert_eq!(redact(fake), None, "{fake}");
        }
    }

    #[test]
    fn emails_are_redacted() {
        assert_eq!(
            redact("mail jane.doe+x@mail.example.com or bob1@example.org").as_deref(),
            Some("mail [redacted email] or [redacted email]")
        );
    }

    #[test]
    fn digits_of_every_script_count_as_their_values() {
        // Arabic-Indic, Devanagari, fullwidth, mathematical bold (one of five adjacent runs).
        for zero in ['\u{0660}', '\u{0966}', '\u{FF10}', '\u{1D7CE}', '\u{1D7EC}'] {
            let card = in_digits_from(zero, "4111 1111 1111 1111");
            assert_eq!(
                redact(&format!("card {card}!")).as_deref(),
                Some("card [redacted card]!"),
                "{card}"
            );
            let ssn = in_digits_from(zero, "123-45-6789");
            assert_eq!(redact(&ssn).as_deref(), Some(SSN_MARK), "{ssn}");
            // Thirteen digits that are no card number stay as they are.
            let not_card = in_digits_from(zero, "1234567890123");
            assert_eq!(redact(&not_card), None, "{not_card}");
        }
        assert_eq!(redact("١٢٣٤٥٦٧٨٩٠١٢٣"), None);
        // The text around a match is kept exactly, other scripts' digits included.
        assert_eq!(
            redact("٣ x 4111111111111111 y ٧").as_deref(),
            Some("٣ x [redacted card] y ٧")
        );
    }

    #[test]
    fn decimal_digits_come_in_whole_runs_of_ten() {
        // What decimal_value relies on, checked on the regex crate's own Unicode tables: every
        // stretch of consecutive decimal digits is whole runs of ten.
        let mut stretches = Vec::new();
        let mut length = 0;
        for code in 0..=0x110000 {
            match char::from_u32(code).filter(|&c| is_decimal_digit(c)) {
                Some(_) => length += 1,
                None if length > 0 => {
                    stretches.push((code - length, length));
                    length = 0;
                }
                None => {}
            }
        }
        assert!(stretches.len() >= 50, "{} stretches", stretches.len());
        for (start, length) in stretches {
            assert_eq!(length % 10, 0, "the digits from U+{start:04X}");
        }
        assert_eq!(decimal_value('\u{0663}'), Some(3)); // Arabic-Indic three
        assert_eq!(decimal_value('\u{1D7F5}'), Some(9)); // the fourth run of mathematical digits
        assert_eq!(decimal_value('\u{00B2}'), None); // superscript two: a number, not a digit
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        assert_eq!(redact("Once upon a time, in 1999, at 10:45 @home"), None);
        assert_eq!(redact("version 1.2.3, call 555-0100"), None);
    }
}
