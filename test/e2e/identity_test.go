package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"devpki/api/wire"
)

// TestCanonicalIdentityEndToEnd: with the real binaries, a serial that
// differs from an enrolled one only in case is a 409 serial-conflict, and a
// new serial claiming an enrolled device's MAC is a 403 clone-suspect held
// for an admin ('ca devices list --status quarantined'); neither spends its
// token or records a device.
func TestCanonicalIdentityEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	db := ca.openSQL(t)
	admin := []string{"--config", ca.Config, "--ca", srv.URL}

	const serial = "E2E-CASE-1"
	ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, filepath.Join(t.TempDir(), "first"), serial)
	devices := func() int {
		t.Helper()
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM devices`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := devices()

	lower := ca.mintToken(t, srv)
	res := run(t, nil, enrollBin, "--ca", srv.URL, "--fingerprint", ca.Fingerprint, "--token", lower.Token,
		"--dir", filepath.Join(t.TempDir(), "lower"), "--serial", strings.ToLower(serial), "--mac", macFor("other"), "--tpm", "none")
	if res.code == 0 || !strings.Contains(res.stderr, "409") || !strings.Contains(res.stderr, wire.SlugSerialConflict) {
		t.Errorf("enroll of %q beside %q: want a 409 serial-conflict refusal, got %s", strings.ToLower(serial), serial, res)
	}
	if n := usesLeft(t, db, lower.ID); n != 1 {
		t.Errorf("the refused token has %d uses left, want 1", n)
	}

	const clone = "E2E-CASE-CLONE"
	cloneTok := ca.mintToken(t, srv)
	res = run(t, nil, enrollBin, "--ca", srv.URL, "--fingerprint", ca.Fingerprint, "--token", cloneTok.Token,
		"--dir", filepath.Join(t.TempDir(), "clone"), "--serial", clone, "--mac", macFor(serial), "--tpm", "none")
	if res.code == 0 || !strings.Contains(res.stderr, "403") || !strings.Contains(res.stderr, wire.SlugCloneSuspect) {
		t.Errorf("a new serial with an enrolled device's MAC: want a 403 clone-suspect refusal, got %s", res)
	}
	if n := usesLeft(t, db, cloneTok.ID); n != 1 {
		t.Errorf("the clone's token has %d uses left, want 1", n)
	}
	if n := devices(); n != before {
		t.Errorf("%d devices after the refusals, want %d", n, before)
	}
	out := mustRun(t, nil, caBin, append([]string{"devices", "list", "--status", "quarantined", "--serial", clone, "--output", "json"}, admin...)...)
	var l wire.DeviceList
	if err := json.Unmarshal([]byte(out.stdout), &l); err != nil {
		t.Fatalf("ca devices list --status quarantined --output json: %v\n%s", err, out)
	}
	if len(l.Quarantined) != 1 || l.Quarantined[0].Reason != "mac-has-other-serial" || l.Quarantined[0].Serial != clone {
		t.Errorf("held claims of %s: %+v, want one mac-has-other-serial claim", clone, l.Quarantined)
	}
	ca.auditVerify(t)
}
