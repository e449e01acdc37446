package sqlstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrefetchReadsTheRegistry evicts a registry file from the page cache
// and checks that Prefetch brings all of it back.
func TestPrefetchReadsTheRegistry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openSQLite(t, path)
	defer s.Close()
	if err := Evict(path); err != nil {
		t.Fatal(err)
	}
	resident, size, err := Resident(path)
	if err != nil {
		t.Fatal(err)
	}
	if size == 0 || resident == size {
		t.Skipf("the file system of %s keeps files in memory (%d of %d bytes resident after eviction)", path, resident, size)
	}
	rep, err := s.Prefetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped != "" || rep.File != path || rep.Size != size || rep.Advised != size || rep.Available <= 0 {
		t.Fatalf("report %+v for a %d-byte file", rep, size)
	}
	// The kernel reads asynchronously: wait for it, not for a speed.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resident, _, err = Resident(path); err != nil {
			t.Fatal(err)
		}
		if resident == size {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes in the page cache 20 s after Prefetch", resident, size)
		}
	}
}

func TestPrefetchSkips(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	if err := os.WriteFile(path, make([]byte, 3*PrefetchStep+1), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Run("more than half of the memory available", func(t *testing.T) {
		rep, err := prefetchFile(ctx, path, func() (int64, error) { return 6 * PrefetchStep, nil })
		if err != nil || rep.Advised != 0 || !strings.Contains(rep.Skipped, "more than half of the memory available (48 MiB)") {
			t.Fatalf("report %+v, error %v", rep, err)
		}
	})
	t.Run("available memory unknown", func(t *testing.T) {
		rep, err := prefetchFile(ctx, path, func() (int64, error) { return 0, errors.New("no /proc") })
		if err != nil || rep.Advised != 0 || !strings.Contains(rep.Skipped, "no /proc") {
			t.Fatalf("report %+v, error %v", rep, err)
		}
	})
	t.Run("enough memory", func(t *testing.T) {
		rep, err := prefetchFile(ctx, path, func() (int64, error) { return 8 * PrefetchStep, nil })
		if err != nil || rep.Skipped != "" || rep.Advised != 3*PrefetchStep+1 {
			t.Fatalf("report %+v, error %v", rep, err)
		}
	})
	t.Run("context ended", func(t *testing.T) {
		done, cancel := context.WithCancel(ctx)
		cancel()
		rep, err := prefetchFile(done, path, func() (int64, error) { return 8 * PrefetchStep, nil })
		if err != nil || rep.Advised != 0 {
			t.Fatalf("report %+v, error %v", rep, err)
		}
	})
	t.Run("no file", func(t *testing.T) {
		_, err := prefetchFile(ctx, path+".missing", func() (int64, error) { return 8 * PrefetchStep, nil })
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error %v, want one wrapping os.ErrNotExist", err)
		}
	})
	t.Run("in memory", func(t *testing.T) {
		s := openSQLite(t, ":memory:")
		defer s.Close()
		rep, err := s.Prefetch(ctx)
		if err != nil || rep.Skipped != "in-memory registry" {
			t.Fatalf("report %+v, error %v", rep, err)
		}
	})
}

// TestSQLiteFile: only a file-backed registry names a file to prefetch.
func TestSQLiteFile(t *testing.T) {
	for dsn, want := range map[string]string{
		"/var/lib/devpki/registry.db":             "/var/lib/devpki/registry.db",
		"file:registry.db?_busy_timeout=1":        "registry.db",
		":memory:":                                "",
		"file::memory:?cache=shared":              "",
		"file:memdb1?mode=memory&cache=shared":    "",
		"file:/tmp/r.db?mode=rwc&_foreign_keys=1": "/tmp/r.db",
	} {
		if got := sqliteFile(dsn); got != want {
			t.Errorf("sqliteFile(%q) = %q, want %q", dsn, got, want)
		}
	}
}

func TestParseMemAvailable(t *testing.T) {
	n, err := parseMemAvailable(strings.NewReader("MemTotal:       24683904 kB\nMemFree:        17676588 kB\nMemAvailable:   24197232 kB\n"))
	if err != nil || n != 24197232<<10 {
		t.Fatalf("%d, %v", n, err)
	}
	for _, bad := range []string{"MemTotal: 1 kB\n", "MemAvailable: lots kB\n", "MemAvailable: 12 MB\n"} {
		if n, err := parseMemAvailable(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: %d, no error", bad, n)
		}
	}
}
