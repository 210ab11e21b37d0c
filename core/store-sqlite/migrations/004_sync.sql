-- Schema version with sync (nexus-sync): the device's local replication state. Keys are chosen
-- by nexus-sync (`config`, `session`, `doc/<doc id>`, ...); values are opaque bytes (Automerge
-- documents, JSON). The documents hold user text, so wipe deletes this table too.
-- (Numbered 004: 003 is the journal migration of the emotion work.)
CREATE TABLE sync_state (
    key   TEXT NOT NULL PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
