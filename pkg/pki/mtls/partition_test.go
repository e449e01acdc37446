package mtls

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"devpki/pkg/pki"
)

// partitionCA serves a full CRL at /crl and partition CRLs at /crl/p/<n>,
// each signed by the env's intermediate.
type partitionCA struct {
	e       *env
	srv     *httptest.Server
	mu      sync.Mutex
	crls    map[string][]byte
	fetches map[string]int
	number  int64
}

func newPartitionCA(e *env) *partitionCA {
	p := &partitionCA{e: e, crls: map[string][]byte{}, fetches: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		der, ok := p.crls[r.URL.Path]
		p.fetches[r.URL.Path]++
		p.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(der)
	}))
	e.t.Cleanup(p.srv.Close)
	p.publish("/crl", nil)
	return p
}

// publish signs a CRL for path listing is (if any), with an IDP naming
// idpURL (none when empty).
func (p *partitionCA) publish(path string, idp *pki.IDP, revoked ...*pki.Issued) {
	p.e.t.Helper()
	p.number++
	now := p.e.clock.Now()
	t := &pki.CRLTemplate{Number: p.number, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour), IDP: idp}
	for _, is := range revoked {
		t.Revoked = append(t.Revoked, pki.RevokedCert{Serial: is.Certificate.SerialNumber, RevokedAt: now, Reason: 1})
	}
	der, err := p.e.ca.CA.SignCRL(context.Background(), t)
	if err != nil {
		p.e.t.Fatal(err)
	}
	p.mu.Lock()
	p.crls[path] = der
	p.mu.Unlock()
}

func (p *partitionCA) fetched(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fetches[path]
}

// TestPartitionCRL: with CRLPartitions, a client whose certificate names
// partition CRL /crl/p/<n> is checked against that CRL (fetched on first
// sight), not the full one: listed there, it is refused although the full
// CRL does not list it. A partition CRL whose IDP names another URL, or a
// full CRL carrying an IDP, is refused and the CRL held stays.
func TestPartitionCRL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pca := newPartitionCA(e)
	crlURL := pca.srv.URL + "/crl"
	iss, err := pki.NewIssuer(pki.IssuerOptions{CA: e.ca.CA, TrustDomain: "devpki.local", CRLURL: crlURL, CRLPartitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	is, err := iss.IssueDevice(context.Background(), &pki.DeviceRequest{
		Identity: pki.Identity{DeviceID: "dev-1", Tenant: "acme", Serial: "SN-P1"}, PublicKey: key.Public(),
	})
	if err != nil {
		t.Fatal(err)
	}
	dp := is.Certificate.CRLDistributionPoints[0]
	path := strings.TrimPrefix(dp, pca.srv.URL)
	if !strings.HasPrefix(path, "/crl/p/") {
		t.Fatalf("CRL DP %s", dp)
	}
	pca.publish(path, &pki.IDP{URI: dp, OnlyContainsUserCerts: true})
	dc, dk := e.writePair("device", is, key)

	server, srv := e.server(func(o *Options) { o.CRLURL, o.CRLPartitions = crlURL, true })
	client := e.source(dc, dk, nil)
	if _, err := dial(srv.addr, client.ClientConfig()); err != nil {
		t.Fatalf("device refused: %v", err)
	}
	if r := result(t, srv); r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if pca.fetched(path) != 1 {
		t.Errorf("partition CRL fetched %d times on first sight, want 1", pca.fetched(path))
	}

	// Revoked in its partition only.
	pca.publish(path, &pki.IDP{URI: dp, OnlyContainsUserCerts: true}, is)
	if err := server.RefreshCRL(context.Background()); err != nil {
		t.Fatalf("RefreshCRL: %v", err)
	}
	dial(srv.addr, client.ClientConfig())
	if r := result(t, srv); !errors.Is(r.err, ErrRevoked) {
		t.Fatalf("server accepted a device its partition CRL lists: %v", r.err)
	}

	// A CRL at the partition URL whose IDP names another partition is
	// refused; the one held (listing the device) stays.
	other := pki.CRLPartitionURL(crlURL, 1+pki.CRLPartition(is.Certificate.SerialNumber, 4)%4)
	pca.publish(path, &pki.IDP{URI: other, OnlyContainsUserCerts: true})
	if err := server.RefreshCRL(context.Background()); !errors.Is(err, ErrBadCRL) {
		t.Errorf("RefreshCRL with a foreign IDP = %v, want ErrBadCRL", err)
	}
	dial(srv.addr, client.ClientConfig())
	if r := result(t, srv); !errors.Is(r.err, ErrRevoked) {
		t.Errorf("after a refused partition CRL: %v, want still revoked", r.err)
	}
	// A partition CRL served as the full CRL is refused too.
	pca.publish("/crl", &pki.IDP{URI: dp})
	if err := server.RefreshCRL(context.Background()); !errors.Is(err, ErrBadCRL) {
		t.Errorf("RefreshCRL with an IDP on the full CRL = %v, want ErrBadCRL", err)
	}
}

// TestPartitionCRLFullPath: with CRLPartitions, a leaf that names no
// partition (issued before partitioning) is checked against the full CRL
// as before; CRLPartitions without CRLURL is refused.
func TestPartitionCRLFullPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.server(func(o *Options) { o.CRLPartitions = true })
	dc, dk, is := e.issueDevice("device", "SN-F1")
	client := e.source(dc, dk, nil)
	if _, err := dial(srv.addr, client.ClientConfig()); err != nil {
		t.Fatalf("device refused: %v", err)
	}
	if r := result(t, srv); r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	e.publishCRL(is.Certificate.SerialNumber)
	e.clock.Add(2 * time.Hour) // the held CRL is stale: the handshake fetches
	e.publishCRL(is.Certificate.SerialNumber)
	dial(srv.addr, client.ClientConfig())
	if r := result(t, srv); !errors.Is(r.err, ErrRevoked) {
		t.Errorf("a revoked leaf without a partition: %v, want ErrRevoked", r.err)
	}
	if _, err := New(Options{RootFile: e.rootFile(), CertFile: dc, KeyFile: dk, KeyPassword: keyPassword, CRLPartitions: true}); err == nil {
		t.Error("New accepted CRLPartitions without CRLURL")
	}
}
