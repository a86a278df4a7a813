//! Writes GPT-2-architecture GGUF models with the real GPT-2 tokenizer and seeded random weights.
//! Real weights cannot be fetched everywhere genq is built and tested, so tests and benchmarks run
//! on these: the tokenizer, shapes and compute are GPT-2's; the text they produce is meaningless.

use std::{fs::File, io::BufWriter, path::Path};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gguf::{self, Tensor, Value};

const ENCODER_JSON: &str = include_str!("../assets/gpt2/encoder.json");
const VOCAB_BPE: &str = include_str!("../assets/gpt2/vocab.bpe");
const END_OF_TEXT: u32 = 50256;

/// The model shapes genq can synthesize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// 64-wide, 2 layers, context 256: a few MB, for tests.
    Tiny,
    /// GPT-2 small (124M parameters), context 1024: the shape benchmarks use.
    Gpt2_124m,
    /// GPT-2 small's widths (768, 12 heads of 64) in 2 layers, context 256: the shapes genq's
    /// kernels meet in production, in tests that cannot wait for 12 layers.
    Gpt2Widths,
}

struct Dims {
    name: &'static str,
    embd: usize,
    layers: usize,
    heads: usize,
    context: usize,
}

impl Shape {
    fn dims(self) -> Dims {
        match self {
            Shape::Tiny => Dims {
                name: "gpt2-tiny-synthetic",
                embd: 64,
                layers: 2,
                heads: 4,
                context: 256,
            },
            Shape::Gpt2_124m => Dims {
                name: "gpt2-124m-synthetic",
                embd: 768,
                layers: 12,
                heads: 12,
                context: 1024,
            },
            Shape::Gpt2Widths => Dims {
                name: "gpt2-widths-synthetic",
                embd: 768,
                layers: 2,
                heads: 12,
                context: 256,
            },
        }
    }
}

/// Writes the model to `out` (atomically: a temporary file is renamed into place). The same shape
/// and seed always give the same bytes.
pub fn write_model(out: &Path, shape: Shape, seed: u64) -> anyhow::Result<()> {
    let dims = shape.dims();
    let (tokens, token_types) = vocabulary()?;
    let merges: Vec<String> = VOCAB_BPE
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let n_vocab = tokens.len();
    let metadata = vec![
        ("general.architecture", Value::Str("gpt2".into())),
        ("general.name", Value::Str(dims.name.into())),
        // 7 = LLAMA_FTYPE_MOSTLY_Q8_0
        ("general.file_type", Value::U32(7)),
        ("gpt2.context_length", Value::U32(dims.context as u32)),
        ("gpt2.embedding_length", Value::U32(dims.embd as u32)),
        ("gpt2.feed_forward_length", Value::U32(4 * dims.embd as u32)),
        ("gpt2.block_count", Value::U32(dims.layers as u32)),
        ("gpt2.attention.head_count", Value::U32(dims.heads as u32)),
        ("gpt2.attention.layer_norm_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Value::Str("gpt-2".into())),
        ("tokenizer.ggml.tokens", Value::strings(tokens)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(token_types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges", Value::strings(merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(END_OF_TEXT)),
        ("tokenizer.ggml.eos_token_id", Value::U32(END_OF_TEXT)),
    ];
    let tensors = random_tensors(&dims, n_vocab, seed);

    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = out.with_extension("gguf.partial");
    let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    gguf::write(&mut BufWriter::new(file), &metadata, &tensors)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(())
}

/// Token strings in id order and their types (1 normal, 3 control for `<|endoftext|>`).
fn vocabulary() -> anyhow::Result<(Vec<String>, Vec<i32>)> {
    let encoder: std::collections::HashMap<String, u32> =
        serde_json::from_str(ENCODER_JSON).context("parsing the vendored GPT-2 encoder.json")?;
    let mut tokens = vec![String::new(); encoder.len()];
    for (token, id) in encoder {
        tokens[id as usize] = token;
    }
    let types = (0..tokens.len() as u32)
        .map(|id| if id == END_OF_TEXT { 3 } else { 1 })
        .collect();
    Ok((tokens, types))
}

fn random_tensors(dims: &Dims, n_vocab: usize, seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (embd, ff) = (dims.embd, 4 * dims.embd);
    // GPT-2 initialises weights with std 0.02; a uniform of half-width 0.035 has about that std.
    let mut random =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-0.035..0.035)).collect() };
    let d = |a: usize, b: usize| vec![a as u64, b as u64];
    let ones = |n: usize| vec![1f32; n];
    let zeros = |n: usize| vec![0f32; n];

    let mut tensors = vec![
        Tensor::q8_0(
            "token_embd.weight",
            d(embd, n_vocab),
            &random(embd * n_vocab),
        ),
        Tensor::f32(
            "position_embd.weight",
            d(embd, dims.context),
            &random(embd * dims.context),
        ),
    ];
    for layer in 0..dims.layers {
        let name = |part: &str| format!("blk.{layer}.{part}");
        tensors.extend([
            Tensor::f32(name("attn_norm.weight"), vec![embd as u64], &ones(embd)),
            Tensor::f32(name("attn_norm.bias"), vec![embd as u64], &zeros(embd)),
            Tensor::q8_0(
                name("attn_qkv.weight"),
                d(embd, 3 * embd),
                &random(3 * embd * embd),
            ),
            Tensor::f32(
                name("attn_qkv.bias"),
                vec![3 * embd as u64],
                &zeros(3 * embd),
            ),
            Tensor::q8_0(
                name("attn_output.weight"),
                d(embd, embd),
                &random(embd * embd),
            ),
            Tensor::f32(name("attn_output.bias"), vec![embd as u64], &zeros(embd)),
            Tensor::f32(name("ffn_norm.weight"), vec![embd as u64], &ones(embd)),
            Tensor::f32(name("ffn_norm.bias"), vec![embd as u64], &zeros(embd)),
            Tensor::q8_0(name("ffn_up.weight"), d(embd, ff), &random(embd * ff)),
            Tensor::f32(name("ffn_up.bias"), vec![ff as u64], &zeros(ff)),
            Tensor::q8_0(name("ffn_down.weight"), d(ff, embd), &random(ff * embd)),
            Tensor::f32(name("ffn_down.bias"), vec![embd as u64], &zeros(embd)),
        ]);
    }
    tensors.extend([
        Tensor::f32("output_norm.weight", vec![embd as u64], &ones(embd)),
        Tensor::f32("output_norm.bias", vec![embd as u64], &zeros(embd)),
        // A separate (untied) output matrix: tied random weights mostly repeat the last token.
        Tensor::q8_0("output.weight", d(embd, n_vocab), &random(embd * n_vocab)),
    ]);
    tensors
}
