package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/registry"
)

// TestAdminsAndTenantsEndToEnd runs the governance commands with the real
// binaries: the bootstrap admin (a super-admin) creates tenants over the
// API with a policy the pipeline enforces, and admins of each role (keys
// made locally, encrypted, or from a CSR); each admin acts with
// --admin-cert/--admin-key: an operator mints but cannot revoke, an auditor
// reads but cannot mint, a tenant admin neither sees nor revokes another
// tenant's device (404) nor mints for it (refused and audited), a revoked
// admin is refused at once, an admin renews its certificate over mTLS.
func TestAdminsAndTenantsEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	st := ca.openStore(t)
	ctx := context.Background()
	admin := []string{"--config", ca.Config, "--ca", srv.URL}
	keys := t.TempDir()
	as := func(name string, args ...string) []string {
		return append(append(args, admin...), "--admin-cert", filepath.Join(keys, name+".crt"), "--admin-key", filepath.Join(keys, name+".key"))
	}
	refused := func(status string, args ...string) result {
		t.Helper()
		res := run(t, nil, caBin, args...)
		if res.code == 0 || !strings.Contains(res.stderr, status) {
			t.Errorf("ca %s: want a %s refusal, got %s", strings.Join(args[:2], " "), status, res)
		}
		return res
	}

	// Tenants over the API, with policy.
	out := mustRun(t, nil, caBin, append([]string{"tenants", "create", "plant-7", "--cert-lifetime", "2h", "--methods", "token",
		"--key-types", "ecdsa-p256", "--output", "json"}, admin...)...)
	var tn struct {
		Name         string   `json:"name"`
		Methods      []string `json:"methods"`
		CertLifetime string   `json:"cert_lifetime"`
	}
	if err := json.Unmarshal([]byte(out.stdout), &tn); err != nil || tn.Name != "plant-7" || tn.CertLifetime != "2h0m0s" {
		t.Fatalf("tenants create: %+v %v\n%s", tn, err, out)
	}
	mustRun(t, nil, caBin, append([]string{"tenants", "create", "secure"}, admin...)...)
	mustRun(t, nil, caBin, append([]string{"tenants", "set", "secure", "--require-tpm=true"}, admin...)...)
	if res := mustRun(t, nil, caBin, append([]string{"tenants", "list"}, admin...)...); !strings.Contains(res.stdout, "plant-7") ||
		!strings.Contains(res.stdout, "secure") {
		t.Errorf("tenants list:\n%s", res)
	}

	// Admins: keys made locally (encrypted, 0600), or from a CSR.
	for _, a := range [][]string{
		{"op", "--role", "operator", "--tenant", "default"},
		{"aud", "--role", "auditor", "--tenant", "default"},
		{"dadmin", "--role", "admin", "--tenant", "default"},
		{"p7", "--role", "admin", "--tenant", "plant-7"},
	} {
		mustRun(t, nil, caBin, append(append([]string{"admins", "add"}, a...), append([]string{"--out", keys}, admin...)...)...)
	}
	requireMode(t, filepath.Join(keys, "op.key"), 0o600)
	if b, _ := os.ReadFile(filepath.Join(keys, "op.key")); !strings.Contains(string(b), "ENCRYPTED") {
		t.Errorf("op.key is not encrypted:\n%s", b)
	}
	csrKey, csrFile := filepath.Join(keys, "ext.key"), filepath.Join(t.TempDir(), "ext.csr")
	mustRun(t, nil, "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", csrKey, "-subj", "/CN=ext", "-out", csrFile)
	mustRun(t, nil, caBin, append([]string{"admins", "add", "ext", "--role", "auditor", "--tenant", "default", "--csr", csrFile, "--out", keys}, admin...)...)
	if c := readCerts(t, filepath.Join(keys, "ext.crt"))[0]; c.NotAfter.Sub(c.NotBefore) < 89*24*time.Hour {
		t.Errorf("admin certificate lifetime %s, want the admin.cert_lifetime default (90 days)", c.NotAfter.Sub(c.NotBefore))
	}
	// A tenant admin may not make a super-admin.
	refused("403", as("dadmin", "admins", "add", "wannabe", "--role", "admin", "--out", t.TempDir())...)

	// A default-tenant device.
	dev := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, filepath.Join(t.TempDir(), "d1"), "E2E-GOV-1")

	// The operator mints tokens but cannot revoke.
	mustRun(t, nil, caBin, as("op", "token", "create")...)
	refused("403", as("op", "devices", "revoke", dev, "--reason", "keyCompromise")...)
	// The auditor (CSR-made, unencrypted key) reads but cannot mint.
	mustRun(t, nil, caBin, as("ext", "devices", "get", dev)...)
	mustRun(t, nil, caBin, as("aud", "audit", "list")...)
	refused("403", as("aud", "token", "create")...)
	// The plant-7 admin neither sees nor revokes the default tenant's device.
	refused("404", as("p7", "devices", "get", dev)...)
	refused("404", as("p7", "devices", "revoke", dev, "--reason", "keyCompromise")...)
	if d, err := st.GetDevice(ctx, dev); err != nil || d.Status != registry.DeviceActive {
		t.Fatalf("device after refusals: %+v %v", d, err)
	}
	// A default-tenant admin minting for plant-7: refused and audited.
	refused("404", as("dadmin", "token", "create", "--tenant", "plant-7")...)
	evs, err := st.ListAudit(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	audited := false
	for _, ev := range evs {
		audited = audited || (ev.Actor == "admin:dadmin" && ev.Action == "token.create" && ev.Result == registry.ResultDenied && ev.Target == "plant-7")
	}
	if !audited {
		t.Error("the refused cross-tenant token is not audited")
	}

	// The plant-7 admin enrolls a device in its tenant: the tenant's 2h
	// lifetime applies.
	out = mustRun(t, nil, caBin, append(as("p7", "token", "create", "--tenant", "plant-7"), "--output", "json")...)
	var tok wire.TokenCreateResponse
	if err := json.Unmarshal([]byte(out.stdout), &tok); err != nil {
		t.Fatal(err)
	}
	d7 := filepath.Join(t.TempDir(), "d7")
	ca.enrollOK(t, srv, tok.Token, d7, "E2E-GOV-7")
	if c := readCert(t, filepath.Join(d7, "device.crt")); c.NotAfter.Sub(c.NotBefore) > 2*time.Hour+5*time.Minute {
		t.Errorf("plant-7 certificate lifetime %s, want the tenant's 2h", c.NotAfter.Sub(c.NotBefore))
	}
	// The require_tpm tenant refuses a software key; the token stays unspent.
	sec := ca.mintToken(t, srv, "--tenant", "secure")
	if res := run(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, sec.Token, filepath.Join(t.TempDir(), "ds"), "E2E-GOV-S")...); res.code == 0 ||
		!strings.Contains(res.stderr, "tpm-required") {
		t.Errorf("software key into a require_tpm tenant: %s", res)
	}
	if n := usesLeft(t, ca.openSQL(t), sec.ID); n != 1 {
		t.Errorf("token uses left %d, want 1", n)
	}

	// Renewal over mTLS: a new key and certificate for the auditor.
	renewed := t.TempDir()
	mustRun(t, nil, caBin, as("aud", "admins", "renew", "--out", renewed)...)
	mustRun(t, nil, caBin, append([]string{"devices", "list"}, append(admin, "--admin-cert", filepath.Join(renewed, "aud.crt"),
		"--admin-key", filepath.Join(renewed, "aud.key"))...)...)

	// A revoked admin is refused at once; its certificate is revoked.
	opCert := readCerts(t, filepath.Join(keys, "op.crt"))[0]
	mustRun(t, nil, caBin, append([]string{"admins", "revoke", "op"}, admin...)...)
	refused("403", as("op", "token", "create")...)
	if rec, err := st.GetCertificate(ctx, opCert.SerialNumber.Text(16)); err != nil || rec.Status != registry.CertRevoked {
		t.Errorf("op's certificate after revoke: %+v %v", rec, err)
	}
	out = mustRun(t, nil, caBin, append([]string{"admins", "list", "--output", "json"}, admin...)...)
	var al wire.AdminList
	if err := json.Unmarshal([]byte(out.stdout), &al); err != nil {
		t.Fatal(err)
	}
	statuses := map[string]string{}
	for _, a := range al.Admins {
		statuses[a.Name] = a.Status
	}
	if statuses["op"] != "revoked" || statuses["aud"] != "active" || statuses["admin"] != "active" || len(al.Admins) != 6 {
		t.Errorf("admins list: %+v", al.Admins)
	}
	// The plant-7 admin sees only its tenant's admins.
	out = mustRun(t, nil, caBin, append(as("p7", "admins", "list"), "--output", "json")...)
	if err := json.Unmarshal([]byte(out.stdout), &al); err != nil || len(al.Admins) != 1 || al.Admins[0].Name != "p7" {
		t.Errorf("p7's admins list: %+v %v", al.Admins, err)
	}
	ca.auditVerify(t)
}
