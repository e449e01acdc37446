package sqlstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"strings"

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
	// The tenant chain: its head is read and written in this transaction,
	// which holds the global head, so no other writer interleaves.
	chain := registry.AuditChain(out.TenantID)
	th, err := b.tenantHead(chain)
	if err != nil {
		return nil, err
	}
	out.TenantSeq, out.TenantPrevHash = th.seq+1, th.hash
	out.TenantHash = registry.AuditTenantHash(out.TenantPrevHash, &out)
	row := []any{out.Seq, out.Time, out.TenantID, out.Actor, out.Action, out.Target, out.Result, out.Detail, out.SourceAddr,
		out.PrevHash, out.Hash, out.TenantSeq, out.TenantPrevHash, out.TenantHash}
	if b.s.driver == DriverPostgres {
		// Inserted with the batch's other events before it commits
		// (flushAudit): one round trip for all of them.
		b.pendingAudit = append(b.pendingAudit, row)
	} else if _, err = b.exec(sqlInsertAudit, row...); err != nil {
		return nil, fmt.Errorf("sqlstore: append audit event %d: %w", out.Seq, b.s.translateSQL(err))
	}
	b.moveTenantHead(chain, th, out.TenantSeq, out.TenantHash)
	b.headSeq, b.headHash = out.Seq, out.Hash
	return &out, nil
}

// auditFlushRows caps the rows of one flushAudit INSERT (14 parameters a
// row, under PostgreSQL's 65,535).
const auditFlushRows = 1000

// flushAudit inserts the batch's pending audit events (PostgreSQL), in seq
// order, as multi-row INSERTs. It runs after the batch's last op, inside
// the transaction, before the heads are stored.
func (b *batch) flushAudit() error {
	for rows := b.pendingAudit; len(rows) > 0; {
		n := min(len(rows), auditFlushRows)
		q, _, _ := strings.Cut(sqlInsertAudit, "VALUES")
		var sb strings.Builder
		sb.WriteString(q)
		sb.WriteString("VALUES ")
		args := make([]any, 0, n*len(rows[0]))
		for i, r := range rows[:n] {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString("(?" + strings.Repeat(", ?", len(r)-1) + ")")
			args = append(args, r...)
		}
		if _, err := b.exec(sb.String(), args...); err != nil {
			return fmt.Errorf("sqlstore: append audit events %v to %v: %w", rows[0][0], rows[n-1][0], b.s.translateSQL(err))
		}
		rows = rows[n:]
	}
	b.pendingAudit = b.pendingAudit[:0]
	return nil
}

// tenantHead is the head of chain in this batch: read from the database
// the first time the batch appends to it (the transaction holds the global
// head, so no other writer moves it meanwhile), then kept.
func (b *batch) tenantHead(chain string) (*tenantHead, error) {
	if th, ok := b.tenantHeads[chain]; ok {
		return th, nil
	}
	th := &tenantHead{hash: make([]byte, sha256.Size)}
	err := b.scan(sqlReadTenantHead, []any{chain}, &th.seq, &th.hash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlstore: read tenant audit head %s: %w", chain, b.s.translateSQL(err))
	}
	if b.tenantHeads == nil {
		b.tenantHeads, b.tenantUndo = map[string]*tenantHead{}, map[string]*tenantHead{}
	}
	b.tenantHeads[chain] = th
	return th, nil
}

// moveTenantHead advances chain's head to seq and hash, remembering its
// value before the current op for undoTenantHeads.
func (b *batch) moveTenantHead(chain string, th *tenantHead, seq int64, hash []byte) {
	if _, ok := b.tenantUndo[chain]; !ok {
		prev := *th
		b.tenantUndo[chain] = &prev
	}
	th.seq, th.hash, th.dirty = seq, hash, true
}

// undoTenantHeads puts back the heads the failed op moved (its savepoint
// was rolled back, its events with it).
func (b *batch) undoTenantHeads() {
	for chain, prev := range b.tenantUndo {
		*b.tenantHeads[chain] = *prev
	}
	clear(b.tenantUndo)
}

