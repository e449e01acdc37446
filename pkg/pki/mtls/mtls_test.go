package mtls

import (
	"context"
	"crypto"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"sync"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/pkg/pki/pkitest"
)

// serverSource starts an mTLS server built from a Source and returns both.
func (e *env) server(mod func(*Options)) (*Source, *tlsServer) {
	e.t.Helper()
	c, k, _ := e.issueServer("server")
	src := e.source(c, k, mod)
	return src, startTLSServer(e.t, src.ServerConfig())
}

func result(t *testing.T, srv *tlsServer) serverResult {
	t.Helper()
	select {
	case r := <-srv.results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no server result")
		return serverResult{}
	}
}

func TestAcceptsDeviceClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.server(nil)
	dc, dk, is := e.issueDevice("device", "SN-1")
	client := e.source(dc, dk, nil)
	if _, err := dial(srv.addr, client.ClientConfig()); err != nil {
		t.Fatalf("device refused: %v", err)
	}
	r := result(t, srv)
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if got := r.state.PeerCertificates[0].SerialNumber; got.Cmp(is.Certificate.SerialNumber) != 0 {
		t.Errorf("server saw serial %x, want %x", got, is.Certificate.SerialNumber)
	}
}

func TestRefusesUnauthenticatedAndForeignClients(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.server(nil)
	other := newEnv(t) // another CA, same names and trust domain
	oc, ok, _ := other.issueDevice("device", "SN-1")
	for name, cfg := range map[string]*tls.Config{
		"no certificate": {RootCAs: e.ca.Roots(), MinVersion: tls.VersionTLS12},
		"another CA":     plainClientConfig(t, e.ca.Roots(), oc, ok),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := dial(srv.addr, cfg); err == nil {
				t.Fatal("accepted")
			}
			if r := result(t, srv); r.err == nil {
				t.Fatal("server accepted the handshake")
			}
		})
	}
}

// TestRevokedRefusedOnResumption: a client accepted once is refused after
// its revocation, also when it resumes its session.
func TestRevokedRefusedOnResumption(t *testing.T) {
	t.Parallel()
	ca := pkitest.NewCA(t)
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			e := newEnvCA(t, ca)
			src, srv := e.server(nil)
			dc, dk, is := e.issueDevice("device", "SN-1")
			cfg := plainClientConfig(t, e.ca.Roots(), dc, dk)
			cfg.MaxVersion = v
			if _, err := dial(srv.addr, cfg); err != nil {
				t.Fatalf("first connection refused: %v", err)
			}
			if r := result(t, srv); r.err != nil || r.state.DidResume {
				t.Fatalf("first connection: err %v, resumed %v", r.err, r.state.DidResume)
			}
			// Unrevoked resumption works (so the next refusal is the CRL's doing).
			if cs, err := dial(srv.addr, cfg); err != nil || !cs.DidResume {
				t.Fatalf("second connection: err %v, resumed %v", err, cs.DidResume)
			}
			result(t, srv)

			e.publishCRL(is.Certificate.SerialNumber)
			if err := src.RefreshCRL(context.Background()); err != nil {
				t.Fatalf("refresh: %v", err)
			}
			cs, err := dial(srv.addr, cfg)
			if err == nil {
				t.Fatal("revoked client accepted on resumption")
			}
			r := result(t, srv)
			if !r.state.DidResume {
				t.Fatalf("server did not resume (client DidResume=%v); the test proves nothing", cs.DidResume)
			}
			if !errors.Is(r.err, ErrRevoked) {
				t.Fatalf("server error %v, want ErrRevoked", r.err)
			}
			// And a full handshake is refused too.
			fresh := plainClientConfig(t, e.ca.Roots(), dc, dk)
			if _, err := dial(srv.addr, fresh); err == nil {
				t.Fatal("revoked client accepted")
			}
			if r := result(t, srv); r.state.DidResume || !errors.Is(r.err, ErrRevoked) {
				t.Fatalf("full handshake: resumed %v, err %v", r.state.DidResume, r.err)
			}
		})
	}
}

// TestClientRefusesRevokedServer: ClientConfig checks the server's chain
// against the CRL too.
func TestClientRefusesRevokedServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	server, srv := e.server(nil)
	dc, dk, _ := e.issueDevice("device", "SN-1")
	client := e.source(dc, dk, nil)
	if _, err := dial(srv.addr, client.ClientConfig()); err != nil {
		t.Fatalf("refused: %v", err)
	}
	result(t, srv)
	e.publishCRL(server.Certificate().SerialNumber)
	if err := client.RefreshCRL(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(srv.addr, client.ClientConfig()); !errors.Is(err, ErrRevoked) {
		t.Fatalf("dial revoked server: %v, want ErrRevoked", err)
	}
}

func TestCRLBadSignatureIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src, srv := e.server(nil)
	dc, dk, is := e.issueDevice("device", "SN-1")
	cfg := plainClientConfig(t, e.ca.Roots(), dc, dk)

	// Another CA's intermediate has the same subject name but another key.
	other := pkitest.NewCA(t)
	forged := e.makeCRL(99, other.CA.Intermediate, other.CA.Signer)
	tampered := e.makeCRL(100, nil, nil, is.Certificate.SerialNumber)
	tampered[len(tampered)-3] ^= 0xff // inside the signature

	for name, der := range map[string][]byte{"forged": forged, "tampered": tampered} {
		t.Run(name, func(t *testing.T) {
			e.serveRaw(der)
			err := src.RefreshCRL(context.Background())
			if !errors.Is(err, ErrCRLSignature) && !errors.Is(err, ErrBadCRL) {
				t.Fatalf("refresh: %v, want a signature error", err)
			}
			if n := src.crl.sources[0].state.Load().number.Int64(); n != 1 {
				t.Errorf("held CRL number %d, want 1 (the last good one)", n)
			}
			if _, err := dial(srv.addr, cfg); err != nil {
				t.Errorf("client refused after a bad CRL: %v", err)
			}
			result(t, srv)
		})
	}

	// With no good CRL ever held, a forged one leaves the server fail closed.
	e.serveRaw(forged)
	c2, k2, _ := e.issueServer("server2")
	src2 := e.source(c2, k2, nil)
	srv2 := startTLSServer(t, src2.ServerConfig())
	if _, err := dial(srv2.addr, plainClientConfig(t, e.ca.Roots(), dc, dk)); err == nil {
		t.Fatal("accepted with only a forged CRL")
	}
	if r := result(t, srv2); !errors.Is(r.err, ErrCRLStale) {
		t.Fatalf("server error %v, want ErrCRLStale", r.err)
	}
}

func TestCRLRollbackRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src, srv := e.server(nil)
	dc, dk, is := e.issueDevice("device", "SN-1")
	old := e.makeCRL(e.number, nil, nil) // number 1, empty
	e.publishCRL(is.Certificate.SerialNumber)
	if err := src.RefreshCRL(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.serveRaw(old)
	if err := src.RefreshCRL(context.Background()); !errors.Is(err, ErrCRLRollback) {
		t.Fatalf("refresh with an older CRL: %v, want ErrCRLRollback", err)
	}
	if _, err := dial(srv.addr, plainClientConfig(t, e.ca.Roots(), dc, dk)); err == nil {
		t.Fatal("revoked client accepted after a rollback attempt")
	}
	if r := result(t, srv); !errors.Is(r.err, ErrRevoked) {
		t.Fatalf("server error %v, want ErrRevoked", r.err)
	}
}

func TestStaleCRL(t *testing.T) {
	t.Parallel()
	ca := pkitest.NewCA(t)
	for _, tc := range []struct {
		name     string
		failOpen bool
		maxStale time.Duration
		advance  time.Duration
		down     bool // CRL endpoint failing
		revoke   bool
		wantErr  error
	}{
		{name: "past nextUpdate, fail closed", advance: 2 * time.Hour, wantErr: ErrCRLStale},
		{name: "past nextUpdate, fail open", failOpen: true, advance: 2 * time.Hour},
		{name: "past nextUpdate, fail open, revoked", failOpen: true, advance: 2 * time.Hour, revoke: true, wantErr: ErrRevoked},
		{name: "within nextUpdate, endpoint down", advance: 30 * time.Minute, down: true},
		{name: "MaxCRLStaleness exceeded, endpoint down", maxStale: 10 * time.Minute, advance: 11 * time.Minute, down: true, wantErr: ErrCRLStale},
		{name: "MaxCRLStaleness kept by refetch", maxStale: 10 * time.Minute, advance: 11 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvCA(t, ca)
			dc, dk, is := e.issueDevice("device", "SN-1")
			if tc.revoke {
				e.publishCRL(is.Certificate.SerialNumber)
			}
			_, srv := e.server(func(o *Options) { o.FailOpen, o.MaxCRLStaleness = tc.failOpen, tc.maxStale })
			if tc.down {
				e.crl.Store(nil)
			}
			e.clock.Add(tc.advance)
			_, err := dial(srv.addr, plainClientConfig(t, e.ca.Roots(), dc, dk))
			r := result(t, srv)
			if tc.wantErr == nil {
				if err != nil || r.err != nil {
					t.Fatalf("refused: client %v, server %v", err, r.err)
				}
				return
			}
			if err == nil || !errors.Is(r.err, tc.wantErr) {
				t.Fatalf("client %v, server %v; want refusal with %v", err, r.err, tc.wantErr)
			}
		})
	}
}

