package provision_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// readCountingStore counts the full CRL's reads of the revoked
// certificates.
type readCountingStore struct {
	registry.Store
	full atomic.Int64
}

func (s *readCountingStore) EachRevoked(ctx context.Context, part int, now time.Time, fn func(*registry.RevokedRow) error) error {
	if part == 0 {
		s.full.Add(1)
	}
	return s.Store.EachRevoked(ctx, part, now, fn)
}

// TestRefreshReadsRevokedOnlyOnChange: the refresh loop re-reads the
// revoked certificates (100,000 of them at a million devices) only when
// the registry's revocation revision moved or the CRL is half-way to its
// nextUpdate — not every tick.
func TestRefreshReadsRevokedOnlyOnChange(t *testing.T) {
	f := newRevFixture(t)
	ctx := context.Background()
	store := &readCountingStore{Store: f.store}
	now := func() time.Time { return *f.clock.Load() }
	rev, err := provision.NewRevocation(provision.RevocationConfig{
		Store: store, CRLSigner: f.ca.CA, Now: now, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	a := f.device(t, "SN-TICK-A")
	if err := rev.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n := store.full.Load(); n != 1 {
		t.Fatalf("first Refresh read the revoked certificates %d times, want 1", n)
	}
	for range 30 { // half an hour of ticks, nothing revoked
		f.advance(provision.DefaultRefresh)
		if err := rev.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.full.Load(); n != 1 {
		t.Errorf("30 idle ticks read the revoked certificates %d more times, want 0", n-1)
	}
	// Another replica (f.rev) revokes: the next tick rebuilds, once.
	if _, err := f.rev.RevokeCertificate(ctx, f.admin, pki.SerialHex(a.Certificate.SerialNumber), 1); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		f.advance(provision.DefaultRefresh)
		if err := rev.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.full.Load(); n != 2 {
		t.Errorf("a revocation then 3 ticks: %d reads in all, want 2", n)
	}
	c, err := rev.CRL(ctx)
	if err != nil || c.Entries != 1 {
		t.Fatalf("CRL = %+v, %v; want the revoked certificate listed", c, err)
	}
	// Half of the CRL's validity passed: rebuilt (a fresh nextUpdate), once.
	f.advance(provision.DefaultCRLValidity / 2)
	for range 3 {
		if err := rev.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		f.advance(provision.DefaultRefresh)
	}
	if n := store.full.Load(); n != 3 {
		t.Errorf("half the validity later: %d reads in all, want 3", n)
	}
}
