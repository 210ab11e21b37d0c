//! Deleting everything, leaving no user text in the database files.

use nexus_store::{Result, StoreError};
use rusqlite::{Connection, TransactionBehavior};

use crate::DbResult;

/// Every table with user data, children before parents.
const TABLES: &[&str] = &[
    "memory_uses",
    "summaries",
    "persona_changes",
    "persona_state",
    "companion_assets",
    "memories",
    "messages",
    "conversations",
    "companions",
    "settings",
    "emotion_journal",
    "sync_state",
];

/// Deletes every row of every table, then scrubs the files.
///
/// Deleted rows alone are not enough for "nothing left on disk": their content can survive in
/// free pages of the main file and in old frames of the write-ahead log. So:
///
/// 1. one transaction deletes everything (`secure_delete`, set at open, zeroes the content);
/// 2. `VACUUM` rebuilds the main file from the (empty) live data, so no free page remains;
/// 3. `wal_checkpoint(TRUNCATE)` copies the log into the main file and truncates the log to
///    zero bytes, so none of its old frames remain. (The `-shm` file only ever holds the log's
///    index: page numbers and checksums, no content.)
///
/// If another connection is reading the whole time (5 s), step 3 cannot finish: the data is
/// deleted, but the call fails with [`StoreError::Backend`] so the caller can wipe again once
/// the other program is closed. Wiping is idempotent.
pub(crate) fn wipe(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db()?;
    for table in TABLES {
        tx.execute(&format!("DELETE FROM {table}"), []).db()?;
    }
    tx.commit().db()?;

    conn.execute_batch("VACUUM").db()?;
    let (busy, _log_frames, _checkpointed): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .db()?;
    if busy != 0 {
        return Err(StoreError::Backend(
            "everything was deleted, but another program kept the store busy, so its journal \
             could not be cleared yet; close other Nexus windows and wipe again"
                .into(),
        ));
    }
    Ok(())
}
