// Package mtls builds crypto/tls configurations for devpki components: it
// trusts the CA's bundle, serves the component's own certificate and reloads
// it when the device agent renews it (no restart), refuses revoked peers in
// VerifyConnection from a signature-checked CRL cache, and reads the peer's
// devpki identity.
//
// Two lines give a server or a client:
//
//	src, err := mtls.New(mtls.Options{RootFile: "root.crt", CertFile: "server.crt", KeyFile: "server.key", CRLURL: "https://ca:8443/crl"})
//	srv := &http.Server{TLSConfig: src.ServerConfig()}
//
// Revocation is fail-closed: while no CRL covering the peer's issuer is held
// that is fresh (see Options.MaxCRLStaleness), every peer is refused unless
// Options.FailOpen is set. With neither CRLURL nor CRLFile, revocation is not
// checked at all.
//
// A CRL is accepted only if it is signed by a CA certificate that chains to
// the trust anchors and is found in RootFile, the own certificate chain (as
// loaded by New) or Options.CRLIssuers; it must carry a CRL number no lower
// than the one held for that issuer (no rollback) and a nextUpdate not yet
// past. A refused CRL leaves the previous one in place. The leaf of a peer
// chain must be covered by a fresh CRL from its issuer; other certificates
// of the chain are checked against any CRL held from their issuer. A peer
// chain without an intermediate (a bare anchor) is refused when CRLs are on.
//
// A peer may send only its leaf: small TLS stacks send no chain. Its chain
// is completed with the CA certificates this package knows: the own
// certificate chain (as loaded), Options.CRLIssuers and
// Options.Intermediates. The handshake accepts a chain that ends at one of
// those or at an anchor; VerifyConnection then verifies the chain on to an
// anchor (pki.ChainVerifier) before it checks revocation. A leaf whose
// issuer is none of these, and that does not send it, is refused.
package mtls

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/pkg/pki"
)

// Defaults for zero Options fields.
const (
	DefaultCRLRefresh = time.Minute
	// DefaultCRLGrace is how long after its nextUpdate a CRL still counts
	// as fresh (clock skew between the CA and this host).
	DefaultCRLGrace = 5 * time.Minute
	// reloadCheckInterval bounds how often the certificate files are
	// stat'ed on use.
	reloadCheckInterval = time.Second
	// minOnDemandRefresh bounds how often a handshake that finds the CRL
	// stale triggers a fetch itself.
	minOnDemandRefresh = time.Second
	fetchTimeout       = 30 * time.Second
	// onDemandTimeout bounds the fetch a handshake waits for.
	onDemandTimeout = 5 * time.Second
	maxCRLBytes     = 64 << 20
)

// Errors wrapped by the errors this package returns.
var (
	// ErrRevoked is wrapped (through *RevokedError) when a peer's
	// certificate, or a CA certificate in its chain, is on the CRL.
	ErrRevoked = errors.New("certificate revoked")
	// ErrCRLStale means no fresh CRL covering the peer's issuer is held;
	// the peer is refused unless Options.FailOpen.
	ErrCRLStale = errors.New("no fresh CRL")
	// ErrCRLSignature means a fetched CRL was not signed by a CA in the
	// trust bundle; it was ignored.
	ErrCRLSignature = errors.New("CRL signature not from a trusted issuer")
	// ErrCRLRollback means a fetched CRL has a lower CRL number than the
	// one held; it was ignored.
	ErrCRLRollback = errors.New("CRL number lower than the one held")
	// ErrBadCRL means a fetched CRL is malformed, expired, or lacks a CRL
	// number or nextUpdate (RFC 5280 requires both); it was ignored.
	ErrBadCRL = errors.New("bad CRL")
	// ErrNoPeer means the connection has no verified peer chain.
	ErrNoPeer = errors.New("no verified peer certificate")
)

