package mtls

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

// leafOnly is the TLS identity of an issued pair without its chain.
func leafOnly(is *pki.Issued, key crypto.Signer) tls.Certificate {
	return tls.Certificate{PrivateKey: key, Leaf: is.Certificate, Certificate: [][]byte{is.Certificate.Raw}}
}

// fullChain is the TLS identity of an issued pair with its chain.
func fullChain(is *pki.Issued, key crypto.Signer) tls.Certificate {
	c := leafOnly(is, key)
	for _, ch := range is.Chain {
		c.Certificate = append(c.Certificate, ch.Raw)
	}
	return c
}

// clientWith is a client configuration (not this package's) presenting cert.
func clientWith(roots *x509.CertPool, cert tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
}

// secondIntermediate makes another issuing CA under e's root (signed with
// the root key pkitest left on disk) and returns it with its key.
func (e *env) secondIntermediate() (*x509.Certificate, crypto.Signer) {
	e.t.Helper()
	k, err := pemutil.Read(e.ca.Files.RootKey, pemutil.WithPassword(e.ca.Password))
	if err != nil {
		e.t.Fatal(err)
	}
	key := newKey(e.t)
	now := e.clock.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(e.t), Subject: pkix.Name{CommonName: "second intermediate"},
		NotBefore: e.ca.CA.Intermediate.NotBefore, NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
		MaxPathLen: 0, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, e.ca.CA.Root, key.Public(), k.(crypto.Signer))
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		e.t.Fatal(err)
	}
	return c, key
}

