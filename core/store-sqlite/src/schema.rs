//! Preparing a connection: identity check, connection settings and schema migrations.

use std::time::Duration;

use nexus_store::{Result, StoreError};
use rusqlite::{Connection, TransactionBehavior};

use crate::error::db_err;

/// How long a statement waits for a lock held by another connection (another CLI, the app)
/// before it fails.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `PRAGMA application_id` of a Nexus store ("NXUS"): tells our files from other databases.
pub(crate) const APPLICATION_ID: i32 = 0x4E58_5553;

/// The migrations in order; a database's schema version (`PRAGMA user_version`) is the number of
/// migrations applied to it.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/001_initial.sql"),
    include_str!("../migrations/002_memory_persona.sql"),
    include_str!("../migrations/003_journal.sql"),
    include_str!("../migrations/004_sync.sql"),
];

/// Makes a freshly opened connection ready for use: checks that the database is a Nexus store
/// (or empty) that this build understands, sets the connection's pragmas and migrates the schema
/// to the newest version.
pub(crate) fn prepare(conn: &mut Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    // While another process creates the file or switches it to WAL, SQLite can answer "busy"
    // at once, without waiting through the busy timeout (the busy handler is not called while
    // the other side holds an exclusive lock or runs WAL recovery): those steps are retried
    // for up to the same timeout.
    let started = std::time::Instant::now();
    loop {
        match prepare_once(conn) {
            Err(StoreError::Backend(e))
                if e.contains("database is locked") && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn prepare_once(conn: &mut Connection) -> Result<()> {
    // Only reads: a file that is not ours is refused before anything is written to it.
    let version = checked_version(conn, MIGRATIONS.len())?;

    // WAL: readers and the writer do not block each other (the app and a CLI can share the
    // store) and a commit is an append to the log. synchronous=NORMAL is the documented
    // pairing for WAL: a commit survives the process being killed at any point (see
    // tests/processes.rs) and the file never corrupts; only an OS crash or power loss can roll
    // back the last commits before it. FULL would add an fsync to every commit, which costs
    // battery and flash wear on phones for little gain in a chat history.
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
        .map_err(db_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_err)?;
    // Deleted content is overwritten with zeros instead of lingering in free pages (the user's
    // "forget this" and wipe must not leave the text readable in the file).
    conn.pragma_update(None, "secure_delete", true)
        .map_err(db_err)?;
    if version < MIGRATIONS.len() {
        migrate(conn, MIGRATIONS)?;
    }
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(db_err)?;
    Ok(())
}

/// Brings the schema up to `migrations.len()`, applying the missing migrations in one
/// transaction: after a failure or a crash the database is at its old version, unchanged.
pub(crate) fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<()> {
    // Migrations may rebuild tables (SQLite's ALTER TABLE is limited), which must happen with
    // foreign keys off; they are checked before the commit instead. This pragma is a no-op
    // inside a transaction, so it comes first.
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(db_err)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    // Checked again under the write lock: another process may have migrated in the meantime.
    let version = checked_version(&tx, migrations.len())?;
    if version == migrations.len() {
        return Ok(());
    }
    for (done, sql) in migrations.iter().enumerate().skip(version) {
        let to = done + 1;
        tx.execute_batch(sql).map_err(|e| match db_err(e) {
            StoreError::Backend(e) | StoreError::Conflict(e) | StoreError::Invalid(e) => {
                StoreError::Backend(format!(
                    "upgrading the store to schema version {to} failed: {e}"
                ))
            }
            other => other,
        })?;
    }
    let broken: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_foreign_key_check)",
            [],
            |row| row.get(0),
        )
        .map_err(db_err)?;
    if broken {
        return Err(StoreError::Backend(format!(
            "upgrading the store to schema version {} failed: it would break references between \
             records",
            migrations.len()
        )));
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(db_err)?;
    tx.pragma_update(None, "user_version", version_number(migrations.len()))
        .map_err(db_err)?;
    tx.commit().map_err(db_err)
}

/// The schema version of the database, once it is known to be a Nexus store (or an empty
/// database) of a version up to `supported`.
fn checked_version(conn: &Connection, supported: usize) -> Result<usize> {
    // One statement, so one snapshot: read one by one, the values could straddle the commit of
    // another process creating the schema (no id yet, but tables) and look like a foreign file.
    let (app_id, version, has_tables): (i32, i64, bool) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id),
                    (SELECT user_version FROM pragma_user_version),
                    EXISTS (SELECT 1 FROM sqlite_schema)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .map_err(db_err)?;
    let empty = app_id == 0 && version == 0 && !has_tables;
    if app_id != APPLICATION_ID && !empty {
        return Err(StoreError::Corrupt(
            "it is a database of another program, not a Nexus store".into(),
        ));
    }
    let supported = version_number(supported);
    if version > supported {
        return Err(StoreError::TooNew {
            found: version,
            supported,
        });
    }
    usize::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("invalid schema version {version}")))
}