// Options configures New. RootFile or Roots, and CertFile with KeyFile or
// GetKey, are required; every other zero field means the documented default.
type Options struct {
	// RootFile is a PEM bundle of trust anchors (the CA's root.crt). Every
	// CA certificate in it may also sign CRLs.
	RootFile string
	// Roots adds trust anchors. Its certificates cannot be listed, so CRL
	// issuers must come from RootFile, the own chain or CRLIssuers.
	Roots *x509.CertPool
	// CRLIssuers are extra CA certificates that may sign CRLs (such as the
	// issuing intermediate); each must chain to the trust anchors.
	CRLIssuers []*x509.Certificate
	// Intermediates are more CA certificates that complete a peer's chain
	// when the peer sends only its leaf (the own chain and CRLIssuers do
	// too); each must chain to the trust anchors. Empty: only those.
	Intermediates []*x509.Certificate

	// CertFile is the PEM certificate (optionally followed by its chain);
	// ChainFile, if set, holds more chain certificates (the device agent's
	// chain.pem). All three files are re-read together when any of them
	// changes (inode, mtime or size; checked on use, at most once a
	// second); a pair whose key does not match is not installed.
	CertFile, ChainFile string
	// KeyFile is the PEM private key, encrypted when KeyPassword or
	// KeyPasswordFile is set (go.step.sm/crypto/pemutil formats).
	KeyFile         string
	KeyPassword     []byte
	KeyPasswordFile string // first line is the password
	// GetKey, if set, replaces KeyFile: it is called on every (re)load and
	// must return the key of the certificate in CertFile (a TPM key, say).
	GetKey func() (crypto.Signer, error)

	// CRLURL is an http(s) URL of a DER CRL (the CA's /crl); CRLFile a
	// local DER or PEM CRL. Either, both or neither (no revocation check).
	// A CRL fetched from either must be a full CRL (no issuing
	// distribution point).
	CRLURL, CRLFile string
	// CRLURLs are more CRL URLs, checked like CRLURL: during a CA rollover
	// each issuer publishes its own CRL (the CA's /crl/<key id>), and a
	// peer's certificate is checked against its own issuer's.
	CRLURLs []string
	// CRLPartitions checks a peer's leaf against the partition CRL its
	// CRL distribution point names, when that is CRLURL/p/<n> (a devpki
	// partition, RFC 5280 §5.2.5), instead of the full CRL: fetched on
	// first sight of the partition (the handshake waits for it, at most
	// once a second per partition) and then refreshed with the others; its
	// issuing distribution point must name that same URL, and it must be
	// fresh as the full CRL must. Other leaves and the CA certificates of
	// a chain are checked as without it. Requires CRLURL.
	CRLPartitions bool
	// CRLRefresh is how often the CRLs are fetched in the background;
	// default DefaultCRLRefresh (1m).
	CRLRefresh time.Duration
	// MaxCRLStaleness, when positive, also requires the CRL to have been
	// confirmed current by a successful fetch within this long. A CRL is
	// never fresh past its nextUpdate + DefaultCRLGrace.
	MaxCRLStaleness time.Duration
	// FailOpen accepts peers while no fresh CRL is held (serials on a
	// stale CRL are still refused). Default false: fail closed.
	FailOpen bool

	// TrustDomain is the SPIFFE trust domain PeerIdentity checks; empty
	// means PeerIdentity fails.
	TrustDomain string
	// Now is the clock for certificate and CRL validity and for the
	// reload and on-demand refresh rate limits; default time.Now.
	Now func() time.Time
	// Logger receives reloads and CRL updates; default discards.
	Logger *slog.Logger
	// HTTPClient fetches CRLURL; default a client with a 30s timeout that
	// trusts the same anchors.
	HTTPClient *http.Client
}

