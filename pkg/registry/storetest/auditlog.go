package storetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// testRefusals: anonymous refusals aggregate per window, source, door,
// reason and tenant, apart from the chain.
func testRefusals(t *testing.T, s registry.Store) {
	ctx := context.Background()
	head := lastSeq(t, s)
	base := time.Now().UTC().Truncate(registry.RefusalWindow).Add(-10 * time.Minute)
	rec := func(src, reason string, at time.Time) {
		t.Helper()
		err := s.RecordRefusal(ctx, &registry.Refusal{SourceAddr: src, Action: "enroll", Reason: reason, Last: at,
			Sample: "unknown bootstrap token"})
		if err != nil {
			t.Fatalf("RecordRefusal: %v", err)
		}
	}
	for i := range 5 {
		rec("192.0.2.1", "token-invalid", base.Add(time.Duration(i)*time.Second))
	}
	rec("192.0.2.2", "token-invalid", base.Add(time.Second))              // another source
	rec("192.0.2.1", "unauthenticated", base.Add(time.Second))            // another reason
	rec("192.0.2.1", "token-invalid", base.Add(registry.RefusalWindow+1)) // the next window
	rs, err := s.ListRefusals(ctx, 0, 100)
	if err != nil {
		t.Fatalf("ListRefusals: %v", err)
	}
	if len(rs) != 4 {
		t.Fatalf("%d aggregates, want 4: %+v", len(rs), rs)
	}
	first := rs[0]
	if first.Count != 5 || first.SourceAddr != "192.0.2.1" || first.Reason != "token-invalid" || first.Action != "enroll" ||
		!first.Window.Equal(base) || !first.First.Equal(base) || !first.Last.Equal(base.Add(4*time.Second)) ||
		first.Sample != "unknown bootstrap token" {
		t.Errorf("first aggregate = %+v", first)
	}
	for _, r := range rs[1:] {
		if r.Count != 1 {
			t.Errorf("aggregate %+v: count %d, want 1", r, r.Count)
		}
	}
	if rs[3].ID <= rs[0].ID || !rs[3].Window.Equal(base.Add(registry.RefusalWindow)) {
		t.Errorf("next window aggregate = %+v", rs[3])
	}
	page, err := s.ListRefusals(ctx, rs[1].ID, 1)
	if err != nil || len(page) != 1 || page[0].ID != rs[2].ID {
		t.Errorf("ListRefusals(after %d, 1) = %+v, %v", rs[1].ID, page, err)
	}
	if got := lastSeq(t, s); got != head {
		t.Errorf("refusals appended chained events: head %d -> %d", head, got)
	}
}

func lastSeq(t *testing.T, s registry.Store) int64 {
	t.Helper()
	var last int64
	for {
		evs, err := s.ListAudit(context.Background(), last, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return last
		}
		last = evs[len(evs)-1].Seq
	}
}

