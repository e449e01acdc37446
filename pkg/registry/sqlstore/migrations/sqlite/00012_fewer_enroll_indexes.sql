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
--   - idx_certificates_tenant_serial (SQLite only): a tenant's certificates
--     in serial order are the merge of one idx_certificates_tenant_status_serial
--     range per status (a compound SELECT, merged without a sort). It was
--     written at a random serial by every enrollment and renewal.
--     PostgreSQL's planner sorts such a union, so it keeps the index there.

-- +goose Up
DROP INDEX `idx_devices_serial_folded`;
DROP INDEX `idx_devices_ek_hash`;
DROP INDEX `idx_devices_status_tenant`;
DROP INDEX `idx_certificates_tenant_serial`;

-- +goose Down
CREATE INDEX `idx_certificates_tenant_serial` ON `certificates`(`tenant_id`,`serial`);
CREATE INDEX `idx_devices_status_tenant` ON `devices` (`status`, `tenant_id`);
CREATE INDEX `idx_devices_ek_hash` ON `devices`(`ek_hash`);
CREATE INDEX `idx_devices_serial_folded` ON `devices`(`serial_folded`);