// Source holds the trust bundle, the current own certificate and the CRL
// cache. It is safe for concurrent use; Close stops its background refresh.
type Source struct {
	opts      Options
	roots     *x509.CertPool
	issuers   []*x509.Certificate // CRL issuer candidates, verified to roots
	known     []*x509.Certificate // CRLIssuers and Intermediates that chain to roots
	verifiers atomic.Pointer[peerVerifiers]
	now       func() time.Time
	log       *slog.Logger
	certs     *certReloader
	crl       *crlCache // nil: no revocation check
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// New loads the trust bundle and the own certificate and key, fetches the
// CRLs once (a failure is logged: peers are then refused until a fetch
// succeeds, unless FailOpen), and starts the background CRL refresh.
func New(opts Options) (*Source, error) {
	s := &Source{opts: opts, now: opts.Now, log: opts.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.CRLRefresh < 0 || opts.MaxCRLStaleness < 0 {
		return nil, errors.New("mtls: CRLRefresh and MaxCRLStaleness must not be negative")
	}
	if opts.CRLRefresh == 0 {
		s.opts.CRLRefresh = DefaultCRLRefresh
	}
	if opts.CRLPartitions && opts.CRLURL == "" {
		return nil, errors.New("mtls: CRLPartitions needs CRLURL: partition CRLs are under it")
	}
	var anchors []*x509.Certificate
	if opts.Roots != nil {
		s.roots = opts.Roots.Clone()
	} else {
		s.roots = x509.NewCertPool()
	}
	if opts.RootFile != "" {
		certs, err := pemutil.ReadCertificateBundle(opts.RootFile)
		if err != nil {
			return nil, fmt.Errorf("mtls: read roots: %w", err)
		}
		for _, c := range certs {
			s.roots.AddCert(c)
			anchors = append(anchors, c)
		}
	} else if opts.Roots == nil {
		return nil, errors.New("mtls: RootFile or Roots is required")
	}
	if opts.CertFile == "" || (opts.KeyFile == "" && opts.GetKey == nil) {
		return nil, errors.New("mtls: CertFile and KeyFile (or GetKey) are required")
	}
	password := opts.KeyPassword
	if opts.KeyPasswordFile != "" {
		b, err := os.ReadFile(opts.KeyPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("mtls: read key password: %w", err)
		}
		password = firstLine(b)
	}
	s.certs = &certReloader{
		certFile: opts.CertFile, chainFile: opts.ChainFile, keyFile: opts.KeyFile,
		password: password, getKey: opts.GetKey, now: s.now, log: s.log,
	}
	if err := s.certs.load(); err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	// CRL issuers: CA certificates of the bundle, the own chain and
	// CRLIssuers, each only if it chains to the anchors.
	cands := append(append([]*x509.Certificate{}, anchors...), opts.CRLIssuers...)
	cands = append(cands, s.certs.current().chain...)
	for _, c := range cands {
		if s.chainsToAnchors(c, "not used for CRLs") {
			s.issuers = append(s.issuers, c)
		}
	}
	// Known intermediates: CRLIssuers and Intermediates (the own chain is
	// added as loaded, see peerVerifier).
	for _, c := range append(append([]*x509.Certificate{}, opts.CRLIssuers...), opts.Intermediates...) {
		if s.chainsToAnchors(c, "not used to complete peer chains") {
			s.known = append(s.known, c)
		}
	}
	if opts.CRLURL != "" || opts.CRLFile != "" || len(opts.CRLURLs) > 0 {
		hc := opts.HTTPClient
		if hc == nil {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: s.roots}
			hc = &http.Client{Transport: tr, Timeout: fetchTimeout}
		}
		c, err := newCRLCache(s, hc)
		if err != nil {
			return nil, fmt.Errorf("mtls: %w", err)
		}
		s.crl = c
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		if err := s.crl.refresh(ctx); err != nil {
			s.log.Error("mtls: initial CRL fetch failed; peers are refused until one succeeds", "err", err, "fail_open", opts.FailOpen)
		}
		cancel()
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.refreshLoop()
	}
	return s, nil
}

// chainsToAnchors reports whether c is a CA certificate that chains to the
// trust anchors, and logs why not (c is then unused).
func (s *Source) chainsToAnchors(c *x509.Certificate, unused string) bool {
	if !c.IsCA {
		return false
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: s.roots, CurrentTime: c.NotBefore.Add(time.Second),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		s.log.Warn("mtls: CA certificate does not chain to the trust anchors; "+unused, "subject", c.Subject.String(), "err", err)
		return false
	}
	return true
}

// peerVerifiers verify peer chains with the known intermediates and the own
// chain of one loaded key pair.
type peerVerifiers struct {
	kp     *keyPair
	client *pki.ChainVerifier // peers that are TLS clients
	server *pki.ChainVerifier // peers that are TLS servers
	// accept holds the anchors and the known CA certificates (known
	// intermediates and the own chain): crypto/tls verifies peers against
	// it, so that a leaf whose issuer is known passes the handshake;
	// VerifyConnection then verifies the chain to a real anchor.
	accept *x509.CertPool
	// added are the certificates in accept that are not anchors: a chain
	// crypto/tls verified that ends at one of them is verified on.
	added []*x509.Certificate
	// serverCfg is ServerConfig's configuration with ClientCAs accept.
	serverCfg *tls.Config
}

// peerVerifier returns the verifiers for the own chain currently loaded
// (rebuilt after a reload that changed it).
func (s *Source) peerVerifier() *peerVerifiers {
	kp := s.certs.current()
	if v := s.verifiers.Load(); v != nil && v.kp == kp {
		return v
	}
	known := append(append([]*x509.Certificate{}, s.known...), kp.chain...)
	v := &peerVerifiers{
		kp:     kp,
		client: pki.NewChainVerifier(s.roots, known, x509.ExtKeyUsageClientAuth),
		server: pki.NewChainVerifier(s.roots, known, x509.ExtKeyUsageServerAuth),
		accept: s.roots.Clone(),
	}
	for _, c := range known {
		if c.IsCA {
			v.accept.AddCert(c)
			v.added = append(v.added, c)
		}
	}
	v.serverCfg = &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  v.accept,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.certs.get(), nil
		},
		VerifyConnection: s.VerifyConnection,
		Time:             s.now,
	}
	s.verifiers.Store(v)
	return v
}

// isAdded reports whether c is one of added (by its DER: resumed sessions
// carry certificates parsed again).
func (v *peerVerifiers) isAdded(c *x509.Certificate) bool {
	for _, a := range v.added {
		if a == c || bytes.Equal(a.Raw, c.Raw) {
			return true
		}
	}
	return false
}

