//! Long-term memories and the records of which memories informed which reply.

use std::collections::{BTreeMap, BTreeSet};

use nexus_common::{CompanionId, MemoryId, MessageId, Timestamp};
use nexus_store::{Forgetting, MemoryItem, MemoryKind, Result, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{bad_value, or_conflict};
use crate::{
    DbResult, check_companion, id_at, id_list, json_value, message_companion, optional_id_at,
    to_json,
};

const MEMORY_COLUMNS: &str = "id, companion_id, text, kind, subject, importance, pinned,
    embedding, source_message_ids, created_at, updated_at, last_used_at, superseded_by";

fn memory_row(row: &Row<'_>) -> rusqlite::Result<MemoryItem> {
    let kind: String = row.get(3)?;
    let importance: f64 = row.get(5)?;
    let embedding: Vec<u8> = row.get(7)?;
    let sources: String = row.get(8)?;
    Ok(MemoryItem {
        id: id_at(row, 0)?,
        companion_id: id_at(row, 1)?,
        text: row.get(2)?,
        kind: MemoryKind::parse(&kind)
            .ok_or_else(|| bad_value(3, format!("unknown memory kind {kind:?}")))?,
        subject: row.get(4)?,
        // Stored from an f32, so the conversion back is exact.
        importance: importance as f32,
        pinned: row.get(6)?,
        embedding: embedding_values(&embedding)
            .ok_or_else(|| bad_value(7, format!("an embedding of {} bytes", embedding.len())))?,
        source_message_ids: json_value(8, &sources)?,
        created_at: Timestamp(row.get(9)?),
        updated_at: Timestamp(row.get(10)?),
        last_used_at: row.get::<_, Option<i64>>(11)?.map(Timestamp),
        superseded_by: optional_id_at(row, 12)?,
    })
}

/// An embedding as stored: each value as 4 bytes, little-endian (the same on every platform).
fn embedding_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The values of a stored embedding; `None` if the length is not a multiple of 4.
fn embedding_values(bytes: &[u8]) -> Option<Vec<f32>> {
    let (values, rest) = bytes.as_chunks::<4>();
    rest.is_empty()
        .then(|| values.iter().map(|b| f32::from_le_bytes(*b)).collect())
}

/// Inserts a memory whose companion exists (checked) after `validate_new`.
pub(crate) fn insert(conn: &Connection, m: &MemoryItem) -> Result<()> {
    check_companion(conn, m.companion_id)?;
    insert_row(conn, m)
}

/// Runs `sql`, an INSERT of every column but `superseded_by` (NULL) bound in table order as
/// `?1..?12`, for `m`.
fn write_row(conn: &Connection, sql: &str, m: &MemoryItem) -> Result<rusqlite::Result<usize>> {
    let sources = to_json(&m.source_message_ids)?;
    Ok(conn.prepare_cached(sql).and_then(|mut stmt| {
        stmt.execute(params![
            m.id.to_string(),
            m.companion_id.to_string(),
            m.text,
            m.kind.as_str(),
            m.subject,
            f64::from(m.importance),
            m.pinned,
            embedding_bytes(&m.embedding),
            sources,
            m.created_at.0,
            m.updated_at.0,
            m.last_used_at.map(|t| t.0),
        ])
    }))
}

fn insert_row(conn: &Connection, m: &MemoryItem) -> Result<()> {
    write_row(
        conn,
        "INSERT INTO memories (id, companion_id, text, kind, subject, importance, pinned,
             embedding, source_message_ids, created_at, updated_at, last_used_at, superseded_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL)",
        m,
    )?
    .map_err(|e| or_conflict(e, |_| StoreError::id_taken("memory", m.id)))?;
    Ok(())
}

/// What the store manages about a memory: its companion and its successor.
fn owner_and_successor(conn: &Connection, id: MemoryId) -> Result<(CompanionId, Option<MemoryId>)> {
    conn.prepare_cached("SELECT companion_id, superseded_by FROM memories WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([id.to_string()], |row| {
                Ok((id_at(row, 0)?, optional_id_at(row, 1)?))
            })
            .optional()
        })
        .db()?
        .ok_or_else(|| StoreError::not_found("memory", id))
}

