-- Baseline: the schema devpki's gorm AutoMigrate and its fixups made before
-- versioned migrations (pg_dump --schema-only of a fresh registry, then
-- frozen). Never edit this file: a schema change is a new numbered migration.

-- +goose Up

CREATE TABLE admins (
    name character varying(256) NOT NULL,
    tenant_id character varying(128) NOT NULL,
    role character varying(32) NOT NULL,
    super boolean DEFAULT false NOT NULL,
    status character varying(32) DEFAULT 'active'::character varying NOT NULL,
    revoked_at timestamp with time zone,
    created_at timestamp with time zone
);

CREATE TABLE audit_checkpoints (
    id bigint NOT NULL,
    seq bigint NOT NULL,
    hash bytea NOT NULL,
    pruned_before timestamp with time zone NOT NULL,
    made_at timestamp with time zone NOT NULL,
    tenants text NOT NULL,
    signer bytea NOT NULL,
    algorithm character varying(64) NOT NULL,
    signature bytea NOT NULL
);

CREATE SEQUENCE audit_checkpoints_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE audit_checkpoints_id_seq OWNED BY audit_checkpoints.id;

CREATE TABLE audit_events (
    seq bigint NOT NULL,
    "time" timestamp with time zone NOT NULL,
    tenant_id character varying(128) NOT NULL,
    actor text NOT NULL,
    action character varying(128) NOT NULL,
    target text NOT NULL,
    result character varying(32) NOT NULL,
    detail text NOT NULL,
    source_addr text NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    tenant_seq bigint DEFAULT 0 NOT NULL,
    tenant_prev_hash bytea,
    tenant_hash bytea
);

CREATE TABLE audit_head (
    id bigint NOT NULL,
    seq bigint NOT NULL,
    hash bytea NOT NULL
);

CREATE TABLE audit_refusals (
    id bigint NOT NULL,
    window_start timestamp with time zone NOT NULL,
    source_addr character varying(128) NOT NULL,
    action character varying(128) NOT NULL,
    reason character varying(64) NOT NULL,
    tenant_id character varying(128) NOT NULL,
    hits bigint NOT NULL,
    first_at timestamp with time zone NOT NULL,
    last_at timestamp with time zone NOT NULL,
    sample text NOT NULL
);

CREATE SEQUENCE audit_refusals_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE audit_refusals_id_seq OWNED BY audit_refusals.id;

CREATE TABLE audit_tenant_heads (
    tenant_id character varying(128) NOT NULL,
    seq bigint NOT NULL,
    hash bytea NOT NULL
);

CREATE TABLE certificates (
    serial character varying(64) NOT NULL,
    kind character varying(32) NOT NULL,
    device_id character varying(128),
    tenant_id character varying(128) NOT NULL,
    subject text NOT NULL,
    sans text NOT NULL,
    not_before timestamp with time zone NOT NULL,
    not_after timestamp with time zone NOT NULL,
    der bytea,
    status character varying(32) NOT NULL,
    revoked_at timestamp with time zone,
    revocation_reason bigint NOT NULL,
    replaces_serial character varying(64) NOT NULL,
    key_sha256 bytea,
    token_hash bytea,
    created_at timestamp with time zone
);

CREATE TABLE crl_counter (
    id bigint NOT NULL,
    number bigint NOT NULL
);

CREATE TABLE device_macs (
    tenant_id character varying(128) NOT NULL,
    mac character varying(32) NOT NULL,
    device_id character varying(128) NOT NULL
);

CREATE TABLE device_quarantine (
    id character varying(128) NOT NULL,
    tenant_id character varying(128) NOT NULL,
    serial character varying(256) NOT NULL,
    macs text NOT NULL,
    ek_hash character varying(128) NOT NULL,
    reason character varying(64) NOT NULL,
    conflict_device_id character varying(128) NOT NULL,
    conflict_ek_hash character varying(128) DEFAULT ''::character varying NOT NULL,
    idevid_issuer text DEFAULT ''::text NOT NULL,
    idevid_serial character varying(128) DEFAULT ''::character varying NOT NULL,
    conflict_idevid_issuer text DEFAULT ''::text NOT NULL,
    conflict_idevid_serial character varying(128) DEFAULT ''::character varying NOT NULL,
    source_addr text NOT NULL,
    first_seen timestamp with time zone NOT NULL,
    last_seen timestamp with time zone NOT NULL,
    attempts bigint NOT NULL,
    status character varying(32) NOT NULL,
    dismissed_by character varying(256) NOT NULL,
    dismissed_at timestamp with time zone,
    released_by character varying(256) DEFAULT ''::character varying NOT NULL,
    released_at timestamp with time zone
);

