package api_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/crypto/ocsp"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// enrolled enrolls serial and returns its parsed certificate and device id.
func (f *fixture) enrolled(serial string) (*x509.Certificate, string) {
	f.t.Helper()
	er, _ := f.mustEnroll(f.mint(provision.TokenSpec{}), serial)
	return parsePEMCerts(f.t, []byte(er.Certificate))[0], er.DeviceID
}

// revoke POSTs body to an admin revoke path with cert.
func (f *fixture) revoke(cert *tls.Certificate, path, body string) (*http.Response, []byte) {
	f.t.Helper()
	resp, b, err := f.do(f.newClient(cert), http.MethodPost, path, "", "application/json", strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, b
}

func certPath(c *x509.Certificate) string {
	return "/v1/admin/certificates/" + c.SerialNumber.Text(16) + "/revoke"
}

// getCRL fetches /crl, checks it is a CRL signed by the intermediate and
// returns it with the response.
func (f *fixture) getCRL(t *testing.T) (*x509.RevocationList, *http.Response) {
	t.Helper()
	resp, b, err := f.do(f.client, http.MethodGet, "/crl", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("GET /crl: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rl, err := x509.ParseRevocationList(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(f.ca.CA.Intermediate); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	return rl, resp
}

func crlEntry(rl *x509.RevocationList, c *x509.Certificate) *x509.RevocationListEntry {
	for i, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return &rl.RevokedCertificateEntries[i]
		}
	}
	return nil
}

// ocspGET and ocspPOST ask about c and return the parsed, verified answer.
func (f *fixture) ocspGET(t *testing.T, c *x509.Certificate) (*ocsp.Response, *http.Response) {
	t.Helper()
	req, err := ocsp.CreateRequest(c, f.ca.CA.Intermediate, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, b, err := f.do(f.client, http.MethodGet, "/ocsp/"+url.PathEscape(base64.StdEncoding.EncodeToString(req)), "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.parseOCSP(t, resp, b, c), resp
}

func (f *fixture) ocspPOST(t *testing.T, c *x509.Certificate) *ocsp.Response {
	t.Helper()
	req, err := ocsp.CreateRequest(c, f.ca.CA.Intermediate, &ocsp.RequestOptions{Hash: 0})
	if err != nil {
		t.Fatal(err)
	}
	resp, b, err := f.do(f.client, http.MethodPost, "/ocsp", "", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	return f.parseOCSP(t, resp, b, c)
}

func (f *fixture) parseOCSP(t *testing.T, resp *http.Response, b []byte, c *x509.Certificate) *ocsp.Response {
	t.Helper()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/ocsp-response" {
		t.Fatalf("OCSP: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	r, err := ocsp.ParseResponseForCert(b, c, f.ca.CA.Intermediate)
	if err != nil {
		t.Fatalf("ParseResponseForCert: %v", err)
	}
	rc := r.Certificate
	if rc == nil || len(rc.ExtKeyUsage) != 1 || rc.ExtKeyUsage[0] != x509.ExtKeyUsageOCSPSigning {
		t.Fatalf("responder certificate missing or without OCSPSigning: %+v", rc)
	}
	var nocheck bool
	for _, e := range rc.Extensions {
		nocheck = nocheck || e.Id.Equal(pki.OIDOCSPNoCheck)
	}
	if !nocheck || rc.CheckSignatureFrom(f.ca.CA.Intermediate) != nil {
		t.Fatalf("responder certificate: nocheck %v, signed by the intermediate: %v", nocheck, rc.CheckSignatureFrom(f.ca.CA.Intermediate))
	}
	return r
}

// TestRevokeCertificateEndToEnd: an admin revokes a device certificate; the
// CRL and OCSP (GET and POST) show it before the call returns; a second
// call is a 200 no-op with no audit event.
func TestRevokeCertificateEndToEnd(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.adminCert(f.ca, registry.DefaultTenant, "alice", registry.RoleAdmin, "")
	revoked, _ := f.enrolled("SN-REV-1")
	kept, _ := f.enrolled("SN-REV-2")

	rl0, resp0 := f.getCRL(t)
	if len(rl0.RevokedCertificateEntries) != 0 || resp0.Header.Get("ETag") == "" ||
		!strings.Contains(resp0.Header.Get("Cache-Control"), "max-age=") {
		t.Fatalf("first CRL: %d entries, headers %v", len(rl0.RevokedCertificateEntries), resp0.Header)
	}
	if r, _ := f.ocspGET(t, revoked); r.Status != ocsp.Good {
		t.Fatalf("OCSP before revocation: %d", r.Status)
	}

	seq := f.lastSeq()
	resp, b := f.revoke(&alice, certPath(revoked), `{"reason":"keyCompromise"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, b)
	}
	var rr wire.RevokeResponse
	if err := json.Unmarshal(b, &rr); err != nil {
		t.Fatal(err)
	}
	if rr.AlreadyRevoked || rr.Serial != revoked.SerialNumber.Text(16) || len(rr.Certificates) != 1 ||
		rr.Certificates[0].Reason != "keyCompromise" || rr.Certificates[0].ReasonCode != 1 || rr.CRLNumber <= rl0.Number.Int64() {
		t.Fatalf("revoke response %+v", rr)
	}
	evs := f.auditSince(seq)
	if len(evs) != 1 || evs[0].Action != "cert.revoke" || evs[0].Actor != "admin:alice" || evs[0].Result != registry.ResultOK {
		t.Fatalf("audit after revoke: %+v", evs)
	}

	rl, resp := f.getCRL(t)
	if rl.Number.Int64() != rr.CRLNumber {
		t.Errorf("CRL number %v, revoke said %d", rl.Number, rr.CRLNumber)
	}
	if e := crlEntry(rl, revoked); e == nil || e.ReasonCode != 1 {
		t.Errorf("CRL entry for the revoked certificate: %+v", e)
	}
	if crlEntry(rl, kept) != nil {
		t.Error("CRL lists the other certificate")
	}
	if resp.Header.Get("ETag") == resp0.Header.Get("ETag") {
		t.Error("ETag unchanged by a new CRL")
	}
	// If-None-Match with the current tag: 304, no body.
	req, _ := http.NewRequest(http.MethodGet, f.url+"/crl", nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	r304, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r304.Body.Close()
	if r304.StatusCode != http.StatusNotModified || r304.Header.Get("ETag") != resp.Header.Get("ETag") {
		t.Errorf("If-None-Match: %d, ETag %q", r304.StatusCode, r304.Header.Get("ETag"))
	}

	for name, r := range map[string]*ocsp.Response{"GET": func() *ocsp.Response { r, _ := f.ocspGET(t, revoked); return r }(), "POST": f.ocspPOST(t, revoked)} {
		if r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise || r.RevokedAt.IsZero() {
			t.Errorf("OCSP %s after revocation: status %d reason %d at %v", name, r.Status, r.RevocationReason, r.RevokedAt)
		}
	}
	if r := f.ocspPOST(t, kept); r.Status != ocsp.Good {
		t.Errorf("OCSP for the other certificate: %d", r.Status)
	}

	// Again, with another reason: 200, already revoked, nothing written.
	seq = f.lastSeq()
	resp, b = f.revoke(&alice, certPath(revoked), `{"reason":4}`)
	if err := json.Unmarshal(b, &rr); err != nil || resp.StatusCode != http.StatusOK || !rr.AlreadyRevoked ||
		rr.Certificates[0].Reason != "keyCompromise" {
		t.Fatalf("second revoke: %d %s", resp.StatusCode, b)
	}
	if evs := f.auditSince(seq); len(evs) != 0 {
		t.Errorf("second revoke wrote audit events %+v", evs)
	}
}

// TestRevokeDeviceAPI revokes a device by id; its certificate shows up
// revoked and the device is marked revoked.
func TestRevokeDeviceAPI(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.adminCert(f.ca, registry.DefaultTenant, "alice", registry.RoleAdmin, "")
	cert, id := f.enrolled("SN-DEV-REV")
	resp, b := f.revoke(&alice, "/v1/admin/devices/"+id+"/revoke", `{"reason":"cessationOfOperation"}`)
	var rr wire.RevokeResponse
	if err := json.Unmarshal(b, &rr); err != nil || resp.StatusCode != http.StatusOK || rr.DeviceID != id ||
		len(rr.Certificates) != 1 || rr.Certificates[0].Serial != cert.SerialNumber.Text(16) || rr.Certificates[0].DeviceID != id {
		t.Fatalf("revoke device: %d %s", resp.StatusCode, b)
	}
	if d := f.device("SN-DEV-REV"); d == nil || d.Status != registry.DeviceRevoked {
		t.Errorf("device after revoke: %+v", d)
	}
	rl, _ := f.getCRL(t)
	if e := crlEntry(rl, cert); e == nil || e.ReasonCode != registry.ReasonCessationOfOperation {
		t.Errorf("CRL entry %+v", e)
	}
	if r, _ := f.ocspGET(t, cert); r.Status != ocsp.Revoked {
		t.Errorf("OCSP %d", r.Status)
	}
	resp, b = f.revoke(&alice, "/v1/admin/devices/"+id+"/revoke", ``)
	if err := json.Unmarshal(b, &rr); err != nil || resp.StatusCode != http.StatusOK || !rr.AlreadyRevoked {
		t.Errorf("second device revoke: %d %s", resp.StatusCode, b)
	}
}

// TestRevokeRefusals: roles, bad reasons, unknown targets. Each refusal is
// a problem, changes nothing and is audited as denied.
func TestRevokeRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.adminCert(f.ca, registry.DefaultTenant, "alice", registry.RoleAdmin, "")
	bob := f.adminCert(f.ca, registry.DefaultTenant, "bob", registry.RoleOperator, "")
	carol := f.adminCert(f.ca, registry.DefaultTenant, "carol", registry.RoleAuditor, "")
	mallory := f.adminCert(pkitest.NewCA(t), registry.DefaultTenant, "mallory", registry.RoleAdmin, "")
	er, devKey := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-REFUSE")
	device, err := tls.X509KeyPair([]byte(er.Certificate+strings.Join(er.Chain, "")), keyPEM(t, devKey))
	if err != nil {
		t.Fatal(err)
	}
	target := parsePEMCerts(t, []byte(er.Certificate))[0]
	devPath := "/v1/admin/devices/" + er.DeviceID + "/revoke"

	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		path   string
		body   string
		status int
		slug   string
		detail string
	}{
		{"no certificate", nil, certPath(target), `{}`, 401, "unauthorized", ""},
		{"device certificate", &device, certPath(target), `{}`, 403, "forbidden", ""},
		{"operator", &bob, certPath(target), `{}`, 403, "forbidden", ""},
		{"auditor", &carol, devPath, `{}`, 403, "forbidden", ""},
		{"reason 7", &alice, certPath(target), `{"reason":7}`, 400, "bad-reason", "keyCompromise"},
		{"reason name", &alice, devPath, `{"reason":"stolen"}`, 400, "bad-reason", "cessationOfOperation"},
		{"reason 11", &alice, devPath, `{"reason":"11"}`, 400, "bad-reason", "aACompromise"},
		{"unknown serial", &alice, "/v1/admin/certificates/abcdef01/revoke", `{}`, 404, "not-found", ""},
		{"unknown device", &alice, "/v1/admin/devices/nope/revoke", `{}`, 404, "not-found", ""},
		{"unknown field", &alice, certPath(target), `{"why":"x"}`, 400, "bad-request", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, hits := f.lastSeq(), f.refusalHits("admin.denied")
			resp, b := f.revoke(tc.cert, tc.path, tc.body)
			p := problemOf(t, resp, b, tc.status)
			if p.Slug() != tc.slug || !strings.Contains(p.Detail, tc.detail) {
				t.Errorf("problem %+v, want slug %s mentioning %q", p, tc.slug, tc.detail)
			}
			evs := f.auditSince(seq)
			if tc.cert == nil { // anonymous: counted in the refusal log
				if n := f.refusalHits("admin.denied") - hits; len(evs) != 0 || n != 1 {
					t.Errorf("audit: %+v and %d refusals, want one refusal counted", evs, n)
				}
				return
			}
			if len(evs) != 1 || evs[0].Result != registry.ResultDenied {
				t.Errorf("audit: %+v, want one denied event", evs)
			}
		})
	}
	// A certificate from another CA is no credential: 401, audited.
	seq, hits := f.lastSeq(), f.refusalHits("admin.denied")
	if resp, _, err := f.do(f.newClient(&mallory), http.MethodPost, certPath(target), "", "application/json", strings.NewReader("{}")); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("other CA's admin certificate: %v %v, want 401", resp, err)
	}
	if evs, n := f.auditSince(seq), f.refusalHits("admin.denied")-hits; len(evs) != 0 || n != 1 {
		t.Errorf("other CA's certificate audited as %+v and %d refusals, want one refusal counted", evs, n)
	}
	if c, err := f.store.GetCertificate(t.Context(), target.SerialNumber.Text(16)); err != nil || c.Status != registry.CertActive {
		t.Errorf("certificate after refusals: %+v, %v", c, err)
	}
	if d := f.device("SN-REFUSE"); d.Status != registry.DeviceActive {
		t.Errorf("device after refusals: %s", d.Status)
	}
}

// TestOCSPBadRequests: malformed GET and POST bodies get malformedRequest;
// a serial the registry never recorded gets unknown.
func TestOCSPBadRequests(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tc := range []struct {
		name, method, path, ct string
		body                   []byte
	}{
		{"GET not base64", http.MethodGet, "/ocsp/not!!base64*", "", nil},
		{"GET empty", http.MethodGet, "/ocsp/", "", nil},
		{"GET garbage DER", http.MethodGet, "/ocsp/" + base64.StdEncoding.EncodeToString([]byte("garbage")), "", nil},
		{"POST garbage", http.MethodPost, "/ocsp", "application/ocsp-request", []byte{0x30, 0x01, 0xff}},
		{"POST empty", http.MethodPost, "/ocsp", "application/ocsp-request", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b, err := f.do(f.client, tc.method, tc.path, "", tc.ct, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/ocsp-response" ||
				!bytes.Equal(b, ocsp.MalformedRequestErrorResponse) {
				t.Errorf("%d %q %x, want a malformedRequest OCSP response", resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
			if _, err := ocsp.ParseResponse(b, nil); err == nil || !strings.Contains(err.Error(), "malformed") {
				t.Errorf("ParseResponse: %v, want malformed", err)
			}
		})
	}
	resp, b, err := f.do(f.client, http.MethodPost, "/ocsp", "", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	problemOf(t, resp, b, http.StatusUnsupportedMediaType)

	key, _, _ := f.keyAndCSR("SN-STRAY")
	stray := f.ca.IssueDevice(t, pki.Identity{DeviceID: "stray", Tenant: "default", Serial: "SN-STRAY"}, key).Certificate
	if r := f.ocspPOST(t, stray); r.Status != ocsp.Unknown {
		t.Errorf("unrecorded certificate: %d, want unknown", r.Status)
	}
	good, _ := f.enrolled("SN-GOOD")
	r, hr := f.ocspGET(t, good)
	if r.Status != ocsp.Good || !r.NextUpdate.After(r.ThisUpdate) || !strings.Contains(hr.Header.Get("Cache-Control"), "max-age=") {
		t.Errorf("good: status %d, %v..%v, Cache-Control %q", r.Status, r.ThisUpdate, r.NextUpdate, hr.Header.Get("Cache-Control"))
	}
}
