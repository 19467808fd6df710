-- Schema 7: device ids this account used before its identity was reset.
--
-- A reset gives the account a new identity key and a new device id; the old id is kept here
-- and out of the published device list (its bundle is retracted), so contacts stop
-- encrypting for a device whose keys are gone, also when a late copy of an old list names it.
CREATE TABLE retired_own_devices (
    device_id  INTEGER PRIMARY KEY CHECK (device_id BETWEEN 1 AND 2147483647),
    retired_at INTEGER NOT NULL
);
