package provision_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestRenewUnverifiedPeerAuthenticatedByRecord: a renewal whose client
// certificate was not chain-verified (the API's renewal route) renews only
// when the presented DER is the registry's record of that serial and is
// valid now; a certificate with a recorded serial but other bytes (another
// key, another signer), an unknown one, and an expired one are refused as
// unauthenticated, with nothing signed and the refusal audited.
func TestRenewUnverifiedPeerAuthenticatedByRecord(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	first, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-U1", "02:00:00:00:00:71")
	if err != nil {
		t.Fatal(err)
	}
	renew := func(svc *provision.Service, peer *x509.Certificate) (*provision.Result, error) {
		return svc.Renew(ctx, &provision.RenewRequest{Peer: peer, Unverified: true, SourceAddr: "127.0.0.1"})
	}
	second, err := renew(f.svc, first.Certificate)
	if err != nil {
		t.Fatalf("renewal by record: %v", err)
	}

	// Same serial, subject, issuer name and validity, signed by a key of
	// the forger's.
	forgerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl, parent := *second.Certificate, *f.ca.Issuer.Chain()[0]
	parent.PublicKey = forgerKey.Public()
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &parent, second.Certificate.PublicKey, forgerKey)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := x509.ParseCertificate(der)
	// Signed by this CA's key but never recorded, and another CA's.
	id := pki.Identity{DeviceID: "d-u2", Tenant: registry.DefaultTenant, Serial: "SN-U2"}
	unrecorded := f.ca.IssueDevice(t, id, forgerKey).Certificate
	foreign := pkitest.NewCA(t).IssueDevice(t, id, forgerKey).Certificate
	// The renewed certificate, an hour after it expired.
	late, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki",
		Now: func() time.Time { return second.Certificate.NotAfter.Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	signed := f.issuer.n.Load()
	refusals := func() (n int64) {
		rs, err := f.store.ListRefusals(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Reason == "unauthenticated" && r.Action == string(provision.ActionRenew) {
				n += r.Count
			}
		}
		return n
	}
	before := refusals()
	for name, c := range map[string]struct {
		svc  *provision.Service
		peer *x509.Certificate
	}{"forged": {f.svc, forged}, "unrecorded": {f.svc, unrecorded}, "foreign": {f.svc, foreign},
		"expired": {late, second.Certificate}} {
		if _, err := renew(c.svc, c.peer); !errors.Is(err, provision.ErrUnauthenticated) {
			t.Errorf("%s: %v, want unauthenticated", name, err)
		}
	}
	if f.issuer.n.Load() != signed {
		t.Fatal("a refused renewal signed a certificate")
	}
	if got := refusals() - before; got != 4 {
		t.Errorf("%d unauthenticated renewals in the refusal log, want 4", got)
	}
	rec, err := f.store.GetCertificate(ctx, second.Certificate.SerialNumber.Text(16))
	if err != nil || rec.Status != registry.CertActive {
		t.Fatalf("the renewed certificate after the refusals: %+v, %v", rec, err)
	}
}
