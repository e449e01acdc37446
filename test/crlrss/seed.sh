#!/bin/bash
# seed.sh DIR [DEVICES] [REVOKED]: make a CA in DIR ('ca init --dev', needs a built
# 'ca' as $CA_BIN, default ca on PATH) and fill its SQLite registry with DEVICES
# devices (default 1,000,000), one certificate each, the first REVOKED (default
# 100,000) revoked — one INSERT ... SELECT per table inside SQLite, minutes rather
# than the hours the real enrollment path (test/seed) takes. The rows follow the
# store's schema; certificate DER is 64 random bytes (nothing at start-up reads it).
# Needs the sqlite3 command-line shell (Debian: sqlite3).
set -euo pipefail
dir=$1; devices=${2:-1000000}; revoked=${3:-100000}
ca=${CA_BIN:-ca}
"$ca" init --dir "$dir" --dev --listen 127.0.0.1:18643 >/dev/null
db=$dir/registry.db
kid=$(sqlite3 "$db" "SELECT issuer_kid FROM certificates LIMIT 1")
sqlite3 "$db" >/dev/null <<SQL
PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA cache_size=-200000;
BEGIN;
INSERT INTO devices (id, tenant_id, serial, serial_folded, macs, status, method, ek_hash, created_at, updated_at)
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < $devices)
SELECT printf('dev%07d', i), 'default', printf('SN%07d', i), printf('sn%07d', i), '[]',
  CASE WHEN i <= $revoked THEN 'revoked' ELSE 'active' END, 'token', '',
  datetime('now', '-1 day') || '+00:00', datetime('now', '-1 day') || '+00:00' FROM c;
INSERT INTO certificates (serial, kind, device_id, tenant_id, subject, sans, not_before, not_after, der, status, revoked_at,
  revocation_reason, replaces_serial, created_at, issuer_kid, crl_partition)
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < $devices)
SELECT '7' || substr(lower(hex(randomblob(20))), 2), 'device', printf('dev%07d', i), 'default', 'CN=x', '[]',
  datetime('now', '-1 day') || '+00:00', datetime('now', '+364 days') || '+00:00', randomblob(64),
  CASE WHEN i <= $revoked THEN 'revoked' ELSE 'active' END,
  CASE WHEN i <= $revoked THEN datetime('now', '-1 hour') || '.123456+00:00' END,
  CASE WHEN i <= $revoked THEN i % 6 ELSE 0 END, '', datetime('now', '-1 day') || '+00:00', '$kid', 1 + abs(random()) % 256 FROM c;
UPDATE crl_counter SET revision = revision + 1 WHERE id = 1;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
echo "seeded $dir: $devices devices, $revoked revoked"
