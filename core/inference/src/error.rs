/// What can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The model file is not a usable model (bad magic, missing tensor or metadata key, ...).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The model uses an architecture or tensor format that this backend does not run.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The request cannot be served (empty prompt, token out of range, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// An error inside candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Reading a model file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = InferenceError> = std::result::Result<T, E>;
