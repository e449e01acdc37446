package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
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

func (r *certificateRow) scanDest() []any {
	return []any{&r.Serial, &r.Kind, &r.DeviceID, &r.TenantID, &r.Subject, &r.SANs, &r.NotBefore, &r.NotAfter, &r.DER,
		&r.Status, &r.RevokedAt, &r.RevocationReason, &r.ReplacesSerial, &r.KeySHA256, &r.TokenHash, &r.CRLPartition, &r.CreatedAt, &r.IssuerKID}
}

func (r *deviceRow) scanDest() []any {
	return []any{&r.ID, &r.TenantID, &r.Serial, &r.SerialFolded, &r.MACs, &r.Status, &r.Method, &r.EKHash, &r.AKPub,
		&r.IDevIDIssuer, &r.IDevIDSerial, &r.RekeyRequired, &r.RekeyDeadline, &r.CreatedAt, &r.UpdatedAt}
}

// stmt returns query prepared on the read pool, preparing it on first use.
func (s *Store) readStmt(ctx context.Context, query string) (*sql.Stmt, error) {
	s.reads.mu.Lock()
	defer s.reads.mu.Unlock()
	if st, ok := s.reads.m[query]; ok {
		return st, nil
	}
	db, err := s.r.DB()
	if err != nil {
		return nil, err
	}
	st, err := db.PrepareContext(ctx, s.rebind(query))
	if err != nil {
		return nil, err
	}
	if s.reads.m == nil {
		s.reads.m = map[string]*sql.Stmt{}
	}
	s.reads.m[query] = st
	return st, nil
}

// readRow runs a prepared lookup and scans its one row into dest.
func (s *Store) readRow(ctx context.Context, what, query string, dest []any, args ...any) error {
	st, err := s.readStmt(ctx, query)
	if err == nil {
		err = st.QueryRowContext(ctx, args...).Scan(dest...)
	}
	if err != nil {
		return fmt.Errorf("sqlstore: get %s: %w", what, s.translateSQL(err))
	}
	return nil
}

func (s *Store) closeReads() {
	s.reads.mu.Lock()
	defer s.reads.mu.Unlock()
	for _, st := range s.reads.m {
		st.Close()
	}
	s.reads.m = nil
}
