package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
)

// Group commit.
//
// Every write is an op: a function run inside a transaction. One committer
// goroutine takes whatever ops are queued (up to MaxBatch), opens a single
// transaction, runs each op inside its own SAVEPOINT, rolls back to the
// savepoint only the ops that fail, commits once, and only then answers the
// callers. A failed commit answers every op of the batch with the error.
//
// Nothing outside the transaction is needed for correctness: the audit chain
// head is read from (and locked in) the database at the start of each batch.

// op states, moved by compare-and-swap so that a caller giving up and the
// committer picking the op up cannot both win.
const (
	opQueued    int32 = iota
	opTaken           // the committer owns it; the caller must wait for the answer
	opAbandoned       // the caller gave up before the committer took it; never run
)

type op struct {
	fn    func(tx *gorm.DB, b *batch) error // tx is gorm over b.tx, for the rare writes
	state atomic.Int32
	done  chan error // buffered(1), written once
}

// batch is the per-transaction state shared by the ops of one batch.
type batch struct {
	s        *Store
	ctx      context.Context
	tx       *sql.Tx // the batch's transaction; hot statements run on it directly
	headSeq  int64
	headHash []byte
	// tenantHeads are the tenant chain heads this batch read or moved,
	// written once each before it commits (storeTenantHeads); tenantUndo
	// holds their values before the current op, restored if it fails.
	tenantHeads map[string]*tenantHead
	tenantUndo  map[string]*tenantHead
}

// tenantHead is one tenant chain's head in a batch; dirty when an event of
// the batch moved it.
type tenantHead struct {
	seq   int64
	hash  []byte
	dirty bool
}

// ErrClosed is returned by writes made after Close.
var ErrClosed = errors.New("sqlstore: store closed")

// write queues fn and waits until the transaction that ran it has committed
// or rolled back. If ctx ends while the op is still queued, the op is dropped
// and ctx's error returned; once the committer has taken it, write waits for
// the real outcome so the caller never gets an error for a committed write.
// A database that cannot commit is an error wrapping registry.ErrUnavailable.
func (s *Store) write(ctx context.Context, fn func(tx *gorm.DB, b *batch) error) error {
	o := &op{fn: fn, done: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.ops <- o:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return unavailable(err)
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opAbandoned) {
			return ctx.Err()
		}
		return unavailable(<-o.done)
	}
}

// commitLoop is the committer goroutine. It exits after Close, once every
// queued op has been answered.
func (s *Store) commitLoop() {
	defer close(s.loopDone)
	ops := make([]*op, 0, s.maxBatch)
	lastBatch := 0
	for {
		var first *op
		select {
		case first = <-s.ops:
		case <-s.quit:
			// Close holds the write lock when quit is closed, so no more sends
			// can start: drain what is buffered and stop.
			for {
				select {
				case o := <-s.ops:
					ops = append(ops[:0], o)
					s.runBatch(s.fill(ops))
				default:
					return
				}
			}
		}
		ops = append(ops[:0], first)
		ops = s.fill(ops)
		// Under load (the last batch carried several writes) wait up to
		// s.linger for more: every transaction has a fixed cost (its fsync
		// above all), so fuller batches cost less CPU per write. A store
		// whose last transaction held one write never waits — the idea of
		// PostgreSQL's commit_delay with commit_siblings.
		if s.linger > 0 && lastBatch >= lingerSiblings && len(ops) < s.maxBatch {
			ops = s.lingerFill(ops)
		}
		lastBatch = len(ops)
		s.runBatch(ops)
	}
}

// lingerSiblings is the batch size from which the committer lingers.
const lingerSiblings = 2

// lingerFill adds ops that arrive within s.linger, up to maxBatch.
func (s *Store) lingerFill(ops []*op) []*op {
	t := time.NewTimer(s.linger)
	defer t.Stop()
	for len(ops) < s.maxBatch {
		select {
		case o := <-s.ops:
			ops = append(ops, o)
		case <-t.C:
			return ops
		}
	}
	return ops
}

