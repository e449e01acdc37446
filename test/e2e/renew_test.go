package e2e

import (
	"context"
	"crypto"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"devpki/pkg/registry"
)

// TestRenewAndRekeyEndToEnd: enroll, then 'enroll renew' (same key over mTLS),
// 'enroll rekey' (new key), a forced re-key after an admin's rotate (set in
// the registry), and 'enroll status'; each step checked in the registry.
func TestRenewAndRekeyEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	st := ca.openStore(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	id := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dir, "E2E-RENEW-1")
	c0 := readCert(t, filepath.Join(dir, "device.crt"))

	// Same-key renewal: no flags, the CA and pin come from STATE/ca.json.
	out := mustRun(t, nil, enrollBin, "renew", "--dir", dir)
	if !strings.Contains(out.stdout, "renewed device "+id) {
		t.Fatalf("renew output: %s", out)
	}
	c1 := readCert(t, filepath.Join(dir, "device.crt"))
	if c1.SerialNumber.Cmp(c0.SerialNumber) == 0 || !samePub(c0, c1) || c1.Subject.String() != c0.Subject.String() {
		t.Fatalf("renewal: serial %x -> %x, same key %v, subject %s -> %s", c0.SerialNumber, c1.SerialNumber, samePub(c0, c1), c0.Subject, c1.Subject)
	}
	old, err := st.GetCertificate(ctx, c0.SerialNumber.Text(16))
	if err != nil || old.Status != registry.CertSuperseded {
		t.Fatalf("renewed certificate is %+v (%v), want superseded", old, err)
	}
	rec, err := st.GetCertificate(ctx, c1.SerialNumber.Text(16))
	if err != nil || rec.ReplacesSerial != c0.SerialNumber.Text(16) {
		t.Fatalf("new certificate record %+v (%v)", rec, err)
	}

	// The superseded certificate is refused (its files are kept as .prev).
	prevDir := filepath.Join(t.TempDir(), "prev")
	copyState(t, dir, prevDir, map[string]string{"device.crt.prev": "device.crt", "device.key.prev": "device.key", "chain.pem.prev": "chain.pem"})
	if res := run(t, nil, enrollBin, "rekey", "--dir", prevDir); res.code != 1 || !strings.Contains(res.stderr, "not-renewable") {
		t.Fatalf("re-key with the superseded certificate: want exit 1 not-renewable, got %s", res)
	}

	// Explicit re-key.
	mustRun(t, nil, enrollBin, "rekey", "--dir", dir)
	c2 := readCert(t, filepath.Join(dir, "device.crt"))
	if samePub(c1, c2) || c2.Subject.String() != c0.Subject.String() {
		t.Fatal("rekey kept the key or changed the identity")
	}

	// An admin forces a re-key: a plain renew is told so and re-keys by itself.
	if err := st.RequireRekey(ctx, id, true, nil, nil); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, nil, enrollBin, "renew", "--dir", dir)
	if !strings.Contains(out.stderr, "requires a new key") {
		t.Fatalf("renew after rotate did not report the forced re-key:\n%s", out)
	}
	c3 := readCert(t, filepath.Join(dir, "device.crt"))
	if samePub(c2, c3) {
		t.Fatal("forced re-key kept the key")
	}
	if d, _ := st.GetDevice(ctx, id); d.RekeyRequired {
		t.Fatal("the rotate flag was not cleared by the re-key")
	}

	status := mustRun(t, nil, enrollBin, "status", "--dir", dir)
	for _, want := range []string{"device:      " + id, "serial:      E2E-RENEW-1", "chain:       valid", c3.SerialNumber.Text(16)} {
		if !strings.Contains(status.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, status.stdout)
		}
	}
	ca.auditVerify(t)
}

func samePub(a, b *x509.Certificate) bool {
	return a.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(b.PublicKey)
}

// copyState copies a state directory's shared files, and renamed ones from
// rename (source name -> destination name).
func copyState(t *testing.T, from, to string, rename map[string]string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"ca.json": "ca.json", "root.crt": "root.crt", "device.key.password": "device.key.password"}
	for k, v := range rename {
		files[k] = v
	}
	for src, dst := range files {
		b, err := os.ReadFile(filepath.Join(from, src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
