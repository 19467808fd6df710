-- Schema 6: how often each outbox message was sent.
--
-- A message the server refuses (a stanza over its size limit makes Prosody close the stream)
-- is never acknowledged, so it would be sent again by every fresh session, costing the
-- stream each time. Counting the sends lets the client give up on such a message after a
-- bounded number of tries while the other queued messages still go out. A row is written
-- when the message is first sent, hence the default of 1.
ALTER TABLE outbox ADD COLUMN sends INTEGER NOT NULL DEFAULT 1 CHECK (sends >= 1);