// storeTenantHeads writes the heads the batch moved, once each.
func (b *batch) storeTenantHeads() error {
	for chain, th := range b.tenantHeads {
		if !th.dirty {
			continue
		}
		if _, err := b.exec(sqlWriteTenantHead, chain, th.seq, th.hash); err != nil {
			return fmt.Errorf("sqlstore: write tenant audit head %s: %w", chain, b.s.translateSQL(err))
		}
	}
	return nil
}

// copyAudit writes the store-assigned fields back into the caller's event.
func copyAudit(dst, src *registry.AuditEvent) {
	if dst != nil && src != nil {
		dst.Seq, dst.Time, dst.PrevHash, dst.Hash = src.Seq, src.Time, src.PrevHash, src.Hash
		dst.TenantSeq, dst.TenantPrevHash, dst.TenantHash = src.TenantSeq, src.TenantPrevHash, src.TenantHash
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
	err := s.rdBounded(ctx).Where("seq > ?", afterSeq).Order("seq").Limit(limit).Find(&rows).Error
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
// while it runs are not mistaken for damage. The walk starts at the newest
// prune checkpoint when there is one (its signature is the caller's to
// check: the store has no CA), and checks every tenant chain as well.
func (s *Store) VerifyAudit(ctx context.Context) error {
	var head auditHeadRow
	if err := s.rd(ctx).Where("id = ?", 1).Take(&head).Error; err != nil {
		return fmt.Errorf("%w: read head: %w", registry.ErrAuditChain, translate(err))
	}
	prev := make([]byte, sha256.Size)
	var last int64
	tenants := map[string]*registry.AuditTenantHead{}
	cp, err := s.GetAuditCheckpoint(ctx)
	switch {
	case err == nil:
		prev, last = cp.Hash, cp.Seq
		for i := range cp.Tenants {
			h := cp.Tenants[i]
			tenants[h.TenantID] = &h
		}
	case !errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("sqlstore: verify audit: %w", err)
	}
	for last < head.Seq {
		var rows []auditRow
		err := s.rd(ctx).Where("seq > ? AND seq <= ?", last, head.Seq).
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
			ev := r.domain()
			if !bytes.Equal(registry.AuditHash(prev, ev), r.Hash) {
				return fmt.Errorf("%w: event %d: hash does not match its content", registry.ErrAuditChain, r.Seq)
			}
			chain := registry.AuditChain(r.TenantID)
			th := tenants[chain]
			if th == nil {
				th = &registry.AuditTenantHead{TenantID: chain, Hash: make([]byte, sha256.Size)}
				tenants[chain] = th
			}
			if r.TenantSeq != th.Seq+1 || !bytes.Equal(r.TenantPrevHash, th.Hash) {
				return fmt.Errorf("%w: event %d: tenant %s chain: tenant seq %d does not follow %d", registry.ErrAuditChain,
					r.Seq, chain, r.TenantSeq, th.Seq)
			}
			if !bytes.Equal(registry.AuditTenantHash(th.Hash, ev), r.TenantHash) {
				return fmt.Errorf("%w: event %d: tenant %s chain: hash does not match its content", registry.ErrAuditChain, r.Seq, chain)
			}
			th.Seq, th.Hash = r.TenantSeq, r.TenantHash
			prev, last = r.Hash, r.Seq
		}
	}
	if head.Seq > 0 && !bytes.Equal(prev, head.Hash) {
		return fmt.Errorf("%w: event %d: head hash does not match", registry.ErrAuditChain, head.Seq)
	}
	if head.Seq == 0 && !bytes.Equal(head.Hash, prev) {
		return fmt.Errorf("%w: event 0: head hash is not the zero hash", registry.ErrAuditChain)
	}
	// The stored tenant heads agree with the walk (events appended since
	// the head was read may have moved them on: only behind is wrong).
	var heads []auditTenantHeadRow
	if err := s.rd(ctx).Find(&heads).Error; err != nil {
		return fmt.Errorf("sqlstore: verify audit: %w", translate(err))
	}
	for _, h := range heads {
		th := tenants[h.TenantID]
		if th != nil && (h.Seq < th.Seq || h.Seq == th.Seq && !bytes.Equal(h.Hash, th.Hash)) {
			return fmt.Errorf("%w: tenant %s chain: head %d does not match event chain at %d", registry.ErrAuditChain,
				h.TenantID, h.Seq, th.Seq)
		}
	}
	return nil
}