func randSerial(t testing.TB) *big.Int {
	t.Helper()
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// leafUnder issues a leaf under issuer: a device certificate (serial SN-2
// in the test trust domain) when device, else a server certificate for
// localhost and 127.0.0.1.
func (e *env) leafUnder(issuer *x509.Certificate, signer crypto.Signer, device bool) (*pki.Issued, crypto.Signer) {
	e.t.Helper()
	key := newKey(e.t)
	now := e.clock.Now()
	id, _ := url.Parse("spiffe://" + pkitest.TrustDomain + "/acme/device/SN-2")
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(e.t), Subject: pkix.Name{CommonName: "dev-SN-2", SerialNumber: "SN-2", Organization: []string{"acme"}},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if device {
		tmpl.URIs, tmpl.ExtKeyUsage = []*url.URL{id}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.DNSNames, tmpl.IPAddresses = []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		e.t.Fatal(err)
	}
	return &pki.Issued{Certificate: c, Chain: []*x509.Certificate{issuer}}, key
}

// TestServerAcceptsLeafOnlyClients: a client that sends only its leaf is
// accepted when its issuer is the server's own issuing CA or listed in
// Options.Intermediates, and has a PeerIdentity; a leaf of an unknown
// intermediate (same root) is refused unless it sends its chain; a revoked
// leaf-only client is refused.
func TestServerAcceptsLeafOnlyClients(t *testing.T) {
	t.Parallel()
	ca := pkitest.NewCA(t)
	e := newEnvCA(t, ca)
	src, srv := e.server(nil)
	_, _, dev := e.issueDevice("device", "SN-1")
	devKeyFile := filepath.Join(e.dir, "device.key")
	k, err := pemutil.Read(devKeyFile, pemutil.WithPassword(keyPassword))
	if err != nil {
		t.Fatal(err)
	}
	devKey := k.(crypto.Signer)
	inter2, inter2Key := e.secondIntermediate()
	other, otherKey := e.leafUnder(inter2, inter2Key, true)

	try := func(name string, cert tls.Certificate, wantOK bool) serverResult {
		t.Helper()
		_, err := dial(srv.addr, clientWith(e.ca.Roots(), cert))
		r := result(t, srv)
		if ok := err == nil && r.err == nil; ok != wantOK {
			t.Fatalf("%s: client err %v, server err %v; want accepted=%v", name, err, r.err, wantOK)
		}
		return r
	}
	for name, cert := range map[string]tls.Certificate{"leaf only": leafOnly(dev, devKey), "full chain": fullChain(dev, devKey)} {
		r := try(name, cert, true)
		id, err := src.PeerIdentity(&r.state)
		if err != nil || id.Role != RoleDevice || id.Serial != "SN-1" || id.CertSerial != dev.Certificate.SerialNumber.Text(16) {
			t.Errorf("%s: identity %+v, %v", name, id, err)
		}
	}
	// An intermediate the server does not know: its leaf alone is refused,
	// with its chain it verifies (and, with no CRL of that issuer, is
	// refused fail-closed: it is the chain that made the difference).
	if r := try("unknown intermediate, leaf only", leafOnly(other, otherKey), false); errors.Is(r.err, ErrCRLStale) {
		t.Errorf("leaf of an unknown intermediate reached the revocation check: %v", r.err)
	}
	if r := try("unknown intermediate, full chain", fullChain(other, otherKey), false); !errors.Is(r.err, ErrCRLStale) {
		t.Errorf("full chain of the second intermediate: %v, want ErrCRLStale (chain verified, no CRL)", r.err)
	}

	// Known through Options.Intermediates (no revocation configured here).
	c, kf, _ := e.issueServer("server2")
	src2 := e.source(c, kf, func(o *Options) { o.Intermediates = []*x509.Certificate{inter2}; o.CRLURL = "" })
	srv2 := startTLSServer(t, src2.ServerConfig())
	if _, err := dial(srv2.addr, clientWith(e.ca.Roots(), leafOnly(other, otherKey))); err != nil {
		t.Fatalf("leaf of a listed intermediate: %v", err)
	}
	r := result(t, srv2)
	if id, err := PeerIdentity(&r.state, pkitest.TrustDomain); err != nil || id.Serial != "SN-2" {
		t.Errorf("identity of the leaf-only client: %+v, %v", id, err)
	}

	// An Intermediates entry that does not chain to the anchors is not
	// used: a leaf under it alone is refused.
	foreign := newEnv(t)
	foreignLeaf, foreignKey := foreign.leafUnder(foreign.ca.CA.Intermediate, foreign.ca.CA.Signer, true)
	src3 := e.source(c, kf, func(o *Options) { o.Intermediates = []*x509.Certificate{foreign.ca.CA.Intermediate}; o.CRLURL = "" })
	srv3 := startTLSServer(t, src3.ServerConfig())
	if _, err := dial(srv3.addr, clientWith(e.ca.Roots(), leafOnly(foreignLeaf, foreignKey))); err == nil {
		t.Fatal("leaf of another CA's intermediate accepted")
	}
	if r := result(t, srv3); r.err == nil {
		t.Fatal("server accepted another CA's leaf")
	}

	// Revoked, leaf only: refused.
	e.publishCRL(dev.Certificate.SerialNumber)
	if err := src.RefreshCRL(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := try("revoked leaf only", leafOnly(dev, devKey), false); !errors.Is(r.err, ErrRevoked) {
		t.Errorf("revoked leaf-only client: %v, want ErrRevoked", r.err)
	}
}

// TestClientAcceptsLeafOnlyServers: ClientConfig accepts a server that
// sends only its leaf when its issuer is known (own chain or
// Intermediates), still checking its name and revocation; crypto/tls alone
// would refuse it.
func TestClientAcceptsLeafOnlyServers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, _, sis := e.issueServer("server")
	k, err := pemutil.Read(filepath.Join(e.dir, "server.key"), pemutil.WithPassword(keyPassword))
	if err != nil {
		t.Fatal(err)
	}
	serve := func(cert tls.Certificate) string {
		return startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			ClientAuth: tls.RequestClientCert}).addr
	}
	leafSrv := serve(leafOnly(sis, k.(crypto.Signer)))
	fullSrv := serve(fullChain(sis, k.(crypto.Signer)))

	dc, dk, _ := e.issueDevice("device", "SN-1")
	client := e.source(dc, dk, nil)
	for name, addr := range map[string]string{"leaf only": leafSrv, "full chain": fullSrv} {
		if _, err := dial(addr, client.ClientConfig()); err != nil {
			t.Errorf("%s server refused: %v", name, err)
		}
	}
	// Without this package the leaf-only server fails verification: the
	// acceptance above is this package's doing.
	if _, err := dial(leafSrv, &tls.Config{RootCAs: e.ca.Roots(), MinVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("crypto/tls alone accepted a leaf-only server; the test proves nothing")
	}
	// The name is still checked.
	cfg := client.ClientConfig()
	cfg.ServerName = "not-the-server.example"
	if _, err := dial(leafSrv, cfg); err == nil {
		t.Error("leaf-only server accepted under another name")
	}

	// A leaf-only server of an intermediate the client does not know is
	// refused; listed in Intermediates it is accepted.
	inter2, inter2Key := e.secondIntermediate()
	other, otherKey := e.leafUnder(inter2, inter2Key, false)
	otherSrv := serve(leafOnly(other, otherKey))
	if _, err := dial(otherSrv, client.ClientConfig()); err == nil {
		t.Error("leaf-only server of an unknown intermediate accepted")
	}
	knowing := e.source(dc, dk, func(o *Options) { o.Intermediates = []*x509.Certificate{inter2}; o.CRLURL = "" })
	if _, err := dial(otherSrv, knowing.ClientConfig()); err != nil {
		t.Errorf("leaf-only server of a listed intermediate: %v", err)
	}

	// Revoked, leaf only: refused.
	e.publishCRL(sis.Certificate.SerialNumber)
	if err := client.RefreshCRL(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(leafSrv, client.ClientConfig()); !errors.Is(err, ErrRevoked) {
		t.Errorf("revoked leaf-only server: %v, want ErrRevoked", err)
	}
}

// TestLeafOnlyAfterReload: after the own certificate is renewed under
// another intermediate (a CA rollover), leaf-only clients of that
// intermediate are accepted by the running server configuration.
func TestLeafOnlyAfterReload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	certPath, keyPath, _ := e.issueServer("server")
	src := e.source(certPath, keyPath, func(o *Options) { o.CRLURL = "" })
	srv := startTLSServer(t, src.ServerConfig())
	inter2, inter2Key := e.secondIntermediate()
	other, otherKey := e.leafUnder(inter2, inter2Key, true)
	if _, err := dial(srv.addr, clientWith(e.ca.Roots(), leafOnly(other, otherKey))); err == nil {
		t.Fatal("leaf of an intermediate not yet known accepted")
	}
	result(t, srv)
	// The server's own certificate is now one of inter2 (with its chain).
	renewed, renewedKey := e.leafUnder(inter2, inter2Key, false)
	c2, k2 := e.writePair("server-renewed", renewed, renewedKey)
	for _, p := range [][2]string{{c2, certPath}, {k2, keyPath}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		writeAtomic(t, p[1], b)
	}
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(srv.addr, clientWith(e.ca.Roots(), leafOnly(other, otherKey))); err != nil {
		t.Fatalf("leaf of the own (renewed) intermediate: %v", err)
	}
	if r := result(t, srv); r.err != nil {
		t.Fatal(r.err)
	}
}

// TestUnanchoredOwnChainTrustsNothing: a CA certificate in the own chain
// file that does not chain to the anchors (another CA's intermediate) lets
// the handshake complete a leaf-only peer's chain, but VerifyConnection,
// verifying on to the anchors, refuses the peer.
func TestUnanchoredOwnChainTrustsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	foreign := newEnv(t)
	c, k, _ := e.issueServer("server")
	chainFile := filepath.Join(e.dir, "extra-chain.pem")
	writeAtomic(t, chainFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: foreign.ca.CA.Intermediate.Raw}))
	src := e.source(c, k, func(o *Options) { o.ChainFile = chainFile; o.CRLURL = "" })
	srv := startTLSServer(t, src.ServerConfig())
	leaf, key := foreign.leafUnder(foreign.ca.CA.Intermediate, foreign.ca.CA.Signer, true)
	if _, err := dial(srv.addr, clientWith(e.ca.Roots(), leafOnly(leaf, key))); err == nil {
		t.Fatal("a leaf of an unanchored CA in the own chain was accepted")
	}
	if r := result(t, srv); !errors.Is(r.err, ErrNoPeer) {
		t.Fatalf("server: %v, want ErrNoPeer from VerifyConnection", r.err)
	}
}
