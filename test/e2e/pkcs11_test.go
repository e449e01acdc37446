//go:build cgo

package e2e

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kmsapi "go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ocsp"

	"devpki/pkg/pki/pkitest/softhsmtest"
	"devpki/pkg/pki/pkitest/zlinttest"
)

// TestPKCS11EndToEnd: the issuing CA key in a SoftHSM2 token. `ca init
// --kms` with a PIN file makes the key inside the token; no file in the CA
// directory holds it. Two `ca serve` replicas on that one token and one
// registry (SQLite; PostgreSQL too with DEVPKI_TEST_POSTGRES_DSN) sign
// through it: a device enrolls on A and renews on B, an admin revokes it,
// and the CRL and OCSP answers of both replicas verify against the
// intermediate (zlint-clean, as is the device certificate). Bad inputs to
// init — wrong PIN, missing module, unknown token, unknown key, a P-521 key
// — exit non-zero naming the problem, write no file and leave no key in the
// token (a failure after the keys were made deletes them); `ca serve` on a
// configuration whose PIN, module, token or key is wrong refuses to start
// with the same clarity. `ca audit prune` signs its checkpoint in the token
// too. Not parallel: the binaries find the token through $SOFTHSM2_CONF, set
// for this test.
func TestPKCS11EndToEnd(t *testing.T) {
	tok := softhsmtest.Start(t, "devpki")
	tok.Setenv(t) // for the binaries (cleanEnv keeps it) and this process's own token checks
	base := t.TempDir()
	pw := filepath.Join(base, "pw")
	if err := os.WriteFile(pw, []byte(testPassphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const mod = "module-path=" + softhsmtest.Module
	tok.MakeKey(t, "pkcs11:id=0b01;object=hsm-admin-p521", kmsapi.ECDSAWithSHA512)
	keysBefore := strings.Join(tok.KeyLabels(t), ",")

	t.Run("init refuses", func(t *testing.T) {
		for i, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"wrong PIN", []string{"--kms", tok.URIWithPIN("0000")}, "refused the PIN"},
			{"missing module", []string{"--kms", "pkcs11:module-path=/nonexistent/libpkcs11.so;token=devpki?pin-source=" + tok.PINFile}, "apt install softhsm2"},
			{"unknown token", []string{"--kms", "pkcs11:" + mod + ";token=nosuch?pin-source=" + tok.PINFile}, "no such token"},
			{"unknown key", []string{"--kms", tok.URI(), "--kms-key", "pkcs11:id=77;object=nosuch"}, "key not found"},
			{"unsupported key type", []string{"--kms", tok.URI(), "--kms-key", "pkcs11:object=hsm-admin-p521"}, "unsupported CA key type: ECDSA P-521"},
			{"not PKCS#11", []string{"--kms", "awskms:key-id=x"}, "only PKCS#11"},
			{"key without token", []string{"--kms-key", "pkcs11:object=x"}, "need --kms"},
		} {
			dir := filepath.Join(base, "bad", string(rune('a'+i)))
			res := run(t, nil, caBin, append([]string{"init", "--dir", dir, "--password-file", pw}, tc.args...)...)
			if res.code == 0 || !strings.Contains(res.stderr, tc.want) {
				t.Errorf("%s: want a failure mentioning %q, got %s", tc.name, tc.want, res)
			}
			if strings.Contains(res.stderr, softhsmtest.PIN) {
				t.Errorf("%s: the PIN is in the output:\n%s", tc.name, res.stderr)
			}
			if names := filesUnder(t, dir); len(names) != 0 {
				t.Errorf("%s: ca init failed but left %v", tc.name, names)
			}
		}
		// A failure after the keys are made in the token (the registry
		// cannot be opened: its WAL path is taken by a directory) deletes them.
		dir := filepath.Join(base, "bad", "late")
		if err := os.MkdirAll(filepath.Join(dir, "registry.db-wal"), 0o700); err != nil {
			t.Fatal(err)
		}
		res := run(t, nil, caBin, "init", "--dir", dir, "--password-file", pw, "--kms", tok.URI(), "--kms-root")
		if res.code == 0 || !strings.Contains(res.stderr, "open registry") || strings.Contains(res.stderr, "issuing key in the PKCS#11 token") {
			t.Errorf("init with an unusable registry: want a failure opening the registry (and no report of keys), got %s", res)
		}
		if names := filesUnder(t, dir); len(names) != 0 {
			t.Errorf("ca init failed late but left %v", names)
		}
		if got := strings.Join(tok.KeyLabels(t), ","); got != keysBefore {
			t.Errorf("token keys after the refused inits: %s, want %s", got, keysBefore)
		}
	})

	t.Run("given key, root in the token", func(t *testing.T) {
		// An HSM administrator's key, certified as the intermediate; the
		// root key made in the token too: no CA key file at all.
		tok.MakeKey(t, "pkcs11:id=0b02;object=hsm-admin-ca", kmsapi.ECDSAWithSHA384)
		dir := filepath.Join(t.TempDir(), "ca")
		res := mustRun(t, nil, caBin, "init", "--dir", dir, "--password-file", pw, "--ip", "127.0.0.1",
			"--kms", tok.URI(), "--kms-key", "pkcs11:object=hsm-admin-ca", "--kms-root")
		ca := &testCA{Dir: dir, Config: filepath.Join(dir, "ca.yaml"), Fingerprint: strings.TrimSpace(res.stdout), DB: filepath.Join(dir, "registry.db")}
		requireNoFile(t, filepath.Join(dir, "root.key"))
		requireNoFile(t, filepath.Join(dir, "intermediate.key"))
		inter := readCert(t, filepath.Join(dir, "intermediate.crt"))
		requireKeyNotOnDisk(t, dir, inter.PublicKey)
		cfg, err := os.ReadFile(ca.Config)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(cfg), ";token=devpki;object=hsm-admin-ca?pin-source=") || !strings.Contains(string(cfg), "root_key: pkcs11:") {
			t.Errorf("ca.yaml does not name the given key and the root key in the token:\n%s", cfg)
		}
		srv := ca.serve(t)
		state := filepath.Join(t.TempDir(), "device")
		ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, state, "HSM-GIVEN-1")
		if err := readCert(t, filepath.Join(state, "device.crt")).CheckSignatureFrom(inter); err != nil {
			t.Fatalf("device certificate: %v", err)
		}
	})
	t.Run("sqlite", func(t *testing.T) { pkcs11Scenario(t, tok, pw, "") })
	t.Run("postgres", func(t *testing.T) {
		dsn := os.Getenv("DEVPKI_TEST_POSTGRES_DSN")
		if dsn == "" || strings.Contains(dsn, "://") {
			t.Skip("DEVPKI_TEST_POSTGRES_DSN not set (key=value form)")
		}
		pkcs11Scenario(t, tok, pw, dsn)
	})
}

