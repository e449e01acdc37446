package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/pkg/provision"
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

// TestInitAdminCertificateLifetime: the bootstrap admin's certificate lives
// admin.cert_lifetime (the default, 2160h), like every admin's.
func TestInitAdminCertificateLifetime(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := run(context.Background(), []string{"init", "--dir", dir, "--dev"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	certs, err := pemutil.ReadCertificateBundle(filepath.Join(dir, fileAdminCrt))
	if err != nil {
		t.Fatal(err)
	}
	want := time.Duration(provision.DefaultAdminCertLifetime)
	if got := certs[0].NotAfter.Sub(certs[0].NotBefore); got < want || got > want+time.Hour {
		t.Errorf("bootstrap admin certificate lives %s, want admin.cert_lifetime %s (plus the backdate)", got, want)
	}
}
