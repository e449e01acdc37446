package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"devpki/api"
	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestPartitionCRLRoute: GET|HEAD /crl/p/<n> on the plain listener serves
// the partition CRL a certificate names, with /crl's cache headers and
// If-None-Match; it lists a revocation once acknowledged; a partition that
// is not one is a 404 problem saying so (on both listeners).
func TestPartitionCRLRoute(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	// A plain listener whose URL the certificates name.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	rev, err := provision.NewRevocation(provision.RevocationConfig{
		Store: f.store, CRLSigner: f.ca.CA, OCSP: f.ocsp, CRLURL: base + "/crl",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := api.NewPublic(api.Config{Root: f.ca.CA.Root, Chain: f.ca.Issuer.Chain(), Revocation: rev,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	iss, err := pki.NewIssuer(pki.IssuerOptions{CA: f.ca.CA, TrustDomain: "devpki.local", CRLURL: base + "/crl", CRLPartitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	is, err := iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: key.Public(), CommonName: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	cert := is.Certificate
	if err := f.store.RecordCertificate(ctx, provision.CertificateRecord(cert, registry.KindClient, registry.DefaultTenant, "", time.Now()), nil); err != nil {
		t.Fatal(err)
	}
	dp := cert.CRLDistributionPoints[0]
	if !strings.HasPrefix(dp, base+"/crl/p/") {
		t.Fatalf("CRL DP %s", dp)
	}
	get := func() (*x509.RevocationList, *http.Response) {
		t.Helper()
		resp, b := plainDo(t, http.MethodGet, dp, "", nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" {
			t.Fatalf("GET %s: %d %q %s", dp, resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
		rl, err := x509.ParseRevocationList(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := rl.CheckSignatureFrom(f.ca.CA.Intermediate); err != nil {
			t.Fatal(err)
		}
		if idp, err := pki.ParseIDP(rl); err != nil || idp == nil || idp.URI != dp {
			t.Fatalf("IDP %+v, %v; want %s", idp, err, dp)
		}
		requireCacheHeaders(t, "partition CRL", resp.Header, rl.ThisUpdate, rl.NextUpdate)
		return rl, resp
	}
	rl, resp := get()
	if crlEntry(rl, cert) != nil {
		t.Fatal("listed before its revocation")
	}
	req, _ := http.NewRequest(http.MethodGet, dp, nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	if r2, err := http.DefaultClient.Do(req); err != nil || r2.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %v, %v; want 304", r2, err)
	} else {
		r2.Body.Close()
	}
	if r, _ := plainDo(t, http.MethodHead, dp, "", nil); r.StatusCode != http.StatusOK {
		t.Errorf("HEAD %s: %d", dp, r.StatusCode)
	}
	admin := provision.Actor{Kind: provision.ActorAdmin, ID: "alice", TenantID: registry.DefaultTenant}
	if _, err := rev.RevokeCertificate(ctx, admin, cert.SerialNumber.Text(16), registry.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	if rl, _ := get(); crlEntry(rl, cert) == nil {
		t.Error("the partition CRL does not list the acknowledged revocation")
	}

	bad := []string{"0", "4097", "abc", "01", "-1", "1.5", "99999999999999999999"}
	for _, n := range bad {
		resp, b := plainDo(t, http.MethodGet, base+"/crl/p/"+n, "", nil)
		p := problemOf(t, resp, b, http.StatusNotFound)
		if p.Slug() != wire.SlugNotFound || !strings.Contains(p.Detail, "partition") {
			t.Errorf("/crl/p/%s: %+v", n, p)
		}
	}
	// The HTTPS listener serves the same route; this fixture's revocation
	// publishes no partitions, and says so.
	for _, n := range []string{"1", "abc"} {
		resp, b, err := f.do(f.client, http.MethodGet, "/crl/p/"+n, "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if p := problemOf(t, resp, b, http.StatusNotFound); !strings.Contains(p.Detail, "partition") {
			t.Errorf("https /crl/p/%s: %+v", n, p)
		}
	}
}
