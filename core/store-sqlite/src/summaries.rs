//! Rolling summaries of conversations.

use nexus_common::{ConversationId, Timestamp};
use nexus_store::{ConversationSummary, Result};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{DbResult, check_conversation, id_at, int_at, sql_int};

fn summary_row(row: &Row<'_>) -> rusqlite::Result<ConversationSummary> {
    Ok(ConversationSummary {
        conversation_id: id_at(row, 0)?,
        text: row.get(1)?,
        covered_messages: int_at(row, 2)?,
        token_count: row.get(3)?,
        created_at: Timestamp(row.get(4)?),
    })
}

pub(crate) fn latest(
    conn: &Connection,
    conversation: ConversationId,
) -> Result<Option<ConversationSummary>> {
    check_conversation(conn, conversation)?;
    conn.prepare_cached(
        "SELECT conversation_id, text, covered_messages, token_count, created_at
         FROM summaries WHERE conversation_id = ?1
         ORDER BY created_at DESC, seq DESC LIMIT 1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([conversation.to_string()], summary_row)
            .optional()
    })
    .db()
}

/// Stores a summary (validated by the caller) of an existing conversation.
pub(crate) fn save(conn: &Connection, s: &ConversationSummary) -> Result<()> {
    check_conversation(conn, s.conversation_id)?;
    let covered = sql_int(
        "the number of messages a summary covers",
        s.covered_messages,
    )?;
    conn.prepare_cached(
        "INSERT INTO summaries (conversation_id, text, covered_messages, token_count, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            s.conversation_id.to_string(),
            s.text,
            covered,
            s.token_count,
            s.created_at.0,
        ])
    })
    .db()?;
    Ok(())
}
