package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadConfig: any ca.yaml is loaded strictly or refused with an error
// (never a panic); one that loads is valid, and writing it back and loading
// it again gives the same configuration. Seeded with the documented
// example, configs/ca.yaml. Run longer:
// go test -run '^$' -fuzz FuzzLoadConfig -fuzztime 10m ./cmd/ca
func FuzzLoadConfig(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("listen: 127.0.0.1:1\nurl: https://127.0.0.1:1\nca: {root: r, intermediate: i, key: k}\ntls: {cert: c, key: k}\ndb: {dsn: d}\n"))
	f.Add([]byte("enrollment:\n  cert_lifetime: -1h\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "ca.yaml")
		if err := os.WriteFile(path, in, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("loaded a config that does not validate: %v", err)
		}
		again := filepath.Join(dir, "again.yaml")
		if err := writeConfig(again, c); err != nil {
			t.Fatalf("write back: %v", err)
		}
		c2, err := LoadConfig(again)
		if err != nil {
			t.Fatalf("a loaded config does not load once written back: %v", err)
		}
		third := filepath.Join(dir, "third.yaml")
		if err := writeConfig(third, c2); err != nil {
			t.Fatalf("write back: %v", err)
		}
		b2, _ := os.ReadFile(again)
		b3, _ := os.ReadFile(third)
		if !bytes.Equal(b2, b3) {
			t.Fatalf("round trip changed the config:\n%s\n---\n%s", b2, b3)
		}
	})
}
