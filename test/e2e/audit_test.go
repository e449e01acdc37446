package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAuditExportVerify: bad-token knocks are counted in the refusal log,
// not chained; `ca audit export` through the admin API verifies offline with
// `ca audit verify --file`; an edited or deleted line is named; after `ca
// audit prune` the live chain and a new export verify from the CA-signed
// checkpoint.
func TestAuditExportVerify(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	tok := ca.mintToken(t, srv)
	ca.enrollOK(t, srv, tok.Token, filepath.Join(t.TempDir(), "dev"), "E2E-AUDIT-1")
	rootPath := filepath.Join(ca.Dir, "root.crt")

	// Five knocks with unknown tokens.
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, rootPath))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for range 5 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/enroll", strings.NewReader(`{"csr":"x"}`))
		req.Header.Set("Authorization", "Bearer dpk_NotARealTokenNotARealTokenNotARealToken12")
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad token: %d, want 401", resp.StatusCode)
		}
	}
	res := mustRun(t, nil, caBin, "audit", "refusals", "--config", ca.Config, "--ca", srv.URL)
	if !strings.Contains(res.stdout, "enroll") || !strings.Contains(res.stdout, "token-invalid") ||
		!strings.Contains(res.stdout, "127.0.0.1") {
		t.Errorf("ca audit refusals does not list the bad tokens:\n%s", res)
	}

	export := filepath.Join(t.TempDir(), "audit.jsonl")
	mustRun(t, nil, caBin, "audit", "export", "--config", ca.Config, "--ca", srv.URL, "--out", export)
	if fi, err := os.Stat(export); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("export file: %v, %v", fi, err)
	}
	res = mustRun(t, nil, caBin, "audit", "verify", "--file", export, "--root", rootPath)
	if !strings.Contains(res.stdout, "verified") || !strings.Contains(res.stdout, "complete from the first event") {
		t.Errorf("ca audit verify --file:\n%s", res)
	}
	raw, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "dpk_NotARealToken") {
		t.Error("the export holds a presented token")
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) < 5 {
		t.Fatalf("export has %d lines:\n%s", len(lines), raw)
	}

	// Edit line 3 (the second event), then delete it instead.
	for _, tc := range []struct {
		name, text string
		edit       func([]string) []string
	}{
		{"edited", "line 3:", func(l []string) []string {
			l[2] = strings.Replace(l[2], `"result":"ok"`, `"result":"no"`, 1)
			return l
		}},
		{"deleted", "line 3:", func(l []string) []string { return append(l[:2], l[3:]...) }},
	} {
		bad := filepath.Join(t.TempDir(), tc.name+".jsonl")
		l := tc.edit(append([]string(nil), lines...))
		if err := os.WriteFile(bad, []byte(strings.Join(l, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		res := run(t, nil, caBin, "audit", "verify", "--file", bad, "--root", rootPath)
		if res.code != 1 || !strings.Contains(res.stderr, "does NOT verify") || !strings.Contains(res.stderr, tc.text) ||
			!strings.Contains(res.stderr, tc.name) {
			t.Errorf("%s export: want exit 1 naming %q and %q, got %s", tc.name, tc.text, tc.name, res)
		}
	}

	// A tenant admin's export is its tenant's chain, and verifies by itself.
	admin := []string{"--config", ca.Config, "--ca", srv.URL}
	keys := t.TempDir()
	mustRun(t, nil, caBin, append([]string{"tenants", "create", "plant-7"}, admin...)...)
	mustRun(t, nil, caBin, append([]string{"admins", "add", "p7", "--role", "admin", "--tenant", "plant-7", "--out", keys}, admin...)...)
	p7 := append(admin, "--admin-cert", filepath.Join(keys, "p7.crt"), "--admin-key", filepath.Join(keys, "p7.key"))
	mustRun(t, nil, caBin, append([]string{"token", "create", "--tenant", "plant-7"}, p7...)...)
	tenantExport := filepath.Join(t.TempDir(), "plant-7.jsonl")
	mustRun(t, nil, caBin, append([]string{"audit", "export", "--out", tenantExport}, p7...)...)
	res = mustRun(t, nil, caBin, "audit", "verify", "--file", tenantExport, "--root", rootPath)
	if !strings.Contains(res.stdout, "(tenant ") || !strings.Contains(res.stdout, "complete from the first event") {
		t.Errorf("tenant admin's export:\n%s", res)
	}
	if b, _ := os.ReadFile(tenantExport); strings.Contains(string(b), "E2E-AUDIT-1") {
		t.Error("the plant-7 export holds the default tenant's device")
	}
	if res := run(t, nil, caBin, append([]string{"audit", "export", "--tenant", "default", "--out", tenantExport + ".x"}, p7...)...); res.code == 0 || !strings.Contains(res.stderr, "404") {
		t.Errorf("tenant admin exporting another tenant: want a 404 refusal, got %s", res)
	}

	// Prune everything so far behind a checkpoint signed by the CA key.
	time.Sleep(1100 * time.Millisecond)
	before := time.Now().UTC().Format(time.RFC3339)
	time.Sleep(1100 * time.Millisecond)
	ca.mintToken(t, srv) // an event after the cut
	res = mustRun(t, nil, caBin, "audit", "prune", "--config", ca.Config, "--before", before)
	if !strings.Contains(res.stdout, "pruned") || !strings.Contains(res.stdout, "checkpoint") {
		t.Errorf("ca audit prune:\n%s", res)
	}
	res = mustRun(t, nil, caBin, "audit", "verify", "--config", ca.Config)
	if !strings.Contains(res.stdout, "verified from checkpoint") {
		t.Errorf("ca audit verify after prune:\n%s", res)
	}
	mustRun(t, nil, caBin, "audit", "export", "--config", ca.Config, "--ca", srv.URL, "--out", export)
	res = mustRun(t, nil, caBin, "audit", "verify", "--file", export, "--root", rootPath)
	if !strings.Contains(res.stdout, "prune checkpoint") || !strings.Contains(res.stdout, "chains to the CA root") {
		t.Errorf("ca audit verify --file after prune:\n%s", res)
	}
	// Against another CA's root the checkpoint is refused.
	other := initCA(t)
	res = run(t, nil, caBin, "audit", "verify", "--file", export, "--root", filepath.Join(other.Dir, "root.crt"))
	if res.code != 1 || !strings.Contains(res.stderr, "checkpoint") {
		t.Errorf("verify against another root: want exit 1 naming the checkpoint, got %s", res)
	}
}
