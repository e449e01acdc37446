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
