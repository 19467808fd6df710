-- Schema 5: the session a device had before its current one.
--
-- When two devices start a session with each other at the same moment, each builds one from
-- its own key exchange and then one from the other's; the second replaces the first. Each
-- side then encrypts on a session the other side had replaced, and their messages fail the
-- MAC. Keeping the replaced session lets a message that fails on the current session be
-- tried on it; the session that decrypts becomes the current one (Signal keeps previous
-- session states the same way).
ALTER TABLE sessions ADD COLUMN previous_state BLOB CHECK (length(previous_state) > 0);
