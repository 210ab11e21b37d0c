//! The evolving persona: its current state and the history of its changes.

use nexus_common::{CompanionId, Timestamp};
use nexus_store::{PersonaChange, PersonaState, Result};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{DbResult, check_companion, id_at, int_at, json_value, sql_int, to_json};

fn state_row(row: &Row<'_>) -> rusqlite::Result<PersonaState> {
    let traits: String = row.get(1)?;
    let locked: String = row.get(2)?;
    let familiarity: f64 = row.get(3)?;
    let trust: f64 = row.get(4)?;
    Ok(PersonaState {
        companion_id: id_at(row, 0)?,
        traits: json_value(1, &traits)?,
        locked: json_value(2, &locked)?,
        // Stored from f32s, so the conversions back are exact.
        familiarity: familiarity as f32,
        trust: trust as f32,
        exchanges: int_at(row, 5)?,
        updated_at: Timestamp(row.get(6)?),
    })
}

fn change_row(row: &Row<'_>) -> rusqlite::Result<PersonaChange> {
    let old: f64 = row.get(2)?;
    let new: f64 = row.get(3)?;
    Ok(PersonaChange {
        companion_id: id_at(row, 0)?,
        field: row.get(1)?,
        old: old as f32,
        new: new as f32,
        reason: row.get(4)?,
        at: Timestamp(row.get(5)?),
    })
}

pub(crate) fn state(conn: &Connection, companion: CompanionId) -> Result<Option<PersonaState>> {
    check_companion(conn, companion)?;
    conn.prepare_cached(
        "SELECT companion_id, traits, locked, familiarity, trust, exchanges, updated_at
         FROM persona_state WHERE companion_id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([companion.to_string()], state_row)
            .optional()
    })
    .db()
}

/// Saves a state and appends its changes (both validated by the caller).
pub(crate) fn save(conn: &Connection, s: &PersonaState, changes: &[PersonaChange]) -> Result<()> {
    check_companion(conn, s.companion_id)?;
    let companion = s.companion_id.to_string();
    let traits = to_json(&s.traits)?;
    let locked = to_json(&s.locked)?;
    let exchanges = sql_int("the number of exchanges", s.exchanges)?;
    conn.prepare_cached(
        "INSERT INTO persona_state
             (companion_id, traits, locked, familiarity, trust, exchanges, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (companion_id) DO UPDATE SET traits = excluded.traits,
             locked = excluded.locked, familiarity = excluded.familiarity,
             trust = excluded.trust, exchanges = excluded.exchanges,
             updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            companion,
            traits,
            locked,
            f64::from(s.familiarity),
            f64::from(s.trust),
            exchanges,
            s.updated_at.0,
        ])
    })
    .db()?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO persona_changes (companion_id, field, old, new, reason, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .db()?;
    for c in changes {
        insert
            .execute(params![
                companion,
                c.field,
                f64::from(c.old),
                f64::from(c.new),
                c.reason,
                c.at.0,
            ])
            .db()?;
    }
    Ok(())
}

pub(crate) fn history(
    conn: &Connection,
    companion: CompanionId,
    limit: Option<usize>,
) -> Result<Vec<PersonaChange>> {
    check_companion(conn, companion)?;
    // Newest first with the limit (-1: none), then reversed, as for messages.
    let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let mut newest_first: Vec<PersonaChange> = conn
        .prepare_cached(
            "SELECT companion_id, field, old, new, reason, at FROM persona_changes
             WHERE companion_id = ?1 ORDER BY at DESC, seq DESC LIMIT ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![companion.to_string(), limit], change_row)?
                .collect()
        })
        .db()?;
    newest_first.reverse();
    Ok(newest_first)
}
