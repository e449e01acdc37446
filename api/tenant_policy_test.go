package api_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

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