func TestCRLFileAndExpiredCRL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dc, dk, is := e.issueDevice("device", "SN-1")
	// A CRL file works like the URL.
	crlFile := e.dir + "/ca.crl"
	writeAtomic(t, crlFile, e.makeCRL(7, nil, nil, is.Certificate.SerialNumber))
	sc, sk, _ := e.issueServer("server")
	src := e.source(sc, sk, func(o *Options) { o.CRLURL, o.CRLFile = "", crlFile })
	srv := startTLSServer(t, src.ServerConfig())
	if _, err := dial(srv.addr, plainClientConfig(t, e.ca.Roots(), dc, dk)); err == nil {
		t.Fatal("revoked client accepted with a CRL file")
	}
	if r := result(t, srv); !errors.Is(r.err, ErrRevoked) {
		t.Fatalf("server: %v", r.err)
	}
	// An expired CRL (even with a higher number) is refused.
	now := e.clock.Now()
	writeAtomic(t, crlFile, e.makeCRLAt(8, now.Add(-3*time.Hour), now.Add(-time.Hour)))
	if err := src.RefreshCRL(context.Background()); !errors.Is(err, ErrBadCRL) {
		t.Fatalf("refresh with an expired CRL: %v, want ErrBadCRL", err)
	}
	if n := src.crl.sources[0].state.Load().number.Int64(); n != 7 {
		t.Errorf("held CRL number %d, want 7", n)
	}
}

