package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// stmtCache holds the committer's hot statements, prepared on the writer
// pool at Open. Used through tx.StmtContext, a statement prepared on the
// pool's connection is reused by every transaction on that connection
// (SQLite has exactly one writer connection), so these statements are parsed
// once — unlike gorm's prepared mode, which re-prepares inside transactions.
// Preparing happens before the committer starts: with one connection, a
// prepare issued while a transaction holds it would wait forever.
type stmtCache struct {
	m map[string]*sql.Stmt // read-only after prepare
}

// hotStatements are prepared at Open; their text is the cache key.
var hotStatements = []string{
	"SAVEPOINT op",
	"RELEASE SAVEPOINT op",
	"ROLLBACK TO SAVEPOINT op",
	sqlReadHead, sqlReadHeadLocked, sqlWriteHead, sqlInsertAudit, sqlReadTenantHead, sqlWriteTenantHead,
	sqlBumpRefusal, sqlInsertRefusal, sqlTrimRefusals,
	sqlReadToken, sqlInsertDevice, sqlSpendToken, sqlInsertCertificate, sqlClaimMAC, sqlRecordMAC,
	sqlReadRenewedCert, sqlReadRenewingDevice, sqlSupersedeRenewed, sqlSupersedeRenewedOf, sqlTouchRenewingDevice,
}

func (c *stmtCache) prepare(ctx context.Context, s *Store) error {
	c.m = make(map[string]*sql.Stmt, len(hotStatements))
	for _, q := range hotStatements {
		if q == sqlReadHeadLocked && s.driver != DriverPostgres {
			continue
		}
		st, err := s.wsql.PrepareContext(ctx, s.rebind(q))
		if err != nil {
			return fmt.Errorf("sqlstore: prepare %q: %w", q, err)
		}
		c.m[q] = st
	}
	return nil
}

func (c *stmtCache) closeAll() {
	for _, st := range c.m {
		st.Close()
	}
}

// rebind turns the '?' placeholders of query into the driver's form.
func (s *Store) rebind(query string) string {
	if s.driver != DriverPostgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// exec runs a statement inside the batch's transaction, prepared when it
// is one of hotStatements.
func (b *batch) exec(query string, args ...any) (sql.Result, error) {
	if st := b.stmt(query); st != nil {
		return st.ExecContext(b.ctx, args...)
	}
	return b.tx.ExecContext(b.ctx, b.s.rebind(query), args...)
}

// scan runs a cached single-row query inside the batch's transaction into
// dst; a missing row is sql.ErrNoRows.
func (b *batch) scan(query string, args []any, dst ...any) error {
	if st := b.stmt(query); st != nil {
		return st.QueryRowContext(b.ctx, args...).Scan(dst...)
	}
	return b.tx.QueryRowContext(b.ctx, b.s.rebind(query), args...).Scan(dst...)
}

// stmt is the hot statement query bound to the batch's transaction, bound
// once per transaction (database/sql's Tx.StmtContext allocates and
// registers a new statement on every call); nil when query is not one of
// hotStatements.
func (b *batch) stmt(query string) *sql.Stmt {
	if st, ok := b.txStmts[query]; ok {
		return st
	}
	st, ok := b.s.stmts.m[query]
	if !ok {
		return nil
	}
	st = b.tx.StmtContext(b.ctx, st)
	if b.txStmts == nil {
		b.txStmts = make(map[string]*sql.Stmt, len(hotStatements))
	}
	b.txStmts[query] = st
	return st
}

// The committer's hot statements.
const (
	sqlReadHead       = "SELECT seq, hash FROM audit_head WHERE id = 1"
	sqlReadHeadLocked = "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
	sqlWriteHead      = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1"
	sqlInsertAudit    = `INSERT INTO audit_events (seq, time, tenant_id, actor, action, target, result, detail, source_addr, prev_hash, hash,
		tenant_seq, tenant_prev_hash, tenant_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlReadTenantHead  = "SELECT seq, hash FROM audit_tenant_heads WHERE tenant_id = ?"
	sqlWriteTenantHead = `INSERT INTO audit_tenant_heads (tenant_id, seq, hash) VALUES (?, ?, ?)
		ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`
	sqlReadToken    = "SELECT id, tenant_id, expires_at, uses_left FROM tokens WHERE hash = ?"
	sqlInsertDevice = `INSERT INTO devices (id, tenant_id, serial, serial_folded, macs, status, method, ek_hash, ak_pub,
		idevid_issuer, idevid_serial, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (tenant_id, serial_folded) DO NOTHING`
	// The conditional spend is registry.Token.Spendable in SQL.
	sqlSpendToken = `UPDATE tokens SET uses_left = uses_left - 1
		WHERE hash = ? AND tenant_id = ? AND uses_left > 0 AND expires_at > ?`
	// Claim a MAC: a new one, or one held by a device that is no longer
	// active; a MAC of an active device changes nothing (no row affected).
	sqlClaimMAC = `INSERT INTO device_macs (tenant_id, mac, device_id) VALUES (?, ?, ?)
		ON CONFLICT (tenant_id, mac) DO UPDATE SET device_id = excluded.device_id
		WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = device_macs.device_id AND d.status = ?)`
	sqlDropDeviceMACs = "DELETE FROM device_macs WHERE device_id = ?"
	sqlReplaceDevice  = `UPDATE devices SET serial = ?, serial_folded = ?, macs = ?, method = ?, ek_hash = ?, ak_pub = ?, status = ?,
		idevid_issuer = ?, idevid_serial = ?, updated_at = ?
		WHERE id = ? AND tenant_id = ? AND serial_folded = ? AND status = ? AND ek_hash = ? AND idevid_issuer = ? AND idevid_serial = ?`
	sqlSupersedeDevice = `UPDATE certificates SET status = ?, revoked_at = ?, revocation_reason = ?
		WHERE device_id = ? AND status IN (?, ?)`
	sqlInsertCertificate = `INSERT INTO certificates (serial, kind, device_id, tenant_id, subject, sans, not_before, not_after, der,
		status, revoked_at, revocation_reason, replaces_serial, key_sha256, token_hash, crl_partition, created_at, issuer_kid)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlReadRenewedCert    = "SELECT kind, device_id, tenant_id, status FROM certificates WHERE serial = ?"
	sqlReadRenewingDevice = "SELECT status, rekey_required FROM devices WHERE id = ?"
	// A renewal supersedes an active device certificate, and learns its
	// device and tenant from it.
	sqlSupersedeRenewed = `UPDATE certificates SET status = ? WHERE serial = ? AND status = ? AND kind = ? AND device_id IS NOT NULL
		RETURNING device_id, tenant_id`
	// The same when the renewal names them (supersedeRenewed).
	sqlSupersedeRenewedOf = `UPDATE certificates SET status = ? WHERE serial = ? AND status = ? AND kind = ? AND device_id = ?
		AND tenant_id = ?`
	// A renewal satisfies any rotate: it may go on only for an active device
	// that is not told to re-key, unless the key changes (the last
	// parameter is Renewal.SameKey).
	sqlTouchRenewingDevice = `UPDATE devices SET rekey_required = ?, rekey_deadline = NULL, updated_at = ?
		WHERE id = ? AND status = ? AND NOT (rekey_required AND ?)`
)
