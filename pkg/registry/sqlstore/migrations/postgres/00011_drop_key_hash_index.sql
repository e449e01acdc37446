-- Renewals and enrollments: the certificates' key-hash index is dropped (see
-- the SQLite migration of the same number).

-- +goose Up
DROP INDEX idx_certificates_key_sha256;

-- +goose Down
CREATE INDEX idx_certificates_key_sha256 ON certificates USING btree (key_sha256);
