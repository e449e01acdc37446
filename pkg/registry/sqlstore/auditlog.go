package sqlstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"devpki/pkg/registry"
)

// The anonymous-refusal statements (RecordRefusal). A refusal bumps its
// window's aggregate, or inserts it and then drops the oldest rows beyond
// the cap: the table never holds more than maxRefusals rows (one writer
// on SQLite; on PostgreSQL each replica's transaction trims what it sees,
// so at most maxRefusals plus one row per concurrent writer).
const (
	sqlBumpRefusal = `UPDATE audit_refusals SET hits = hits + 1, last_at = ?
		WHERE window_start = ? AND source_addr = ? AND action = ? AND reason = ? AND tenant_id = ?`
	sqlInsertRefusal = `INSERT INTO audit_refusals (window_start, source_addr, action, reason, tenant_id, hits, first_at, last_at, sample)
		VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)
		ON CONFLICT (window_start, source_addr, action, reason, tenant_id)
		DO UPDATE SET hits = audit_refusals.hits + 1, last_at = excluded.last_at`
	sqlTrimRefusals = `DELETE FROM audit_refusals
		WHERE id <= (SELECT id FROM audit_refusals ORDER BY id DESC LIMIT 1 OFFSET ?)`
)

// Field bounds of a refusal row: what an anonymous caller sends is cut.
const (
	maxRefusalSample = 512
	maxRefusalField  = 128
)

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// RecordRefusal implements registry.AuditStore.
func (s *Store) RecordRefusal(ctx context.Context, r *registry.Refusal) error {
	if r == nil {
		return errors.New("sqlstore: record refusal: nil refusal")
	}
	last := r.Last
	if last.IsZero() {
		last = s.now()
	}
	last = ts(last)
	window := last.Truncate(registry.RefusalWindow)
	src, action := cut(r.SourceAddr, maxRefusalField), cut(r.Action, maxRefusalField)
	reason, tenant := cut(r.Reason, 64), cut(r.TenantID, maxRefusalField)
	return s.write(ctx, func(_ *gorm.DB, b *batch) error {
		res, err := b.exec(sqlBumpRefusal, last, window, src, action, reason, tenant)
		if err != nil {
			return fmt.Errorf("sqlstore: record refusal: %w", b.s.translateSQL(err))
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		if _, err := b.exec(sqlInsertRefusal, window, src, action, reason, tenant, last, last,
			cut(r.Sample, maxRefusalSample)); err != nil {
			return fmt.Errorf("sqlstore: record refusal: %w", b.s.translateSQL(err))
		}
		if _, err := b.exec(sqlTrimRefusals, s.maxRefusals); err != nil {
			return fmt.Errorf("sqlstore: trim refusals: %w", b.s.translateSQL(err))
		}
		return nil
	})
}

// ListRefusals implements registry.AuditStore.
func (s *Store) ListRefusals(ctx context.Context, afterID int64, limit int) ([]*registry.Refusal, error) {
	if limit <= 0 {
		limit = 100
	}
	var rows []refusalRow
	if err := s.rd(ctx).Where("id > ?", afterID).Order("id").Limit(limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list refusals: %w", translate(err))
	}
	out := make([]*registry.Refusal, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// ListAuditEvents implements registry.AuditStore.
func (s *Store) ListAuditEvents(ctx context.Context, f registry.AuditFilter) ([]*registry.AuditEvent, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	q := s.rd(ctx).Where("seq > ?", f.AfterSeq)
	if !f.Since.IsZero() {
		q = q.Where("time >= ?", ts(f.Since))
	}
	switch {
	case f.TenantID == registry.DefaultTenant:
		q = q.Where("tenant_id IN ?", []string{"", registry.DefaultTenant})
	case f.TenantID != "":
		q = q.Where("tenant_id = ?", f.TenantID)
	}
	var rows []auditRow
	if err := q.Order("seq").Limit(f.Limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: export audit: %w", translate(err))
	}
	out := make([]*registry.AuditEvent, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// GetAuditCheckpoint implements registry.AuditStore.
func (s *Store) GetAuditCheckpoint(ctx context.Context) (*registry.AuditCheckpoint, error) {
	return latestCheckpoint(s.rd(ctx))
}

func latestCheckpoint(db *gorm.DB) (*registry.AuditCheckpoint, error) {
	var row checkpointRow
	if err := db.Order("id DESC").Take(&row).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: audit checkpoint: %w", translate(err))
	}
	cp := &registry.AuditCheckpoint{ID: row.ID, Seq: row.Seq, Hash: row.Hash, Before: row.Before.UTC(), Time: row.Time.UTC(),
		Signer: row.Signer, Algorithm: row.Algorithm, Signature: row.Signature}
	if err := json.Unmarshal([]byte(row.Tenants), &cp.Tenants); err != nil {
		return nil, fmt.Errorf("sqlstore: audit checkpoint %d: tenants: %w", row.ID, err)
	}
	return cp, nil
}

// PlanAuditPrune implements registry.AuditStore.
func (s *Store) PlanAuditPrune(ctx context.Context, before time.Time) (*registry.AuditCheckpoint, error) {
	cp, err := planPrune(s.rd(ctx), before)
	if err != nil {
		return nil, err
	}
	cp.Time = ts(s.now())
	return cp, nil
}

// planPrune computes the checkpoint of pruning the events older than before.
func planPrune(db *gorm.DB, before time.Time) (*registry.AuditCheckpoint, error) {
	before = ts(before)
	var last sql.NullInt64
	if err := db.Model(&auditRow{}).Where("time < ?", before).Select("MAX(seq)").Scan(&last).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: plan audit prune: %w", translate(err))
	}
	if !last.Valid {
		return nil, fmt.Errorf("sqlstore: no audit events before %s: %w", before.Format(time.RFC3339), registry.ErrNotFound)
	}
	var ev auditRow
	if err := db.Where("seq = ?", last.Int64).Take(&ev).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: plan audit prune: %w", translate(err))
	}
	cp := &registry.AuditCheckpoint{Seq: ev.Seq, Hash: ev.Hash, Before: before}
	heads := map[string]registry.AuditTenantHead{}
	prev, err := latestCheckpoint(db)
	switch {
	case err == nil:
		for _, h := range prev.Tenants {
			heads[h.TenantID] = h
		}
	case !errors.Is(err, registry.ErrNotFound):
		return nil, err
	}
	var maxes []struct {
		TenantID string
		Seq      int64
	}
	err = db.Model(&auditRow{}).Where("seq <= ?", last.Int64).Select("tenant_id, MAX(seq) AS seq").
		Group("tenant_id").Scan(&maxes).Error
	if err != nil {
		return nil, fmt.Errorf("sqlstore: plan audit prune: %w", translate(err))
	}
	lastOf := map[string]int64{}
	for _, m := range maxes {
		chain := registry.AuditChain(m.TenantID)
		lastOf[chain] = max(lastOf[chain], m.Seq)
	}
	for chain, seq := range lastOf {
		var r auditRow
		if err := db.Select("tenant_seq", "tenant_hash").Where("seq = ?", seq).Take(&r).Error; err != nil {
			return nil, fmt.Errorf("sqlstore: plan audit prune: %w", translate(err))
		}
		heads[chain] = registry.AuditTenantHead{TenantID: chain, Seq: r.TenantSeq, Hash: r.TenantHash}
	}
	for _, h := range heads {
		h.Signature = nil
		cp.Tenants = append(cp.Tenants, h)
	}
	sort.Slice(cp.Tenants, func(i, j int) bool { return cp.Tenants[i].TenantID < cp.Tenants[j].TenantID })
	return cp, nil
}

// PruneAudit implements registry.AuditStore.
func (s *Store) PruneAudit(ctx context.Context, cp *registry.AuditCheckpoint, audit *registry.AuditEvent) (int64, error) {
	if cp == nil || len(cp.Signature) == 0 {
		return 0, errors.New("sqlstore: prune audit: a signed checkpoint is required")
	}
	tenants, err := json.Marshal(cp.Tenants)
	if err != nil {
		return 0, err
	}
	row := &checkpointRow{Seq: cp.Seq, Hash: cp.Hash, Before: ts(cp.Before), Time: ts(cp.Time), Tenants: string(tenants),
		Signer: cp.Signer, Algorithm: cp.Algorithm, Signature: cp.Signature}
	var deleted int64
	err = s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		now, err := planPrune(tx, cp.Before)
		if err != nil {
			return err
		}
		if now.Seq != cp.Seq || !bytes.Equal(now.Hash, cp.Hash) || !sameHeads(now.Tenants, cp.Tenants) {
			return fmt.Errorf("sqlstore: prune audit: the chain changed since the checkpoint was made: %w", registry.ErrConflict)
		}
		if err := tx.Create(row).Error; err != nil {
			return fmt.Errorf("sqlstore: record audit checkpoint: %w", translate(err))
		}
		res := tx.Where("seq <= ?", cp.Seq).Delete(&auditRow{})
		if res.Error != nil {
			return fmt.Errorf("sqlstore: prune audit: %w", translate(res.Error))
		}
		deleted = res.RowsAffected
		return nil
	})
	if err != nil {
		return 0, err
	}
	cp.ID = row.ID
	return deleted, nil
}