CREATE TABLE devices (
    id character varying(128) NOT NULL,
    tenant_id character varying(128) NOT NULL,
    serial character varying(256) NOT NULL,
    serial_folded character varying(256) DEFAULT ''::character varying NOT NULL,
    macs text NOT NULL,
    status character varying(32) NOT NULL,
    method character varying(64) NOT NULL,
    ek_hash character varying(128) NOT NULL,
    ak_pub bytea,
    idevid_issuer text DEFAULT ''::text NOT NULL,
    idevid_serial character varying(128) DEFAULT ''::character varying NOT NULL,
    rekey_required boolean DEFAULT false NOT NULL,
    rekey_deadline timestamp with time zone,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE heartbeat (
    id bigint NOT NULL,
    beats bigint NOT NULL
);

CREATE TABLE idevid_cas (
    id character varying(128) NOT NULL,
    tenant_id character varying(128) NOT NULL,
    fingerprint character varying(64) NOT NULL,
    der bytea NOT NULL,
    subject text NOT NULL,
    kind character varying(32) NOT NULL,
    added_by character varying(256) NOT NULL,
    created_at timestamp with time zone
);

CREATE TABLE tenants (
    id character varying(128) NOT NULL,
    name character varying(128) NOT NULL,
    require_tpm boolean NOT NULL,
    methods text DEFAULT ''::text NOT NULL,
    key_types text DEFAULT ''::text NOT NULL,
    cert_lifetime_seconds bigint DEFAULT 0 NOT NULL,
    created_at timestamp with time zone
);

CREATE TABLE tokens (
    id character varying(128) NOT NULL,
    hash bytea NOT NULL,
    tenant_id character varying(128) NOT NULL,
    serial character varying(256) NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    uses_left bigint NOT NULL,
    reinstate boolean DEFAULT false NOT NULL,
    created_by character varying(256) NOT NULL,
    created_at timestamp with time zone
);

CREATE TABLE tpm_challenges (
    id character varying(128) NOT NULL,
    secret_hash bytea NOT NULL,
    nonce bytea NOT NULL,
    ak_public bytea NOT NULL,
    ek_hash character varying(128) NOT NULL,
    binding bytea NOT NULL,
    expires timestamp with time zone NOT NULL,
    used boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone
);

CREATE TABLE tpm_preregistrations (
    ek_hash character varying(128) NOT NULL,
    tenant_id character varying(128) NOT NULL,
    serial character varying(256) NOT NULL,
    macs text NOT NULL,
    created_by character varying(256) NOT NULL,
    created_at timestamp with time zone
);

CREATE TABLE tpm_roots (
    fingerprint character varying(64) NOT NULL,
    der bytea NOT NULL,
    subject text NOT NULL,
    kind character varying(16) DEFAULT 'root'::character varying NOT NULL,
    added_by character varying(256) NOT NULL,
    created_at timestamp with time zone
);

ALTER TABLE ONLY audit_checkpoints ALTER COLUMN id SET DEFAULT nextval('audit_checkpoints_id_seq'::regclass);

ALTER TABLE ONLY audit_refusals ALTER COLUMN id SET DEFAULT nextval('audit_refusals_id_seq'::regclass);

ALTER TABLE ONLY admins
    ADD CONSTRAINT admins_pkey PRIMARY KEY (name);

ALTER TABLE ONLY audit_checkpoints
    ADD CONSTRAINT audit_checkpoints_pkey PRIMARY KEY (id);

ALTER TABLE ONLY audit_events
    ADD CONSTRAINT audit_events_pkey PRIMARY KEY (seq);

ALTER TABLE ONLY audit_head
    ADD CONSTRAINT audit_head_pkey PRIMARY KEY (id);

ALTER TABLE ONLY audit_refusals
    ADD CONSTRAINT audit_refusals_pkey PRIMARY KEY (id);

ALTER TABLE ONLY audit_tenant_heads
    ADD CONSTRAINT audit_tenant_heads_pkey PRIMARY KEY (tenant_id);

ALTER TABLE ONLY certificates
    ADD CONSTRAINT certificates_pkey PRIMARY KEY (serial);

ALTER TABLE ONLY crl_counter
    ADD CONSTRAINT crl_counter_pkey PRIMARY KEY (id);

ALTER TABLE ONLY device_macs
    ADD CONSTRAINT device_macs_pkey PRIMARY KEY (tenant_id, mac);

ALTER TABLE ONLY device_quarantine
    ADD CONSTRAINT device_quarantine_pkey PRIMARY KEY (id);

ALTER TABLE ONLY devices
    ADD CONSTRAINT devices_pkey PRIMARY KEY (id);

ALTER TABLE ONLY heartbeat
    ADD CONSTRAINT heartbeat_pkey PRIMARY KEY (id);

ALTER TABLE ONLY idevid_cas
    ADD CONSTRAINT idevid_cas_pkey PRIMARY KEY (id);

ALTER TABLE ONLY tenants
    ADD CONSTRAINT tenants_pkey PRIMARY KEY (id);

ALTER TABLE ONLY tokens
    ADD CONSTRAINT tokens_pkey PRIMARY KEY (id);

ALTER TABLE ONLY tpm_challenges
    ADD CONSTRAINT tpm_challenges_pkey PRIMARY KEY (id);

ALTER TABLE ONLY tpm_preregistrations
    ADD CONSTRAINT tpm_preregistrations_pkey PRIMARY KEY (ek_hash);

ALTER TABLE ONLY tpm_roots
    ADD CONSTRAINT tpm_roots_pkey PRIMARY KEY (fingerprint);

CREATE INDEX idx_audit_events_tenant_id ON audit_events USING btree (tenant_id);

CREATE INDEX idx_certificates_device_id ON certificates USING btree (device_id);

CREATE INDEX idx_certificates_key_sha256 ON certificates USING btree (key_sha256);

CREATE INDEX idx_certificates_not_after ON certificates USING btree (not_after);

CREATE INDEX idx_certificates_status ON certificates USING btree (status);

CREATE INDEX idx_device_macs_device_id ON device_macs USING btree (device_id);

CREATE INDEX idx_device_quarantine_tenant_id ON device_quarantine USING btree (tenant_id);

CREATE INDEX idx_devices_ek_hash ON devices USING btree (ek_hash);

CREATE UNIQUE INDEX idx_refusal_key ON audit_refusals USING btree (window_start, source_addr, action, reason, tenant_id);

CREATE UNIQUE INDEX idx_tenants_name ON tenants USING btree (name);

CREATE UNIQUE INDEX idx_tokens_hash ON tokens USING btree (hash);

CREATE INDEX idx_tokens_tenant_id ON tokens USING btree (tenant_id);

CREATE INDEX idx_tpm_challenges_expires ON tpm_challenges USING btree (expires);

CREATE UNIQUE INDEX ux_device_quarantine_held ON device_quarantine USING btree (tenant_id, serial, ek_hash) WHERE ((status)::text = 'held'::text);

CREATE UNIQUE INDEX ux_devices_ek_hash ON devices USING btree (ek_hash) WHERE ((ek_hash)::text <> ''::text);

CREATE UNIQUE INDEX ux_devices_tenant_serial_folded ON devices USING btree (tenant_id, serial_folded);

CREATE UNIQUE INDEX ux_idevid_cas_tenant_fp ON idevid_cas USING btree (tenant_id, fingerprint);

ALTER TABLE ONLY certificates
    ADD CONSTRAINT fk_certificates_device FOREIGN KEY (device_id) REFERENCES devices(id) ON UPDATE RESTRICT ON DELETE RESTRICT;

ALTER TABLE ONLY device_quarantine
    ADD CONSTRAINT fk_device_quarantine_tenant FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON UPDATE RESTRICT ON DELETE RESTRICT;

ALTER TABLE ONLY devices
    ADD CONSTRAINT fk_devices_tenant FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON UPDATE RESTRICT ON DELETE RESTRICT;

ALTER TABLE ONLY idevid_cas
    ADD CONSTRAINT fk_idevid_cas_tenant FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON UPDATE RESTRICT ON DELETE RESTRICT;

ALTER TABLE ONLY tokens
    ADD CONSTRAINT fk_tokens_tenant FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON UPDATE RESTRICT ON DELETE RESTRICT;

ALTER TABLE ONLY tpm_preregistrations
    ADD CONSTRAINT fk_tpm_preregistrations_tenant FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON UPDATE RESTRICT ON DELETE RESTRICT;
