package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// testEachRevoked: EachRevoked streams the rows ListRevoked and
// ListRevokedPartition return, in their order, with the revocation time in
// whole Unix seconds (sub-second times included) and the issuer recorded;
// an error from the callback stops the read.
func testEachRevoked(t *testing.T, s registry.Store) {
	ctx := context.Background()
	now := time.Now()
	for i := range 12 {
		c := &registry.Certificate{
			Serial: randHex(t, 20), Kind: registry.KindClient, Subject: "CN=x", CRLPartition: 1 + i%3,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DER: []byte{1},
		}
		if i%4 == 0 {
			c.IssuerKeyID = "kid-" + c.Serial[:6]
		}
		if i == 11 {
			c.NotAfter = now.Add(-time.Minute) // expired: listed nowhere
		}
		if err := s.RecordCertificate(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
		if i == 10 {
			continue // active
		}
		// A time with microseconds, on either side of a second.
		at := now.Add(-time.Duration(i) * time.Hour).Truncate(time.Second).Add(time.Duration(i*83_000+1) * time.Microsecond)
		if _, err := s.RevokeCertificate(ctx, c.Serial, i%6, at, nil); err != nil {
			t.Fatal(err)
		}
	}
	collect := func(part int) []registry.RevokedEntry {
		t.Helper()
		var out []registry.RevokedEntry
		err := s.EachRevoked(ctx, part, now, func(r *registry.RevokedRow) error {
			out = append(out, registry.RevokedEntry{Serial: string(r.Serial), RevokedAt: time.Unix(r.RevokedAt, 0).UTC(),
				Reason: r.Reason, IssuerKeyID: string(r.IssuerKeyID)})
			return nil
		})
		if err != nil {
			t.Fatalf("EachRevoked(%d): %v", part, err)
		}
		return out
	}
	same := func(what string, got, want []registry.RevokedEntry) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: EachRevoked read %d rows, the list has %d", what, len(got), len(want))
		}
		for i, w := range want {
			g := got[i]
			if g.Serial != w.Serial || !g.RevokedAt.Equal(w.RevokedAt.Truncate(time.Second)) || g.Reason != w.Reason || g.IssuerKeyID != w.IssuerKeyID {
				t.Errorf("%s row %d: EachRevoked %+v, list %+v", what, i, g, w)
			}
		}
	}
	all, err := s.ListRevoked(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 10 {
		t.Fatalf("ListRevoked = %d rows, want the 10 revoked here", len(all))
	}
	same("full", collect(0), all)
	for part := 1; part <= 3; part++ {
		l, err := s.ListRevokedPartition(ctx, part, now)
		if err != nil {
			t.Fatal(err)
		}
		same("partition", collect(part), l)
	}
	if got := collect(4000); len(got) != 0 {
		t.Errorf("EachRevoked(4000) = %+v, want nothing", got)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.EachRevoked(ctx, 0, now, func(*registry.RevokedRow) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("EachRevoked with a failing callback = %v after %d rows, want stop after 1", err, n)
	}
	if err := s.EachRevoked(ctx, -1, now, func(*registry.RevokedRow) error { return nil }); err == nil {
		t.Error("EachRevoked(-1) succeeded")
	}
}
