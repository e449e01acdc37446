// Package ektest mints TPM EK certificates for tests: a throwaway
// manufacturer CA (root and issuing CA) that certifies any EK public key, such
// as the simulator's, in the shape real EK certificates have (critical SAN of
// TPM attributes, TCG EK EKU).
package ektest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	x509ext "github.com/smallstep/go-attestation/x509"
)

// Manufacturer is a test TPM manufacturer CA.
type Manufacturer struct {
	Root, Issuing       *x509.Certificate
	rootKey, issuingKey crypto.Signer
	serial              int64
}

// New returns a fresh manufacturer CA valid from an hour ago for a day.
func New(t testing.TB) *Manufacturer {
	t.Helper()
	m := &Manufacturer{rootKey: newKey(t), issuingKey: newKey(t), serial: 10}
	now := time.Now()
	ca := func(cn string, serial int64) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
	}
	rt := ca("test TPM manufacturer root", 1)
	m.Root = mustCert(t, rt, rt, m.rootKey.Public(), m.rootKey)
	m.Issuing = mustCert(t, ca("test TPM manufacturer EK CA", 2), m.Root, m.issuingKey.Public(), m.rootKey)
	return m
}

// Roots and Intermediates are pools of Root and Issuing.
func (m *Manufacturer) Roots() *x509.CertPool         { return pool(m.Root) }
func (m *Manufacturer) Intermediates() *x509.CertPool { return pool(m.Issuing) }

// WritePEM writes Root and Issuing to dir as root.pem and issuing.pem and
// returns their paths.
func (m *Manufacturer) WritePEM(t testing.TB, dir string) (root, issuing string) {
	t.Helper()
	root, issuing = filepath.Join(dir, "root.pem"), filepath.Join(dir, "issuing.pem")
	for path, c := range map[string]*x509.Certificate{root: m.Root, issuing: m.Issuing} {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root, issuing
}

// EKCert returns the DER of an EK certificate for ekPub, issued by Issuing.
func (m *Manufacturer) EKCert(t testing.TB, ekPub crypto.PublicKey) []byte {
	t.Helper()
	m.serial++
	dn := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:00001014"},
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 2}, Value: "simulator"},
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 3}, Value: "id:20191023"},
	}}
	san, err := x509ext.MarshalSubjectAltName(&x509ext.SubjectAltName{DirectoryNames: []pkix.Name{dn}})
	if err != nil {
		t.Fatal(err)
	}
	san.Critical = true
	now := time.Now()
	c := mustCert(t, &x509.Certificate{
		SerialNumber:          big.NewInt(m.serial),
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(12 * time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{{2, 23, 133, 8, 1}},
		ExtraExtensions:       []pkix.Extension{san},
	}, m.Issuing, ekPub, m.issuingKey)
	return c.Raw
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
