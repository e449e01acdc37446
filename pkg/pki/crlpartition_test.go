package pki_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
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

// TestPartitionCRLIDP signs a partition CRL and reads its issuing
// distribution point back, with Go and with openssl.
func TestPartitionCRLIDP(t *testing.T) {
	t.Parallel()
	tca := pkitest.NewCA(t)
	now := time.Now().UTC().Truncate(time.Second)
	const uri = "http://127.0.0.1:8080/crl/p/17"
	der, err := tca.CA.SignCRL(context.Background(), &pki.CRLTemplate{
		Number: 3, ThisUpdate: now, NextUpdate: now.Add(time.Hour),
		Revoked: []pki.RevokedCert{{Serial: big.NewInt(0xabcdef), RevokedAt: now, Reason: 1}},
		IDP:     &pki.IDP{URI: uri, OnlyContainsUserCerts: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	idp, err := pki.ParseIDP(rl)
	if err != nil || idp == nil || idp.URI != uri || !idp.OnlyContainsUserCerts {
		t.Fatalf("ParseIDP = %+v, %v; want %s, onlyContainsUserCerts", idp, err, uri)
	}
	// The extension as RFC 5280 §5.2.5 spells it, byte for byte: SEQUENCE {
	// [0] { [0] { [6] uri } }, [1] TRUE }.
	want := append([]byte{0x30, byte(len(uri) + 9), 0xa0, byte(len(uri) + 4), 0xa0, byte(len(uri) + 2), 0x86, byte(len(uri))}, uri...)
	want = append(want, 0x81, 0x01, 0xff)
	for _, e := range rl.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 28}) {
			if !e.Critical || string(e.Value) != string(want) {
				t.Errorf("IDP extension critical=%v value %x, want critical %x", e.Critical, e.Value, want)
			}
		}
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "p.crl")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "crl", "-inform", "DER", "-in", path, "-noout", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	text := string(out)
	for _, w := range []string{"X509v3 Issuing Distribution Point: critical", "URI:" + uri, "Only User Certificates"} {
		if !strings.Contains(text, w) {
			t.Errorf("openssl crl -text lacks %q:\n%s", w, text)
		}
	}

	// A full CRL has no IDP.
	full, err := tca.CA.SignCRL(context.Background(), &pki.CRLTemplate{Number: 4, ThisUpdate: now, NextUpdate: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	rl, _ = x509.ParseRevocationList(full)
	if idp, err := pki.ParseIDP(rl); idp != nil || err != nil {
		t.Errorf("ParseIDP(full CRL) = %+v, %v; want nil, nil", idp, err)
	}
}

func TestIDPRefused(t *testing.T) {
	t.Parallel()
	for _, uri := range []string{"", "http://a b/crl/p/1", "http://é/crl"} {
		if _, err := (pki.IDP{URI: uri}).Extension(); !errors.Is(err, pki.ErrBadIDP) {
			t.Errorf("IDP{URI: %q}.Extension() = %v, want ErrBadIDP", uri, err)
		}
	}
	good, _ := (pki.IDP{URI: "http://x/crl/p/1"}).Extension()
	for name, ext := range map[string]pkix.Extension{
		"not critical": {Id: good.Id, Value: good.Value},
		"garbage":      {Id: good.Id, Critical: true, Value: []byte{0x30, 0x03, 0x01}},
		"trailing":     {Id: good.Id, Critical: true, Value: append(append([]byte{}, good.Value...), 0)},
		// SEQUENCE { [2] TRUE }: onlyContainsCACerts.
		"CA certs only": {Id: good.Id, Critical: true, Value: []byte{0x30, 0x03, 0x82, 0x01, 0xff}},
		// SEQUENCE { [4] TRUE }: an indirect CRL.
		"indirect": {Id: good.Id, Critical: true, Value: []byte{0x30, 0x03, 0x84, 0x01, 0xff}},
		// SEQUENCE {}: no distribution point name.
		"no URI": {Id: good.Id, Critical: true, Value: []byte{0x30, 0x00}},
	} {
		rl := &x509.RevocationList{Extensions: []pkix.Extension{ext}}
		if idp, err := pki.ParseIDP(rl); !errors.Is(err, pki.ErrBadIDP) {
			t.Errorf("%s: ParseIDP = %+v, %v; want ErrBadIDP", name, idp, err)
		}
	}
}

func TestCRLPartition(t *testing.T) {
	t.Parallel()
	if got := pki.CRLPartition(big.NewInt(100), 64); got != 100%64+1 {
		t.Errorf("CRLPartition(100, 64) = %d, want %d", got, 100%64+1)
	}
	if got := pki.CRLPartition(big.NewInt(5), 0); got != 0 {
		t.Errorf("CRLPartition(5, 0) = %d, want 0", got)
	}
	// Random serials spread over every partition, each in range.
	tca := pkitest.NewCA(t)
	iss, err := pki.NewIssuer(pki.IssuerOptions{CA: tca.CA, TrustDomain: "devpki.local",
		CRLURL: "http://127.0.0.1:8080/crl", CRLPartitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for i := 0; i < 64 && len(seen) < 4; i++ {
		key, _, _ := tca.DeviceKeyAndCSR(t, "SN-1", "02:00:00:00:00:01")
		is, err := iss.IssueDevice(context.Background(), &pki.DeviceRequest{
			Identity:  pki.Identity{DeviceID: "d", Tenant: "default", Serial: "SN-1"},
			PublicKey: key.Public(),
		})
		if err != nil {
			t.Fatal(err)
		}
		c := is.Certificate
		p := pki.CRLPartition(c.SerialNumber, 4)
		if want := "http://127.0.0.1:8080/crl/p/" + string(rune('0'+p)); len(c.CRLDistributionPoints) != 1 || c.CRLDistributionPoints[0] != want {
			t.Fatalf("CRL DP %v, want [%s]", c.CRLDistributionPoints, want)
		}
		if got := pki.CertCRLPartition(c); got != p {
			t.Fatalf("CertCRLPartition = %d, want %d", got, p)
		}
		seen[p] = true
	}
	if len(seen) != 4 {
		t.Errorf("64 certificates named partitions %v, want all of 1..4", seen)
	}
	// Without partitions the full CRL is named, and no partition read back.
	iss, _ = pki.NewIssuer(pki.IssuerOptions{CA: tca.CA, TrustDomain: "devpki.local", CRLURL: "http://127.0.0.1:8080/crl"})
	key, _, _ := tca.DeviceKeyAndCSR(t, "SN-2", "02:00:00:00:00:02")
	is, err := iss.IssueDevice(context.Background(), &pki.DeviceRequest{
		Identity: pki.Identity{DeviceID: "d2", Tenant: "default", Serial: "SN-2"}, PublicKey: key.Public(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if dp := is.Certificate.CRLDistributionPoints; len(dp) != 1 || dp[0] != "http://127.0.0.1:8080/crl" || pki.CertCRLPartition(is.Certificate) != 0 {
		t.Errorf("unpartitioned CRL DP %v (partition %d)", dp, pki.CertCRLPartition(is.Certificate))
	}
	if _, err := pki.NewIssuer(pki.IssuerOptions{CA: tca.CA, TrustDomain: "devpki.local", CRLPartitions: pki.MaxCRLPartitions + 1}); err == nil {
		t.Error("NewIssuer accepted too many partitions")
	}
}

func TestParseCRLPartition(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"1", "64", "4096"} {
		if _, err := pki.ParseCRLPartition(s); err != nil {
			t.Errorf("ParseCRLPartition(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "0", "01", "-1", "+1", "4097", "99999", "1a", " 1", "1.0"} {
		if n, err := pki.ParseCRLPartition(s); err == nil {
			t.Errorf("ParseCRLPartition(%q) = %d, want an error", s, n)
		}
	}
}
