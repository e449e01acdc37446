package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"sync"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// readStmts are the hot lookups of a renewal and a revocation check — a
// certificate by serial, a device by id — prepared once on the read pool
// and scanned straight into the rows, without gorm's per-call statement
// building and reflection (a third of a renewal's handler time went there).
// The column lists are the models' columns: certificateRow and deviceRow
// must change with them (TestReadsMatchModels).
type readStmts struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

const (
	sqlGetCertificate = "SELECT serial, kind, device_id, tenant_id, subject, sans, not_before, not_after, der, status, " +
		"revoked_at, revocation_reason, replaces_serial, key_sha256, token_hash, crl_partition, created_at, issuer_kid FROM certificates WHERE serial = ?"
	sqlGetDevice = "SELECT id, tenant_id, serial, serial_folded, macs, status, method, ek_hash, ak_pub, idevid_issuer, " +
		"idevid_serial, rekey_required, rekey_deadline, created_at, updated_at FROM devices WHERE id = ?"
)

// sqlGetCertificateAndDevice is sqlGetCertificate and sqlGetDevice joined:
// a renewal's two lookups in one statement (one B-tree descent per table,
// one round of column reads). Its columns are the two lists, in order.
const sqlGetCertificateAndDevice = "SELECT c.serial, c.kind, c.device_id, c.tenant_id, c.subject, c.sans, c.not_before, c.not_after, " +
	"c.der, c.status, c.revoked_at, c.revocation_reason, c.replaces_serial, c.key_sha256, c.token_hash, c.crl_partition, c.created_at, " +
	"c.issuer_kid, d.id, d.tenant_id, d.serial, d.serial_folded, d.macs, d.status, d.method, d.ek_hash, d.ak_pub, d.idevid_issuer, " +
	"d.idevid_serial, d.rekey_required, d.rekey_deadline, d.created_at, d.updated_at " +
	"FROM certificates c JOIN devices d ON d.id = c.device_id WHERE c.serial = ?"

func (r *certificateRow) scanDest() []any {
	return []any{&r.Serial, &r.Kind, &r.DeviceID, &r.TenantID, &r.Subject, &r.SANs, &r.NotBefore, &r.NotAfter, &r.DER,
		&r.Status, &r.RevokedAt, &r.RevocationReason, &r.ReplacesSerial, &r.KeySHA256, &r.TokenHash, &r.CRLPartition, &r.CreatedAt, &r.IssuerKID}
}

func (r *deviceRow) scanDest() []any {
	return []any{&r.ID, &r.TenantID, &r.Serial, &r.SerialFolded, &r.MACs, &r.Status, &r.Method, &r.EKHash, &r.AKPub,
		&r.IDevIDIssuer, &r.IDevIDSerial, &r.RekeyRequired, &r.RekeyDeadline, &r.CreatedAt, &r.UpdatedAt}
}

// rd is the read pool for ctx: the admin lane's for a context marked by
// registry.WithAdminLane, the shared one otherwise.
func (s *Store) rd(ctx context.Context) *gorm.DB {
	if registry.InAdminLane(ctx) {
		return s.ra.WithContext(ctx)
	}
	return s.r.WithContext(ctx)
}

// readStmt returns query prepared on ctx's read pool (rd), preparing it on
// first use.
func (s *Store) readStmt(ctx context.Context, query string) (*sql.Stmt, error) {
	c, pool := &s.reads, s.r
	if registry.InAdminLane(ctx) {
		c, pool = &s.adminReads, s.ra
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	db, err := pool.DB()
	if err != nil {
		return nil, err
	}
	st, err := db.PrepareContext(ctx, s.rebind(query))
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]*sql.Stmt{}
	}
	c.m[query] = st
	return st, nil
}

// readRow runs a prepared lookup and scans its one row into dest.
//
// On SQLite the lookup runs uncancellable once ctx is checked: it is one
// primary-key probe, over before a cancellation could matter, and a
// cancellable context costs two goroutines per query — database/sql's
// watcher of the rows, and mattn/go-sqlite3's, which steps the statement on
// a goroutine of its own so that it can interrupt it — each a wake-up of an
// idle thread on a busy server. PostgreSQL keeps ctx: there it bounds a
// network round trip.
func (s *Store) readRow(ctx context.Context, what, query string, dest []any, args ...any) error {
	st, err := s.readStmt(ctx, query)
	if err == nil && s.driver != DriverPostgres {
		if err = ctx.Err(); err == nil {
			ctx = context.WithoutCancel(ctx)
		}
	}
	if err == nil {
		err = st.QueryRowContext(ctx, args...).Scan(dest...)
	}
	if err != nil {
		return fmt.Errorf("sqlstore: get %s: %w", what, s.translateSQL(err))
	}
	return nil
}

func (s *Store) closeReads() {
	s.reads.closeAll()
	s.adminReads.closeAll()
}

func (c *readStmts) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}
