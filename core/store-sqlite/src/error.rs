//! Mapping of SQLite errors to [`StoreError`].

use nexus_store::StoreError;
use rusqlite::{Error, ErrorCode, ffi};

use crate::schema::BUSY_TIMEOUT;

/// The [`StoreError`] of a SQLite error: a broken uniqueness rule is a `Conflict`, a damaged
/// file or a value the schema cannot hold is `Corrupt`, anything else is a `Backend` error.
pub(crate) fn db_err(error: Error) -> StoreError {
    match error.sqlite_error() {
        Some(e) if e.code == ErrorCode::NotADatabase => StoreError::Corrupt(format!(
            "it is not a Nexus store, or it is damaged ({error})"
        )),
        Some(e) if e.code == ErrorCode::DatabaseCorrupt => StoreError::Corrupt(error.to_string()),
        Some(e)
            if matches!(
                e.extended_code,
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) =>
        {
            StoreError::Conflict(error.to_string())
        }
        Some(e) if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Backend(format!(
                "the store stayed locked by another process or connection for {} s ({error})",
                BUSY_TIMEOUT.as_secs()
            ))
        }
        Some(_) => StoreError::Backend(error.to_string()),
        None => match error {
            Error::FromSqlConversionFailure(..)
            | Error::IntegralValueOutOfRange(..)
            | Error::InvalidColumnType(..)
            | Error::Utf8Error(..) => {
                StoreError::Corrupt(format!("a stored value cannot be read: {error}"))
            }
            other => StoreError::Backend(other.to_string()),
        },
    }
}

/// Maps a failed insert: a broken uniqueness rule becomes `conflict`, other errors [`db_err`].
pub(crate) fn or_conflict(error: Error, conflict: impl FnOnce(&str) -> StoreError) -> StoreError {
    match db_err(error) {
        StoreError::Conflict(detail) => conflict(&detail),
        other => other,
    }
}

/// A value read from a row that the schema allows but the data model does not (an unknown role,
/// a malformed id).
pub(crate) fn bad_value(column: usize, message: String) -> Error {
    Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
}