fn version_number(migrations: usize) -> i64 {
    i64::try_from(migrations).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version")
    }

    fn fresh() -> Connection {
        let mut conn = Connection::open_in_memory().expect("open");
        prepare(&mut conn).expect("prepare");
        conn
    }

    #[test]
    fn a_new_database_gets_the_newest_schema() {
        let conn = fresh();
        assert_eq!(version(&conn), version_number(MIGRATIONS.len()));
        let app_id: i32 = conn
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .expect("app id");
        assert_eq!(app_id, APPLICATION_ID);
        let foreign_keys: bool = conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .expect("fk");
        assert!(foreign_keys, "foreign keys are enforced after preparing");
    }

    #[test]
    fn a_later_migration_upgrades_an_old_database_and_keeps_its_data() {
        let mut conn = fresh();
        conn.execute_batch(
            "INSERT INTO companions (id, name, name_key, description, personality,
                 speaking_style, greeting, created_at, updated_at)
             VALUES ('c', 'Mira', 'mira', '', '', '', '', 1, 2);
             INSERT INTO settings VALUES ('k', 'v');",
        )
        .expect("data at the current version");

        let next = "ALTER TABLE companions ADD COLUMN avatar TEXT;
                    UPDATE companions SET avatar = 'owl.png';";
        let newer: Vec<&str> = MIGRATIONS.iter().copied().chain([next]).collect();
        migrate(&mut conn, &newer).expect("upgrade");

        assert_eq!(version(&conn), version_number(newer.len()));
        let (name, avatar): (String, String) = conn
            .query_row("SELECT name, avatar FROM companions", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("upgraded row");
        assert_eq!((name.as_str(), avatar.as_str()), ("Mira", "owl.png"));
        migrate(&mut conn, &newer).expect("migrating again is a no-op");

        // This build knows fewer migrations than the database has had: refused.
        match checked_version(&conn, MIGRATIONS.len()) {
            Err(StoreError::TooNew { found, supported }) => {
                assert_eq!(
                    (found, supported),
                    (
                        version_number(newer.len()),
                        version_number(MIGRATIONS.len())
                    )
                );
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
    }

    #[test]
    fn a_failing_migration_changes_nothing() {
        let mut conn = fresh();
        let broken = "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);";
        let newer: Vec<&str> = MIGRATIONS.iter().copied().chain([broken]).collect();
        match migrate(&mut conn, &newer) {
            Err(StoreError::Backend(message)) => {
                let next = format!("schema version {}", newer.len());
                assert!(message.contains(&next), "{message}");
            }
            other => panic!("expected a Backend error, got {other:?}"),
        }
        assert_eq!(version(&conn), version_number(MIGRATIONS.len()));
        let half_done: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'half_done')",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert!(!half_done, "the failed migration was rolled back");
    }

    #[test]
    fn a_migration_that_breaks_references_is_refused() {
        let mut conn = fresh();
        let dangling = "INSERT INTO conversations VALUES ('v', 'no such companion', NULL, 1, 1);";
        let newer: Vec<&str> = MIGRATIONS.iter().copied().chain([dangling]).collect();
        assert!(matches!(
            migrate(&mut conn, &newer),
            Err(StoreError::Backend(_))
        ));
        assert_eq!(version(&conn), version_number(MIGRATIONS.len()));
    }
}
