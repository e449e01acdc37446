-- A tenant's certificates of one status are listed soonest-expiring first,
-- through (tenant_id, status, not_after, serial), instead of in serial
-- order through idx_certificates_tenant_status_serial, which every
-- enrollment and renewal wrote at a random leaf (serials are 20 random
-- bytes). A tenant's certificates of every status are listed through
-- idx_certificates_tenant_not_after_serial in the same order, so
-- idx_certificates_tenant_serial (also written at a random serial) goes.
-- See the SQLite migration of the same number.

-- +goose Up
DROP INDEX idx_certificates_tenant_status_serial;
DROP INDEX idx_certificates_tenant_serial;
CREATE INDEX idx_certificates_tenant_status_not_after ON certificates USING btree (tenant_id, status, not_after, serial);

-- +goose Down
DROP INDEX idx_certificates_tenant_status_not_after;
CREATE INDEX idx_certificates_tenant_serial ON certificates USING btree (tenant_id, serial);
CREATE INDEX idx_certificates_tenant_status_serial ON certificates USING btree (tenant_id, status, serial);
