-- Schema version 2: character cards, long-term memory, evolving personas, rolling summaries and
-- companion assets. Conventions as in 001: ids are UUID text, times milliseconds since the Unix
-- epoch, tables STRICT. Lists and maps that are only ever read whole are JSON text.

-- The `data` object of the companion's character card as JSON text; NULL: no card.
ALTER TABLE companions ADD COLUMN card TEXT CHECK (card IS NULL OR json_valid(card));

CREATE TABLE memories (
    id                 TEXT    NOT NULL PRIMARY KEY,
    companion_id       TEXT    NOT NULL REFERENCES companions (id) ON DELETE CASCADE,
    text               TEXT    NOT NULL,
    kind               TEXT    NOT NULL CHECK (kind IN ('preference', 'person', 'event', 'plan',
                                                        'feeling', 'fact', 'relationship')),
    subject            TEXT    NOT NULL,
    importance         REAL    NOT NULL CHECK (importance BETWEEN 0 AND 1),
    pinned             INTEGER NOT NULL CHECK (pinned IN (0, 1)),
    -- f32 values, 4 bytes each, little-endian; empty: not computed.
    embedding          BLOB    NOT NULL CHECK (length(embedding) % 4 = 0),
    -- JSON array of message ids; they may name messages deleted since.
    source_message_ids TEXT    NOT NULL CHECK (json_valid(source_message_ids)),
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    last_used_at       INTEGER,
    -- The newer version of this fact; NULL for the current version. No ON DELETE action on
    -- purpose: the store decides what forgetting does to the history (nexus_store::Forgetting:
    -- forgetting the current version deletes the older ones, forgetting an older version links
    -- around it) and applies it before deleting. SET NULL would silently bring an old version
    -- back as current, CASCADE would delete a whole history even when only an old version is
    -- forgotten; NO ACTION turns any other deletion into an error instead of an orphan.
    superseded_by      TEXT    REFERENCES memories (id),
    CHECK (superseded_by IS NULL OR superseded_by <> id)
) STRICT;

-- Lists a companion's memories in order; also serves the companion foreign key's cascade.
CREATE INDEX memories_by_companion ON memories (companion_id, created_at, id);
-- Finds the older version of a memory; also serves the self-reference's check on delete.
CREATE INDEX memories_by_superseded ON memories (superseded_by);

-- Which memories informed which reply, in order.
CREATE TABLE memory_uses (
    reply_id  TEXT    NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    memory_id TEXT    NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
    PRIMARY KEY (reply_id, position),
    UNIQUE (reply_id, memory_id)
) STRICT;

-- The primary key serves lookups by reply; this one the cascade from memories.
CREATE INDEX memory_uses_by_memory ON memory_uses (memory_id);

CREATE TABLE persona_state (
    companion_id TEXT    NOT NULL PRIMARY KEY REFERENCES companions (id) ON DELETE CASCADE,
    -- JSON object: trait name -> score in [0, 1].
    traits       TEXT    NOT NULL CHECK (json_valid(traits)),
    -- JSON array of the locked trait names.
    locked       TEXT    NOT NULL CHECK (json_valid(locked)),
    familiarity  REAL    NOT NULL CHECK (familiarity BETWEEN 0 AND 1),
    trust        REAL    NOT NULL CHECK (trust BETWEEN 0 AND 1),
    exchanges    INTEGER NOT NULL CHECK (exchanges >= 0),
    updated_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE persona_changes (
    -- Alias of the rowid: a new row gets a larger value than every existing row, so it orders
    -- changes with equal `at` in the order they were saved. (AUTOINCREMENT would add nothing:
    -- changes are only ever deleted with their companion.)
    seq          INTEGER NOT NULL PRIMARY KEY,
    companion_id TEXT    NOT NULL REFERENCES companions (id) ON DELETE CASCADE,
    field        TEXT    NOT NULL,
    old          REAL    NOT NULL,
    new          REAL    NOT NULL,
    reason       TEXT    NOT NULL,
    at           INTEGER NOT NULL
) STRICT;

-- Yields a companion's changes in (at, seq) order (index entries end with the rowid); also
-- serves the foreign key's cascade.
CREATE INDEX persona_changes_by_companion ON persona_changes (companion_id, at);

CREATE TABLE summaries (
    -- Alias of the rowid: orders summaries with equal `created_at` in the order they were saved.
    seq              INTEGER NOT NULL PRIMARY KEY,
    conversation_id  TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    text             TEXT    NOT NULL,
    covered_messages INTEGER NOT NULL CHECK (covered_messages >= 0),
    token_count      INTEGER NOT NULL CHECK (token_count BETWEEN 0 AND 4294967295),
    created_at       INTEGER NOT NULL
) STRICT;

-- Finds the latest summary ((created_at, seq) order); also serves the foreign key's cascade.
CREATE INDEX summaries_by_conversation ON summaries (conversation_id, created_at);

-- A rowid table (not WITHOUT ROWID): its rows hold blobs of up to 20 MiB.
CREATE TABLE companion_assets (
    companion_id TEXT NOT NULL REFERENCES companions (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    media_type   TEXT NOT NULL,
    bytes        BLOB NOT NULL,
    PRIMARY KEY (companion_id, name)
) STRICT;
