-- CA rollover: the issuers (their state lives in the registry so every
-- replica follows prepare/activate/retire), which issuer signed each
-- certificate, and which devices fetched a trust bundle naming an issuer.

-- +goose Up
CREATE TABLE `ca_issuers` (`key_id` text,`state` text NOT NULL,`kind` text NOT NULL DEFAULT '',`cert_pem` text NOT NULL,`root_pem` text NOT NULL,`cross_pem` text NOT NULL DEFAULT '',`key_uri` text NOT NULL,`root_key_uri` text NOT NULL DEFAULT '',`not_after` datetime,`created_at` datetime,`activated_at` datetime,`retired_at` datetime,PRIMARY KEY (`key_id`));
CREATE INDEX `idx_ca_issuers_state` ON `ca_issuers`(`state`);
CREATE UNIQUE INDEX `ux_ca_issuers_state` ON `ca_issuers` (`state`) WHERE `state` IN ('prepared', 'active', 'previous');
CREATE TABLE `bundle_fetches` (`device_id` text,`issuer_kid` text,`tenant_id` text NOT NULL,`fetched_at` datetime NOT NULL,PRIMARY KEY (`device_id`,`issuer_kid`));
CREATE INDEX `idx_bundle_fetches_issuer_tenant` ON `bundle_fetches`(`issuer_kid`,`tenant_id`);
ALTER TABLE `certificates` ADD `issuer_kid` text NOT NULL DEFAULT '';
CREATE INDEX `idx_certificates_issuer` ON `certificates` (`issuer_kid`, `status`, `tenant_id`, `device_id`, `not_after`);
CREATE INDEX `idx_devices_status_tenant` ON `devices` (`status`, `tenant_id`);

-- +goose Down
DROP INDEX `idx_devices_status_tenant`;
DROP INDEX `idx_certificates_issuer`;
ALTER TABLE `certificates` DROP COLUMN `issuer_kid`;
DROP TABLE `bundle_fetches`;
DROP TABLE `ca_issuers`;
