package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	x509ext "github.com/smallstep/go-attestation/x509"
)

// ekPKI is a throwaway manufacturer CA: root → intermediate → EK leaves.
type ekPKI struct {
	root, inter       *x509.Certificate
	rootKey, interKey crypto.Signer
	ekKey             *rsa.PrivateKey
	now               time.Time
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// testRSAKey returns one RSA-2048 key per test binary; generating it is slow.
func testRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
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

func newEKPKI(t testing.TB) *ekPKI {
	t.Helper()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	p := &ekPKI{rootKey: newECKey(t), interKey: newECKey(t), ekKey: testRSAKey(t), now: now}
	ca := func(cn string, serial int64) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber:          big.NewInt(serial),
			Subject:               pkix.Name{CommonName: cn},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign,
		}
	}
	rootTmpl := ca("test manufacturer root", 1)
	p.root = mustCert(t, rootTmpl, rootTmpl, p.rootKey.Public(), p.rootKey)
	p.inter = mustCert(t, ca("test manufacturer issuing", 2), p.root, p.interKey.Public(), p.rootKey)
	return p
}

func tpmSAN(t testing.TB, attrs map[string]string) pkix.Extension {
	t.Helper()
	oids := map[string]asn1.ObjectIdentifier{"manufacturer": oidTPMManufacturer, "model": oidTPMModel, "version": oidTPMVersion}
	var dn pkix.Name
	for _, k := range []string{"manufacturer", "model", "version"} {
		if v, ok := attrs[k]; ok {
			dn.ExtraNames = append(dn.ExtraNames, pkix.AttributeTypeAndValue{Type: oids[k], Value: v})
		}
	}
	ext, err := x509ext.MarshalSubjectAltName(&x509ext.SubjectAltName{DirectoryNames: []pkix.Name{dn}})
	if err != nil {
		t.Fatal(err)
	}
	ext.Critical = true
	return ext
}

// leaf issues an EK certificate shaped like swtpm's (critical SAN of TPM
// attributes, TCG EKU only, keyEncipherment), after mod edits the template.
func (p *ekPKI) leaf(t testing.TB, mod func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(3),
		NotBefore:             p.now.Add(-time.Hour),
		NotAfter:              p.now.Add(12 * time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidEKCertificateEKU},
		ExtraExtensions: []pkix.Extension{tpmSAN(t, map[string]string{
			"manufacturer": "id:00001014", "model": "swtpm", "version": "id:20191023",
		})},
	}
	if mod != nil {
		mod(tmpl)
	}
	return mustCert(t, tmpl, p.inter, p.ekKey.Public(), p.interKey)
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestVerifyEKCertificate(t *testing.T) {
	p := newEKPKI(t)
	other := newEKPKI(t)
	tests := []struct {
		name    string
		cert    *x509.Certificate
		roots   *x509.CertPool
		now     time.Time
		wantErr string // substring; empty means success
	}{
		{name: "valid", cert: p.leaf(t, nil), roots: pool(p.root), now: p.now},
		{name: "unconfigured root", cert: other.leaf(t, nil), roots: pool(p.root), now: p.now, wantErr: "unknown authority"},
		{name: "no roots", cert: p.leaf(t, nil), now: p.now, wantErr: "no manufacturer roots"},
		{name: "expired", cert: p.leaf(t, nil), roots: pool(p.root), now: p.now.Add(13 * time.Hour), wantErr: "expired"},
		{name: "other unhandled critical extension", roots: pool(p.root), now: p.now, wantErr: "unhandled critical extension",
			cert: p.leaf(t, func(c *x509.Certificate) {
				c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{0x05, 0x00}})
			})},
		{name: "no EK EKU", roots: pool(p.root), now: p.now, wantErr: "EKU",
			cert: p.leaf(t, func(c *x509.Certificate) {
				c.UnknownExtKeyUsage = nil
				c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			})},
		{name: "SAN lacks model", roots: pool(p.root), now: p.now, wantErr: "SAN lacks",
			cert: p.leaf(t, func(c *x509.Certificate) {
				c.ExtraExtensions = []pkix.Extension{tpmSAN(t, map[string]string{"manufacturer": "id:00001014", "version": "id:1"})}
			})},
		{name: "no SAN", roots: pool(p.root), now: p.now, wantErr: "no SAN",
			cert: p.leaf(t, func(c *x509.Certificate) { c.ExtraExtensions = nil; c.Subject.CommonName = "ek" })},
		{name: "nil certificate", roots: pool(p.root), now: p.now, wantErr: "no certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var unhandledBefore []asn1.ObjectIdentifier
			if tt.cert != nil {
				unhandledBefore = append(unhandledBefore, tt.cert.UnhandledCriticalExtensions...)
			}
			err := VerifyEKCertificate(tt.cert, tt.roots, pool(p.inter, other.inter), tt.now)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("VerifyEKCertificate: %v", err)
				}
			} else {
				if !errors.Is(err, ErrEKUntrusted) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("VerifyEKCertificate = %v, want ErrEKUntrusted containing %q", err, tt.wantErr)
				}
			}
			if tt.cert != nil && len(tt.cert.UnhandledCriticalExtensions) != len(unhandledBefore) {
				t.Errorf("caller's certificate was modified: %v → %v", unhandledBefore, tt.cert.UnhandledCriticalExtensions)
			}
		})
	}
}

