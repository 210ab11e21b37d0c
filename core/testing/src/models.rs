//! The real model weights for tests, through the project's fetch step (verified, cached, fetched
//! only when missing). Honours `NEXUS_MODELS_DIR` and the other `NEXUS_*` fetch variables.

use std::path::PathBuf;
use std::sync::OnceLock;

use nexus_models::{FetchOptions, Fetcher, Manifest, ModelFiles};

/// Id of the default chat model in `models/manifest.toml`.
pub const CHAT_MODEL: &str = "smollm2-135m-instruct";
/// Id of the default embedding model.
pub const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

fn ensure(id: &str) -> ModelFiles {
    let manifest = Manifest::builtin();
    let entry = manifest.require(id).unwrap_or_else(|e| panic!("{e}"));
    Fetcher::with_options(nexus_models::default_cache_dir(), FetchOptions::from_env())
        .ensure(entry)
        .unwrap_or_else(|e| {
            panic!("model {id} is needed for this test and could not be fetched: {e}")
        })
}

/// Path of the default chat model's GGUF file.
pub fn chat_gguf() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let files = ensure(CHAT_MODEL);
        files
            .iter()
            .find(|(name, _)| name.ends_with(".gguf"))
            .map(|(_, p)| p.to_path_buf())
            .expect("the chat model has a .gguf file")
    })
    .clone()
}

/// Directory of the default embedding model (config.json, tokenizer.json, model.safetensors).
pub fn embedding_dir() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| ensure(EMBEDDING_MODEL).dir().to_path_buf())
        .clone()
}
