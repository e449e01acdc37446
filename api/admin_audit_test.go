package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// tenantAdmin records an admin of tenant tn with role and returns its
// client certificate.
func (f *fixture) tenantAdmin(tn *registry.Tenant, name string, role registry.Role) tls.Certificate {
	f.t.Helper()
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	iss, err := f.ca.Issuer.IssueClient(ctx, &pki.ClientRequest{PublicKey: key.Public(), CommonName: name,
		URIs: []*url.URL{pki.AdminURI(pkitest.TrustDomain, tn.Name, name)}})
	if err != nil {
		f.t.Fatal(err)
	}
	rec := provision.CertificateRecord(iss.Certificate, registry.KindAdmin, tn.ID, "", time.Now())
	ev := func() *registry.AuditEvent {
		return &registry.AuditEvent{TenantID: tn.ID, Actor: "system:test", Action: "admin.add", Target: name, Result: registry.ResultOK}
	}
	if err := f.store.RecordCertificate(ctx, rec, ev()); err != nil {
		f.t.Fatal(err)
	}
	if err := f.store.PutAdmin(ctx, &registry.Admin{Name: name, TenantID: tn.ID, Role: role}, ev()); err != nil {
		f.t.Fatal(err)
	}
	return tlsCert(iss, key)
}

// TestAuditExportRoute: an auditor exports its tenant's chain, a tenant
// admin its own tenant's only (another tenant is 404); both verify offline
// with the CA root; anonymous refusals are listed, counted, apart.
func TestAuditExportRoute(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	plant := &registry.Tenant{ID: "t-plant-7", Name: "plant-7"}
	if err := f.store.CreateTenant(ctx, plant, &registry.AuditEvent{Actor: "system:test", Action: "tenant.create",
		Target: plant.ID, Result: registry.ResultOK}); err != nil {
		t.Fatal(err)
	}
	f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-AUDIT-1")
	for range 3 {
		f.enroll(provision.TokenPrefix+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", f.csr("SN-NOPE"))
	}
	auditor := f.newClient(ptr(f.adminCert(f.ca, "default", "carl", registry.RoleAuditor, "")))
	pat := f.newClient(ptr(f.tenantAdmin(plant, "pat", registry.RoleAdmin)))

	export := func(c *http.Client, query string, status int) (*registry.ExportReport, []byte) {
		t.Helper()
		resp, b, err := f.do(c, http.MethodGet, "/v1/admin/audit/export"+query, "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusOK {
			problemOf(t, resp, b, status)
			return nil, b
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("export%s: %d %s %s", query, resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
		rep, err := registry.VerifyExport(bytes.NewReader(b), f.ca.CA.Root)
		if err != nil {
			t.Fatalf("export%s does not verify: %v", query, err)
		}
		return rep, b
	}
	rep, b := export(auditor, "", http.StatusOK)
	if rep.Scope != registry.ScopeTenant || rep.Tenant != registry.DefaultTenant || rep.Anchor != "genesis" || rep.Events < 3 {
		t.Errorf("auditor's export: %+v", rep)
	}
	if bytes.Contains(b, []byte(plant.ID+`"`)) && bytes.Contains(b, []byte(`"tenant_id":"`+plant.ID)) {
		t.Error("the default tenant's export holds plant-7's events")
	}
	rep, b = export(pat, "", http.StatusOK)
	if rep.Tenant != plant.ID || rep.Events != 2 { // pat's certificate and admin record
		t.Errorf("tenant admin's export: %+v\n%s", rep, b)
	}
	export(pat, "?tenant=default", http.StatusNotFound)
	export(pat, "?tenant=no-such", http.StatusNotFound)
	seq := f.lastSeq()
	export(pat, "?since=yesterday", http.StatusBadRequest)
	if evs := f.auditSince(seq); len(evs) != 1 || evs[0].Actor != "admin:pat" || evs[0].Result != registry.ResultDenied {
		t.Errorf("bad since audited as %+v, want one denial by admin:pat", evs)
	}
	since := time.Now()
	time.Sleep(2 * time.Millisecond)
	if err := f.store.AppendAudit(ctx, &registry.AuditEvent{TenantID: plant.ID, Actor: "system:test", Action: "later",
		Result: registry.ResultOK}); err != nil {
		t.Fatal(err)
	}
	rep, _ = export(pat, "?since="+url.QueryEscape(since.Format(time.RFC3339Nano)), http.StatusOK)
	if rep.Anchor != "first event" || rep.Events != 1 {
		t.Errorf("since export: %+v, want one event anchored at its recorded previous hash", rep)
	}

	// The refusal log: the three bad tokens, one row.
	var l wire.RefusalList
	resp, body, err := f.do(auditor, http.MethodGet, "/v1/admin/audit/refusals", "", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("refusals: %v %v %s", resp, err, body)
	}
	if err := jsonDecode(body, &l); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range l.Refusals {
		found = found || r.Action == "enroll" && r.Reason == "token-invalid" && r.Count == 3 && r.SourceAddr == "127.0.0.1"
	}
	if !found {
		t.Errorf("refusals %+v, want the 3 bad tokens in one row", l.Refusals)
	}
	resp, body, _ = f.do(pat, http.MethodGet, "/v1/admin/audit/refusals", "", "", nil)
	if err := jsonDecode(body, &l); err != nil || resp.StatusCode != http.StatusOK || len(l.Refusals) != 0 {
		t.Errorf("plant-7 admin sees refusals of the default tenant: %s", body)
	}
}

// TestDoorRefusalsAudited: what a door refuses before provision sees the
// request is audited too: a malformed renewal body of an enrolled device
// (a certificate this CA issued: chained), an oversized body and a
// malformed enrollment body (anonymous: counted).
func TestDoorRefusalsAudited(t *testing.T) {
	f := newFixture(t)
	er, key := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-DOOR-1")
	dev := f.newClient(ptr(deviceTLSCert(t, er, key)))
	seq := f.lastSeq()
	resp, b, err := f.do(dev, http.MethodPost, "/v1/renew", "", "application/json", strings.NewReader("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	problemOf(t, resp, b, http.StatusBadRequest)
	evs := f.auditSince(seq)
	if len(evs) != 1 || evs[0].Action != "renew" || evs[0].Result != registry.ResultDenied || !strings.HasPrefix(evs[0].Actor, "cert:") {
		t.Errorf("malformed renewal audited as %+v, want one chained renew denial by the certificate", evs)
	}

	hits := f.refusalHits("")
	resp, b, _ = f.do(f.newClient(nil), http.MethodPost, "/v1/enroll", "", "application/json", strings.NewReader("{not json"))
	problemOf(t, resp, b, http.StatusUnauthorized) // no token: provision refuses first
	resp, b, _ = f.do(f.newClient(nil), http.MethodPost, "/v1/enroll", provision.TokenPrefix+"x", "text/plain", strings.NewReader("{}"))
	problemOf(t, resp, b, http.StatusUnsupportedMediaType)
	resp, b, _ = f.do(f.newClient(nil), http.MethodPost, "/v1/enroll/tpm/challenge", "", "application/json",
		bytes.NewReader(make([]byte, 70<<10)))
	problemOf(t, resp, b, http.StatusRequestEntityTooLarge)
	if n := f.refusalHits("") - hits; n != 3 {
		t.Errorf("%d anonymous refusals counted, want 3", n)
	}
	var classes []string
	for _, r := range f.refusals() {
		classes = append(classes, r.Action+"/"+r.Reason)
	}
	for _, want := range []string{"enroll/token-invalid", "enroll/bad-request", "request/payload-too-large"} {
		if !strings.Contains(strings.Join(classes, " "), want) {
			t.Errorf("refusal classes %v, want %s", classes, want)
		}
	}
	if f.lastSeq() != seq+1 {
		t.Errorf("anonymous refusals appended chained events")
	}
}

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }
