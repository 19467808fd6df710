-- The bot's vault database (not the OMEMO store): one row per vault with its merged state,
-- and the answers already given, for idempotent requests.
CREATE TABLE vault (
    name TEXT PRIMARY KEY NOT NULL,
    revision INTEGER NOT NULL,
    -- bookmarks::sync::State as JSON.
    state BLOB NOT NULL,
    -- JSON map GUID -> the revision that last changed the item or its tombstone.
    revisions BLOB NOT NULL
) STRICT;

CREATE TABLE answer (
    sender TEXT NOT NULL,
    request_id TEXT NOT NULL,
    -- The Answer as JSON.
    answer BLOB NOT NULL,
    PRIMARY KEY (sender, request_id)
) STRICT;
