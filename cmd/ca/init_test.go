package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitRefusesUncertifiableNames: names the CA's TLS or admin
// certificate could not carry (RFC 5280, as zlint checks it) are a usage
// error before anything is written.
func TestInitRefusesUncertifiableNames(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--dns", "ca.example."},
		{"--dns", strings.Repeat("a", 64) + ".example"},
		{"--dns", "bücher.example"},
		{"--admin", strings.Repeat("a", 65)},
	} {
		dir := filepath.Join(t.TempDir(), "ca")
		var stderr bytes.Buffer
		err := run(context.Background(), append([]string{"init", "--dir", dir, "--dev"}, args...), &bytes.Buffer{}, &stderr)
		if !errors.Is(err, errUsage) {
			t.Errorf("init %v: %v, want a usage error", args, err)
		}
		if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Errorf("init %v: %s exists (%v), want nothing written", args, dir, serr)
		}
	}
	// The longest accepted names pass.
	dir := filepath.Join(t.TempDir(), "ca")
	args := []string{"init", "--dir", dir, "--dev", "--dns", strings.Repeat("a", 63) + ".example", "--admin", strings.Repeat("a", 64)}
	if err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatalf("init %v: %v", args, err)
	}
}
