package provision_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// countingIssuer counts signatures, to prove refusals happen before signing.
// It also keeps the key identifier of the last request.
type countingIssuer struct {
	provision.Issuer
	n       atomic.Int64
	lastKID atomic.Pointer[[]byte]
}

func (c *countingIssuer) IssueDevice(ctx context.Context, r *pki.DeviceRequest) (*pki.Issued, error) {
	c.n.Add(1)
	kid := r.SubjectKeyID
	c.lastKID.Store(&kid)
	return c.Issuer.IssueDevice(ctx, r)
}

type fixture struct {
	store  registry.Store
	svc    *provision.Service
	ca     *pkitest.TestCA
	issuer *countingIssuer
	now    time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca := pkitest.NewCA(t)
	store, err := sqlstore.Open(context.Background(), sqlstore.Options{DSN: t.TempDir() + "/r.db"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ci := &countingIssuer{Issuer: ca.Issuer}
	svc, err := provision.New(provision.Config{Store: store, Issuer: ci, TrustDomain: "test.devpki"})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{store: store, svc: svc, ca: ca, issuer: ci, now: time.Now()}
}

// macFor is a MAC of its own for the device with serial: a MAC belongs to
// one active device per tenant, so distinct test devices need distinct MACs.
func macFor(serial string) string {
	h := sha256.Sum256([]byte(serial))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}

func (f *fixture) mint(t *testing.T, spec provision.TokenSpec) string {
	t.Helper()
	tok, _, err := provision.MintToken(context.Background(), f.store, f.now, spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) enroll(t *testing.T, token, serial string, macs ...string) (*provision.Result, error) {
	t.Helper()
	_, _, csrPEM := f.ca.DeviceKeyAndCSR(t, serial, macs...)
	return f.svc.Enroll(context.Background(), provision.TokenAttestor{Store: f.store}, &provision.Request{
		Credential: token, CSRPEM: csrPEM, SourceAddr: "127.0.0.1",
	})
}

func TestEnrollHappyPath(t *testing.T) {
	f := newFixture(t)
	tok := f.mint(t, provision.TokenSpec{})
	res, err := f.enroll(t, tok, "SN-1", "02:00:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.DeviceIdentity(res.Certificate, "test.devpki")
	if err != nil {
		t.Fatal(err)
	}
	if id.DeviceID != res.DeviceID || id.Serial != "SN-1" || id.Tenant != registry.DefaultTenant || len(id.MACs) != 1 || id.MACs[0] != "020000000001" {
		t.Fatalf("identity %+v", id)
	}
	dev, err := f.store.GetDeviceBySerial(context.Background(), mustTenant(t, f.store).ID, "SN-1")
	if err != nil || dev.ID != res.DeviceID || dev.Method != "token" {
		t.Fatalf("device %+v, %v", dev, err)
	}
	rec, err := f.store.GetCertificate(context.Background(), res.Certificate.SerialNumber.Text(16))
	if err != nil || rec.DeviceID != dev.ID || rec.Status != registry.CertActive {
		t.Fatalf("cert record %+v, %v", rec, err)
	}
	life := res.Certificate.NotAfter.Sub(res.Certificate.NotBefore)
	want := res.Certificate.NotBefore.Add(life * 2 / 3)
	if d := res.RenewAfter.Sub(want); d > time.Second || d < -time.Second {
		t.Fatalf("renew_after %s, want about %s", res.RenewAfter, want)
	}
	pool := x509.NewCertPool()
	pool.AddCert(f.ca.CA.Root)
	inter := x509.NewCertPool()
	for _, c := range res.Chain {
		inter.AddCert(c)
	}
	if _, err := res.Certificate.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.enroll(t, tok, "SN-2", "02:00:00:00:00:02"); !errors.Is(err, registry.ErrTokenSpent) {
		t.Fatalf("replayed token: %v, want ErrTokenSpent", err)
	}
}

func mustTenant(t *testing.T, s registry.Store) *registry.Tenant {
	t.Helper()
	tn, err := s.GetTenant(context.Background(), registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

// TestRefusedBeforeSigning: every token refusal happens before any signing
// work and writes nothing but a denied audit event.
func TestRefusedBeforeSigning(t *testing.T) {
	f := newFixture(t)
	expired, _, err := provision.MintToken(context.Background(), f.store, f.now.Add(-48*time.Hour), provision.TokenSpec{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	spent := f.mint(t, provision.TokenSpec{})
	if _, err := f.enroll(t, spent, "SN-SPENT", "02:00:00:00:00:09"); err != nil {
		t.Fatal(err)
	}
	bound := f.mint(t, provision.TokenSpec{Serial: "SN-OTHER"})
	signed := f.issuer.n.Load()
	for _, tc := range []struct {
		name, token string
		want        error
	}{
		{"empty", "", registry.ErrTokenInvalid},
		{"malformed", "hello", registry.ErrTokenInvalid},
		{"unknown", provision.TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", registry.ErrTokenInvalid},
		{"expired", expired, registry.ErrTokenExpired},
		{"spent", spent, registry.ErrTokenSpent},
		{"bound to another serial", bound, registry.ErrTokenSerialMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.enroll(t, tc.token, "SN-X", "02:00:00:00:00:0a"); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if n := f.issuer.n.Load(); n != signed {
		t.Fatalf("%d signatures made for refused requests", n-signed)
	}
	if _, err := f.store.GetDeviceBySerial(context.Background(), mustTenant(t, f.store).ID, "SN-X"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("refused serial recorded: %v", err)
	}
	// The bound token was not spent by the mismatch: it still works for its serial.
	if _, err := f.enroll(t, bound, "SN-OTHER", "02:00:00:00:00:0b"); err != nil {
		t.Fatalf("bound token after refusal: %v", err)
	}
	evs, err := f.store.ListAudit(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, ev := range evs {
		if ev.Action == "enroll" && ev.Result == registry.ResultDenied {
			denied++
		}
	}
	// Spent and mismatched tokens are known: chained. No token, a
	// malformed, unknown or expired one: anonymous, counted apart.
	if denied != 2 {
		t.Fatalf("%d denied enroll events, want 2", denied)
	}
	if n := refusalHits(t, f.store, "enroll"); n != 4 {
		t.Fatalf("%d anonymous enroll refusals counted, want 4", n)
	}
	if err := f.store.VerifyAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestReEnrollRules(t *testing.T) {
	f := newFixture(t)
	first, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-R", "02:00:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	unbound := f.mint(t, provision.TokenSpec{})
	if _, err := f.enroll(t, unbound, "SN-R", "02:00:00:00:00:01"); !errors.Is(err, registry.ErrSerialConflict) {
		t.Fatalf("unbound re-enroll: %v, want ErrSerialConflict", err)
	}
	// The unbound token was not spent: a new device can still use it.
	if _, err := f.enroll(t, unbound, "SN-NEW", "02:00:00:00:00:02"); err != nil {
		t.Fatalf("unbound token after conflict: %v", err)
	}
	second, err := f.enroll(t, f.mint(t, provision.TokenSpec{Serial: "SN-R"}), "SN-R", "02:00:00:00:00:03")
	if err != nil {
		t.Fatal(err)
	}
	if second.DeviceID != first.DeviceID {
		t.Fatalf("factory reset changed device id %s -> %s", first.DeviceID, second.DeviceID)
	}
	old, err := f.store.GetCertificate(context.Background(), first.Certificate.SerialNumber.Text(16))
	if err != nil || old.Status != registry.CertRevoked || old.RevocationReason != registry.ReasonSuperseded {
		t.Fatalf("old certificate %+v, %v; want revoked/superseded", old, err)
	}
}

// TestSingleUseTokenUnderConcurrency: 50 devices race for one token.
func TestSingleUseTokenUnderConcurrency(t *testing.T) {
	f := newFixture(t)
	tok := f.mint(t, provision.TokenSpec{})
	csrs := make([][]byte, 50)
	for i := range csrs {
		serial := "SN-C" + string(rune('A'+i%26)) + string(rune('a'+i/26))
		_, _, csrs[i] = f.ca.DeviceKeyAndCSR(t, serial, macFor(serial))
	}
	var ok, spent atomic.Int64
	var wg sync.WaitGroup
	for i := range csrs {
		wg.Add(1)
		go func(b []byte) {
			defer wg.Done()
			_, err := f.svc.Enroll(context.Background(), provision.TokenAttestor{Store: f.store}, &provision.Request{Credential: tok, CSRPEM: b})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, registry.ErrTokenSpent):
				spent.Add(1)
			default:
				t.Errorf("unexpected error %v", err)
			}
		}(csrs[i])
	}
	wg.Wait()
	if ok.Load() != 1 || spent.Load() != 49 {
		t.Fatalf("%d succeeded, %d spent; want 1 and 49", ok.Load(), spent.Load())
	}
}

func TestMintTokenValidation(t *testing.T) {
	f := newFixture(t)
	for _, spec := range []provision.TokenSpec{
		{TTL: -time.Hour}, {Uses: -1}, {Serial: "bad serial with spaces"}, {TTL: 10000 * 24 * time.Hour},
	} {
		if _, _, err := provision.MintToken(context.Background(), f.store, f.now, spec); !errors.Is(err, provision.ErrInvalidArgument) {
			t.Errorf("%+v: %v, want ErrInvalidArgument", spec, err)
		}
	}
	if _, _, err := provision.MintToken(context.Background(), f.store, f.now, provision.TokenSpec{Tenant: "nope"}); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("unknown tenant: %v", err)
	}
}

func TestNewUUIDIsVersion7AndOrdered(t *testing.T) {
	prev := ""
	for i := 0; i < 100; i++ {
		u := provision.NewUUID()
		if len(u) != 36 || u[14] != '7' || !strings.ContainsRune("89ab", rune(u[19])) {
			t.Fatalf("%q is not an RFC 9562 version 7 UUID", u)
		}
		if u[:13] < prev {
			t.Fatalf("timestamp prefix went backwards: %q after %q", u, prev)
		}
		prev = u[:13]
		if i == 50 {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// TestEnrollReplayAfterLostAnswer: a device that never got its answer sends
// the same CSR with the same (now spent) token again and gets the same
// certificate, with no new signature; anything else stays refused.
func TestEnrollReplayAfterLostAnswer(t *testing.T) {
	f := newFixture(t)
	tok := f.mint(t, provision.TokenSpec{})
	_, _, csrPEM := f.ca.DeviceKeyAndCSR(t, "SN-LOST", "02:00:00:00:00:42")
	req := func(token string, csr []byte) (*provision.Result, error) {
		return f.svc.Enroll(context.Background(), provision.TokenAttestor{Store: f.store}, &provision.Request{Credential: token, CSRPEM: csr})
	}
	first, err := req(tok, csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	signed := f.issuer.n.Load()
	again, err := req(tok, csrPEM)
	if err != nil || !again.Certificate.Equal(first.Certificate) || again.DeviceID != first.DeviceID {
		t.Fatalf("replay: %v", err)
	}
	if f.issuer.n.Load() != signed {
		t.Fatal("the replay signed a new certificate")
	}
	_, _, otherKey := f.ca.DeviceKeyAndCSR(t, "SN-LOST", "02:00:00:00:00:42")
	if _, err := req(tok, otherKey); !errors.Is(err, registry.ErrTokenSpent) {
		t.Fatalf("spent token with another key: %v, want ErrTokenSpent", err)
	}
	other := f.mint(t, provision.TokenSpec{})
	if _, err := req(other, csrPEM); err == nil {
		t.Fatal("the same key enrolled again with another token")
	}
	// Once the certificate is revoked, the replay is over too.
	if _, err := f.store.RevokeCertificate(context.Background(), first.Certificate.SerialNumber.Text(16), registry.ReasonKeyCompromise, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := req(tok, csrPEM); !errors.Is(err, registry.ErrTokenSpent) {
		t.Fatalf("replay of a revoked certificate: %v, want ErrTokenSpent", err)
	}
}
