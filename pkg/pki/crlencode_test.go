package pki_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

// crlIssuer makes a self-signed CRL issuer with key.
func crlIssuer(t *testing.T, key crypto.Signer) *pki.CA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CRL issuer", Organization: []string{"devpki test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCRLSign | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		SubjectKeyId: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.CA{Root: cert, Intermediate: cert, Signer: key}
}

// equivalenceEntries covers what the encoder decides per entry: serials
// needing DER's sign byte or not, of odd hex length, one byte, twenty;
// every reason (0 leaves the extension out); UTCTime and GeneralizedTime
// on both sides of their boundaries; sub-second times (truncated).
func equivalenceEntries() []pki.RevokedCert {
	at := time.Date(2026, 12, 2, 6, 7, 8, 999_999_999, time.UTC)
	serials := []*big.Int{
		big.NewInt(1), big.NewInt(0x7f), big.NewInt(0x80), big.NewInt(0xff), big.NewInt(0x100), big.NewInt(0xabc),
		new(big.Int).SetBytes(bytes.Repeat([]byte{0xff}, 20)), new(big.Int).SetBytes(append([]byte{0x7f}, bytes.Repeat([]byte{0x01}, 19)...)),
		new(big.Int).SetBytes([]byte{0x0a, 0xbc, 0xde, 0xf0, 0x12}),
	}
	times := []time.Time{
		at, at.In(time.FixedZone("x", -7*3600)), time.Date(1949, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1970, 1, 1, 0, 0, 1, 0, time.UTC),
	}
	var out []pki.RevokedCert
	for i := range 40 {
		out = append(out, pki.RevokedCert{Serial: serials[i%len(serials)], RevokedAt: times[i%len(times)], Reason: i % 11})
	}
	return out
}

// TestSignCRLMatchesX509 checks SignCRL against x509.CreateRevocationList
// (what it replaced, through softcas) on the same template and key: the
// tbsCertList byte for byte, for each key type x509 signs with, with and
// without entries and an IDP; for the deterministic signatures (RSA
// PKCS#1 v1.5, Ed25519) the whole CRL.
func TestSignCRLMatchesX509(t *testing.T) {
	t.Parallel()
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	keys := map[string]struct {
		key           crypto.Signer
		deterministic bool
	}{
		"P-256": {p256, false}, "P-384": {p384, false}, "RSA-2048": {rsaKey, true}, "Ed25519": {edKey, true},
	}
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	idp := &pki.IDP{URI: "http://ca.test/crl/p/7", OnlyContainsUserCerts: true}
	for name, k := range keys {
		ca := crlIssuer(t, k.key)
		for _, tc := range []struct {
			name    string
			revoked []pki.RevokedCert
			idp     *pki.IDP
		}{
			{"empty", nil, nil}, {"entries", equivalenceEntries(), nil}, {"partition", equivalenceEntries()[:5], idp},
			{"empty partition", nil, idp},
		} {
			tmpl := &pki.CRLTemplate{Number: 1 << 40, ThisUpdate: now, NextUpdate: now.Add(48 * time.Hour), Revoked: tc.revoked, IDP: tc.idp}
			got, err := ca.SignCRL(context.Background(), tmpl)
			if err != nil {
				t.Fatalf("%s %s: SignCRL: %v", name, tc.name, err)
			}
			want := x509CRL(t, ca, tmpl)
			gotRL, err := x509.ParseRevocationList(got)
			if err != nil {
				t.Fatalf("%s %s: ParseRevocationList: %v", name, tc.name, err)
			}
			wantRL, err := x509.ParseRevocationList(want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotRL.RawTBSRevocationList, wantRL.RawTBSRevocationList) {
				t.Errorf("%s %s: tbsCertList differs from x509's:\n got %x\nwant %x", name, tc.name, gotRL.RawTBSRevocationList, wantRL.RawTBSRevocationList)
			}
			if k.deterministic && !bytes.Equal(got, want) {
				t.Errorf("%s %s: CRL differs from x509's", name, tc.name)
			}
			if err := gotRL.CheckSignatureFrom(ca.Intermediate); err != nil {
				t.Errorf("%s %s: signature: %v", name, tc.name, err)
			}
		}
	}
}

