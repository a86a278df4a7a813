//! The API's GPT-2 tokenizer (genq-model, pure Rust) against llama.cpp's, which the workers run:
//! the same token ids for a varied corpus and around every code point, so that the API's count of a
//! prompt's tokens is the count the worker meets.

use genq_model::ModelFile;
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;

fn both() -> (std::sync::Arc<genq_engine::Model>, ModelFile) {
    let llama = crate::common::tiny_model();
    let rust = ModelFile::read(llama.path()).unwrap();
    (llama, rust)
}

/// Each text's llama.cpp tokens beside genq-model's; fails naming the differing texts.
fn assert_same_tokens(texts: &[String]) {
    let (llama, rust) = both();
    let differing: Vec<_> = texts
        .iter()
        .filter_map(|text| {
            let expected: Vec<u32> = llama
                .prompt_tokens(text)
                .iter()
                .map(|t| t.0 as u32)
                .collect();
            let actual = rust.tokenizer().prompt_tokens(text);
            (expected != actual)
                .then(|| format!("{text:?}\n  llama.cpp {expected:?}\n  genq      {actual:?}"))
        })
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} texts tokenize differently; the first:\n{}",
        differing.len(),
        texts.len(),
        differing
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const WORDS: &[&str] = &[
    "the",
    "Hello",
    "world",
    "GPT",
    "tokenizer",
    "naïve",
    "café",
    "Straße",
    "Ünïcödé",
    "don",
    "OpenAI",
    "ECMAScript",
    "x",
    "I",
    "a",
    "supercalifragilisticexpialidocious",
    "URL",
    "https",
];
const SUFFIXES: &[&str] = &[
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'RE", "'", "''",
];
const PUNCTUATION: &str = "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'«»“”—–…¿¡";
/// Spaces and line breaks of every kind llama.cpp calls whitespace, and a few it does not (zero
/// width space, word joiner).
const SPACES: &[char] = &[
    ' ', ' ', ' ', '\t', '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{a0}', '\u{1680}',
    '\u{2003}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{3000}', '\u{200b}', '\u{2060}',
];
/// Scripts and blocks: Latin-1 letters, combining marks, Greek, Cyrillic, Hebrew, Arabic (and its
/// digits), Devanagari (and its signs), Thai, Hangul, CJK (and Extension I, new in Unicode 15.1),
/// fullwidth forms, mathematical letters, emoji and their modifiers, private use.
const RANGES: &[(u32, u32)] = &[
    (0xC0, 0xFF),
    (0x300, 0x36F),
    (0x391, 0x3C9),
    (0x410, 0x44F),
    (0x5D0, 0x5EA),
    (0x621, 0x64A),
    (0x660, 0x669),
    (0x905, 0x94D),
    (0xE01, 0xE5B),
    (0xAC00, 0xD7A3),
    (0x4E00, 0x9FFF),
    (0x2EBF0, 0x2EE5D),
    (0xFF01, 0xFF5E),
    (0x1D400, 0x1D7FF),
    (0x1F300, 0x1F64F),
    (0x1F3FB, 0x1F3FF),
    (0xE000, 0xE0FF),
];

fn piece(rng: &mut ChaCha8Rng) -> String {
    let mut s = String::new();
    match rng.random_range(0..10) {
        0 => {
            s += WORDS.choose(rng).unwrap();
            if rng.random_bool(0.5) {
                s += SUFFIXES.choose(rng).unwrap();
            }
        }
        1 => (0..rng.random_range(1..30)).for_each(|_| s.push(rng.random_range('0'..='9'))),
        2 => {
            let marks: Vec<char> = PUNCTUATION.chars().collect();
            (0..rng.random_range(1..8)).for_each(|_| s.push(*marks.choose(rng).unwrap()));
        }
        3 => (0..rng.random_range(1..7)).for_each(|_| s.push(*SPACES.choose(rng).unwrap())),
        4 | 5 => {
            let &(low, high) = RANGES.choose(rng).unwrap();
            (0..rng.random_range(1..12)).for_each(|_| {
                s.extend(char::from_u32(rng.random_range(low..=high)));
            });
        }
        // Any code point at all: controls, unassigned, noncharacters, the last planes.
        6 => (0..rng.random_range(1..6)).for_each(|_| {
            s.extend(char::from_u32(rng.random_range(0..=0x10FFFF)));
        }),
        // Long words: BPE over hundreds of symbols.
        7 => {
            let letter = rng.random_range('a'..='z');
            let varied = rng.random_bool(0.5);
            (0..rng.random_range(100..1500)).for_each(|_| {
                s.push(if varied {
                    rng.random_range('a'..='z')
                } else {
                    letter
                });
            });
        }
        8 => {
            s += [
                "<|endoftext|>",
                "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}",
                "e\u{301}",
                "🇫🇷",
            ]
            .choose(rng)
            .unwrap()
        }
        _ => s.push(' '),
    }
    s
}

#[test]
fn genq_tokenizes_a_varied_corpus_as_llama_cpp_does() {
    let mut rng = ChaCha8Rng::seed_from_u64(27);
    let mut texts: Vec<String> = (0..12_000)
        .map(|_| {
            let pieces = rng.random_range(1..14);
            (0..pieces).map(|_| piece(&mut rng)).collect()
        })
        .collect();
    texts.extend(["", " ", "  ", "\n\n", "'", "'s", " 's", "Hello, my name is"].map(String::from));

    assert_same_tokens(&texts);
}

#[test]
fn genq_tokenizes_every_code_point_as_llama_cpp_does() {
    // Each code point beside a letter, a digit, punctuation and spaces, so that its class decides
    // where the words split.
    let around = |c: char| format!("a{c}1{c}!{c} {c}{c}  {c}\n");
    let scalars: Vec<char> = (0..=0x10FFFF).filter_map(char::from_u32).collect();
    let texts: Vec<String> = scalars
        .chunks(256)
        .map(|chunk| chunk.iter().map(|&c| around(c)).collect())
        .collect();

    assert_same_tokens(&texts);
}

#[test]
fn a_changed_merge_is_caught_by_the_comparison() {
    // The comparison must be able to fail: drop GPT-2's first merge ("Ġ t") from a copy of the
    // model, and " the" no longer tokenizes as llama.cpp does.
    let (llama, _) = both();
    let mut metadata = genq_model::Metadata::read(llama.path()).unwrap();
    let merges: Vec<String> = metadata
        .string_list("tokenizer.ggml.merges")
        .unwrap()
        .into_iter()
        .skip(1)
        .map(str::to_owned)
        .collect();
    metadata.insert(
        "tokenizer.ggml.merges",
        genq_model::gguf::Value::strings(merges),
    );
    let changed = genq_model::Gpt2Tokenizer::from_metadata(&metadata).unwrap();

    let expected: Vec<u32> = llama
        .prompt_tokens(" the")
        .iter()
        .map(|t| t.0 as u32)
        .collect();
    assert_eq!(expected, [262]);
    assert_ne!(changed.prompt_tokens(" the"), expected);
}
