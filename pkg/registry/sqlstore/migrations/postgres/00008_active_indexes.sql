-- Renewals: the expiry forecast's and the rollover count's indexes hold
-- active certificates only (see the SQLite migration of the same number).

-- +goose Up
DROP INDEX idx_certificates_expiry;
CREATE INDEX idx_certificates_expiry ON certificates USING btree (not_after, tenant_id, not_before) WHERE status = 'active' AND kind = 'device';
DROP INDEX idx_certificates_issuer;
CREATE INDEX idx_certificates_issuer ON certificates USING btree (issuer_kid, tenant_id, device_id, not_after) WHERE status = 'active';

-- +goose Down
DROP INDEX idx_certificates_issuer;
CREATE INDEX idx_certificates_issuer ON certificates USING btree (issuer_kid, status, tenant_id, device_id, not_after);
DROP INDEX idx_certificates_expiry;
CREATE INDEX idx_certificates_expiry ON certificates USING btree (status, kind, not_after, tenant_id, not_before);
