//! # nexus-store-sqlite
//!
//! The SQLite implementation of the `nexus-store` ports: [`SqliteStore`] owns the database file,
//! its schema (numbered migrations in `migrations/`, tracked by `PRAGMA user_version`) and the
//! mapping of SQLite errors to [`StoreError`]. It passes the shared conformance suite, so it
//! behaves exactly like `nexus_store::MemoryStore`.
//!
//! Native only (SQLite is bundled through rusqlite). Must not depend on anything above the ports
//! (companion logic, inference, app); nothing in the core may depend on it: only the app shells
//! pick it.

mod assets;
mod error;
mod journal;
mod memories;
mod persona;
mod schema;
mod summaries;
mod wipe;

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use nexus_common::{CompanionId, ConversationId, MemoryId, MessageId, Timestamp};
use nexus_store::{
    Companion, CompanionAsset, Conversation, ConversationSummary, JournalEntry, MemoryItem,
    Message, PersonaChange, PersonaState, Result, Role, Store, StoreError,
};
use rusqlite::params;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::error::{bad_value, db_err, or_conflict};

/// A [`Store`] in a SQLite database (a file, or memory for tests).
///
/// Several stores, in one process or several, may open the same file: writes wait up to 5 s
/// for each other, and each method call is one transaction.
#[derive(Debug)]
pub struct SqliteStore {
    /// One connection; calls from several threads take turns.
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens the store in the database file at `path`, creating the file if it is missing, and
    /// brings its schema up to date.
    ///
    /// Fails with [`StoreError::Corrupt`] if the file is not a Nexus store (not a SQLite
    /// database, damaged, or another program's database; the file is left as it is), with
    /// [`StoreError::TooNew`] if a newer version of Nexus wrote it, and with
    /// [`StoreError::Backend`] if it cannot be opened at all (missing folder, permissions).
    pub fn open(path: &Path) -> Result<Self> {
        let in_this_file = |error| in_file(path, error);
        // No SQLITE_OPEN_URI: a path is a path. No SQLite mutex: our `Mutex` serializes access.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(path, flags).map_err(|e| in_this_file(db_err(e)))?;
        schema::prepare(&mut conn).map_err(in_this_file)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// A new, empty store in memory, gone when dropped.
    pub fn open_in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory().map_err(db_err)?;
        schema::prepare(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped (rolled back) its transaction: the connection
        // is fine to use.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in a write transaction. IMMEDIATE takes the write lock up front, so a busy
    /// database makes the call wait (busy timeout) instead of failing in the middle.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        let value = f(&tx)?;
        tx.commit().db()?;
        Ok(value)
    }

    /// Runs `f` in a read transaction: its statements see one consistent snapshot.
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction().db()?;
        let value = f(&tx)?;
        tx.commit().db()?;
        Ok(value)
    }
}

/// Adds the database file to the message of an error of [`SqliteStore::open`].
fn in_file(path: &Path, error: StoreError) -> StoreError {
    let path = path.display();
    match error {
        StoreError::Corrupt(e) => StoreError::Corrupt(format!("{path}: {e}")),
        StoreError::Backend(e) => StoreError::Backend(format!("cannot open {path}: {e}")),
        other => other,
    }
}

/// `.db()?`: converts a rusqlite result with [`db_err`].
trait DbResult<T> {
    fn db(self) -> Result<T>;
}

impl<T> DbResult<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T> {
        self.map_err(db_err)
    }
}

const COMPANION_COLUMNS: &str =
    "id, name, description, personality, speaking_style, greeting, created_at, updated_at, card";
const CONVERSATION_COLUMNS: &str = "id, companion_id, title, created_at, updated_at";

fn companion_row(row: &Row<'_>) -> rusqlite::Result<Companion> {
    Ok(Companion {
        id: id_at(row, 0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        personality: row.get(3)?,
        speaking_style: row.get(4)?,
        greeting: row.get(5)?,
        card: row
            .get::<_, Option<String>>(8)?
            .map(|json| json_value(8, &json))
            .transpose()?,
        created_at: Timestamp(row.get(6)?),
        updated_at: Timestamp(row.get(7)?),
    })
}

fn conversation_row(row: &Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: id_at(row, 0)?,
        companion_id: id_at(row, 1)?,
        title: row.get(2)?,
        created_at: Timestamp(row.get(3)?),
        updated_at: Timestamp(row.get(4)?),
    })
}

