package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptrace"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// adminCSR makes a P-256 key and a CSR for it.
func adminCSR(t testing.TB) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// adminTLS is an AdminCertificate reply with its key, as a TLS identity.
func adminTLS(t testing.TB, out *wire.AdminCertificate, key *ecdsa.PrivateKey) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	certs := parsePEMCerts(t, []byte(out.Certificate))
	c := tls.Certificate{PrivateKey: key, Leaf: certs[0], Certificate: [][]byte{certs[0].Raw}}
	for _, p := range out.Chain {
		for _, ch := range parsePEMCerts(t, []byte(p)) {
			c.Certificate = append(c.Certificate, ch.Raw)
		}
	}
	return c, certs[0]
}

// getReused GETs path with hc and reports the status and whether the
// request went over a connection used before.
func (f *fixture) getReused(t *testing.T, hc *http.Client, path string) (int, bool) {
	t.Helper()
	var reused bool
	req, _ := http.NewRequest(http.MethodGet, f.url+path, nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
	}))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, reused
}

// TestAdminLifecycle: a super-admin adds an operator (certificate with the
// admin lifetime, its admin URI), the operator works within its role and
// renews its certificate over mTLS; revoking it revokes both certificates
// (the CRL lists them) and its very next request — on the connection it
// already holds, and on a new one — is refused. Bad requests change
// nothing.
func TestAdminLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	boss := f.apiClient(f.superAdminCert("boss"))

	key, csr := adminCSR(t)
	out, err := boss.CreateAdmin(ctx, &wire.AdminCreateRequest{Name: "ops", Role: "operator", Tenant: "default", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	if out.Admin.Name != "ops" || out.Admin.Role != "operator" || out.Admin.Tenant != "default" || out.Admin.Super || out.Admin.Status != "active" {
		t.Errorf("admin %+v", out.Admin)
	}
	pair, leaf := adminTLS(t, out, key)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != pki.AdminURI(pkitest.TrustDomain, "default", "ops").String() {
		t.Errorf("URIs %v", leaf.URIs)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < provision.DefaultAdminCertLifetime || life > provision.DefaultAdminCertLifetime+time.Hour {
		t.Errorf("lifetime %s, want %s", life, provision.DefaultAdminCertLifetime)
	}
	opsHC := f.newClient(&pair)
	ops := f.apiClient(pair)
	if _, err := ops.CreateToken(ctx, &wire.TokenCreateRequest{}); err != nil {
		t.Errorf("operator mints: %v", err)
	}
	_, csr2 := adminCSR(t)
	_, err = ops.CreateAdmin(ctx, &wire.AdminCreateRequest{Name: "ops2", Role: "operator", Tenant: "default", CSR: csr2})
	wantStatus(t, err, http.StatusForbidden, "forbidden")

	// Renewal over mTLS: a new key, the same admin.
	key3, csr3 := adminCSR(t)
	ren, err := ops.RenewAdmin(ctx, &wire.AdminRenewRequest{CSR: csr3})
	if err != nil || ren.Admin.Name != "ops" {
		t.Fatalf("renew: %+v, %v", ren, err)
	}
	renPair, renLeaf := adminTLS(t, ren, key3)
	renHC := f.newClient(&renPair)
	if st, _ := f.getReused(t, renHC, "/v1/admin/devices"); st != http.StatusOK {
		t.Fatalf("renewed certificate: %d", st)
	}
	if st, _ := f.getReused(t, opsHC, "/v1/admin/devices"); st != http.StatusOK {
		t.Fatalf("before revocation: %d", st)
	}

	// Bad requests: nothing changes.
	before := f.snapshot()
	for _, tc := range []struct {
		req    wire.AdminCreateRequest
		status int
	}{
		{wire.AdminCreateRequest{Name: "ops", Role: "operator", Tenant: "default", CSR: csr2}, http.StatusConflict},
		{wire.AdminCreateRequest{Name: "x", Role: "root", Tenant: "default", CSR: csr2}, http.StatusBadRequest},
		{wire.AdminCreateRequest{Name: "x", Role: "auditor", Tenant: "default", CSR: "not a CSR"}, http.StatusBadRequest},
		{wire.AdminCreateRequest{Name: "a/b", Role: "auditor", Tenant: "default", CSR: csr2}, http.StatusBadRequest},
		{wire.AdminCreateRequest{Name: "x", Role: "auditor", Tenant: "nope", CSR: csr2}, http.StatusNotFound},
	} {
		_, err := boss.CreateAdmin(ctx, &tc.req)
		wantStatus(t, err, tc.status, "")
	}
	_, err = boss.RevokeAdmin(ctx, "boss")
	wantStatus(t, err, http.StatusBadRequest, "bad-request")
	_, err = boss.RevokeAdmin(ctx, "nobody")
	wantStatus(t, err, http.StatusNotFound, "not-found")
	if after := f.snapshot(); after != before {
		t.Errorf("bad requests changed state:\n%s\n->\n%s", before, after)
	}

	seq := f.lastSeq()
	rev, err := boss.RevokeAdmin(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if rev.Admin.Status != "revoked" || len(rev.Revoked) != 2 {
		t.Fatalf("revoke: %+v", rev)
	}
	// Its next request, on the connection it holds, is refused.
	st, reused := f.getReused(t, opsHC, "/v1/admin/devices")
	if st != http.StatusForbidden || !reused {
		t.Errorf("after revocation on the same connection: %d (reused %t), want 403 on a reused connection", st, reused)
	}
	for _, hc := range []*http.Client{renHC, f.newClient(&pair)} {
		if st, _ := f.getReused(t, hc, "/v1/admin/devices"); st != http.StatusForbidden {
			t.Errorf("after revocation: %d, want 403", st)
		}
	}
	var revoked, denied bool
	for _, ev := range f.auditSince(seq) {
		revoked = revoked || (ev.Action == string(provision.ActionAdminRevoke) && ev.Target == "ops" && ev.Result == registry.ResultOK)
		denied = denied || (ev.Actor == "admin:ops" && ev.Result == registry.ResultDenied)
	}
	if !revoked || !denied {
		t.Errorf("audit: revoke %t, refusal %t", revoked, denied)
	}
	// Both certificates are on the CRL.
	resp, body, err := f.do(f.client, http.MethodGet, "/crl", "", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("crl: %v %d", err, resp.StatusCode)
	}
	crl, err := x509.ParseRevocationList(body)
	if err != nil {
		t.Fatal(err)
	}
	onCRL := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		onCRL[e.SerialNumber.Text(16)] = true
	}
	if !onCRL[leaf.SerialNumber.Text(16)] || !onCRL[renLeaf.SerialNumber.Text(16)] {
		t.Errorf("CRL lacks the admin's certificates")
	}
	l, err := boss.ListAdmins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range l.Admins {
		if a.Name == "ops" && (a.Status != "revoked" || a.RevokedAt == nil) {
			t.Errorf("listed %+v", a)
		}
	}
}
