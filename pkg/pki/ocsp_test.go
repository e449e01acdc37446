package pki_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

// checkResponder fails unless cert is a delegated OCSP responder certificate
// issued by tca's intermediate.
func checkResponder(t *testing.T, tca *pkitest.TestCA, cert *x509.Certificate, lifetime time.Duration) {
	t.Helper()
	if err := cert.CheckSignatureFrom(tca.CA.Intermediate); err != nil {
		t.Errorf("responder certificate not signed by the intermediate: %v", err)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageOCSPSigning {
		t.Errorf("EKU = %v, want OCSPSigning only", cert.ExtKeyUsage)
	}
	if cert.IsCA || cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("IsCA %v, KeyUsage %v", cert.IsCA, cert.KeyUsage)
	}
	var nocheck bool
	for _, e := range cert.Extensions {
		if e.Id.Equal(pki.OIDOCSPNoCheck) {
			nocheck = string(e.Value) == "\x05\x00" && !e.Critical
		}
	}
	if !nocheck {
		t.Error("no id-pkix-ocsp-nocheck extension with a NULL value")
	}
	if got := cert.NotAfter.Sub(cert.NotBefore); got > lifetime+2*time.Minute || got < lifetime {
		t.Errorf("responder lifetime %v, want about %v", got, lifetime)
	}
}

func TestOCSPResponder(t *testing.T) {
	t.Parallel()
	tca := pkitest.NewCA(t)
	ctx := context.Background()
	var recorded []*x509.Certificate
	r, err := pki.NewOCSPResponder(ctx, pki.OCSPResponderOptions{CA: tca.CA, Issued: func(_ context.Context, c *x509.Certificate) error {
		recorded = append(recorded, c)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkResponder(t, tca, r.Certificate(), pki.DefaultOCSPResponderLifetime)
	if len(recorded) != 1 || recorded[0] != r.Certificate() {
		t.Errorf("Issued hook saw %d certificates", len(recorded))
	}

	dev := tca.IssueDevice(t, pki.Identity{DeviceID: "d1", Tenant: "default", Serial: "SN1"}, keys()["p256"]).Certificate
	now := time.Now().UTC().Truncate(time.Second)
	for _, tc := range []struct {
		name string
		st   pki.OCSPStatus
	}{
		{"good", pki.OCSPStatus{Status: ocsp.Good}},
		{"revoked", pki.OCSPStatus{Status: ocsp.Revoked, RevokedAt: now.Add(-time.Hour), Reason: ocsp.KeyCompromise}},
		{"unknown", pki.OCSPStatus{Status: ocsp.Unknown}},
		{"sha256", pki.OCSPStatus{Status: ocsp.Good, Hash: crypto.SHA256}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st
			st.Serial, st.ThisUpdate, st.NextUpdate = dev.SerialNumber, now, now.Add(time.Hour)
			der, err := r.Sign(ctx, &st)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ocsp.ParseResponseForCert(der, dev, tca.CA.Intermediate)
			if err != nil {
				t.Fatalf("ParseResponseForCert: %v", err)
			}
			if resp.Status != st.Status || resp.SerialNumber.Cmp(dev.SerialNumber) != 0 ||
				!resp.ThisUpdate.Equal(now) || !resp.NextUpdate.Equal(now.Add(time.Hour)) {
				t.Errorf("response %+v, want %+v", resp, st)
			}
			if st.Status == ocsp.Revoked && (!resp.RevokedAt.Equal(st.RevokedAt) || resp.RevocationReason != st.Reason) {
				t.Errorf("revoked at %v reason %d, want %v %d", resp.RevokedAt, resp.RevocationReason, st.RevokedAt, st.Reason)
			}
			if resp.Certificate == nil || !resp.Certificate.Equal(r.Certificate()) {
				t.Error("response does not carry the responder certificate")
			}
			wantHash := st.Hash
			if wantHash == 0 {
				wantHash = crypto.SHA1
			}
			if resp.IssuerHash != wantHash {
				t.Errorf("CertID hash %v, want %v", resp.IssuerHash, wantHash)
			}
		})
	}

	// MatchesIssuer: the intermediate, with SHA-1 and SHA-256, but not
	// another CA's intermediate.
	other := pkitest.NewCA(t)
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		raw, err := ocsp.CreateRequest(dev, tca.CA.Intermediate, &ocsp.RequestOptions{Hash: h})
		if err != nil {
			t.Fatal(err)
		}
		req, err := ocsp.ParseRequest(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !r.MatchesIssuer(req) {
			t.Errorf("%v: request for our intermediate does not match", h)
		}
		raw, _ = ocsp.CreateRequest(dev, other.CA.Intermediate, &ocsp.RequestOptions{Hash: h})
		req, _ = ocsp.ParseRequest(raw)
		if r.MatchesIssuer(req) {
			t.Errorf("%v: request for another intermediate matches", h)
		}
	}
}

func TestOCSPResponderRotates(t *testing.T) {
	t.Parallel()
	tca := pkitest.NewCA(t)
	ctx := context.Background()
	now := time.Now()
	clock := func() time.Time { return now }
	fail := false
	r, err := pki.NewOCSPResponder(ctx, pki.OCSPResponderOptions{
		CA: tca.CA, Lifetime: 10 * time.Hour, Now: func() time.Time { return clock() },
		Issued: func(context.Context, *x509.Certificate) error {
			if fail {
				return errors.New("registry down")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	first := r.Certificate()
	checkResponder(t, tca, first, 10*time.Hour)
	sign := func() {
		t.Helper()
		st := &pki.OCSPStatus{Serial: big.NewInt(5), Status: ocsp.Good, ThisUpdate: clock(), NextUpdate: clock().Add(time.Hour)}
		if _, err := r.Sign(ctx, st); err != nil {
			t.Fatalf("Sign: %v", err)
		}
	}
	now = now.Add(4 * time.Hour)
	sign()
	if !r.Certificate().Equal(first) {
		t.Fatal("rotated before half of the lifetime")
	}
	// Past half: a failing Issued hook keeps the old, still valid key.
	now = now.Add(2 * time.Hour)
	fail = true
	sign()
	if !r.Certificate().Equal(first) {
		t.Fatal("rotated although recording the new certificate failed")
	}
	fail = false
	sign()
	if r.Certificate().Equal(first) {
		t.Fatal("not rotated past half of the lifetime")
	}
	if r.Certificate().PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(first.PublicKey) {
		t.Error("rotation kept the same key")
	}
}

// BenchmarkOCSPSign measures signing one OCSP response (what a cache miss
// costs).
func BenchmarkOCSPSign(b *testing.B) {
	tca := pkitest.NewCA(b)
	r, err := pki.NewOCSPResponder(context.Background(), pki.OCSPResponderOptions{CA: tca.CA})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	st := &pki.OCSPStatus{Serial: big.NewInt(12345), Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Sign(context.Background(), st); err != nil {
			b.Fatal(err)
		}
	}
}
