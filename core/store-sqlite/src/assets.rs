//! Files attached to companions (avatars, assets of imported character cards).

use nexus_common::CompanionId;
use nexus_store::{CompanionAsset, Result};
use rusqlite::{Connection, Row, params};

use crate::{DbResult, check_companion, id_at};

fn asset_row(row: &Row<'_>) -> rusqlite::Result<CompanionAsset> {
    Ok(CompanionAsset {
        companion_id: id_at(row, 0)?,
        name: row.get(1)?,
        media_type: row.get(2)?,
        bytes: row.get(3)?,
    })
}

/// Stores an asset (validated by the caller), replacing the one with the same name.
pub(crate) fn put(conn: &Connection, a: &CompanionAsset) -> Result<()> {
    check_companion(conn, a.companion_id)?;
    conn.prepare_cached(
        "INSERT INTO companion_assets (companion_id, name, media_type, bytes)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (companion_id, name) DO UPDATE SET media_type = excluded.media_type,
             bytes = excluded.bytes",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            a.companion_id.to_string(),
            a.name,
            a.media_type,
            a.bytes
        ])
    })
    .db()?;
    Ok(())
}

pub(crate) fn list(conn: &Connection, companion: CompanionId) -> Result<Vec<CompanionAsset>> {
    check_companion(conn, companion)?;
    // BINARY collation: byte order of the UTF-8 names, the order of Rust's `str`.
    conn.prepare_cached(
        "SELECT companion_id, name, media_type, bytes FROM companion_assets
         WHERE companion_id = ?1 ORDER BY name",
    )
    .and_then(|mut stmt| {
        stmt.query_map([companion.to_string()], asset_row)?
            .collect()
    })
    .db()
}

pub(crate) fn delete(conn: &Connection, companion: CompanionId, name: &str) -> Result<()> {
    check_companion(conn, companion)?;
    conn.prepare_cached("DELETE FROM companion_assets WHERE companion_id = ?1 AND name = ?2")
        .and_then(|mut stmt| stmt.execute(params![companion.to_string(), name]))
        .db()?;
    Ok(())
}
