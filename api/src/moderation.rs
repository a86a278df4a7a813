//! Refusing prompts that contain a forbidden word, whatever its disguise. Text and words are
//! compared in canonical forms: NFKC (fullwidth and other compatibility forms become plain
//! letters), the UTS #39 confusable skeleton (lookalikes such as Cyrillic `а` map to their Latin
//! prototype, and invisible format characters such as a zero-width space disappear) and lower
//! case. The skeleton maps capital `I` to `l`, so both orders count: skeleton first catches
//! "vioIence", lower case first keeps "VIOLENCE" a match. Matching is by whole word, so "chateau"
//! and "whatever" never match "hate".

use std::{collections::HashSet, path::Path};

use anyhow::Context;
use unicode_normalization::UnicodeNormalization;
use unicode_security::skeleton;

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
    let compatible: String = text.nfkc().collect();
    [
        skeleton(&compatible).collect::<String>().to_lowercase(),
        skeleton(&compatible.to_lowercase()).collect(),
    ]
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
            "I h\u{200b}ate this",  // zero-width space inside the word
            "I ｈａｔｅ this",      // fullwidth letters
            "I h\u{0430}te this",   // Cyrillic a
            "I hat\u{0435} this",   // Cyrillic e
            "vio\u{0406}ence",      // Cyrillic I for l
            "so much h\u{00AD}ate", // soft hyphen
        ] {
            assert!(words().matches(disguised), "{disguised:?}");
        }
        assert!(!words().matches("a ｃｈａｔｅａｕ, whatever"));
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
