package sqlstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// verifyChunk is how many audit rows VerifyAudit reads per query.
const verifyChunk = 1000

// loadHead reads the chain head inside the batch's transaction, locking it
// against other writers (other replicas, on PostgreSQL) until it ends.
func (b *batch) loadHead() error {
	q := sqlReadHead
	if b.s.driver == DriverPostgres {
		q = sqlReadHeadLocked
	}
	if err := b.scan(q, nil, &b.headSeq, &b.headHash); err != nil {
		return fmt.Errorf("sqlstore: read audit head: %w", b.s.translateSQL(err))
	}
	return nil
}

func (b *batch) storeHead() error {
	res, err := b.exec(sqlWriteHead, b.headSeq, b.headHash)
	if err != nil {
		return fmt.Errorf("sqlstore: write audit head: %w", b.s.translateSQL(err))
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("sqlstore: write audit head: %w", registry.ErrNotFound)
	}
	return nil
}

// appendAudit chains ev after the batch's head and inserts it. On success it
// fills a copy of ev; the caller copies it back once the batch has committed.
func (b *batch) appendAudit(ev *registry.AuditEvent) (*registry.AuditEvent, error) {
	out := *ev
	if out.Time.IsZero() {
		out.Time = b.s.now()
	}
	out.Time = ts(out.Time)
	out.Seq = b.headSeq + 1
	out.PrevHash = b.headHash
	out.Hash = registry.AuditHash(out.PrevHash, &out)
	_, err := b.exec(sqlInsertAudit,
		out.Seq, out.Time, out.TenantID, out.Actor, out.Action, out.Target, out.Result, out.Detail, out.SourceAddr,
		out.PrevHash, out.Hash)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: append audit event %d: %w", out.Seq, b.s.translateSQL(err))
	}
	b.headSeq, b.headHash = out.Seq, out.Hash
	return &out, nil
}

// copyAudit writes the store-assigned fields back into the caller's event.
func copyAudit(dst, src *registry.AuditEvent) {
	if dst != nil && src != nil {
		dst.Seq, dst.Time, dst.PrevHash, dst.Hash = src.Seq, src.Time, src.PrevHash, src.Hash
	}
}

// writeAudited runs fn in a write transaction and then, in the same
// transaction, appends audit when it is not nil; audit gets the Seq, Time
// and hashes the chain gave it. An error from fn writes nothing.
func (s *Store) writeAudited(ctx context.Context, audit *registry.AuditEvent, fn func(tx *gorm.DB, b *batch) error) error {
	var ev *registry.AuditEvent
	err := s.write(ctx, func(tx *gorm.DB, b *batch) error {
		if err := fn(tx, b); err != nil {
			return err
		}
		if audit == nil {
			return nil
		}
		var err error
		ev, err = b.appendAudit(audit)
		return err
	})
	if err != nil {
		return err
	}
	copyAudit(audit, ev)
	return nil
}

// AppendAudit implements registry.Store.
func (s *Store) AppendAudit(ctx context.Context, ev *registry.AuditEvent) error {
	if ev == nil {
		return fmt.Errorf("sqlstore: append audit: nil event")
	}
	var out *registry.AuditEvent
	err := s.write(ctx, func(_ *gorm.DB, b *batch) (err error) {
		out, err = b.appendAudit(ev)
		return err
	})
	if err != nil {
		return err
	}
	copyAudit(ev, out)
	return nil
}

// ListAudit implements registry.Store. A limit of 0 or less means 100.
func (s *Store) ListAudit(ctx context.Context, afterSeq int64, limit int) ([]*registry.AuditEvent, error) {
	if limit <= 0 {
		limit = 100
	}
	var rows []auditRow
	err := s.r.WithContext(ctx).Where("seq > ?", afterSeq).Order("seq").Limit(limit).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list audit: %w", translate(err))
	}
	out := make([]*registry.AuditEvent, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// VerifyAudit implements registry.Store. It reads the head first, then walks
// the events up to it in chunks of verifyChunk rows, so events appended
// while it runs are not mistaken for damage.
func (s *Store) VerifyAudit(ctx context.Context) error {
	var head auditHeadRow
	if err := s.r.WithContext(ctx).Where("id = ?", 1).Take(&head).Error; err != nil {
		return fmt.Errorf("%w: read head: %w", registry.ErrAuditChain, translate(err))
	}
	prev := make([]byte, sha256.Size)
	var last int64
	for last < head.Seq {
		var rows []auditRow
		err := s.r.WithContext(ctx).Where("seq > ? AND seq <= ?", last, head.Seq).
			Order("seq").Limit(verifyChunk).Find(&rows).Error
		if err != nil {
			return fmt.Errorf("sqlstore: verify audit: %w", translate(err))
		}
		if len(rows) == 0 {
			return fmt.Errorf("%w: event %d: missing (head is %d)", registry.ErrAuditChain, last+1, head.Seq)
		}
		for i := range rows {
			r := &rows[i]
			if r.Seq != last+1 {
				return fmt.Errorf("%w: event %d: missing (next stored is %d)", registry.ErrAuditChain, last+1, r.Seq)
			}
			if !bytes.Equal(r.PrevHash, prev) {
				return fmt.Errorf("%w: event %d: previous hash does not match event %d", registry.ErrAuditChain, r.Seq, last)
			}
			if !bytes.Equal(registry.AuditHash(prev, r.domain()), r.Hash) {
				return fmt.Errorf("%w: event %d: hash does not match its content", registry.ErrAuditChain, r.Seq)
			}
			prev, last = r.Hash, r.Seq
		}
	}
	if head.Seq > 0 && !bytes.Equal(prev, head.Hash) {
		return fmt.Errorf("%w: event %d: head hash does not match", registry.ErrAuditChain, head.Seq)
	}
	if head.Seq == 0 && !bytes.Equal(head.Hash, prev) {
		return fmt.Errorf("%w: event 0: head hash is not the zero hash", registry.ErrAuditChain)
	}
	return nil
}
