package sqlstore

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"
	"gorm.io/gorm"

	"devpki/pkg/registry"
)

func TestUnavailableTranslation(t *testing.T) {
	sqliteErr := func(code sqlite3.ErrNo, ext sqlite3.ErrNoExtended) error {
		return fmt.Errorf("sqlstore: commit: %w", sqlite3.Error{Code: code, ExtendedCode: ext})
	}
	pgErr := func(code string) error { return fmt.Errorf("sqlstore: insert: %w", &pgconn.PgError{Code: code}) }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"sqlite readonly", sqliteErr(sqlite3.ErrReadonly, sqlite3.ErrReadonlyDbMoved), true},
		{"sqlite full", sqliteErr(sqlite3.ErrFull, 0), true},
		{"sqlite ioerr write", sqliteErr(sqlite3.ErrIoErr, sqlite3.ErrIoErrWrite), true},
		{"sqlite ioerr fsync", sqliteErr(sqlite3.ErrIoErr, sqlite3.ErrIoErrFsync), true},
		{"sqlite cantopen", sqliteErr(sqlite3.ErrCantOpen, 0), true},
		{"sqlite perm", sqliteErr(sqlite3.ErrPerm, 0), true},
		{"sqlite busy after timeout", sqliteErr(sqlite3.ErrBusy, 0), true},
		{"sqlite unique", sqliteErr(sqlite3.ErrConstraint, sqlite3.ErrConstraintUnique), false},
		{"sqlite foreign key", sqliteErr(sqlite3.ErrConstraint, sqlite3.ErrConstraintForeignKey), false},
		{"sqlite syntax", sqliteErr(sqlite3.ErrError, 0), false},
		{"pg connection failure", pgErr("08006"), true},
		{"pg admin shutdown", pgErr("57P01"), true},
		{"pg crash shutdown", pgErr("57P02"), true},
		{"pg cannot connect now", pgErr("57P03"), true},
		{"pg disk full", pgErr("53100"), true},
		{"pg out of memory", pgErr("53200"), true},
		{"pg read-only transaction", pgErr("25006"), true},
		{"pg unique", pgErr("23505"), false},
		{"pg serialization", pgErr("40001"), false},
		{"pg syntax", pgErr("42601"), false},
		{"pg conn closed", fmt.Errorf("x: %w", pgconn.ErrConnClosed), true},
		{"pg connect error", &pgconn.ConnectError{}, true},
		{"bad conn", fmt.Errorf("x: %w", driver.ErrBadConn), true},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, true},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"duplicate key", fmt.Errorf("%w: %w", registry.ErrAlreadyExists, gorm.ErrDuplicatedKey), false},
		{"not found", registry.ErrNotFound, false},
		{"logic", errors.New("sqlstore: create token: empty id or hash"), false},
		{"already unavailable", fmt.Errorf("%w: x", registry.ErrUnavailable), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := unavailable(tc.err)
			if is := errors.Is(got, registry.ErrUnavailable); is != tc.want {
				t.Fatalf("unavailable(%v) = %v; Is(ErrUnavailable) = %v, want %v", tc.err, got, is, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("unavailable(%v) = %v no longer wraps the cause", tc.err, got)
			}
			if tc.want && errors.Is(translate(tc.err), registry.ErrUnavailable) != tc.want {
				t.Errorf("translate(%v) does not say unavailable", tc.err)
			}
		})
	}
}

// fullDatabase caps the SQLite file at its current size (PRAGMA
// max_page_count on the writer connection): any write that needs a new page
// fails with SQLITE_FULL. lift undoes it.
func fullDatabase(t *testing.T, s *Store) (lift func()) {
	t.Helper()
	var pages int64
	if err := s.w.Raw("PRAGMA page_count").Scan(&pages).Error; err != nil {
		t.Fatal(err)
	}
	if err := s.w.Exec(fmt.Sprintf("PRAGMA max_page_count = %d", pages)).Error; err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := s.w.Exec("PRAGMA max_page_count = 1073741823").Error; err != nil {
			t.Fatal(err)
		}
	}
}

// bigEnrollment needs new pages: its certificate DER is larger than the
// free space of any page.
func bigEnrollment(serial string, tok []byte) *registry.Enrollment {
	e := enrollment(serial, tok)
	e.Certificate.DER = bytes.Repeat([]byte{0x30}, 64<<10)
	return e
}

// checkNothingWritten: the failed enrollment left no device, no certificate,
// no audit event and an unspent token.
func checkNothingWritten(t *testing.T, s *Store, e *registry.Enrollment, auditBefore int) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.GetDevice(ctx, e.Device.ID); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("device of a failed write: %v, want ErrNotFound", err)
	}
	if _, err := s.GetCertificate(ctx, e.Certificate.Serial); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("certificate of a failed write: %v, want ErrNotFound", err)
	}
	if tok, err := s.GetToken(ctx, e.TokenHash); err != nil || tok.UsesLeft != 1 {
		t.Errorf("token after a failed write: %+v, %v; want 1 use left", tok, err)
	}
	if evs, err := s.ListAudit(ctx, 0, 1000); err != nil || len(evs) != auditBefore {
		t.Errorf("audit events after a failed write: %d, %v; want %d", len(evs), err, auditBefore)
	}
}

