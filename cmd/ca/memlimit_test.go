package main

import (
	"bytes"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// TestMemoryLimitConfig: memory_limit of ca.yaml as 'ca serve' applies it
// (absent: 128MiB; off: no limit), and bad values refused at load with a
// message that says what is wanted.
func TestMemoryLimitConfig(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const key = "memory_limit: 128MiB"
	if !strings.Contains(string(base), key) {
		t.Fatalf("%q not in the example", key)
	}
	for _, tc := range []struct {
		name, to string
		want     int64
		err      string
	}{
		{"example", key, 128 << 20, ""},
		{"absent", "", 128 << 20, ""},
		{"GiB", "memory_limit: 1GiB", 1 << 30, ""},
		{"MB", "memory_limit: 500MB", 500_000_000, ""},
		{"spaced", "memory_limit: 256 MiB", 256 << 20, ""},
		{"off", "memory_limit: off", math.MaxInt64, ""},
		{"too small", "memory_limit: 16MiB", 0, "below the minimum of 32 MiB"},
		{"bytes", "memory_limit: 1000", 0, "below the minimum"},
		{"zero", "memory_limit: 0", 0, "below the minimum"},
		{"negative", "memory_limit: -1GiB", 0, "is not a size such as 128MiB"},
		{"word", "memory_limit: lots", 0, "is not a size such as 128MiB"},
		{"unit", "memory_limit: 12parsecs", 0, "is not a size such as 128MiB"},
		{"huge", "memory_limit: 100EiB", 0, "is not a size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := strings.Replace(string(base), key, tc.to, 1)
			p := filepath.Join(t.TempDir(), "ca.yaml")
			if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "memory_limit") {
					t.Fatalf("err = %v, want memory_limit: ...%q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, err := c.memoryLimit(); err != nil || got != tc.want {
				t.Errorf("memoryLimit() = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestApplyMemoryLimit: the runtime's limit is the config's, unless
// GOMEMLIMIT is set.
func TestApplyMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	noEnv := func(string) string { return "" }
	applyMemoryLimit(&Config{MemoryLimit: "96MiB"}, noEnv, log)
	if got := debug.SetMemoryLimit(-1); got != 96<<20 {
		t.Errorf("limit = %d, want 96MiB", got)
	}
	var buf bytes.Buffer
	applyMemoryLimit(&Config{MemoryLimit: "64MiB"}, func(k string) string {
		if k == "GOMEMLIMIT" {
			return "200MiB"
		}
		return ""
	}, slog.New(slog.NewTextHandler(&buf, nil)))
	if got := debug.SetMemoryLimit(-1); got != 96<<20 {
		t.Errorf("with GOMEMLIMIT set the config changed the limit to %d", got)
	}
	if !strings.Contains(buf.String(), "GOMEMLIMIT") {
		t.Errorf("log does not say GOMEMLIMIT won: %s", buf.String())
	}
	applyMemoryLimit(&Config{MemoryLimit: "off"}, noEnv, log)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("off: limit = %d", got)
	}
}
