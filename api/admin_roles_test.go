package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"devpki/api/wire"
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

// matrixTargets are the objects one cell of the tenant matrix acts on, all
// in one tenant: a device with its certificate, two held claims, an admin.
type matrixTargets struct {
	tenant, deviceID, serial, held, release, admin string
}

// matrixObjects makes fresh matrixTargets in tenant (name) with id.
func (f *fixture) matrixObjects(tenantID, tenant, id string) matrixTargets {
	f.t.Helper()
	er, _ := f.mustEnroll(f.mint(provision.TokenSpec{Tenant: tenant}), "SN-M-"+id)
	b, _ := pem.Decode([]byte(er.Certificate))
	leaf, _ := x509.ParseCertificate(b.Bytes)
	ek := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	victim := "victim-" + id
	if err := f.store.PutAdmin(context.Background(), &registry.Admin{Name: victim, TenantID: tenantID, Role: registry.RoleOperator},
		&registry.AuditEvent{TenantID: tenantID, Actor: "system:test", Action: "admin.put", Target: victim, Result: registry.ResultOK}); err != nil {
		f.t.Fatal(err)
	}
	return matrixTargets{
		tenant: tenant, deviceID: er.DeviceID, serial: leaf.SerialNumber.Text(16),
		held:    f.holdClaim(tenantID, "q-"+id, "SN-M-CLONE-"+id, ek("held-"+id)).ID,
		release: f.holdClaim(tenantID, "r-"+id, "SN-M-RMA-"+id, ek("release-"+id)).ID,
		admin:   victim,
	}
}

// snapshot is every piece of state an admin route may change, as text: a
// refused request must leave it as it was.
func (f *fixture) snapshot() string {
	f.t.Helper()
	ctx := context.Background()
	var b strings.Builder
	devs, err := f.store.ListDevices(ctx, registry.DeviceFilter{Limit: 1000})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, d := range devs {
		fmt.Fprintf(&b, "dev %s %s %t;", d.ID, d.Status, d.RekeyRequired)
	}
	certs, _ := f.store.ListCertificates(ctx, registry.CertFilter{Limit: 1000})
	for _, c := range certs {
		fmt.Fprintf(&b, "cert %s %s;", c.Serial, c.Status)
	}
	qs, _ := f.store.ListQuarantine(ctx, registry.QuarantineFilter{Limit: 1000})
	for _, q := range qs {
		fmt.Fprintf(&b, "q %s %s;", q.ID, q.Status)
	}
	admins, _ := f.store.ListAdmins(ctx)
	for _, a := range admins {
		fmt.Fprintf(&b, "admin %s %s %s %t;", a.Name, a.TenantID, a.Status, a.Super)
	}
	tenants, _ := f.store.ListTenants(ctx)
	for _, t := range tenants {
		fmt.Fprintf(&b, "tenant %+v;", *t)
	}
	roots, _ := f.store.ListTPMRoots(ctx)
	fmt.Fprintf(&b, "roots %d; %+v", len(roots), f.counts())
	return b.String()
}