fn message_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let role: String = row.get(2)?;
    Ok(Message {
        id: id_at(row, 0)?,
        conversation_id: id_at(row, 1)?,
        role: Role::parse(&role).ok_or_else(|| bad_value(2, format!("unknown role {role:?}")))?,
        text: row.get(3)?,
        created_at: Timestamp(row.get(4)?),
        token_count: row.get(5)?,
    })
}

/// An id stored as text.
fn id_at<T: std::str::FromStr>(row: &Row<'_>, column: usize) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    parse_id(column, &text)
}

/// An id stored as text, or NULL.
fn optional_id_at<T: std::str::FromStr>(
    row: &Row<'_>,
    column: usize,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(column)?;
    text.map(|text| parse_id(column, &text)).transpose()
}

fn parse_id<T: std::str::FromStr>(column: usize, text: &str) -> rusqlite::Result<T> {
    text.parse()
        .map_err(|_| bad_value(column, format!("malformed id {text:?}")))
}

/// A value stored as JSON text.
fn json_value<T: serde::de::DeserializeOwned>(column: usize, json: &str) -> rusqlite::Result<T> {
    serde_json::from_str(json).map_err(|e| bad_value(column, format!("malformed JSON: {e}")))
}

/// A value as JSON text for storage.
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Invalid(format!("cannot be stored as JSON: {e}")))
}

/// A count or size as an SQLite integer.
fn sql_int(what: &str, value: impl TryInto<i64>) -> Result<i64> {
    value
        .try_into()
        .map_err(|_| StoreError::Invalid(format!("{what} is too large to store")))
}

/// An SQLite integer as a count or size.
fn int_at<T: TryFrom<i64>>(row: &Row<'_>, column: usize) -> rusqlite::Result<T> {
    let value: i64 = row.get(column)?;
    T::try_from(value).map_err(|_| bad_value(column, format!("out of range: {value}")))
}

/// A list of ids as a JSON array of strings, to pass a list as one parameter (`json_each`).
fn id_list<T: std::fmt::Display>(ids: &[T]) -> Result<String> {
    let strings: Vec<String> = ids.iter().map(ToString::to_string).collect();
    to_json(&strings)
}

fn check_companion(conn: &Connection, id: CompanionId) -> Result<()> {
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM companions WHERE id = ?1)")
        .and_then(|mut stmt| stmt.query_row([id.to_string()], |row| row.get(0)))
        .db()?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::not_found("companion", id))
    }
}

/// The companion of the conversation of a message.
fn message_companion(conn: &Connection, id: MessageId) -> Result<CompanionId> {
    conn.prepare_cached(
        "SELECT c.companion_id FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([id.to_string()], |row| id_at(row, 0))
            .optional()
    })
    .db()?
    .ok_or_else(|| StoreError::not_found("message", id))
}

fn check_conversation(conn: &Connection, id: ConversationId) -> Result<()> {
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM conversations WHERE id = ?1)")
        .and_then(|mut stmt| stmt.query_row([id.to_string()], |row| row.get(0)))
        .db()?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::not_found("conversation", id))
    }
}

/// The conflict of a companion insert or update: its name or its id is taken.
fn companion_conflict(detail: &str, companion: &Companion) -> StoreError {
    if detail.contains("companions.name_key") {
        StoreError::name_taken(&companion.name)
    } else {
        StoreError::id_taken("companion", companion.id)
    }
}