// x509CRL is the CRL x509.CreateRevocationList makes of tmpl.
func x509CRL(t *testing.T, ca *pki.CA, tmpl *pki.CRLTemplate) []byte {
	t.Helper()
	rl := &x509.RevocationList{Number: big.NewInt(tmpl.Number), ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate}
	for _, r := range tmpl.Revoked {
		rl.RevokedCertificateEntries = append(rl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: r.Serial, RevocationTime: r.RevokedAt, ReasonCode: r.Reason})
	}
	if tmpl.IDP != nil {
		ext, err := tmpl.IDP.Extension()
		if err != nil {
			t.Fatal(err)
		}
		rl.ExtraExtensions = []pkix.Extension{ext}
	}
	der, err := x509.CreateRevocationList(rand.Reader, rl, ca.Intermediate, ca.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestCRLEntriesAddHex checks the registry's path (hex serial, Unix
// seconds) encodes what Add encodes from a big.Int and a time, and that it
// refuses what is not a positive hex serial.
func TestCRLEntriesAddHex(t *testing.T) {
	t.Parallel()
	tca := pkitest.NewCA(t)
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	viaBig, viaHex := pki.NewCRLEntries(0), pki.NewCRLEntries(1)
	for _, r := range equivalenceEntries() {
		lower := pki.SerialHex(r.Serial)
		// as stored, with leading zeros, in capitals: one entry each
		for _, hex := range []string{lower, "000" + lower, strings.ToUpper(lower)} {
			if err := viaBig.Add(r.Serial, r.RevokedAt, r.Reason); err != nil {
				t.Fatal(err)
			}
			if err := viaHex.AddHex([]byte(hex), r.RevokedAt.Unix(), r.Reason); err != nil {
				t.Fatalf("AddHex(%s): %v", hex, err)
			}
		}
	}
	if viaBig.Len() != viaHex.Len() {
		t.Fatalf("%d entries via big.Int, %d via hex", viaBig.Len(), viaHex.Len())
	}
	sign := func(e *pki.CRLEntries) *x509.RevocationList {
		der, err := tca.CA.SignCRL(context.Background(), &pki.CRLTemplate{Number: 3, ThisUpdate: now, NextUpdate: now.Add(time.Hour), Entries: e})
		if err != nil {
			t.Fatal(err)
		}
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		return rl
	}
	a, b := sign(viaBig), sign(viaHex)
	if !bytes.Equal(a.RawTBSRevocationList, b.RawTBSRevocationList) {
		t.Error("entries from hex serials and Unix times differ from those of big.Ints and times")
	}
	e := pki.NewCRLEntries(0)
	for _, bad := range []string{"", "0", "000", "xyz", "12 34", "-1", "+1", "0x12", string(bytes.Repeat([]byte("f"), 129))} {
		if err := e.AddHex([]byte(bad), now.Unix(), 1); !errors.Is(err, pki.ErrBadCertSerial) {
			t.Errorf("AddHex(%q) = %v, want ErrBadCertSerial", bad, err)
		}
	}
	if err := e.Add(big.NewInt(-5), now, 1); !errors.Is(err, pki.ErrBadCertSerial) {
		t.Errorf("Add(-5) = %v, want ErrBadCertSerial", err)
	}
	if err := e.Add(big.NewInt(5), time.Time{}, 1); err == nil {
		t.Error("Add with a zero time accepted")
	}
	if err := e.AddHex([]byte("ab"), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), 1); err == nil {
		t.Error("AddHex with a year past 9999 accepted")
	}
	if e.Len() != 0 {
		t.Errorf("refused entries were added: %d", e.Len())
	}
	if _, err := tca.CA.SignCRL(context.Background(), &pki.CRLTemplate{Number: 3, ThisUpdate: now, NextUpdate: now.Add(time.Hour),
		Entries: pki.NewCRLEntries(0), Revoked: equivalenceEntries()}); err == nil {
		t.Error("SignCRL accepted both Entries and Revoked")
	}
}

// TestSignCRLLargeOpenSSL signs a CRL of 100,000 entries through the
// streaming path and has x509 and openssl accept it.
func TestSignCRLLargeOpenSSL(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	tca := pkitest.NewCA(t)
	now := time.Now().UTC().Truncate(time.Second)
	const n = 100_000
	e := pki.NewCRLEntries(n)
	var sn [20]byte
	for i := range n {
		rand.Read(sn[:])
		sn[0] = sn[0]&0x7f | 1
		if err := e.Add(new(big.Int).SetBytes(sn[:]), now.Add(-time.Duration(i)*time.Second), i%11); err != nil {
			t.Fatal(err)
		}
	}
	der, err := tca.CA.SignCRL(context.Background(), &pki.CRLTemplate{Number: 9, ThisUpdate: now, NextUpdate: now.Add(time.Hour), Entries: e})
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(rl.RevokedCertificateEntries) != n {
		t.Fatalf("%d entries, want %d", len(rl.RevokedCertificateEntries), n)
	}
	if err := rl.CheckSignatureFrom(tca.CA.Intermediate); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crlPath, caPath := filepath.Join(dir, "crl.der"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(crlPath, der, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tca.CA.Intermediate.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "crl", "-inform", "DER", "-in", crlPath, "-CAfile", caPath, "-noout", "-verify").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("verify OK")) {
		t.Fatalf("openssl crl -verify: %v\n%s", err, out)
	}
}
