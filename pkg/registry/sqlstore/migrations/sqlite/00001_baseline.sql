-- Baseline: the schema devpki's gorm AutoMigrate and its fixups made before
-- versioned migrations (generated from a fresh registry, then frozen). Never
-- edit this file: a schema change is a new numbered migration.

-- +goose Up
CREATE TABLE `tenants` (`id` text,`name` text NOT NULL,`require_tpm` numeric NOT NULL,`methods` text NOT NULL DEFAULT "",`key_types` text NOT NULL DEFAULT "",`cert_lifetime_seconds` integer NOT NULL DEFAULT 0,`created_at` datetime,PRIMARY KEY (`id`));
CREATE UNIQUE INDEX `idx_tenants_name` ON `tenants`(`name`);
CREATE TABLE `devices` (`id` text,`tenant_id` text NOT NULL,`serial` text NOT NULL,`serial_folded` text NOT NULL DEFAULT "",`macs` text NOT NULL,`status` text NOT NULL,`method` text NOT NULL,`ek_hash` text NOT NULL,`ak_pub` blob,`idevid_issuer` text NOT NULL DEFAULT "",`idevid_serial` text NOT NULL DEFAULT "",`rekey_required` numeric NOT NULL DEFAULT false,`rekey_deadline` datetime,`created_at` datetime,`updated_at` datetime,PRIMARY KEY (`id`),CONSTRAINT `fk_devices_tenant` FOREIGN KEY (`tenant_id`) REFERENCES `tenants`(`id`) ON DELETE RESTRICT ON UPDATE RESTRICT);
CREATE INDEX `idx_devices_ek_hash` ON `devices`(`ek_hash`);
CREATE TABLE `certificates` (`serial` text,`kind` text NOT NULL,`device_id` text,`tenant_id` text NOT NULL,`subject` text NOT NULL,`sans` text NOT NULL,`not_before` datetime NOT NULL,`not_after` datetime NOT NULL,`der` blob,`status` text NOT NULL,`revoked_at` datetime,`revocation_reason` integer NOT NULL,`replaces_serial` text NOT NULL,`key_sha256` blob,`token_hash` blob,`created_at` datetime,PRIMARY KEY (`serial`),CONSTRAINT `fk_certificates_device` FOREIGN KEY (`device_id`) REFERENCES `devices`(`id`) ON DELETE RESTRICT ON UPDATE RESTRICT);
CREATE INDEX `idx_certificates_key_sha256` ON `certificates`(`key_sha256`);
CREATE INDEX `idx_certificates_status` ON `certificates`(`status`);
CREATE INDEX `idx_certificates_not_after` ON `certificates`(`not_after`);
CREATE INDEX `idx_certificates_device_id` ON `certificates`(`device_id`);
CREATE TABLE `tokens` (`id` text,`hash` blob NOT NULL,`tenant_id` text NOT NULL,`serial` text NOT NULL,`expires_at` datetime NOT NULL,`uses_left` integer NOT NULL,`reinstate` numeric NOT NULL DEFAULT false,`created_by` text NOT NULL,`created_at` datetime,PRIMARY KEY (`id`),CONSTRAINT `fk_tokens_tenant` FOREIGN KEY (`tenant_id`) REFERENCES `tenants`(`id`) ON DELETE RESTRICT ON UPDATE RESTRICT);
CREATE INDEX `idx_tokens_tenant_id` ON `tokens`(`tenant_id`);
CREATE UNIQUE INDEX `idx_tokens_hash` ON `tokens`(`hash`);
CREATE TABLE `admins` (`name` text,`tenant_id` text NOT NULL,`role` text NOT NULL,`super` numeric NOT NULL DEFAULT false,`status` text NOT NULL DEFAULT "active",`revoked_at` datetime,`created_at` datetime,PRIMARY KEY (`name`));
CREATE TABLE `audit_events` (`seq` integer,`time` datetime NOT NULL,`tenant_id` text NOT NULL,`actor` text NOT NULL,`action` text NOT NULL,`target` text NOT NULL,`result` text NOT NULL,`detail` text NOT NULL,`source_addr` text NOT NULL,`prev_hash` blob NOT NULL,`hash` blob NOT NULL,`tenant_seq` integer NOT NULL DEFAULT 0,`tenant_prev_hash` blob,`tenant_hash` blob,PRIMARY KEY (`seq`));
CREATE INDEX `idx_audit_events_tenant_id` ON `audit_events`(`tenant_id`);
CREATE TABLE `audit_head` (`id` integer,`seq` integer NOT NULL,`hash` blob NOT NULL,PRIMARY KEY (`id`));
CREATE TABLE `audit_tenant_heads` (`tenant_id` text,`seq` integer NOT NULL,`hash` blob NOT NULL,PRIMARY KEY (`tenant_id`));
CREATE TABLE `audit_refusals` (`id` integer PRIMARY KEY AUTOINCREMENT,`window_start` datetime NOT NULL,`source_addr` text NOT NULL,`action` text NOT NULL,`reason` text NOT NULL,`tenant_id` text NOT NULL,`hits` integer NOT NULL,`first_at` datetime NOT NULL,`last_at` datetime NOT NULL,`sample` text NOT NULL);
CREATE UNIQUE INDEX `idx_refusal_key` ON `audit_refusals`(`window_start`,`source_addr`,`action`,`reason`,`tenant_id`);
CREATE TABLE `audit_checkpoints` (`id` integer PRIMARY KEY AUTOINCREMENT,`seq` integer NOT NULL,`hash` blob NOT NULL,`pruned_before` datetime NOT NULL,`made_at` datetime NOT NULL,`tenants` text NOT NULL,`signer` blob NOT NULL,`algorithm` text NOT NULL,`signature` blob NOT NULL);
CREATE TABLE `crl_counter` (`id` integer,`number` integer NOT NULL,PRIMARY KEY (`id`));
CREATE TABLE `tpm_preregistrations` (`ek_hash` text,`tenant_id` text NOT NULL,`serial` text NOT NULL,`macs` text NOT NULL,`created_by` text NOT NULL,`created_at` datetime,PRIMARY KEY (`ek_hash`),CONSTRAINT `fk_tpm_preregistrations_tenant` FOREIGN KEY (`tenant_id`) REFERENCES `tenants`(`id`) ON DELETE RESTRICT ON UPDATE RESTRICT);
CREATE TABLE `tpm_roots` (`fingerprint` text,`der` blob NOT NULL,`subject` text NOT NULL,`kind` text NOT NULL DEFAULT "root",`added_by` text NOT NULL,`created_at` datetime,PRIMARY KEY (`fingerprint`));
CREATE TABLE `tpm_challenges` (`id` text,`secret_hash` blob NOT NULL,`nonce` blob NOT NULL,`ak_public` blob NOT NULL,`ek_hash` text NOT NULL,`binding` blob NOT NULL,`expires` datetime NOT NULL,`used` numeric NOT NULL DEFAULT false,`created_at` datetime,PRIMARY KEY (`id`));
CREATE INDEX `idx_tpm_challenges_expires` ON `tpm_challenges`(`expires`);
CREATE TABLE `device_macs` (`tenant_id` text,`mac` text,`device_id` text NOT NULL,PRIMARY KEY (`tenant_id`,`mac`));
CREATE INDEX `idx_device_macs_device_id` ON `device_macs`(`device_id`);
CREATE TABLE `idevid_cas` (`id` text,`tenant_id` text NOT NULL,`fingerprint` text NOT NULL,`der` blob NOT NULL,`subject` text NOT NULL,`kind` text NOT NULL,`added_by` text NOT NULL,`created_at` datetime,PRIMARY KEY (`id`),CONSTRAINT `fk_idevid_cas_tenant` FOREIGN KEY (`tenant_id`) REFERENCES `tenants`(`id`) ON DELETE RESTRICT ON UPDATE RESTRICT);
CREATE UNIQUE INDEX `ux_idevid_cas_tenant_fp` ON `idevid_cas`(`tenant_id`,`fingerprint`);
CREATE TABLE `device_quarantine` (`id` text,`tenant_id` text NOT NULL,`serial` text NOT NULL,`macs` text NOT NULL,`ek_hash` text NOT NULL,`reason` text NOT NULL,`conflict_device_id` text NOT NULL,`conflict_ek_hash` text NOT NULL DEFAULT "",`idevid_issuer` text NOT NULL DEFAULT "",`idevid_serial` text NOT NULL DEFAULT "",`conflict_idevid_issuer` text NOT NULL DEFAULT "",`conflict_idevid_serial` text NOT NULL DEFAULT "",`source_addr` text NOT NULL,`first_seen` datetime NOT NULL,`last_seen` datetime NOT NULL,`attempts` integer NOT NULL,`status` text NOT NULL,`dismissed_by` text NOT NULL,`dismissed_at` datetime,`released_by` text NOT NULL DEFAULT "",`released_at` datetime,PRIMARY KEY (`id`),CONSTRAINT `fk_device_quarantine_tenant` FOREIGN KEY (`tenant_id`) REFERENCES `tenants`(`id`) ON DELETE RESTRICT ON UPDATE RESTRICT);
CREATE INDEX `idx_device_quarantine_tenant_id` ON `device_quarantine`(`tenant_id`);
CREATE UNIQUE INDEX ux_device_quarantine_held
		ON device_quarantine (tenant_id, serial, ek_hash) WHERE status = 'held';
CREATE UNIQUE INDEX ux_devices_ek_hash ON devices (ek_hash) WHERE ek_hash <> '';
CREATE TABLE `heartbeat` (`id` integer,`beats` integer NOT NULL,PRIMARY KEY (`id`));
CREATE UNIQUE INDEX ux_devices_tenant_serial_folded
		ON devices (tenant_id, serial_folded);
