-- A tenant's certificates of one status are listed soonest-expiring first,
-- through (tenant_id, status, not_after, serial), instead of in serial
-- order through idx_certificates_tenant_status_serial. Serials are 20
-- random bytes: every enrollment and renewal wrote that index at a random
-- leaf — with the serial primary key, one of the two b-trees a write
-- touches at a random key, each a page read and written per write at a
-- million devices. not_after grows with issuance, so a new certificate
-- lands at the right edge of its tenant's active range; a renewal moves
-- the superseded certificate within its own expiry's neighbourhood.
-- A tenant's certificates of every status are listed through
-- idx_certificates_tenant_not_after_serial, in the same order (list.go).

-- +goose Up
DROP INDEX `idx_certificates_tenant_status_serial`;
CREATE INDEX `idx_certificates_tenant_status_not_after` ON `certificates` (`tenant_id`, `status`, `not_after`, `serial`);

-- +goose Down
DROP INDEX `idx_certificates_tenant_status_not_after`;
CREATE INDEX `idx_certificates_tenant_status_serial` ON `certificates` (`tenant_id`, `status`, `serial`);