// testTenantChains: every event also chains in its tenant's chain; an
// export of one tenant verifies alone, and so does the whole log.
func testTenantChains(t *testing.T, s registry.Store) {
	ctx := context.Background()
	acme := mkTenant(t, s, "acme")
	for i, tenant := range []string{"", acme.ID, registry.DefaultTenant, acme.ID, acme.ID, ""} {
		ev := &registry.AuditEvent{TenantID: tenant, Actor: "admin:test", Action: "seed", Result: registry.ResultOK, Detail: fmt.Sprint(i)}
		if err := s.AppendAudit(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if ev.TenantSeq == 0 || len(ev.TenantHash) != sha256.Size {
			t.Fatalf("AppendAudit left the tenant chain empty: %+v", ev)
		}
		if !bytes.Equal(registry.AuditTenantHash(ev.TenantPrevHash, ev), ev.TenantHash) {
			t.Fatalf("event %d: tenant hash does not match", ev.Seq)
		}
	}
	all, err := s.ListAuditEvents(ctx, registry.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[string][]int64{}
	for _, ev := range all {
		seqs[registry.AuditChain(ev.TenantID)] = append(seqs[registry.AuditChain(ev.TenantID)], ev.TenantSeq)
	}
	for chain, ss := range seqs {
		for i, n := range ss {
			if n != int64(i+1) {
				t.Fatalf("tenant %s chain seqs %v, want 1..%d", chain, ss, len(ss))
			}
		}
	}
	if len(seqs[acme.ID]) != 3 { // tenant.create of acme is the default tenant's (it names no tenant)
		t.Fatalf("acme chain has %d events, want 3", len(seqs[acme.ID]))
	}
	for _, tenant := range []string{"", acme.ID, registry.DefaultTenant} {
		evs, err := s.ListAuditEvents(ctx, registry.AuditFilter{TenantID: tenant})
		if err != nil {
			t.Fatal(err)
		}
		if tenant != "" && len(evs) != len(seqs[tenant]) {
			t.Fatalf("ListAuditEvents(tenant %s) = %d events, want %d", tenant, len(evs), len(seqs[tenant]))
		}
		rep, err := exportAndVerify(t, evs, tenant, nil, "")
		if err != nil {
			t.Fatalf("export of tenant %q does not verify: %v", tenant, err)
		}
		if rep.Anchor != "genesis" || rep.Events != len(evs) {
			t.Errorf("export of tenant %q: %+v", tenant, rep)
		}
	}
	// Since and AfterSeq.
	mid := all[len(all)/2]
	evs, err := s.ListAuditEvents(ctx, registry.AuditFilter{Since: mid.Time})
	if err != nil || len(evs) == 0 || evs[0].Time.Before(mid.Time) {
		t.Fatalf("ListAuditEvents(since) = %d events, %v", len(evs), err)
	}
	if rep, err := exportAndVerify(t, evs, "", nil, mid.Time.Format(time.RFC3339Nano)); err != nil || rep.Anchor != "first event" {
		t.Fatalf("since export: %+v, %v", rep, err)
	}
	evs, err = s.ListAuditEvents(ctx, registry.AuditFilter{AfterSeq: all[1].Seq, Limit: 2})
	if err != nil || len(evs) != 2 || evs[0].Seq != all[2].Seq {
		t.Fatalf("ListAuditEvents(after, limit) = %+v, %v", evs, err)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// exportAndVerify writes evs as an export of tenant ("" for global) and
// verifies it.
func exportAndVerify(t *testing.T, evs []*registry.AuditEvent, tenant string, cp *registry.AuditCheckpoint, since string) (*registry.ExportReport, error) {
	t.Helper()
	var buf bytes.Buffer
	h := registry.ExportHeader{Scope: registry.ScopeGlobal, Since: since, Checkpoint: registry.ExportCheckpointOf(cp, tenant)}
	if tenant != "" {
		h.Scope, h.Tenant = registry.ScopeTenant, tenant
	}
	x, err := registry.NewExportWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := x.Event(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	var root *x509.Certificate
	if cp != nil {
		root, _ = x509.ParseCertificate(cp.Signer)
	}
	return registry.VerifyExport(&buf, root)
}

// testSigner is a self-signed CA key and certificate for checkpoints.
type testSigner struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newTestSigner(t *testing.T) *testSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "storetest CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testSigner{key: key, cert: cert}
}

func (ts *testSigner) sign(t *testing.T, cp *registry.AuditCheckpoint) {
	t.Helper()
	sig := func(msg []byte) []byte {
		d := sha256.Sum256(msg)
		b, err := ecdsa.SignASN1(rand.Reader, ts.key, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cp.Signer, cp.Algorithm = ts.cert.Raw, x509.ECDSAWithSHA256.String()
	cp.Signature = sig(cp.SignedBytes())
	for i := range cp.Tenants {
		cp.Tenants[i].Signature = sig(cp.TenantSignedBytes(&cp.Tenants[i]))
	}
}

// testPruneAudit: pruning keeps a signed checkpoint the live chain and
// exports (global and per tenant) verify from; a chain changed between plan
// and prune is a conflict.
func testPruneAudit(t *testing.T, s registry.Store) {
	ctx := context.Background()
	acme := mkTenant(t, s, "acme")
	old := time.Now().Add(-48 * time.Hour).UTC()
	for i := range 6 {
		tenant := acme.ID
		if i%2 == 0 {
			tenant = ""
		}
		ev := &registry.AuditEvent{Time: old.Add(time.Duration(i) * time.Second), TenantID: tenant, Actor: "system",
			Action: "old", Result: registry.ResultOK}
		if err := s.AppendAudit(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	cutoff := time.Now().Add(-24 * time.Hour)
	for i := range 4 {
		tenant := acme.ID
		if i%2 == 0 {
			tenant = registry.DefaultTenant
		}
		if err := s.AppendAudit(ctx, &registry.AuditEvent{TenantID: tenant, Actor: "system", Action: "new", Result: registry.ResultOK}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.GetAuditCheckpoint(ctx); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetAuditCheckpoint before any prune = %v, want ErrNotFound", err)
	}
	if _, err := s.PlanAuditPrune(ctx, old.Add(-time.Hour)); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("PlanAuditPrune with nothing to prune = %v, want ErrNotFound", err)
	}
	signer := newTestSigner(t)

	// A plan overtaken by a new old event is refused and writes nothing.
	stale, err := s.PlanAuditPrune(ctx, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	signer.sign(t, stale)
	if err := s.AppendAudit(ctx, &registry.AuditEvent{Time: old.Add(time.Minute), Actor: "system", Action: "late",
		Result: registry.ResultOK}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PruneAudit(ctx, stale, &registry.AuditEvent{Actor: "local:test", Action: "audit.prune", Result: registry.ResultOK}); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("PruneAudit(stale plan) = %v, want ErrConflict", err)
	}

	cp, err := s.PlanAuditPrune(ctx, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	if len(cp.Tenants) != 2 || cp.Tenant(acme.ID) == nil || cp.Tenant(registry.DefaultTenant) == nil {
		t.Fatalf("checkpoint tenants = %+v", cp.Tenants)
	}
	signer.sign(t, cp)
	n, err := s.PruneAudit(ctx, cp, &registry.AuditEvent{Actor: "local:test", Action: "audit.prune", Result: registry.ResultOK})
	if err != nil {
		t.Fatal(err)
	}
	if n < 7 || cp.ID == 0 {
		t.Fatalf("PruneAudit deleted %d events (checkpoint %d), want at least 7", n, cp.ID)
	}
	got, err := s.GetAuditCheckpoint(ctx)
	if err != nil || got.Seq != cp.Seq || !bytes.Equal(got.Hash, cp.Hash) || len(got.Tenants) != 2 {
		t.Fatalf("GetAuditCheckpoint = %+v, %v", got, err)
	}
	if _, err := registry.VerifyCheckpoint(got, signer.cert, "*"); err != nil {
		t.Fatalf("stored checkpoint: %v", err)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatalf("VerifyAudit after prune: %v", err)
	}
	// Appends continue both chains past the checkpoint.
	if err := s.AppendAudit(ctx, &registry.AuditEvent{TenantID: acme.ID, Actor: "system", Action: "after", Result: registry.ResultOK}); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatalf("VerifyAudit after prune and append: %v", err)
	}
	for _, tenant := range []string{"", acme.ID, registry.DefaultTenant} {
		evs, err := s.ListAuditEvents(ctx, registry.AuditFilter{TenantID: tenant})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 && evs[0].Seq <= cp.Seq {
			t.Fatalf("pruned event %d still exported", evs[0].Seq)
		}
		rep, err := exportAndVerify(t, evs, tenant, got, "")
		if err != nil || rep.Anchor != "checkpoint" || !rep.RootChecked {
			t.Fatalf("export of tenant %q after prune: %+v, %v", tenant, rep, err)
		}
	}
	// A checkpoint signed by someone else does not verify.
	forged := *got
	other := newTestSigner(t)
	other.sign(t, &forged)
	if _, err := registry.VerifyCheckpoint(&forged, signer.cert, "*"); !errors.Is(err, registry.ErrCheckpointSignature) {
		t.Fatalf("checkpoint of another signer = %v, want ErrCheckpointSignature", err)
	}
}