// TestEKCertificateNeedsWorkaround pins the reason for VerifyEKCertificate:
// crypto/x509 alone refuses an EK certificate.
func TestEKCertificateNeedsWorkaround(t *testing.T) {
	p := newEKPKI(t)
	c := p.leaf(t, nil)
	if len(c.UnhandledCriticalExtensions) != 1 || !c.UnhandledCriticalExtensions[0].Equal(oidSubjectAltName) {
		t.Fatalf("UnhandledCriticalExtensions = %v, want [2.5.29.17]", c.UnhandledCriticalExtensions)
	}
	_, err := c.Verify(x509.VerifyOptions{Roots: pool(p.root), Intermediates: pool(p.inter), CurrentTime: p.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err == nil {
		t.Fatal("plain crypto/x509 accepted the EK certificate; the workaround may be obsolete")
	}
}

func TestParseEKCertificate(t *testing.T) {
	p := newEKPKI(t)
	c := p.leaf(t, nil)
	// As stored in NV: TCG header 0x1001 0x00, big-endian length, DER,
	// then padding.
	nv := append([]byte{0x10, 0x01, 0x00, byte(len(c.Raw) >> 8), byte(len(c.Raw))}, c.Raw...)
	nv = append(nv, make([]byte, 64)...)
	for name, in := range map[string][]byte{"DER": c.Raw, "NV with header and padding": nv} {
		got, err := ParseEKCertificate(in)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !got.Equal(c) {
			t.Fatalf("%s: parsed a different certificate", name)
		}
	}
	if _, err := ParseEKCertificate([]byte("garbage")); !errors.Is(err, ErrEKUntrusted) {
		t.Fatalf("ParseEKCertificate(garbage) = %v, want ErrEKUntrusted", err)
	}
}

func TestEKHash(t *testing.T) {
	k := testRSAKey(t)
	got, err := EKHash(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	sum := sha256.Sum256(der)
	if want := hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("EKHash = %s, want %s", got, want)
	}
	if _, err := EKHash(struct{}{}); err == nil {
		t.Fatal("EKHash of an unsupported key succeeded")
	}
}

func BenchmarkVerifyEKCertificate(b *testing.B) {
	p := newEKPKI(b)
	c := p.leaf(b, nil)
	roots, inters := pool(p.root), pool(p.inter)
	for b.Loop() {
		if err := VerifyEKCertificate(c, roots, inters, p.now); err != nil {
			b.Fatal(err)
		}
	}
}
