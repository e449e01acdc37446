package provision_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// flakyStore is a real registry whose readiness an outage test turns off:
// Ready answers registry.ErrUnavailable while down, as sqlstore does after
// a commit failed (see sqlstore's unavailable tests for the real fault).
type flakyStore struct {
	registry.Store
	down atomic.Bool
}

func (s *flakyStore) Ready(context.Context) error {
	if s.down.Load() {
		return fmt.Errorf("%w: test outage", registry.ErrUnavailable)
	}
	return nil
}

// TestStoreUnavailableSignsNothing: while the store says it cannot commit,
// enrollment and renewal are refused with registry.ErrUnavailable before
// any signature and spend nothing; once it can, the same token enrolls.
func TestStoreUnavailableSignsNothing(t *testing.T) {
	f := newFixture(t)
	st := &flakyStore{Store: f.store}
	svc, err := provision.New(provision.Config{Store: st, Issuer: f.issuer, TrustDomain: "test.devpki"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	enrolled, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-UP-1", macFor("SN-UP-1"))
	if err != nil {
		t.Fatal(err)
	}
	tok := f.mint(t, provision.TokenSpec{})
	_, _, csrPEM := f.ca.DeviceKeyAndCSR(t, "SN-DOWN-1", macFor("SN-DOWN-1"))
	req := &provision.Request{Credential: tok, CSRPEM: csrPEM, SourceAddr: "192.0.2.1"}

	st.down.Store(true)
	before := f.issuer.n.Load()
	if _, err := svc.Enroll(ctx, provision.TokenAttestor{Store: st}, req); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("enroll during the outage = %v, want ErrUnavailable", err)
	}
	if _, err := svc.Renew(ctx, &provision.RenewRequest{Peer: enrolled.Certificate, SourceAddr: "192.0.2.1"}); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("renew during the outage = %v, want ErrUnavailable", err)
	}
	if n := f.issuer.n.Load() - before; n != 0 {
		t.Fatalf("%d certificates signed during the outage, want 0", n)
	}
	if _, err := f.store.GetDeviceBySerial(ctx, registry.DefaultTenant, "SN-DOWN-1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("device of the refused enrollment: %v, want ErrNotFound", err)
	}

	st.down.Store(false)
	res, err := svc.Enroll(ctx, provision.TokenAttestor{Store: st}, req)
	if err != nil {
		t.Fatalf("the same token after the outage: %v (the outage must not have spent it)", err)
	}
	if res.Certificate.Subject.SerialNumber != "SN-DOWN-1" || f.issuer.n.Load()-before != 1 {
		t.Errorf("after the outage: %s, %d signatures", res.Certificate.Subject, f.issuer.n.Load()-before)
	}
}
