-- Schema 10: the devices of one account across namespaces, by index.
--
-- The primary key (namespace, jid, device_id) serves lookups that name the namespace. The
-- per-message questions that span both versions (the identity key a device has in the other
-- namespace, the versions a contact's devices speak) name only the account, and without this
-- index each scanned every device row: the bot's cost per message grew with the number of
-- contacts it has ever talked to.

CREATE INDEX devices_by_jid ON devices (jid, device_id);
