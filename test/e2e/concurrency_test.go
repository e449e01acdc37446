package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestTokenUsesUnderConcurrency races more devices than a token has uses:
// exactly uses of them get a certificate, the others are refused as spent
// (invariant 2, through the real server and its group commit).
func TestTokenUsesUnderConcurrency(t *testing.T) {
	t.Parallel()
	const uses, devices = 2, 6
	ca := initCA(t)
	srv := ca.serve(t)
	tok := ca.mintToken(t, srv, "--uses", fmt.Sprint(uses))

	base := t.TempDir()
	results := make([]result, devices)
	errs := make([]error, devices)
	var wg sync.WaitGroup
	for i := range devices {
		wg.Go(func() {
			dir := filepath.Join(base, fmt.Sprintf("dev%d", i))
			results[i], errs[i] = runE(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, tok.Token, dir, fmt.Sprintf("E2E-RACE-%d", i))...)
		})
	}
	wg.Wait()

	ok := 0
	for i, res := range results {
		dir := filepath.Join(base, fmt.Sprintf("dev%d", i))
		switch {
		case errs[i] != nil:
			t.Errorf("device %d: %v", i, errs[i])
		case res.code == 0:
			ok++
			readCert(t, filepath.Join(dir, "device.crt"))
		case res.code == 1 && strings.Contains(res.stderr, "token-spent"):
			requireNoFile(t, filepath.Join(dir, "device.crt"))
		default:
			t.Errorf("device %d: want success or a token-spent refusal, got %s", i, res)
		}
	}
	if ok != uses {
		t.Errorf("%d devices enrolled with a %d-use token, want exactly %d", ok, uses, uses)
	}
	db := ca.openSQL(t)
	if n := usesLeft(t, db, tok.ID); n != 0 {
		t.Errorf("token uses_left %d after the race, want 0", n)
	}
	var certs int
	if err := db.QueryRow(`SELECT count(*) FROM certificates WHERE kind = 'device'`).Scan(&certs); err != nil {
		t.Fatal(err)
	}
	if certs != uses {
		t.Errorf("%d device certificates in the registry, want %d", certs, uses)
	}
	ca.auditVerify(t)
}
