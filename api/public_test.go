package api_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/api"
	"devpki/pkg/registry"
)

// publicServer serves api.NewPublic for f over plain HTTP on loopback.
func (f *fixture) publicServer(t *testing.T) string {
	t.Helper()
	h, err := api.NewPublic(api.Config{
		Root: f.ca.CA.Root, Chain: f.ca.Issuer.Chain(), Revocation: f.rev,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL, "http://") {
		t.Fatalf("public server URL %s", srv.URL)
	}
	return srv.URL
}

func plainDo(t *testing.T, method, u, ct string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// requireCacheHeaders checks the cache headers of a CRL or OCSP answer made
// at this and valid until next: a public max-age, no-transform, that ends
// (as does Expires) no later than next, and Last-Modified this.
func requireCacheHeaders(t *testing.T, what string, h http.Header, this, next time.Time) {
	t.Helper()
	cc := h.Get("Cache-Control")
	var maxAge = -1
	for _, d := range strings.Split(cc, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(d), "max-age="); ok {
			maxAge, _ = strconv.Atoi(v)
		}
	}
	if !strings.Contains(cc, "public") || !strings.Contains(cc, "no-transform") || maxAge < 1 ||
		time.Now().Add(time.Duration(maxAge)*time.Second).After(next.Add(time.Second)) {
		t.Errorf("%s: Cache-Control %q, nextUpdate %v", what, cc, next)
	}
	exp, err := http.ParseTime(h.Get("Expires"))
	if err != nil || exp.After(next) || exp.Before(time.Now().Add(-2*time.Second)) {
		t.Errorf("%s: Expires %q (%v), nextUpdate %v", what, h.Get("Expires"), err, next)
	}
	if lm, err := http.ParseTime(h.Get("Last-Modified")); err != nil || !lm.Equal(this.Truncate(time.Second)) {
		t.Errorf("%s: Last-Modified %q, thisUpdate %v", what, h.Get("Last-Modified"), this)
	}
	if h.Get("ETag") == "" {
		t.Errorf("%s: no ETag", what)
	}
}

// TestPublicListener: the plain-HTTP listener serves the CRL, OCSP (POST,
// and GET with a URL-encoded base64 request), the CA certificates (PEM, and
// the issuing CA as DER at /ca.crt), with cache headers bounded by
// nextUpdate; a revocation shows on it; every other route is 404 and an
// oversized OCSP request 413.
func TestPublicListener(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	base := f.publicServer(t)
	cert, _ := f.enrolled("SN-PUB-1")
	inter := f.ca.CA.Intermediate

	getCRL := func() *x509.RevocationList {
		t.Helper()
		resp, b := plainDo(t, http.MethodGet, base+"/crl", "", nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" {
			t.Fatalf("GET /crl: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		rl, err := x509.ParseRevocationList(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := rl.CheckSignatureFrom(inter); err != nil {
			t.Fatalf("CRL signature: %v", err)
		}
		requireCacheHeaders(t, "CRL", resp.Header, rl.ThisUpdate, rl.NextUpdate)
		return rl
	}
	if rl := getCRL(); crlEntry(rl, cert) != nil {
		t.Fatal("CRL lists a certificate before its revocation")
	}

	req, err := ocsp.CreateRequest(cert, inter, nil)
	if err != nil {
		t.Fatal(err)
	}
	askOCSP := func(method string) *ocsp.Response {
		t.Helper()
		var resp *http.Response
		var b []byte
		if method == http.MethodGet {
			// RFC 6960 appendix A.1: the URL encoding of the base64
			// encoding ('/', '+' and '=' percent-encoded).
			resp, b = plainDo(t, method, base+"/ocsp/"+url.QueryEscape(base64.StdEncoding.EncodeToString(req)), "", nil)
		} else {
			resp, b = plainDo(t, method, base+"/ocsp", "application/ocsp-request", req)
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/ocsp-response" {
			t.Fatalf("%s /ocsp: %d %q", method, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		r, err := ocsp.ParseResponseForCert(b, cert, inter)
		if err != nil {
			t.Fatalf("%s /ocsp: %v", method, err)
		}
		requireCacheHeaders(t, method+" OCSP", resp.Header, r.ThisUpdate, r.NextUpdate)
		if !strings.Contains(resp.Header.Get("Cache-Control"), "must-revalidate") {
			t.Errorf("%s OCSP: Cache-Control %q lacks must-revalidate (RFC 5019 §6.2)", method, resp.Header.Get("Cache-Control"))
		}
		return r
	}
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if r := askOCSP(m); r.Status != ocsp.Good {
			t.Errorf("%s OCSP before revocation: %d", m, r.Status)
		}
	}

	// The CA certificates.
	resp, b := plainDo(t, http.MethodGet, base+"/ca.crt", "", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-cert" || !bytes.Equal(b, inter.Raw) {
		t.Errorf("GET /ca.crt: %d %q, issuing CA: %v", resp.StatusCode, resp.Header.Get("Content-Type"), bytes.Equal(b, inter.Raw))
	}
	for path, want := range map[string]*x509.Certificate{"/v1/ca/roots": f.ca.CA.Root, "/v1/ca/chain": inter} {
		resp, b := plainDo(t, http.MethodGet, base+path, "", nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
			continue
		}
		if cs := parsePEMCerts(t, b); len(cs) != 1 || !cs[0].Equal(want) {
			t.Errorf("GET %s: %d certificates, not %s", path, len(cs), want.Subject)
		}
	}

	// A revocation (here through the admin API on the HTTPS listener)
	// shows on the plain listener at once.
	alice := f.adminCert(f.ca, registry.DefaultTenant, "alice", registry.RoleAdmin, "")
	if resp, b := f.revoke(&alice, certPath(cert), `{"reason":1}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, b)
	}
	if e := crlEntry(getCRL(), cert); e == nil || e.ReasonCode != 1 {
		t.Errorf("CRL after revocation: entry %+v", e)
	}
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if r := askOCSP(m); r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise {
			t.Errorf("%s OCSP after revocation: status %d reason %d", m, r.Status, r.RevocationReason)
		}
	}

	// Nothing else is served in the clear.
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/v1/enroll"}, {http.MethodPost, "/v1/enroll/tpm/challenge"}, {http.MethodPost, "/v1/renew"},
		{http.MethodGet, "/v1/admin/devices"}, {http.MethodPost, "/v1/admin/tokens"},
		{http.MethodPost, "/v1/admin/certificates/" + cert.SerialNumber.Text(16) + "/revoke"},
		{http.MethodGet, "/healthz"}, {http.MethodGet, "/readyz"}, {http.MethodGet, "/metrics"},
		{http.MethodGet, "/.well-known/est/cacerts"}, {http.MethodGet, "/"},
	} {
		resp, b := plainDo(t, tc.method, base+tc.path, "application/json", []byte("{}"))
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s on the plain listener: %d %s, want 404", tc.method, tc.path, resp.StatusCode, b)
		}
	}
	// Bodies are bounded: an OCSP request of 9 KiB is refused unread.
	resp, b = plainDo(t, http.MethodPost, base+"/ocsp", "application/ocsp-request", make([]byte, api.PublicMaxBodyBytes+1024))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized OCSP request: %d %s, want 413", resp.StatusCode, b)
	}
	// Malformed OCSP requests get malformedRequest, never cached.
	resp, b = plainDo(t, http.MethodGet, base+"/ocsp/not!!base64*", "", nil)
	if !bytes.Equal(b, ocsp.MalformedRequestErrorResponse) || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("malformed GET: %x, Cache-Control %q", b, resp.Header.Get("Cache-Control"))
	}
}

// TestNewPublicRequires: the public listener needs the CA certificates and
// the revocation service.
func TestNewPublicRequires(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for name, cfg := range map[string]api.Config{
		"no revocation": {Root: f.ca.CA.Root, Chain: f.ca.Issuer.Chain()},
		"no chain":      {Root: f.ca.CA.Root, Revocation: f.rev},
		"no root":       {Chain: f.ca.Issuer.Chain(), Revocation: f.rev},
	} {
		if _, err := api.NewPublic(cfg); err == nil {
			t.Errorf("%s: NewPublic succeeded", name)
		}
	}
}
