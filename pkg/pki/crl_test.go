package pki_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

func TestSignCRL(t *testing.T) {
	t.Parallel()
	tca := pkitest.NewCA(t)
	now := time.Now().UTC().Truncate(time.Second)
	revoked := []pki.RevokedCert{
		{Serial: big.NewInt(0x1234), RevokedAt: now.Add(-time.Hour), Reason: 1},
		{Serial: big.NewInt(0x5678), RevokedAt: now.Add(-time.Minute), Reason: 0},
		{Serial: big.NewInt(0x9abc), RevokedAt: now.Add(-time.Second), Reason: 5},
	}
	der, err := tca.CA.SignCRL(context.Background(), &pki.CRLTemplate{
		Number: 42, ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour), Revoked: revoked,
	})
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("ParseRevocationList: %v", err)
	}
	if err := crl.CheckSignatureFrom(tca.CA.Intermediate); err != nil {
		t.Errorf("signature does not verify against the intermediate: %v", err)
	}
	if crl.Number.Int64() != 42 || !crl.ThisUpdate.Equal(now) || !crl.NextUpdate.Equal(now.Add(24*time.Hour)) {
		t.Errorf("number %v, thisUpdate %v, nextUpdate %v", crl.Number, crl.ThisUpdate, crl.NextUpdate)
	}
	if string(crl.AuthorityKeyId) != string(tca.CA.Intermediate.SubjectKeyId) || len(crl.AuthorityKeyId) == 0 {
		t.Errorf("AKI %x, want the intermediate's SKI %x", crl.AuthorityKeyId, tca.CA.Intermediate.SubjectKeyId)
	}
	if crl.Issuer.String() != tca.CA.Intermediate.Subject.String() {
		t.Errorf("issuer %s, want %s", crl.Issuer, tca.CA.Intermediate.Subject)
	}
	if len(crl.RevokedCertificateEntries) != len(revoked) {
		t.Fatalf("%d entries, want %d", len(crl.RevokedCertificateEntries), len(revoked))
	}
	for i, e := range crl.RevokedCertificateEntries {
		w := revoked[i]
		if e.SerialNumber.Cmp(w.Serial) != 0 || !e.RevocationTime.Equal(w.RevokedAt) || e.ReasonCode != w.Reason {
			t.Errorf("entry %d = serial %x at %v reason %d, want %x at %v reason %d",
				i, e.SerialNumber, e.RevocationTime, e.ReasonCode, w.Serial, w.RevokedAt, w.Reason)
		}
	}
}

func TestSignCRLRejects(t *testing.T) {
	t.Parallel()
	tca := pkitest.NewCA(t)
	now := time.Now()
	for name, tmpl := range map[string]*pki.CRLTemplate{
		"nil":           nil,
		"zero number":   {ThisUpdate: now, NextUpdate: now.Add(time.Hour)},
		"no nextUpd":    {Number: 1, ThisUpdate: now},
		"bad serial":    {Number: 1, ThisUpdate: now, NextUpdate: now.Add(time.Hour), Revoked: []pki.RevokedCert{{Serial: big.NewInt(0)}}},
		"nil serial":    {Number: 1, ThisUpdate: now, NextUpdate: now.Add(time.Hour), Revoked: []pki.RevokedCert{{}}},
		"backwards":     {Number: 1, ThisUpdate: now, NextUpdate: now.Add(-time.Hour)},
		"no thisUpdate": {Number: 1, NextUpdate: now},
	} {
		if _, err := tca.CA.SignCRL(context.Background(), tmpl); err == nil {
			t.Errorf("%s: SignCRL accepted %+v", name, tmpl)
		}
	}
}

func TestParseSerial(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "0", "-1", "xyz", "12 34"} {
		if _, err := pki.ParseSerial(s); err == nil {
			t.Errorf("ParseSerial(%q) accepted", s)
		}
	}
	n, err := pki.ParseSerial("7fabc")
	if err != nil || n.Int64() != 0x7fabc || pki.SerialHex(n) != "7fabc" {
		t.Errorf("ParseSerial(7fabc) = %v, %v", n, err)
	}
}

// BenchmarkSignCRL100k measures building and signing a CRL of 100,000
// revoked certificates with 20-byte serials.
func BenchmarkSignCRL100k(b *testing.B) {
	tca := pkitest.NewCA(b)
	now := time.Now()
	revoked := make([]pki.RevokedCert, 100_000)
	for i := range revoked {
		var sn [20]byte
		rand.Read(sn[:])
		sn[0] &= 0x7f
		sn[0] |= 0x01
		revoked[i] = pki.RevokedCert{Serial: new(big.Int).SetBytes(sn[:]), RevokedAt: now.Add(-time.Duration(i) * time.Second), Reason: i % 6}
	}
	tmpl := &pki.CRLTemplate{Number: 1, ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour), Revoked: revoked}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		der, err := tca.CA.SignCRL(context.Background(), tmpl)
		if err != nil {
			b.Fatal(err)
		}
		size = len(der)
	}
	b.ReportMetric(float64(size), "bytes/crl")
}