pub(crate) fn update(conn: &Connection, m: &MemoryItem) -> Result<()> {
    let (companion, _) = owner_and_successor(conn, m.id)?;
    if companion != m.companion_id {
        return Err(StoreError::other_companion(m.id));
    }
    let sources = to_json(&m.source_message_ids)?;
    // created_at, last_used_at and superseded_by are the store's: not in this statement.
    conn.prepare_cached(
        "UPDATE memories SET text = ?2, kind = ?3, subject = ?4, importance = ?5, pinned = ?6,
             embedding = ?7, source_message_ids = ?8, updated_at = ?9
         WHERE id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            m.id.to_string(),
            m.text,
            m.kind.as_str(),
            m.subject,
            f64::from(m.importance),
            m.pinned,
            embedding_bytes(&m.embedding),
            sources,
            m.updated_at.0,
        ])
    })
    .db()?;
    Ok(())
}

pub(crate) fn supersede(conn: &Connection, old: MemoryId, new: &MemoryItem) -> Result<()> {
    let (companion, successor) = owner_and_successor(conn, old)?;
    if companion != new.companion_id {
        return Err(StoreError::other_companion(new.id));
    }
    if let Some(by) = successor {
        return Err(StoreError::already_superseded(old, by));
    }
    insert_row(conn, new)?;
    conn.prepare_cached("UPDATE memories SET superseded_by = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute([old.to_string(), new.id.to_string()]))
        .db()?;
    Ok(())
}

/// Upserts replicated memories with every field (see `Store::put_memories`).
pub(crate) fn put(conn: &Connection, memories: &[MemoryItem]) -> Result<()> {
    // First the rows without their links, so a memory may name one later in the batch; then the
    // links, each checked against the rows as they are now.
    for m in memories {
        check_companion(conn, m.companion_id)?;
        let owner: Option<CompanionId> = conn
            .prepare_cached("SELECT companion_id FROM memories WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([m.id.to_string()], |row| id_at(row, 0))
                    .optional()
            })
            .db()?;
        if owner.is_some_and(|owner| owner != m.companion_id) {
            return Err(StoreError::other_companion(m.id));
        }
        write_row(
            conn,
            "INSERT INTO memories (id, companion_id, text, kind, subject, importance, pinned,
                 embedding, source_message_ids, created_at, updated_at, last_used_at, superseded_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL)
             ON CONFLICT (id) DO UPDATE SET text = ?3, kind = ?4, subject = ?5, importance = ?6,
                 pinned = ?7, embedding = ?8, source_message_ids = ?9, created_at = ?10,
                 updated_at = ?11, last_used_at = ?12, superseded_by = NULL",
            m,
        )?
        .db()?;
    }
    for m in memories {
        let Some(next) = m.superseded_by else {
            continue;
        };
        if next == m.id {
            return Err(StoreError::Invalid(format!(
                "memory {next} cannot supersede itself"
            )));
        }
        let (companion, _) = owner_and_successor(conn, next)?;
        if companion != m.companion_id {
            return Err(StoreError::other_companion(next));
        }
        conn.prepare_cached("UPDATE memories SET superseded_by = ?2 WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute([m.id.to_string(), next.to_string()]))
            .db()?;
    }
    Ok(())
}

