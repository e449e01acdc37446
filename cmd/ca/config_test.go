package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/tpm/verify/ektest"
)

// TestExampleConfigLoads keeps configs/ca.yaml, the documented example, valid.
func TestExampleConfigLoads(t *testing.T) {
	c, err := LoadConfig(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.Enrollment.CertLifetime) != pki.DefaultLeafLifetime || c.DB.Driver != "sqlite" || c.TLS.ClassicalKeyExchange ||
		c.Enrollment.Profile != "default" || c.Enrollment.CertProfile() != pki.ProfileDefault ||
		c.DB.Prefetch != dbPrefetchAuto {
		t.Fatalf("unexpected values: %+v", c)
	}
	if d := c.Limits.Door(); d.MaxInFlight != 32 || d.MaxQueued != 128 || d.QueueWait != 250*time.Millisecond || d.MaxHandshakes != 16 {
		t.Fatalf("the example's limits are not the defaults: %+v", d)
	}
	if !strings.HasPrefix(c.KeyURI(), "softkms:path=/") {
		t.Fatalf("key URI %q not resolved to an absolute path", c.KeyURI())
	}
}

func TestConfigErrors(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, from, to string
		want           []string
	}{
		{"unknown key", "trust_domain: devpki.local", "trust_domain: devpki.local\nbogus: 1", []string{"bogus"}},
		{"bad duration", "cert_lifetime: 720h", "cert_lifetime: forever", []string{"not a duration"}},
		{"every problem at once", "listen: 127.0.0.1:8443", "listen: nowhere\nurl: http://x", []string{"listen", "url"}},
		{"unknown driver", "driver: sqlite", "driver: mysql", []string{"db.driver"}},
		{"unknown migrate mode", "migrate: auto", "migrate: never", []string{`db.migrate: "never" is neither auto nor manual`}},
		{"unknown prefetch mode", "prefetch: auto", "prefetch: always", []string{`db.prefetch: "always" is neither auto nor off`}},
		{"short lifetime", "cert_lifetime: 720h", "cert_lifetime: 10m", []string{"shorter than 1h"}},
		{"unknown profile", "profile: default", "profile: svid", []string{`enrollment.profile: "svid" is not "default"`, `"spiffe"`}},
		{"profile in upper case", "profile: default", "profile: SPIFFE", []string{"enrollment.profile"}},
		{"profile not a string", "profile: default", "profile: [spiffe]", []string{"profile"}},
		{"negative queue", "max_in_flight: 32\n  max_queued: 128\n  queue_wait: 250ms",
			"max_in_flight: -1\n  max_queued: -2\n  queue_wait: -1s",
			[]string{"limits.max_in_flight: -1", "limits.max_queued: -2", "limits.queue_wait: -1s"}},
		{"negative handshakes", "max_handshakes: 16", "max_handshakes: -3", []string{"limits.max_handshakes: -3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := strings.Replace(string(base), tc.from, tc.to, 1)
			if s == string(base) {
				t.Fatalf("%q not found in the example", tc.from)
			}
			if tc.name == "every problem at once" {
				s = strings.Replace(s, "url: https://127.0.0.1:8443\n", "", 1)
			}
			p := filepath.Join(t.TempDir(), "ca.yaml")
			if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(p)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestEnrollmentProfile: enrollment.profile defaults to "default" and names
// the pki profile serve passes to provision.
func TestEnrollmentProfile(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ line, want string }{
		{"", pki.ProfileDefault}, // key left out
		{"  profile: default", pki.ProfileDefault},
		{"  profile: spiffe", pki.ProfileSPIFFE},
	} {
		s := strings.Replace(string(base), "  profile: default", tc.line, 1)
		p := filepath.Join(t.TempDir(), "ca.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(p)
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		if got := c.Enrollment.CertProfile(); got != tc.want {
			t.Errorf("%q: CertProfile = %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestTPMConfig: tpm.ek_roots and ek_intermediates are PEM files relative
// to ca.yaml; the example leaves TPM enrollment off.
func TestTPMConfig(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	example, err := LoadConfig(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := tpmConfig(example, nil); err != nil || tc != nil {
		t.Fatalf("example: tpmConfig = %v, %v; want TPM off", tc, err)
	}

	dir := t.TempDir()
	m := ektest.New(t)
	m.WritePEM(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	ttl := "60s"
	load := func(tpm string) (*Config, error) {
		s := strings.Replace(string(base), "  ek_roots: []", tpm, 1)
		s = strings.Replace(s, "challenge_ttl: 60s", "challenge_ttl: "+ttl, 1)
		p := filepath.Join(dir, "ca.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(p)
	}
	c, err := load("  ek_roots: [root.pem]")
	if err != nil {
		t.Fatal(err)
	}
	c.TPM.EKIntermediates = []string{"issuing.pem"}
	tc, err := tpmConfig(c, nil)
	if err != nil || tc == nil || tc.Challenger == nil {
		t.Fatalf("tpmConfig = %+v, %v", tc, err)
	}
	if !tc.EKRoots.Equal(m.Roots()) || !tc.EKIntermediates.Equal(m.Intermediates()) {
		t.Error("pools do not hold the manufacturer certificates")
	}
	for _, bad := range []string{"junk.pem", "missing.pem"} {
		c.TPM.EKRoots = []string{bad}
		if _, err := tpmConfig(c, nil); err == nil || !strings.Contains(err.Error(), "tpm.ek_roots") {
			t.Errorf("ek_roots [%s]: %v", bad, err)
		}
	}
	c.TPM.EKRoots, c.TPM.EKIntermediates, c.TPM.Enabled = nil, nil, true
	if tc, err := tpmConfig(c, nil); err != nil || tc == nil || tc.EKRoots == nil {
		t.Errorf("enabled without roots (pre-registered EKs only): %+v, %v", tc, err)
	}
	ttl = "1h"
	if _, err := load("  ek_roots: [root.pem]"); err == nil || !strings.Contains(err.Error(), "tpm.challenge_ttl: 1h0m0s must be") {
		t.Errorf("challenge_ttl 1h: %v", err)
	}
}
