package api_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"slices"
	"strings"
	"testing"

	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestAdminRouteRoles checks every admin route against every kind of caller:
// no certificate (401), a device certificate (403), a certificate from
// another CA (refused at the handshake), and the three roles — each allowed
// only what its role may do (auditors read, operators also mint tokens,
// admins everything). Every refusal is audited.
func TestAdminRouteRoles(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	er, devKey := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-ROLES")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr := strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})), "\n", `\n`)
	b, _ := pem.Decode([]byte(er.Certificate))
	leaf, _ := x509.ParseCertificate(b.Bytes)
	serial := leaf.SerialNumber.Text(16)
	held := f.holdClaim(f.tenant.ID, "q-roles", "SN-ROLES-CLONE", strings.Repeat("cd", 32))
	release := f.holdClaim(f.tenant.ID, "q-roles-release", "SN-ROLES-RMA", strings.Repeat("ce", 32))

	type route struct {
		method, path, body string
		roles              []registry.Role
	}
	all := []registry.Role{registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor}
	routes := []route{
		{"GET", "/v1/admin/devices", "", all},
		{"GET", "/v1/admin/devices/" + er.DeviceID, "", all},
		{"GET", "/v1/admin/certificates", "", all},
		{"GET", "/v1/admin/certificates/" + serial, "", all},
		{"GET", "/v1/admin/audit", "", all},
		{"GET", "/v1/admin/audit/export", "", all},
		{"GET", "/v1/admin/audit/refusals", "", all},
		{"GET", "/v1/admin/devices?status=quarantined", "", all},
		{"POST", "/v1/admin/tokens", `{}`, []registry.Role{registry.RoleAdmin, registry.RoleOperator}},
		{"POST", "/v1/admin/certificates", `{"csr":"` + csr + `","usage":"server","dns_names":["x.local"]}`, []registry.Role{registry.RoleAdmin}},
		{"POST", "/v1/admin/devices/" + er.DeviceID + "/rotate", `{}`, []registry.Role{registry.RoleAdmin}},
		{"POST", "/v1/admin/certificates/" + serial + "/revoke", `{"reason":"superseded"}`, []registry.Role{registry.RoleAdmin}},
		{"POST", "/v1/admin/devices/" + er.DeviceID + "/revoke", `{"reason":"keyCompromise"}`, []registry.Role{registry.RoleAdmin}},
		{"POST", "/v1/admin/devices/" + er.DeviceID + "/reinstate", `{}`, []registry.Role{registry.RoleAdmin}},
		{"POST", "/v1/admin/quarantine/" + held.ID + "/dismiss", `{}`, []registry.Role{registry.RoleAdmin}},
		{"POST", "/v1/admin/quarantine/" + release.ID + "/release", `{"reason":"superseded"}`, []registry.Role{registry.RoleAdmin}},
	}
	callers := map[string]*http.Client{
		"none":   f.newClient(nil),
		"device": f.newClient(ptr(deviceTLSCert(t, er, devKey))),
	}
	for _, r := range all {
		callers[string(r)] = f.newClient(ptr(f.adminCert(f.ca, "default", "who-"+string(r), r, "")))
	}
	other := pkitest.NewCA(t)
	callers["other-ca"] = f.newClient(ptr(f.adminCert(other, "default", "who-admin", "", "")))

	for _, rt := range routes {
		for name, hc := range callers {
			seq, hits := f.lastSeq(), f.refusalHits("")
			var body *bytes.Reader
			if rt.body != "" {
				body = bytes.NewReader([]byte(rt.body))
			} else {
				body = bytes.NewReader(nil)
			}
			ct := ""
			if rt.method == "POST" {
				ct = "application/json"
			}
			resp, rb, err := f.do(hc, rt.method, rt.path, "", ct, body)
			if err != nil {
				t.Errorf("%s %s as %s: %v", rt.method, rt.path, name, err)
				continue
			}
			allowed := slices.Contains(rt.roles, registry.Role(name))
			want := 0
			switch {
			case name == "none" || name == "other-ca":
				// Another CA's certificate passes the handshake (client
				// certificates are verified by the server, so a leaf alone
				// or an IDevID can reach its door) and is refused as no
				// credential at all.
				want = http.StatusUnauthorized
			case !allowed:
				want = http.StatusForbidden
			}
			if want != 0 && resp.StatusCode != want {
				t.Errorf("%s %s as %s: %d %s, want %d", rt.method, rt.path, name, resp.StatusCode, rb, want)
			}
			if want == 0 && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden || resp.StatusCode >= 500) {
				t.Errorf("%s %s as %s: %d %s, want it allowed", rt.method, rt.path, name, resp.StatusCode, rb)
			}
			if want != 0 {
				// Anonymous callers (no certificate, another CA's) are
				// counted in the refusal log; the others chained.
				denied := f.refusalHits("") > hits
				for _, ev := range f.auditSince(seq) {
					denied = denied || ev.Result == registry.ResultDenied
				}
				if !denied {
					t.Errorf("%s %s as %s: refused without a denied audit event", rt.method, rt.path, name)
				}
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestAdminReadsAreAudited: a successful read leaves an audit event too.
func TestAdminReadsAreAudited(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	hc := f.newClient(ptr(f.adminCert(f.ca, "default", "reader", registry.RoleAuditor, "")))
	seq := f.lastSeq()
	resp, b, err := f.do(hc, "GET", "/v1/admin/devices?limit=5", "", "", bytes.NewReader(nil))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("list: %v %s", err, b)
	}
	found := false
	for _, ev := range f.auditSince(seq) {
		found = found || (ev.Actor == "admin:reader" && ev.Result == registry.ResultOK && strings.Contains(ev.Target, "/v1/admin/devices"))
	}
	if !found {
		t.Fatal("no audit event for a successful read")
	}
}
