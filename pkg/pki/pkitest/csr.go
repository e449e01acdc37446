package pkitest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
)

// ResignCSR replaces the signature of the DER CSR der with one made by key
// over its TBS with hash h, labelled oid: the way to get a CSR signed with a
// legacy algorithm (SHA-1) that crypto/x509 no longer creates. The result
// parses; only a policy can refuse it.
func ResignCSR(t testing.TB, der []byte, key crypto.Signer, oid asn1.ObjectIdentifier, h crypto.Hash) []byte {
	t.Helper()
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	hh := h.New()
	hh.Write(csr.RawTBSCertificateRequest)
	sig, err := key.Sign(rand.Reader, hh.Sum(nil), h)
	if err != nil {
		t.Fatal(err)
	}
	alg := pkix.AlgorithmIdentifier{Algorithm: oid}
	if _, ok := key.(*rsa.PrivateKey); ok {
		alg.Parameters = asn1.NullRawValue
	}
	out, err := asn1.Marshal(struct {
		TBS asn1.RawValue
		Alg pkix.AlgorithmIdentifier
		Sig asn1.BitString
	}{asn1.RawValue{FullBytes: csr.RawTBSCertificateRequest}, alg, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := x509.ParseCertificateRequest(out); err != nil || c.SignatureAlgorithm == x509.UnknownSignatureAlgorithm {
		t.Fatalf("re-signed CSR does not parse as a known algorithm: %v", err)
	}
	return out
}
