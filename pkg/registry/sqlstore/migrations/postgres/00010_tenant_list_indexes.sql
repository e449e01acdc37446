-- The admin API lists within one tenant, always (api scopeTenant): the list
-- indexes without a leading tenant_id served only store calls that name no
-- tenant, yet every enrollment and renewal wrote them — a leaf at a random
-- serial or id each, a b-tree level deeper at a million devices. Dropped;
-- a tenant-less status or expiring-before listing is now a scan.

-- +goose Up
DROP INDEX idx_devices_status_id;
DROP INDEX idx_certificates_status_serial;
DROP INDEX idx_certificates_not_after_serial;

-- +goose Down
CREATE INDEX idx_devices_status_id ON devices USING btree (status,id);
CREATE INDEX idx_certificates_status_serial ON certificates USING btree (status,serial);
CREATE INDEX idx_certificates_not_after_serial ON certificates USING btree (not_after,serial);
