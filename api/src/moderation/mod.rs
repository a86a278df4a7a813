//! Refusing prompts that contain a forbidden word, whatever its disguise. Text and words are
//! compared in canonical forms, built the same way for both:
//! - NFKD, then every combining mark and invisible format character dropped: accents, strokes
//!   drawn over letters (`h̶a̶t̶e̶`), fullwidth and other compatibility forms, zero-width spaces
//!   and soft hyphens all fall away, and `mörder` on the list matches `mörder` and `morder`;
//! - the Latin letters no decomposition reaches mapped to their base letter ([`letters`]: small
//!   capitals `ʜᴀᴛᴇ`, barred `ħ`, hooked `ɦ`, and `ŀ`, which would decompose to `l` and a middle
//!   dot, a word break);
//! - full case folding (`ß` is `ss`);
//! - the UTS #39 confusable skeleton: lookalikes of other scripts (Cyrillic `а`) become their
//!   Latin prototype.
//!
//! The skeleton maps capital `I` to `l`, so both orders count: skeleton first catches "vioIence",
//! case folding first keeps "VIOLENCE" a match. Matching is by whole word, so "chateau" and
//! "whatever" never match "hate".

mod letters;

use std::{collections::HashSet, path::Path};

use anyhow::Context;
use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};
use unicode_security::skeleton;

use letters::LETTER_VARIANTS;

#[derive(Debug, Default)]
pub struct ForbiddenWords(HashSet<String>);

impl ForbiddenWords {
    pub fn new<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> Self {
        ForbiddenWords(
            words
                .into_iter()
                .flat_map(|w| canonical_forms(w.as_ref().trim()))
                .filter(|w| !w.is_empty())
                .collect(),
        )
    }

