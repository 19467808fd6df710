-- Schema 9: legacy OMEMO (eu.siacs.conversations.axolotl) beside OMEMO 2 on one device.
--
-- One device id and one identity key serve both namespaces (own_device is unchanged), and
-- devices, sessions and trust already carry a namespace or none (trust is per identity key,
-- whichever namespace a message used). What is per namespace and was not: the X3DH state.
-- Each version publishes its own bundle with its own signed pre-key (the two versions sign it
-- differently) and its own one-time pre-keys, refilled and republished on their own.
--
-- Pre-key and signed pre-key ids stay unique across both namespaces (one counter each), so
-- an id names one key; the namespace says which bundle it belongs to. Existing keys are
-- OMEMO 2 keys.

ALTER TABLE pre_keys ADD COLUMN namespace TEXT NOT NULL DEFAULT 'urn:xmpp:omemo:2'
    CHECK (namespace IN ('urn:xmpp:omemo:2', 'eu.siacs.conversations.axolotl'));
CREATE INDEX pre_keys_by_namespace ON pre_keys (namespace, used_at);

-- "One current signed pre-key" becomes one per namespace: SQLite cannot change a UNIQUE
-- constraint in place, so the table is rebuilt (nothing references it).
CREATE TABLE signed_pre_keys_v9 (
    id         INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 2147483647),
    namespace  TEXT    NOT NULL
        CHECK (namespace IN ('urn:xmpp:omemo:2', 'eu.siacs.conversations.axolotl')),
    secret     BLOB    NOT NULL CHECK (length(secret) = 32),
    signature  BLOB    NOT NULL CHECK (length(signature) = 64),
    created_at INTEGER NOT NULL,
    -- 1 for the key in the namespace's bundle; NULL for keys kept for late key exchanges.
    is_current INTEGER CHECK (is_current IS NULL OR is_current = 1),
    retired_at INTEGER,
    UNIQUE (namespace, is_current)
);
INSERT INTO signed_pre_keys_v9 (id, namespace, secret, signature, created_at, is_current, retired_at)
    SELECT id, 'urn:xmpp:omemo:2', secret, signature, created_at, is_current, retired_at
    FROM signed_pre_keys;
DROP TABLE signed_pre_keys;
ALTER TABLE signed_pre_keys_v9 RENAME TO signed_pre_keys;
