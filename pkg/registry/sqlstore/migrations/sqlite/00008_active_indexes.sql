-- Renewals: the expiry forecast's and the rollover count's indexes hold
-- active certificates only. Both read only those; as full indexes with the
-- status in their key, every renewal moved the superseded certificate's
-- entry to another place in each (a delete and an insert, each a random
-- page of the WAL). Partial, a supersede deletes one entry from each, and
-- the indexes stay the size of the fleet instead of growing with every
-- certificate ever issued. The queries name the statuses as literals, as
-- a partial index needs.

-- +goose Up
DROP INDEX `idx_certificates_expiry`;
CREATE INDEX `idx_certificates_expiry` ON `certificates`(`not_after`,`tenant_id`,`not_before`) WHERE `status` = 'active' AND `kind` = 'device';
DROP INDEX `idx_certificates_issuer`;
CREATE INDEX `idx_certificates_issuer` ON `certificates`(`issuer_kid`,`tenant_id`,`device_id`,`not_after`) WHERE `status` = 'active';

-- +goose Down
DROP INDEX `idx_certificates_issuer`;
CREATE INDEX `idx_certificates_issuer` ON `certificates` (`issuer_kid`, `status`, `tenant_id`, `device_id`, `not_after`);
DROP INDEX `idx_certificates_expiry`;
CREATE INDEX `idx_certificates_expiry` ON `certificates`(`status`,`kind`,`not_after`,`tenant_id`,`not_before`);
