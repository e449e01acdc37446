package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExampleConfigLoads keeps configs/ca.yaml, the documented example, valid.
func TestExampleConfigLoads(t *testing.T) {
	c, err := LoadConfig(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.Enrollment.CertLifetime) != 720*time.Hour || c.DB.Driver != "sqlite" || c.TLS.ClassicalKeyExchange {
		t.Fatalf("unexpected values: %+v", c)
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
		{"short lifetime", "cert_lifetime: 720h", "cert_lifetime: 10m", []string{"shorter than 1h"}},
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
