// Package zlinttest lints certificates and CRLs in tests with zlint's
// library (github.com/zmap/zlint/v3), restricted to the lints that apply to
// a private PKI: the RFC sources (RFC 3279, 5280, 5480, 5891, 8813) and the
// community lints. The CA/Browser Forum (BR, EV, S/MIME), Mozilla, Apple and
// ETSI lints are left out: they are the rules of publicly trusted web and
// mail PKIs, not devpki's.
//
// The zlint command-line tool exits 0 even when lints fail, which is why
// tests use the library: Certificate and CRL fail the test on any error or
// fatal result, and on any warning not in the caller's allowlist.
package zlinttest

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// Sources are the lint sources Registry keeps.
var Sources = lint.SourceList{
	lint.RFC3279, lint.RFC5280, lint.RFC5480, lint.RFC5891, lint.RFC8813, lint.Community,
}

var (
	regOnce sync.Once
	reg     lint.Registry
	regErr  error
)

// Registry returns zlint's global registry filtered to Sources.
func Registry() (lint.Registry, error) {
	regOnce.Do(func() {
		reg, regErr = lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: Sources})
		if regErr == nil && len(reg.CertificateLints().Lints()) == 0 {
			regErr = fmt.Errorf("zlint registry filtered to %v holds no certificate lints", Sources)
		}
	})
	return reg, regErr
}

// Allow lists warnings a test accepts: lint name → why the warning is
// expected and not a defect. Errors and fatals cannot be allowed.
type Allow map[string]string

// Finding is one lint result of Notice or worse.
type Finding struct {
	Lint     string
	Status   lint.LintStatus
	Details  string
	Source   lint.LintSource
	Citation string
}

// String is "<status> <lint> (<source> <citation>): <details>".
func (f Finding) String() string {
	s := fmt.Sprintf("%s %s (%s %s)", f.Status, f.Lint, f.Source, f.Citation)
	if f.Details != "" {
		s += ": " + f.Details
	}
	return s
}

// LintCertificate parses der with zcrypto and runs Registry's certificate
// lints; it returns every result of Notice or worse, sorted by lint name.
func LintCertificate(der []byte) ([]Finding, error) {
	r, err := Registry()
	if err != nil {
		return nil, err
	}
	c, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("zcrypto cannot parse the certificate: %w", err)
	}
	return findings(zlint.LintCertificateEx(c, r)), nil
}

// LintCRL parses der with zcrypto and runs Registry's revocation list lints;
// it returns every result of Notice or worse, sorted by lint name.
func LintCRL(der []byte) ([]Finding, error) {
	r, err := Registry()
	if err != nil {
		return nil, err
	}
	if len(r.RevocationListLints().Lints()) == 0 {
		return nil, fmt.Errorf("zlint registry filtered to %v holds no CRL lints", Sources)
	}
	l, err := zx509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("zcrypto cannot parse the CRL: %w", err)
	}
	return findings(zlint.LintRevocationListEx(l, r)), nil
}

func findings(rs *zlint.ResultSet) []Finding {
	var out []Finding
	for name, res := range rs.Results {
		if res.Status < lint.Notice {
			continue
		}
		out = append(out, Finding{Lint: name, Status: res.Status, Details: res.Details,
			Source: res.LintMetadata.Source, Citation: res.LintMetadata.Citation})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Lint < out[j].Lint })
	return out
}

// Check returns a description of each finding a test must not accept:
// every error and fatal, and every warning whose lint is not in allow.
// Notices are accepted.
func Check(fs []Finding, allow Allow) []string {
	var bad []string
	for _, f := range fs {
		switch {
		case f.Status >= lint.Error:
			bad = append(bad, f.String())
		case f.Status == lint.Warn && allow[f.Lint] == "":
			bad = append(bad, f.String()+" (warning not in the allowlist)")
		}
	}
	return bad
}

// Certificate lints the DER certificate der, logs every finding, and fails
// the test (naming it what) on an error, a fatal or a warning not in allow.
func Certificate(t testing.TB, what string, der []byte, allow Allow) {
	t.Helper()
	fs, err := LintCertificate(der)
	if err != nil {
		t.Fatalf("zlint %s: %v", what, err)
	}
	report(t, what, fs, allow)
}

// CRL lints the DER CRL der like Certificate does a certificate.
func CRL(t testing.TB, what string, der []byte, allow Allow) {
	t.Helper()
	fs, err := LintCRL(der)
	if err != nil {
		t.Fatalf("zlint %s: %v", what, err)
	}
	report(t, what, fs, allow)
}

func report(t testing.TB, what string, fs []Finding, allow Allow) {
	t.Helper()
	for _, f := range fs {
		switch why := allow[f.Lint]; {
		case f.Status == lint.Notice:
			t.Logf("zlint %s: %s", what, f)
		case f.Status == lint.Warn && why != "":
			t.Logf("zlint %s: %s (allowed: %s)", what, f, why)
		}
	}
	if bad := Check(fs, allow); len(bad) > 0 {
		t.Errorf("zlint %s:\n  %s", what, strings.Join(bad, "\n  "))
	}
}