func pkcs11Scenario(t *testing.T, tok *softhsmtest.Token, pw, pgDSN string) {
	dir := filepath.Join(t.TempDir(), "ca")
	res := mustRun(t, nil, caBin, "init", "--dir", dir, "--password-file", pw, "--ip", "127.0.0.1", "--kms", tok.URI())
	ca := &testCA{Dir: dir, Config: filepath.Join(dir, "ca.yaml"), Fingerprint: strings.TrimSpace(res.stdout), DB: filepath.Join(dir, "registry.db")}
	if !strings.Contains(res.stderr, "issuing key in the PKCS#11 token: pkcs11:") {
		t.Errorf("ca init does not say where the issuing key is:\n%s", res.stderr)
	}
	cfg, err := os.ReadFile(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "key: pkcs11:module-path="+softhsmtest.Module+";token=devpki;id=") ||
		!strings.Contains(string(cfg), "?pin-source="+tok.PINFile) || strings.Contains(string(cfg), softhsmtest.PIN) {
		t.Fatalf("ca.yaml does not name the token key by URI with the PIN file (or holds the PIN):\n%s", cfg)
	}
	inter := readCert(t, filepath.Join(dir, "intermediate.crt"))
	root := readCert(t, filepath.Join(dir, "root.crt"))
	requireKeyNotOnDisk(t, dir, inter.PublicKey)
	if pgDSN != "" {
		usePostgres(t, ca, freshPostgresDB(t, pgDSN))
	}

	// Two replicas share the token and the registry.
	a := ca.serve(t)
	b := ca.serve(t)
	for _, s := range []*server{a, b} {
		if !strings.Contains(s.stderr.String(), "issuing key in a PKCS#11 token") {
			t.Errorf("%s does not log that it signs through the token", s.URL)
		}
	}
	state := filepath.Join(t.TempDir(), "device")
	id := ca.enrollOK(t, a, ca.mintToken(t, a).Token, state, "HSM-DEVICE-1")
	c0 := readCert(t, filepath.Join(state, "device.crt"))
	mustRun(t, nil, enrollBin, "renew", "--dir", state, "--ca", b.URL)
	c1 := readCert(t, filepath.Join(state, "device.crt"))
	if c1.SerialNumber.Cmp(c0.SerialNumber) == 0 {
		t.Fatal("renewal on B returned the same certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	for _, c := range []*x509.Certificate{c0, c1} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("device certificate %x: %v", c.SerialNumber, err)
		}
	}
	zlinttest.Certificate(t, "device certificate signed in the token", c1.Raw, zlintAllow(c1))

	admin := []string{"--config", ca.Config, "--ca", a.URL}
	mustRun(t, nil, caBin, append([]string{"devices", "revoke", id, "--reason", "keyCompromise"}, admin...)...)

	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	get := func(req *http.Request) []byte {
		t.Helper()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %s %v", req.Method, req.URL, resp.Status, err)
		}
		return body
	}
	ocspReq, err := ocsp.CreateRequest(c1, inter, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*server{"A": a, "B": b} {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/crl", nil)
		der := get(req)
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := crl.CheckSignatureFrom(inter); err != nil {
			t.Fatalf("CRL of %s: %v", name, err)
		}
		zlinttest.CRL(t, "CRL of "+name, der, nil)
		if name == "A" {
			var listed bool
			for _, e := range crl.RevokedCertificateEntries {
				listed = listed || e.SerialNumber.Cmp(c1.SerialNumber) == 0
			}
			if !listed {
				t.Errorf("the CRL of A, which revoked it, does not list %x", c1.SerialNumber)
			}
		}
		req, _ = http.NewRequest(http.MethodPost, s.URL+"/ocsp", bytes.NewReader(ocspReq))
		req.Header.Set("Content-Type", "application/ocsp-request")
		// ParseResponseForCert checks the responder certificate against
		// the intermediate and the response against the responder.
		resp, err := ocsp.ParseResponseForCert(get(req), c1, inter)
		if err != nil {
			t.Fatalf("OCSP of %s: %v", name, err)
		}
		if resp.Certificate == nil || resp.Certificate.CheckSignatureFrom(inter) != nil {
			t.Fatalf("OCSP of %s: no delegated responder certificate from the intermediate", name)
		}
		if name == "A" && resp.Status != ocsp.Revoked {
			t.Errorf("OCSP of A, which revoked it: status %d, want revoked", resp.Status)
		}
	}
	ca.auditVerify(t)
	// `ca audit prune` signs its checkpoint with the issuing key, in the
	// token, from its own process while both replicas hold sessions.
	time.Sleep(1100 * time.Millisecond)
	before := time.Now().UTC().Format(time.RFC3339)
	time.Sleep(1100 * time.Millisecond)
	ca.mintToken(t, b) // an event after the cut
	mustRun(t, nil, caBin, "audit", "prune", "--config", ca.Config, "--before", before)
	if res := mustRun(t, nil, caBin, "audit", "verify", "--config", ca.Config); !strings.Contains(res.stdout, "verified from checkpoint") {
		t.Errorf("ca audit verify after a prune signed in the token:\n%s", res)
	}
	for _, s := range []*server{a, b} {
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	requireKeyNotOnDisk(t, dir, inter.PublicKey)

	// ca serve refuses a configuration whose token access is wrong, before
	// it listens.
	live, err := os.ReadFile(ca.Config) // with the PostgreSQL db section, if moved
	if err != nil {
		t.Fatal(err)
	}
	key := keyLine(t, string(live))
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"wrong PIN", "?pin-source=" + tok.PINFile, "?pin-value=0000", "refused the PIN"},
		{"missing PIN file", "?pin-source=" + tok.PINFile, "?pin-source=" + tok.PINFile + ".gone", "pin-source"},
		{"missing module", softhsmtest.Module, "/nonexistent/libpkcs11.so", "apt install softhsm2"},
		{"unknown token", "token=devpki", "token=nosuch", "no such token"},
		{"unknown key", ";id=", ";id=ff", "key not found"},
	} {
		bad := strings.Replace(key, tc.from, tc.to, 1)
		if bad == key {
			t.Fatalf("%s: %q is not in %q", tc.name, tc.from, key)
		}
		badCfg := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(badCfg, []byte(strings.Replace(string(live), key, bad, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		res := run(t, nil, caBin, "serve", "--config", badCfg, "--listen", freePort(t))
		if res.code == 0 || !strings.Contains(res.stderr, tc.want) || strings.Contains(res.stderr, "msg=serving") {
			t.Errorf("ca serve with %s: want a refusal mentioning %q, got %s", tc.name, tc.want, res)
		}
	}
}

// keyLine returns the value of ca.key in a ca.yaml.
func keyLine(t *testing.T, cfg string) string {
	t.Helper()
	for _, l := range strings.Split(cfg, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "key: pkcs11:"); ok {
			return "pkcs11:" + v
		}
	}
	t.Fatalf("no 'key: pkcs11:' in ca.yaml:\n%s", cfg)
	return ""
}

// filesUnder lists the regular files under dir (none when it is missing).
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return names
}

// requireKeyNotOnDisk fails if any file under dir is intermediate.key or
// holds a private key (decrypted with the test passphrase where encrypted)
// whose public half is pub.
func requireKeyNotOnDisk(t *testing.T, dir string, pub crypto.PublicKey) {
	t.Helper()
	for _, f := range filesUnder(t, dir) {
		if filepath.Base(f) == "intermediate.key" {
			t.Errorf("%s exists: the issuing key must stay in the token", f)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for rest := b; ; {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if !strings.Contains(block.Type, "PRIVATE KEY") {
				continue
			}
			k, err := pemutil.ParseKey(pem.EncodeToMemory(block), pemutil.WithPassword([]byte(testPassphrase)))
			if err != nil {
				t.Fatalf("%s: private key block: %v", f, err)
			}
			if s, ok := k.(crypto.Signer); ok && s.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
				t.Errorf("%s holds the issuing key", f)
			}
		}
	}
}
