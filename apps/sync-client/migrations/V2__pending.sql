-- Crash safety, undo and status.

-- When the base was last stored (Unix seconds; NULL for rows older than this column).
ALTER TABLE base ADD COLUMN synced INTEGER;

-- A sync under way: the base it will store, written in one transaction before anything leaves
-- the machine or touches the browser's file. The next run finds it and finishes the sync
-- (see sync_client::store::Pending).
CREATE TABLE pending (
    bot TEXT NOT NULL,
    vault TEXT NOT NULL,
    -- What runs: 'sync', 'pull' or 'push' (a pull's base is the vault's state, not what it
    -- writes, so an unwritten pull is dropped rather than finished).
    mode TEXT NOT NULL,
    -- The browser's file and its format name.
    file TEXT NOT NULL,
    format TEXT NOT NULL,
    -- The state to store as the base (JSON).
    state BLOB NOT NULL,
    -- The vault revision that goes with it (0: unknown, the next pull fetches everything).
    revision INTEGER NOT NULL,
    -- SHA-256 of the file before the sync and of what the sync writes (equal: no write).
    before_sha256 BLOB NOT NULL,
    after_sha256 BLOB NOT NULL,
    -- Where the write puts its copy of the file it replaces (NULL: no write).
    snapshot TEXT,
    started INTEGER NOT NULL,
    PRIMARY KEY (bot, vault)
) STRICT;

-- The last write of the browser's file, for `undo`.
CREATE TABLE last_write (
    bot TEXT NOT NULL,
    vault TEXT NOT NULL,
    file TEXT NOT NULL,
    -- The copy of the file taken before the write.
    snapshot TEXT NOT NULL,
    -- SHA-256 of what was written: undo refuses when the file changed since.
    after_sha256 BLOB NOT NULL,
    written INTEGER NOT NULL,
    -- When `undo` restored the snapshot (NULL: not undone).
    undone INTEGER,
    PRIMARY KEY (bot, vault)
) STRICT;
