//! Loading GGUF models into llama.cpp for a worker. (The API reads only the metadata, with
//! `genq_model::ModelFile`.)

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

use anyhow::{Context, bail};
use llama_cpp_2::{
    LogOptions,
    llama_backend::LlamaBackend,
    model::{LlamaModel, params::LlamaModelParams},
    send_logs_to_tracing,
};

static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();

/// llama.cpp's process-wide backend. It can be initialised only once per process, so every model
/// and context in the process shares this one.
pub fn backend() -> &'static LlamaBackend {
    BACKEND.get_or_init(|| {
        send_logs_to_tracing(LogOptions::default().with_logs_enabled(false));
        // Only this OnceLock initialises the backend, so "already initialised" cannot happen.
        LlamaBackend::init().expect("llama.cpp backend initialises once per process")
    })
}

/// Creating contexts from one model in parallel is unsound upstream (it mutates the model), so
/// every context creation in the process takes this lock.
pub(crate) static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

/// Where a model's layers run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Placement {
    /// Layers to offload to the GPU; `None` offloads all of them where a GPU backend is built in.
    pub n_gpu_layers: Option<u32>,
}

/// A loaded GGUF model with the facts genq needs about it.
pub struct Model {
    pub(crate) inner: LlamaModel,
    name: String,
    context_length: u32,
    file_size: u64,
    path: PathBuf,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("context_length", &self.context_length)
            .finish()
    }
}

impl Model {
    /// Loads the whole model, weights included.
    pub fn load(path: &Path, placement: Placement) -> anyhow::Result<Model> {
        let mut params = LlamaModelParams::default();
        if let Some(layers) = placement.n_gpu_layers {
            params = params.with_n_gpu_layers(layers);
        }
        Self::load_with(path, &params)
    }

    fn load_with(path: &Path, params: &LlamaModelParams) -> anyhow::Result<Model> {
        let file_size = std::fs::metadata(path)
            .with_context(|| format!("model file {} cannot be read", path.display()))?
            .len();
        let inner = LlamaModel::load_from_file(backend(), path, params).with_context(|| {
            format!(
                "llama.cpp could not load {} as a GGUF model",
                path.display()
            )
        })?;
        let name = genq_model::model_name(inner.meta_val_str("general.name").ok().as_deref(), path);
        let context_length = inner.n_ctx_train();
        if context_length == 0 {
            bail!("{} declares no context length", path.display());
        }
        Ok(Model {
            inner,
            name,
            context_length,
            file_size,
            path: path.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The context the model was trained with: GPT-2's position embeddings end there.
    pub fn context_length(&self) -> u32 {
        self.context_length
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The GGUF file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The llama.cpp model itself, for code that drives llama.cpp directly (the benchmark's
    /// no-queue ceiling).
    pub fn llama(&self) -> &LlamaModel {
        &self.inner
    }

    /// Bytes of f16 K and V cache one token of context takes.
    pub fn kv_bytes_per_token(&self) -> u64 {
        2 * u64::from(self.inner.n_layer()) * self.inner.n_embd() as u64 * 2
    }

    /// Prompt tokens as the engine will feed them (at least one: an empty prompt is conditioned
    /// on the end-of-text token, as GPT-2 does for unconditional samples).
    pub fn prompt_tokens(&self, prompt: &str) -> Vec<llama_cpp_2::token::LlamaToken> {
        let vocab = self.inner.vocab();
        let tokens = vocab.tokenize(prompt.as_bytes(), false, false);
        if tokens.is_empty() {
            vec![vocab.bos()]
        } else {
            tokens
        }
    }
}
