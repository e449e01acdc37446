-- Renewals and enrollments: the certificates' key-hash index is dropped. No
-- path of the server reads it (only Store.ListCertificatesByKey, which
-- nothing calls, now a scan), yet every enrollment and renewal wrote it: an
-- entry at a random key hash, a leaf page of the WAL per write.

-- +goose Up
DROP INDEX `idx_certificates_key_sha256`;

-- +goose Down
CREATE INDEX `idx_certificates_key_sha256` ON `certificates`(`key_sha256`);
