//! What a caller hands the engine for one prompt and what it gets back: the types the engine's
//! handle, its decode loop and its sampler share, kept here so that none of them depends on
//! another for them.

/// How one prompt is sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: u32,
    /// 0 samples greedily.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    pub top_p: f32,
    pub seed: u32,
    /// Generation ends before the first of these appears; it is not part of the text.
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// max_tokens were generated.
    Length,
    /// A stop string or the end-of-text token.
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub completion_tokens: u32,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum GenerationError {
    #[error(
        "the prompt is {prompt_tokens} tokens; with max_tokens {max_tokens} it exceeds the context of {context} tokens"
    )]
    PromptTooLong {
        prompt_tokens: usize,
        max_tokens: u32,
        context: u32,
    },
    #[error("llama.cpp failed to decode: {0}")]
    Decode(String),
    #[error("the inference engine has stopped")]
    EngineStopped,
}

/// Receives a sequence's output bytes as they are decoded, on the engine thread: it must not
/// block. Bytes that may turn out to begin a stop string are held back until they cannot, so what
/// it receives is always a prefix of the final text's bytes. Its first call, with no bytes, comes
/// as the first token is sampled, so that a caller can time it.
pub type TextSink = Box<dyn FnMut(&[u8]) + Send>;
