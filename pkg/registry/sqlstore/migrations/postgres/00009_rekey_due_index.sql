-- The re-key deadline sweep (provision.RunRekeyDeadlines, every minute in
-- 'ca serve') asks for the devices whose rotate deadline has passed. Without
-- an index it walked every device in id order: about a second of CPU a
-- minute at a million devices, for none found. Only devices told to re-key
-- by a deadline have one, so the index is partial: nearly empty, and an
-- enrollment (rekey_deadline NULL) never writes it.

-- +goose Up
CREATE INDEX idx_devices_rekey_due ON devices (rekey_deadline, id) WHERE rekey_deadline IS NOT NULL;

-- +goose Down
DROP INDEX idx_devices_rekey_due;