func sameHeads(a, b []registry.AuditTenantHead) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].TenantID != b[i].TenantID || a[i].Seq != b[i].Seq || !bytes.Equal(a[i].Hash, b[i].Hash) {
			return false
		}
	}
	return true
}

// migrateAuditTenants backfills the tenant chain of events written before
// it existed (no tenant hash), in Seq order, continuing each tenant's chain
// from its stored head, and writes the heads — one transaction holding the
// global head, so writers (other replicas) wait for it. Each old event's
// tenant hash covers the same content its global hash does, so an upgraded
// registry verifies on both chains.
func (s *Store) migrateAuditTenants(ctx context.Context) error {
	db := s.w.WithContext(ctx)
	var n int64
	if err := db.Model(&auditRow{}).Where("tenant_hash IS NULL").Count(&n).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate: count audit events without a tenant chain: %w", translate(err))
	}
	if n == 0 {
		return nil
	}
	err := db.Transaction(func(tx *gorm.DB) error {
		if s.driver == DriverPostgres {
			if err := tx.Exec(sqlReadHeadLocked).Error; err != nil {
				return err
			}
		}
		var rows []auditTenantHeadRow
		if err := tx.Find(&rows).Error; err != nil {
			return err
		}
		heads := map[string]*auditTenantHeadRow{}
		for i := range rows {
			heads[rows[i].TenantID] = &rows[i]
		}
		var after int64
		for {
			var evs []auditRow
			if err := tx.Where("seq > ? AND tenant_hash IS NULL", after).Order("seq").Limit(verifyChunk).Find(&evs).Error; err != nil {
				return err
			}
			if len(evs) == 0 {
				break
			}
			for i := range evs {
				r := &evs[i]
				chain := registry.AuditChain(r.TenantID)
				h := heads[chain]
				if h == nil {
					h = &auditTenantHeadRow{TenantID: chain, Hash: make([]byte, sha256.Size)}
					heads[chain] = h
				}
				r.TenantSeq, r.TenantPrevHash = h.Seq+1, h.Hash
				r.TenantHash = registry.AuditTenantHash(h.Hash, r.domain())
				err := tx.Model(&auditRow{}).Where("seq = ?", r.Seq).Updates(map[string]any{
					"tenant_seq": r.TenantSeq, "tenant_prev_hash": r.TenantPrevHash, "tenant_hash": r.TenantHash,
				}).Error
				if err != nil {
					return err
				}
				h.Seq, h.Hash = r.TenantSeq, r.TenantHash
				after = r.Seq
			}
		}
		for _, h := range heads {
			err := tx.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "tenant_id"}},
				DoUpdates: clause.AssignmentColumns([]string{"seq", "hash"})}).Create(h).Error
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: backfill audit tenant chains: %w", translate(err))
	}
	return nil
}
