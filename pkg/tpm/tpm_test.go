package tpm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.step.sm/crypto/tpm/storage"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"ak1", true}, {"tls-2026", true}, {"0", true}, {strings.Repeat("a", 63), true},
		{"", false}, {"-ak", false}, {"AK", false}, {"a_b", false}, {"a/b", false}, {"../x", false},
		{"a.b", false}, {"é", false}, {strings.Repeat("a", 64), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkName("key", tc.name)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadName)) {
				t.Fatalf("checkName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sock := filepath.Join(dir, "not-a-socket")
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec, want string
		is         error
	}{
		{"swtpm:tcp:127.0.0.1", "want swtpm:tcp:HOST:PORT", nil},
		{"swtpm:tcp:127.0.0.1:1", "connection refused", nil},
		{"swtpm:unix:" + filepath.Join(dir, "missing"), "no such file", os.ErrNotExist},
		{"swtpm:unix:" + sock, "not a unix socket", nil},
		{"/dev/does-not-exist-tpm", "no such file", os.ErrNotExist},
		{"mssim:1", "unknown spec", nil},
		{"", "unknown spec", nil},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			tp, err := Open(ctx, tc.spec, Options{StateDir: filepath.Join(dir, "state")})
			if err == nil {
				tp.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("Open(%q) = %v, want %q", tc.spec, err, tc.want)
			}
		})
	}
	if _, err := Open(ctx, "auto", Options{}); err == nil || !strings.Contains(err.Error(), "StateDir") {
		t.Fatalf("Open without StateDir: %v", err)
	}
}

func TestOpenAutoWithoutTPM(t *testing.T) {
	if _, err := findDevice(); err == nil {
		t.Skip("this machine has a TPM")
	}
	_, err := Open(context.Background(), "auto", Options{StateDir: t.TempDir()})
	if !errors.Is(err, ErrNoTPM) {
		t.Fatalf("Open(auto) = %v, want ErrNoTPM", err)
	}
}

func TestFileStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := newFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", fi.Mode().Perm())
	}
	if _, err := s.GetKey("k1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetKey: %v", err)
	}
	k := &storage.Key{Name: "k1", Data: []byte(`{"x":1}`), AttestedBy: "ak1"}
	if err := s.UpdateKey(k); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("UpdateKey before AddKey: %v", err)
	}
	if err := s.AddKey(k); err != nil {
		t.Fatal(err)
	}
	if err := s.AddKey(k); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second AddKey: %v", err)
	}
	if err := s.AddAK(&storage.AK{Name: "ak1", Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddKey(&storage.Key{Name: "../x"}); !errors.Is(err, ErrBadName) {
		t.Fatalf("AddKey ../x: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "key-k1.tpmobj"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", err, fi)
	}
	got, err := s.GetKey("k1")
	if err != nil || got.AttestedBy != "ak1" || string(got.Data) != `{"x":1}` {
		t.Fatalf("GetKey = %+v, %v", got, err)
	}
	// The layout is step's Dirstore's: it reads what we wrote.
	ds := storage.NewDirstore(dir)
	if got, err := ds.GetKey("k1"); err != nil || got.AttestedBy != "ak1" {
		t.Fatalf("Dirstore reads our file: %+v, %v", got, err)
	}
	if n := s.ListKeyNames(); len(n) != 1 || n[0] != "k1" {
		t.Fatalf("ListKeyNames = %v", n)
	}
	if aks, err := s.ListAKs(); err != nil || len(aks) != 1 {
		t.Fatalf("ListAKs = %v, %v", aks, err)
	}
	if err := s.DeleteKey("k1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKey("k1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second DeleteKey: %v", err)
	}
	// A pre-existing, too open directory is tightened.
	loose := filepath.Join(t.TempDir(), "loose")
	if err := os.Mkdir(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := newFileStore(loose); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(loose); fi.Mode().Perm() != 0o700 {
		t.Fatalf("loose dir mode %v", fi.Mode().Perm())
	}
}
