-- Schema version 1 of the Nexus store.
--
-- Migrations are applied in order, each once, inside one transaction; `PRAGMA user_version`
-- records the last one applied. Never edit a migration that has shipped: add the next file
-- (002_....sql) and list it in `MIGRATIONS` (src/schema.rs).
--
-- Ids are UUIDs as text (hyphenated, lower case); times are milliseconds since the Unix epoch
-- (UTC). Tables are STRICT, so a value of the wrong type is refused instead of stored.

CREATE TABLE companions (
    id             TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL,
    -- `Companion::name_key(name)`: the name in Unicode lower case, computed by the application
    -- because SQLite's lower() and COLLATE NOCASE only fold ASCII ('É' and 'é' would differ).
    -- Unique, so two names that differ only in case conflict.
    name_key       TEXT    NOT NULL UNIQUE,
    description    TEXT    NOT NULL,
    personality    TEXT    NOT NULL,
    speaking_style TEXT    NOT NULL,
    greeting       TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE conversations (
    id           TEXT    NOT NULL PRIMARY KEY,
    companion_id TEXT    NOT NULL REFERENCES companions (id) ON DELETE CASCADE,
    title        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;

-- Lists a companion's conversations in order; also serves the foreign key's cascade.
CREATE INDEX conversations_by_companion ON conversations (companion_id, created_at);

CREATE TABLE messages (
    -- Alias of the rowid: a new row gets a larger value than every existing row, so it orders
    -- messages with equal `created_at` in the order they were appended.
    seq             INTEGER NOT NULL PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role            TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    text            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    token_count     INTEGER NOT NULL CHECK (token_count BETWEEN 0 AND 4294967295)
) STRICT;

-- Index entries end with the rowid, so this index yields a conversation's messages already in
-- (created_at, seq) order; it also serves the foreign key's cascade.
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at);

CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