impl Store for SqliteStore {
    fn create_companion(&self, companion: &Companion) -> Result<()> {
        companion.validate()?;
        let c = companion;
        let card = c.card.as_ref().map(to_json).transpose()?;
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO companions (id, name, name_key, description, personality,
                     speaking_style, greeting, created_at, updated_at, card)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    c.id.to_string(),
                    c.name,
                    Companion::name_key(&c.name),
                    c.description,
                    c.personality,
                    c.speaking_style,
                    c.greeting,
                    c.created_at.0,
                    c.updated_at.0,
                    card,
                ])
            })
            .map_err(|e| or_conflict(e, |detail| companion_conflict(detail, c)))?;
            Ok(())
        })
    }

    fn companion(&self, id: CompanionId) -> Result<Companion> {
        self.read(|tx| {
            tx.prepare_cached(&format!(
                "SELECT {COMPANION_COLUMNS} FROM companions WHERE id = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([id.to_string()], companion_row).optional())
            .db()?
            .ok_or_else(|| StoreError::not_found("companion", id))
        })
    }

    fn companion_by_name(&self, name: &str) -> Result<Option<Companion>> {
        self.read(|tx| {
            let sql = format!("SELECT {COMPANION_COLUMNS} FROM companions WHERE name_key = ?1");
            tx.prepare_cached(&sql)
                .and_then(|mut stmt| {
                    stmt.query_row([Companion::name_key(name)], companion_row)
                        .optional()
                })
                .db()
        })
    }

    fn list_companions(&self) -> Result<Vec<Companion>> {
        self.read(|tx| {
            let sql = format!("SELECT {COMPANION_COLUMNS} FROM companions ORDER BY created_at, id");
            tx.prepare_cached(&sql)
                .and_then(|mut stmt| stmt.query_map([], companion_row)?.collect())
                .db()
        })
    }

    fn update_companion(&self, companion: &Companion) -> Result<()> {
        companion.validate()?;
        let c = companion;
        let card = c.card.as_ref().map(to_json).transpose()?;
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE companions SET name = ?2, name_key = ?3, description = ?4,
                         personality = ?5, speaking_style = ?6, greeting = ?7, updated_at = ?8,
                         card = ?9
                     WHERE id = ?1",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        c.id.to_string(),
                        c.name,
                        Companion::name_key(&c.name),
                        c.description,
                        c.personality,
                        c.speaking_style,
                        c.greeting,
                        c.updated_at.0,
                        card,
                    ])
                })
                .map_err(|e| or_conflict(e, |detail| companion_conflict(detail, c)))?;
            if changed == 0 {
                Err(StoreError::not_found("companion", c.id))
            } else {
                Ok(())
            }
        })
    }

    fn delete_companion(&self, id: CompanionId) -> Result<()> {
        // Everything it owns goes with it: ON DELETE CASCADE.
        self.write(|tx| {
            let deleted = tx
                .execute("DELETE FROM companions WHERE id = ?1", [id.to_string()])
                .db()?;
            if deleted == 0 {
                Err(StoreError::not_found("companion", id))
            } else {
                Ok(())
            }
        })
    }

    fn create_conversation(&self, conversation: &Conversation) -> Result<()> {
        let c = conversation;
        self.write(|tx| {
            check_companion(tx, c.companion_id)?;
            tx.prepare_cached(
                "INSERT INTO conversations (id, companion_id, title, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    c.id.to_string(),
                    c.companion_id.to_string(),
                    c.title,
                    c.created_at.0,
                    c.updated_at.0,
                ])
            })
            .map_err(|e| or_conflict(e, |_| StoreError::id_taken("conversation", c.id)))?;
            Ok(())
        })
    }

    fn conversation(&self, id: ConversationId) -> Result<Conversation> {
        self.read(|tx| {
            let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1");
            tx.prepare_cached(&sql)
                .and_then(|mut stmt| {
                    stmt.query_row([id.to_string()], conversation_row)
                        .optional()
                })
                .db()?
                .ok_or_else(|| StoreError::not_found("conversation", id))
        })
    }

    fn list_conversations(&self, companion: CompanionId) -> Result<Vec<Conversation>> {
        self.read(|tx| {
            check_companion(tx, companion)?;
            let sql = format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE companion_id = ?1
                 ORDER BY created_at, id"
            );
            tx.prepare_cached(&sql)
                .and_then(|mut stmt| {
                    stmt.query_map([companion.to_string()], conversation_row)?
                        .collect()
                })
                .db()
        })
    }

    fn delete_conversation(&self, id: ConversationId) -> Result<()> {
        // Its messages, their memory records and its summaries go with it: ON DELETE CASCADE.
        self.write(|tx| {
            let deleted = tx
                .execute("DELETE FROM conversations WHERE id = ?1", [id.to_string()])
                .db()?;
            if deleted == 0 {
                Err(StoreError::not_found("conversation", id))
            } else {
                Ok(())
            }
        })
    }

    fn append_messages(&self, messages: &[Message]) -> Result<()> {
        // One transaction: an error (or a crash) anywhere leaves none of the messages behind.
        self.write(|tx| {
            // The bump also checks that the conversation exists: it matches one row or none.
            let mut bump = tx
                .prepare_cached(
                    "UPDATE conversations SET updated_at = max(updated_at, ?2) WHERE id = ?1",
                )
                .db()?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages
                         (id, conversation_id, role, text, created_at, token_count)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .db()?;
            for m in messages {
                let conversation = m.conversation_id.to_string();
                if bump.execute(params![conversation, m.created_at.0]).db()? == 0 {
                    return Err(StoreError::not_found("conversation", m.conversation_id));
                }
                insert
                    .execute(params![
                        m.id.to_string(),
                        conversation,
                        m.role.as_str(),
                        m.text,
                        m.created_at.0,
                        m.token_count,
                    ])
                    .map_err(|e| or_conflict(e, |_| StoreError::id_taken("message", m.id)))?;
            }
            Ok(())
        })
    }

    fn messages(&self, conversation: ConversationId, limit: Option<usize>) -> Result<Vec<Message>> {
        // Newest first with the limit (-1: none), then reversed; the index on
        // (conversation_id, created_at) yields rows in (created_at, seq) order without sorting.
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.read(|tx| {
            check_conversation(tx, conversation)?;
            let mut newest_first: Vec<Message> = tx
                .prepare_cached(
                    "SELECT id, conversation_id, role, text, created_at, token_count
                     FROM messages WHERE conversation_id = ?1
                     ORDER BY created_at DESC, seq DESC LIMIT ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![conversation.to_string(), limit], message_row)?
                        .collect()
                })
                .db()?;
            newest_first.reverse();
            Ok(newest_first)
        })
    }

    fn message_count(&self, conversation: ConversationId) -> Result<usize> {
        let count: Option<i64> = self.read(|tx| {
            tx.prepare_cached(
                "SELECT (SELECT count(*) FROM messages WHERE conversation_id = ?1)
                 FROM conversations WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([conversation.to_string()], |r| r.get(0))
                    .optional()
            })
            .db()
        })?;
        let count = count.ok_or_else(|| StoreError::not_found("conversation", conversation))?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        self.read(|tx| {
            tx.prepare_cached("SELECT value FROM settings WHERE key = ?1")
                .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
                .db()
        })
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut stmt| stmt.execute([key, value]))
            .db()?;
            Ok(())
        })
    }

    fn delete_setting(&self, key: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM settings WHERE key = ?1", [key])
                .db()?;
            Ok(())
        })
    }

    fn settings(&self) -> Result<Vec<(String, String)>> {
        self.read(|tx| {
            tx.prepare_cached("SELECT key, value FROM settings ORDER BY key")
                .and_then(|mut stmt| {
                    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect()
                })
                .db()
        })
    }

    fn messages_range(
        &self,
        conversation: ConversationId,
        start: usize,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            check_conversation(tx, conversation)?;
            tx.prepare_cached(
                "SELECT id, conversation_id, role, text, created_at, token_count
                 FROM messages WHERE conversation_id = ?1
                 ORDER BY created_at, seq LIMIT ?3 OFFSET ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![conversation.to_string(), start, limit], message_row)?
                    .collect()
            })
            .db()
        })
    }

    fn insert_memory(&self, memory: &MemoryItem) -> Result<()> {
        memory.validate_new()?;
        self.write(|tx| memories::insert(tx, memory))
    }

    fn update_memory(&self, memory: &MemoryItem) -> Result<()> {
        memory.validate()?;
        self.write(|tx| memories::update(tx, memory))
    }

    fn supersede_memory(&self, old: MemoryId, new: &MemoryItem) -> Result<()> {
        new.validate_new()?;
        self.write(|tx| memories::supersede(tx, old, new))
    }

    fn memory(&self, id: MemoryId) -> Result<MemoryItem> {
        self.read(|tx| memories::get(tx, id))
    }

    fn list_memories(
        &self,
        companion: CompanionId,
        include_superseded: bool,
    ) -> Result<Vec<MemoryItem>> {
        self.read(|tx| memories::list(tx, companion, include_superseded))
    }

    fn delete_memories(&self, ids: &[MemoryId]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(|tx| memories::forget(tx, ids))
    }

    fn record_memories_used(
        &self,
        reply: MessageId,
        memories: &[MemoryId],
        at: Timestamp,
    ) -> Result<()> {
        self.write(|tx| memories::record_uses(tx, reply, memories, at))
    }

    fn memories_used(&self, reply: MessageId) -> Result<Vec<MemoryId>> {
        self.read(|tx| memories::uses(tx, reply))
    }

    fn persona_state(&self, companion: CompanionId) -> Result<Option<PersonaState>> {
        self.read(|tx| persona::state(tx, companion))
    }

    fn save_persona_state(&self, state: &PersonaState, changes: &[PersonaChange]) -> Result<()> {
        state.validate_save(changes)?;
        self.write(|tx| persona::save(tx, state, changes))
    }

    fn persona_history(
        &self,
        companion: CompanionId,
        limit: Option<usize>,
    ) -> Result<Vec<PersonaChange>> {
        self.read(|tx| persona::history(tx, companion, limit))
    }

    fn latest_summary(&self, conversation: ConversationId) -> Result<Option<ConversationSummary>> {
        self.read(|tx| summaries::latest(tx, conversation))
    }

    fn save_summary(&self, summary: &ConversationSummary) -> Result<()> {
        summary.validate()?;
        self.write(|tx| summaries::save(tx, summary))
    }

    fn put_asset(&self, asset: &CompanionAsset) -> Result<()> {
        asset.validate()?;
        self.write(|tx| assets::put(tx, asset))
    }

    fn assets(&self, companion: CompanionId) -> Result<Vec<CompanionAsset>> {
        self.read(|tx| assets::list(tx, companion))
    }

    fn delete_asset(&self, companion: CompanionId, name: &str) -> Result<()> {
        self.write(|tx| assets::delete(tx, companion, name))
    }

    fn add_journal_entries(&self, entries: &[JournalEntry]) -> Result<()> {
        for entry in entries {
            entry.validate()?;
        }
        self.write(|tx| journal::add(tx, entries))
    }

    fn put_journal_entries(&self, entries: &[JournalEntry]) -> Result<()> {
        for entry in entries {
            entry.validate()?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.write(|tx| journal::put(tx, entries))
    }

    fn journal(&self, from: Timestamp, to: Timestamp) -> Result<Vec<JournalEntry>> {
        self.read(|tx| journal::range(tx, from, to))
    }

    fn wipe(&self) -> Result<()> {
        wipe::wipe(&mut self.lock())
    }

    fn put_memories(&self, memories: &[MemoryItem]) -> Result<()> {
        for memory in memories {
            memory.validate()?;
        }
        if memories.is_empty() {
            return Ok(());
        }
        self.write(|tx| memories::put(tx, memories))
    }

    fn sync_value(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read(|tx| {
            tx.prepare_cached("SELECT value FROM sync_state WHERE key = ?1")
                .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
                .db()
        })
    }

    fn set_sync_values(&self, values: &[(String, Option<Vec<u8>>)]) -> Result<()> {
        self.write(|tx| {
            for (key, value) in values {
                match value {
                    Some(value) => tx
                        .prepare_cached(
                            "INSERT INTO sync_state (key, value) VALUES (?1, ?2)
                             ON CONFLICT (key) DO UPDATE SET value = ?2",
                        )
                        .and_then(|mut stmt| stmt.execute(params![key, value])),
                    None => tx
                        .prepare_cached("DELETE FROM sync_state WHERE key = ?1")
                        .and_then(|mut stmt| stmt.execute([key])),
                }
                .db()?;
            }
            Ok(())
        })
    }

    fn sync_keys(&self, prefix: &str) -> Result<Vec<String>> {
        self.read(|tx| {
            // substr instead of LIKE: no wildcards to escape, byte-exact.
            tx.prepare_cached(
                "SELECT key FROM sync_state WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
            )
            .and_then(|mut stmt| stmt.query_map([prefix], |row| row.get(0))?.collect())
            .db()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SqliteStore>();
    }

    #[test]
    fn connection_pragmas_are_set() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("nexus.db")).expect("open");
        let conn = store.lock();
        let pragma = |name: &str| -> String {
            conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|value| match value {
                    rusqlite::types::Value::Integer(n) => n.to_string(),
                    rusqlite::types::Value::Text(s) => s,
                    other => format!("{other:?}"),
                })
                .expect("pragma")
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(pragma("synchronous"), "1", "NORMAL");
        assert_eq!(pragma("busy_timeout"), "5000");
        assert_eq!(pragma("secure_delete"), "1");
    }

    #[test]
    fn an_unknown_role_in_the_file_is_reported_as_corrupt() {
        let store = SqliteStore::open_in_memory().expect("open");
        store
            .lock()
            .execute_batch(
                "PRAGMA ignore_check_constraints = ON;
                 INSERT INTO companions (id, name, name_key, description, personality,
                     speaking_style, greeting, created_at, updated_at)
                 VALUES ('01890000-0000-7000-8000-000000000001', 'M', 'm', '', '', '', '', 1, 1);
                 INSERT INTO conversations VALUES ('01890000-0000-7000-8000-000000000002',
                     '01890000-0000-7000-8000-000000000001', NULL, 1, 1);
                 INSERT INTO messages (id, conversation_id, role, text, created_at, token_count)
                 VALUES ('01890000-0000-7000-8000-000000000003',
                     '01890000-0000-7000-8000-000000000002', 'narrator', 'hi', 1, 0);",
            )
            .expect("write a bad row behind the store's back");
        let conversation: ConversationId =
            "01890000-0000-7000-8000-000000000002".parse().expect("id");
        match store.messages(conversation, None) {
            Err(StoreError::Corrupt(message)) => assert!(message.contains("narrator"), "{message}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn damaged_card_json_and_embeddings_are_reported_as_corrupt() {
        let store = SqliteStore::open_in_memory().expect("open");
        let companion: CompanionId = "01890000-0000-7000-8000-000000000001".parse().expect("id");
        let memory: MemoryId = "01890000-0000-7000-8000-000000000002".parse().expect("id");
        store
            .lock()
            .execute_batch(
                "PRAGMA ignore_check_constraints = ON;
                 INSERT INTO companions (id, name, name_key, description, personality,
                     speaking_style, greeting, created_at, updated_at, card)
                 VALUES ('01890000-0000-7000-8000-000000000001', 'M', 'm', '', '', '', '', 1, 1,
                     '{\"name\": ');
                 INSERT INTO memories (id, companion_id, text, kind, subject, importance, pinned,
                     embedding, source_message_ids, created_at, updated_at)
                 VALUES ('01890000-0000-7000-8000-000000000002',
                     '01890000-0000-7000-8000-000000000001', 't', 'fact', '', 0.5, 0,
                     x'0000803f00', '[]', 1, 1);",
            )
            .expect("write bad rows behind the store's back");
        match store.companion(companion) {
            Err(StoreError::Corrupt(message)) => assert!(message.contains("JSON"), "{message}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        match store.memory(memory) {
            Err(StoreError::Corrupt(message)) => assert!(message.contains("5 bytes"), "{message}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
