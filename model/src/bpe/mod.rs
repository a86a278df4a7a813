//! GPT-2's byte-level BPE tokenizer in Rust, built from a GGUF's own vocabulary and merges, giving
//! the token ids llama.cpp gives (`tokenize(text, add_special = false, parse_special = false)`).
//! `engine/tests/tokenizer.rs` checks that on a large corpus and on every code point.
//!
//! Text is split into words ([`split`]); each word's bytes become GPT-2's printable stand-ins for
//! bytes, one symbol each; then, as llama.cpp's `llm_tokenizer_bpe_session` does, the adjacent pair
//! with the lowest merge rank (leftmost first) is merged until no pair has a rank.

mod classes;
mod split;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
};

use anyhow::{Context, bail};

use crate::gguf::Metadata;

/// A symbol's id when its text is neither a token nor named by any merge.
const UNKNOWN: u32 = u32::MAX;

#[derive(Debug)]
pub struct Gpt2Tokenizer {
    /// Every token's text and id, and further ids (from `n_vocab` on) for texts that merges name
    /// but the vocabulary lacks.
    ids: HashMap<String, u32>,
    n_vocab: u32,
    /// Texts of the ids from `n_vocab` on.
    extra_texts: Vec<String>,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// The id of each byte's one-character stand-in ([`byte_stand_in`]).
    byte_ids: [u32; 256],
    /// What an empty prompt is conditioned on.
    bos: u32,
}