func TestHotReload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src, srv := e.server(nil)
	dc, dk, dis := e.issueDevice("device", "SN-1")
	client := e.source(dc, dk, nil)
	first := src.Certificate().SerialNumber

	cs, err := dial(srv.addr, client.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.PeerCertificates[0].SerialNumber; got.Cmp(first) != 0 {
		t.Fatalf("served %x, want %x", got, first)
	}
	result(t, srv)

	// Renew both sides' files (atomic renames), as the agent does.
	_, _, sis := e.issueServer("server")
	_, _, dis2 := e.issueDevice("device", "SN-1")
	e.clock.Add(2 * time.Second)
	cfg := client.ClientConfig() // a new config: no session to resume
	cs, err = dial(srv.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.PeerCertificates[0].SerialNumber; got.Cmp(sis.Certificate.SerialNumber) != 0 {
		t.Errorf("after renewal the server presents %x, want the new %x", got, sis.Certificate.SerialNumber)
	}
	r := result(t, srv)
	if got := r.state.PeerCertificates[0].SerialNumber; got.Cmp(dis2.Certificate.SerialNumber) != 0 {
		t.Errorf("after renewal the client presents %x, want the new %x (old %x)", got, dis2.Certificate.SerialNumber, dis.Certificate.SerialNumber)
	}
}

func TestReloadMismatchKeepsPrevious(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src, srv := e.server(nil)
	first := src.Certificate().SerialNumber
	dc, dk, _ := e.issueDevice("device", "SN-1")
	cfg := plainClientConfig(t, e.ca.Roots(), dc, dk)
	cfg.ClientSessionCache = nil

	// A new key is in place but its certificate is not (yet).
	blk, err := pemutil.Serialize(newKey(t), pemutil.WithPassword(keyPassword), pemutil.WithPKCS8(true))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(blk)
	writeAtomic(t, e.dir+"/server.key", keyPEM)
	e.clock.Add(2 * time.Second)
	cs, err := dial(srv.addr, cfg)
	if err != nil {
		t.Fatalf("server failed with a mismatched pair on disk: %v", err)
	}
	result(t, srv)
	if got := cs.PeerCertificates[0].SerialNumber; got.Cmp(first) != 0 {
		t.Fatalf("served %x, want the previous %x", got, first)
	}
	if err := src.Reload(); err == nil {
		t.Fatal("Reload of a mismatched pair succeeded")
	}
	if src.Certificate().SerialNumber.Cmp(first) != 0 {
		t.Fatal("Reload replaced the certificate")
	}
	// Once the matching certificate lands, the next check picks it up.
	_, _, sis := e.issueServer("server")
	e.clock.Add(2 * time.Second)
	cs, err = dial(srv.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	result(t, srv)
	if got := cs.PeerCertificates[0].SerialNumber; got.Cmp(sis.Certificate.SerialNumber) != 0 {
		t.Fatalf("served %x, want the new %x", got, sis.Certificate.SerialNumber)
	}
}

func TestGetKeyAndEncryptedKeyFile(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.server(nil)
	dc, dk, _ := e.issueDevice("device", "SN-1")
	k, err := pemutil.Read(dk, pemutil.WithPassword(keyPassword))
	if err != nil {
		t.Fatal(err)
	}
	pwFile := e.dir + "/pw"
	writeAtomic(t, pwFile, append(append([]byte{}, keyPassword...), '\n'))
	for name, mod := range map[string]func(*Options){
		"GetKey": func(o *Options) {
			o.KeyFile, o.KeyPassword = "", nil
			o.GetKey = func() (crypto.Signer, error) { return k.(crypto.Signer), nil }
		},
		"KeyPasswordFile": func(o *Options) { o.KeyPassword, o.KeyPasswordFile = nil, pwFile },
	} {
		t.Run(name, func(t *testing.T) {
			client := e.source(dc, dk, mod)
			if _, err := dial(srv.addr, client.ClientConfig()); err != nil {
				t.Fatal(err)
			}
			result(t, srv)
		})
	}
	if _, err := New(Options{RootFile: e.rootFile(), CertFile: dc, KeyFile: dk, KeyPassword: []byte("wrong")}); err == nil {
		t.Error("New with a wrong key password succeeded")
	}
}

// TestConcurrentReloadAndRefresh: handshakes never fail while the files are
// rewritten and the CRL refreshed (run with -race).
func TestConcurrentReloadAndRefresh(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src, srv := e.server(nil)
	dc, dk, _ := e.issueDevice("device", "SN-1")
	client := e.source(dc, dk, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			e.issueServer("server")
			e.issueDevice("device", "SN-1")
			e.publishCRL(big.NewInt(42))
			src.RefreshCRL(context.Background())
			e.clock.Add(time.Second)
		}
	}()
	var failed sync.Map
	var cwg sync.WaitGroup
	for range 4 {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for range 10 {
				if _, err := dial(srv.addr, client.ClientConfig()); err != nil {
					failed.Store(err.Error(), true)
				}
			}
		}()
	}
	cwg.Wait()
	close(stop)
	wg.Wait()
	failed.Range(func(k, _ any) bool { t.Errorf("handshake failed: %v", k); return true })
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c, k, _ := e.issueServer("server")
	for name, o := range map[string]Options{
		"no roots":      {CertFile: c, KeyFile: k, KeyPassword: keyPassword},
		"no cert":       {RootFile: e.rootFile(), KeyFile: k, KeyPassword: keyPassword},
		"bad CRL URL":   {RootFile: e.rootFile(), CertFile: c, KeyFile: k, KeyPassword: keyPassword, CRLURL: "ftp://x/crl"},
		"missing roots": {RootFile: e.dir + "/nope.crt", CertFile: c, KeyFile: k, KeyPassword: keyPassword},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	if _, err := os.Stat(c); err != nil {
		t.Fatal(err)
	}
}

// TestBackgroundRefresh: with a short CRLRefresh the Source picks up a
// revocation by itself (no RefreshCRL call, the clock standing still).
func TestBackgroundRefresh(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src, srv := e.server(func(o *Options) { o.CRLRefresh = 10 * time.Millisecond })
	dc, dk, is := e.issueDevice("device", "SN-1")
	cfg := plainClientConfig(t, e.ca.Roots(), dc, dk)
	if _, err := dial(srv.addr, cfg); err != nil {
		t.Fatal(err)
	}
	result(t, srv)
	e.publishCRL(is.Certificate.SerialNumber)
	// Wait (bounded, not measured) until the loop has fetched the new CRL.
	deadline := time.Now().Add(20 * time.Second)
	for src.crl.sources[0].state.Load().number.Int64() != e.number {
		if time.Now().After(deadline) {
			t.Fatal("the background refresh never fetched the new CRL")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := dial(srv.addr, cfg); err == nil {
		t.Fatal("revoked client accepted")
	}
	if r := result(t, srv); !errors.Is(r.err, ErrRevoked) {
		t.Fatalf("server: %v", r.err)
	}
	src.Close()
	src.Close() // idempotent
}