// ServerConfig returns a server configuration: TLS 1.2+, the current own
// certificate, client certificates required and verified, and the
// revocation check in VerifyConnection (run on resumed sessions too). A
// client may send only its leaf when its issuer is a known CA certificate
// (the own chain as currently loaded, CRLIssuers, Intermediates): the
// handshake accepts a chain that ends at one of those (its names are in
// the acceptable-CA list, for clients that pick their certificate by it),
// and VerifyConnection verifies it on to the anchors.
func (s *Source) ServerConfig() *tls.Config {
	base := s.peerVerifier().serverCfg.Clone()
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return s.peerVerifier().serverCfg, nil
	}
	return base
}

// ClientConfig returns a client configuration: TLS 1.2+, the server's
// certificate verified for its name (set ServerName when dialing through a
// proxy) and its chain, the current own certificate, the revocation check
// in VerifyConnection, and a session cache for resumption (each call makes
// a new cache: keep one configuration per client). A server may send only
// its leaf when its issuer is a CA certificate known at this call (the own
// chain as loaded now, CRLIssuers, Intermediates): the handshake accepts a
// chain that ends at one of those, and VerifyConnection verifies it on to
// the anchors.
func (s *Source) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    s.peerVerifier().accept,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.certs.get(), nil
		},
		VerifyConnection:   s.verifyServer,
		ClientSessionCache: tls.NewLRUClientSessionCache(64),
		Time:               s.now,
	}
}

// VerifyConnection checks a client's certificate chain (ServerConfig sets
// it): the chains crypto/tls verified to an anchor or, when it stopped at a
// known CA certificate (a client that sent only its leaf) or verified
// nothing, PeerCertificates verified to the anchors with the known CA
// certificates, for clientAuth. It refuses the connection when every such
// chain contains a revoked certificate or, fail-closed, when the leaf's
// issuer has no fresh CRL. A connection without a peer certificate passes
// (ClientAuth decides).
func (s *Source) VerifyConnection(cs tls.ConnectionState) error {
	return s.verifyPeer(cs, false)
}

// verifyServer is ClientConfig's VerifyConnection: crypto/tls verified the
// server's name and chain; a chain that stopped at a known CA certificate
// is verified on to the anchors for serverAuth; then revocation.
func (s *Source) verifyServer(cs tls.ConnectionState) error {
	return s.verifyPeer(cs, true)
}

func (s *Source) verifyPeer(cs tls.ConnectionState, server bool) error {
	v := s.peerVerifier()
	// The chains crypto/tls verified that end at an anchor are complete;
	// one that ends at a known CA certificate (a leaf-only peer) is not.
	complete := func(c []*x509.Certificate) bool { return len(c) > 0 && !v.isAdded(c[len(c)-1]) }
	chains := cs.VerifiedChains
	for _, c := range cs.VerifiedChains {
		if !complete(c) { // keep only the complete ones (a copy: rare)
			chains = nil
			for _, c := range cs.VerifiedChains {
				if complete(c) {
					chains = append(chains, c)
				}
			}
			break
		}
	}
	if len(chains) == 0 {
		if len(cs.PeerCertificates) == 0 {
			if server {
				return fmt.Errorf("mtls: %w", ErrNoPeer)
			}
			return nil // a server that did not ask; ClientAuth decides
		}
		cv := v.client
		if server {
			cv = v.server
		}
		var err error
		if chains, err = cv.Verify(cs.PeerCertificates, s.now()); err != nil {
			return fmt.Errorf("mtls: %w: %w", ErrNoPeer, err)
		}
	}
	if s.crl == nil {
		return nil
	}
	var first error
	for _, chain := range chains {
		err := s.crl.check(chain)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return fmt.Errorf("mtls: %w", first)
}

// Certificate returns the own certificate currently served.
func (s *Source) Certificate() *x509.Certificate { return s.certs.current().leaf }

// Reload re-reads the own certificate and key now; on any error (unreadable
// files, a key that does not match) the previous pair stays in use.
func (s *Source) Reload() error { return s.certs.load() }

// RefreshCRL fetches every configured CRL now and returns the first error
// (the CRL that failed keeps its previous state).
func (s *Source) RefreshCRL(ctx context.Context) error {
	if s.crl == nil {
		return nil
	}
	return s.crl.refresh(ctx)
}

// Close stops the background CRL refresh. The configurations keep working
// with the state held at that time.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
			<-s.done
		}
	})
	return nil
}

func (s *Source) refreshLoop() {
	defer close(s.done)
	t := time.NewTicker(s.opts.CRLRefresh)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		go func() {
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := s.crl.refresh(ctx); err != nil {
			s.log.Warn("mtls: CRL refresh failed; keeping the CRL held", "err", err)
		}
		cancel()
	}
}

func firstLine(b []byte) []byte {
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return b[:i]
		}
	}
	return b
}
