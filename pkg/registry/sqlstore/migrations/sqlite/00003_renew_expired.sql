-- Renewal after long offline: the nonces the CA hands out (any replica
-- completes one, each used once), and a tenant's own grace period.

-- +goose Up
CREATE TABLE `renew_challenges` (`id` text,`nonce` blob NOT NULL,`cert_serial` text NOT NULL,`expires` datetime NOT NULL,`used` numeric NOT NULL DEFAULT false,`created_at` datetime,PRIMARY KEY (`id`));
CREATE INDEX `idx_renew_challenges_expires` ON `renew_challenges`(`expires`);
ALTER TABLE `tenants` ADD `renew_grace_seconds` integer NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE `tenants` DROP COLUMN `renew_grace_seconds`;
DROP TABLE `renew_challenges`;
