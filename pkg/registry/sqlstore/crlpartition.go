package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// crlPartitionRow is one partition CRL's state: the last CRL number issued
// for it and its revocation revision, bumped in the transaction of every
// write that revokes one of its certificates. Rows are made on first use.
type crlPartitionRow struct {
	Part     int   `gorm:"column:part;primaryKey;autoIncrement:false"`
	Number   int64 `gorm:"not null;default:0"`
	Revision int64 `gorm:"not null;default:0"`
}

func (crlPartitionRow) TableName() string { return "crl_partitions" }

const (
	// sqlBumpRevision is the revision of the whole set of revocations (the
	// full CRL's), in the CRL counter's row.
	sqlBumpRevision     = "UPDATE crl_counter SET revision = revision + 1 WHERE id = 1"
	sqlBumpPartRevision = `INSERT INTO crl_partitions (part, number, revision) VALUES (?, 0, 1)
		ON CONFLICT (part) DO UPDATE SET revision = crl_partitions.revision + 1`
	// A partition's first number is one above the full CRL's counter: a
	// registry restored from a backup has that counter raised ('ca
	// restore'), so a partition first published after the backup was taken
	// does not number from 1 again.
	sqlNextPartNumber = `INSERT INTO crl_partitions (part, number, revision)
		VALUES (?, (SELECT number FROM crl_counter WHERE id = 1) + 1, 0)
		ON CONFLICT (part) DO UPDATE SET number = crl_partitions.number + 1 RETURNING number`
	sqlReadRevisions = "SELECT 0, revision FROM crl_counter WHERE id = 1 UNION ALL SELECT part, revision FROM crl_partitions"
	// sqlRevokedPartitions names the partitions of the certificates a
	// re-enrollment is about to revoke (sqlSupersedeDevice's rows).
	sqlRevokedPartitions = "SELECT DISTINCT crl_partition FROM certificates WHERE device_id = ? AND status IN (?, ?)"
)

// sqlRevokedWhere selects revoked certificates the way the partial
// covering indexes CRL builds read do (idx_certificates_revoked and
// idx_certificates_revoked_partition, migration 00002_crl_partitions: the
// revoked rows only, in serial order, with what a CRL entry needs, so a
// build reads the index alone). The status is a literal so that both
// planners see the index applies.
const sqlRevokedWhere = "status = 'revoked'"

// bumpCRLRevisions records, in the revoking transaction, that the full CRL
// and the partitions parts changed. It runs after the audit append, so a
// transaction locks the audit head before these rows (PostgreSQL: one lock
// order for every writer, no deadlock).
func (b *batch) bumpCRLRevisions(parts []int) error {
	if _, err := b.exec(sqlBumpRevision); err != nil {
		return fmt.Errorf("sqlstore: bump CRL revision: %w", b.s.translateSQL(err))
	}
	parts = slices.Clone(parts)
	slices.Sort(parts)
	for i, p := range parts {
		if p <= 0 || (i > 0 && parts[i-1] == p) {
			continue
		}
		if _, err := b.exec(sqlBumpPartRevision, p); err != nil {
			return fmt.Errorf("sqlstore: bump CRL partition %d revision: %w", p, b.s.translateSQL(err))
		}
	}
	return nil
}

// writeRevoking is writeAudited for a write that revokes certificates: fn
// returns the CRL partitions of what it revoked (nil: nothing), and their
// revisions are bumped after the audit event in the same transaction.
func (s *Store) writeRevoking(ctx context.Context, audit *registry.AuditEvent, fn func(tx *gorm.DB, b *batch) ([]int, bool, error)) error {
	var ev *registry.AuditEvent
	err := s.write(ctx, func(tx *gorm.DB, b *batch) error {
		parts, revoked, err := fn(tx, b)
		if err != nil {
			return err
		}
		if audit != nil {
			if ev, err = b.appendAudit(audit); err != nil {
				return err
			}
		}
		if !revoked {
			return nil
		}
		return b.bumpCRLRevisions(parts)
	})
	if err != nil {
		return err
	}
	if audit != nil {
		copyAudit(audit, ev)
	}
	return nil
}

// revokingRows adapts fn, which leaves the certificates it revoked in
// *rows, to writeRevoking.
func revokingRows(rows *[]certificateRow, fn func(*gorm.DB, *batch) error) func(*gorm.DB, *batch) ([]int, bool, error) {
	return func(tx *gorm.DB, b *batch) ([]int, bool, error) {
		if err := fn(tx, b); err != nil {
			return nil, false, err
		}
		parts := make([]int, len(*rows))
		for i := range *rows {
			parts[i] = (*rows)[i].CRLPartition
		}
		return parts, len(parts) > 0, nil
	}
}

// NextPartitionCRLNumber implements registry.Store. Like NextCRLNumber, the
// row lock (PostgreSQL) or the single writer (SQLite) orders concurrent
// callers.
func (s *Store) NextPartitionCRLNumber(ctx context.Context, partition int) (int64, error) {
	if partition <= 0 {
		return 0, fmt.Errorf("sqlstore: next CRL number of partition %d: not a partition", partition)
	}
	var n int64
	err := s.write(ctx, func(_ *gorm.DB, b *batch) error {
		if err := b.scan(sqlNextPartNumber, []any{partition}, &n); err != nil {
			return fmt.Errorf("sqlstore: next CRL number of partition %d: %w", partition, s.translateSQL(err))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// CRLRevisions implements registry.Store: one query on the read pool.
func (s *Store) CRLRevisions(ctx context.Context) (*registry.CRLRevisions, error) {
	rows, err := s.rd(ctx).Raw(sqlReadRevisions).Rows()
	if err != nil {
		return nil, fmt.Errorf("sqlstore: CRL revisions: %w", translate(err))
	}
	defer rows.Close()
	out := &registry.CRLRevisions{Partitions: map[int]int64{}}
	for rows.Next() {
		var part int
		var rev int64
		if err := rows.Scan(&part, &rev); err != nil {
			return nil, fmt.Errorf("sqlstore: CRL revisions: %w", err)
		}
		if part == 0 {
			out.All = rev
		} else {
			out.Partitions[part] = rev
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: CRL revisions: %w", unavailable(err))
	}
	return out, nil
}

// revokedPartitions returns the partitions of the certificates the
// re-enrollment of deviceID is about to revoke (before sqlSupersedeDevice).
func (s *Store) revokedPartitions(b *batch, deviceID string) ([]int, error) {
	rows, err := b.tx.QueryContext(b.ctx, s.rebind(sqlRevokedPartitions), deviceID,
		string(registry.CertActive), string(registry.CertSuperseded))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: enroll: partitions of revoked certificates: %w", s.translateSQL(err))
	}
	defer rows.Close()
	var parts []int
	for rows.Next() {
		var p sql.NullInt64
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("sqlstore: enroll: partitions of revoked certificates: %w", err)
		}
		parts = append(parts, int(p.Int64))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: enroll: partitions of revoked certificates: %w", s.translateSQL(err))
	}
	if parts == nil {
		parts = []int{} // a non-nil empty list: nothing to revoke
	}
	return parts, nil
}
