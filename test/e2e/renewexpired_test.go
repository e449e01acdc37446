package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/swtpmtest"
)

// clockEnv shifts both binaries' clocks (DEVPKI_TEST_CLOCK_OFFSET) so that
// certificates expire without waiting.
func clockEnv(d time.Duration) []string {
	return []string{"DEVPKI_TEST_CLOCK_OFFSET=" + d.String()}
}

// TestRenewExpiredEndToEnd: devices enrolled with the default 720h
// lifetime sleep past their expiry (the CA and the agents run on clocks
// shifted forward). Within renew.grace_period (48h here) 'enroll run' wakes
// up with the expired certificate and renews it by itself by proof of
// possession, and 'enroll rekey' does it with a new key; the mutual-TLS
// door keeps refusing the expired certificate; a revoked certificate never
// renews; beyond the grace period the agent exits with the CA's advice
// (a serial-bound token); an EST identity is told what to do. Refusals
// write no certificate; the audit chain verifies at the end.
func TestRenewExpiredEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	f, err := os.OpenFile(ca.Config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\nrenew:\n  grace_period: 48h\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	srv := ca.serve(t)
	base := t.TempDir()
	dirs := map[string]string{}
	ids := map[string]string{}
	for _, serial := range []string{"E2E-EXP-RUN", "E2E-EXP-REKEY", "E2E-EXP-REVOKED", "E2E-EXP-LATE"} {
		dirs[serial] = filepath.Join(base, serial)
		ids[serial] = ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dirs[serial], serial)
	}
	estDir := filepath.Join(base, "est")
	estEnroll(t, estTarget{URL: srv.URL, Fingerprint: ca.Fingerprint, Token: ca.mintToken(t, srv).Token}, estDir, "E2E-EXP-EST")
	mustRun(t, nil, caBin, "devices", "revoke", ids["E2E-EXP-REVOKED"], "--reason", "keyCompromise", "--config", ca.Config, "--ca", srv.URL)
	first := readCert(t, filepath.Join(dirs["E2E-EXP-RUN"], "device.crt"))
	life := time.Until(first.NotAfter)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	// A day after expiry.
	day := life + 24*time.Hour
	srv = startServerEnv(t, clockEnv(day), "--config", ca.Config)
	st := ca.openStore(t)
	ctx := context.Background()
	certs := func() int {
		n := 0
		for _, id := range ids {
			l, err := st.ListDeviceCertificates(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			n += len(l)
		}
		return n
	}

	// On its own clock the agent thinks the certificate valid and renews
	// over mutual TLS: the CA refuses the expired certificate there.
	before := certs()
	res := run(t, nil, enrollBin, "renew", "--dir", dirs["E2E-EXP-RUN"], "--ca", srv.URL, "--timeout", "20s")
	if res.code != 1 || !strings.Contains(res.stderr, "unauthorized") {
		t.Fatalf("mutual-TLS renewal of an expired certificate: want exit 1 unauthorized, got %s", res)
	}

	// A revoked certificate never renews, expired or not.
	res = run(t, clockEnv(day), enrollBin, "renew", "--dir", dirs["E2E-EXP-REVOKED"], "--ca", srv.URL, "--timeout", "20s")
	if res.code != 1 || !strings.Contains(res.stderr, "revoked") {
		t.Fatalf("expired renewal of a revoked certificate: want exit 1 revoked, got %s", res)
	}
	// EST has no such flow: the agent says what to do.
	res = run(t, clockEnv(day), enrollBin, "renew", "--dir", estDir, "--ca", srv.URL, "--timeout", "20s")
	if res.code != 1 || !strings.Contains(res.stderr, "EST (RFC 7030) has no renewal of an expired certificate") ||
		!strings.Contains(res.stderr, "ca token create --serial E2E-EXP-EST") {
		t.Fatalf("EST identity expired: %s", res)
	}
	if n := certs(); n != before {
		t.Fatalf("refusals recorded certificates: %d -> %d", before, n)
	}

	// 'enroll run' wakes up with the expired certificate and renews it by
	// itself, then sleeps until the next renewal: stop it there.
	renewed := runAgentUntil(t, clockEnv(day), srv.URL, dirs["E2E-EXP-RUN"], first)
	if !samePub(first, renewed) || renewed.Subject.String() != first.Subject.String() {
		t.Fatal("expired renewal changed the key or the identity")
	}
	if now := time.Now().Add(day); !now.Before(renewed.NotAfter) || now.Before(renewed.NotBefore) {
		t.Fatalf("renewed certificate %s..%s is not valid at the CA's time %s", renewed.NotBefore, renewed.NotAfter, now)
	}
	old, err := st.GetCertificate(ctx, first.SerialNumber.Text(16))
	if err != nil || old.Status != registry.CertSuperseded {
		t.Fatalf("expired certificate is %+v (%v), want superseded", old, err)
	}
	// And the renewed identity renews over mutual TLS again.
	mustRun(t, clockEnv(day), enrollBin, "renew", "--dir", dirs["E2E-EXP-RUN"], "--ca", srv.URL)

	// 'enroll rekey' with an expired certificate: a new key, the CSR bound
	// by the old key's signature.
	c0 := readCert(t, filepath.Join(dirs["E2E-EXP-REKEY"], "device.crt"))
	mustRun(t, clockEnv(day), enrollBin, "rekey", "--dir", dirs["E2E-EXP-REKEY"], "--ca", srv.URL)
	c1 := readCert(t, filepath.Join(dirs["E2E-EXP-REKEY"], "device.crt"))
	if samePub(c0, c1) || c1.Subject.String() != c0.Subject.String() {
		t.Fatal("expired re-key kept the key or changed the identity")
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	// Three days after expiry: beyond the 48h grace period.
	late := life + 72*time.Hour
	srv = startServerEnv(t, clockEnv(late), "--config", ca.Config)
	status := mustRun(t, clockEnv(late), enrollBin, "status", "--dir", dirs["E2E-EXP-LATE"])
	if !strings.Contains(status.stdout, "EXPIRED:") {
		t.Errorf("status of an expired identity does not say so:\n%s", status.stdout)
	}
	before = certs()
	res = run(t, clockEnv(late), enrollBin, "run", "--dir", dirs["E2E-EXP-LATE"], "--ca", srv.URL, "--timeout", "20s")
	if res.code != 1 || !strings.Contains(res.stderr, "renew-grace-expired") ||
		!strings.Contains(res.stderr, "ca token create --tenant default --serial E2E-EXP-LATE") {
		t.Fatalf("beyond the grace period: want exit 1 with the re-enrollment advice, got %s", res)
	}
	if n := certs(); n != before {
		t.Fatalf("a refused expired renewal recorded a certificate: %d -> %d", before, n)
	}
	lateCert := readCert(t, filepath.Join(dirs["E2E-EXP-LATE"], "device.crt"))
	if rec, err := st.GetCertificate(ctx, lateCert.SerialNumber.Text(16)); err != nil || rec.Status != registry.CertActive {
		t.Fatalf("refused certificate record %+v (%v)", rec, err)
	}
	events, err := st.ListAudit(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	for _, ev := range events {
		if ev.Action == "renew-expired" && ev.Result == registry.ResultOK {
			ok++
		}
	}
	if ok != 2 {
		t.Fatalf("%d renew-expired events, want 2 (run, rekey)", ok)
	}
	ca.auditVerify(t)
}

// runAgentUntil runs 'enroll run --dir dir' against caURL until device.crt holds a
// certificate other than prev, then stops it with SIGTERM (it would sleep
// until the next renewal) and returns the new certificate.
func runAgentUntil(t *testing.T, env []string, caURL, dir string, prev *x509.Certificate) *x509.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, enrollBin, "run", "--dir", dir, "--ca", caURL, "--timeout", "30s")
	cmd.Env = cleanEnv(env...)
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &bytes.Buffer{}, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	path := filepath.Join(dir, "device.crt")
	for {
		select {
		case err := <-done:
			t.Fatalf("enroll run exited before renewing: %v\n%s", err, stderr.String())
		case <-ctx.Done():
			t.Fatalf("enroll run did not renew within %s:\n%s", cmdTimeout, stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if !strings.Contains(stderr.String(), "next renewal at") || !strings.Contains(stderr.String(), "renewed") {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if c := readCert(t, path); c.SerialNumber.Cmp(prev.SerialNumber) != 0 && len(b) > 0 {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			if err := <-done; err != nil {
				t.Fatalf("enroll run after SIGTERM: %v\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "renewing by proof of possession") {
				t.Errorf("enroll run did not say how it renewed:\n%s", stderr.String())
			}
			return c
		}
	}
}

// TestRenewExpiredTPMEndToEnd: a device enrolled by TPM attestation (swtpm)
// wakes up expired: 'enroll renew' signs the CA's nonce with the TPM key
// and has its AK certify the key again over it (the CA checks the AK the
// device activated at enrollment); expired once more, 'enroll rekey' makes
// a new TPM key certified over the nonce. The EK identity is kept.
func TestRenewExpiredTPMEndToEnd(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Start(t)
	addr := freePort(t)
	ca := initCAAt(t, addr)
	rootFile := enableTPM(t, ca)
	srv, err := tryStartServer(t, addr, []string{"--config", ca.Config})
	if err != nil {
		t.Fatalf("ca serve: %v", err)
	}
	mustRun(t, nil, caBin, "tpm", "roots", "add", rootFile, "--config", ca.Config, "--ca", srv.URL)
	dir := filepath.Join(t.TempDir(), "dev")
	const serial = "TPM-EXP-1"
	mustRun(t, nil, enrollBin, "--ca", srv.URL, "--fingerprint", ca.Fingerprint, "--dir", dir, "--serial", serial,
		"--mac", macFor(serial), "--tpm", sw.Spec(), "--timeout", "30s")
	c0 := readCert(t, filepath.Join(dir, "device.crt"))
	id0, err := pki.DeviceIdentity(c0, "devpki.local")
	if err != nil || id0.EKHash == "" {
		t.Fatalf("TPM identity %+v, %v", id0, err)
	}
	restart := func(offset time.Duration) {
		t.Helper()
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		if srv, err = tryStartServerEnv(t, addr, clockEnv(offset), []string{"--config", ca.Config}); err != nil {
			t.Fatalf("ca serve: %v", err)
		}
	}

	offset := time.Until(c0.NotAfter) + time.Hour
	restart(offset)
	res := mustRun(t, clockEnv(offset), enrollBin, "renew", "--dir", dir)
	if !strings.Contains(res.stderr, "renewing by proof of possession") {
		t.Fatalf("renew of the expired TPM identity:\n%s", res)
	}
	c1 := readCert(t, filepath.Join(dir, "device.crt"))
	if !samePub(c0, c1) || c1.SerialNumber.Cmp(c0.SerialNumber) == 0 {
		t.Fatal("expired TPM renewal did not issue a new certificate for the same TPM key")
	}

	offset += time.Until(c1.NotAfter.Add(-offset)) + time.Hour
	restart(offset)
	mustRun(t, clockEnv(offset), enrollBin, "rekey", "--dir", dir)
	c2 := readCert(t, filepath.Join(dir, "device.crt"))
	if samePub(c1, c2) {
		t.Fatal("expired TPM re-key kept the key")
	}
	if id2, err := pki.DeviceIdentity(c2, "devpki.local"); err != nil || id2.EKHash != id0.EKHash {
		t.Fatalf("re-keyed identity %+v, %v; want EK %s", id2, err, id0.EKHash)
	}
	ca.auditVerify(t)
}
