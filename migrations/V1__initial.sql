-- Schema 1 of the atm-trust store: everything one OMEMO account must remember.
--
-- Conventions:
--   * times are Unix seconds (INTEGER), supplied by the caller;
--   * ids (device, pre-key, signed pre-key) are checked to lie in 1..=2^31-1;
--   * JIDs are bare JIDs, normalised by the caller;
--   * `namespace` is the OMEMO namespace a device list or session belongs to
--     ('urn:xmpp:omemo:2' now, 'eu.siacs.conversations.axolotl' later);
--   * identity keys are the 32-byte Ed25519 encoding (QXmpp's key id);
--   * trust levels use QXmpp's bit values (1, 2, 4, 8, 16, 32).
-- Foreign keys are switched on by the application after the migrations ran.

-- Marks the file as ours: 0x4f4d454d, ASCII 'OMEM'.
PRAGMA application_id = 1330464077;

-- Our own device. Exactly one row (id = 1) once the account is set up.
CREATE TABLE own_device (
    id                     INTEGER PRIMARY KEY CHECK (id = 1),
    jid                    TEXT    NOT NULL,
    device_id              INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 2147483647),
    identity_seed          BLOB    NOT NULL CHECK (length(identity_seed) = 32),
    label                  TEXT,
    created_at             INTEGER NOT NULL,
    -- Ids handed out next; pre-key ids are never reused while the id space lasts.
    next_pre_key_id        INTEGER NOT NULL DEFAULT 1 CHECK (next_pre_key_id BETWEEN 1 AND 2147483647),
    next_signed_pre_key_id INTEGER NOT NULL DEFAULT 1 CHECK (next_signed_pre_key_id BETWEEN 1 AND 2147483647)
);

-- Signed pre-keys: the current one and the previous one(s) still inside their grace period.
CREATE TABLE signed_pre_keys (
    id         INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 2147483647),
    secret     BLOB    NOT NULL CHECK (length(secret) = 32),
    signature  BLOB    NOT NULL CHECK (length(signature) = 64),
    created_at INTEGER NOT NULL,
    -- 1 for the key in the bundle; NULL for keys kept only to answer late key exchanges.
    is_current INTEGER CHECK (is_current IS NULL OR is_current = 1),
    -- When the key stopped being current (NULL while current).
    retired_at INTEGER,
    UNIQUE (is_current)
);

-- One-time pre-keys.
CREATE TABLE pre_keys (
    id         INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 2147483647),
    secret     BLOB    NOT NULL CHECK (length(secret) = 32),
    created_at INTEGER NOT NULL,
    published  INTEGER NOT NULL DEFAULT 0 CHECK (published IN (0, 1)),
    -- When a key exchange consumed the key; it is deleted after a grace period.
    used_at    INTEGER
);
CREATE INDEX pre_keys_used_at ON pre_keys (used_at) WHERE used_at IS NOT NULL;

-- Remote devices (our own other devices included), per OMEMO namespace.
CREATE TABLE devices (
    namespace              TEXT    NOT NULL,
    jid                    TEXT    NOT NULL,
    device_id              INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 2147483647),
    label                  TEXT,
    label_verified         INTEGER NOT NULL DEFAULT 0 CHECK (label_verified IN (0, 1)),
    -- The device's identity key, once a bundle or key exchange told us.
    identity_key           BLOB    CHECK (identity_key IS NULL OR length(identity_key) = 32),
    -- 1 while the device is in the server's device list.
    active                 INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
    -- When the device disappeared from the list (NULL while listed or never listed).
    removed_at             INTEGER,
    first_seen             INTEGER NOT NULL,
    last_seen              INTEGER NOT NULL,
    -- Messages we sent to the device since it last sent us one (stale-device handling).
    sent_without_reply     INTEGER NOT NULL DEFAULT 0 CHECK (sent_without_reply >= 0),
    -- Messages the device sent us since we last sent it one (heartbeats).
    received_without_reply INTEGER NOT NULL DEFAULT 0 CHECK (received_without_reply >= 0),
    PRIMARY KEY (namespace, jid, device_id)
) WITHOUT ROWID;

-- Double Ratchet sessions: opaque, versioned state bytes produced by omemo-crypto.
CREATE TABLE sessions (
    namespace  TEXT    NOT NULL,
    jid        TEXT    NOT NULL,
    device_id  INTEGER NOT NULL,
    state      BLOB    NOT NULL CHECK (length(state) > 0),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, jid, device_id),
    FOREIGN KEY (namespace, jid, device_id)
        REFERENCES devices (namespace, jid, device_id) ON DELETE CASCADE
) WITHOUT ROWID;

-- Trust per (JID, identity key), independent of device ids: a key keeps its level when it
-- shows up under another device id, and ATM decisions can name keys we have not fetched yet.
CREATE TABLE trust (
    jid          TEXT    NOT NULL,
    identity_key BLOB    NOT NULL CHECK (length(identity_key) = 32),
    level        INTEGER NOT NULL CHECK (level IN (1, 2, 4, 8, 16, 32)),
    -- How the key got its level: 'policy', 'manual' or 'atm'.
    source       TEXT    NOT NULL CHECK (source IN ('policy', 'manual', 'atm')),
    changed_at   INTEGER NOT NULL,
    PRIMARY KEY (jid, identity_key)
) WITHOUT ROWID;
CREATE INDEX trust_by_level ON trust (jid, level);

-- Every trust change, in order, so that none happens silently.
CREATE TABLE trust_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    jid          TEXT    NOT NULL,
    identity_key BLOB    NOT NULL CHECK (length(identity_key) = 32),
    -- NULL when the key was first recorded.
    old_level    INTEGER CHECK (old_level IS NULL OR old_level IN (1, 2, 4, 8, 16, 32)),
    new_level    INTEGER NOT NULL CHECK (new_level IN (1, 2, 4, 8, 16, 32)),
    source       TEXT    NOT NULL CHECK (source IN ('policy', 'manual', 'atm')),
    -- For 'atm': the JID and key of the device whose trust message caused the change.
    via_jid      TEXT,
    via_key      BLOB    CHECK (via_key IS NULL OR length(via_key) = 32),
    at           INTEGER NOT NULL
);
CREATE INDEX trust_events_by_key ON trust_events (jid, identity_key);

-- XEP-0450 decisions from devices whose key is not Authenticated yet. They are applied in
-- the transaction that authenticates the sender key, then deleted.
CREATE TABLE atm_pending (
    sender_jid  TEXT    NOT NULL,
    sender_key  BLOB    NOT NULL CHECK (length(sender_key) = 32),
    target_jid  TEXT    NOT NULL,
    target_key  BLOB    NOT NULL CHECK (length(target_key) = 32),
    -- 1: trust (becomes Authenticated); 0: distrust (becomes ManuallyDistrusted).
    trust       INTEGER NOT NULL CHECK (trust IN (0, 1)),
    received_at INTEGER NOT NULL,
    PRIMARY KEY (sender_jid, sender_key, target_jid, target_key)
) WITHOUT ROWID;
