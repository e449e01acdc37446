package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // driver "sqlite3" for raw SQL on the registry

	"devpki/pkg/registry/sqlstore"
)

// testCA is a CA made by `ca init` in its own temporary directory.
type testCA struct {
	Dir         string
	Config      string // DIR/ca.yaml
	Fingerprint string // printed by ca init
	DB          string // DIR/registry.db
}

var hexFingerprint = regexp.MustCompile(`(?m)^[0-9a-f]{64}$`)

// initCA runs `ca init` with a password file in a fresh directory.
func initCA(t *testing.T) *testCA {
	t.Helper()
	base := t.TempDir()
	pw := filepath.Join(base, "pw")
	if err := os.WriteFile(pw, []byte(testPassphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "ca")
	res := mustRun(t, nil, caBin, "init", "--dir", dir, "--password-file", pw, "--ip", "127.0.0.1")
	fp := strings.TrimSpace(res.stdout)
	if !hexFingerprint.MatchString(fp) {
		t.Fatalf("ca init: stdout is not one hex SHA-256 fingerprint: %q", res.stdout)
	}
	return &testCA{Dir: dir, Config: filepath.Join(dir, "ca.yaml"), Fingerprint: fp, DB: filepath.Join(dir, "registry.db")}
}

// editConfig replaces the first old in the CA's ca.yaml with new; the test
// fails if ca.yaml has no old.
func (c *testCA) editConfig(t *testing.T, old, new string) {
	t.Helper()
	b, err := os.ReadFile(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), old, new, 1)
	if edited == string(b) {
		t.Fatalf("no %q in %s:\n%s", old, c.Config, b)
	}
	if err := os.WriteFile(c.Config, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
}

// serve starts `ca serve` on this CA.
func (c *testCA) serve(t *testing.T) *server {
	t.Helper()
	return startServer(t, "--config", c.Config)
}

// tokenInfo is `ca token create --output json`.
type tokenInfo struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	Tenant    string    `json:"tenant"`
	ExpiresAt time.Time `json:"expires_at"`
	Uses      int       `json:"uses"`
}

// mintToken runs `ca token create --output json ARGS...` against srv.
func (c *testCA) mintToken(t *testing.T, srv *server, args ...string) tokenInfo {
	t.Helper()
	argv := append([]string{"token", "create", "--config", c.Config, "--ca", srv.URL, "--output", "json"}, args...)
	res := mustRun(t, nil, caBin, argv...)
	var tok tokenInfo
	if err := json.Unmarshal([]byte(res.stdout), &tok); err != nil {
		t.Fatalf("ca token create --output json: %v\n%s", err, res)
	}
	if tok.Token == "" || tok.ID == "" {
		t.Fatalf("ca token create: no token or id in %q", res.stdout)
	}
	return tok
}

// auditVerify runs `ca audit verify` and requires success.
func (c *testCA) auditVerify(t *testing.T) {
	t.Helper()
	res := mustRun(t, nil, caBin, "audit", "verify", "--config", c.Config)
	if !strings.Contains(res.stdout+res.stderr, "audit chain verified") {
		t.Errorf("ca audit verify: exit 0 but no 'audit chain verified':\n%s", res)
	}
}

// openStore opens the live registry through sqlstore (a second connection
// under WAL) and closes it at the end of the test.
func (c *testCA) openStore(t *testing.T) *sqlstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := sqlstore.Open(ctx, sqlstore.Options{DSN: c.DB})
	if err != nil {
		t.Fatalf("open registry %s: %v", c.DB, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// openSQL opens the live registry with database/sql for raw statements.
func (c *testCA) openSQL(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+c.DB+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// usesLeft reads tokens.uses_left for the token with the given id.
func usesLeft(t *testing.T, db *sql.DB, tokenID string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT uses_left FROM tokens WHERE id = ?`, tokenID).Scan(&n); err != nil {
		t.Fatalf("read uses_left of token %s: %v", tokenID, err)
	}
	return n
}

// macFor is the MAC the test device with serial claims: its own, since a
// MAC belongs to one active device per tenant.
func macFor(serial string) string {
	h := sha256.Sum256([]byte(serial))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}

// enrollArgs are the flags of one `enroll` run.
func enrollArgs(srv *server, fingerprint, token, dir, serial string, extra ...string) []string {
	return append([]string{
		"--ca", srv.URL, "--fingerprint", fingerprint, "--token", token,
		"--dir", dir, "--serial", serial, "--mac", macFor(serial),
	}, extra...)
}

var enrolledLine = regexp.MustCompile(`enrolled device ([0-9A-Za-z._-]+);`)

// enrollOK runs enroll, requires exit 0, and returns the device id it printed.
func (c *testCA) enrollOK(t *testing.T, srv *server, token, dir, serial string) string {
	t.Helper()
	res := mustRun(t, nil, enrollBin, enrollArgs(srv, c.Fingerprint, token, dir, serial)...)
	m := enrolledLine.FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("enroll: exit 0 but no 'enrolled device <id>;' on stdout:\n%s", res)
	}
	return m[1]
}

// readCert parses the single certificate in a PEM file.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	certs := readCerts(t, path)
	if len(certs) != 1 {
		t.Fatalf("%s: want 1 certificate, got %d", path, len(certs))
	}
	return certs[0]
}

// readCerts parses every CERTIFICATE block in a PEM file and refuses any
// other content.
func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Fatalf("%s: unexpected PEM block %q", path, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		certs = append(certs, c)
	}
	if strings.TrimSpace(string(b)) != "" {
		t.Fatalf("%s: trailing non-PEM data %q", path, b)
	}
	return certs
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// requireNoFile fails unless path does not exist.
func requireNoFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		t.Errorf("%s exists, want no such file", path)
	} else if !os.IsNotExist(err) {
		t.Errorf("stat %s: %v", path, err)
	}
}

// requireMode fails unless path has exactly the permission bits want.
func requireMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %#o, want %#o", path, got, want)
	}
}
