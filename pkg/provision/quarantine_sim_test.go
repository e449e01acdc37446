//go:build tpmsimulator

package provision_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// staleStore hides the devices from the next hide ListDevices calls, as if
// another replica's enrollment committed just after the read.
type staleStore struct {
	registry.Store
	hide atomic.Int32
}

func (s *staleStore) ListDevices(ctx context.Context, f registry.DeviceFilter) ([]*registry.Device, error) {
	if s.hide.Add(-1) >= 0 {
		return nil, nil
	}
	return s.Store.ListDevices(ctx, f)
}

// TestTPMCloneHeld: a clone claim — an enrolled EK with another serial, an
// enrolled serial with another EK, or either one caught only by the store —
// gets no certificate and no device, and is held for an admin: one
// quarantine record per claim, counted on repeats, with its audit event.
func TestTPMCloneHeld(t *testing.T) {
	ctx := context.Background()
	m := ektest.New(t)
	f := newTPMFixture(t, m.Roots(), m.Intermediates())
	stale := &staleStore{Store: f.store}
	cfg := &provision.TPMConfig{EKRoots: m.Roots(), EKIntermediates: m.Intermediates(), Challenger: verify.NewChallenger(verify.Config{})}
	svc, err := provision.New(provision.Config{Store: stale, Issuer: f.issuer, TrustDomain: "test.devpki", TPM: cfg})
	if err != nil {
		t.Fatal(err)
	}
	att := tpmAttestor(stale, cfg)
	tn := mustTenant(t, f.store)
	const mac = "02:00:00:00:00:0a"

	d := openSim(t, "00000000000000a1", m)
	ch, err := svc.TPMChallenge(ctx, d.challengeRequest(t, "SN-HOLD-1", mac))
	if err != nil {
		t.Fatal(err)
	}
	enrolled, err := svc.Enroll(ctx, att, d.answer(t, ch, "SN-HOLD-1", mac))
	if err != nil {
		t.Fatal(err)
	}

	held := func(t *testing.T, err error, serial, ek string, reason registry.QuarantineReason, attempts int) *registry.Quarantine {
		t.Helper()
		id := provision.QuarantineID(err)
		if !errors.Is(err, provision.ErrCloneSuspect) || id == "" {
			t.Fatalf("err = %v, want ErrCloneSuspect with a quarantine id", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "held for an administrator") || strings.Contains(msg, enrolled.DeviceID) {
			t.Errorf("the device is told %q: want 'held for an administrator' and not the enrolled device's id", msg)
		}
		q, err := f.store.GetQuarantine(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if q.TenantID != tn.ID || q.Serial != serial || q.EKHash != ek || q.Reason != reason || q.ConflictDeviceID != enrolled.DeviceID ||
			q.Attempts != attempts || q.Status != registry.QuarantineHeld || len(q.MACs) != 1 || q.MACs[0] != "02000000000a" ||
			q.SourceAddr != "192.0.2.7" {
			t.Errorf("quarantine = %+v, want serial %s EK %s reason %s device %s attempts %d", q, serial, ek, reason, enrolled.DeviceID, attempts)
		}
		if ev := lastAudit(t, f.store); ev.Action != "enroll.clone-suspect" || ev.Result != registry.ResultDenied || ev.Target != id ||
			!strings.Contains(ev.Detail, ek) || !strings.Contains(ev.Detail, enrolled.DeviceID) {
			t.Errorf("audit = %+v", ev)
		}
		if _, err := f.store.GetDeviceBySerial(ctx, tn.ID, serial); serial != "SN-HOLD-1" && !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("device %s after the clone claim: %v, want none", serial, err)
		}
		return q
	}

	t.Run("enrolled EK claims another serial, twice", func(t *testing.T) {
		before := f.issuer.n.Load()
		_, err := svc.TPMChallenge(ctx, d.challengeRequest(t, "SN-HOLD-2", mac))
		first := held(t, err, "SN-HOLD-2", d.ekHash, registry.ReasonEKOtherSerial, 1)
		_, err = svc.TPMChallenge(ctx, d.challengeRequest(t, "SN-HOLD-2", mac))
		if again := held(t, err, "SN-HOLD-2", d.ekHash, registry.ReasonEKOtherSerial, 2); again.ID != first.ID || again.LastSeen.Before(first.LastSeen) {
			t.Errorf("repeat = %+v, want record %s updated", again, first.ID)
		}
		if f.issuer.n.Load() != before {
			t.Error("a certificate was signed")
		}
	})

	if err := d.tp.Close(); err != nil {
		t.Fatal(err)
	}

	other := openSim(t, "00000000000000a2", m)
	defer other.tp.Close()
	t.Run("enrolled serial claimed by another EK", func(t *testing.T) {
		before := f.issuer.n.Load()
		_, err := svc.TPMChallenge(ctx, other.challengeRequest(t, "SN-HOLD-1", mac))
		held(t, err, "SN-HOLD-1", other.ekHash, registry.ReasonSerialOtherEK, 1)
		if dev, err := f.store.GetDevice(ctx, enrolled.DeviceID); err != nil || dev.EKHash != d.ekHash || dev.Status != registry.DeviceActive {
			t.Errorf("enrolled device after the claim = %+v, %v", dev, err)
		}
		if f.issuer.n.Load() != before {
			t.Error("a certificate was signed")
		}
	})

	// The store's EK index catches what a stale read let through: two
	// challenges for two serials, the first enrolls, the second passes the
	// clone check on a stale read and is refused when it commits.
	t.Run("race caught by the store's EK index", func(t *testing.T) {
		chA, err := svc.TPMChallenge(ctx, other.challengeRequest(t, "SN-RACE-A", macFor("SN-RACE-A")))
		if err != nil {
			t.Fatal(err)
		}
		chB, err := svc.TPMChallenge(ctx, other.challengeRequest(t, "SN-RACE-B", macFor("SN-RACE-B")))
		if err != nil {
			t.Fatal(err)
		}
		won, err := svc.Enroll(ctx, att, other.answer(t, chA, "SN-RACE-A", macFor("SN-RACE-A")))
		if err != nil {
			t.Fatal(err)
		}
		stale.hide.Store(1) // the clone check of the next enrollment reads before A committed
		res, err := svc.Enroll(ctx, att, other.answer(t, chB, "SN-RACE-B", macFor("SN-RACE-B")))
		if res != nil || !errors.Is(err, provision.ErrCloneSuspect) {
			t.Fatalf("second enrollment of one EK = %+v, %v; want ErrCloneSuspect", res, err)
		}
		q, qerr := f.store.GetQuarantine(ctx, provision.QuarantineID(err))
		if qerr != nil || q.Reason != registry.ReasonEKOtherSerial || q.Serial != "SN-RACE-B" || q.ConflictDeviceID != won.DeviceID {
			t.Fatalf("quarantine = %+v, %v; want SN-RACE-B held against %s", q, qerr, won.DeviceID)
		}
		if _, err := f.store.GetDeviceBySerial(ctx, tn.ID, "SN-RACE-B"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("device SN-RACE-B: %v, want none", err)
		}
		if devs, err := f.store.ListDevices(ctx, registry.DeviceFilter{EKHash: other.ekHash}); err != nil || len(devs) != 1 {
			t.Errorf("devices of the EK: %d, %v; want 1", len(devs), err)
		}
	})

	// Revoking the enrolled device hands its serial to no other TPM: the
	// claim is still refused and held (the same record, counted).
	t.Run("after revoking the enrolled device, still held", func(t *testing.T) {
		if _, err := f.store.RevokeDevice(ctx, enrolled.DeviceID, registry.ReasonKeyCompromise, &registry.AuditEvent{
			TenantID: tn.ID, Actor: "admin:test", Action: "device.revoke", Target: enrolled.DeviceID, Result: registry.ResultOK,
		}); err != nil {
			t.Fatal(err)
		}
		_, err := svc.TPMChallenge(ctx, other.challengeRequest(t, "SN-HOLD-1", mac))
		held(t, err, "SN-HOLD-1", other.ekHash, registry.ReasonSerialOtherEK, 2)
	})

	held2, err := f.store.ListQuarantine(ctx, registry.QuarantineFilter{TenantID: tn.ID, Status: registry.QuarantineHeld})
	if err != nil || len(held2) != 3 {
		t.Fatalf("held claims = %d, %v; want 3 (SN-HOLD-2, SN-HOLD-1 by another EK, SN-RACE-B)", len(held2), err)
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}
