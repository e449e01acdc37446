package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"
)

// TestChainVerifierFastPathAgreesWithX509 holds verifyFast to
// crypto/x509's verdict: for each leaf and time, ChainVerifier.Verify
// accepts exactly when Certificate.Verify (roots, the known intermediates,
// the same key usage) does, and the fast path is what decided for every
// leaf a known plain intermediate signed.
func TestChainVerifierFastPathAgreesWithX509(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	rootKey, interKey, otherKey := newTestKey(t), newTestKey(t), newTestKey(t)
	root := mkCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Root"}, IsCA: true,
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign}, nil, rootKey, rootKey)
	inter := mkCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Issuing"}, IsCA: true,
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign}, root, interKey, rootKey)
	// Same name as the issuing CA, another key: its leaves must not pass.
	impostor := mkCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Issuing"}, IsCA: true,
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign}, nil, otherKey, otherKey)
	// An intermediate limited to server auth is not plain: x509 decides.
	serverOnly := mkCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Servers"}, IsCA: true,
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), KeyUsage: x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, root, otherKey, rootKey)
	// A CA without the certSign key usage cannot issue.
	noSign := mkCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "NoSign"}, IsCA: true,
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}, root, otherKey, rootKey)

	leafKey := newTestKey(t)
	leaf := func(parent *x509.Certificate, signer crypto.Signer, mod func(*x509.Certificate)) *x509.Certificate {
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "device"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if mod != nil {
			mod(tmpl)
		}
		return mkCert(t, tmpl, parent, leafKey, signer)
	}
	leaves := map[string]*x509.Certificate{
		"client":     leaf(inter, interKey, nil),
		"no EKU":     leaf(inter, interKey, func(c *x509.Certificate) { c.ExtKeyUsage = nil }),
		"any EKU":    leaf(inter, interKey, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny} }),
		"server EKU": leaf(inter, interKey, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }),
		"unknown EKU only": leaf(inter, interKey, func(c *x509.Certificate) {
			c.ExtKeyUsage, c.UnknownExtKeyUsage = nil, []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 99999, 1}}
		}),
		"expired":    leaf(inter, interKey, func(c *x509.Certificate) { c.NotAfter = now.Add(-time.Minute) }),
		"not yet":    leaf(inter, interKey, func(c *x509.Certificate) { c.NotBefore = now.Add(time.Hour) }),
		"impostor":   leaf(impostor, otherKey, nil),
		"no AKID":    leaf(inter, interKey, func(c *x509.Certificate) { c.AuthorityKeyId = nil }),
		"server CA":  leaf(serverOnly, otherKey, nil),
		"no-sign CA": leaf(noSign, otherKey, nil),
		"critical unknown extension": leaf(inter, interKey, func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}, Critical: true, Value: []byte{5, 0}}}
		}),
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	known := []*x509.Certificate{inter, serverOnly, noSign}
	v := NewChainVerifier(roots, known, x509.ExtKeyUsageClientAuth)
	if len(v.issuers) != 2 { // inter and noSign are plain; serverOnly is not
		t.Fatalf("fast-path issuers: %d, want 2", len(v.issuers))
	}
	pool := x509.NewCertPool()
	for _, c := range known {
		pool.AddCert(c)
	}
	times := map[string]time.Time{
		"now": now, "after the leaves": now.Add(48 * time.Hour), "after the intermediate": now.Add(400 * 24 * time.Hour),
		"before the intermediate": now.Add(-30 * time.Hour),
	}
	for name, l := range leaves {
		for when, at := range times {
			_, want := l.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: at,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			chains, got := v.Verify([]*x509.Certificate{l}, at)
			if (got == nil) != (want == nil) {
				t.Errorf("%s at %s: ChainVerifier says %v, crypto/x509 says %v", name, when, got, want)
			}
			if got == nil && (len(chains) != 1 || len(chains[0]) != 3 || !chains[0][2].Equal(root)) {
				t.Errorf("%s at %s: chains %v", name, when, chains)
			}
			_, fast, _ := v.verifyFast(l, at)
			if wantFast := l.CheckSignatureFrom(inter) == nil; fast != wantFast && name != "no-sign CA" {
				t.Errorf("%s at %s: fast path used %v, want %v", name, when, fast, wantFast)
			}
		}
	}
}

func newTestKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var testSerial int64

func mkCert(t *testing.T, tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	testSerial++
	tmpl.SerialNumber = big.NewInt(testSerial)
	tmpl.BasicConstraintsValid = true
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
