package tpm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"devpki/pkg/atomicfile"

	"go.step.sm/crypto/tpm/storage"
)

const (
	akPrefix  = "ak-"
	keyPrefix = "key-"
	objSuffix = ".tpmobj"
)

// fileStore is step's storage.TPMStore over a directory, in the file layout
// of storage.Dirstore (PREFIX-NAME.tpmobj holding the object's JSON), but
// with a 0700 directory, 0600 files and atomic replacement (diskv, under
// Dirstore, uses 0777 and 0666 and writes in place).
type fileStore struct{ dir string }

func newFileStore(dir string) (*fileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("state directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
	}
	return &fileStore{dir: dir}, nil
}

func (s *fileStore) path(prefix, name string) string {
	return filepath.Join(s.dir, prefix+name+objSuffix)
}

func (s *fileStore) names(prefix string) []string {
	entries, _ := os.ReadDir(s.dir)
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && strings.HasPrefix(n, prefix) && strings.HasSuffix(n, objSuffix) {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(n, prefix), objSuffix))
		}
	}
	sort.Strings(out)
	return out
}

func (s *fileStore) read(prefix, name string, v any) error {
	b, err := os.ReadFile(s.path(prefix, name))
	if errors.Is(err, os.ErrNotExist) {
		return storage.ErrNotFound
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", s.path(prefix, name), err)
	}
	return nil
}

func (s *fileStore) write(prefix, name string, v any, create bool) error {
	if err := checkName("object", name); err != nil {
		return err
	}
	_, err := os.Lstat(s.path(prefix, name))
	switch {
	case create && err == nil:
		return storage.ErrExists
	case !create && errors.Is(err, os.ErrNotExist):
		return storage.ErrNotFound
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.Write(s.path(prefix, name), b, 0o600)
}

func (s *fileStore) remove(prefix, name string) error {
	err := os.Remove(s.path(prefix, name))
	if errors.Is(err, os.ErrNotExist) {
		return storage.ErrNotFound
	}
	if err != nil {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

func (s *fileStore) ListKeys() ([]*storage.Key, error) {
	var out []*storage.Key
	for _, n := range s.names(keyPrefix) {
		k, err := s.GetKey(n)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

func (s *fileStore) ListKeyNames() []string { return s.names(keyPrefix) }

func (s *fileStore) GetKey(name string) (*storage.Key, error) {
	k := &storage.Key{}
	if err := s.read(keyPrefix, name, k); err != nil {
		return nil, err
	}
	return k, nil
}

func (s *fileStore) AddKey(k *storage.Key) error    { return s.write(keyPrefix, k.Name, k, true) }
func (s *fileStore) UpdateKey(k *storage.Key) error { return s.write(keyPrefix, k.Name, k, false) }
func (s *fileStore) DeleteKey(name string) error    { return s.remove(keyPrefix, name) }

func (s *fileStore) ListAKs() ([]*storage.AK, error) {
	var out []*storage.AK
	for _, n := range s.names(akPrefix) {
		ak, err := s.GetAK(n)
		if err != nil {
			return nil, err
		}
		out = append(out, ak)
	}
	return out, nil
}

func (s *fileStore) ListAKNames() []string { return s.names(akPrefix) }

func (s *fileStore) GetAK(name string) (*storage.AK, error) {
	ak := &storage.AK{}
	if err := s.read(akPrefix, name, ak); err != nil {
		return nil, err
	}
	return ak, nil
}

func (s *fileStore) AddAK(ak *storage.AK) error    { return s.write(akPrefix, ak.Name, ak, true) }
func (s *fileStore) UpdateAK(ak *storage.AK) error { return s.write(akPrefix, ak.Name, ak, false) }
func (s *fileStore) DeleteAK(name string) error    { return s.remove(akPrefix, name) }

// Persist is a no-op: every write is already durable.
func (s *fileStore) Persist() error { return nil }

// Load is a no-op: every read goes to disk.
func (s *fileStore) Load() error { return nil }

var _ storage.TPMStore = (*fileStore)(nil)
