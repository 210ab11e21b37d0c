//! Native platforms: the on-disk store and models from the verified cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nexus_common::SystemClock;
use nexus_inference::candle_llama::WeightFormat;
use nexus_inference::{BertEmbedder, CandleLlama, CausalLm, GgufModel, Llm};
use nexus_models::{FetchOptions, Fetcher, Manifest, ModelFiles, Progress};
use nexus_store_sqlite::SqliteStore;

use crate::{Nexus, Result};

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "nexus.db";
/// Id of the default chat model in the manifest.
pub const CHAT_MODEL: &str = "smollm2-135m-instruct";
/// Id of the default embedding model in the manifest.
pub const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// Which engine runs the chat model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// The fastest available: native where compiled in, candle otherwise.
    #[default]
    Auto,
    /// The hand-tuned native engine.
    Native,
    /// The portable candle engine.
    Candle,
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "candle" => Ok(Self::Candle),
            other => Err(format!("unknown engine {other:?} (auto, native or candle)")),
        }
    }
}

/// Where things live and how models run.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// Directory of the database and user data.
    pub data_dir: PathBuf,
    /// Directory of the verified model cache.
    pub models_dir: PathBuf,
    /// Chat engine.
    pub engine: EngineChoice,
    /// Worker threads of the engine (0: one per core).
    pub threads: usize,
    /// Context window to allocate, in tokens.
    pub context_length: usize,
    /// How fetch progress is shown.
    pub progress: Progress,
}

impl NativeConfig {
    /// Defaults under the given directories.
    pub fn new(data_dir: PathBuf, models_dir: PathBuf) -> Self {
        Self {
            data_dir,
            models_dir,
            engine: EngineChoice::Auto,
            threads: 0,
            context_length: nexus_inference::DEFAULT_CONTEXT_LENGTH,
            progress: Progress::Auto,
        }
    }
}

/// The platform's data directory for Nexus (for example `~/.local/share/nexus` on Linux).
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("ai", "Nexus", "nexus")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".nexus"))
}

/// The platform's model cache (`NEXUS_MODELS_DIR` overrides it).
pub fn default_models_dir() -> PathBuf {
    nexus_models::default_cache_dir()
}

/// Opens (creating if needed) the SQLite store in `data_dir`.
pub fn open_store(data_dir: &Path) -> Result<SqliteStore> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        nexus_store::StoreError::Backend(format!(
            "cannot create the data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    Ok(SqliteStore::open(&data_dir.join(DATABASE_FILE))?)
}

/// Deletes everything the user owns in `data_dir`: the store is wiped first (freed pages and
/// the WAL overwritten, see `Store::wipe`), then its files are removed, and the directory too
/// when nothing else is in it. Files that are not Nexus's are left alone.
pub fn forget_everything(data_dir: &Path) -> Result<()> {
    let db = data_dir.join(DATABASE_FILE);
    if db.exists() {
        let store = SqliteStore::open(&db)?;
        Nexus::new(Arc::new(store), Arc::new(SystemClock)).forget_everything()?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = data_dir.join(format!("{DATABASE_FILE}{suffix}"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(nexus_store::StoreError::Backend(format!(
                    "cannot delete {}: {e}",
                    path.display()
                ))
                .into());
            }
        }
    }
    // Only succeeds when the directory is empty.
    let _ = std::fs::remove_dir(data_dir);
    Ok(())
}

/// The core over the on-disk store, without a model yet.
pub fn open(config: &NativeConfig) -> Result<Nexus> {
    let store = open_store(&config.data_dir)?;
    Ok(Nexus::new(Arc::new(store), Arc::new(SystemClock)))
}

/// Makes sure a model from the manifest is in the cache (fetching it with progress if not).
pub fn ensure_model(config: &NativeConfig, id: &str) -> Result<ModelFiles> {
    let entry = Manifest::builtin().require(id)?;
    let mut options = FetchOptions::from_env();
    options.progress = config.progress;
    Ok(Fetcher::with_options(&config.models_dir, options).ensure(entry)?)
}

/// Loads the default chat model (fetching it first if needed).
pub fn load_chat_model(config: &NativeConfig) -> Result<Llm> {
    let files = ensure_model(config, CHAT_MODEL)?;
    let path = files
        .iter()
        .find(|(name, _)| name.ends_with(".gguf"))
        .map(|(_, p)| p.to_path_buf())
        .ok_or_else(|| {
            nexus_inference::InferenceError::InvalidModel("the chat model has no .gguf file".into())
        })?;
    let model = GgufModel::open(&path)?;
    let engine = chat_engine(&model, config)?;
    Ok(Llm::new(&model, engine)?)
}

fn chat_engine(model: &GgufModel, config: &NativeConfig) -> Result<Box<dyn CausalLm>> {
    let candle = || -> Result<Box<dyn CausalLm>> {
        Ok(Box::new(CandleLlama::new(
            model,
            config.context_length,
            WeightFormat::FastestCandle,
        )?))
    };
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        use nexus_inference::native::NativeLlama;
        match config.engine {
            EngineChoice::Candle => candle(),
            EngineChoice::Native => Ok(Box::new(NativeLlama::new(
                model,
                config.context_length,
                config.threads,
            )?)),
            EngineChoice::Auto => {
                match NativeLlama::new(model, config.context_length, config.threads) {
                    Ok(e) => Ok(Box::new(e)),
                    Err(e) => {
                        tracing::info!("native engine unavailable ({e}); using candle");
                        candle()
                    }
                }
            }
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        candle()
    }
}

/// Loads the default embedding model (fetching it first if needed).
pub fn load_embedder(config: &NativeConfig) -> Result<BertEmbedder> {
    let files = ensure_model(config, EMBEDDING_MODEL)?;
    Ok(BertEmbedder::from_dir(files.dir())?)
}

/// Loads the text emotion model on top of an already loaded embedder of the default embedding
/// model: its lower layers are the embedder's, so the base weights are in memory once.
pub fn load_text_emotion_with(
    config: &NativeConfig,
    embedder: Arc<BertEmbedder>,
) -> Result<nexus_emotion::text::TextEmotion> {
    let files = ensure_model(config, EMBEDDING_MODEL)?;
    let read = |name: &str| {
        let path = files.dir().join(name);
        std::fs::read(&path).map_err(|source| {
            crate::emotion::EmotionAppError::from(nexus_emotion::text::TextEmotionError::Io {
                path: path.display().to_string(),
                source,
            })
        })
    };
    nexus_emotion::text::TextEmotion::with_embedder(
        embedder,
        &read("config.json")?,
        &read("tokenizer.json")?,
    )
    .map_err(|e| crate::emotion::EmotionAppError::from(e).into())
}

/// Loads the text emotion model: the default embedding model's encoder (fetching it first if
/// needed) with the trained weights bundled in `nexus-emotion`.
pub fn load_text_emotion(config: &NativeConfig) -> Result<nexus_emotion::text::TextEmotion> {
    let files = ensure_model(config, EMBEDDING_MODEL)?;
    nexus_emotion::text::TextEmotion::from_dir(files.dir())
        .map_err(|e| crate::emotion::EmotionAppError::from(e).into())
}
