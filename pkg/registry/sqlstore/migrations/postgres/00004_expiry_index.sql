-- The expiry forecast and devpki_certificates_expiring: active device
-- certificates by expiry, read from the index alone.

-- +goose Up
CREATE INDEX idx_certificates_expiry ON certificates USING btree (status, kind, not_after, tenant_id, not_before);

-- +goose Down
DROP INDEX idx_certificates_expiry;
