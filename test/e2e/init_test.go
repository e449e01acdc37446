package e2e

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fileState struct {
	data  []byte
	mode  fs.FileMode
	mtime time.Time
}

// snapshot records bytes, mode and mtime of every file under dir.
func snapshot(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	files := map[string]fileState{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var data []byte
		if !d.IsDir() {
			if data, err = os.ReadFile(path); err != nil {
				return err
			}
		}
		files[path] = fileState{data: data, mode: fi.Mode(), mtime: fi.ModTime()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestInitRefusesTwice(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	pw := filepath.Join(filepath.Dir(ca.Dir), "pw")

	before := snapshot(t, ca.Dir)
	if len(before) < 5 {
		t.Fatalf("ca init left only %d entries in %s", len(before), ca.Dir)
	}
	res := run(t, nil, caBin, "init", "--dir", ca.Dir, "--password-file", pw, "--ip", "127.0.0.1")
	if res.code == 0 {
		t.Errorf("second ca init on the same dir: want non-zero exit, got %s", res)
	}
	if hexFingerprint.MatchString(strings.TrimSpace(res.stdout)) {
		t.Errorf("second ca init printed a fingerprint:\n%s", res)
	}
	after := snapshot(t, ca.Dir)
	for path, b := range before {
		a, ok := after[path]
		switch {
		case !ok:
			t.Errorf("second ca init removed %s", path)
		case !bytes.Equal(a.data, b.data):
			t.Errorf("second ca init changed the bytes of %s", path)
		case a.mode != b.mode || (!a.mode.IsDir() && !a.mtime.Equal(b.mtime)):
			t.Errorf("second ca init touched %s: mode %v→%v mtime %s→%s", path, b.mode, a.mode, b.mtime, a.mtime)
		}
	}
	for path := range after {
		if _, ok := before[path]; !ok {
			t.Errorf("second ca init created %s", path)
		}
	}

	// No passphrase at all: refused, pointing at DEVPKI_PASSWORD, nothing created.
	nopw := filepath.Join(t.TempDir(), "nopw")
	res = run(t, nil, caBin, "init", "--dir", nopw)
	if res.code == 0 {
		t.Errorf("ca init without a passphrase: want non-zero exit, got %s", res)
	}
	if !strings.Contains(res.stderr, "DEVPKI_PASSWORD") {
		t.Errorf("ca init without a passphrase: stderr does not mention DEVPKI_PASSWORD:\n%s", res)
	}
	requireNoFile(t, nopw)

	// DEVPKI_PASSWORD works in place of the file, and the keys are encrypted with it.
	envDir := filepath.Join(t.TempDir(), "envpw")
	res = mustRun(t, []string{"DEVPKI_PASSWORD=" + testPassphrase}, caBin, "init", "--dir", envDir)
	if !hexFingerprint.MatchString(strings.TrimSpace(res.stdout)) {
		t.Errorf("ca init with DEVPKI_PASSWORD: stdout is not a fingerprint:\n%s", res)
	}
	for _, f := range []string{"ca.yaml", "root.crt", "root.key", "intermediate.key", "registry.db"} {
		if _, err := os.Stat(filepath.Join(envDir, f)); err != nil {
			t.Errorf("ca init with DEVPKI_PASSWORD: %v", err)
		}
	}
	for _, f := range []string{"root.key", "intermediate.key"} {
		b, err := os.ReadFile(filepath.Join(envDir, f))
		if err != nil {
			continue
		}
		if !bytes.Contains(b, []byte("ENCRYPTED")) {
			t.Errorf("%s is not an encrypted PEM", f)
		}
		requireMode(t, filepath.Join(envDir, f), 0o600)
	}
}
