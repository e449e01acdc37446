package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// revokedEntry is a CRL line as the tests compare it: a RevokedRow
// copied out of its callback.
type revokedEntry struct {
	Serial      string
	RevokedAt   time.Time
	Reason      int
	IssuerKeyID string
}

// eachRevoked collects what EachRevoked reads for partition part at now.
func eachRevoked(t *testing.T, s registry.Store, part int, now time.Time) []revokedEntry {
	t.Helper()
	var out []revokedEntry
	err := s.EachRevoked(context.Background(), part, now, func(r *registry.RevokedRow) error {
		out = append(out, revokedEntry{Serial: string(r.Serial), RevokedAt: time.Unix(r.RevokedAt, 0).UTC(),
			Reason: r.Reason, IssuerKeyID: string(r.IssuerKeyID)})
		return nil
	})
	if err != nil {
		t.Fatalf("EachRevoked(%d): %v", part, err)
	}
	return out
}

func hasSerial(entries []revokedEntry, serial string) bool {
	for _, e := range entries {
		if e.Serial == serial {
			return true
		}
	}
	return false
}

// testEachRevoked: EachRevoked streams the revoked, unexpired certificates
// of the whole CA (partition 0) or of one partition, in serial order, with
// the revocation time in whole Unix seconds (sub-second times included),
// the reason and the issuer recorded; not the active nor the expired ones;
// an error from the callback stops the read.
func testEachRevoked(t *testing.T, s registry.Store) {
	ctx := context.Background()
	now := time.Now()
	var want []revokedEntry // the revoked, unexpired ones
	partOf := map[string]int{}
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
		if i != 11 {
			want = append(want, revokedEntry{Serial: c.Serial, RevokedAt: at.Truncate(time.Second).UTC(), Reason: i % 6,
				IssuerKeyID: c.IssuerKeyID})
			partOf[c.Serial] = c.CRLPartition
		}
	}
	slices.SortFunc(want, func(a, b revokedEntry) int { return strings.Compare(a.Serial, b.Serial) })
	same := func(what string, got, want []revokedEntry) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: EachRevoked read %d rows %+v, want %d %+v", what, len(got), got, len(want), want)
		}
		for i, w := range want {
			if g := got[i]; g.Serial != w.Serial || !g.RevokedAt.Equal(w.RevokedAt) || g.Reason != w.Reason || g.IssuerKeyID != w.IssuerKeyID {
				t.Errorf("%s row %d: EachRevoked %+v, want %+v", what, i, g, w)
			}
		}
	}
	same("full", eachRevoked(t, s, 0, now), want)
	for part := 1; part <= 3; part++ {
		var in []revokedEntry
		for _, w := range want {
			if partOf[w.Serial] == part {
				in = append(in, w)
			}
		}
		same(fmt.Sprintf("partition %d", part), eachRevoked(t, s, part, now), in)
	}
	if got := eachRevoked(t, s, 4000, now); len(got) != 0 {
		t.Errorf("EachRevoked(4000) = %+v, want nothing", got)
	}
	if got := eachRevoked(t, s, 0, now.Add(2*time.Hour)); len(got) != 0 {
		t.Errorf("EachRevoked after every expiry = %+v, want nothing", got)
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
