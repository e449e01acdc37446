package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSetPrefetch checks that -no-prefetch turns db.prefetch off in a kept
// CA's ca.yaml and a later run without it turns it back on, leaving the
// rest of the file as 'ca init' wrote it.
func TestSetPrefetch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.yaml")
	orig := "listen: 127.0.0.1:1\ndb:\n    driver: sqlite\n    dsn: registry.db\nenrollment:\n    profile: default\n"
	if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for range 2 {
		if err := setPrefetch(path, false); err != nil {
			t.Fatal(err)
		}
		if got, want := read(), strings.Replace(orig, "db:\n", "db:\n    prefetch: off # load -no-prefetch\n", 1); got != want {
			t.Fatalf("off:\n%s\nwant:\n%s", got, want)
		}
	}
	if err := setPrefetch(path, true); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != orig {
		t.Fatalf("on again:\n%s\nwant:\n%s", got, orig)
	}
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := setPrefetch(path, false); err == nil || !strings.Contains(err.Error(), "no db section") {
		t.Fatalf("a config without a db section: %v", err)
	}
}
