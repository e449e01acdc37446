package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRenewGraceConfig: renew.grace_period of ca.yaml as provision takes
// it (absent: the default, 0: off), and its bounds.
func TestRenewGraceConfig(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const key = "grace_period: 720h"
	if !strings.Contains(string(base), key) {
		t.Fatalf("%q not in the example", key)
	}
	for _, tc := range []struct {
		name, to string
		want     time.Duration // provision.Config.RenewGrace
		err      string
	}{
		{"example", key, 720 * time.Hour, ""},
		{"off", "grace_period: 0s", -1, ""},
		{"absent", "", 0, ""},
		{"shorter", "grace_period: 48h", 48 * time.Hour, ""},
		{"negative", "grace_period: -1h", 0, "renew.grace_period"},
		{"too long", "grace_period: 9000h", 0, "renew.grace_period"},
		{"not a duration", "grace_period: forever", 0, "not a duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := strings.Replace(string(base), key, tc.to, 1)
			if tc.to == "" {
				s = strings.Replace(s, "renew:\n", "", 1)
			}
			p := filepath.Join(t.TempDir(), "ca.yaml")
			if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Renew.Grace(); got != tc.want {
				t.Fatalf("grace %s, want %s", got, tc.want)
			}
		})
	}
}