// TestAdminRouteTenantMatrix checks every admin route against the roles
// (admin, operator, auditor), a super-admin and a tenant admin, on objects
// of the caller's own tenant and of another: a role that may not do the
// action at all is 403; a tenant admin acting on another tenant's object
// (or naming another tenant) is 404, as for an unknown one; a super-admin
// acts on every tenant. Every refusal changes nothing and leaves a denied
// audit event. Each cell acts on objects of its own.
func TestAdminRouteTenantMatrix(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	other := &registry.Tenant{ID: "t-other", Name: "other"}
	if err := f.store.CreateTenant(ctx, other, nil); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr := strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})), "\n", `\n`)
	rootPEM := strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ca.CA.Root.Raw})), "\n", `\n`)
	makerPEM := strings.ReplaceAll(string(pkitest.NewManufacturer(t, "Matrix").PEM()), "\n", `\n`)

	type route struct {
		method string
		path   func(m matrixTargets) string
		body   func(m matrixTargets, id string) string
		roles  []registry.Role
		// super: only a super-admin may do it (a tenant admin gets 403).
		super bool
		// scoped: the route names an object or a tenant, so a tenant admin
		// gets 404 for another tenant's; false: it acts in the caller's
		// own tenant whatever the cell (no "other" case).
		scoped bool
	}
	all := []registry.Role{registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor}
	admins := []registry.Role{registry.RoleAdmin}
	p := func(format string, field func(m matrixTargets) string) func(m matrixTargets) string {
		return func(m matrixTargets) string { return fmt.Sprintf(format, field(m)) }
	}
	tenantQ := func(m matrixTargets) string { return m.tenant }
	dev := func(m matrixTargets) string { return m.deviceID }
	ser := func(m matrixTargets) string { return m.serial }
	fixed := func(s string) func(matrixTargets) string { return func(matrixTargets) string { return s } }
	body := func(s string) func(matrixTargets, string) string {
		return func(matrixTargets, string) string { return s }
	}
	routes := []route{
		{"GET", p("/v1/admin/devices?tenant=%s", tenantQ), nil, all, false, true},
		{"GET", p("/v1/admin/devices?status=quarantined&tenant=%s", tenantQ), nil, all, false, true},
		{"GET", p("/v1/admin/devices/%s", dev), nil, all, false, true},
		{"GET", p("/v1/admin/certificates?tenant=%s", tenantQ), nil, all, false, true},
		{"GET", p("/v1/admin/certificates/%s", ser), nil, all, false, true},
		{"GET", fixed("/v1/admin/audit"), nil, all, false, false},
		{"GET", fixed("/v1/admin/tpm/roots"), nil, all, false, false},
		{"GET", fixed("/v1/admin/admins"), nil, all, false, false},
		{"GET", fixed("/v1/admin/tenants"), nil, all, false, false},
		{"POST", fixed("/v1/admin/tokens"), func(m matrixTargets, _ string) string { return `{"tenant":"` + m.tenant + `"}` },
			[]registry.Role{registry.RoleAdmin, registry.RoleOperator}, false, true},
		{"POST", fixed("/v1/admin/preregistrations"), body(`{"serial":"SN-PRE","ek_pub":"AAAA"}`),
			[]registry.Role{registry.RoleAdmin, registry.RoleOperator}, false, false},
		{"POST", fixed("/v1/admin/certificates"), body(`{"csr":"` + csr + `","usage":"server","dns_names":["x.local"]}`), admins, false, false},
		{"POST", p("/v1/admin/devices/%s/rotate", dev), body(`{}`), admins, false, true},
		{"POST", p("/v1/admin/certificates/%s/revoke", ser), body(`{"reason":"superseded"}`), admins, false, true},
		{"POST", p("/v1/admin/devices/%s/revoke", dev), body(`{"reason":"keyCompromise"}`), admins, false, true},
		{"POST", p("/v1/admin/devices/%s/reinstate", dev), body(`{}`), admins, false, true},
		{"POST", p("/v1/admin/quarantine/%s/dismiss", func(m matrixTargets) string { return m.held }), body(`{}`), admins, false, true},
		{"POST", p("/v1/admin/quarantine/%s/release", func(m matrixTargets) string { return m.release }), body(`{"reason":"superseded"}`), admins, false, true},
		{"POST", fixed("/v1/admin/tpm/roots"), body(`{"pem":"` + rootPEM + `"}`), admins, true, false},
		{"GET", p("/v1/admin/idevid/roots?tenant=%s", tenantQ), nil, all, false, true},
		{"POST", fixed("/v1/admin/idevid/roots"), func(m matrixTargets, _ string) string {
			return `{"pem":"` + makerPEM + `","tenant":"` + m.tenant + `"}`
		}, admins, false, true},
		{"POST", fixed("/v1/admin/admins"), func(m matrixTargets, id string) string {
			return `{"name":"new-` + id + `","role":"operator","tenant":"` + m.tenant + `","csr":"` + csr + `"}`
		}, admins, false, true},
		{"POST", p("/v1/admin/admins/%s/revoke", func(m matrixTargets) string { return m.admin }), body(`{}`), admins, false, true},
		{"POST", fixed("/v1/admin/renew"), body(`{"csr":"` + csr + `"}`), all, false, false},
		{"POST", fixed("/v1/admin/tenants"), func(_ matrixTargets, id string) string { return `{"name":"t-` + id + `"}` }, admins, true, false},
		{"POST", p("/v1/admin/tenants/%s", tenantQ), body(`{"require_tpm":false}`), admins, true, true},
	}

	type caller struct {
		name  string
		role  registry.Role
		super bool
		hc    *http.Client
	}
	callers := []caller{{name: "super", role: registry.RoleAdmin, super: true, hc: f.newClient(ptr(f.superAdminCert("m-super")))}}
	for _, r := range all {
		callers = append(callers, caller{name: "tenant-" + string(r), role: r,
			hc: f.newClient(ptr(f.adminCert(f.ca, "default", "m-"+string(r), r, "")))})
	}

	n := 0
	for _, rt := range routes {
		for _, cl := range callers {
			for _, scope := range []string{"own", "other"} {
				if scope == "other" && !rt.scoped {
					continue
				}
				n++
				id := fmt.Sprintf("%d", n)
				tenantID, tenantName := f.tenant.ID, "default"
				if scope == "other" {
					tenantID, tenantName = other.ID, other.Name
				}
				m := f.matrixObjects(tenantID, tenantName, id)
				path := rt.path(m)
				var b string
				if rt.body != nil {
					b = rt.body(m, id)
				}
				want := 0
				switch {
				case !slices.Contains(rt.roles, cl.role), rt.super && !cl.super:
					want = http.StatusForbidden
				case scope == "other" && !cl.super:
					want = http.StatusNotFound
				}
				seq, before := f.lastSeq(), f.snapshot()
				ct := ""
				if rt.method == "POST" {
					ct = "application/json"
				}
				resp, rb, err := f.do(cl.hc, rt.method, path, "", ct, strings.NewReader(b))
				cell := fmt.Sprintf("%s %s as %s on %s", rt.method, path, cl.name, scope)
				if err != nil {
					t.Errorf("%s: %v", cell, err)
					continue
				}
				if want == 0 {
					if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden ||
						resp.StatusCode == http.StatusNotFound || resp.StatusCode >= 500 {
						t.Errorf("%s: %d %s, want it allowed", cell, resp.StatusCode, rb)
					}
					continue
				}
				if resp.StatusCode != want {
					t.Errorf("%s: %d %s, want %d", cell, resp.StatusCode, rb, want)
					continue
				}
				if after := f.snapshot(); after != before {
					t.Errorf("%s: refused (%d) but state changed:\n%s\n->\n%s", cell, want, before, after)
				}
				denied := false
				for _, ev := range f.auditSince(seq) {
					denied = denied || ev.Result == registry.ResultDenied
				}
				if !denied {
					t.Errorf("%s: refused (%d) without a denied audit event", cell, want)
				}
			}
		}
	}

	// The lists a tenant admin may read hold its own tenant only.
	ta := f.apiClient(f.adminCert(f.ca, "default", "m-lister", registry.RoleAuditor, ""))
	sup := f.apiClient(f.superAdminCert("m-super-lister"))
	ts, err := ta.ListTenants(ctx)
	if err != nil || len(ts.Tenants) != 1 || ts.Tenants[0].Name != "default" {
		t.Errorf("tenant admin's tenants: %+v, %v", ts, err)
	}
	if ts, err := sup.ListTenants(ctx); err != nil || len(ts.Tenants) < 2 {
		t.Errorf("super-admin's tenants: %+v, %v", ts, err)
	}
	al, err := ta.ListAdmins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range al.Admins {
		if a.Super || a.Tenant != "default" {
			t.Errorf("tenant admin sees admin %+v", a)
		}
	}
	evs, err := ta.ListAudit(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs.Events {
		if ev.Tenant == other.ID {
			t.Errorf("tenant admin sees another tenant's audit event %+v", ev)
		}
	}
	// A tenant admin may not make a super-admin.
	taAdmin := f.apiClient(f.adminCert(f.ca, "default", "m-ta", registry.RoleAdmin, ""))
	seq := f.lastSeq()
	_, err = taAdmin.CreateAdmin(ctx, &wire.AdminCreateRequest{Name: "would-be-super", Role: "admin", CSR: strings.ReplaceAll(csr, `\n`, "\n")})
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	denied := false
	for _, ev := range f.auditSince(seq) {
		denied = denied || (ev.Result == registry.ResultDenied && ev.Action == string(provision.ActionAdminCreate))
	}
	if _, gerr := f.store.GetAdmin(ctx, "would-be-super"); !denied || gerr == nil {
		t.Errorf("super-admin creation by a tenant admin: audited %t, admin exists %t", denied, gerr == nil)
	}
}
