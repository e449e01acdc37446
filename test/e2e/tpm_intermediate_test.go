package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"devpki/pkg/tpm/swtpmtest"
)

// TestTPMEKIntermediateAtRuntime: with only swtpm's local CA root in
// ca.yaml (tpm.ek_roots, no ek_intermediates), a TPM whose EK certificate
// is issued by the local CA's intermediate is refused as untrusted; 'ca tpm
// roots add' of that intermediate keeps it as an intermediate ('ca tpm
// roots list' says so) and the same running server then enrolls the TPM by
// attestation, with no config edit and no restart.
func TestTPMEKIntermediateAtRuntime(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Start(t)
	ca := initCA(t)
	rootPEM, err := swtpmtest.RootsPEM()
	if err != nil {
		t.Fatal(err)
	}
	interPEM, err := swtpmtest.IntermediatesPEM()
	if err != nil {
		t.Fatal(err)
	}
	rootFile, interFile := filepath.Join(ca.Dir, "swtpm-root.pem"), filepath.Join(t.TempDir(), "swtpm-issuer.pem")
	for p, b := range map[string][]byte{rootFile: rootPEM, interFile: interPEM} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := os.ReadFile(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, "\ntpm:\n    ek_roots: ["+rootFile+"]\n"...)
	if err := os.WriteFile(ca.Config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := ca.serve(t)
	admin := []string{"--config", ca.Config, "--ca", srv.URL}
	const serial = "TPM-EKINTER-1"
	dir := filepath.Join(t.TempDir(), "dev")
	enrollTPM := func() result {
		return run(t, nil, enrollBin, "--ca", srv.URL, "--fingerprint", ca.Fingerprint, "--dir", dir,
			"--serial", serial, "--mac", macFor(serial), "--tpm", sw.Spec(), "--timeout", "30s")
	}

	// The chain cannot be completed: refused, nothing written.
	if res := enrollTPM(); res.code != 1 || !strings.Contains(res.stderr, "tpm-untrusted-ek") {
		t.Fatalf("EK whose intermediate is unknown: want exit 1 tpm-untrusted-ek, got %s", res)
	}
	requireNoFile(t, filepath.Join(dir, "device.crt"))

	res := mustRun(t, nil, caBin, append([]string{"tpm", "roots", "add", interFile}, admin...)...)
	if !strings.Contains(res.stdout, "intermediate") {
		t.Errorf("ca tpm roots add of an intermediate says:\n%s", res.stdout)
	}
	res = mustRun(t, nil, caBin, append([]string{"tpm", "roots", "list"}, admin...)...)
	if lines := strings.Split(strings.TrimSpace(res.stdout), "\n"); len(lines) != 1 || !strings.Contains(lines[0], " intermediate ") {
		t.Errorf("ca tpm roots list: want one intermediate line, got:\n%s", res.stdout)
	}
	res = mustRun(t, nil, caBin, append([]string{"tpm", "roots", "list", "--output", "json"}, admin...)...)
	if !strings.Contains(res.stdout, `"kind": "intermediate"`) && !strings.Contains(res.stdout, `"kind":"intermediate"`) {
		t.Errorf("ca tpm roots list --output json: no kind intermediate:\n%s", res.stdout)
	}

	if res := enrollTPM(); res.code != 0 || !strings.Contains(res.stdout, "key: TPM (") {
		t.Fatalf("attestation enrollment after the intermediate was added: want exit 0 and a TPM key, got %s", res)
	}
	readCert(t, filepath.Join(dir, "device.crt"))
	ca.auditVerify(t)
}
