package zlinttest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zmap/zlint/v3/lint"

	"devpki/pkg/pki/pkitest/zlinttest"
)

// selfSigned makes a leaf certificate from tmpl, signed by a throwaway CA.
func selfSigned(t *testing.T, tmpl *x509.Certificate) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(1)
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tmpl.SubjectKeyId = []byte{1, 2, 3, 4}
	tmpl.AuthorityKeyId = []byte{1, 2, 3, 4}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func names(fs []zlinttest.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Lint+"="+f.Status.String())
	}
	return out
}

// TestRegistrySources: only RFC and community lints run, and both kinds
// (certificate and CRL) are there.
func TestRegistrySources(t *testing.T) {
	r, err := zlinttest.Registry()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range r.Sources() {
		if !slices.Contains(zlinttest.Sources, s) {
			t.Errorf("registry holds lints of source %s", s)
		}
	}
	if r.CertificateLints().ByName("e_sub_cert_aia_missing") != nil {
		t.Error("a CA/Browser Forum lint is in the registry")
	}
	for _, name := range []string{"w_distribution_point_missing_ldap_or_uri", "e_subject_common_name_max_length", "e_san_bare_wildcard"} {
		if r.CertificateLints().ByName(name) == nil {
			t.Errorf("certificate lint %s is not in the registry", name)
		}
	}
	if r.RevocationListLints().ByName("e_crl_has_valid_reason_code") == nil {
		t.Error("CRL lint e_crl_has_valid_reason_code is not in the registry")
	}
}

// TestFindings: the helper reports warnings and errors, an allowlist
// accepts a warning but never an error, and clean input has no findings.
func TestFindings(t *testing.T) {
	clean := selfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "ok"},
		CRLDistributionPoints: []string{"http://ca.example/crl"}})
	fs, err := zlinttest.LintCertificate(clean)
	if err != nil {
		t.Fatal(err)
	}
	if bad := zlinttest.Check(fs, nil); len(bad) != 0 {
		t.Errorf("clean certificate: %v", bad)
	}

	// https:// alone in the CRL DP: RFC 5280 §4.2.1.13 SHOULD, a warning.
	https := selfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "ok"},
		CRLDistributionPoints: []string{"https://ca.example/crl"}})
	fs, err = zlinttest.LintCertificate(https)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(fs); !slices.Contains(got, "w_distribution_point_missing_ldap_or_uri=warn") {
		t.Errorf("https CRL DP: findings %v, want w_distribution_point_missing_ldap_or_uri=warn", got)
	}
	if bad := zlinttest.Check(fs, nil); len(bad) != 1 {
		t.Errorf("https CRL DP without allowlist: %v, want one", bad)
	}
	if bad := zlinttest.Check(fs, zlinttest.Allow{"w_distribution_point_missing_ldap_or_uri": "test"}); len(bad) != 0 {
		t.Errorf("https CRL DP with the warning allowed: %v", bad)
	}

	// No subject and no SAN: an error, which no allowlist excuses.
	empty := selfSigned(t, &x509.Certificate{})
	fs, err = zlinttest.LintCertificate(empty)
	if err != nil {
		t.Fatal(err)
	}
	allow := zlinttest.Allow{"e_subject_empty_without_san": "never honoured"}
	if bad := zlinttest.Check(fs, allow); len(bad) == 0 || !strings.Contains(strings.Join(bad, " "), "e_subject_empty_without_san") {
		t.Errorf("empty subject, no SAN: %v, want e_subject_empty_without_san", bad)
	}

	if _, err := zlinttest.LintCertificate([]byte("not DER")); err == nil {
		t.Error("garbage linted as a certificate")
	}
}

// TestCRLFindings: a CRL entry with reason code 7 (unused in RFC 5280) is
// an error; a clean CRL has none.
func TestCRLFindings(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SubjectKeyId: []byte{1},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, ca, ca, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	crl := func(reason int) []byte {
		b, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
			ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour),
			RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(9), RevocationTime: time.Now(), ReasonCode: reason}},
		}, ca, key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fs, err := zlinttest.LintCRL(crl(1))
	if err != nil {
		t.Fatal(err)
	}
	if bad := zlinttest.Check(fs, nil); len(bad) != 0 {
		t.Errorf("clean CRL: %v", bad)
	}
	fs, err = zlinttest.LintCRL(crl(7))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(fs); !slices.Contains(got, "e_crl_has_valid_reason_code="+lint.Error.String()) {
		t.Errorf("CRL with reason 7: findings %v, want e_crl_has_valid_reason_code=error", got)
	}
}