pub(crate) fn get(conn: &Connection, id: MemoryId) -> Result<MemoryItem> {
    conn.prepare_cached(&format!(
        "SELECT {MEMORY_COLUMNS} FROM memories WHERE id = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([id.to_string()], memory_row).optional())
    .db()?
    .ok_or_else(|| StoreError::not_found("memory", id))
}

pub(crate) fn list(
    conn: &Connection,
    companion: CompanionId,
    include_superseded: bool,
) -> Result<Vec<MemoryItem>> {
    check_companion(conn, companion)?;
    conn.prepare_cached(&format!(
        "SELECT {MEMORY_COLUMNS} FROM memories
         WHERE companion_id = ?1 AND (?2 OR superseded_by IS NULL)
         ORDER BY created_at, id"
    ))
    .and_then(|mut stmt| {
        stmt.query_map(
            params![companion.to_string(), include_superseded],
            memory_row,
        )?
        .collect()
    })
    .db()
}

/// Deletes memories as [`Forgetting`] plans it; returns how many were deleted.
pub(crate) fn forget(conn: &Connection, ids: &[MemoryId]) -> Result<usize> {
    let ids_json = id_list(ids)?;
    // Every memory of the companions concerned: version chains never cross companions.
    let links: BTreeMap<MemoryId, Option<MemoryId>> = conn
        .prepare_cached(
            "SELECT id, superseded_by FROM memories WHERE companion_id IN
                 (SELECT companion_id FROM memories
                  WHERE id IN (SELECT value FROM json_each(?1)))",
        )
        .and_then(|mut stmt| {
            stmt.query_map([&ids_json], |row| {
                Ok((id_at(row, 0)?, optional_id_at(row, 1)?))
            })?
            .collect()
        })
        .db()?;
    let plan = Forgetting::plan(&links, ids);
    // Relink first: until then, the memories to delete are still referenced.
    let mut relink = conn
        .prepare_cached("UPDATE memories SET superseded_by = ?2 WHERE id = ?1")
        .db()?;
    for (id, successor) in &plan.relink {
        relink
            .execute([id.to_string(), successor.to_string()])
            .db()?;
    }
    // Oldest versions first, so no statement leaves a reference to a deleted row (the
    // self-reference has no ON DELETE action). Their reply records go by ON DELETE CASCADE.
    let mut delete = conn
        .prepare_cached("DELETE FROM memories WHERE id = ?1")
        .db()?;
    for id in &plan.delete {
        delete.execute([id.to_string()]).db()?;
    }
    Ok(plan.delete.len())
}

pub(crate) fn record_uses(
    conn: &Connection,
    reply: MessageId,
    memories: &[MemoryId],
    at: Timestamp,
) -> Result<()> {
    let companion = message_companion(conn, reply)?;
    let mut seen = BTreeSet::new();
    let memories: Vec<MemoryId> = memories
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect();
    for &id in &memories {
        if owner_and_successor(conn, id)?.0 != companion {
            return Err(StoreError::other_companion(id));
        }
    }
    let reply = reply.to_string();
    conn.prepare_cached("DELETE FROM memory_uses WHERE reply_id = ?1")
        .and_then(|mut stmt| stmt.execute([&reply]))
        .db()?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO memory_uses (reply_id, position, memory_id) VALUES (?1, ?2, ?3)",
        )
        .db()?;
    let mut stamp = conn
        .prepare_cached("UPDATE memories SET last_used_at = ?2 WHERE id = ?1")
        .db()?;
    for (position, id) in (0_i64..).zip(&memories) {
        insert
            .execute(params![reply, position, id.to_string()])
            .db()?;
        stamp.execute(params![id.to_string(), at.0]).db()?;
    }
    Ok(())
}

pub(crate) fn uses(conn: &Connection, reply: MessageId) -> Result<Vec<MemoryId>> {
    message_companion(conn, reply)?; // NotFound for a missing message
    conn.prepare_cached("SELECT memory_id FROM memory_uses WHERE reply_id = ?1 ORDER BY position")
        .and_then(|mut stmt| {
            stmt.query_map([reply.to_string()], |row| id_at(row, 0))?
                .collect()
        })
        .db()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_little_endian_and_lengths_are_checked() {
        assert_eq!(embedding_bytes(&[1.0]), [0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(embedding_values(&[0x00, 0x00, 0x80, 0x3f]), Some(vec![1.0]));
        assert_eq!(embedding_values(&[]), Some(vec![]));
        assert_eq!(embedding_values(&[1, 2, 3]), None);
        assert_eq!(embedding_values(&[0, 0, 0x80, 0x3f, 9]), None);
    }
}
