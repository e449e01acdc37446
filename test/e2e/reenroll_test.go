package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"devpki/pkg/registry"
)

// TestReEnrollFactoryReset: a device that lost its state (factory reset)
// enrolls again. An unbound token must not take over an enrolled serial; a
// token bound to that serial re-enrolls it under the same device id and
// revokes the old certificate.
func TestReEnrollFactoryReset(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	db := ca.openSQL(t)
	st := ca.openStore(t)
	ctx := context.Background()

	const serial = "E2E-RESET-1"
	first := filepath.Join(t.TempDir(), "first")
	id := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, first, serial)
	oldCert := readCert(t, filepath.Join(first, "device.crt"))

	// An unbound token cannot claim the enrolled serial, and is not spent.
	unbound := ca.mintToken(t, srv)
	clash := filepath.Join(t.TempDir(), "clash")
	res := run(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, unbound.Token, clash, serial)...)
	if res.code != 1 {
		t.Errorf("enroll of an enrolled serial with an unbound token: want exit 1, got %s", res)
	}
	if low := strings.ToLower(res.stderr); !strings.Contains(low, "serial") || !strings.Contains(low, "409") {
		t.Errorf("enroll of an enrolled serial with an unbound token: want a serial conflict (409) message:\n%s", res)
	}
	requireNoFile(t, filepath.Join(clash, "device.crt"))
	if n := usesLeft(t, db, unbound.ID); n != 1 {
		t.Errorf("token refused for a serial conflict has uses_left %d, want 1", n)
	}
	if rec, err := st.GetCertificate(ctx, oldCert.SerialNumber.Text(16)); err != nil || rec.Status != registry.CertActive {
		t.Errorf("after the refused takeover the first certificate is %v (err %v), want active", rec, err)
	}
	ca.enrollOK(t, srv, unbound.Token, filepath.Join(t.TempDir(), "other"), "E2E-RESET-2")

	// A token bound to the serial re-enrolls it from a fresh state dir.
	bound := ca.mintToken(t, srv, "--serial", serial)
	second := filepath.Join(t.TempDir(), "second")
	id2 := ca.enrollOK(t, srv, bound.Token, second, serial)
	newCert := readCert(t, filepath.Join(second, "device.crt"))
	if id2 != id || newCert.Subject.CommonName != id {
		t.Errorf("re-enrolled device id %q (CN %q), want the original %q", id2, newCert.Subject.CommonName, id)
	}
	if newCert.SerialNumber.Cmp(oldCert.SerialNumber) == 0 {
		t.Fatalf("re-enrollment returned the old certificate")
	}
	old, err := st.GetCertificate(ctx, oldCert.SerialNumber.Text(16))
	if err != nil {
		t.Fatalf("registry: first certificate: %v", err)
	}
	if old.Status != registry.CertRevoked || old.RevokedAt == nil {
		t.Errorf("first certificate: status %q revoked_at %v, want revoked", old.Status, old.RevokedAt)
	}
	cur, err := st.GetCertificate(ctx, newCert.SerialNumber.Text(16))
	if err != nil {
		t.Fatalf("registry: new certificate: %v", err)
	}
	if cur.Status != registry.CertActive || cur.DeviceID != id {
		t.Errorf("new certificate: status %q device %q, want active for %q", cur.Status, cur.DeviceID, id)
	}
	var devices int
	if err := db.QueryRow(`SELECT count(*) FROM devices WHERE serial = ?`, serial).Scan(&devices); err != nil {
		t.Fatal(err)
	}
	if devices != 1 {
		t.Errorf("%d device rows for serial %s, want 1", devices, serial)
	}
	ca.auditVerify(t)
}
