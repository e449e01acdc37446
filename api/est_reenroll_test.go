package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"testing"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// estEnrolled enrolls serial over EST simpleenroll and returns its key and
// certificate.
func (f *fixture) estEnrolled(serial string) (crypto.Signer, *x509.Certificate) {
	f.t.Helper()
	key, _, p := f.keyAndCSR(serial)
	resp, b := f.estReq(f.client, http.MethodPost, estPath+"/simpleenroll", "application/pkcs10",
		bytes.NewReader(b64CSR(f.t, p)), basic(serial, f.mint(provision.TokenSpec{})))
	return key, estCerts(f.t, resp, b)[0]
}

// leafClient presents cert alone (no chain) with key.
func (f *fixture) leafClient(cert *x509.Certificate, key crypto.Signer) *http.Client {
	return f.newClient(&tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert})
}

// repeatCSR is the CSR an RFC 7030 client re-enrolls with: cert's raw
// subject and subjectAltName extension, signed by key.
func repeatCSR(t testing.TB, cert *x509.Certificate, key crypto.Signer) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{RawSubject: cert.RawSubject}
	for _, e := range cert.Extensions {
		if e.Id.String() == "2.5.29.17" {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(der))
}

// TestESTSimpleReenroll: the current certificate, its leaf alone over
// mTLS, re-enrolls with the same key, with a new key (our CSR form, or a
// CSR repeating the certificate's subject and SAN, as RFC 7030 clients
// send); a superseded or revoked certificate, none at all, another
// device's identity, another tenant's label and bad bodies are refused
// with nothing written.
func TestESTSimpleReenroll(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := provision.CreateTenant(ctx, f.store, provision.TenantSpec{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	const serial = "SN-EST-RE"
	key, cert := f.estEnrolled(serial)
	reenroll := func(c *http.Client, path string, body []byte) (*http.Response, []byte) {
		return f.estReq(c, http.MethodPost, estPath+path+"/simplereenroll", "application/pkcs10", bytes.NewReader(body), nil)
	}

	// Same key, our CSR form.
	sameKeyCSR := func(k crypto.Signer) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: cert.Subject, URIs: cert.URIs[1:], // serialNumber and the MAC URIs
		}, k)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(base64.StdEncoding.EncodeToString(der))
	}
	resp, b := reenroll(f.leafClient(cert, key), "", sameKeyCSR(key))
	renewed := estCerts(t, resp, b)[0]
	if !renewed.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) || renewed.Subject.SerialNumber != serial {
		t.Fatalf("same-key re-enrollment: %s", renewed.Subject)
	}

	// Bad input on a good connection: refused, nothing written.
	other, _, otherPEM := f.keyAndCSR("SN-EST-OTHER")
	_ = other
	for _, tt := range []struct {
		name   string
		c      *http.Client
		path   string
		ct     string
		body   []byte
		status int
		slug   string
	}{
		{"no client certificate", f.client, "", "application/pkcs10", sameKeyCSR(key), http.StatusUnauthorized, wire.SlugUnauthorized},
		{"wrong content type", f.leafClient(renewed, key), "", "text/plain", sameKeyCSR(key), http.StatusUnsupportedMediaType, wire.SlugBadRequest},
		{"not base64", f.leafClient(renewed, key), "", "application/pkcs10", []byte("%%%"), http.StatusBadRequest, wire.SlugBadCSR},
		{"another serial", f.leafClient(renewed, key), "", "application/pkcs10", b64CSR(t, otherPEM), http.StatusBadRequest, wire.SlugBadCSR},
		{"another tenant's label", f.leafClient(renewed, key), "/acme", "application/pkcs10", sameKeyCSR(key), http.StatusForbidden, wire.SlugForbidden},
		{"superseded certificate, new key", f.leafClient(cert, key), "", "application/pkcs10", repeatCSR(t, cert, newKey(t)), http.StatusForbidden, wire.SlugNotRenewable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, seq, hits := f.counts(), f.lastSeq(), f.refusalHits("")
			resp, b := f.estReq(tt.c, http.MethodPost, estPath+tt.path+"/simplereenroll", tt.ct, bytes.NewReader(tt.body), nil)
			estRefused(t, resp, b, tt.status, tt.slug)
			if after := f.counts(); after != before {
				t.Errorf("rows %+v -> %+v", before, after)
			}
			// One trace per refusal: a certificate of this CA is chained,
			// no certificate is counted in the anonymous refusal log.
			denied := 0
			for _, ev := range f.auditSince(seq) {
				if ev.Result == registry.ResultDenied {
					denied++
				}
			}
			if counted := f.refusalHits("") - hits; denied+int(counted) != 1 {
				t.Errorf("%d chained denials and %d refusals counted, want one trace", denied, counted)
			}
		})
	}

	// A new key with the CSR an RFC 7030 client sends (the certificate's own
	// subject and SAN), the leaf alone.
	key2 := newKey(t)
	resp, b = reenroll(f.leafClient(renewed, key), "/default", repeatCSR(t, renewed, key2))
	rekeyed := estCerts(t, resp, b)[0]
	if !rekeyed.PublicKey.(*ecdsa.PublicKey).Equal(key2.Public()) || !bytes.Equal(rekeyed.RawSubject, renewed.RawSubject) {
		t.Fatalf("re-key: %s", rekeyed.Subject)
	}

	// Revoked: refused, nothing written.
	dev := f.device(serial)
	if _, err := f.rev.RevokeDevice(ctx, provision.SystemActor("test", f.tenant.ID), dev.ID, registry.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	before := f.counts()
	resp, b = reenroll(f.leafClient(rekeyed, key2), "", repeatCSR(t, rekeyed, newKey(t)))
	estRefused(t, resp, b, http.StatusForbidden, wire.SlugNotRenewable)
	if f.counts() != before {
		t.Error("a refused re-enrollment wrote")
	}
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
