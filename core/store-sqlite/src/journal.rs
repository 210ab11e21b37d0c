//! The emotion journal.

use nexus_common::Timestamp;
use nexus_store::{EmotionSource, JournalEntry, Result};
use rusqlite::{Connection, Row, params};

use crate::error::{bad_value, db_err, or_conflict};
use crate::{DbResult, id_at, json_value, optional_id_at, to_json};
use nexus_store::StoreError;

fn entry_row(row: &Row<'_>) -> rusqlite::Result<JournalEntry> {
    let source: String = row.get(2)?;
    Ok(JournalEntry {
        id: id_at(row, 0)?,
        at: Timestamp(row.get(1)?),
        source: EmotionSource::parse(&source)
            .ok_or_else(|| bad_value(2, format!("unknown emotion source {source:?}")))?,
        labels: json_value(3, &row.get::<_, String>(3)?)?,
        // f32 -> REAL (f64) -> f32 is exact.
        valence: row.get::<_, f64>(4)? as f32,
        arousal: row.get::<_, f64>(5)? as f32,
        confidence: row.get::<_, f64>(6)? as f32,
        conversation_id: optional_id_at(row, 7)?,
        message_id: optional_id_at(row, 8)?,
        details: json_value(9, &row.get::<_, String>(9)?)?,
    })
}

/// Inserts entries (validated by the caller).
/// Runs `sql`, an INSERT binding every column as `?1..?10` in table order, once per entry;
/// `on_error` turns a failed row into the store's error.
fn write_entries(
    conn: &Connection,
    sql: &str,
    entries: &[JournalEntry],
    on_error: impl Fn(rusqlite::Error, &JournalEntry) -> StoreError,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(sql).db()?;
    for e in entries {
        stmt.execute(params![
            e.id.to_string(),
            e.at.0,
            e.source.as_str(),
            to_json(&e.labels)?,
            f64::from(e.valence),
            f64::from(e.arousal),
            f64::from(e.confidence),
            e.conversation_id.map(|id| id.to_string()),
            e.message_id.map(|id| id.to_string()),
            to_json(&e.details)?,
        ])
        .map_err(|err| on_error(err, e))?;
    }
    Ok(())
}

pub(crate) fn add(conn: &Connection, entries: &[JournalEntry]) -> Result<()> {
    write_entries(
        conn,
        "INSERT INTO emotion_journal (id, at, source, labels, valence, arousal, confidence,
                                      conversation_id, message_id, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        entries,
        |err, e| or_conflict(err, |_| StoreError::id_taken("journal entry", e.id)),
    )
}

/// Inserts or replaces entries by id (validated by the caller); a replaced entry keeps its
/// `seq` (its place among equal times).
pub(crate) fn put(conn: &Connection, entries: &[JournalEntry]) -> Result<()> {
    write_entries(
        conn,
        "INSERT INTO emotion_journal (id, at, source, labels, valence, arousal, confidence,
                                      conversation_id, message_id, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET
             at = excluded.at, source = excluded.source, labels = excluded.labels,
             valence = excluded.valence, arousal = excluded.arousal,
             confidence = excluded.confidence, conversation_id = excluded.conversation_id,
             message_id = excluded.message_id, details = excluded.details",
        entries,
        |err, _| db_err(err),
    )
}

/// Entries with `from <= at < to`, by time then insertion order.
pub(crate) fn range(
    conn: &Connection,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<JournalEntry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, at, source, labels, valence, arousal, confidence, conversation_id,
                    message_id, details
             FROM emotion_journal WHERE at >= ?1 AND at < ?2 ORDER BY at, seq",
        )
        .db()?;
    let rows = stmt.query_map([from.0, to.0], entry_row).db()?;
    rows.collect::<rusqlite::Result<Vec<_>>>().db()
}
