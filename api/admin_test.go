package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

const tokensPath = "/v1/admin/tokens"

// TestAdminTokensAuth: POST /v1/admin/tokens admits only a registered admin
// certificate of this CA with role admin or operator; every refusal in the
// handler is a problem, creates no token and writes a denied audit event.
func TestAdminTokensAuth(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()

	alice := f.adminCert(f.ca, registry.DefaultTenant, "alice", registry.RoleAdmin, "")
	bob := f.adminCert(f.ca, registry.DefaultTenant, "bob", registry.RoleOperator, "")
	carol := f.adminCert(f.ca, registry.DefaultTenant, "carol", registry.RoleAuditor, "")
	// dave's certificate is recorded but dave is no admin.
	dave := f.adminCert(f.ca, registry.DefaultTenant, "dave", "", "")
	// erin's certificate names tenant "other"; erin is an admin of default.
	erin := f.adminCert(f.ca, "other", "erin", registry.RoleAdmin, "")
	// mallory is an admin, but her certificate comes from another CA.
	other := pkitest.NewCA(t)
	mallory := f.adminCert(other, registry.DefaultTenant, "mallory", registry.RoleAdmin, "")

	// A device certificate from this CA, as its TLS client identity.
	er, devKey := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-ADMIN-DEV")
	device, err := tls.X509KeyPair([]byte(er.Certificate+strings.Join(er.Chain, "")), keyPEM(t, devKey))
	if err != nil {
		t.Fatal(err)
	}

	post := func(t *testing.T, cert *tls.Certificate, req wire.TokenCreateRequest) (*http.Response, []byte, error) {
		t.Helper()
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		return f.do(f.newClient(cert), http.MethodPost, tokensPath, "", "application/json", bytes.NewReader(b))
	}

	t.Run("allowed", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			cert *tls.Certificate
			req  wire.TokenCreateRequest
		}{
			{"admin", &alice, wire.TokenCreateRequest{}},
			{"operator, bound multi-use", &bob, wire.TokenCreateRequest{Serial: "SN-MINTED-B", TTL: "2h", Uses: 3}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				resp, b, err := post(t, tt.cert, tt.req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusCreated {
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
				var tr wire.TokenCreateResponse
				if err := json.Unmarshal(b, &tr); err != nil {
					t.Fatal(err)
				}
				wantUses := max(tt.req.Uses, 1)
				if !strings.HasPrefix(tr.Token, provision.TokenPrefix) || tr.ID == "" || tr.Tenant != registry.DefaultTenant ||
					tr.Serial != tt.req.Serial || tr.Uses != wantUses {
					t.Errorf("response %+v", tr)
				}
				ttl := 24 * time.Hour
				if tt.req.TTL != "" {
					ttl, _ = time.ParseDuration(tt.req.TTL)
				}
				if d := time.Until(tr.ExpiresAt); d > ttl || d < ttl-time.Minute {
					t.Errorf("expires_at %s, want about now+%s", tr.ExpiresAt, ttl)
				}
				stored, err := f.store.GetToken(ctx, provision.HashToken(tr.Token))
				if err != nil || stored.ID != tr.ID || stored.UsesLeft != wantUses || stored.Serial != tt.req.Serial {
					t.Fatalf("stored token %+v, %v", stored, err)
				}
				// The token works.
				serial := tt.req.Serial
				if serial == "" {
					serial = "SN-MINTED-" + tt.name
					serial = strings.NewReplacer(" ", "-", ",", "").Replace(serial)
				}
				f.mustEnroll(tr.Token, serial)
				if n := f.usesLeft(tr.Token); n != wantUses-1 {
					t.Errorf("uses left %d after one enrollment, want %d", n, wantUses-1)
				}
			})
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			cert   *tls.Certificate
			status int
			slug   string
			actor  string
		}{
			{"no client certificate", nil, http.StatusUnauthorized, "unauthorized", "anonymous"},
			{"device certificate", &device, http.StatusForbidden, "forbidden", "cert:" + device.Leaf.SerialNumber.Text(16)},
			{"auditor role", &carol, http.StatusForbidden, "forbidden", "admin:carol"},
			{"admin certificate of no admin", &dave, http.StatusForbidden, "forbidden", "admin:dave"},
			{"certificate tenant is not the admin's", &erin, http.StatusForbidden, "forbidden", "admin:erin"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				seq, before := f.lastSeq(), f.counts()
				resp, b, err := post(t, tt.cert, wire.TokenCreateRequest{})
				if err != nil {
					t.Fatal(err)
				}
				if p := problemOf(t, resp, b, tt.status); p.Slug() != tt.slug {
					t.Errorf("slug %q, want %q", p.Slug(), tt.slug)
				}
				if after := f.counts(); after != before {
					t.Errorf("rows changed: %+v -> %+v", before, after)
				}
				var found bool
				for _, r := range f.refusals() { // anonymous: the refusal log
					found = found || tt.actor == "anonymous" && r.Action == string(provision.ActionAdminDenied) &&
						r.Reason == "unauthenticated" && r.SourceAddr == "127.0.0.1" && strings.HasPrefix(r.Sample, "POST "+tokensPath)
				}
				for _, ev := range f.auditSince(seq) {
					if ev.Result == registry.ResultDenied && ev.Action == string(provision.ActionAdminDenied) && ev.Target == "POST "+tokensPath && ev.Actor == tt.actor && ev.SourceAddr == "127.0.0.1" {
						found = true
					}
				}
				if !found {
					t.Errorf("no denied audit event for actor %q", tt.actor)
				}
			})
		}
	})

	t.Run("revoked admin certificate", func(t *testing.T) {
		heidi := f.adminCert(f.ca, registry.DefaultTenant, "heidi", registry.RoleAdmin, registry.CertRevoked)
		seq := f.lastSeq()
		resp, b, err := post(t, &heidi, wire.TokenCreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if p := problemOf(t, resp, b, http.StatusForbidden); p.Slug() != "forbidden" || !strings.Contains(p.Detail, "revoked") {
			t.Errorf("problem %+v, want forbidden for a revoked certificate", p)
		}
		if !hasDenied(f.auditSince(seq), "admin:heidi") {
			t.Error("no denied audit event")
		}
	})

	t.Run("client certificate from another CA", func(t *testing.T) {
		before := f.counts()
		resp, b, err := post(t, &mallory, wire.TokenCreateRequest{})
		// Client certificates are verified by the server, not the
		// handshake: another CA's is no credential (401).
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("another CA's certificate: %v %v %s, want 401", resp, err, b)
		}
		if after := f.counts(); after != before {
			t.Errorf("rows changed: %+v -> %+v", before, after)
		}
	})

	t.Run("bad arguments", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			body   string
			status int
			slug   string
		}{
			{"unparsable ttl", `{"ttl":"banana"}`, http.StatusBadRequest, "bad-request"},
			{"negative ttl", `{"ttl":"-1h"}`, http.StatusBadRequest, "bad-request"},
			{"zero ttl", `{"ttl":"0s"}`, http.StatusBadRequest, "bad-request"},
			{"ttl over a year", `{"ttl":"9000h"}`, http.StatusBadRequest, "bad-request"},
			{"negative uses", `{"uses":-1}`, http.StatusBadRequest, "bad-request"},
			{"invalid serial", `{"serial":"has space"}`, http.StatusBadRequest, "bad-serial"},
			{"unknown field", `{"ttl":"1h","role":"admin"}`, http.StatusBadRequest, "bad-request"},
			{"another tenant", `{"tenant":"other"}`, http.StatusNotFound, "not-found"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				seq, before := f.lastSeq(), f.counts()
				resp, b, err := f.do(f.newClient(&alice), http.MethodPost, tokensPath, "", "application/json", strings.NewReader(tt.body))
				if err != nil {
					t.Fatal(err)
				}
				if p := problemOf(t, resp, b, tt.status); p.Slug() != tt.slug {
					t.Errorf("slug %q, want %q", p.Slug(), tt.slug)
				}
				if after := f.counts(); after != before {
					t.Errorf("rows changed: %+v -> %+v", before, after)
				}
				// Refused in api (the body) or in provision (the values):
				// audited either way, exactly once.
				var denied int
				for _, ev := range f.auditSince(seq) {
					if ev.Result == registry.ResultDenied && ev.Actor == "admin:alice" {
						denied++
					}
				}
				if denied != 1 {
					t.Errorf("%d denied audit events by admin:alice, want 1", denied)
				}
			})
		}
	})
}

func hasDenied(evs []*registry.AuditEvent, actor string) bool {
	for _, ev := range evs {
		if ev.Result == registry.ResultDenied && ev.Actor == actor {
			return true
		}
	}
	return false
}
