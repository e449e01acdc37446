package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/api"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// BenchmarkOCSPHTTP measures OCSP answers per second over HTTPS with
// keep-alive (POST /ocsp, the response cached), 8 clients in parallel.
func BenchmarkOCSPHTTP(b *testing.B) {
	ctx := context.Background()
	tca := pkitest.NewCA(b)
	store, err := sqlstore.Open(ctx, sqlstore.Options{DSN: filepath.Join(b.TempDir(), "r.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	prov, err := provision.New(provision.Config{Store: store, Issuer: tca.Issuer, TrustDomain: pkitest.TrustDomain})
	if err != nil {
		b.Fatal(err)
	}
	responder, err := pki.NewOCSPResponder(ctx, pki.OCSPResponderOptions{CA: tca.CA})
	if err != nil {
		b.Fatal(err)
	}
	rev, err := provision.NewRevocation(provision.RevocationConfig{Store: store, CRLSigner: tca.CA, OCSP: responder, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	adm, err := provision.NewAdmin(provision.AdminConfig{Store: store, TrustDomain: pkitest.TrustDomain, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	handler, err := api.New(api.Config{Store: store, Provision: prov, Admin: adm,
		Attestors: provision.Attestors{Token: provision.TokenAttestor{Store: store}},
		Root:      tca.CA.Root, Chain: tca.Issuer.Chain(), TrustDomain: pkitest.TrustDomain, Log: log, Revocation: rev})
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvCert, err := tca.Issuer.IssueServer(ctx, &pki.ServerRequest{PublicKey: key.Public(), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{tlsCert(srvCert, key)}}
	srv.StartTLS()
	defer srv.Close()

	devKey, _, _ := tca.DeviceKeyAndCSR(b, "SN-BENCH", "02:00:00:00:00:01")
	dev := tca.IssueDevice(b, pki.Identity{DeviceID: "d", Tenant: "default", Serial: "SN-BENCH"}, devKey).Certificate
	if err := store.RecordCertificate(ctx, provision.CertificateRecord(dev, registry.KindDevice, "", "", time.Now()), nil); err != nil {
		b.Fatal(err)
	}
	req, err := ocsp.CreateRequest(dev, tca.CA.Intermediate, nil)
	if err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tca.Roots()}, MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	b.SetParallelism(4) // 4 x GOMAXPROCS clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := hc.Post(srv.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
			if err != nil {
				b.Error(err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || len(body) < 100 {
				b.Errorf("%d, %d bytes", resp.StatusCode, len(body))
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "responses/s")
}
