package provision_test

import (
	"context"
	"math/big"
	"testing"
	"time"

	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestRekeyDeadline: a rotated device that does not re-key by its deadline
// loses its certificates (listed on the CRL), once; a device that re-keyed in
// time, or has no deadline, keeps them.
func TestRekeyDeadline(t *testing.T) {
	f := newRevFixture(t)
	ctx := context.Background()
	late := f.device(t, "SN-LATE")
	onTime := f.device(t, "SN-ONTIME")
	noDeadline := f.device(t, "SN-NODEADLINE")
	deadline := time.Now().Add(time.Hour)
	for _, r := range []*provision.Result{late, onTime} {
		if err := f.store.RequireRekey(ctx, r.DeviceID, true, &deadline, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.store.RequireRekey(ctx, noDeadline.DeviceID, true, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.renew(t, onTime.Certificate, csrFor(t, "SN-ONTIME", macFor("SN-ONTIME"))); err != nil {
		t.Fatal(err)
	}
	if n, err := provision.EnforceRekeyDeadlines(ctx, f.store, f.rev, time.Now()); err != nil || n != 0 {
		t.Fatalf("before the deadline: %d devices, %v", n, err)
	}
	n, err := provision.EnforceRekeyDeadlines(ctx, f.store, f.rev, deadline.Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("after the deadline: %d devices, %v; want 1", n, err)
	}
	rec, _ := f.store.GetCertificate(ctx, late.Certificate.SerialNumber.Text(16))
	if rec.Status != registry.CertRevoked || rec.RevocationReason != registry.ReasonSuperseded {
		t.Fatalf("late device's certificate is %s (reason %d), want revoked/superseded", rec.Status, rec.RevocationReason)
	}
	for _, r := range []*provision.Result{onTime, noDeadline} {
		if d, _ := f.store.GetDevice(ctx, r.DeviceID); d.Status != registry.DeviceActive {
			t.Fatalf("device %s is %s", r.DeviceID, d.Status)
		}
	}
	_, rl := f.crl(t)
	listed := false
	for _, e := range rl.RevokedCertificateEntries {
		listed = listed || e.SerialNumber.Cmp(late.Certificate.SerialNumber) == 0
		if e.SerialNumber.Cmp(new(big.Int).Set(noDeadline.Certificate.SerialNumber)) == 0 {
			t.Fatal("the device without a deadline was revoked")
		}
	}
	if !listed {
		t.Fatal("the late device's certificate is not on the CRL")
	}
	if n, err := provision.EnforceRekeyDeadlines(ctx, f.store, f.rev, deadline.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("second pass handled %d devices (%v), want 0", n, err)
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}
