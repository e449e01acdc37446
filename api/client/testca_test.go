package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// testCA is a throwaway root → intermediate hierarchy (until pkg/pki/pkitest).
type testCA struct {
	Root, Inter *x509.Certificate
	interKey    crypto.Signer
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = sn
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Minute)
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	rootKey, interKey := newKey(t), newKey(t)
	root := signCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name + " Root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, rootKey.Public(), rootKey)
	inter := signCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name + " Intermediate"}, IsCA: true, BasicConstraintsValid: true,
		MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, root, interKey.Public(), rootKey)
	return &testCA{Root: root, Inter: inter, interKey: interKey}
}

// serverCert returns a TLS certificate for 127.0.0.1 and localhost with the chain.
func (ca *testCA) serverCert(t testing.TB) tls.Certificate {
	t.Helper()
	k := newKey(t)
	leaf := signCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "ca.test"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca.Inter, k.Public(), ca.interKey)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Inter.Raw}, PrivateKey: k, Leaf: leaf}
}
