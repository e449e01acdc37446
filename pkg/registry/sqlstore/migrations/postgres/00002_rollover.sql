-- CA rollover: the issuers (their state lives in the registry so every
-- replica follows prepare/activate/retire), which issuer signed each
-- certificate, and which devices fetched a trust bundle naming an issuer.

-- +goose Up
CREATE TABLE ca_issuers (
    key_id character varying(64) NOT NULL,
    state character varying(16) NOT NULL,
    kind character varying(16) DEFAULT ''::character varying NOT NULL,
    cert_pem text NOT NULL,
    root_pem text NOT NULL,
    cross_pem text DEFAULT ''::text NOT NULL,
    key_uri text NOT NULL,
    root_key_uri text DEFAULT ''::text NOT NULL,
    not_after timestamp with time zone,
    created_at timestamp with time zone,
    activated_at timestamp with time zone,
    retired_at timestamp with time zone,
    CONSTRAINT ca_issuers_pkey PRIMARY KEY (key_id)
);
CREATE INDEX idx_ca_issuers_state ON ca_issuers USING btree (state);
CREATE UNIQUE INDEX ux_ca_issuers_state ON ca_issuers (state) WHERE state IN ('prepared', 'active', 'previous');
CREATE TABLE bundle_fetches (
    device_id character varying(128) NOT NULL,
    issuer_kid character varying(64) NOT NULL,
    tenant_id character varying(128) NOT NULL,
    fetched_at timestamp with time zone NOT NULL,
    CONSTRAINT bundle_fetches_pkey PRIMARY KEY (device_id, issuer_kid)
);
CREATE INDEX idx_bundle_fetches_issuer_tenant ON bundle_fetches USING btree (issuer_kid, tenant_id);
ALTER TABLE certificates ADD COLUMN issuer_kid character varying(64) DEFAULT ''::character varying NOT NULL;
CREATE INDEX idx_certificates_issuer ON certificates USING btree (issuer_kid, status, tenant_id, device_id, not_after);
CREATE INDEX idx_devices_status_tenant ON devices USING btree (status, tenant_id);

-- +goose Down
DROP INDEX idx_devices_status_tenant;
DROP INDEX idx_certificates_issuer;
ALTER TABLE certificates DROP COLUMN issuer_kid;
DROP TABLE bundle_fetches;
DROP TABLE ca_issuers;
