package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"devpki/api"
	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// expiredDevice enrolls serial and returns its certificate and key.
func (f *fixture) expiredDevice(serial string) (*x509.Certificate, crypto.Signer) {
	f.t.Helper()
	er, key := f.mustEnroll(f.mint(provision.TokenSpec{}), serial)
	return parsePEMCerts(f.t, []byte(er.Certificate))[0], key
}

// serveLater points f at a second API over the same registry whose clock
// (provision's and the TLS peer check's) runs ahead by d: the certificates
// enrolled so far look as they will then.
func (f *fixture) serveLater(d time.Duration) {
	f.t.Helper()
	now := func() time.Time { return time.Now().Add(d) }
	prov, err := provision.New(provision.Config{Store: f.store, Issuer: f.ca.Issuer, TrustDomain: pkitest.TrustDomain,
		TenantTTL: -1, Now: now})
	if err != nil {
		f.t.Fatal(err)
	}
	handler, err := api.New(api.Config{
		Store: f.store, Provision: prov, Admin: f.admin, Attestors: f.attestors,
		Root: f.ca.CA.Root, Chain: f.ca.Issuer.Chain(), TrustDomain: pkitest.TrustDomain, Revocation: f.rev,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), AccessLog: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: now,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = f.srv.TLS.Clone()
	srv.StartTLS()
	f.t.Cleanup(srv.Close)
	f.url = srv.URL
}

func (f *fixture) postJSON(path string, v any) (*http.Response, []byte) {
	f.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, body, err := f.do(f.client, http.MethodPost, path, "", "application/json", bytes.NewReader(b))
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, body
}

// renewExpiredHTTP runs the challenge and the answer signed by key.
func (f *fixture) renewExpiredHTTP(cert *x509.Certificate, key crypto.Signer) (*http.Response, []byte) {
	f.t.Helper()
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	resp, body := f.postJSON("/v1/renew/expired/challenge", wire.ExpiredChallengeRequest{Certificate: certPEM})
	if resp.StatusCode != http.StatusOK {
		return resp, body
	}
	var ch wire.ExpiredChallengeResponse
	if err := json.Unmarshal(body, &ch); err != nil {
		f.t.Fatal(err)
	}
	_, sig, err := pki.SignDetached(rand.Reader, key, pki.ExpiredRenewalMessage(ch.Nonce, cert, nil))
	if err != nil {
		f.t.Fatal(err)
	}
	req := wire.RenewExpiredRequest{ChallengeID: ch.ChallengeID, Certificate: certPEM, Signature: sig}
	resp, body = f.postJSON("/v1/renew/expired", req)
	if resp.StatusCode == http.StatusCreated {
		// The same answer again: the nonce is spent.
		again, b := f.postJSON("/v1/renew/expired", req)
		if p := problemOf(f.t, again, b, http.StatusConflict); p.Type != wire.ProblemTypePrefix+wire.SlugChallengeUsed {
			f.t.Errorf("replayed answer: %+v", p)
		}
	}
	return resp, body
}

func TestRenewExpiredAPI(t *testing.T) {
	f := newFixture(t)
	cert, key := f.expiredDevice("SN-EXP-1")
	f.serveLater(time.Until(cert.NotAfter) + 24*time.Hour)

	// The mutual-TLS door still refuses the expired certificate.
	tc := tls.Certificate{PrivateKey: key, Leaf: cert, Certificate: [][]byte{cert.Raw, f.ca.CA.Intermediate.Raw}}
	resp, body, err := f.do(f.newClient(&tc), http.MethodPost, "/v1/renew", "", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if p := problemOf(t, resp, body, http.StatusUnauthorized); !strings.Contains(p.Detail, "POST /v1/renew/expired") {
		t.Fatalf("mutual-TLS renewal of an expired certificate: %+v", p)
	}

	resp, body = f.renewExpiredHTTP(cert, key)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("renew expired: %d %s", resp.StatusCode, body)
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(body, &er); err != nil {
		t.Fatal(err)
	}
	renewed := parsePEMCerts(t, []byte(er.Certificate))[0]
	if !time.Now().Before(renewed.NotAfter) || renewed.Subject.String() != cert.Subject.String() {
		t.Fatalf("renewed certificate %s until %s", renewed.Subject, renewed.NotAfter)
	}
	if _, err := renewed.Verify(x509.VerifyOptions{Roots: f.ca.Roots(), Intermediates: f.ca.Intermediates(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range f.auditSince(0) {
		found = found || (ev.Action == "renew-expired" && ev.Result == registry.ResultOK && strings.HasPrefix(ev.Actor, "device:"))
	}
	if !found {
		t.Fatal("no renew-expired audit event")
	}
}

func TestRenewExpiredAPIRefusals(t *testing.T) {
	f := newFixture(t)
	beyond, beyondKey := f.expiredDevice("SN-EXP-OLD")
	recent, _ := f.expiredDevice("SN-EXP-NEW")
	f.serveLater(time.Until(beyond.NotAfter) + provision.DefaultRenewGrace + time.Hour)
	other, _, _ := f.keyAndCSR("SN-OTHER")
	before := f.counts()

	resp, body := f.renewExpiredHTTP(beyond, beyondKey)
	p := problemOf(t, resp, body, http.StatusForbidden)
	if p.Type != wire.ProblemTypePrefix+wire.SlugRenewGraceExpired || !strings.Contains(p.Detail, "ca token create --tenant default --serial SN-EXP-OLD") {
		t.Fatalf("beyond grace: %+v", p)
	}
	f.serveLater(time.Until(recent.NotAfter) + time.Hour)
	resp, body = f.renewExpiredHTTP(recent, other)
	if p := problemOf(t, resp, body, http.StatusForbidden); p.Type != wire.ProblemTypePrefix+wire.SlugRenewProofInvalid {
		t.Fatalf("wrong key: %+v", p)
	}
	resp, body = f.postJSON("/v1/renew/expired/challenge", wire.ExpiredChallengeRequest{Certificate: "not a certificate"})
	if p := problemOf(t, resp, body, http.StatusBadRequest); p.Type != wire.ProblemTypePrefix+wire.SlugBadRequest {
		t.Fatalf("garbage: %+v", p)
	}
	resp, body = f.postJSON("/v1/renew/expired", wire.RenewExpiredRequest{ChallengeID: "nope",
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: recent.Raw}))})
	if p := problemOf(t, resp, body, http.StatusGone); p.Type != wire.ProblemTypePrefix+wire.SlugChallengeExpired {
		t.Fatalf("unknown challenge: %+v", p)
	}
	if after := f.counts(); after != before {
		t.Fatalf("refusals wrote rows: %+v -> %+v", before, after)
	}
	if n := f.refusalHits("renew-expired.challenge") + f.refusalHits("renew-expired"); n < 3 {
		t.Fatalf("%d refusals counted, want 3 or more", n)
	}
}

// TestTenantRenewGraceOverAPI: a tenant's renew_grace is set, shown, turned
// off and back to the CA's through the admin API; bad values are 400 and
// change nothing.
func TestTenantRenewGraceOverAPI(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	boss := f.apiClient(f.superAdminCert("boss"))
	for _, bad := range []string{"banana", "-1h", "1s", "9000h"} {
		_, err := boss.CreateTenant(ctx, &wire.TenantCreateRequest{Name: "shelf", RenewGrace: bad})
		wantStatus(t, err, http.StatusBadRequest, "")
	}
	tn, err := boss.CreateTenant(ctx, &wire.TenantCreateRequest{Name: "shelf", RenewGrace: "72h"})
	if err != nil || tn.RenewGrace != "72h0m0s" {
		t.Fatalf("create: %+v, %v", tn, err)
	}
	for _, c := range []struct{ set, want string }{{"off", "off"}, {"0", ""}, {"24h", "24h0m0s"}} {
		v := c.set
		tn, err := boss.UpdateTenant(ctx, "shelf", &wire.TenantPolicyRequest{RenewGrace: &v})
		if err != nil || tn.RenewGrace != c.want {
			t.Fatalf("set renew_grace %q: %+v, %v", c.set, tn, err)
		}
	}
	bad := "forever"
	_, err = boss.UpdateTenant(ctx, "shelf", &wire.TenantPolicyRequest{RenewGrace: &bad})
	wantStatus(t, err, http.StatusBadRequest, "")
	if st, err := f.store.GetTenant(ctx, "shelf"); err != nil || st.RenewGrace != 24*time.Hour {
		t.Fatalf("stored tenant %+v, %v", st, err)
	}
}
