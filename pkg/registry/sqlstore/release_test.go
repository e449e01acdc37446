package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestPostgresReplicasReleaseRace: two replicas on one database release,
// at once, two claims against one device (each re-binding it to its own
// EK), or one claim twice: exactly one write commits; the other finds the
// device changed or the claim no longer held, and writes nothing.
func TestPostgresReplicasReleaseRace(t *testing.T) {
	a, b := newPostgresPair(t)
	ctx := context.Background()
	for round := range 6 {
		sameClaim := round%2 == 1
		serial := fmt.Sprintf("RR%d", round)
		id := "dev-" + serial
		ek := func(i int) string { return fmt.Sprintf("%062x%02d", round+1, i) }
		e := &registry.Enrollment{
			Device: &registry.Device{ID: id, TenantID: registry.DefaultTenant, Serial: serial, Method: "tpm", EKHash: ek(0)},
			Certificate: &registry.Certificate{Serial: fmt.Sprintf("%x%02d", ek(0)[:8], round), Kind: registry.KindDevice, DeviceID: id,
				NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), DER: []byte{1}},
		}
		if err := a.Enroll(ctx, e); err != nil {
			t.Fatal(err)
		}
		writes := make([]*registry.ReleaseWrite, 2)
		var q *registry.Quarantine
		for i := range writes {
			if i == 0 || !sameClaim {
				q = &registry.Quarantine{ID: fmt.Sprintf("q-%d-%d", round, i), TenantID: registry.DefaultTenant, Serial: serial,
					EKHash: ek(i + 1), Reason: registry.ReasonSerialOtherEK, ConflictDeviceID: id, ConflictEKHash: ek(0)}
				if err := a.HoldClaim(ctx, q, nil); err != nil {
					t.Fatal(err)
				}
			}
			writes[i] = &registry.ReleaseWrite{ClaimID: q.ID, By: fmt.Sprintf("admin:%d", i), DeviceID: id,
				ExpectEKHash: ek(0), ExpectStatus: registry.DeviceActive, EKHash: q.EKHash, Status: registry.DeviceActive,
				ClearRekey: true, ClearAK: true, Reason: registry.ReasonSuperseded,
				Audit: &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: fmt.Sprintf("admin:%d", i),
					Action: "quarantine.release", Target: q.ID, Result: registry.ResultOK}}
		}
		stores := []*Store{a, b}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = stores[i].ApplyRelease(ctx, writes[i])
			}()
		}
		close(start)
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won < 0:
				won = i
			case errors.Is(err, registry.ErrClaimStale), sameClaim && errors.Is(err, registry.ErrClaimNotHeld):
			default:
				t.Fatalf("round %d (same claim %v): %v", round, sameClaim, errs)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: no write won: %v", round, errs)
		}
		d, err := a.GetDevice(ctx, id)
		if err != nil || d.EKHash != writes[won].EKHash {
			t.Fatalf("round %d: device %+v, %v; want the EK of the winner %d", round, d, err, won)
		}
		c, err := a.GetCertificate(ctx, e.Certificate.Serial)
		if err != nil || c.Status != registry.CertRevoked {
			t.Fatalf("round %d: certificate %+v, %v", round, c, err)
		}
		if !sameClaim {
			lost := writes[1-won]
			if q, err := a.GetQuarantine(ctx, lost.ClaimID); err != nil || q.Status != registry.QuarantineHeld {
				t.Fatalf("round %d: the losing claim = %+v, %v; want still held", round, q, err)
			}
		}
	}
	if err := a.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
	evs, err := a.ListAudit(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	released := 0
	for _, ev := range evs {
		if ev.Action == "quarantine.release" {
			released++
		}
	}
	if released != 6 {
		t.Fatalf("%d release audit events, want 6 (one per round)", released)
	}
}
