package provision_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestAnonymousRefusalsBounded: 20,000 enrollments with unknown tokens from
// four sources add no chained event and a handful of refusal rows (one per
// source, reason and minute), counting every one of them; a refusal of a
// known token is still chained.
func TestAnonymousRefusalsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 refusals")
	}
	f := newFixture(t)
	ctx := context.Background()
	seqOf := func(ev *registry.AuditEvent) int64 {
		if ev == nil {
			return 0
		}
		return ev.Seq
	}
	head := seqOf(lastAudit(t, f.store))
	_, _, csrPEM := f.ca.DeviceKeyAndCSR(t, "SN-FLOOD", "02:00:00:00:00:f1")
	const n, workers = 20000, 8
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				_, err := f.svc.Enroll(ctx, provision.TokenAttestor{Store: f.store}, &provision.Request{
					Credential: fmt.Sprintf("%sguess%040d", provision.TokenPrefix, i), CSRPEM: csrPEM,
					SourceAddr: fmt.Sprintf("198.51.100.%d", i%4),
				})
				if !errors.Is(err, registry.ErrTokenInvalid) {
					errs <- fmt.Errorf("request %d: %v, want ErrTokenInvalid", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if got := seqOf(lastAudit(t, f.store)); got != head {
		t.Errorf("anonymous refusals appended chained events: head %d -> %d", head, got)
	}
	rs, err := f.store.ListRefusals(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var hits int64
	for _, r := range rs {
		hits += r.Count
		if r.Action != "enroll" || r.Reason != "token-invalid" {
			t.Errorf("refusal %+v", r)
		}
	}
	// Four sources, one reason: one row per source per minute the run
	// touched.
	windows := int(elapsed/registry.RefusalWindow) + 2
	if hits != n || len(rs) > 4*windows {
		t.Errorf("%d refusals: %d rows counting %d; want at most %d rows counting %d", n, len(rs), hits, 4*windows, n)
	}
	t.Logf("%d anonymous refusals in %s: %d refusal rows, 0 chained events", n, elapsed.Round(time.Millisecond), len(rs))

	// A known token refused (spent) is authenticated: a chained event.
	tok := f.mint(t, provision.TokenSpec{})
	if _, err := f.enroll(t, tok, "SN-ONCE", "02:00:00:00:00:f2"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.enroll(t, tok, "SN-TWICE", "02:00:00:00:00:f3"); !errors.Is(err, registry.ErrTokenSpent) {
		t.Fatalf("spent token: %v", err)
	}
	if ev := lastAudit(t, f.store); ev.Result != registry.ResultDenied || ev.Actor[:6] != "token:" {
		t.Errorf("spent token refusal audited as %+v, want a chained denial by the token", ev)
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestAuditExportScopeAndPrune: a tenant admin's export is its tenant's
// chain and verifies offline; the whole log too; after a prune signed with
// the CA key, the live chain and both exports verify from the checkpoint,
// whose signer chains to the CA root.
func TestAuditExportScopeAndPrune(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	for _, who := range []provision.Actor{f.alice, f.oscar, f.oscar} {
		if _, _, err := f.adm.MintToken(ctx, who, provision.TokenSpec{Tenant: tenantName(who, f)}); err != nil {
			t.Fatal(err)
		}
	}
	// Scope: a tenant admin gets its tenant, whatever it asks.
	if id, err := f.adm.AuditScope(ctx, f.oscar, ""); err != nil || id != f.other.ID {
		t.Fatalf("AuditScope(oscar) = %q, %v", id, err)
	}
	if _, err := f.adm.AuditScope(ctx, f.oscar, registry.DefaultTenant); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("AuditScope(oscar, default) = %v, want ErrNotFound", err)
	}
	if _, err := f.adm.AuditScope(ctx, f.oscar, "no-such-tenant"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("AuditScope(oscar, unknown) = %v, want ErrNotFound", err)
	}
	exportOf := func(tenant string) *registry.ExportReport {
		t.Helper()
		var buf bytes.Buffer
		if _, err := provision.ExportAudit(ctx, f.store, provision.ExportOptions{TenantID: tenant}, &buf); err != nil {
			t.Fatal(err)
		}
		rep, err := registry.VerifyExport(&buf, f.ca.CA.Root)
		if err != nil {
			t.Fatalf("export of tenant %q: %v", tenant, err)
		}
		return rep
	}
	if rep := exportOf(f.other.ID); rep.Events != 2 || rep.Scope != registry.ScopeTenant || rep.Anchor != "genesis" {
		t.Errorf("oscar's export: %+v", rep)
	}
	all := exportOf("")

	// Prune everything up to now, signed by the CA's issuing key.
	cut := time.Now().Add(time.Second)
	time.Sleep(1100 * time.Millisecond)
	if _, _, err := f.adm.MintToken(ctx, f.oscar, provision.TokenSpec{Tenant: "other"}); err != nil {
		t.Fatal(err)
	}
	signer, cert := f.ca.CA.Signer, f.ca.CA.Intermediate
	cp, n, err := provision.PruneAudit(ctx, f.store, signer, cert, cut, provision.Actor{Kind: provision.ActorLocal, ID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(all.Events) {
		t.Errorf("pruned %d events, want %d", n, all.Events)
	}
	if got, err := provision.VerifyAudit(ctx, f.store, f.ca.CA.Root); err != nil || got == nil || got.Seq != cp.Seq {
		t.Fatalf("VerifyAudit after prune = %+v, %v", got, err)
	}
	if rep := exportOf(f.other.ID); rep.Anchor != "checkpoint" || !rep.RootChecked || rep.Events != 1 {
		t.Errorf("oscar's export after prune: %+v", rep)
	}
	if rep := exportOf(""); rep.Anchor != "checkpoint" || rep.Events != 2 { // the token and the prune event
		t.Errorf("whole export after prune: %+v", rep)
	}
	// Against another CA's root the checkpoint does not verify.
	if _, err := provision.VerifyAudit(ctx, f.store, pkitest.NewCA(t).CA.Root); !errors.Is(err, registry.ErrCheckpointSignature) {
		t.Errorf("VerifyAudit with another root = %v, want ErrCheckpointSignature", err)
	}

}

func tenantName(who provision.Actor, f *adminFixture) string {
	if who.TenantID == f.other.ID {
		return f.other.Name
	}
	return registry.DefaultTenant
}
