// Package softhsmtest makes SoftHSM2 tokens for tests and load tools: each
// in its own temporary token directory with its own softhsm2.conf, so that
// nothing global (/var/lib/softhsm, /etc/softhsm) is read or touched.
//
// SoftHSM2 reads the configuration file named by $SOFTHSM2_CONF when a
// process loads its module: a test that opens the token in-process sets it
// with Token.Setenv; a child process (ca init, ca serve) gets Token.Env.
//
// It needs softhsm2-util and the module (apt-get install softhsm2); New
// reports ErrNotInstalled without them, and Start skips the test unless
// DEVPKI_REQUIRE_SOFTHSM=1 (test/run.sh sets it).
package softhsmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RequireEnv turns Start's skip (SoftHSM2 not installed) into a failure
// when set to "1".
const RequireEnv = "DEVPKI_REQUIRE_SOFTHSM"

// Module is where Debian's softhsm2 package installs the PKCS#11 module.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// Test PINs of every token New makes (not secrets: throwaway tokens).
const (
	PIN   = "1234-user-pin"
	SOPIN = "5678-so-pin"
)

// ErrNotInstalled is returned by New when softhsm2-util or the module is missing.
var ErrNotInstalled = errors.New("SoftHSM2 not installed (apt-get install softhsm2)")

// Token is an initialized SoftHSM2 token.
type Token struct {
	Label   string
	Dir     string // token directory
	Conf    string // the softhsm2.conf naming Dir; SOFTHSM2_CONF
	PINFile string // file holding PIN (mode 0600), for pin-source
}

// New initializes a token labelled label in a new directory under dir.
func New(dir, label string) (*Token, error) {
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		return nil, ErrNotInstalled
	}
	if _, err := os.Stat(Module); err != nil {
		return nil, ErrNotInstalled
	}
	t := &Token{Label: label, Dir: filepath.Join(dir, "tokens"), Conf: filepath.Join(dir, "softhsm2.conf"),
		PINFile: filepath.Join(dir, "pin")}
	if err := os.MkdirAll(t.Dir, 0o700); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", t.Dir)
	if err := os.WriteFile(t.Conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(t.PINFile, []byte(PIN+"\n"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SOPIN)
	cmd.Env = t.Env(os.Environ()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return t, nil
}

// Start is New in a test's temporary directory; it skips the test when
// SoftHSM2 is not installed, unless DEVPKI_REQUIRE_SOFTHSM=1.
func Start(t testing.TB, label string) *Token {
	t.Helper()
	tok, err := New(t.TempDir(), label)
	if errors.Is(err, ErrNotInstalled) && os.Getenv(RequireEnv) != "1" {
		t.Skipf("%v; set %s=1 to fail instead", err, RequireEnv)
	}
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Env returns env with SOFTHSM2_CONF naming this token's configuration.
func (t *Token) Env(env ...string) []string {
	return append(env, "SOFTHSM2_CONF="+t.Conf)
}

// Setenv points this process's SoftHSM2 at the token for the rest of the
// test (t.Setenv: the test cannot be parallel).
func (t *Token) Setenv(tb testing.TB) {
	tb.Setenv("SOFTHSM2_CONF", t.Conf)
}

// URI is the PKCS#11 URI of the token with the PIN read from PINFile.
func (t *Token) URI() string {
	return "pkcs11:module-path=" + Module + ";token=" + t.Label + "?pin-source=" + t.PINFile
}

// URIWithPIN is the PKCS#11 URI of the token with pin as pin-value.
func (t *Token) URIWithPIN(pin string) string {
	return "pkcs11:module-path=" + Module + ";token=" + t.Label + ";pin-value=" + pin
}
