-- Admin lists at a million devices: an index per filter that also gives the
-- page order (keyset pagination), the MACs every device has named (exact
-- lookups instead of LIKE scans; filled from devices.macs by migration 7),
-- and the single-column indexes these make redundant dropped.

-- +goose Up
CREATE INDEX idx_devices_tenant_id ON devices USING btree (tenant_id,id);
CREATE INDEX idx_devices_tenant_status_id ON devices USING btree (tenant_id,status,id);
CREATE INDEX idx_devices_status_id ON devices USING btree (status,id);
CREATE INDEX idx_devices_serial_folded ON devices USING btree (serial_folded);
CREATE INDEX idx_certificates_tenant_serial ON certificates USING btree (tenant_id,serial);
CREATE INDEX idx_certificates_tenant_status_serial ON certificates USING btree (tenant_id,status,serial);
CREATE INDEX idx_certificates_status_serial ON certificates USING btree (status,serial);
CREATE INDEX idx_certificates_not_after_serial ON certificates USING btree (not_after,serial);
CREATE INDEX idx_certificates_tenant_not_after_serial ON certificates USING btree (tenant_id,not_after,serial);
DROP INDEX idx_certificates_not_after;
DROP INDEX idx_certificates_status;
CREATE TABLE device_mac_history (
    mac character varying(32) NOT NULL,
    device_id character varying(128) NOT NULL,
    CONSTRAINT device_mac_history_pkey PRIMARY KEY (mac, device_id)
);

-- +goose Down
DROP TABLE device_mac_history;
CREATE INDEX idx_certificates_status ON certificates USING btree (status);
CREATE INDEX idx_certificates_not_after ON certificates USING btree (not_after);
DROP INDEX idx_certificates_tenant_not_after_serial;
DROP INDEX idx_certificates_not_after_serial;
DROP INDEX idx_certificates_status_serial;
DROP INDEX idx_certificates_tenant_status_serial;
DROP INDEX idx_certificates_tenant_serial;
DROP INDEX idx_devices_serial_folded;
DROP INDEX idx_devices_status_id;
DROP INDEX idx_devices_tenant_status_id;
DROP INDEX idx_devices_tenant_id;
