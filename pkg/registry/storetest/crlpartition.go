package storetest

import (
	"context"
	"testing"
	"time"

	"devpki/pkg/registry"
)

func revisions(t *testing.T, s registry.Store) *registry.CRLRevisions {
	t.Helper()
	r, err := s.CRLRevisions(context.Background())
	if err != nil {
		t.Fatalf("CRLRevisions: %v", err)
	}
	return r
}

// testCRLPartitions: partition lists hold only their partition's revoked,
// unexpired certificates; every write that revokes bumps the revision of
// the whole and of the partitions it revoked in, and nothing else does.
func testCRLPartitions(t *testing.T, s registry.Store) {
	ctx := context.Background()
	now := time.Now()
	if r := revisions(t, s); r.All != 0 || len(r.Partitions) != 0 {
		t.Fatalf("fresh store revisions = %+v, want zero", r)
	}
	mk := func(part int) *registry.Certificate {
		c := &registry.Certificate{
			Serial: randHex(t, 20), Kind: registry.KindClient, Subject: "CN=x", CRLPartition: part,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DER: []byte{1},
		}
		if err := s.RecordCertificate(ctx, c, nil); err != nil {
			t.Fatalf("RecordCertificate: %v", err)
		}
		return c
	}
	a3, b3, c5, legacy := mk(3), mk(3), mk(5), mk(0)
	if got, err := s.GetCertificate(ctx, a3.Serial); err != nil || got.CRLPartition != 3 {
		t.Fatalf("GetCertificate = %+v, %v; want partition 3", got, err)
	}
	if r := revisions(t, s); r.All != 0 {
		t.Errorf("recording certificates bumped the revision: %+v", r)
	}
	for _, c := range []*registry.Certificate{a3, c5, legacy} {
		if _, err := s.RevokeCertificate(ctx, c.Serial, registry.ReasonKeyCompromise, time.Time{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	r := revisions(t, s)
	if r.All != 3 || r.Partitions[3] != 1 || r.Partitions[5] != 1 || len(r.Partitions) != 2 {
		t.Errorf("revisions after three revocations = %+v, want all 3, partitions 3 and 5 at 1", r)
	}
	// Revoking again writes nothing, revisions included.
	if _, err := s.RevokeCertificate(ctx, a3.Serial, registry.ReasonKeyCompromise, time.Time{}, nil); err == nil {
		t.Fatal("second revocation succeeded")
	}
	if r2 := revisions(t, s); r2.All != r.All {
		t.Errorf("an idempotent revocation bumped the revision: %+v", r2)
	}
	if l := eachRevoked(t, s, 3, now); len(l) != 1 || l[0].Serial != a3.Serial {
		t.Errorf("EachRevoked(3) = %+v; want only %s (not the active %s)", l, a3.Serial, b3.Serial)
	}
	if l := eachRevoked(t, s, 4, now); len(l) != 0 {
		t.Errorf("EachRevoked(4) = %+v; want none", l)
	}
	if l := eachRevoked(t, s, 3, now.Add(2*time.Hour)); len(l) != 0 {
		t.Errorf("EachRevoked(3) after expiry = %+v; want none", l)
	}
	if all := eachRevoked(t, s, 0, now); len(all) != 3 {
		t.Errorf("EachRevoked(0) = %d entries; want 3 (every partition and the legacy one)", len(all))
	}

	// A device revocation bumps each partition of its certificates once.
	e := newEnrollment(t, registry.DefaultTenant, "SN-PART", nil)
	e.Certificate.CRLPartition = 7
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatal(err)
	}
	before := revisions(t, s)
	if _, err := s.RevokeDevice(ctx, e.Device.ID, registry.ReasonKeyCompromise, revokeEvent("device.revoke", e.Device.ID)); err != nil {
		t.Fatal(err)
	}
	after := revisions(t, s)
	if after.All != before.All+1 || after.Partitions[7] != before.Partitions[7]+1 {
		t.Errorf("RevokeDevice: revisions %+v → %+v, want all and partition 7 bumped", before, after)
	}

	// A re-enrollment revokes the earlier certificates (superseded).
	e = newEnrollment(t, registry.DefaultTenant, "SN-PART2", nil)
	e.Certificate.CRLPartition = 9
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatal(err)
	}
	before = revisions(t, s)
	re := reenrolling(t, s, newEnrollment(t, registry.DefaultTenant, "SN-PART2", nil))
	re.Certificate.CRLPartition = 2
	if err := s.Enroll(ctx, re); err != nil {
		t.Fatal(err)
	}
	after = revisions(t, s)
	if after.All != before.All+1 || after.Partitions[9] != before.Partitions[9]+1 || after.Partitions[2] != before.Partitions[2] {
		t.Errorf("re-enrollment: revisions %+v → %+v, want all and partition 9 (the old certificate's) bumped", before, after)
	}
	if l := eachRevoked(t, s, 9, now); len(l) != 1 || l[0].Serial != e.Certificate.Serial || l[0].Reason != registry.ReasonSuperseded {
		t.Errorf("EachRevoked(9) = %+v; want the superseded %s", l, e.Certificate.Serial)
	}
	// A new enrollment revokes nothing.
	before = revisions(t, s)
	enrolled(t, s, "SN-PART3")
	if r := revisions(t, s); r.All != before.All {
		t.Errorf("a new enrollment bumped the revision: %+v → %+v", before, r)
	}
	verify(t, s)
}

// testPartitionCRLNumbers: each partition counts on its own from 1,
// strictly increasing, apart from the full CRL's counter.
func testPartitionCRLNumbers(t *testing.T, s registry.Store) {
	ctx := context.Background()
	for _, p := range []int{1, 2} {
		for want := int64(1); want <= 3; want++ {
			n, err := s.NextPartitionCRLNumber(ctx, p)
			if err != nil || n != want {
				t.Fatalf("NextPartitionCRLNumber(%d) = %d, %v; want %d", p, n, err, want)
			}
		}
	}
	if n, err := s.NextCRLNumber(ctx); err != nil || n != 1 {
		t.Errorf("NextCRLNumber after partition numbers = %d, %v; want 1", n, err)
	}
	if _, err := s.NextPartitionCRLNumber(ctx, 0); err == nil {
		t.Error("NextPartitionCRLNumber(0) succeeded")
	}
	// Taking numbers does not look like a revocation.
	if r := revisions(t, s); r.All != 0 || r.Partitions[1] != 0 {
		t.Errorf("revisions after taking numbers = %+v, want zero", r)
	}
}
