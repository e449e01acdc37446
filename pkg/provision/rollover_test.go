package provision_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// rolloverFixture is a Rollover over a real SQLite registry and a fresh CA.
type rolloverFixture struct {
	ca      *pkitest.TestCA
	store   *sqlstore.Store
	issuers *pki.IssuerSet
	ro      *provision.Rollover
	dir     string
}

func newRolloverFixture(t *testing.T) *rolloverFixture {
	t.Helper()
	ctx := context.Background()
	ca := pkitest.NewCA(t)
	st, err := sqlstore.Open(ctx, sqlstore.Options{DSN: t.TempDir() + "/r.db"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	set := pki.NewIssuerSet(ca.Issuer)
	dir := t.TempDir()
	ro, err := provision.NewRollover(provision.RolloverConfig{
		Store: st, Issuers: set, Initial: ca.CA, InitialKeyURI: ca.Files.IntermediateKey, InitialRootKeyURI: ca.Files.RootKey,
		Dir: dir, Password: ca.Password, Template: pki.IssuerOptions{TrustDomain: pkitest.TrustDomain},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ro.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return &rolloverFixture{ca: ca, store: st, issuers: set, ro: ro, dir: dir}
}

// states is the issuers' states, oldest first.
func (f *rolloverFixture) states(t *testing.T) []registry.IssuerState {
	t.Helper()
	rows, err := f.store.ListIssuers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []registry.IssuerState
	for _, r := range rows {
		out = append(out, r.State)
	}
	return out
}

func sameStates(a, b []registry.IssuerState) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRolloverStates walks prepare, activate and retire twice, and tries
// every step out of order at each point: refused with ErrRolloverOrder,
// nothing changed (issuers, signing issuer, files), the refusal audited.
func TestRolloverStates(t *testing.T) {
	f := newRolloverFixture(t)
	ctx := context.Background()
	super := provision.Actor{Kind: provision.ActorAdmin, ID: "root", Super: true}
	steps := map[string]func() error{
		"prepare":  func() error { _, err := f.ro.Prepare(ctx, super, false); return err },
		"activate": func() error { _, err := f.ro.Activate(ctx, super); return err },
		"retire":   func() error { _, err := f.ro.Retire(ctx, super); return err },
	}
	refused := func(names ...string) {
		t.Helper()
		before, active := f.states(t), f.issuers.Active()
		files, _ := os.ReadDir(f.dir)
		for _, n := range names {
			if err := steps[n](); !errors.Is(err, registry.ErrRolloverOrder) {
				t.Fatalf("%s out of order: %v, want ErrRolloverOrder", n, err)
			}
		}
		after, _ := os.ReadDir(f.dir)
		if !sameStates(before, f.states(t)) || f.issuers.Active() != active || len(files) != len(after) {
			t.Fatalf("a refused step changed something: %v -> %v (files %d -> %d)", before, f.states(t), len(files), len(after))
		}
	}
	initial := pki.KeyID(f.ca.CA.Intermediate)
	want := []registry.IssuerState{registry.IssuerActive}
	if got := f.states(t); !sameStates(got, want) {
		t.Fatalf("after Start: %v, want %v", got, want)
	}
	for round := 0; round < 2; round++ {
		refused("activate", "retire")
		res, err := f.ro.Prepare(ctx, super, round == 1)
		if err != nil {
			t.Fatalf("round %d: prepare: %v", round, err)
		}
		if (res.Issuer.CrossPEM != "") != (round == 1) {
			t.Fatalf("round %d: cross certificate %q", round, res.Issuer.CrossPEM)
		}
		refused("prepare", "retire")
		if st := f.issuers.State(); st.BundleKeyID != res.Issuer.KeyID || len(st.Trusted) != 2+round {
			t.Fatalf("round %d: after prepare the bundle names %s (want %s), %d trusted", round, st.BundleKeyID, res.Issuer.KeyID, len(st.Trusted))
		}
		if pki.KeyID(f.issuers.Active().CA().Intermediate) == res.Issuer.KeyID {
			t.Fatalf("round %d: the prepared issuer signs before activate", round)
		}
		if _, err := f.ro.Activate(ctx, super); err != nil {
			t.Fatal(err)
		}
		if got := pki.KeyID(f.issuers.Active().CA().Intermediate); got != res.Issuer.KeyID {
			t.Fatalf("round %d: after activate %s signs, want %s", round, got, res.Issuer.KeyID)
		}
		refused("activate")
		if _, err := f.ro.Retire(ctx, super); err != nil {
			t.Fatal(err)
		}
		refused("retire", "activate")
	}
	want = []registry.IssuerState{registry.IssuerRetired, registry.IssuerRetired, registry.IssuerActive}
	if got := f.states(t); !sameStates(got, want) {
		t.Fatalf("after two rollovers: %v, want %v", got, want)
	}
	// Retired issuers stay trusted until they expire.
	if _, ok := f.issuers.State().Trusted[initial]; !ok {
		t.Fatalf("the retired initial issuer is no longer trusted")
	}
	// The second rollover made a new root: the bundle has both roots and
	// the cross certificate.
	if st := f.issuers.State(); len(st.Roots) != 2 || len(st.Cross) != 1 {
		t.Fatalf("trust bundle: %d roots, %d cross certificates; want 2 and 1", len(st.Roots), len(st.Cross))
	}
	// A new issuer after activate signs devices; they verify to its root.
	_, csr, _ := f.ca.DeviceKeyAndCSR(t, "RO-1", "020000000001")
	iss, err := f.issuers.IssueDevice(ctx, &pki.DeviceRequest{
		Identity: pki.Identity{DeviceID: "d1", Serial: "RO-1", Tenant: "default"}, PublicKey: csr.PublicKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	if pki.AuthorityKeyID(iss.Certificate) != pki.KeyID(f.issuers.Active().CA().Intermediate) {
		t.Fatalf("issued by %s, not the active issuer", pki.AuthorityKeyID(iss.Certificate))
	}
}

// TestRolloverOnlySuperAdmins: a tenant admin cannot roll the CA; the
// refusal is audited and nothing changes.
func TestRolloverOnlySuperAdmins(t *testing.T) {
	f := newRolloverFixture(t)
	ctx := context.Background()
	tenantAdmin := provision.Actor{Kind: provision.ActorAdmin, ID: "alice", TenantID: registry.DefaultTenant}
	before := f.states(t)
	if _, err := f.ro.Prepare(ctx, tenantAdmin, false); !errors.Is(err, provision.ErrForbidden) {
		t.Fatalf("tenant admin prepare: %v, want ErrForbidden", err)
	}
	if !sameStates(before, f.states(t)) {
		t.Fatal("a forbidden prepare changed the issuers")
	}
	evs, err := f.store.ListAudit(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		if e.Action == string(provision.ActionRolloverPrepare) && e.Result != registry.ResultOK {
			found = true
		}
	}
	if !found {
		t.Fatal("the refused prepare left no audit event")
	}
}
