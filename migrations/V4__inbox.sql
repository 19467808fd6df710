-- Schema 4: decrypted messages kept until the program has handled them.
--
-- A decrypted message is written here in the transaction that commits its ratchet step and
-- deleted once the program is done with it; an answer deletes it in the transaction that
-- queues the answer in the outbox. A process that dies in between hands the message to the
-- program again after its restart, so a crash no longer loses a message whose ratchet step
-- was already committed (the archive cannot give it back: its copy no longer decrypts).
-- The envelope is the decrypted SCE envelope: plaintext, kept only that long.
CREATE TABLE inbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace    TEXT    NOT NULL,
    sender       TEXT    NOT NULL,
    device_id    INTEGER NOT NULL,
    identity_key BLOB    NOT NULL CHECK (length(identity_key) = 32),
    from_jid     TEXT    NOT NULL,
    stanza_id    TEXT,
    message_type TEXT    NOT NULL,
    envelope     BLOB    NOT NULL,
    key_exchange INTEGER NOT NULL CHECK (key_exchange IN (0, 1)),
    received_at  INTEGER NOT NULL
);
