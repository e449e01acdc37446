package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"devpki/pkg/registry/sqlstore"
)

// TestServePrefetchesRegistry: 'ca serve' reads a registry evicted from the
// page cache (as after a reboot) back into it and says so; with
// db.prefetch: off it does neither.
func TestServePrefetchesRegistry(t *testing.T) {
	c := initCA(t)
	if err := sqlstore.Evict(c.DB); err != nil {
		t.Fatal(err)
	}
	if resident, size, err := sqlstore.Resident(c.DB); err != nil || resident == size {
		t.Skipf("the file system keeps %s in memory (%d of %d bytes resident after eviction, %v)", c.DB, resident, size, err)
	}
	srv := c.serve(t)
	logged := regexp.MustCompile(`msg="registry prefetched into the page cache" file=` + regexp.QuoteMeta(c.DB) + ` mib=\d+ available_mib=\d+ took=`)
	// The prefetch runs in the background: wait for it, not for a speed.
	deadline := time.Now().Add(20 * time.Second)
	for !logged.MatchString(srv.stderr.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no prefetch log line 20 s after start:\n%s", srv.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		resident, size, err := sqlstore.Resident(c.DB)
		if err != nil {
			t.Fatal(err)
		}
		if resident == size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes of the registry in the page cache after the prefetch", resident, size)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	c.editConfig(t, "\ndb:\n", "\ndb:\n    prefetch: off\n")
	srv = c.serve(t)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(srv.stderr.String(), "prefetch") {
		t.Fatalf("db.prefetch: off, yet:\n%s", srv.stderr)
	}
}
