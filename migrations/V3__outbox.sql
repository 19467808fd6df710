-- Schema 3: outgoing messages kept until the server acknowledged them.
--
-- A message carrying ratchet steps is written here in the same transaction that commits
-- those steps, and deleted once the server acknowledged it (XEP-0198). A process that died
-- in between sends it again after the restart; the recipient's ratchet drops the copy if the
-- first one did arrive. The stanza holds only what went over the wire (ciphertext).
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    stanza     TEXT    NOT NULL CHECK (length(stanza) > 0),
    created_at INTEGER NOT NULL
);
