package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

// TestRepeatsIdentity: a CSR repeats a certificate's identity only with the
// same raw subject and exactly its subjectAltName, nothing more; CheckKey
// still judges its key and signature.
func TestRepeatsIdentity(t *testing.T) {
	ca := pkitest.NewCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := ca.IssueDevice(t, pki.Identity{DeviceID: "dev-1", Tenant: "default", Serial: "SN-1", MACs: []string{"020000000001"},
		TrustDomain: pkitest.TrustDomain}, key).Certificate
	var san pkix.Extension
	for _, e := range cert.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			san = e
		}
	}
	parse := func(tmpl *x509.CertificateRequest) *x509.CertificateRequest {
		t.Helper()
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	other := san
	other.Value = append([]byte{}, san.Value...)
	other.Value[len(other.Value)-1] ^= 1
	for _, tt := range []struct {
		name string
		tmpl *x509.CertificateRequest
		want bool
	}{
		{"subject and SAN", &x509.CertificateRequest{RawSubject: cert.RawSubject, ExtraExtensions: []pkix.Extension{san}}, true},
		{"no SAN", &x509.CertificateRequest{RawSubject: cert.RawSubject}, false},
		{"another SAN", &x509.CertificateRequest{RawSubject: cert.RawSubject, ExtraExtensions: []pkix.Extension{other}}, false},
		{"another subject", &x509.CertificateRequest{Subject: pkix.Name{SerialNumber: "SN-1"}, ExtraExtensions: []pkix.Extension{san}}, false},
		{"an extra extension", &x509.CertificateRequest{RawSubject: cert.RawSubject, ExtraExtensions: []pkix.Extension{san,
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Value: []byte{0x30, 0x03, 0x01, 0x01, 0xff}}}}, false},
	} {
		if got := pki.RepeatsIdentity(parse(tt.tmpl), cert); got != tt.want {
			t.Errorf("%s: RepeatsIdentity = %t, want %t", tt.name, got, tt.want)
		}
	}
	good := parse(&x509.CertificateRequest{RawSubject: cert.RawSubject, ExtraExtensions: []pkix.Extension{san}})
	if pub, err := (pki.CSRPolicy{}).CheckKey(good); err != nil || !key.PublicKey.Equal(pub) {
		t.Errorf("CheckKey = %v, %v", pub, err)
	}
	bad := *good
	bad.Signature = append([]byte{}, good.Signature...)
	bad.Signature[len(bad.Signature)-1] ^= 1
	if _, err := (pki.CSRPolicy{}).CheckKey(&bad); !errors.Is(err, pki.ErrBadCSR) {
		t.Errorf("CheckKey of a bad signature: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{RawSubject: cert.RawSubject}, p384)
	c384, _ := x509.ParseCertificateRequest(der)
	if _, err := (pki.CSRPolicy{}).CheckKey(c384); !errors.Is(err, pki.ErrBadCSR) {
		t.Errorf("CheckKey of a P-384 key under the default policy: %v", err)
	}
}
