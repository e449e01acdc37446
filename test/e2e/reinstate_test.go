package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"devpki/api/wire"
	"devpki/pkg/registry"
)

// TestReinstateEndToEnd: an admin revokes a device, then 'ca devices
// reinstate' makes it active again without reviving its certificate; a
// token bound to its serial then re-enrolls it under the same device id
// with a new certificate. Reinstating an active or unknown device is
// refused, and every step is in the verified audit chain.
func TestReinstateEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	st := ca.openStore(t)
	ctx := context.Background()
	admin := []string{"--config", ca.Config, "--ca", srv.URL}

	const serial = "E2E-REINSTATE-1"
	first := filepath.Join(t.TempDir(), "first")
	id := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, first, serial)
	oldCert := readCert(t, filepath.Join(first, "device.crt"))
	oldSerial := oldCert.SerialNumber.Text(16)

	// Reinstating an active device is refused and changes nothing.
	if res := run(t, nil, caBin, append([]string{"devices", "reinstate", id}, admin...)...); res.code == 0 || !strings.Contains(res.stderr, "409") {
		t.Errorf("reinstate of an active device: want a 409 refusal, got %s", res)
	}
	if res := run(t, nil, caBin, append([]string{"devices", "reinstate", "no-such-device"}, admin...)...); res.code == 0 || !strings.Contains(res.stderr, "404") {
		t.Errorf("reinstate of an unknown device: want a 404 refusal, got %s", res)
	}

	mustRun(t, nil, caBin, append([]string{"devices", "revoke", id, "--reason", "keyCompromise"}, admin...)...)
	if d, err := st.GetDevice(ctx, id); err != nil || d.Status != registry.DeviceRevoked {
		t.Fatalf("device after revoke: %+v, %v", d, err)
	}

	out := mustRun(t, nil, caBin, append([]string{"devices", "reinstate", id, "--output", "json"}, admin...)...)
	var d wire.Device
	if err := json.Unmarshal([]byte(out.stdout), &d); err != nil {
		t.Fatalf("ca devices reinstate --output json: %v\n%s", err, out)
	}
	if d.ID != id || d.Serial != serial || d.Status != string(registry.DeviceActive) {
		t.Fatalf("reinstate reply %+v, want device %s active", d, id)
	}
	// Its certificate stays revoked: the device has no identity until it
	// re-enrolls.
	if rec, err := st.GetCertificate(ctx, oldSerial); err != nil || rec.Status != registry.CertRevoked {
		t.Errorf("certificate after reinstate: %+v, %v; want still revoked", rec, err)
	}

	bound := ca.mintToken(t, srv, "--serial", serial)
	second := filepath.Join(t.TempDir(), "second")
	id2 := ca.enrollOK(t, srv, bound.Token, second, serial)
	newCert := readCert(t, filepath.Join(second, "device.crt"))
	if id2 != id || newCert.Subject.CommonName != id {
		t.Errorf("re-enrolled device id %q (CN %q), want the original %q", id2, newCert.Subject.CommonName, id)
	}
	if newCert.SerialNumber.Cmp(oldCert.SerialNumber) == 0 {
		t.Fatal("re-enrollment returned the revoked certificate")
	}
	if rec, err := st.GetCertificate(ctx, newCert.SerialNumber.Text(16)); err != nil || rec.Status != registry.CertActive || rec.DeviceID != id {
		t.Errorf("new certificate: %+v, %v; want active for %s", rec, err, id)
	}
	if rec, err := st.GetCertificate(ctx, oldSerial); err != nil || rec.Status != registry.CertRevoked {
		t.Errorf("old certificate after re-enrollment: %+v, %v; want revoked", rec, err)
	}

	// The audit log has the reinstatement, by the CLI's admin.
	out = mustRun(t, nil, caBin, append([]string{"audit", "list", "--output", "json"}, admin...)...)
	var al wire.AuditList
	if err := json.Unmarshal([]byte(out.stdout), &al); err != nil {
		t.Fatalf("ca audit list --output json: %v\n%s", err, out)
	}
	var reinstated, refused int
	for _, ev := range al.Events {
		if ev.Action == "device.reinstate" && ev.Target == id {
			switch ev.Result {
			case registry.ResultOK:
				reinstated++
			case registry.ResultDenied:
				refused++
			}
		}
	}
	if reinstated != 1 || refused != 1 {
		t.Errorf("audit: %d device.reinstate ok and %d denied for %s, want 1 and 1", reinstated, refused, id)
	}
	ca.auditVerify(t)
}

// TestRevokedStaysRevokedEndToEnd: after an admin revokes a device, a plain
// token bound to its serial is refused with 409 device-revoked by the real
// binaries and stays unspent; a token minted with --reinstate brings the
// device back under its own id, audited as a reinstatement.
func TestRevokedStaysRevokedEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	db := ca.openSQL(t)
	admin := []string{"--config", ca.Config, "--ca", srv.URL}

	const serial = "E2E-REVOKED-1"
	id := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, filepath.Join(t.TempDir(), "first"), serial)
	mustRun(t, nil, caBin, append([]string{"devices", "revoke", id, "--reason", "keyCompromise"}, admin...)...)

	plain := ca.mintToken(t, srv, "--serial", serial)
	res := run(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, plain.Token, filepath.Join(t.TempDir(), "plain"), serial, "--tpm", "none")...)
	if res.code == 0 || !strings.Contains(res.stderr, "409") || !strings.Contains(res.stderr, "device-revoked") {
		t.Fatalf("enroll of a revoked device with a serial-bound token: want a 409 device-revoked refusal, got %s", res)
	}
	if n := usesLeft(t, db, plain.ID); n != 1 {
		t.Errorf("the refused token has %d uses left, want 1 (nothing spent)", n)
	}

	// Without a serial the reinstate flag is refused (by the CLI, before asking the CA).
	if res := run(t, nil, caBin, append([]string{"token", "create", "--reinstate"}, admin...)...); res.code == 0 {
		t.Errorf("token create --reinstate without --serial: want a refusal, got %s", res)
	}
	back := ca.mintToken(t, srv, "--serial", serial, "--reinstate")
	id2 := ca.enrollOK(t, srv, back.Token, filepath.Join(t.TempDir(), "back"), serial)
	if id2 != id {
		t.Errorf("reinstated device id %q, want the original %q", id2, id)
	}
	if n := usesLeft(t, db, back.ID); n != 0 {
		t.Errorf("the reinstate token has %d uses left after enrolling, want 0", n)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM audit_events WHERE action = 'device.reinstate' AND target = ? AND result = 'ok'`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d device.reinstate audit events for %s, want 1", n, id)
	}
	ca.auditVerify(t)
}