impl Gpt2Tokenizer {
    /// The tokenizer a GGUF declares, if it is GPT-2's (`tokenizer.ggml.model` "gpt2" with the
    /// "gpt-2" pre-tokenizer).
    pub fn from_metadata(metadata: &Metadata) -> anyhow::Result<Gpt2Tokenizer> {
        let model = metadata.str("tokenizer.ggml.model")?;
        let pre = metadata.str("tokenizer.ggml.pre").unwrap_or("default");
        if model != "gpt2" || pre != "gpt-2" {
            bail!(
                "the model's tokenizer is {model:?} with the {pre:?} pre-tokenizer; genq's API \
                 counts tokens only for GPT-2's (\"gpt2\" with \"gpt-2\")"
            );
        }
        let tokens = metadata.string_list("tokenizer.ggml.tokens")?;
        // User-defined tokens are matched in the text before any split (even without special
        // parsing): not something GPT-2 has, nor this tokenizer does.
        const USER_DEFINED: i64 = 4;
        if let Ok(types) = metadata.int_list("tokenizer.ggml.token_type")
            && types.contains(&USER_DEFINED)
        {
            bail!("the model's vocabulary has user-defined tokens, which GPT-2's does not");
        }
        let n_vocab = u32::try_from(tokens.len()).context("vocabulary too large")?;
        let mut ids: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            // A repeated text maps to its last id, as llama.cpp's token_to_id map is filled.
            ids.insert((*token).to_owned(), id as u32);
        }
        let mut extra_texts = Vec::new();
        let mut intern = |text: &str, ids: &mut HashMap<String, u32>| -> u32 {
            *ids.entry(text.to_owned()).or_insert_with(|| {
                extra_texts.push(text.to_owned());
                n_vocab + extra_texts.len() as u32 - 1
            })
        };
        let merge_list = metadata.string_list("tokenizer.ggml.merges")?;
        let mut merges = HashMap::with_capacity(merge_list.len());
        for (rank, merge) in merge_list.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte.
            let Some(at) = merge.bytes().skip(1).position(|b| b == b' ').map(|i| i + 1) else {
                bail!("merge {rank} ({merge:?}) is not two texts separated by a space");
            };
            let (left, right) = (&merge[..at], &merge[at + 1..]);
            let merged = intern(&format!("{left}{right}"), &mut ids);
            let (left, right) = (intern(left, &mut ids), intern(right, &mut ids));
            // The first rank of a pair counts, as llama.cpp's bpe_ranks keeps it.
            merges.entry((left, right)).or_insert((rank as u32, merged));
        }
        let byte_ids = std::array::from_fn(|b| {
            ids.get(byte_stand_in(b as u8).encode_utf8(&mut [0; 4]) as &str)
                .copied()
                .unwrap_or(UNKNOWN)
        });
        let bos = metadata.u32("tokenizer.ggml.bos_token_id")?;
        Ok(Gpt2Tokenizer {
            ids,
            n_vocab,
            extra_texts,
            merges,
            byte_ids,
            bos,
        })
    }

    /// The tokens of a prompt as the engine feeds them: at least one, since an empty prompt is
    /// conditioned on the beginning-of-text token.
    pub fn prompt_tokens(&self, prompt: &str) -> Vec<u32> {
        let tokens = self.tokenize(prompt);
        if tokens.is_empty() {
            vec![self.bos]
        } else {
            tokens
        }
    }

    /// The token ids of `text`, special tokens' texts tokenized as plain text.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        for word in split::words(text) {
            self.tokenize_word(word.as_bytes(), &mut out);
        }
        out
    }

    fn tokenize_word(&self, word: &[u8], out: &mut Vec<u32>) {
        #[derive(Clone, Copy)]
        struct Symbol {
            id: u32,
            /// The original byte, for a symbol still a single unknown byte.
            byte: u8,
            prev: Option<usize>,
            next: Option<usize>,
            merged_away: bool,
        }
        let mut symbols: Vec<Symbol> = word
            .iter()
            .enumerate()
            .map(|(i, &byte)| Symbol {
                id: self.byte_ids[usize::from(byte)],
                byte,
                prev: i.checked_sub(1),
                next: (i + 1 < word.len()).then_some(i + 1),
                merged_away: false,
            })
            .collect();
        // (rank, left index) orders the queue as llama.cpp's does; the ids tell a stale pair.
        let mut queue = BinaryHeap::new();
        let pair = |symbols: &[Symbol], left: usize, queue: &mut BinaryHeap<_>| {
            let Some(right) = symbols[left].next else {
                return;
            };
            let key = (symbols[left].id, symbols[right].id);
            if let Some(&(rank, _)) = self.merges.get(&key) {
                queue.push(Reverse((rank, left, right, key)));
            }
        };
        for left in 0..symbols.len() {
            pair(&symbols, left, &mut queue);
        }
        while let Some(Reverse((_, left, right, key))) = queue.pop() {
            let (l, r) = (symbols[left], symbols[right]);
            if l.merged_away || r.merged_away || l.next != Some(right) || (l.id, r.id) != key {
                continue;
            }
            symbols[left].id = self.merges[&key].1;
            symbols[left].next = r.next;
            symbols[right].merged_away = true;
            if let Some(next) = r.next {
                symbols[next].prev = Some(left);
            }
            if let Some(prev) = l.prev {
                pair(&symbols, prev, &mut queue);
            }
            pair(&symbols, left, &mut queue);
        }
        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            self.push_symbol(symbols[i].id, symbols[i].byte, out);
            at = symbols[i].next;
        }
    }

    /// A symbol's token, or, for a text the vocabulary lacks, the tokens of its single ASCII
    /// characters, as llama.cpp falls back to byte by byte.
    fn push_symbol(&self, id: u32, byte: u8, out: &mut Vec<u32>) {
        if id < self.n_vocab {
            out.push(id);
            return;
        }
        let mut buf = [0; 4];
        let text: &str = match id {
            UNKNOWN => byte_stand_in(byte).encode_utf8(&mut buf),
            _ => &self.extra_texts[(id - self.n_vocab) as usize],
        };
        out.extend(
            text.bytes()
                .filter(u8::is_ascii)
                .filter_map(|b| self.ids.get(char::from(b).encode_utf8(&mut [0; 4]) as &str))
                .filter(|&&id| id < self.n_vocab),
        );
    }
}

/// GPT-2's printable stand-in for a byte: printable Latin-1 stands for itself, every other byte for
/// a code point from U+0100 on, in byte order (`bytes_to_unicode` in GPT-2's encoder.py).
fn byte_stand_in(byte: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(byte) {
        return char::from(byte);
    }
    let rank = (0..byte).filter(|&b| !printable(b)).count() as u32;
    char::from_u32(0x100 + rank).expect("U+0100 to U+0143 are characters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_stand_ins_are_gpt2s() {
        assert_eq!(byte_stand_in(b' '), 'Ġ');
        assert_eq!(byte_stand_in(b'\n'), 'Ċ');
        assert_eq!(byte_stand_in(b'a'), 'a');
        assert_eq!(byte_stand_in(0), 'Ā');
        assert_eq!(byte_stand_in(0xAD), 'Ń');
        let all: std::collections::HashSet<char> = (0..=255u8).map(byte_stand_in).collect();
        assert_eq!(all.len(), 256);
    }
}
