-- Schema version 3: the emotion journal. Conventions as in 001: ids are UUID text, times
-- milliseconds since the Unix epoch, tables STRICT; lists and maps read whole are JSON text.

-- Every reading of a signal (text, voice, heart, face) and every fused state. The conversation
-- and message are links, not references: the journal is the user's and outlives a deleted
-- conversation (nexus_store::JournalEntry).
CREATE TABLE emotion_journal (
    -- Insertion order: breaks ties between entries with equal times.
    seq             INTEGER NOT NULL PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    at              INTEGER NOT NULL,
    source          TEXT    NOT NULL CHECK (source IN ('text', 'voice', 'heart', 'face', 'fused')),
    -- JSON array of [label, score] pairs, highest score first.
    labels          TEXT    NOT NULL CHECK (json_valid(labels)),
    valence         REAL    NOT NULL CHECK (valence BETWEEN -1 AND 1),
    arousal         REAL    NOT NULL CHECK (arousal BETWEEN 0 AND 1),
    confidence      REAL    NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    conversation_id TEXT,
    message_id      TEXT,
    -- JSON value: input flags, a fused state's per-source contributions.
    details         TEXT    NOT NULL CHECK (json_valid(details))
) STRICT;

-- Time ranges (daily and weekly summaries) in order.
CREATE INDEX emotion_journal_by_time ON emotion_journal (at, seq);
-- The readings of a message.
CREATE INDEX emotion_journal_by_message ON emotion_journal (message_id) WHERE message_id IS NOT NULL;
