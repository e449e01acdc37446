-- Partition CRLs (RFC 5280 issuing distribution points): the partition each
-- certificate names in its CRL distribution point (0: the full CRL only),
-- per-partition CRL numbers and revocation revisions, the revision of the
-- whole in the CRL counter's row, and the partial covering indexes CRL
-- builds read (revoked rows only, so enrolling touches neither).

-- +goose Up
ALTER TABLE `certificates` ADD `crl_partition` integer NOT NULL DEFAULT 0;
ALTER TABLE `crl_counter` ADD `revision` integer NOT NULL DEFAULT 0;
CREATE TABLE `crl_partitions` (`part` integer,`number` integer NOT NULL DEFAULT 0,`revision` integer NOT NULL DEFAULT 0,PRIMARY KEY (`part`));
CREATE INDEX `idx_certificates_revoked` ON `certificates` (`serial`, `revoked_at`, `revocation_reason`, `not_after`, `issuer_kid`) WHERE `status` = 'revoked';
CREATE INDEX `idx_certificates_revoked_partition` ON `certificates` (`crl_partition`, `serial`, `revoked_at`, `revocation_reason`, `not_after`, `issuer_kid`) WHERE `status` = 'revoked';

-- +goose Down
DROP INDEX `idx_certificates_revoked_partition`;
DROP INDEX `idx_certificates_revoked`;
DROP TABLE `crl_partitions`;
ALTER TABLE `crl_counter` DROP COLUMN `revision`;
ALTER TABLE `certificates` DROP COLUMN `crl_partition`;
