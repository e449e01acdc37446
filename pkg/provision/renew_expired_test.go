package provision_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
	"devpki/pkg/tpm/verify"
)

// rootedIssuer is the fixture's counting issuer that also names its root,
// as *pki.Issuer does, so expired certificates are checked to the root.
type rootedIssuer struct {
	*countingIssuer
	root *x509.Certificate
}

func (r rootedIssuer) Root() *x509.Certificate { return r.root }

// expiredFixture is a fixture whose service runs on a clock the test moves.
type expiredFixture struct {
	*fixture
	clock atomic.Int64 // unix nanoseconds
	// b and keyB: a second device (TestRenewExpiredRefusals).
	b    *provision.Result
	keyB crypto.Signer
}

func newExpiredFixture(t *testing.T, grace time.Duration) *expiredFixture {
	t.Helper()
	f := &expiredFixture{fixture: newFixture(t)}
	f.clock.Store(time.Now().UnixNano())
	svc, err := provision.New(provision.Config{
		Store: f.store, Issuer: rootedIssuer{f.issuer, f.ca.CA.Root}, TrustDomain: "test.devpki",
		Lifetime: time.Hour, RenewGrace: grace, TenantTTL: -1,
		Now: func() time.Time { return time.Unix(0, f.clock.Load()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	return f
}

// at sets the service clock to c's expiry plus d.
func (f *expiredFixture) at(c *x509.Certificate, d time.Duration) {
	f.clock.Store(c.NotAfter.Add(d).UnixNano())
}

// device enrolls serial with a key the test keeps.
func (f *expiredFixture) device(t *testing.T, serial string) (*provision.Result, crypto.Signer) {
	t.Helper()
	key, _, csrPEM := f.ca.DeviceKeyAndCSR(t, serial, macFor(serial))
	res, err := f.svc.Enroll(context.Background(), provision.TokenAttestor{Store: f.store}, &provision.Request{
		Credential: f.mint(t, provision.TokenSpec{}), CSRPEM: csrPEM, SourceAddr: "127.0.0.1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, key
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// answer asks for a challenge for cert and answers it signed by key, with
// csrPEM when not nil.
func (f *expiredFixture) answer(t *testing.T, cert *x509.Certificate, key crypto.Signer, csrPEM []byte) (*provision.Result, error) {
	t.Helper()
	ch, err := f.svc.RenewExpiredChallenge(context.Background(), &provision.ExpiredChallengeRequest{CertPEM: certPEM(cert), SourceAddr: "127.0.0.1"})
	if err != nil {
		return nil, err
	}
	return f.complete(t, ch, cert, key, csrPEM)
}

func (f *expiredFixture) complete(t *testing.T, ch *provision.ExpiredChallenge, cert *x509.Certificate, key crypto.Signer, csrPEM []byte) (*provision.Result, error) {
	t.Helper()
	var csrDER []byte
	if csrPEM != nil {
		blk, _ := pem.Decode(csrPEM)
		csrDER = blk.Bytes
	}
	_, sig, err := pki.SignDetached(rand.Reader, key, pki.ExpiredRenewalMessage(ch.Nonce, cert, csrDER))
	if err != nil {
		t.Fatal(err)
	}
	return f.svc.RenewExpired(context.Background(), &provision.RenewExpiredRequest{
		ChallengeID: ch.ID, CertPEM: certPEM(cert), Signature: sig, CSRPEM: csrPEM, SourceAddr: "127.0.0.1",
	})
}

// auditActions counts the store's audit events by action and result.
func auditActions(t *testing.T, s registry.Store) map[string]int {
	t.Helper()
	evs, err := s.ListAudit(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, e := range evs {
		m[e.Action+"/"+e.Result]++
	}
	return m
}

func TestRenewExpiredWithinGrace(t *testing.T) {
	f := newExpiredFixture(t, 0) // DefaultRenewGrace
	first, key := f.device(t, "SN-X1")
	f.at(first.Certificate, 29*24*time.Hour)
	// The mutual-TLS door keeps refusing nothing by itself here (the API
	// verifies the chain at its clock); this door renews the same key.
	second, err := f.answer(t, first.Certificate, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if second.DeviceID != first.DeviceID || !keyEq(second.Certificate, first.Certificate) ||
		second.Certificate.Subject.String() != first.Certificate.Subject.String() {
		t.Fatal("expired renewal changed the device, the key or the subject")
	}
	ctx := context.Background()
	old, _ := f.store.GetCertificate(ctx, first.Certificate.SerialNumber.Text(16))
	rec, _ := f.store.GetCertificate(ctx, second.Certificate.SerialNumber.Text(16))
	if old.Status != registry.CertSuperseded || rec.ReplacesSerial != old.Serial || rec.Status != registry.CertActive {
		t.Fatalf("old %s, new replaces %q %s", old.Status, rec.ReplacesSerial, rec.Status)
	}
	if n := auditActions(t, f.store)["renew-expired/"+registry.ResultOK]; n != 1 {
		t.Fatalf("%d renew-expired events, want 1", n)
	}
	// The answer was lost: the expired certificate asks again and gets the
	// same certificate, nothing new signed.
	signed := f.issuer.n.Load()
	again, err := f.answer(t, first.Certificate, key, nil)
	if err != nil || !again.Certificate.Equal(second.Certificate) || f.issuer.n.Load() != signed {
		t.Fatalf("replayed expired renewal: %v", err)
	}

	// Re-key: a CSR for the same serial and MACs, bound by the signature.
	third, key3 := f.device(t, "SN-X2")
	f.at(third.Certificate, time.Hour)
	newKey, _, csrPEM := f.ca.DeviceKeyAndCSR(t, "SN-X2", macFor("SN-X2"))
	rekeyed, err := f.answer(t, third.Certificate, key3, csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !keysEqualPub(rekeyed.Certificate.PublicKey, newKey.Public()) {
		t.Fatal("re-keyed certificate does not hold the CSR's key")
	}
	// A CSR for another serial is refused after the proof, nothing signed.
	fourth, key4 := f.device(t, "SN-X3")
	f.at(fourth.Certificate, time.Hour)
	signed = f.issuer.n.Load()
	_, _, other := f.ca.DeviceKeyAndCSR(t, "SN-OTHER", macFor("SN-X3"))
	if _, err := f.answer(t, fourth.Certificate, key4, other); !errors.Is(err, pki.ErrBadCSR) {
		t.Fatalf("CSR for another serial: %v", err)
	}
	if f.issuer.n.Load() != signed {
		t.Fatal("a refused expired renewal signed")
	}
}

func keysEqualPub(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// TestRenewExpiredRefusals: every refusal comes before any signature and
// writes no certificate; the ones after the proof are chained audit events.
func TestRenewExpiredRefusals(t *testing.T) {
	ctx := context.Background()
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		name  string
		grace time.Duration
		run   func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error
		want  error
		text  string
	}{
		{"beyond grace", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			f.at(res.Certificate, provision.DefaultRenewGrace+time.Minute)
			_, err := f.answer(t, res.Certificate, key, nil)
			return err
		}, provision.ErrRenewGraceExpired, "ca token create --tenant default --serial SN-F"},
		{"grace ran out before the answer", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			f.at(res.Certificate, provision.DefaultRenewGrace-time.Minute)
			ch, err := f.svc.RenewExpiredChallenge(ctx, &provision.ExpiredChallengeRequest{CertPEM: certPEM(res.Certificate)})
			if err != nil {
				t.Fatal(err)
			}
			f.at(res.Certificate, provision.DefaultRenewGrace+time.Second)
			_, err = f.complete(t, ch, res.Certificate, key, nil)
			return err
		}, provision.ErrRenewGraceExpired, "beyond the grace period of 720h"},
		{"grace 0 disables", -1, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			f.at(res.Certificate, time.Second)
			_, err := f.answer(t, res.Certificate, key, nil)
			return err
		}, provision.ErrRenewGraceExpired, "does not renew expired certificates"},
		{"not expired yet", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			f.at(res.Certificate, -time.Minute)
			_, err := f.answer(t, res.Certificate, key, nil)
			return err
		}, provision.ErrInvalidArgument, "renew it over mutual TLS"},
		{"revoked certificate", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			if _, err := f.store.RevokeCertificate(ctx, res.Certificate.SerialNumber.Text(16), 1, time.Now(), nil); err != nil {
				t.Fatal(err)
			}
			f.at(res.Certificate, time.Hour)
			_, err := f.answer(t, res.Certificate, key, nil)
			return err
		}, registry.ErrNotRenewable, "is revoked"},
		{"revoked device", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			if _, err := f.store.RevokeDevice(ctx, res.DeviceID, 1, nil); err != nil {
				t.Fatal(err)
			}
			f.at(res.Certificate, time.Hour)
			_, err := f.answer(t, res.Certificate, key, nil)
			return err
		}, registry.ErrNotRenewable, "is revoked"},
		{"wrong key", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			f.at(res.Certificate, time.Hour)
			_, err := f.answer(t, res.Certificate, otherKey, nil)
			return err
		}, provision.ErrExpiredProof, "does not verify"},
		{"signature not over this CSR", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			f.at(res.Certificate, time.Hour)
			ch, err := f.svc.RenewExpiredChallenge(ctx, &provision.ExpiredChallengeRequest{CertPEM: certPEM(res.Certificate)})
			if err != nil {
				t.Fatal(err)
			}
			_, sig, _ := pki.SignDetached(rand.Reader, key, pki.ExpiredRenewalMessage(ch.Nonce, res.Certificate, nil))
			_, _, csrPEM := f.ca.DeviceKeyAndCSR(t, "SN-F", macFor("SN-F"))
			_, err = f.svc.RenewExpired(ctx, &provision.RenewExpiredRequest{ChallengeID: ch.ID, CertPEM: certPEM(res.Certificate),
				Signature: sig, CSRPEM: csrPEM})
			return err
		}, provision.ErrExpiredProof, "does not verify"},
		{"replayed nonce", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			f.at(res.Certificate, time.Hour)
			ch, err := f.svc.RenewExpiredChallenge(ctx, &provision.ExpiredChallengeRequest{CertPEM: certPEM(res.Certificate)})
			if err != nil {
				t.Fatal(err)
			}
			// A wrong first answer spends the challenge all the same.
			if _, err := f.complete(t, ch, res.Certificate, otherKey, nil); !errors.Is(err, provision.ErrExpiredProof) {
				t.Fatalf("first answer: %v", err)
			}
			_, err = f.complete(t, ch, res.Certificate, key, nil)
			return err
		}, verify.ErrChallengeUsed, ""},
		{"expired challenge", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			f.at(res.Certificate, time.Hour)
			ch, err := f.svc.RenewExpiredChallenge(ctx, &provision.ExpiredChallengeRequest{CertPEM: certPEM(res.Certificate)})
			if err != nil {
				t.Fatal(err)
			}
			f.at(res.Certificate, time.Hour+provision.ExpiredChallengeTTL)
			_, err = f.complete(t, ch, res.Certificate, key, nil)
			return err
		}, verify.ErrChallengeExpired, ""},
		{"unknown challenge", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			f.at(res.Certificate, time.Hour)
			_, err := f.complete(t, &provision.ExpiredChallenge{ID: "nope", Nonce: []byte("n")}, res.Certificate, key, nil)
			return err
		}, verify.ErrChallengeNotFound, ""},
		{"another device's certificate", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			// Device B holds its own key and A's (public) certificate.
			b, keyB := f.b, f.keyB
			f.at(res.Certificate, time.Hour)
			if _, err := f.answer(t, res.Certificate, keyB, nil); !errors.Is(err, provision.ErrExpiredProof) {
				t.Fatalf("A's certificate signed by B: %v", err)
			}
			// Or answers A's challenge with its own certificate.
			ch, err := f.svc.RenewExpiredChallenge(ctx, &provision.ExpiredChallengeRequest{CertPEM: certPEM(res.Certificate)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.complete(t, ch, b.Certificate, keyB, nil)
			return err
		}, provision.ErrExpiredProof, "issued for certificate"},
		{"certificate of another CA", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			other := newFixture(t)
			k, _, _ := other.ca.DeviceKeyAndCSR(t, "SN-F", macFor("SN-F"))
			iss := other.ca.IssueDevice(t, pki.Identity{DeviceID: res.DeviceID, Tenant: "default", Serial: "SN-F", TrustDomain: "test.devpki"}, k)
			f.at(iss.Certificate, time.Hour)
			_, err := f.answer(t, iss.Certificate, k, nil)
			return err
		}, provision.ErrUnauthenticated, "does not chain to this CA"},
		{"garbage certificate", 0, func(t *testing.T, f *expiredFixture, res *provision.Result, key crypto.Signer) error {
			_, err := f.svc.RenewExpiredChallenge(ctx, &provision.ExpiredChallengeRequest{CertPEM: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")})
			return err
		}, provision.ErrInvalidArgument, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newExpiredFixture(t, tc.grace)
			res, key := f.device(t, "SN-F")
			f.b, f.keyB = f.device(t, "SN-B")
			signed := f.issuer.n.Load()
			certs, _ := f.store.ListDeviceCertificates(ctx, res.DeviceID)
			err := tc.run(t, f, res, key)
			if !errors.Is(err, tc.want) || !strings.Contains(errString(err), tc.text) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.text)
			}
			if f.issuer.n.Load() != signed {
				t.Fatal("a refused expired renewal signed a certificate")
			}
			after, _ := f.store.ListDeviceCertificates(ctx, res.DeviceID)
			if len(after) != len(certs) {
				t.Fatalf("refusal recorded a certificate: %d -> %d", len(certs), len(after))
			}
			if n := auditActions(t, f.store)["renew-expired/"+registry.ResultOK]; n != 0 {
				t.Fatalf("%d renew-expired successes audited", n)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestRenewExpiredAuditTrail: a refusal after the proof is a chained
// event of the device's tenant; one before it is counted in the refusal
// log.
func TestRenewExpiredAuditTrail(t *testing.T) {
	ctx := context.Background()
	f := newExpiredFixture(t, 0)
	res, key := f.device(t, "SN-A")
	if err := f.store.RequireRekey(ctx, res.DeviceID, true, nil, nil); err != nil {
		t.Fatal(err)
	}
	f.at(res.Certificate, time.Hour)
	if _, err := f.answer(t, res.Certificate, key, nil); !errors.Is(err, registry.ErrRekeyRequired) {
		t.Fatalf("same key after a forced re-key: %v", err)
	}
	if n := auditActions(t, f.store)["renew-expired/"+registry.ResultDenied]; n != 1 {
		t.Fatalf("%d denied renew-expired events, want 1", n)
	}
	f.at(res.Certificate, provision.DefaultRenewGrace+time.Hour)
	if _, err := f.answer(t, res.Certificate, key, nil); !errors.Is(err, provision.ErrRenewGraceExpired) {
		t.Fatal(err)
	}
	refusals, err := f.store.ListRefusals(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range refusals {
		found = found || (r.Action == "renew-expired.challenge" && r.Reason == "renew-grace-expired")
	}
	if !found {
		t.Fatalf("no renew-grace-expired refusal counted: %+v", refusals)
	}
}

// TestRenewExpiredTenantGrace: a tenant's grace period overrides the CA's,
// and a negative one disables the door for that tenant only.
func TestRenewExpiredTenantGrace(t *testing.T) {
	ctx := context.Background()
	f := newExpiredFixture(t, 0)
	short := 2 * time.Hour
	if _, err := provision.UpdateTenantPolicy(ctx, f.store, provision.Actor{}, registry.DefaultTenant,
		provision.TenantPolicy{RenewGrace: &short}); err != nil {
		t.Fatal(err)
	}
	res, key := f.device(t, "SN-T1")
	f.at(res.Certificate, 3*time.Hour) // within the CA's 720h, beyond the tenant's 2h
	if _, err := f.answer(t, res.Certificate, key, nil); !errors.Is(err, provision.ErrRenewGraceExpired) ||
		!strings.Contains(err.Error(), "grace period of 2h0m0s") {
		t.Fatalf("beyond the tenant's grace: %v", err)
	}
	f.at(res.Certificate, time.Hour)
	if _, err := f.answer(t, res.Certificate, key, nil); err != nil {
		t.Fatalf("within the tenant's grace: %v", err)
	}
	off := time.Duration(-1)
	if _, err := provision.UpdateTenantPolicy(ctx, f.store, provision.Actor{}, registry.DefaultTenant,
		provision.TenantPolicy{RenewGrace: &off}); err != nil {
		t.Fatal(err)
	}
	res2, key2 := f.device(t, "SN-T2")
	f.at(res2.Certificate, time.Minute)
	if _, err := f.answer(t, res2.Certificate, key2, nil); !errors.Is(err, provision.ErrRenewGraceExpired) {
		t.Fatalf("tenant with the door disabled: %v", err)
	}
	// Bad values are refused, nothing changes.
	bad := time.Duration(0)
	for _, d := range []time.Duration{time.Second, 9000 * time.Hour} {
		bad = d
		if _, err := provision.UpdateTenantPolicy(ctx, f.store, provision.Actor{}, registry.DefaultTenant,
			provision.TenantPolicy{RenewGrace: &bad}); !errors.Is(err, provision.ErrInvalidArgument) {
			t.Fatalf("renew grace %s: %v", d, err)
		}
	}
	tn, _ := f.store.GetTenant(ctx, registry.DefaultTenant)
	if tn.RenewGrace >= 0 {
		t.Fatalf("tenant renew grace %s after refused updates", tn.RenewGrace)
	}
}

// TestRenewExpiredAcrossReplicas: a challenge issued by one service is
// answered on another sharing the database (invariant 10), once.
func TestRenewExpiredAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ca := pkitest.NewCA(t)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	replica := func() (*provision.Service, registry.Store) {
		st, err := sqlstore.Open(ctx, sqlstore.Options{DSN: filepath.Join(dir, "r.db")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		svc, err := provision.New(provision.Config{Store: st, Issuer: ca.Issuer, TrustDomain: "test.devpki", Lifetime: time.Hour,
			Now: func() time.Time { return time.Unix(0, clock.Load()) }})
		if err != nil {
			t.Fatal(err)
		}
		return svc, st
	}
	a, st := replica()
	b, _ := replica()
	key, _, csrPEM := ca.DeviceKeyAndCSR(t, "SN-REP", macFor("SN-REP"))
	tok, _, err := provision.MintToken(ctx, st, time.Now(), provision.TokenSpec{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Enroll(ctx, provision.TokenAttestor{Store: st}, &provision.Request{Credential: tok, CSRPEM: csrPEM})
	if err != nil {
		t.Fatal(err)
	}
	clock.Store(res.Certificate.NotAfter.Add(time.Hour).UnixNano())
	ch, err := a.RenewExpiredChallenge(ctx, &provision.ExpiredChallengeRequest{CertPEM: certPEM(res.Certificate)})
	if err != nil {
		t.Fatal(err)
	}
	_, sig, err := pki.SignDetached(rand.Reader, key, pki.ExpiredRenewalMessage(ch.Nonce, res.Certificate, nil))
	if err != nil {
		t.Fatal(err)
	}
	req := &provision.RenewExpiredRequest{ChallengeID: ch.ID, CertPEM: certPEM(res.Certificate), Signature: sig}
	if _, err := b.RenewExpired(ctx, req); err != nil {
		t.Fatalf("answer on the other replica: %v", err)
	}
	if _, err := a.RenewExpired(ctx, req); !errors.Is(err, verify.ErrChallengeUsed) {
		t.Fatalf("second answer on the first replica: %v", err)
	}
}
