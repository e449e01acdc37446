package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"devpki/pkg/registry"
)

// TestFaultCertificateInsertFails makes the registry refuse the certificate
// insert while `ca serve` runs: the device must get no certificate, the token
// must not be spent and no device row may remain (invariants 1 and 2). The
// server answers 500 (an unknown fault, not an unwritable store), which the
// agent retries until its --timeout, then exits 3. Once the fault is gone
// the same token works.
func TestFaultCertificateInsertFails(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	db := ca.openSQL(t)
	st := ca.openStore(t)
	ctx := context.Background()

	if _, err := db.Exec(`CREATE TRIGGER fail_cert BEFORE INSERT ON certificates BEGIN SELECT RAISE(ABORT, 'injected fault'); END;`); err != nil {
		t.Fatalf("create trigger: %v", err)
	}
	tok := ca.mintToken(t, srv, "--uses", "1")
	if n := usesLeft(t, db, tok.ID); n != 1 {
		t.Fatalf("fresh token has uses_left %d, want 1", n)
	}

	const serial = "E2E-FAULT-1"
	state := filepath.Join(t.TempDir(), "state")
	args := enrollArgs(srv, ca.Fingerprint, tok.Token, state, serial, "--timeout", "5s")
	res := run(t, nil, enrollBin, args...)
	if res.code != 3 {
		t.Fatalf("enroll while certificate inserts fail: want exit 3 (timed out retrying), got %s", res)
	}
	if n := strings.Count(res.stderr, "enroll failed: 500 Internal error [internal]; next try in"); n < 2 {
		t.Errorf("enroll while certificate inserts fail: %d retries of the server's 500 problem, want at least 2:\n%s", n, res)
	}
	if !strings.Contains(res.stderr, "--timeout") {
		t.Errorf("enroll gave up without saying what to do:\n%s", res)
	}
	requireNoFile(t, filepath.Join(state, "device.crt"))
	if n := usesLeft(t, db, tok.ID); n != 1 {
		t.Errorf("after a failed issuance the token has uses_left %d, want 1 (a failed issuance spends nothing)", n)
	}
	if _, err := st.GetDeviceBySerial(ctx, registry.DefaultTenant, serial); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("after a failed issuance: device %s lookup = %v, want ErrNotFound", serial, err)
	}
	var certs int
	if err := db.QueryRow(`SELECT count(*) FROM certificates WHERE kind = ?`, string(registry.KindDevice)).Scan(&certs); err != nil {
		t.Fatal(err)
	}
	if certs != 0 {
		t.Errorf("after a failed issuance: %d device certificates in the registry, want 0", certs)
	}

	if _, err := db.Exec(`DROP TRIGGER fail_cert`); err != nil {
		t.Fatalf("drop trigger: %v", err)
	}
	// The same device retries from the same state directory with the same token.
	res = mustRun(t, nil, enrollBin, args...)
	m := enrolledLine.FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("enroll after the fault: no 'enrolled device' line:\n%s", res)
	}
	cert := readCert(t, filepath.Join(state, "device.crt"))
	if cert.Subject.CommonName != m[1] {
		t.Errorf("device.crt CN %q, enroll printed %q", cert.Subject.CommonName, m[1])
	}
	if n := usesLeft(t, db, tok.ID); n != 0 {
		t.Errorf("after the successful enrollment the token has uses_left %d, want 0", n)
	}
	if _, err := st.GetCertificate(ctx, cert.SerialNumber.Text(16)); err != nil {
		t.Errorf("registry: certificate of the retried enrollment: %v", err)
	}
	ca.auditVerify(t)
}
