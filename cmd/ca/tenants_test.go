package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"devpki/pkg/registry/sqlstore"
)

// tenantsConfig writes the example config into a fresh directory, so its
// registry.db lands there, and returns its path.
func tenantsConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCA(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// listTenants is 'ca tenants list --output json' decoded.
func listTenants(t *testing.T, cfg string) []tenantJSON {
	t.Helper()
	out, _, err := runCA("tenants", "list", "--config", cfg, "--output", "json", "--local")
	if err != nil {
		t.Fatalf("tenants list: %v", err)
	}
	var ts []tenantJSON
	if err := json.Unmarshal([]byte(out), &ts); err != nil {
		t.Fatalf("tenants list: %q: %v", out, err)
	}
	return ts
}

// TestTenantsCommands: create, list (table and JSON) and set, each audited;
// the audit chain still verifies.
func TestTenantsCommands(t *testing.T) {
	cfg := tenantsConfig(t)
	if _, _, err := runCA("tenants", "create", "acme", "--require-tpm", "--config", cfg, "--local"); err != nil {
		t.Fatalf("create acme: %v", err)
	}
	if _, _, err := runCA("tenants", "create", "--config", cfg, "--local", "beta"); err != nil {
		t.Fatalf("create beta: %v", err)
	}
	ts := listTenants(t, cfg)
	got := map[string]bool{}
	for _, tn := range ts {
		got[tn.Name] = tn.RequireTPM
	}
	if len(ts) != 3 || !got["acme"] || got["beta"] || got["default"] {
		t.Fatalf("tenants = %+v", ts)
	}
	out, _, err := runCA("tenants", "list", "--config", cfg, "--local")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "acme") || !strings.Contains(lines[1], "true") {
		t.Fatalf("table:\n%s", out)
	}

	for _, step := range []struct {
		arg  string
		want bool
	}{{"--require-tpm=false", false}, {"--require-tpm", true}, {"--require-tpm=true", true}} {
		out, _, err := runCA("tenants", "set", "acme", step.arg, "--config", cfg, "--output", "json", "--local")
		if err != nil {
			t.Fatalf("set acme %s: %v", step.arg, err)
		}
		var tn tenantJSON
		if err := json.Unmarshal([]byte(out), &tn); err != nil || tn.Name != "acme" || tn.RequireTPM != step.want {
			t.Fatalf("set acme %s: %q, %v", step.arg, out, err)
		}
		for _, l := range listTenants(t, cfg) {
			if l.Name == "acme" && l.RequireTPM != step.want {
				t.Fatalf("after set %s: %+v", step.arg, l)
			}
		}
	}

	// The rest of the policy, set and read back.
	out, _, err = runCA("tenants", "set", "acme", "--methods", "token,tpm", "--key-types", "ecdsa-p256,rsa", "--cert-lifetime", "72h",
		"--config", cfg, "--output", "json", "--local")
	var tn tenantJSON
	if err != nil || json.Unmarshal([]byte(out), &tn) != nil || tn.CertLifetime != "72h0m0s" || len(tn.Methods) != 2 || len(tn.KeyTypes) != 2 {
		t.Fatalf("set policy: %q, %v", out, err)
	}
	for _, l := range listTenants(t, cfg) {
		if l.Name == "acme" && (l.CertLifetime != "72h0m0s" || strings.Join(l.Methods, ",") != "token,tpm" || !l.RequireTPM) {
			t.Fatalf("after set policy: %+v", l)
		}
	}

	c, err := LoadConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	store, err := sqlstore.Open(context.Background(), sqlstore.Options{DSN: c.DSN()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	evs, err := store.ListAudit(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var creates, updates int
	for _, ev := range evs {
		switch ev.Action {
		case "tenant.create":
			creates++
		case "tenant.update":
			updates++
		}
		if strings.HasPrefix(ev.Action, "tenant.") && !strings.HasPrefix(ev.Actor, "local:") {
			t.Errorf("audit actor %q, want local:<user>", ev.Actor)
		}
	}
	if creates != 2 || updates != 4 {
		t.Errorf("audit: %d tenant.create, %d tenant.update; want 2 and 4", creates, updates)
	}
	if _, _, err := runCA("audit", "verify", "--config", cfg); err != nil {
		t.Fatal(err)
	}
}

// TestTenantsBadInput: every mistake is an error (usage errors exit 2) and
// changes nothing.
func TestTenantsBadInput(t *testing.T) {
	cfg := tenantsConfig(t)
	db := filepath.Join(filepath.Dir(cfg), "registry.db")

	// Refused before the registry is opened: not even the database is made.
	for _, args := range [][]string{
		{"tenants"},
		{"tenants", "delete", "acme"},
		{"tenants", "create", "--config", cfg},
		{"tenants", "create", "bad name", "--config", cfg},
		{"tenants", "create", "a/b", "--config", cfg},
		{"tenants", "create", "..", "--config", cfg},
		{"tenants", "create", strings.Repeat("x", 65), "--config", cfg},
		{"tenants", "create", "acme"}, // no --config
		{"tenants", "create", "acme", "extra", "--config", cfg},
		{"tenants", "create", "acme", "--config", cfg, "--output", "yaml"},
		{"tenants", "list", "acme", "--config", cfg},
		{"tenants", "set", "acme", "--config", cfg}, // nothing to set
		{"tenants", "set", "acme", "--require-tpm=maybe", "--config", cfg},
		{"tenants", "set", "--require-tpm=true", "--config", cfg},
		{"tenants", "set", "acme", "--cert-lifetime", "banana", "--config", cfg, "--local"},
		{"tenants", "create", "acme", "--cert-lifetime", "-2h", "--config", cfg, "--local"},
		{"tenants", "create", "acme", "--config", cfg, "--admin-cert", "x.crt"}, // --admin-key missing
	} {
		if _, _, err := runCA(args...); !errors.Is(err, errUsage) {
			t.Errorf("ca %s: err = %v, want a usage error", strings.Join(args, " "), err)
		}
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("registry created by refused commands: %v", err)
	}

	if _, _, err := runCA("tenants", "create", "acme", "--config", cfg, "--local"); err != nil {
		t.Fatal(err)
	}
	before := listTenants(t, cfg)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tenants", "create", "acme", "--require-tpm", "--config", cfg, "--local"}, `tenant "acme" already exists`},
		{[]string{"tenants", "create", "default", "--config", cfg, "--local"}, `tenant "default" already exists`},
		{[]string{"tenants", "set", "nope", "--require-tpm=true", "--config", cfg, "--local"}, `tenant "nope" does not exist`},
		{[]string{"tenants", "set", "acme", "--methods", "token,pigeon", "--config", cfg, "--local"}, `method "pigeon" is not one of`},
		{[]string{"tenants", "set", "acme", "--key-types", "dsa", "--config", cfg, "--local"}, `key type "dsa" is not one of`},
		{[]string{"tenants", "set", "acme", "--cert-lifetime", "1m", "--config", cfg, "--local"}, `out of range`},
		{[]string{"tenants", "create", "new", "--cert-lifetime", "9000h", "--config", cfg, "--local"}, `out of range`},
	} {
		_, _, err := runCA(tc.args...)
		if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ca %s: err = %v, want %q (exit 1)", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	after := listTenants(t, cfg)
	if len(after) != len(before) {
		t.Fatalf("tenants %+v -> %+v", before, after)
	}
	for i := range after {
		if !reflect.DeepEqual(after[i], before[i]) {
			t.Errorf("tenant changed: %+v -> %+v", before[i], after[i])
		}
	}
	if _, _, err := runCA("audit", "verify", "--config", cfg); err != nil {
		t.Fatal(err)
	}
}
