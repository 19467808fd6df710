-- The client's sync database (beside the OMEMO database, not inside it): per (bot, vault),
-- the state of the last sync and the vault revision it corresponds to. `IF NOT EXISTS`
-- because databases made before the migrations existed already hold this table.
CREATE TABLE IF NOT EXISTS base (
    bot TEXT NOT NULL,
    vault TEXT NOT NULL,
    revision INTEGER NOT NULL,
    -- bookmarks::sync::State as JSON.
    state BLOB NOT NULL,
    PRIMARY KEY (bot, vault)
) STRICT;
