//! GGUF model files without llama.cpp: what the API and genqctl need of a model, so that neither
//! links llama.cpp. The workers load models with llama.cpp (`genq-engine`).
//!
//! # Layout
//! - [`ModelFile`]: a model's name, context length and tokenizer, read from its GGUF metadata.
//! - [`bpe`]: GPT-2's byte-level BPE tokenizer, giving the token ids llama.cpp gives.
//! - [`gguf`]: reading a GGUF file's metadata; writing GGUF files.
//! - [`synth`]: writes GPT-2-architecture GGUF files with the real tokenizer and random weights.

pub mod bpe;
pub mod gguf;
pub mod synth;

use std::path::Path;

use anyhow::{Context, bail};

pub use bpe::Gpt2Tokenizer;
pub use gguf::Metadata;

/// Context per sequence unless asked for more: room for a prompt and the API's default
/// max_tokens limit without reserving GPT-2's whole 1,024 positions in every slot.
pub const DEFAULT_CONTEXT_PER_SLOT: u32 = 512;

/// The context each sequence gets: what was asked for, else [`DEFAULT_CONTEXT_PER_SLOT`], and never
/// more than the model has positions for. The API uses it too, to refuse prompts up front.
pub fn context_per_slot(model_context: u32, asked: Option<u32>) -> u32 {
    asked
        .unwrap_or(DEFAULT_CONTEXT_PER_SLOT)
        .min(model_context)
        .max(1)
}

/// The name a model goes by: its `general.name`, else its file's name.
pub fn model_name(general_name: Option<&str>, path: &Path) -> String {
    general_name
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into())
}

/// What the API knows of a model without loading it: read from the GGUF's metadata alone.
#[derive(Debug)]
pub struct ModelFile {
    name: String,
    context_length: u32,
    tokenizer: Gpt2Tokenizer,
    chat_template: Option<ChatTemplateSource>,
}

/// A model's Jinja chat template (`tokenizer.chat_template`) and the texts of the tokens it may
/// name.
#[derive(Debug, Clone)]
pub struct ChatTemplateSource {
    pub template: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl ModelFile {
    /// Reads the model's metadata and builds its tokenizer (a GPT-2 one, or an error saying what
    /// the model has instead).
    pub fn read(path: &Path) -> anyhow::Result<ModelFile> {
        let metadata = Metadata::read(path)?;
        let context = || -> anyhow::Result<u32> {
            let arch = metadata.str("general.architecture")?;
            metadata.u32(&format!("{arch}.context_length"))
        };
        let context_length = match context() {
            Ok(n) if n > 0 => n,
            _ => bail!("{} declares no context length", path.display()),
        };
        let tokenizer = Gpt2Tokenizer::from_metadata(&metadata)
            .with_context(|| format!("the tokenizer of {}", path.display()))?;
        let chat_template = metadata
            .str("tokenizer.chat_template")
            .ok()
            .map(|template| {
                let token = |key: &str| -> String {
                    let tokens = metadata
                        .string_list("tokenizer.ggml.tokens")
                        .unwrap_or_default();
                    metadata
                        .u32(key)
                        .ok()
                        .and_then(|id| tokens.get(id as usize).map(|t| (*t).to_owned()))
                        .unwrap_or_default()
                };
                ChatTemplateSource {
                    template: template.to_owned(),
                    bos_token: token("tokenizer.ggml.bos_token_id"),
                    eos_token: token("tokenizer.ggml.eos_token_id"),
                }
            });
        Ok(ModelFile {
            name: model_name(metadata.str("general.name").ok(), path),
            context_length,
            tokenizer,
            chat_template,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The context the model was trained with: GPT-2's position embeddings end there.
    pub fn context_length(&self) -> u32 {
        self.context_length
    }

    /// The chat template the GGUF carries, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplateSource> {
        self.chat_template.as_ref()
    }

    pub fn tokenizer(&self) -> &Gpt2Tokenizer {
        &self.tokenizer
    }

    /// How many tokens the engine will feed for `prompt` (at least one).
    pub fn count_prompt_tokens(&self, prompt: &str) -> usize {
        self.tokenizer.prompt_tokens(prompt).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthesized_model_reads_back_with_gpt2s_real_token_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        synth::write_model(&path, synth::Shape::Tiny, 1).unwrap();

        let model = ModelFile::read(&path).unwrap();

        assert_eq!(model.name(), "gpt2-tiny-synthetic");
        assert_eq!(model.context_length(), 256);
        assert_eq!(
            model.tokenizer().prompt_tokens("Hello, my name is"),
            [15496, 11, 616, 1438, 318]
        );
        assert_eq!(model.tokenizer().prompt_tokens(""), [50256]);
        // Special tokens are plain text in a prompt: "<", "|", "end", "of", "text", "|", ">".
        assert_eq!(model.count_prompt_tokens("<|endoftext|>"), 7);
    }

    #[test]
    fn another_tokenizer_is_refused_naming_it() {
        let mut metadata = Metadata::default();
        metadata.insert("tokenizer.ggml.model", gguf::Value::Str("llama".into()));

        let error = Gpt2Tokenizer::from_metadata(&metadata)
            .unwrap_err()
            .to_string();

        assert!(error.contains("\"llama\""), "{error}");
    }
}
