package provision_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// countingCRLSigner counts CRL signatures.
type countingCRLSigner struct {
	provision.CRLSigner
	n atomic.Int64
}

func (c *countingCRLSigner) SignCRL(ctx context.Context, t *pki.CRLTemplate) ([]byte, error) {
	c.n.Add(1)
	return c.CRLSigner.SignCRL(ctx, t)
}

type revFixture struct {
	*fixture
	rev    *provision.Revocation
	signer *countingCRLSigner
	clock  atomic.Pointer[time.Time]
	admin  provision.Actor
}

func newRevFixture(t *testing.T) *revFixture {
	t.Helper()
	f := &revFixture{fixture: newFixture(t)}
	now := time.Now()
	f.clock.Store(&now)
	f.rev = f.newRevocation(t)
	f.admin = provision.Actor{Kind: provision.ActorAdmin, ID: "alice", TenantID: registry.DefaultTenant, Source: "192.0.2.9"}
	return f
}

// newRevocation is one replica's Revocation over the fixture's store.
func (f *revFixture) newRevocation(t *testing.T) *provision.Revocation {
	t.Helper()
	now := func() time.Time { return *f.clock.Load() }
	resp, err := pki.NewOCSPResponder(context.Background(), pki.OCSPResponderOptions{CA: f.ca.CA, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if f.signer == nil {
		f.signer = &countingCRLSigner{CRLSigner: f.ca.CA}
	}
	rev, err := provision.NewRevocation(provision.RevocationConfig{
		Store: f.store, CRLSigner: f.signer, OCSP: resp, Now: now,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func (f *revFixture) advance(d time.Duration) {
	n := f.clock.Load().Add(d)
	f.clock.Store(&n)
}

// device enrolls serial and returns its certificate.
func (f *revFixture) device(t *testing.T, serial string) *provision.Result {
	t.Helper()
	res, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), serial, macFor(serial))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// crl returns the current CRL, parsed and checked against the intermediate.
func (f *revFixture) crl(t *testing.T) (*provision.CRL, *x509.RevocationList) {
	t.Helper()
	c, err := f.rev.CRL(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(c.DER)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(f.ca.CA.Intermediate); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	if rl.Number.Int64() != c.Number || len(rl.RevokedCertificateEntries) != c.Entries {
		t.Fatalf("CRL %d with %d entries, cache says %d with %d", rl.Number, len(rl.RevokedCertificateEntries), c.Number, c.Entries)
	}
	return c, rl
}

func crlReason(rl *x509.RevocationList, c *x509.Certificate) (int, bool) {
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return e.ReasonCode, true
		}
	}
	return 0, false
}

// ocspFor asks the Revocation about c and parses the answer.
func (f *revFixture) ocspFor(t *testing.T, rev *provision.Revocation, c *x509.Certificate) *ocsp.Response {
	t.Helper()
	req, err := ocsp.CreateRequest(c, f.ca.CA.Intermediate, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := rev.OCSP(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ocsp.ParseResponseForCert(a.DER, c, f.ca.CA.Intermediate)
	if err != nil {
		t.Fatalf("ParseResponseForCert: %v", err)
	}
	return resp
}

func TestRevokeCertificateCRLAndOCSP(t *testing.T) {
	f := newRevFixture(t)
	ctx := context.Background()
	a, b := f.device(t, "SN-A"), f.device(t, "SN-B")
	c0, rl := f.crl(t)
	if c0.Entries != 0 {
		t.Fatalf("first CRL has %d entries", len(rl.RevokedCertificateEntries))
	}
	if got := f.ocspFor(t, f.rev, a.Certificate); got.Status != ocsp.Good {
		t.Fatalf("OCSP before revocation: %d, want good", got.Status)
	}
	evs, _ := f.store.ListAudit(ctx, 0, 1000)
	before := len(evs)

	serial := a.Certificate.SerialNumber.Text(16)
	res, err := f.rev.RevokeCertificate(ctx, f.admin, serial, registry.ReasonKeyCompromise)
	if err != nil {
		t.Fatal(err)
	}
	if res.AlreadyRevoked || len(res.Certificates) != 1 || res.CRLNumber <= c0.Number {
		t.Fatalf("result %+v (previous CRL %d)", res, c0.Number)
	}
	c1, rl := f.crl(t)
	if c1.Number != res.CRLNumber || c1.ETag == c0.ETag {
		t.Errorf("current CRL %d (etag %s), revoke said %d", c1.Number, c1.ETag, res.CRLNumber)
	}
	if r, ok := crlReason(rl, a.Certificate); !ok || r != registry.ReasonKeyCompromise {
		t.Errorf("CRL entry for A: listed %v reason %d", ok, r)
	}
	if _, ok := crlReason(rl, b.Certificate); ok {
		t.Error("CRL lists B")
	}
	// The good answer cached before the revocation was dropped.
	got := f.ocspFor(t, f.rev, a.Certificate)
	if got.Status != ocsp.Revoked || got.RevocationReason != ocsp.KeyCompromise || got.RevokedAt.IsZero() {
		t.Errorf("OCSP after revocation: status %d reason %d at %v", got.Status, got.RevocationReason, got.RevokedAt)
	}
	if got := f.ocspFor(t, f.rev, b.Certificate); got.Status != ocsp.Good {
		t.Errorf("OCSP for B: %d", got.Status)
	}
	evs, _ = f.store.ListAudit(ctx, 0, 1000)
	if len(evs) != before+1 || evs[len(evs)-1].Action != "cert.revoke" || evs[len(evs)-1].Actor != "admin:alice" ||
		evs[len(evs)-1].Target != serial || evs[len(evs)-1].Result != registry.ResultOK {
		t.Fatalf("audit after revoke: %d events (was %d), last %+v", len(evs), before, evs[len(evs)-1])
	}

	// Twice: idempotent, no new event, no new CRL.
	builds := f.signer.n.Load()
	res, err = f.rev.RevokeCertificate(ctx, f.admin, serial, registry.ReasonSuperseded)
	if err != nil || !res.AlreadyRevoked || res.Certificates[0].RevocationReason != registry.ReasonKeyCompromise {
		t.Fatalf("second revoke: %+v, %v", res, err)
	}
	if evs2, _ := f.store.ListAudit(ctx, 0, 1000); len(evs2) != len(evs) {
		t.Errorf("second revoke wrote %d audit events", len(evs2)-len(evs))
	}
	if f.signer.n.Load() != builds {
		t.Error("second revoke rebuilt the CRL")
	}
}

func TestRevokeRefusals(t *testing.T) {
	f := newRevFixture(t)
	ctx := context.Background()
	a := f.device(t, "SN-R")
	serial := a.Certificate.SerialNumber.Text(16)
	other := f.admin
	other.TenantID = "t-elsewhere"
	for _, tc := range []struct {
		name string
		fn   func() error
		want error
	}{
		{"bad reason", func() error { _, err := f.rev.RevokeCertificate(ctx, f.admin, serial, 7); return err }, registry.ErrInvalidReason},
		{"bad device reason", func() error { _, err := f.rev.RevokeDevice(ctx, f.admin, a.DeviceID, 11); return err }, registry.ErrInvalidReason},
		{"unknown serial", func() error { _, err := f.rev.RevokeCertificate(ctx, f.admin, "abcdef", 1); return err }, registry.ErrNotFound},
		{"unknown device", func() error { _, err := f.rev.RevokeDevice(ctx, f.admin, "nope", 1); return err }, registry.ErrNotFound},
		{"other tenant", func() error { _, err := f.rev.RevokeCertificate(ctx, other, serial, 1); return err }, registry.ErrNotFound},
		{"other tenant device", func() error { _, err := f.rev.RevokeDevice(ctx, other, a.DeviceID, 1); return err }, registry.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, _ := f.store.ListAudit(ctx, 0, 1000)
			if err := tc.fn(); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			after, _ := f.store.ListAudit(ctx, 0, 1000)
			if len(after) != len(evs)+1 || after[len(after)-1].Result != registry.ResultDenied {
				t.Errorf("refusal not audited as denied: %d -> %d events", len(evs), len(after))
			}
		})
	}
	if c, _ := f.store.GetCertificate(ctx, serial); c.Status != registry.CertActive {
		t.Errorf("certificate is %s after refusals", c.Status)
	}
}

func TestRevokeDeviceAndExpiry(t *testing.T) {
	f := newRevFixture(t)
	ctx := context.Background()
	a, b := f.device(t, "SN-D1"), f.device(t, "SN-D2")
	// Cache a good answer for A first.
	if got := f.ocspFor(t, f.rev, a.Certificate); got.Status != ocsp.Good {
		t.Fatal("A not good")
	}
	res, err := f.rev.RevokeDevice(ctx, f.admin, a.DeviceID, registry.ReasonCessationOfOperation)
	if err != nil || res.AlreadyRevoked || len(res.Certificates) != 1 {
		t.Fatalf("RevokeDevice = %+v, %v", res, err)
	}
	if got := f.ocspFor(t, f.rev, a.Certificate); got.Status != ocsp.Revoked || got.RevocationReason != ocsp.CessationOfOperation {
		t.Errorf("OCSP for revoked device: %d reason %d", got.Status, got.RevocationReason)
	}
	_, rl := f.crl(t)
	if r, ok := crlReason(rl, a.Certificate); !ok || r != registry.ReasonCessationOfOperation {
		t.Errorf("CRL: listed %v reason %d", ok, r)
	}
	if res, err := f.rev.RevokeDevice(ctx, f.admin, a.DeviceID, 1); err != nil || !res.AlreadyRevoked {
		t.Errorf("second RevokeDevice = %+v, %v", res, err)
	}

	// A revoked-but-unexpired entry stays in every CRL until the
	// certificate expires, then goes.
	if _, err := f.rev.RevokeCertificate(ctx, f.admin, b.Certificate.SerialNumber.Text(16), 0); err != nil {
		t.Fatal(err)
	}
	f.advance(25 * time.Hour) // past the first CRLs' nextUpdate
	c, rl := f.crl(t)
	if c.Entries != 2 {
		t.Fatalf("CRL a day later has %d entries, want 2", c.Entries)
	}
	if r, ok := crlReason(rl, b.Certificate); !ok || r != 0 {
		t.Errorf("unspecified reason entry: listed %v reason %d", ok, r)
	}
	f.advance(a.Certificate.NotAfter.Sub(*f.clock.Load()) + time.Hour)
	if err := f.rev.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.crl(t); c.Entries != 0 {
		t.Errorf("CRL after the certificates expired has %d entries", c.Entries)
	}
}

func TestRefreshSeesOtherReplica(t *testing.T) {
	f := newRevFixture(t)
	ctx := context.Background()
	replica := f.newRevocation(t)
	a := f.device(t, "SN-REP")
	c0, _ := f.crl(t)
	if got := f.ocspFor(t, f.rev, a.Certificate); got.Status != ocsp.Good {
		t.Fatal("not good")
	}
	// Nothing changed: Refresh keeps the CRL (no new number).
	if err := f.rev.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.crl(t); c.Number != c0.Number {
		t.Errorf("Refresh without changes rebuilt: %d -> %d", c0.Number, c.Number)
	}
	res, err := replica.RevokeCertificate(ctx, f.admin, a.Certificate.SerialNumber.Text(16), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.rev.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	c1, rl := f.crl(t)
	if _, ok := crlReason(rl, a.Certificate); !ok || c1.Number <= res.CRLNumber {
		t.Errorf("after Refresh: CRL %d lists A: %v (replica built %d)", c1.Number, ok, res.CRLNumber)
	}
	// The other replica's cached OCSP answer lasts at most Refresh.
	f.advance(provision.DefaultRefresh)
	if got := f.ocspFor(t, f.rev, a.Certificate); got.Status != ocsp.Revoked {
		t.Errorf("OCSP one refresh later: %d, want revoked", got.Status)
	}
}

func TestConcurrentRevocationsShareBuilds(t *testing.T) {
	f := newRevFixture(t)
	ctx := context.Background()
	const n = 16
	certs := make([]*x509.Certificate, n)
	for i := range certs {
		certs[i] = f.device(t, "SN-C"+string(rune('a'+i))).Certificate
	}
	f.crl(t)
	builds := f.signer.n.Load()
	var wg sync.WaitGroup
	for _, c := range certs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := f.rev.RevokeCertificate(ctx, f.admin, c.SerialNumber.Text(16), 1)
			if err != nil || res.CRLNumber == 0 {
				t.Errorf("revoke: %+v, %v", res, err)
			}
		}()
	}
	wg.Wait()
	_, rl := f.crl(t)
	for _, c := range certs {
		if _, ok := crlReason(rl, c); !ok {
			t.Errorf("CRL misses %x", c.SerialNumber)
		}
	}
	t.Logf("%d revocations, %d CRL builds", n, f.signer.n.Load()-builds)
}

func TestOCSPEdgeCases(t *testing.T) {
	f := newRevFixture(t)
	ctx := context.Background()
	for _, raw := range [][]byte{nil, []byte("garbage"), {0x30, 0x03, 0x02, 0x01, 0x01}} {
		a, err := f.rev.OCSP(ctx, raw)
		if err != nil || string(a.DER) != string(ocsp.MalformedRequestErrorResponse) {
			t.Errorf("OCSP(%x) = %x, %v; want malformedRequest", raw, a, err)
		}
	}
	// A certificate the registry never recorded: unknown.
	key, _, _ := f.ca.DeviceKeyAndCSR(t, "SN-X", "02:00:00:00:00:0b")
	stray := f.ca.IssueDevice(t, pki.Identity{DeviceID: "stray", Tenant: "default", Serial: "SN-X"}, key).Certificate
	if got := f.ocspFor(t, f.rev, stray); got.Status != ocsp.Unknown {
		t.Errorf("unrecorded serial: %d, want unknown", got.Status)
	}
	// A certificate of another CA (issuer hashes differ): unknown.
	other := pkitest.NewCA(t)
	a := f.device(t, "SN-O")
	req, _ := ocsp.CreateRequest(a.Certificate, other.CA.Intermediate, nil)
	ans, err := f.rev.OCSP(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ocsp.ParseResponse(ans.DER, f.ca.CA.Intermediate)
	if err != nil || resp.Status != ocsp.Unknown {
		t.Errorf("other issuer: %+v, %v; want unknown", resp, err)
	}
}

// TestFirstCRLBuiltOnce: concurrent first requests share one CRL build.
func TestFirstCRLBuiltOnce(t *testing.T) {
	f := newRevFixture(t)
	var wg sync.WaitGroup
	nums := make([]int64, 8)
	for i := range nums {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := f.rev.CRL(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			nums[i] = c.Number
		}()
	}
	wg.Wait()
	if n := f.signer.n.Load(); n != 1 {
		t.Errorf("%d CRL builds for concurrent first requests, want 1", n)
	}
	for _, n := range nums {
		if n != nums[0] {
			t.Errorf("CRL numbers %v differ", nums)
		}
	}
}

// TestRunPicksUpOtherReplica: the background loop rebuilds the CRL within
// Refresh of a revocation made by another replica.
func TestRunPicksUpOtherReplica(t *testing.T) {
	f := newRevFixture(t)
	// This replica's clock is the real one, so its ticker and its clock agree.
	runner, err := provision.NewRevocation(provision.RevocationConfig{
		Store: f.store, CRLSigner: f.ca.CA, Refresh: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { runner.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	a := f.device(t, "SN-RUN")
	if _, err := f.rev.RevokeCertificate(context.Background(), f.admin, a.Certificate.SerialNumber.Text(16), 1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := runner.CRL(context.Background())
		if err == nil && c.Entries == 1 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the background refresh did not pick up the other replica's revocation")
}
