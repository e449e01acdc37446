package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBadTokenRefused(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)

	// A well-formed but unknown token: a permanent refusal, not a retry loop.
	state := filepath.Join(t.TempDir(), "unknown")
	res := run(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, "dpk_NotARealTokenNotARealTokenNotARealToken12", state, "E2E-BAD-1")...)
	if res.code != 1 {
		t.Errorf("enroll with an unknown token: want exit 1, got %s", res)
	}
	if !strings.Contains(strings.ToLower(res.stderr), "token") {
		t.Errorf("enroll with an unknown token: stderr does not mention the token:\n%s", res)
	}
	if res.elapsed > 10*time.Second {
		t.Errorf("enroll with an unknown token took %s; a permanent refusal should not be retried", res.elapsed)
	}
	requireNoFile(t, filepath.Join(state, "device.crt"))

	// A token bound to one serial, used for another: refused and not spent.
	tok := ca.mintToken(t, srv, "--serial", "E2E-BOUND-1")
	state = filepath.Join(t.TempDir(), "mismatch")
	res = run(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, tok.Token, state, "E2E-BOUND-2")...)
	if res.code != 1 {
		t.Errorf("enroll with a token bound to another serial: want exit 1, got %s", res)
	}
	if !strings.Contains(strings.ToLower(res.stderr), "serial") {
		t.Errorf("enroll with a token bound to another serial: stderr does not mention the serial:\n%s", res)
	}
	requireNoFile(t, filepath.Join(state, "device.crt"))
	if n := usesLeft(t, ca.openSQL(t), tok.ID); n != 1 {
		t.Errorf("refused token has uses_left %d, want 1", n)
	}
	ca.enrollOK(t, srv, tok.Token, filepath.Join(t.TempDir(), "bound"), "E2E-BOUND-1")

	// Expired tokens cannot be minted from the CLI: a negative TTL is a usage error.
	res = run(t, nil, caBin, "token", "create", "--config", ca.Config, "--ca", srv.URL, "--ttl", "-1h")
	if res.code != 2 {
		t.Errorf("ca token create --ttl -1h: want usage error exit 2, got %s", res)
	}
	if strings.HasPrefix(strings.TrimSpace(res.stdout), "dpk_") {
		t.Errorf("ca token create --ttl -1h printed a token:\n%s", res)
	}
	ca.auditVerify(t)
}
