package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"devpki/pkg/registry"
)

// Store faults.
//
// A write that fails because the database cannot commit at all — a
// read-only or full disk, an I/O error, a lost PostgreSQL connection — is
// answered with an error wrapping registry.ErrUnavailable; constraint
// violations and logic errors are left as they are. The committer's
// transaction is rolled back as a whole, so such a failure leaves nothing
// half-written, and the writer connection and its prepared statements stay
// usable: the store recovers by itself once the disk or the server does.

// ReadyProbeInterval is the least time between two probe writes made by
// Ready while the store is unavailable.
const ReadyProbeInterval = time.Second

// isUnavailable reports whether err says the database cannot commit right
// now, as opposed to refusing this particular write.
func isUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, registry.ErrUnavailable) {
		return true
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrReadonly, sqlite3.ErrFull, sqlite3.ErrIoErr, sqlite3.ErrCantOpen,
			sqlite3.ErrPerm, sqlite3.ErrBusy:
			// ErrBusy reaches us only after _busy_timeout has passed.
			return true
		}
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pgUnavailable(pe.Code)
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	// A connection PostgreSQL closed (a restart, a failover, an idle
	// timeout), a statement that never reached the server, or a network
	// timeout: the next connection may well succeed.
	if errors.Is(err, pgconn.ErrConnClosed) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// pgUnavailable reports whether a PostgreSQL SQLSTATE means the server
// cannot commit now: connection exceptions (class 08), shutdown and
// recovery (57P01-57P03), insufficient resources (class 53, disk full among
// them) and a read-only transaction (25006, a standby after failover).
func pgUnavailable(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "53"):
		return true
	}
	switch code {
	case "57P01", "57P02", "57P03", "25006":
		return true
	}
	return false
}

// unavailable wraps err in registry.ErrUnavailable when the database
// cannot commit; other errors are returned unchanged.
func unavailable(err error) error {
	if err == nil || errors.Is(err, registry.ErrUnavailable) || !isUnavailable(err) {
		return err
	}
	return fmt.Errorf("%w: %w", registry.ErrUnavailable, err)
}

// readiness is what Ready knows: whether the last transaction failed for
// want of a writable store, and when an unavailability was last seen.
type readiness struct {
	mu      sync.Mutex // guards down, lastErr and lastAt; never held across a write
	down    bool       // the last transaction failed with an unavailability
	lastErr error
	lastAt  time.Time

	probing sync.Mutex // one probe at a time
}

// settle records a transaction's outcome: nil (committed) makes the store
// ready, an unavailability makes it unready; other errors change nothing.
// The committer calls it for every transaction.
func (s *Store) settle(err error) {
	if err != nil && !isUnavailable(err) {
		return
	}
	r := &s.ready
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = err != nil
	if err != nil {
		r.lastErr, r.lastAt = err, time.Now()
	}
}

// state returns whether the store is down and, when it is, the last
// unavailability if it is recent enough to answer without a probe.
func (r *readiness) state() (down bool, recent error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down && time.Since(r.lastAt) < ReadyProbeInterval {
		recent = unavailable(r.lastErr)
	}
	return r.down, recent
}

// Ready reports whether the store can commit. It is nil while commits
// succeed. After a commit failed with registry.ErrUnavailable it returns an
// error wrapping registry.ErrUnavailable until a write succeeds again; to
// find out, it makes a one-row write of its own (the heartbeat table) when
// the last failure is more than ReadyProbeInterval old, so a readiness
// endpoint polled often stays cheap. A probe is tiny: a database that still
// has room for it but not for a larger write is reported ready until that
// larger write fails again, and one whose disk fills while nothing is
// written is reported ready until its next write fails.
func (s *Store) Ready(ctx context.Context) error {
	down, recent := s.ready.state()
	if !down {
		return nil
	}
	if recent != nil {
		return recent
	}
	s.ready.probing.Lock()
	defer s.ready.probing.Unlock()
	// Another caller may have probed while this one waited.
	if down, recent = s.ready.state(); !down {
		return nil
	} else if recent != nil {
		return recent
	}
	err := s.heartbeat(ctx)
	if err != nil && !errors.Is(err, registry.ErrUnavailable) {
		err = fmt.Errorf("%w: readiness probe: %w", registry.ErrUnavailable, err)
	}
	return err
}

// heartbeatRow is the single row (ID 1) that Ready's probe updates.
type heartbeatRow struct {
	ID    int   `gorm:"primaryKey;autoIncrement:false"`
	Beats int64 `gorm:"not null"`
}

func (heartbeatRow) TableName() string { return "heartbeat" }

func migrateHeartbeat(db *gorm.DB) error {
	if err := db.AutoMigrate(&legacyHeartbeatRow{}); err != nil {
		return fmt.Errorf("sqlstore: migrate heartbeat: %w", err)
	}
	if err := db.Clauses(clause.OnConflict{DoNothing: true}).Create(&heartbeatRow{ID: 1}).Error; err != nil {
		return fmt.Errorf("sqlstore: create heartbeat: %w", translate(err))
	}
	return nil
}

// heartbeat is a tiny real write through the committer.
func (s *Store) heartbeat(ctx context.Context) error {
	return s.write(ctx, func(_ *gorm.DB, b *batch) error {
		if _, err := b.exec("UPDATE heartbeat SET beats = beats + 1 WHERE id = 1"); err != nil {
			return fmt.Errorf("sqlstore: heartbeat: %w", err)
		}
		return nil
	})
}