// fill appends whatever is queued, up to maxBatch ops.
func (s *Store) fill(ops []*op) []*op {
	for len(ops) < s.maxBatch {
		select {
		case o := <-s.ops:
			ops = append(ops, o)
		default:
			return ops
		}
	}
	return ops
}

// runBatch runs ops in one transaction and answers each of them.
func (s *Store) runBatch(queued []*op) {
	ops := queued[:0:0]
	for _, o := range queued {
		if o.state.CompareAndSwap(opQueued, opTaken) {
			ops = append(ops, o)
		}
	}
	if len(ops) == 0 {
		return
	}
	s.batches.Add(1)
	s.batchedOps.Add(int64(len(ops)))

	errs := make([]error, len(ops))
	fail := func(err error) {
		s.settle(err)
		for _, o := range ops {
			o.done <- err
		}
	}

	// The transaction is not tied to any caller's context: once taken, an op
	// is applied or not as a whole, whatever its caller does meanwhile.
	ctx := context.Background()
	sqlTx, err := s.wsql.BeginTx(ctx, nil)
	if err != nil {
		fail(fmt.Errorf("sqlstore: begin: %w", err))
		return
	}
	tx := s.w.Session(&gorm.Session{Context: ctx, NewDB: true})
	tx.Statement.ConnPool = sqlTx
	b := &batch{s: s, ctx: ctx, tx: sqlTx}
	if err := b.loadHead(); err != nil {
		sqlTx.Rollback()
		fail(err)
		return
	}
	startSeq, startHash := b.headSeq, b.headHash
	for i, o := range ops {
		// One savepoint name, released after each op: SQLite keeps no deep
		// savepoint stack and the statements stay prepared.
		if _, err := b.exec("SAVEPOINT op"); err != nil {
			sqlTx.Rollback()
			fail(fmt.Errorf("sqlstore: savepoint: %w", err))
			return
		}
		seq, hash := b.headSeq, b.headHash
		clear(b.tenantUndo)
		err := o.fn(tx, b)
		if err == nil {
			if _, err = b.exec("RELEASE SAVEPOINT op"); err == nil {
				continue
			}
			err = fmt.Errorf("sqlstore: release savepoint: %w", err)
		}
		errs[i] = err
		b.headSeq, b.headHash = seq, hash
		b.undoTenantHeads()
		if isUnavailable(err) {
			// The database cannot write (SQLite may even have rolled the
			// transaction back by itself): the batch cannot commit.
			sqlTx.Rollback()
			fail(err)
			return
		}
		if _, rerr := b.exec("ROLLBACK TO SAVEPOINT op"); rerr != nil {
			// The transaction is in an unknown state: give up on all of it.
			sqlTx.Rollback()
			err := fmt.Errorf("sqlstore: rollback to savepoint after %w: %w", err, rerr)
			s.settle(err)
			for j, o := range ops {
				if errs[j] != nil && j < i {
					o.done <- errs[j]
				} else {
					o.done <- err
				}
			}
			return
		}
		if _, rerr := b.exec("RELEASE SAVEPOINT op"); rerr != nil {
			sqlTx.Rollback()
			fail(fmt.Errorf("sqlstore: release savepoint: %w", rerr))
			return
		}
	}
	if b.headSeq != startSeq || string(b.headHash) != string(startHash) {
		if err := b.storeHead(); err != nil {
			sqlTx.Rollback()
			fail(err)
			return
		}
	}
	if err := b.storeTenantHeads(); err != nil {
		sqlTx.Rollback()
		fail(err)
		return
	}
	if err := sqlTx.Commit(); err != nil {
		err = fmt.Errorf("sqlstore: commit: %w", translate(err))
		s.settle(err)
		for i, o := range ops {
			if errs[i] == nil {
				errs[i] = err
			}
			o.done <- errs[i]
		}
		return
	}
	s.settle(nil)
	for i, o := range ops {
		o.done <- errs[i]
	}
}

// BatchStats reports how many group-commit transactions ran and how many ops
// they carried; ops/batches is the mean batch size.
func (s *Store) BatchStats() (batches, ops int64) {
	return s.batches.Load(), s.batchedOps.Load()
}