func integrityOK(t *testing.T, s *Store) {
	t.Helper()
	var res string
	if err := s.r.Raw("PRAGMA integrity_check").Scan(&res).Error; err != nil || res != "ok" {
		t.Fatalf("integrity_check = %q, %v", res, err)
	}
	if err := s.VerifyAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestFullDatabaseUnavailable: a write that cannot get disk space is
// ErrUnavailable, writes nothing, makes the store unready, and the store
// recovers by itself once space is back.
func TestFullDatabaseUnavailable(t *testing.T) {
	s := newSQLite(t)
	ctx := context.Background()
	tok := mustToken(t, s, "tok-full", 1)
	if err := s.AppendAudit(ctx, &registry.AuditEvent{Actor: "system", Action: "seed"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready before the fault: %v", err)
	}

	lift := fullDatabase(t, s)
	e := bigEnrollment("SN-FULL", tok)
	if err := s.Enroll(ctx, e); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Enroll on a full database = %v, want ErrUnavailable", err)
	}
	checkNothingWritten(t, s, e, 1)
	if err := s.Ready(ctx); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Ready after a failed commit = %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping (liveness) on a full database: %v", err)
	}

	lift()
	// Within ReadyProbeInterval of the failure Ready answers without a probe.
	if err := s.Ready(ctx); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Ready right after a failure = %v, want the last ErrUnavailable", err)
	}
	forgetLastFailure(s)
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready once the disk has room: %v", err)
	}
	// Nothing stayed poisoned: the same enrollment commits.
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatalf("Enroll after recovery: %v", err)
	}
	if tok, err := s.GetToken(ctx, tok); err != nil || tok.UsesLeft != 0 {
		t.Errorf("token after the enrollment: %+v, %v; want spent", tok, err)
	}
	integrityOK(t, s)
}

// TestFullDatabaseFailsWholeBatch: a batch in which one write cannot get
// space is abandoned as a whole; every write of it is ErrUnavailable and
// none is applied. A later write succeeding makes the store ready without
// a probe.
func TestFullDatabaseFailsWholeBatch(t *testing.T) {
	s := newSQLite(t)
	ctx := context.Background()
	tok := mustToken(t, s, "tok-batch-full", 1)
	small := mustToken(t, s, "tok-batch-small", 1)
	lift := fullDatabase(t, s)

	release := blockCommitter(t, s, nil)
	big := bigEnrollment("SN-BIG", tok)
	little := enrollment("SN-LITTLE", small)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, fn := range []func() error{
		func() error { return s.Enroll(ctx, little) },
		func() error { return s.Enroll(ctx, big) },
		func() error { return s.AppendAudit(ctx, &registry.AuditEvent{Actor: "system", Action: "bystander"}) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn() }()
	}
	waitQueued(t, s, 3)
	release()
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, registry.ErrUnavailable) {
			t.Errorf("write %d of the batch: %v, want ErrUnavailable", i, err)
		}
	}
	checkNothingWritten(t, s, big, 0)
	checkNothingWritten(t, s, little, 0)
	if err := s.Ready(ctx); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Ready = %v, want ErrUnavailable", err)
	}

	lift()
	if err := s.Enroll(ctx, little); err != nil {
		t.Fatalf("Enroll after recovery: %v", err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready after a committed write: %v", err)
	}
	integrityOK(t, s)
}

// TestConstraintIsNotUnavailable: a refused write leaves the store ready.
func TestConstraintIsNotUnavailable(t *testing.T) {
	s := newSQLite(t)
	ctx := context.Background()
	mustToken(t, s, "tok-dup", 1)
	sum := []byte("same-hash-0123456789012345678901")
	err := s.CreateToken(ctx, &registry.Token{ID: "tok-dup", Hash: sum, TenantID: registry.DefaultTenant, UsesLeft: 1}, nil)
	if !errors.Is(err, registry.ErrAlreadyExists) || errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("duplicate token = %v, want ErrAlreadyExists only", err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready after a refused write: %v", err)
	}
}

// TestFullFilesystem runs the store on a small tmpfs and fills it: the real
// disk-full fault. It needs root (mount).
func TestFullFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	s := openSQLite(t, filepath.Join(dir, "registry.db"))
	defer s.Close()
	ctx := context.Background()
	tok := mustToken(t, s, "tok-fs", 1)

	filler := filepath.Join(dir, "filler")
	fillDisk(t, filler)
	e := bigEnrollment("SN-FS", tok)
	if err := s.Enroll(ctx, e); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Enroll on a full filesystem = %v, want ErrUnavailable", err)
	}
	checkNothingWritten(t, s, e, 0)
	if err := s.Ready(ctx); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Ready on a full filesystem = %v, want ErrUnavailable", err)
	}
	forgetLastFailure(s)
	if err := s.Ready(ctx); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Ready's probe on a full filesystem = %v, want ErrUnavailable", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	forgetLastFailure(s)
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready once the filesystem has room: %v", err)
	}
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatalf("Enroll after recovery: %v", err)
	}
	integrityOK(t, s)
}

// fillDisk writes path until the filesystem is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return
		}
	}
}

// forgetLastFailure ages the store's last unavailability past
// ReadyProbeInterval, so the next Ready probes.
func forgetLastFailure(s *Store) {
	s.ready.mu.Lock()
	s.ready.lastAt = time.Time{}
	s.ready.mu.Unlock()
}

// TestConnectTimeout: a PostgreSQL DSN without connect_timeout gets one,
// in either form; one that sets it keeps its own.
func TestConnectTimeout(t *testing.T) {
	t.Setenv("PGCONNECT_TIMEOUT", "")
	for in, want := range map[string]string{
		"host=db user=ca dbname=devpki":               "host=db user=ca dbname=devpki connect_timeout=5",
		"host=db connect_timeout=30":                  "host=db connect_timeout=30",
		"postgres://ca@db/devpki?sslmode=require":     "postgres://ca@db/devpki?connect_timeout=5&sslmode=require",
		"postgresql://ca@db/devpki?connect_timeout=1": "postgresql://ca@db/devpki?connect_timeout=1",
	} {
		if got := withConnectTimeout(in); got != want {
			t.Errorf("withConnectTimeout(%q) = %q, want %q", in, got, want)
		}
	}
}
