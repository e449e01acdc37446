package provision_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// tokenUses is the stored UsesLeft of token.
func tokenUses(t *testing.T, s registry.Store, token string) int {
	t.Helper()
	tok, err := s.GetToken(context.Background(), provision.HashToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return tok.UsesLeft
}

func mkTenant(t *testing.T, s registry.Store, name string, requireTPM bool) *registry.Tenant {
	t.Helper()
	tn, err := provision.CreateTenant(context.Background(), s, provision.TenantSpec{Name: name, RequireTPM: requireTPM, Who: provision.AdminActor("test", "", "")})
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

// TestEnrollRequireTPM: a token enrollment (a software key) into a tenant
// that requires TPM attestation is refused before signing, audited, and
// leaves the token unspent and nothing recorded.
func TestEnrollRequireTPM(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	secure := mkTenant(t, f.store, "secure", true)
	tok := f.mint(t, provision.TokenSpec{Tenant: "secure", Uses: 2})

	_, err := f.enroll(t, tok, "SN-SW-1", "02:00:00:00:00:01")
	if !errors.Is(err, provision.ErrTPMRequired) {
		t.Fatalf("enroll = %v, want ErrTPMRequired", err)
	}
	for _, want := range []string{`tenant "secure" admits only TPM-attested devices`, "enroll --tpm"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if n := f.issuer.n.Load(); n != 0 {
		t.Errorf("%d certificates signed", n)
	}
	if n := tokenUses(t, f.store, tok); n != 2 {
		t.Errorf("token uses left %d, want 2 (unspent)", n)
	}
	if _, err := f.store.GetDeviceBySerial(ctx, secure.ID, "SN-SW-1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("device recorded: %v", err)
	}
	ev := lastAudit(t, f.store)
	if ev.Action != "enroll" || ev.Result != registry.ResultDenied || ev.TenantID != secure.ID ||
		!strings.HasPrefix(ev.Actor, "token:") || !strings.Contains(ev.Detail, "TPM attestation required") {
		t.Errorf("audit = %+v", ev)
	}

	// The default tenant still admits software keys.
	if _, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-SW-1", "02:00:00:00:00:01"); err != nil {
		t.Fatalf("default tenant: %v", err)
	}
	// Lifting the policy admits the same token.
	if _, err := provision.SetTenantRequireTPM(ctx, f.store, provision.AdminActor("test", "", ""), "secure", false); err != nil {
		t.Fatal(err)
	}
	svc, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, csrPEM := f.ca.DeviceKeyAndCSR(t, "SN-SW-1", "02:00:00:00:00:01")
	if _, err := svc.Enroll(ctx, provision.TokenAttestor{Store: f.store}, &provision.Request{Credential: tok, CSRPEM: csrPEM}); err != nil {
		t.Fatalf("after require_tpm=false: %v", err)
	}
	if n := tokenUses(t, f.store, tok); n != 1 {
		t.Errorf("token uses left %d, want 1", n)
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// clock is a settable clock for the service.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestTenantPolicyReachesService: a policy change made by another process
// (the store changes under a running service) applies within TenantTTL; a
// negative TenantTTL applies it at once.
func TestTenantPolicyReachesService(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	mkTenant(t, f.store, "acme", false)
	clk := &clock{t: time.Now()}
	svc, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki", Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	uncached, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki", TenantTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	enroll := func(svc *provision.Service, serial string) error {
		_, _, csrPEM := f.ca.DeviceKeyAndCSR(t, serial, macFor(serial))
		tok := f.mint(t, provision.TokenSpec{Tenant: "acme"})
		_, err := svc.Enroll(ctx, provision.TokenAttestor{Store: f.store}, &provision.Request{Credential: tok, CSRPEM: csrPEM})
		return err
	}
	if err := enroll(svc, "SN-C-1"); err != nil {
		t.Fatal(err)
	}
	if err := enroll(uncached, "SN-C-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := provision.SetTenantRequireTPM(ctx, f.store, provision.AdminActor("test", "", ""), "acme", true); err != nil {
		t.Fatal(err)
	}
	if err := enroll(uncached, "SN-C-3"); !errors.Is(err, provision.ErrTPMRequired) {
		t.Fatalf("TenantTTL<0 after the change: %v, want ErrTPMRequired", err)
	}
	// Within the TTL the cached policy may still be served...
	clk.add(provision.DefaultTenantTTL / 2)
	if err := enroll(svc, "SN-C-4"); err != nil {
		t.Fatalf("within the TTL: %v", err)
	}
	// ...and past it, never.
	clk.add(provision.DefaultTenantTTL)
	if err := enroll(svc, "SN-C-5"); !errors.Is(err, provision.ErrTPMRequired) {
		t.Fatalf("past the TTL: %v, want ErrTPMRequired", err)
	}
	// A clock that went back refreshes the entry too.
	if _, err := provision.SetTenantRequireTPM(ctx, f.store, provision.AdminActor("test", "", ""), "acme", false); err != nil {
		t.Fatal(err)
	}
	clk.add(-time.Hour)
	if err := enroll(svc, "SN-C-6"); err != nil {
		t.Fatalf("after the clock went back: %v", err)
	}
}

// TestTenantAdminBadInput: invalid and duplicate names, and an unknown
// tenant, are refused with nothing written.
func TestTenantAdminBadInput(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	mkTenant(t, f.store, "acme", false)
	before, err := f.store.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seq := lastAudit(t, f.store).Seq
	for _, name := range []string{"", "bad name", "a/b", "..", strings.Repeat("x", 65)} {
		if _, err := provision.CreateTenant(ctx, f.store, provision.TenantSpec{Name: name}); !errors.Is(err, provision.ErrInvalidArgument) {
			t.Errorf("CreateTenant(%q) = %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := provision.CreateTenant(ctx, f.store, provision.TenantSpec{Name: "acme", RequireTPM: true}); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Errorf("CreateTenant(duplicate) = %v, want ErrAlreadyExists", err)
	}
	if _, err := provision.SetTenantRequireTPM(ctx, f.store, provision.AdminActor("test", "", ""), "nope", true); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("SetTenantRequireTPM(unknown) = %v, want ErrNotFound", err)
	}
	after, err := f.store.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || after[0].RequireTPM {
		t.Errorf("tenants changed: %+v -> %+v", before, after)
	}
	if got := lastAudit(t, f.store).Seq; got != seq {
		t.Errorf("audit advanced from %d to %d", seq, got)
	}
}

// refusalHits counts the anonymous refusals in s's refusal log, with
// action when it is not empty.
func refusalHits(t *testing.T, s registry.Store, action string) int64 {
	t.Helper()
	var n int64
	for after := int64(0); ; {
		rs, err := s.ListRefusals(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			return n
		}
		for _, r := range rs {
			if action == "" || r.Action == action {
				n += r.Count
			}
			after = r.ID
		}
	}
}

// lastAudit is the newest audit event in s, nil when there is none.
func lastAudit(t *testing.T, s registry.Store) *registry.AuditEvent {
	t.Helper()
	var last *registry.AuditEvent
	for after := int64(0); ; {
		evs, err := s.ListAudit(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return last
		}
		last = evs[len(evs)-1]
		after = last.Seq
	}
}
