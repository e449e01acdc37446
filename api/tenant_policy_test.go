package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestEnrollRequireTPMOverTLS: POST /v1/enroll into a tenant that requires
// TPM attestation is 403 tpm-required with a detail that says what to do;
// the token stays unspent, nothing is recorded, the refusal is audited.
func TestEnrollRequireTPMOverTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	secure, err := provision.CreateTenant(ctx, f.store, provision.TenantSpec{Name: "secure", RequireTPM: true, Who: provision.AdminActor("test", "", "")})
	if err != nil {
		t.Fatal(err)
	}
	tok := f.mint(provision.TokenSpec{Tenant: "secure"})
	before, seq := f.counts(), f.lastSeq()

	resp, body := f.enroll(tok, f.csr("SN-REQ-1"))
	p := problemOf(t, resp, body, http.StatusForbidden)
	if p.Slug() != wire.SlugTPMRequired {
		t.Errorf("slug %q, want %q", p.Slug(), wire.SlugTPMRequired)
	}
	for _, want := range []string{`tenant "secure" admits only TPM-attested devices`, "enroll --tpm"} {
		if !strings.Contains(p.Detail, want) {
			t.Errorf("detail %q does not say %q", p.Detail, want)
		}
	}
	if got := f.counts(); got != before {
		t.Errorf("rows %+v, want %+v", got, before)
	}
	if n := f.usesLeft(tok); n != 1 {
		t.Errorf("token uses left %d, want 1", n)
	}
	evs := f.auditSince(seq)
	if len(evs) != 1 || evs[0].Result != registry.ResultDenied || evs[0].TenantID != secure.ID || !strings.HasPrefix(evs[0].Actor, "token:") {
		t.Errorf("audit = %+v, want one denial by the token in tenant %s", evs, secure.ID)
	}

	// The typed client sees the same problem.
	c, err := client.New(f.url, client.WithRoots(f.ca.Roots()))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Enroll(ctx, tok, &wire.EnrollRequest{CSR: string(f.csr("SN-REQ-1"))})
	var re *client.ResponseError
	if !errors.As(err, &re) || re.Problem == nil || re.StatusCode != http.StatusForbidden || re.Problem.Slug() != wire.SlugTPMRequired {
		t.Fatalf("client.Enroll = %v, want 403 %s", err, wire.SlugTPMRequired)
	}

}

