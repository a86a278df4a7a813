//! GPT-2's pre-tokenizer: text split into the words that byte-pair merges then work within, as
//! llama.cpp's `unicode_regex_split_custom_gpt2` does it (so, code point classes included, as the
//! workers' llama.cpp does). The regular expression it implements:
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

use super::classes::{RANGES, WHITESPACE};

/// A code point's general category as the pre-tokenizer sees it: letters (`\p{L}`), numbers
/// (`\p{N}`), and everything else, unassigned code points included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Letter,
    Number,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Flags {
    class: Class,
    whitespace: bool,
}

fn flags(c: char) -> Flags {
    let cp = u32::from(c);
    // RANGES starts at 0, so some range always holds `cp`.
    let range = RANGES.partition_point(|&(start, _)| start <= cp) - 1;
    Flags {
        class: RANGES[range].1,
        whitespace: WHITESPACE.binary_search(&cp).is_ok(),
    }
}

/// The words of `text`, in order; together they are the whole text.
pub(super) fn words(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let char_at = |pos: usize| chars.get(pos).map(|&(_, c)| c);
    // `None` past the end: no class matches there, as llama.cpp's empty flags match none.
    let flags_at = |pos: usize| char_at(pos).map(flags);
    let byte_at = |pos: usize| chars.get(pos).map_or(text.len(), |&(offset, _)| offset);
    let is = |pos: usize, class: Class| flags_at(pos).is_some_and(|f| f.class == class);
    let is_other =
        |pos: usize| flags_at(pos).is_some_and(|f| f.class == Class::Other && !f.whitespace);
    let is_space = |pos: usize| flags_at(pos).is_some_and(|f| f.whitespace);

    let mut words = Vec::new();
    let mut pos = 0;
    while pos < n {
        let c = chars[pos].1;
        let end = word_end(pos, c, n, &char_at, &is, &is_other, &is_space);
        words.push(&text[byte_at(pos)..byte_at(end)]);
        pos = end;
    }
    words
}

/// Where the word starting at `pos` (with code point `c`) ends.
fn word_end(
    pos: usize,
    c: char,
    n: usize,
    char_at: &impl Fn(usize) -> Option<char>,
    is: &impl Fn(usize, Class) -> bool,
    is_other: &impl Fn(usize) -> bool,
    is_space: &impl Fn(usize) -> bool,
) -> usize {
    // 's|'t|'re|'ve|'m|'ll|'d (lowercase only, as GPT-2's expression is)
    if c == '\'' {
        match (char_at(pos + 1), char_at(pos + 2)) {
            (Some('s' | 't' | 'm' | 'd'), _) => return pos + 2,
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => {
                return pos + 3;
            }
            _ => {}
        }
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
    let start = pos + usize::from(c == ' ');
    for class in [Class::Letter, Class::Number] {
        if is(start, class) {
            return (start..).find(|&p| !is(p, class)).unwrap_or(n);
        }
    }
    if is_other(start) {
        return (start..).find(|&p| !is_other(p)).unwrap_or(n);
    }
    let spaces = (pos..).take_while(|&p| is_space(p)).count();
    match spaces {
        // `\s+(?!\S)`: a run of spaces before a word leaves its last space to that word.
        2.. if pos + spaces < n => pos + spaces - 1,
        // `\s+`
        1.. => pos + spaces,
        // Nothing matched: the code point alone.
        0 => pos + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_gpt2s_expression() {
        let cases: &[(&str, &[&str])] = &[
            ("Hello, my name is", &["Hello", ",", " my", " name", " is"]),
            (
                "I'm here, they're 42!",
                &["I", "'m", " here", ",", " they", "'re", " 42", "!"],
            ),
            ("a   b", &["a", "  ", " b"]),
            ("a \n\tb  ", &["a", " \n", "\t", "b", "  "]),
            ("x2024ab", &["x", "2024", "ab"]),
            ("café ☕☕ ok", &["café", " ☕☕", " ok"]),
            ("I'S", &["I", "'", "S"]),
            (" ", &[" "]),
            ("", &[]),
        ];
        for (text, expected) in cases {
            assert_eq!(words(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn classes_are_llama_cpps() {
        assert_eq!(flags('a').class, Class::Letter);
        assert_eq!(flags('é').class, Class::Letter);
        assert_eq!(flags('٣').class, Class::Number);
        assert_eq!(flags('½').class, Class::Number);
        assert_eq!(flags('!').class, Class::Other);
        assert!(flags('\u{3000}').whitespace && flags('\u{85}').whitespace);
        assert!(!flags('\u{200b}').whitespace);
        // Unassigned in llama.cpp's tables (Unicode 15.1), a letter from Unicode 16 on.
        assert_eq!(flags('\u{1C89}').class, Class::Other);
        assert_eq!(flags(char::MAX).class, Class::Other);
    }
}
