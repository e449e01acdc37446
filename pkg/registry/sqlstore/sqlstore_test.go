package sqlstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"devpki/pkg/registry"
	"devpki/pkg/registry/storetest"
)

func openSQLite(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{DSN: path})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

func newSQLite(t testing.TB) *Store {
	t.Helper()
	s := openSQLite(t, filepath.Join(t.TempDir(), "registry.db"))
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformanceSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registry.Store { return newSQLite(t) })
}

// TestConformanceSQLiteNoBatching runs the suite with group commit off
// (MaxBatch 1): one transaction per write.
func TestConformanceSQLiteNoBatching(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registry.Store {
		s, err := Open(context.Background(), Options{DSN: filepath.Join(t.TempDir(), "r.db"), MaxBatch: 1})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// pgDSN returns the test PostgreSQL DSN or skips.
func pgDSN(t testing.TB) string {
	dsn := os.Getenv("DEVPKI_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("DEVPKI_TEST_POSTGRES_DSN not set")
	}
	return dsn
}

// newPostgres opens a store in a fresh schema of the test database.
// newPostgresPair opens two stores on one fresh PostgreSQL schema, as two
// CA replicas on one database; the second is closed when the test ends.
// It needs a key=value DSN (the schema is appended as search_path).
func newPostgresPair(t testing.TB) (a, b *Store) {
	t.Helper()
	a = newPostgres(t)
	if strings.Contains(pgDSN(t), "://") {
		t.Skip("a replica test needs a key=value DSN")
	}
	var schema string
	if err := a.r.Raw("SELECT current_schema()").Scan(&schema).Error; err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), Options{Driver: DriverPostgres, DSN: pgDSN(t) + " search_path=" + schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

func newPostgres(t testing.TB) *Store {
	t.Helper()
	dsn := pgDSN(t)
	schema := "devpki_test_" + strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(fmt.Sprintf("%x", sha256.Sum256([]byte(t.Name()+time.Now().String())))[:16]))
	admin, err := Open(context.Background(), Options{Driver: DriverPostgres, DSN: dsn})
	if err != nil {
		t.Fatalf("Open(postgres): %v", err)
	}
	if err := admin.w.Exec("CREATE SCHEMA " + schema).Error; err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		admin.w.Exec("DROP SCHEMA " + schema + " CASCADE")
		admin.Close()
	})
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		dsn = u.String()
	} else {
		dsn += " search_path=" + schema
	}
	s, err := Open(context.Background(), Options{Driver: DriverPostgres, DSN: dsn})
	if err != nil {
		t.Fatalf("Open(postgres schema %s): %v", schema, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformancePostgres(t *testing.T) {
	pgDSN(t)
	storetest.Run(t, func(t *testing.T) registry.Store { return newPostgres(t) })
}

// TestPostgresReplicas has two stores (two CA replicas) on one database
// race for one token and append to one audit chain.
func TestPostgresReplicas(t *testing.T) {
	a, b := newPostgresPair(t)
	ctx := context.Background()
	sum := sha256.Sum256([]byte("replica token"))
	if err := a.CreateToken(ctx, &registry.Token{ID: "tok-r", Hash: sum[:], TenantID: registry.DefaultTenant, UsesLeft: 3,
		ExpiresAt: time.Now().Add(time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			err := s.Enroll(ctx, enrollment(fmt.Sprintf("SN-R-%d", i), sum[:]))
			if err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			} else if !errors.Is(err, registry.ErrTokenSpent) {
				t.Errorf("Enroll: %v", err)
			}
			if err := s.AppendAudit(ctx, &registry.AuditEvent{Actor: "system", Action: "replica"}); err != nil {
				t.Errorf("AppendAudit: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 3 {
		t.Errorf("%d enrollments succeeded with a 3-use token across replicas, want 3", ok)
	}
	if err := b.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// enrollment is a minimal valid enrollment for serial in the default tenant.
func enrollment(serial string, tokenHash []byte) *registry.Enrollment {
	id := "dev-" + serial
	sum := sha256.Sum256([]byte(serial + time.Now().String()))
	return &registry.Enrollment{
		TokenHash:   tokenHash,
		Device:      &registry.Device{ID: id, TenantID: registry.DefaultTenant, Serial: serial, Method: "token"},
		Certificate: &registry.Certificate{Serial: fmt.Sprintf("%x", sum[:20]), Subject: "CN=" + id, DER: []byte{1}},
		Audit:       &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "device:" + id, Action: "enroll", Target: id, Result: registry.ResultOK},
	}
}

func mustToken(t testing.TB, s *Store, name string, uses int) []byte {
	t.Helper()
	sum := sha256.Sum256([]byte(name))
	tok := &registry.Token{ID: name, Hash: sum[:], TenantID: registry.DefaultTenant, UsesLeft: uses, ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.CreateToken(context.Background(), tok, nil); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return sum[:]
}

// TestReopen: what Enroll acknowledged is there after Close and Open.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openSQLite(t, path)
	hash := mustToken(t, s, "tok-reopen", 2)
	e := enrollment("SN-REOPEN", hash)
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Enroll(ctx, enrollment("SN-AFTER-CLOSE", hash)); !errors.Is(err, ErrClosed) {
		t.Errorf("Enroll after Close = %v, want ErrClosed", err)
	}

	s = openSQLite(t, path)
	defer s.Close()
	dev, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, "SN-REOPEN")
	if err != nil || dev.ID != e.Device.ID {
		t.Fatalf("device after reopen: %+v, %v", dev, err)
	}
	if _, err := s.GetCertificate(ctx, e.Certificate.Serial); err != nil {
		t.Fatalf("certificate after reopen: %v", err)
	}
	if tok, err := s.GetToken(ctx, hash); err != nil || tok.UsesLeft != 1 {
		t.Fatalf("token after reopen: %+v, %v", tok, err)
	}
	evs, err := s.ListAudit(ctx, 0, 10)
	if err != nil || len(evs) != 1 || evs[0].Seq != e.Audit.Seq {
		t.Fatalf("audit after reopen: %v, %v", evs, err)
	}
	if _, err := s.GetTenant(ctx, registry.DefaultTenant); err != nil {
		t.Fatal(err)
	}
	// The chain continues from the stored head, not from memory.
	if err := s.AppendAudit(ctx, &registry.AuditEvent{Actor: "system", Action: "reopen"}); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSQLitePragmas(t *testing.T) {
	s := newSQLite(t)
	pragma := func(db *gorm.DB, name string) string {
		t.Helper()
		var v string
		if err := db.Raw("PRAGMA " + name).Scan(&v).Error; err != nil {
			t.Fatalf("PRAGMA %s: %v", name, err)
		}
		return v
	}
	for _, tc := range []struct {
		db         *gorm.DB
		name, want string
	}{
		{s.w, "journal_mode", "wal"},
		{s.w, "synchronous", "2"}, // FULL
		{s.w, "foreign_keys", "1"},
		{s.w, "busy_timeout", "5000"},
		{s.r, "journal_mode", "wal"},
		{s.r, "query_only", "1"},
		{s.r, "busy_timeout", "5000"},
	} {
		if got := pragma(tc.db, tc.name); got != tc.want {
			t.Errorf("PRAGMA %s = %q, want %q", tc.name, got, tc.want)
		}
	}
	w, _ := s.w.DB()
	r, _ := s.r.DB()
	if n := w.Stats().MaxOpenConnections; n != 1 {
		t.Errorf("writer pool = %d connections, want 1", n)
	}
	if n := r.Stats().MaxOpenConnections; n < 2 {
		t.Errorf("reader pool = %d connections, want several", n)
	}
}

// TestReadsDoNotWaitForWriter holds the write connection in an open
// transaction and reads through the store.
func TestReadsDoNotWaitForWriter(t *testing.T) {
	s := newSQLite(t)
	ctx := context.Background()
	if err := s.Enroll(ctx, enrollment("SN-READ", nil)); err != nil {
		t.Fatal(err)
	}
	release := blockCommitter(t, s, func(tx *gorm.DB) {
		if err := tx.Exec("UPDATE devices SET method = 'held'").Error; err != nil {
			t.Error(err)
		}
	})
	defer release()
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	dev, err := s.GetDeviceBySerial(rctx, registry.DefaultTenant, "SN-READ")
	if err != nil {
		t.Fatalf("read while writer busy: %v", err)
	}
	if dev.Method != "token" {
		t.Errorf("read saw uncommitted write: method %q", dev.Method)
	}
}

// blockCommitter queues a write that runs fn and then blocks the committer
// until release is called, so that the writes queued meanwhile form the next
// batch together.
func blockCommitter(t testing.TB, s *Store, fn func(tx *gorm.DB)) (release func()) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.write(context.Background(), func(tx *gorm.DB, _ *batch) error {
			if fn != nil {
				fn(tx)
			}
			close(started)
			<-unblock
			return errors.New("blocker rolls back")
		})
	}()
	<-started
	var once sync.Once
	return func() {
		once.Do(func() {
			close(unblock)
			<-done
		})
	}
}

// waitQueued waits until n writes are queued behind a blocked committer.
func waitQueued(t testing.TB, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(s.ops) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", len(s.ops), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewDatabaseFileIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	s, err := Open(context.Background(), Options{DSN: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range []string{path, path + "-wal"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, st.Mode().Perm())
		}
	}
}

// asLegacy makes s's registry one from before versioned migrations, which
// had no version table, so that the next Open takes the legacy path (the
// callers then turn the schema further back).
func asLegacy(t testing.TB, s *Store) {
	t.Helper()
	// Back to the baseline schema first: a registry from before versioned
	// migrations has none of the later tables and columns.
	p, err := newProvider(s.driver, s.wsql)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(context.Background(), BaselineVersion); err != nil {
		t.Fatalf("migrate down to the baseline: %v", err)
	}
	if err := s.w.Exec("DROP TABLE " + VersionTable).Error; err != nil {
		t.Fatalf("drop %s: %v", VersionTable, err)
	}
}