// TestTPMChallengeAuthorization: an Authorization header on the TPM
// challenge that is not a bootstrap token is refused as token-invalid
// before anything else, and audited.
func TestTPMChallengeAuthorization(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, h := range []string{"Basic dXNlcjpwdw==", "Bearer ", "Bearer"} {
		seq, hits := f.lastSeq(), f.refusalHits("enroll.tpm.challenge")
		req, err := http.NewRequest(http.MethodPost, f.url+"/v1/enroll/tpm/challenge", strings.NewReader(`{"serial":"SN-1"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", h)
		req.Header.Set("Content-Type", "application/json")
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if p := problemOf(t, resp, body.Bytes(), http.StatusUnauthorized); p.Slug() != "token-invalid" {
			t.Errorf("Authorization %q: slug %q, want token-invalid", h, p.Slug())
		}
		if resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: no WWW-Authenticate", h)
		}
		// No token admitted: an anonymous refusal, counted apart from the chain.
		if evs := f.auditSince(seq); len(evs) != 0 || f.refusalHits("enroll.tpm.challenge") != hits+1 {
			t.Errorf("Authorization %q: audit = %+v, refusals %d -> %d", h, evs, hits, f.refusalHits("enroll.tpm.challenge"))
		}
	}
}

// TestTenantPolicyOverAPI: a super-admin creates a tenant over the admin
// API with a policy, and the pipeline enforces it: a method the tenant does
// not admit and a key type it does not admit are 403 tenant-policy with the
// token unspent and nothing recorded; its certificate lifetime applies at
// enrollment and at renewal; a key type withdrawn later refuses renewal.
// Bad policies are 400 and create nothing.
func TestTenantPolicyOverAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	boss := f.apiClient(f.superAdminCert("boss"))
	for _, bad := range []wire.TenantCreateRequest{
		{Name: "p1", Methods: []string{"carrier-pigeon"}},
		{Name: "p1", KeyTypes: []string{"dsa"}},
		{Name: "p1", CertLifetime: "1m"},
		{Name: "p1", CertLifetime: "banana"},
		{Name: "bad name"},
	} {
		_, err := boss.CreateTenant(ctx, &bad)
		wantStatus(t, err, http.StatusBadRequest, "")
	}
	if _, err := f.store.GetTenant(ctx, "p1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("a refused tenant exists: %v", err)
	}
	tn, err := boss.CreateTenant(ctx, &wire.TenantCreateRequest{Name: "plant", Methods: []string{"tpm"}, CertLifetime: "2h"})
	if err != nil || tn.CertLifetime != "2h0m0s" || len(tn.Methods) != 1 {
		t.Fatalf("create: %+v, %v", tn, err)
	}

	refused := func(tok, serial, slug string) {
		t.Helper()
		before, seq := f.counts(), f.lastSeq()
		resp, body := f.enroll(tok, f.csr(serial))
		if p := problemOf(t, resp, body, http.StatusForbidden); p.Slug() != slug {
			t.Errorf("slug %q, want %q (%s)", p.Slug(), slug, p.Detail)
		}
		if f.usesLeft(tok) != 1 || f.counts() != before {
			t.Errorf("refused enrollment spent the token or wrote rows")
		}
		denied := false
		for _, ev := range f.auditSince(seq) {
			denied = denied || ev.Result == registry.ResultDenied
		}
		if !denied {
			t.Error("refusal not audited")
		}
	}
	// Token enrollment into a TPM-only-by-method tenant.
	tok := f.mint(provision.TokenSpec{Tenant: "plant"})
	refused(tok, "SN-PLANT-1", wire.SlugTenantPolicy)

	// Tokens admitted again, RSA keys only: a P-256 key is refused.
	methods, keyTypes := []string{"token"}, []string{"rsa"}
	if _, err := boss.UpdateTenant(ctx, "plant", &wire.TenantPolicyRequest{Methods: &methods, KeyTypes: &keyTypes}); err != nil {
		t.Fatal(err)
	}
	refused(tok, "SN-PLANT-1", wire.SlugTenantPolicy)

	// Every key type again: it enrolls, with the tenant's lifetime.
	keyTypes = []string{}
	if _, err := boss.UpdateTenant(ctx, "plant", &wire.TenantPolicyRequest{KeyTypes: &keyTypes}); err != nil {
		t.Fatal(err)
	}
	key, _, csrPEM := f.keyAndCSR("SN-PLANT-1")
	resp, body := f.enroll(tok, csrPEM)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enroll: %d %s", resp.StatusCode, body)
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(body, &er); err != nil {
		t.Fatal(err)
	}
	leaf := parsePEMCerts(t, []byte(er.Certificate))[0]
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 2*time.Hour || life > 2*time.Hour+5*time.Minute {
		t.Errorf("enrolled lifetime %s, want 2h", life)
	}
	// Renewal keeps the tenant's lifetime.
	dev := f.newClient(ptr(deviceTLSCert(t, &er, key)))
	resp, body, err = f.do(dev, http.MethodPost, "/v1/renew", "", "application/json", strings.NewReader(`{}`))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("renew: %v %d %s", err, resp.StatusCode, body)
	}
	var rr wire.EnrollResponse
	if err := json.Unmarshal(body, &rr); err != nil {
		t.Fatal(err)
	}
	rleaf := parsePEMCerts(t, []byte(rr.Certificate))[0]
	if life := rleaf.NotAfter.Sub(rleaf.NotBefore); life < 2*time.Hour || life > 2*time.Hour+5*time.Minute {
		t.Errorf("renewed lifetime %s, want 2h", life)
	}
	// A key type withdrawn: the renewal of a P-256 key is refused.
	keyTypes = []string{"ed25519"}
	if _, err := boss.UpdateTenant(ctx, "plant", &wire.TenantPolicyRequest{KeyTypes: &keyTypes}); err != nil {
		t.Fatal(err)
	}
	dev = f.newClient(ptr(deviceTLSCert(t, &rr, key)))
	resp, body, err = f.do(dev, http.MethodPost, "/v1/renew", "", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if p := problemOf(t, resp, body, http.StatusForbidden); p.Slug() != wire.SlugTenantPolicy {
		t.Errorf("renewal slug %q, want %q", p.Slug(), wire.SlugTenantPolicy)
	}
	// A tenant admin may list its tenant but not change it.
	ta := f.apiClient(f.adminCert(f.ca, "default", "ta", registry.RoleAdmin, ""))
	_, err = ta.UpdateTenant(ctx, "default", &wire.TenantPolicyRequest{KeyTypes: &keyTypes})
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	_, err = ta.CreateTenant(ctx, &wire.TenantCreateRequest{Name: "mine"})
	wantStatus(t, err, http.StatusForbidden, "forbidden")
}
