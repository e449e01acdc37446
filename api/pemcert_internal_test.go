package api

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// pemCert sizes its buffer itself; what it writes is pem.EncodeToMemory's,
// for certificates of every length around a line boundary.
func TestPEMCertMatchesEncodeToMemory(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n < 200; n++ {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(n)),
			Subject:      pkix.Name{CommonName: string(bytes.Repeat([]byte("x"), n))},
			NotBefore:    time.Now(), NotAfter: time.Now().Add(time.Hour),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		got, want := pemCert(c), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if !bytes.Equal(got, want) {
			t.Fatalf("CN of %d bytes: pemCert =\n%s\nwant\n%s", n, got, want)
		}
		if cap(got) < len(got) || cap(got)-len(got) > 2 {
			t.Errorf("CN of %d bytes: buffer of %d bytes for %d written: the size estimate is off", n, cap(got), len(got))
		}
	}
}

// The TLS config's GetConfigForClient only grows the stack: it hands the
// handshake back to the config itself (nil, nil).
func TestGetConfigForClientKeepsConfig(t *testing.T) {
	c := TLSConfig(tls.Certificate{}, false)
	if c.GetConfigForClient == nil {
		t.Fatal("no GetConfigForClient")
	}
	got, err := c.GetConfigForClient(&tls.ClientHelloInfo{})
	if got != nil || err != nil {
		t.Fatalf("GetConfigForClient = %v, %v; want nil, nil", got, err)
	}
}
