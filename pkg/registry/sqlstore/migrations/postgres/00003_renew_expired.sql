-- Renewal after long offline: the nonces the CA hands out (any replica
-- completes one, each used once), and a tenant's own grace period.

-- +goose Up
CREATE TABLE renew_challenges (
    id character varying(128) NOT NULL,
    nonce bytea NOT NULL,
    cert_serial character varying(64) NOT NULL,
    expires timestamp with time zone NOT NULL,
    used boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone,
    CONSTRAINT renew_challenges_pkey PRIMARY KEY (id)
);
CREATE INDEX idx_renew_challenges_expires ON renew_challenges USING btree (expires);
ALTER TABLE tenants ADD COLUMN renew_grace_seconds bigint DEFAULT 0 NOT NULL;

-- +goose Down
ALTER TABLE tenants DROP COLUMN renew_grace_seconds;
DROP TABLE renew_challenges;