    /// The words given, plus those of `file` if any: one a line, `#` starts a comment.
    pub fn load(words: &[String], file: Option<&Path>) -> anyhow::Result<Self> {
        let mut all: Vec<String> = words.to_vec();
        if let Some(file) = file {
            let listed = std::fs::read_to_string(file)
                .with_context(|| format!("reading the forbidden words in {}", file.display()))?;
            all.extend(
                listed
                    .lines()
                    .map(|line| line.split('#').next().unwrap_or("").trim().to_owned()),
            );
        }
        Ok(Self::new(all))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `text` contains one of the words as a whole word.
    pub fn matches(&self, text: &str) -> bool {
        !self.0.is_empty()
            && canonical_forms(text).iter().any(|form| {
                form.split(|c: char| !c.is_alphanumeric())
                    .any(|word| !word.is_empty() && self.0.contains(word))
            })
    }
}

fn canonical_forms(text: &str) -> [String; 2] {
    let plain = plain_letters(text);
    let skeleton_first = plain_letters(&caseless::default_case_fold_str(&plain_letters(
        &skeleton(&plain).collect::<String>(),
    )));
    let folded_first = plain_letters(
        &skeleton(&plain_letters(&caseless::default_case_fold_str(&plain))).collect::<String>(),
    );
    [skeleton_first, folded_first]
}

/// NFKD without marks and invisible format characters, and with the letter variants mapped to
/// their base letters.
fn plain_letters(text: &str) -> String {
    // Mapped before NFKD too: a few decompose into their letter and a modifier letter (`ẚ`).
    text.chars()
        .map(base_letter)
        .collect::<String>()
        .nfkd()
        .filter(|&c| !is_combining_mark(c) && !is_invisible(c))
        .map(base_letter)
        .collect()
}

fn base_letter(c: char) -> char {
    match LETTER_VARIANTS.binary_search_by_key(&c, |&(variant, _)| variant) {
        Ok(at) => LETTER_VARIANTS[at].1,
        Err(_) => c,
    }
}

/// Unicode's Default_Ignorable_Code_Point: characters that show nothing and so join the letters
/// around them (zero-width space and joiners, soft hyphen, bidirectional marks, word joiner,
/// BOM, variation selectors, tags).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words() -> ForbiddenWords {
        ForbiddenWords::new(["hate", "violence"])
    }

    #[test]
    fn whole_words_match_in_any_case() {
        assert!(words().matches("I HATE Mondays"));
        assert!(words().matches("violence!"));
        assert!(words().matches("VIOLENCE!"));
        assert!(words().matches("so much hate."));
        assert!(!words().matches("a chateau whatever"));
        assert!(!words().matches("hatred"));
        assert!(!ForbiddenWords::default().matches("hate"));
    }

    #[test]
    fn obfuscated_words_still_match() {
        for disguised in [
            "I h\u{200b}ate this",              // zero-width space inside the word
            "I ｈａｔｅ this",                  // fullwidth letters
            "I h\u{0430}te this",               // Cyrillic a
            "I hat\u{0435} this",               // Cyrillic e
            "vio\u{0406}ence",                  // Cyrillic I for l
            "so much h\u{00AD}ate",             // soft hyphen
            "h\u{336}a\u{336}t\u{336}e\u{336}", // strikethrough overlay
            "ha\u{301}te",                      // combining acute
            "h\u{323}ate",                      // combining dot below
            "\u{29C}\u{1D00}\u{1D1B}\u{1D07}",  // small capitals
            "\u{127}ate",                       // h with stroke
            "vio\u{140}ence",                   // l with middle dot
            "vio\u{13F}ENCE",                   // capital L with middle dot
            "H\u{202E}ATE",                     // right-to-left override
            "so\u{B7}much\u{B7}hate",           // middle dots between words
            "so\u{22C5}much\u{30FB}hate",       // lookalikes of the middle dot
        ] {
            assert!(words().matches(disguised), "{disguised:?}");
        }
        assert!(!words().matches("a ｃｈａｔｅａｕ, whatever"));
    }

    #[test]
    fn words_with_accents_on_the_list_match_however_written() {
        let words = ForbiddenWords::new(["mörder", "café", "naïve", "straße"]);

        for text in [
            "ein mörder",
            "ein MÖRDER",
            "ein mo\u{308}rder", // decomposed
            "ein morder",
            "un café noir",
            "un cafe\u{301} noir",
            "so naïve",
            "so NAIVE",
            "die Strasse",
            "die STRASSE",
        ] {
            assert!(words.matches(text), "{text:?}");
        }
        assert!(!words.matches("die Mörderin, ein Cafeteria"));
    }

    #[test]
    fn ordinary_words_that_are_not_forbidden_pass() {
        for text in [
            "a chateau, whatever",
            "Thatcher and hatred",
            "naïve café façade",
            "Ångström, Øresund, Łódź",
            "haste; he hated it",
            "violent violins, nonviolence",
            "col·lecció",
        ] {
            assert!(!words().matches(text), "{text:?}");
        }
    }

    /// Each letter of a forbidden word replaced, one at a time, by `variant`.
    fn with_letter_replaced(word: &str, letter: char, variant: char) -> Vec<String> {
        word.char_indices()
            .filter(|&(_, c)| c == letter)
            .map(|(at, _)| format!("{}{variant}{}", &word[..at], &word[at + 1..]))
            .collect()
    }

    /// Every Latin letter variant Unicode names after a base letter: accented and barred letters
    /// of both cases, small capitals, fullwidth and mathematical letters, modifier and
    /// subscript letters.
    fn named_latin_variants() -> Vec<(char, char)> {
        let name_patterns = [
            r"^LATIN (SMALL|CAPITAL) LETTER (?<letter>[A-Z]) WITH (?<with>.+)$",
            r"^LATIN (LETTER|CAPITAL LETTER) SMALL CAPITAL (?<letter>[A-Z])$",
            r"^(FULLWIDTH LATIN|MODIFIER LETTER|MATHEMATICAL [A-Z -]+) (SMALL|CAPITAL) (LETTER )?(?<letter>[A-Z])$",
            r"^LATIN SUBSCRIPT SMALL LETTER (?<letter>[A-Z])$",
        ];
        let patterns: Vec<regex::Regex> = name_patterns
            .iter()
            .map(|p| regex::Regex::new(p).unwrap())
            .collect();
        (0..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter_map(|c| {
                let name = unicode_names2::name(c)?.to_string();
                let found = patterns.iter().find_map(|p| p.captures(&name))?;
                // Digraphs ("D WITH SMALL LETTER Z") are two letters.
                if found
                    .name("with")
                    .is_some_and(|w| w.as_str().contains("LETTER"))
                {
                    return None;
                }
                let letter = found.name("letter")?.as_str().chars().next()?;
                Some((c, letter.to_ascii_lowercase()))
            })
            .collect()
    }

    #[test]
    fn every_latin_letter_variant_by_name_is_mapped() {
        let variants = named_latin_variants();
        assert!(variants.len() > 1_000, "{} variants", variants.len());
        // Between them, every letter from a to z.
        let list = [
            "hate", "violence", "jumps", "quiz", "brown", "fox", "lazy", "dog", "kiwi",
        ];
        let words = ForbiddenWords::new(list);
        let mut missed = Vec::new();
        for (variant, letter) in variants {
            let word = list.iter().find(|w| w.contains(letter)).unwrap();
            for disguised in with_letter_replaced(word, letter, variant) {
                if !words.matches(&disguised) {
                    let name = unicode_names2::name(variant)
                        .unwrap()
                        .to_string()
                        .to_lowercase();
                    missed.push(format!(
                        "    ('\\u{{{:04X}}}', '{letter}'), // {name}",
                        variant as u32
                    ));
                }
            }
        }
        missed.dedup();
        assert!(
            missed.is_empty(),
            "add to letters.rs:\n{}",
            missed.join("\n")
        );
    }

    #[test]
    fn the_letter_table_is_sorted_for_its_binary_search() {
        assert!(LETTER_VARIANTS.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }

    #[test]
    fn every_combining_mark_is_seen_through() {
        let marks: Vec<char> = (0..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter(|&c| {
                is_combining_mark(c)
                    || unicode_names2::name(c)
                        .is_some_and(|n| n.to_string().starts_with("COMBINING "))
            })
            .collect();
        assert!(marks.len() > 2_000, "{} marks", marks.len());
        let words = words();
        for mark in marks {
            let disguised: String = "hate".chars().flat_map(|c| [c, mark]).collect();
            assert!(words.matches(&disguised), "U+{:04X}", mark as u32);
        }
    }

    #[test]
    fn a_list_file_adds_words_and_skips_comments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("words.txt");
        std::fs::write(&file, "# one a line\ngrim\n\n  dread  # trailing comment\n").unwrap();
        let words = ForbiddenWords::load(&["hate".into()], Some(&file)).unwrap();
        assert_eq!(words.len(), 3, "each word's forms coincide here");
        assert!(words.matches("a grim tale"));
        assert!(words.matches("DREAD"));
        assert!(!words.matches("one a line"));
    }
}
