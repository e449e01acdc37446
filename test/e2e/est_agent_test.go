package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestEnrollOverESTAgainstDevpki runs the real agent over EST against the
// real CA: `enroll --protocol est` (root pinned on the first cacerts, the
// token as the Basic password) → renew with the same key → re-key → an
// admin forces a re-key and the agent's plain renew re-keys by itself →
// the same at a tenant label → revoked: renewal refused, the certificate
// kept. The audit chain verifies at the end.
func TestEnrollOverESTAgainstDevpki(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	tgt := estTarget{URL: srv.URL, Fingerprint: ca.Fingerprint, Token: ca.mintToken(t, srv).Token}
	dir := filepath.Join(t.TempDir(), "dev")
	cert := estEnroll(t, tgt, dir, "EST-AGENT-1")
	id := cert.Subject.CommonName
	cert = estRenew(t, dir, cert, false)
	cert = estRenew(t, dir, cert, true)

	// Forced re-key: a plain renew answers 409 rekey-required, and the
	// agent re-keys by itself.
	mustRun(t, nil, caBin, "devices", "rotate", id, "--deadline", "72h", "--config", ca.Config, "--ca", srv.URL)
	mustRun(t, nil, enrollBin, "renew", "--dir", dir, "--timeout", "30s")
	rekeyed := readCert(t, filepath.Join(dir, "device.crt"))
	if samePub(rekeyed, cert) || rekeyed.Subject.CommonName != id {
		t.Fatalf("after a forced re-key: same key %v, device %s", samePub(rekeyed, cert), rekeyed.Subject.CommonName)
	}

	// At the tenant's label.
	labelled := filepath.Join(t.TempDir(), "dev2")
	tgt2 := estTarget{URL: srv.URL, Label: "default", Fingerprint: ca.Fingerprint, Token: ca.mintToken(t, srv).Token}
	c2 := estEnroll(t, tgt2, labelled, "EST-AGENT-2")
	estRenew(t, labelled, c2, true)

	// Revoked: the agent's renewal is refused and it keeps what it has.
	mustRun(t, nil, caBin, "devices", "revoke", id, "--reason", "keyCompromise", "--config", ca.Config, "--ca", srv.URL)
	res := run(t, nil, enrollBin, "renew", "--dir", dir, "--timeout", "20s")
	if res.code == 0 {
		t.Fatalf("renewal of a revoked device over EST succeeded:\n%s", res)
	}
	if !strings.Contains(res.stderr, "revoked") && !strings.Contains(res.stderr, "not-renewable") {
		t.Errorf("refusal does not say why:\n%s", res)
	}
	if got := readCert(t, filepath.Join(dir, "device.crt")); !got.Equal(rekeyed) {
		t.Error("a refused renewal replaced device.crt")
	}
	ca.auditVerify(t)
}
