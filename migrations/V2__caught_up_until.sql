-- Schema 2: where a clean shutdown left the account's archive.
--
-- `caught_up_until` (Unix seconds) is set when the program stopped cleanly with nothing left
-- to handle: every message the server archived before it was handled. After a crash it
-- stays as it was, and the next start replays the archive from shortly before the last
-- ratchet activity instead.
ALTER TABLE own_device ADD COLUMN caught_up_until INTEGER;
