package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestTenantsRenewGrace: 'ca tenants create|set --renew-grace' sets a
// tenant's renewal grace period (a duration, off, or 0 for the CA's),
// shown in JSON; bad values change nothing.
func TestTenantsRenewGrace(t *testing.T) {
	cfg := tenantsConfig(t)
	set := func(args ...string) tenantJSON {
		t.Helper()
		out, _, err := runCA(append(args, "--config", cfg, "--output", "json", "--local")...)
		var tn tenantJSON
		if err != nil || json.Unmarshal([]byte(out), &tn) != nil {
			t.Fatalf("ca %s: %q, %v", strings.Join(args, " "), out, err)
		}
		return tn
	}
	if tn := set("tenants", "create", "shelf", "--renew-grace", "72h"); tn.RenewGrace != "72h0m0s" {
		t.Fatalf("create: %+v", tn)
	}
	for _, c := range []struct{ arg, want string }{{"off", "off"}, {"0", ""}, {"24h", "24h0m0s"}} {
		if tn := set("tenants", "set", "shelf", "--renew-grace", c.arg); tn.RenewGrace != c.want {
			t.Fatalf("--renew-grace %s: %+v", c.arg, tn)
		}
	}
	out, _, err := runCA("tenants", "set", "shelf", "--renew-grace", "off", "--config", cfg, "--local")
	if err != nil || !strings.Contains(out, "renew_grace=off") {
		t.Fatalf("text output %q, %v", out, err)
	}
	for _, bad := range []string{"banana", "-1h"} {
		if _, _, err := runCA("tenants", "set", "shelf", "--renew-grace", bad, "--config", cfg, "--local"); !errors.Is(err, errUsage) {
			t.Errorf("--renew-grace %s: %v, want a usage error", bad, err)
		}
	}
	if _, _, err := runCA("tenants", "set", "shelf", "--renew-grace", "1s", "--config", cfg, "--local"); err == nil ||
		!strings.Contains(err.Error(), "out of range") {
		t.Errorf("--renew-grace 1s: %v, want out of range", err)
	}
	for _, l := range listTenants(t, cfg) {
		if l.Name == "shelf" && l.RenewGrace != "off" {
			t.Fatalf("after refused sets: %+v", l)
		}
	}
}
