package provision_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

const partCRLURL = "http://ca.test/crl"

// partReplica is one replica's Revocation publishing partition CRLs, with
// its own count of CRL signatures.
func (f *revFixture) partReplica(t *testing.T) (*provision.Revocation, *countingCRLSigner) {
	t.Helper()
	now := func() time.Time { return *f.clock.Load() }
	resp, err := pki.NewOCSPResponder(context.Background(), pki.OCSPResponderOptions{CA: f.ca.CA, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	signer := &countingCRLSigner{CRLSigner: f.ca.CA}
	rev, err := provision.NewRevocation(provision.RevocationConfig{
		Store: f.store, CRLSigner: signer, OCSP: resp, Now: now, CRLURL: partCRLURL, Refresh: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return rev, signer
}

// partitionedCerts issues n client certificates spread over parts partition
// CRLs and records them.
func (f *revFixture) partitionedCerts(t *testing.T, n, parts int) []*x509.Certificate {
	t.Helper()
	iss, err := pki.NewIssuer(pki.IssuerOptions{CA: f.ca.CA, TrustDomain: "devpki.local", CRLURL: partCRLURL, CRLPartitions: parts})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var out []*x509.Certificate
	for range n {
		is, err := iss.IssueClient(context.Background(), &pki.ClientRequest{PublicKey: key.Public(), CommonName: "svc"})
		if err != nil {
			t.Fatal(err)
		}
		rec := provision.CertificateRecord(is.Certificate, registry.KindClient, registry.DefaultTenant, "", time.Now())
		if rec.CRLPartition != pki.CRLPartition(is.Certificate.SerialNumber, parts) {
			t.Fatalf("record partition %d, certificate names %v", rec.CRLPartition, is.Certificate.CRLDistributionPoints)
		}
		if err := f.store.RecordCertificate(context.Background(), rec, nil); err != nil {
			t.Fatal(err)
		}
		out = append(out, is.Certificate)
	}
	return out
}

// partitionCRL fetches partition n from rev and checks what a relying
// party checks: signature, critical IDP naming the partition's URL.
func partitionCRL(t *testing.T, f *revFixture, rev *provision.Revocation, n int) (*provision.CRL, *x509.RevocationList) {
	t.Helper()
	c, err := rev.PartitionCRL(context.Background(), n)
	if err != nil {
		t.Fatalf("PartitionCRL(%d): %v", n, err)
	}
	rl, err := x509.ParseRevocationList(c.DER)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(f.ca.CA.Intermediate); err != nil {
		t.Fatal(err)
	}
	idp, err := pki.ParseIDP(rl)
	if err != nil || idp == nil || idp.URI != pki.CRLPartitionURL(partCRLURL, n) || !idp.OnlyContainsUserCerts {
		t.Fatalf("partition %d IDP = %+v, %v", n, idp, err)
	}
	if c.Partition != n || rl.Number.Int64() != c.Number {
		t.Fatalf("partition %d: CRL says partition %d number %d (DER %v)", n, c.Partition, c.Number, rl.Number)
	}
	return c, rl
}

func listed(rl *x509.RevocationList, c *x509.Certificate) bool {
	_, ok := crlReason(rl, c)
	return ok
}

// TestPartitionRevocationRebuildsOnePartition: a revocation signs exactly
// one CRL — its certificate's partition — which lists it when the
// revocation returns; the other partitions and the full CRL are not
// rebuilt then, and the full CRL lists it on its next request.
func TestPartitionRevocationRebuildsOnePartition(t *testing.T) {
	f := newRevFixture(t)
	ctx := context.Background()
	const parts = 4
	certs := f.partitionedCerts(t, 16, parts)
	a, signer := f.partReplica(t)
	before := map[int]int64{}
	for n := 1; n <= parts; n++ {
		c, rl := partitionCRL(t, f, a, n)
		if len(rl.RevokedCertificateEntries) != 0 {
			t.Fatalf("partition %d lists %d entries before any revocation", n, c.Entries)
		}
		before[n] = c.Number
	}
	full0, err := a.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := certs[5]
	p := pki.CertCRLPartition(victim)
	signed := signer.n.Load()
	res, err := a.RevokeCertificate(ctx, f.admin, victim.SerialNumber.Text(16), registry.ReasonKeyCompromise)
	if err != nil {
		t.Fatal(err)
	}
	if got := signer.n.Load() - signed; got != 1 {
		t.Errorf("the revocation signed %d CRLs, want 1 (its partition)", got)
	}
	c, rl := partitionCRL(t, f, a, p)
	if !listed(rl, victim) || c.Number != res.CRLNumber || c.Number <= before[p] {
		t.Errorf("partition %d CRL %d (before %d, acknowledged %d) lists the victim: %v", p, c.Number, before[p], res.CRLNumber, listed(rl, victim))
	}
	for n := 1; n <= parts; n++ {
		if n == p {
			continue
		}
		if c, rl := partitionCRL(t, f, a, n); c.Number != before[n] || listed(rl, victim) {
			t.Errorf("partition %d rebuilt (%d → %d) or lists the victim", n, before[n], c.Number)
		}
	}
	if got := signer.n.Load() - signed; got != 1 {
		t.Errorf("reading the other partitions signed %d more CRLs", got-1)
	}
	full, err := a.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rl, _ := x509.ParseRevocationList(full.DER); full.Number <= full0.Number || !listed(rl, victim) {
		t.Errorf("full CRL %d (was %d) lists the victim: %v", full.Number, full0.Number, listed(rl, victim))
	} else if idp, err := pki.ParseIDP(rl); idp != nil || err != nil {
		t.Errorf("full CRL has an IDP %+v, %v", idp, err)
	}
	if ans := f.ocspFor(t, a, victim); ans.Status != ocsp.Revoked {
		t.Errorf("OCSP on the revoking replica: %d, want revoked", ans.Status)
	}
}

// TestPartitionOtherReplica: a revocation on replica A shows in replica B's
// partition CRL, full CRL and OCSP once B's revision snapshot is older than
// Refresh/2, and partition CRL numbers keep increasing across replicas.
func TestPartitionOtherReplica(t *testing.T) {
	f := newRevFixture(t)
	ctx := context.Background()
	certs := f.partitionedCerts(t, 8, 2)
	a, _ := f.partReplica(t)
	b, _ := f.partReplica(t)
	victim := certs[0]
	p := pki.CertCRLPartition(victim)
	bBefore, _ := partitionCRL(t, f, b, p)
	if ans := f.ocspFor(t, b, victim); ans.Status != ocsp.Good { // cached on B
		t.Fatalf("OCSP before: %d", ans.Status)
	}
	res, err := a.RevokeCertificate(ctx, f.admin, victim.SerialNumber.Text(16), registry.ReasonKeyCompromise)
	if err != nil {
		t.Fatal(err)
	}
	if res.CRLNumber <= bBefore.Number {
		t.Errorf("A's partition CRL number %d is not above B's %d", res.CRLNumber, bBefore.Number)
	}
	f.advance(31 * time.Second) // past B's snapshot (Refresh/2)
	c, rl := partitionCRL(t, f, b, p)
	if !listed(rl, victim) || c.Number <= res.CRLNumber {
		t.Errorf("B's partition CRL %d (A built %d) lists the victim: %v", c.Number, res.CRLNumber, listed(rl, victim))
	}
	if ans := f.ocspFor(t, b, victim); ans.Status != ocsp.Revoked {
		t.Errorf("B's OCSP: %d, want revoked", ans.Status)
	}
	full, err := b.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rl, _ := x509.ParseRevocationList(full.DER); !listed(rl, victim) {
		t.Error("B's full CRL does not list the victim")
	}
	// Refresh rebuilds nothing when nothing changed.
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c2, _ := partitionCRL(t, f, b, p); c2.Number != c.Number {
		t.Errorf("Refresh without changes rebuilt partition %d: %d → %d", p, c.Number, c2.Number)
	}
}

func TestPartitionCRLRefused(t *testing.T) {
	f := newRevFixture(t)
	a, _ := f.partReplica(t)
	for _, n := range []int{0, -1, pki.MaxCRLPartitions + 1} {
		if _, err := a.PartitionCRL(context.Background(), n); !errors.Is(err, provision.ErrNoCRLPartition) {
			t.Errorf("PartitionCRL(%d) = %v, want ErrNoCRLPartition", n, err)
		}
	}
	// Without a CRL URL there are no partitions.
	if _, err := f.rev.PartitionCRL(context.Background(), 1); !errors.Is(err, provision.ErrNoCRLPartition) {
		t.Errorf("PartitionCRL without CRLURL = %v, want ErrNoCRLPartition", err)
	}
	if _, err := provision.NewRevocation(provision.RevocationConfig{Store: f.store, CRLSigner: f.ca.CA, CRLURL: "ftp://x/crl"}); err == nil {
		t.Error("NewRevocation accepted an ftp CRLURL")
	}
}
