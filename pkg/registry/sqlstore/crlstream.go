package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"devpki/pkg/registry"
)

// A full CRL build reads every revoked certificate: 100,000 of them on a
// CA of a million devices, a million at worst. Reading them through gorm's
// Rows (mattn/go-sqlite3 parsing each revoked_at and not_after into a
// time.Time, a struct with its strings each) spent a third of a build.
// EachRevoked runs a prepared statement on the read pool, leaves
// not_after in the WHERE clause, has the database turn revoked_at into
// Unix seconds, and scans the text columns into reused buffers.

// revokedEpoch is revoked_at as whole Unix seconds (floor: a CRL, like
// encoding/asn1, truncates to the second). SQLite keeps the time as text
// mattn/go-sqlite3 wrote ("2006-01-02 15:04:05.999999-07:00"), which
// unixepoch() reads (SQLite ≥ 3.38).
func (s *Store) revokedEpoch() string {
	if s.driver == DriverSQLite {
		return "unixepoch(revoked_at)"
	}
	return "floor(extract(epoch from revoked_at))::bigint"
}

// eachRevokedQuery is the statement for the full CRL (partition 0) or a
// partition, through the partial index of revoked rows. SQLite is told to
// (INDEXED BY): without statistics its planner prefers the status index and
// a lookup per row; PostgreSQL's statistics pick it.
func (s *Store) eachRevokedQuery(partition int) string {
	index, where := "idx_certificates_revoked", sqlRevokedWhere+" AND not_after > ?"
	if partition > 0 {
		index, where = "idx_certificates_revoked_partition", "crl_partition = ? AND "+where
	}
	table := "certificates"
	if s.driver == DriverSQLite {
		table += " INDEXED BY " + index
	}
	return "SELECT serial, " + s.revokedEpoch() + ", revocation_reason, issuer_kid FROM " + table +
		" WHERE " + where + " ORDER BY serial"
}

// EachRevoked implements registry.Store.
func (s *Store) EachRevoked(ctx context.Context, partition int, now time.Time, fn func(*registry.RevokedRow) error) error {
	if partition < 0 {
		return fmt.Errorf("sqlstore: read revoked of CRL partition %d: not a partition", partition)
	}
	args := []any{ts(now)}
	if partition > 0 {
		args = []any{partition, ts(now)}
	}
	st, err := s.readStmt(ctx, s.eachRevokedQuery(partition))
	if err != nil {
		return fmt.Errorf("sqlstore: read revoked: %w", s.translateSQL(err))
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return fmt.Errorf("sqlstore: read revoked: %w", s.translateSQL(err))
	}
	defer rows.Close()
	var serial, kid sql.RawBytes
	var at sql.NullInt64
	var row registry.RevokedRow
	for rows.Next() {
		if err := rows.Scan(&serial, &at, &row.Reason, &kid); err != nil {
			return fmt.Errorf("sqlstore: read revoked: %w", err)
		}
		if !at.Valid {
			// A revoked certificate must be listed with its time; a CRL
			// that leaves it out would call it good.
			return fmt.Errorf("sqlstore: read revoked: certificate %s has no readable revocation time", serial)
		}
		row.Serial, row.RevokedAt, row.IssuerKeyID = serial, at.Int64, kid
		if err := fn(&row); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlstore: read revoked: %w", s.translateSQL(err))
	}
	return nil
}
