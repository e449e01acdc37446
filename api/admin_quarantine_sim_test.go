//go:build tpmsimulator

package api_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/registry"
)

// TestTPMCloneHeldOverHTTP: a TPM whose EK is enrolled claims another
// serial; the device gets 403 clone-suspect saying the claim is held, and
// the admin finds it with devices?status=quarantined and dismisses it.
func TestTPMCloneHeldOverHTTP(t *testing.T) {
	ctx := context.Background()
	f, m, c := newSimFixture(t)
	admin := f.apiClient(f.adminCert(f.ca, "default", "root", registry.RoleAdmin, ""))
	d := openSimDevice(t, "00000000000000b1", m)
	ch, err := c.TPMChallenge(ctx, d.claim(t, "SN-HQ-1"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.TPMEnroll(ctx, d.answer(t, ch, "SN-HQ-1").Request)
	if err != nil {
		t.Fatal(err)
	}

	for range 2 {
		_, err = c.TPMChallenge(ctx, d.claim(t, "SN-HQ-2"))
		var re *client.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 403 || re.Problem == nil || re.Problem.Slug() != wire.SlugCloneSuspect ||
			!strings.Contains(re.Problem.Detail, "held for an administrator") || strings.Contains(re.Problem.Detail, res.DeviceID) {
			t.Fatalf("clone claim: %v, want 403 clone-suspect saying it is held, without the enrolled device", err)
		}
	}
	l, err := admin.ListQuarantined(ctx, nil)
	if err != nil || len(l.Quarantined) != 1 {
		t.Fatalf("quarantined: %+v, %v", l, err)
	}
	q := l.Quarantined[0]
	if q.Serial != "SN-HQ-2" || q.EKHash != d.ekHash || q.Reason != string(registry.ReasonEKOtherSerial) ||
		q.ConflictDeviceID != res.DeviceID || q.Attempts != 2 || len(q.MACs) != 1 {
		t.Fatalf("claim = %+v", q)
	}
	if d, err := admin.DismissQuarantined(ctx, q.ID); err != nil || d.Status != "dismissed" {
		t.Fatalf("dismiss: %+v, %v", d, err)
	}
	if l, err := admin.ListQuarantined(ctx, nil); err != nil || len(l.Quarantined) != 0 {
		t.Fatalf("quarantined after dismissal: %+v, %v", l, err)
	}
}
