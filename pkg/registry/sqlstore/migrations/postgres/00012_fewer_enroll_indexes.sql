-- Fewer b-trees written per enrollment: indexes that no query of the
-- server needs, each written by every enrollment (two of them at a random
-- key: a leaf read and written per enrollment, a b-tree level deeper at a
-- million devices).
--
--   - (idx_certificates_key_sha256 went in 00011: no lookup by key hash is
--     left; a lost answer is found by device serial, then the device's
--     certificates.)
--   - idx_devices_serial_folded: a serial is looked up within a tenant, and
--     ux_devices_tenant_serial_folded serves that.
--   - idx_devices_ek_hash: every device without an EK ('') shared one key;
--     a lookup by EK names a non-empty one, which the partial unique
--     ux_devices_ek_hash serves.
--   - idx_devices_status_tenant: the rollover count of active devices per
--     tenant reads idx_devices_tenant_status_id instead.
--
-- idx_certificates_tenant_serial stays here (SQLite's migration drops it):
-- PostgreSQL sorts a union of the per-status ranges instead of merging them.

-- +goose Up
DROP INDEX idx_devices_serial_folded;
DROP INDEX idx_devices_ek_hash;
DROP INDEX idx_devices_status_tenant;

-- +goose Down
CREATE INDEX idx_devices_status_tenant ON devices USING btree (status, tenant_id);
CREATE INDEX idx_devices_ek_hash ON devices USING btree (ek_hash);
CREATE INDEX idx_devices_serial_folded ON devices USING btree (serial_folded);
