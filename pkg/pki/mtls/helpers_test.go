package mtls

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

var keyPassword = []byte("key-password")

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is one test CA with a CRL endpoint and a directory of files.
type env struct {
	t       testing.TB
	ca      *pkitest.TestCA
	dir     string
	clock   *clock
	crl     atomic.Pointer[[]byte] // served at crlSrv.URL
	crlSrv  *httptest.Server
	fetches atomic.Int64
	number  int64
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvCA(t, pkitest.NewCA(t))
}

// newEnvCA is newEnv sharing ca (minting a CA is slow under -race).
func newEnvCA(t testing.TB, ca *pkitest.TestCA) *env {
	t.Helper()
	e := &env{t: t, ca: ca, dir: t.TempDir(), clock: newClock()}
	e.crlSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.fetches.Add(1)
		b := e.crl.Load()
		if b == nil {
			http.Error(w, "no CRL", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(*b)
	}))
	t.Cleanup(e.crlSrv.Close)
	e.publishCRL()
	return e
}

// makeCRL returns a DER CRL signed by the intermediate (or by signer/issuer
// when given) listing serials, valid from the clock's now for an hour.
func (e *env) makeCRL(number int64, issuer *x509.Certificate, signer crypto.Signer, serials ...*big.Int) []byte {
	e.t.Helper()
	now := e.clock.Now()
	return e.makeCRLFull(number, issuer, signer, now.Add(-time.Minute), now.Add(time.Hour), serials...)
}

// makeCRLAt is makeCRL by the intermediate with explicit times.
func (e *env) makeCRLAt(number int64, thisUpdate, nextUpdate time.Time, serials ...*big.Int) []byte {
	e.t.Helper()
	return e.makeCRLFull(number, nil, nil, thisUpdate, nextUpdate, serials...)
}

func (e *env) makeCRLFull(number int64, issuer *x509.Certificate, signer crypto.Signer, thisUpdate, nextUpdate time.Time, serials ...*big.Int) []byte {
	e.t.Helper()
	if issuer == nil {
		issuer, signer = e.ca.CA.Intermediate, e.ca.CA.Signer
	}
	now := e.clock.Now()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(number),
		ThisUpdate: thisUpdate,
		NextUpdate: nextUpdate,
	}
	for _, sn := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: sn, RevocationTime: now.Add(-time.Second), ReasonCode: 1})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, signer)
	if err != nil {
		e.t.Fatalf("create CRL: %v", err)
	}
	return der
}

// publishCRL serves a new CRL (next number) listing serials.
func (e *env) publishCRL(serials ...*big.Int) {
	e.number++
	der := e.makeCRL(e.number, nil, nil, serials...)
	e.crl.Store(&der)
}

func (e *env) serveRaw(der []byte) { e.crl.Store(&der) }

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writePair writes cert (with the chain) and its encrypted key under name
// in e.dir atomically (temp file + rename), returning the paths.
func (e *env) writePair(name string, is *pki.Issued, key crypto.Signer) (certPath, keyPath string) {
	e.t.Helper()
	var certPEM []byte
	for _, c := range append([]*x509.Certificate{is.Certificate}, is.Chain...) {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	blk, err := pemutil.Serialize(key, pemutil.WithPassword(keyPassword), pemutil.WithPKCS8(true))
	if err != nil {
		e.t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(e.dir, name+".crt"), filepath.Join(e.dir, name+".key")
	writeAtomic(e.t, keyPath, pem.EncodeToMemory(blk))
	writeAtomic(e.t, certPath, certPEM)
	return certPath, keyPath
}

func writeAtomic(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func (e *env) rootFile() string {
	p := filepath.Join(e.dir, "root.crt")
	if _, err := os.Stat(p); err != nil {
		writeAtomic(e.t, p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.ca.CA.Root.Raw}))
	}
	return p
}

func (e *env) issueServer(name string) (certPath, keyPath string, is *pki.Issued) {
	e.t.Helper()
	key := newKey(e.t)
	is, err := e.ca.Issuer.IssueServer(context.Background(), &pki.ServerRequest{
		PublicKey: key.Public(), CommonName: name, DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1).To4()},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	certPath, keyPath = e.writePair(name, is, key)
	return certPath, keyPath, is
}

func (e *env) issueDevice(name, serial string) (certPath, keyPath string, is *pki.Issued) {
	e.t.Helper()
	key := newKey(e.t)
	is = e.ca.IssueDevice(e.t, pki.Identity{DeviceID: "dev-" + serial, Tenant: "acme", Serial: serial, MACs: []string{"020000000001"}}, key)
	certPath, keyPath = e.writePair(name, is, key)
	return certPath, keyPath, is
}

func (e *env) issueAdmin(name, admin string) (certPath, keyPath string, is *pki.Issued) {
	e.t.Helper()
	key := newKey(e.t)
	is, err := e.ca.Issuer.IssueClient(context.Background(), &pki.ClientRequest{
		PublicKey: key.Public(), CommonName: admin, Organization: "acme",
		URIs: []*url.URL{pki.AdminURI(pkitest.TrustDomain, "acme", admin)},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	certPath, keyPath = e.writePair(name, is, key)
	return certPath, keyPath, is
}

// source builds a Source for the pair; mod edits the options first.
func (e *env) source(certPath, keyPath string, mod func(*Options)) *Source {
	e.t.Helper()
	o := Options{
		RootFile: e.rootFile(), CertFile: certPath, KeyFile: keyPath, KeyPassword: keyPassword,
		CRLURL: e.crlSrv.URL + "/crl", CRLRefresh: time.Hour, TrustDomain: pkitest.TrustDomain, Now: e.clock.Now,
	}
	if mod != nil {
		mod(&o)
	}
	s, err := New(o)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.t.Cleanup(func() { s.Close() })
	return s
}

// tlsServer accepts connections with cfg; after each handshake it writes
// one byte and records the server-side outcome.
type tlsServer struct {
	addr    string
	results chan serverResult
}

type serverResult struct {
	state tls.ConnectionState
	err   error
}

func startTLSServer(t testing.TB, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &tlsServer{addr: ln.Addr().String(), results: make(chan serverResult, 100)}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				err := tc.Handshake()
				if err == nil {
					_, err = tc.Write([]byte("k"))
				}
				select {
				case srv.results <- serverResult{tc.ConnectionState(), err}:
				default:
				}
				if err == nil {
					var b [1]byte
					tc.Read(b[:]) // until the client closes
				}
			}()
		}
	}()
	return srv
}

// dial connects with cfg and reads the server's byte: err is non-nil when
// either side refused. It returns the client-side state.
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return c.ConnectionState(), fmt.Errorf("read: %w", err)
	}
	if b[0] != 'k' {
		return c.ConnectionState(), errors.New("unexpected byte")
	}
	return c.ConnectionState(), nil
}

// plainClientConfig is a client config of a key pair without this package
// (the peer under test is the server).
func plainClientConfig(t testing.TB, roots *x509.CertPool, certPath, keyPath string) *tls.Config {
	t.Helper()
	certs, err := pemutil.ReadCertificateBundle(certPath)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pemutil.Read(keyPath, pemutil.WithPassword(keyPassword))
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Certificate{PrivateKey: k, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{tc}, MinVersion: tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(8)}
}
