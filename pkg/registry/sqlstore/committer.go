package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"devpki/pkg/registry"
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
	tx       *sql.Tx              // the batch's transaction; hot statements run on it directly
	txStmts  map[string]*sql.Stmt // hot statements bound to tx (stmt)
	headSeq  int64
	headHash []byte
	// tenantHeads are the tenant chain heads this batch read or moved,
	// written once each before it commits (storeTenantHeads); tenantUndo
	// holds their values before the current op, restored if it fails.
	tenantHeads map[string]*tenantHead
	tenantUndo  map[string]*tenantHead
	// pendingAudit are the batch's audit event rows not inserted yet
	// (PostgreSQL: appendAudit, flushAudit).
	pendingAudit [][]any
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
// A ctx marked by registry.WithAdminLane queues fn in the admin lane, which
// the committer serves first.
func (s *Store) write(ctx context.Context, fn func(tx *gorm.DB, b *batch) error) error {
	o := &op{fn: fn, done: make(chan error, 1)}
	q := s.ops
	if registry.InAdminLane(ctx) {
		q = s.prio
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case q <- o:
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
//
// The admin lane (s.prio) goes first: whenever it holds ops they run in a
// transaction of their own before the next batch of device writes is taken,
// so an admin's write (an admin read's audit event) waits for at most the
// one batch already running, never for the device writes queued ahead of
// it, however full a storm keeps that queue. Device writes cannot fill the
// admin lane; the admin API is its only user.
func (s *Store) commitLoop() {
	defer close(s.loopDone)
	ops := make([]*op, 0, s.maxBatch)
	lastBatch := 0
	var held *op // an admin op that ended a linger, to run next
	for {
		if held == nil {
			select {
			case held = <-s.prio:
			default:
			}
		}
		if held != nil {
			s.runBatchOnce(fillFrom(s.prio, append(ops[:0], held), s.maxBatch))
			held = nil
			continue
		}
		var first *op
		select {
		case held = <-s.prio:
			continue
		case first = <-s.ops:
		case <-s.quit:
			// Close holds the write lock when quit is closed, so no more sends
			// can start: drain what is buffered and stop.
			for _, q := range []chan *op{s.prio, s.ops} {
				for {
					select {
					case o := <-q:
						s.runBatchOnce(fillFrom(q, append(ops[:0], o), s.maxBatch))
						continue
					default:
					}
					break
				}
			}
			return
		}
		ops = append(ops[:0], first)
		ops = fillFrom(s.ops, ops, s.maxBatch)
		// Under load (the last batch carried several writes) wait up to
		// s.linger for more: every transaction has a fixed cost (its fsync
		// above all), so fuller batches cost less CPU per write. A store
		// whose last transaction held one write never waits — the idea of
		// PostgreSQL's commit_delay with commit_siblings. An admin op
		// arriving meanwhile ends the wait.
		if s.linger > 0 && lastBatch >= lingerSiblings && len(ops) < s.lingerBatch() {
			ops, held = s.lingerFill(ops)
		}
		if held != nil { // out of the lane already: cutShort would not see it
			s.runBatchOnce(fillFrom(s.prio, []*op{held}, s.maxBatch))
			held = nil
		}
		lastBatch = len(ops)
		s.runBatch(ops)
	}
}

// lingerSiblings is the batch size from which the committer lingers.
const lingerSiblings = 2

// lingerFull is, with Options.Writers, the batch a lingering committer
// waits for at most: a transaction of 16 writes shares its commit's fixed
// cost (the fsync, the pages every write of it touches) well enough, and a
// committer that waited for every writer in progress would hold them all
// while it commits — nothing would run past the door meanwhile (on a
// registry of a million devices, where a commit takes longer, enrollments
// fell from ~870/s to ~720/s that way). A batch that arrived while the
// last transaction committed and holds this many already does not wait.
const lingerFull = 16

// lingerBatch is the batch size at which a lingering committer stops
// waiting: lingerFull with Options.Writers, maxBatch without.
func (s *Store) lingerBatch() int {
	if s.writers != nil {
		return min(lingerFull, s.maxBatch)
	}
	return s.maxBatch
}

// lingerFill adds ops that arrive within s.linger, up to lingerBatch; an
// admin op arriving ends the wait and is returned, to run next. With
// s.writers, the wait also ends once the batch holds as many ops as there
// are writers in progress (re-counted every lingerRecheck).
func (s *Store) lingerFill(ops []*op) ([]*op, *op) {
	if s.allIn(ops) {
		return ops, nil
	}
	t := time.NewTimer(s.linger)
	defer t.Stop()
	var recheck <-chan time.Time
	if s.writers != nil {
		tk := time.NewTicker(lingerRecheck)
		defer tk.Stop()
		recheck = tk.C
	}
	for len(ops) < s.lingerBatch() {
		select {
		case o := <-s.ops:
			ops = append(ops, o)
			if s.allIn(ops) {
				return ops, nil
			}
		case o := <-s.prio:
			return ops, o
		case <-recheck:
			if s.allIn(ops) {
				return ops, nil
			}
		case <-t.C:
			return ops, nil
		}
	}
	return ops, nil
}

// allIn says whether ops holds a write of every writer in progress
// (Options.Writers), so that lingering is pointless; false without Writers.
func (s *Store) allIn(ops []*op) bool {
	return s.writers != nil && s.writers() <= len(ops)
}

// fillFrom appends whatever q holds, up to max ops.
func fillFrom(q chan *op, ops []*op, max int) []*op {
	for len(ops) < max {
		select {
		case o := <-q:
			ops = append(ops, o)
		default:
			return ops
		}
	}
	return ops
}

// runBatch runs ops, in one transaction unless the admin lane or the time
// budget cuts it short (runTx), and answers each of them.
func (s *Store) runBatch(queued []*op) {
	ops := queued[:0:0]
	for _, o := range queued {
		if o.state.CompareAndSwap(opQueued, opTaken) {
			ops = append(ops, o)
		}
	}
	for len(ops) > 0 {
		ops = ops[s.runTx(ops, true):]
		if len(ops) == 0 {
			return
		}
		// Cut short: the admin lane's ops first, then the rest of the batch
		// (already taken: its callers wait for it) in a new transaction.
		for {
			select {
			case o := <-s.prio:
				s.runBatchOnce(fillFrom(s.prio, []*op{o}, s.maxBatch))
				continue
			default:
			}
			break
		}
	}
}

// runBatchOnce runs the ops it takes in one transaction, never cut short:
// the admin lane's (and the last ones at Close).
func (s *Store) runBatchOnce(queued []*op) {
	ops := queued[:0:0]
	for _, o := range queued {
		if o.state.CompareAndSwap(opQueued, opTaken) {
			ops = append(ops, o)
		}
	}
	if len(ops) > 0 {
		s.runTx(ops, false)
	}
}

// DefaultMaxBatchTime is Options.MaxBatchTime's default.
const DefaultMaxBatchTime = 50 * time.Millisecond

// cutShort says whether a transaction that took the audit head at held
// should commit the ops it ran so far and leave the rest to the next one: an
// admin op is waiting, or it has held the head longer than s.maxBatchTime. Every
// writer waits for that head — this replica's admin lane for its committer,
// every other replica for the lock — so a batch of slow statements (a
// database sharing a busy host) must not hold it for long.
func (s *Store) cutShort(held time.Time) bool {
	return len(s.prio) > 0 || (s.maxBatchTime > 0 && time.Since(held) > s.maxBatchTime)
}

// runTx runs ops in one transaction and answers them. If preemptible, it
// may stop before an op when cutShort says so: it then commits and answers
// the ops it ran and returns their number, leaving the rest unanswered for
// the caller to run. A failure answers every op and returns len(ops).
func (s *Store) runTx(all []*op, preemptible bool) int {
	ops := all
	start := time.Now()
	// Counted when it starts (a cut-short transaction gives back the ops
	// it leaves to the next).
	s.batches.Add(1)
	s.batchedOps.Add(int64(len(all)))
	if s.observer != nil {
		defer func() { s.observer.Committed(len(ops), time.Since(start)) }()
	}

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
		return len(ops)
	}
	tx := s.w.Session(&gorm.Session{Context: ctx, NewDB: true})
	tx.Statement.ConnPool = sqlTx
	b := &batch{s: s, ctx: ctx, tx: sqlTx}
	if err := b.loadHead(); err != nil {
		sqlTx.Rollback()
		fail(err)
		return len(ops)
	}
	startSeq, startHash := b.headSeq, b.headHash
	// The budget counts from here: waiting for the head (another replica
	// holding it) is not this transaction's doing, and counting it would
	// shrink every batch to one op exactly when the database is contended.
	held := time.Now()
	// Each op runs in a savepoint, so that a failing op is undone alone —
	// except the op of a one-op transaction, which the transaction itself
	// undoes. The savepoint of an op is released only when the next one is
	// set (one round trip on PostgreSQL: the statement pair, see
	// nextSavepoint) or by COMMIT: one savepoint name, never a deep stack.
	savepoints, pending := len(all) > 1, false
	for i, o := range all {
		if preemptible && i > 0 && s.cutShort(held) {
			ops, errs = all[:i], errs[:i]
			s.batchedOps.Add(-int64(len(all) - i))
			break
		}
		if savepoints {
			if err := b.nextSavepoint(pending); err != nil {
				sqlTx.Rollback()
				fail(fmt.Errorf("sqlstore: savepoint: %w", err))
				return len(ops)
			}
			pending = true
		}
		seq, hash, auditMark := b.headSeq, b.headHash, len(b.pendingAudit)
		clear(b.tenantUndo)
		err := o.fn(tx, b)
		if err == nil {
			continue
		}
		errs[i] = err
		b.headSeq, b.headHash, b.pendingAudit = seq, hash, b.pendingAudit[:auditMark]
		b.undoTenantHeads()
		if isUnavailable(err) {
			// The database cannot write (SQLite may even have rolled the
			// transaction back by itself): the batch cannot commit.
			sqlTx.Rollback()
			fail(err)
			return len(ops)
		}
		if !savepoints {
			// The one op failed: nothing to commit.
			sqlTx.Rollback()
			s.settle(nil)
			o.done <- err
			return len(ops)
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
			return len(ops)
		}
	}
	if err := b.flushAudit(); err != nil {
		sqlTx.Rollback()
		fail(err)
		return len(ops)
	}
	if b.headSeq != startSeq || string(b.headHash) != string(startHash) {
		if err := b.storeHead(); err != nil {
			sqlTx.Rollback()
			fail(err)
			return len(ops)
		}
	}
	if err := b.storeTenantHeads(); err != nil {
		sqlTx.Rollback()
		fail(err)
		return len(ops)
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
		return len(ops)
	}
	s.settle(nil)
	for i, o := range ops {
		o.done <- errs[i]
	}
	return len(ops)
}

// nextSavepoint sets the savepoint of the next op, first releasing the
// previous op's when pending. On PostgreSQL the pair goes as one simple-
// protocol exchange: one round trip per op instead of two, and the
// committer's round trips are what a batch's time (its hold on the audit
// head) is made of.
func (b *batch) nextSavepoint(pending bool) error {
	if !pending {
		_, err := b.exec("SAVEPOINT op")
		return err
	}
	if b.s.driver == DriverPostgres {
		_, err := b.tx.ExecContext(b.ctx, "RELEASE SAVEPOINT op; SAVEPOINT op")
		return err
	}
	if _, err := b.exec("RELEASE SAVEPOINT op"); err != nil {
		return err
	}
	_, err := b.exec("SAVEPOINT op")
	return err
}

// BatchStats reports how many group-commit transactions ran and how many ops
// they carried; ops/batches is the mean batch size.
func (s *Store) BatchStats() (batches, ops int64) {
	return s.batches.Load(), s.batchedOps.Load()
}
