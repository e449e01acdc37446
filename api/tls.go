package api

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"devpki/pkg/pki"
)

// TLSConfig is the CA's HTTPS configuration for cert (its TLS certificate
// and chain). Client certificates are requested, never required, and not
// verified in the handshake: the handler verifies them (peerChains), so a
// client that sends only its leaf is accepted when the CA knows its issuer,
// and a factory IDevID from a manufacturer registered at runtime reaches
// its admission step (which verifies it against the registry's roots)
// instead of failing the handshake with "unknown ca". No acceptable-CA list
// is sent, so TLS stacks that filter their certificates by it (Go's does)
// still present a leaf-only or IDevID certificate. classical restricts the
// key exchange to X25519 and P-256 (no hybrid post-quantum share).
//
// TLS 1.3 is preferred (Go negotiates it whenever the client offers it; its
// suites are all AEAD). TLS 1.2 is accepted for older device stacks with
// ECDHE key exchange and AEAD ciphers only (tls12Suites): no CBC, no static
// RSA key exchange.
func TLSConfig(cert tls.Certificate, classical bool) *tls.Config {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: tls12Suites,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		// Devices talk to the CA once per enrollment or renewal, weeks
		// apart: a session ticket would never be used, and making one
		// costs CPU and a write on every handshake. (It also means every
		// request's client certificate is verified afresh, so a revoked
		// admin is refused on its next request.)
		SessionTicketsDisabled: true,
		// Called on the connection's goroutine once its ClientHello is
		// read: grow that goroutine's stack once, while it is shallow.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			growStack()
			return nil, nil // this config
		},
	}
	if classical {
		c.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	}
	return c
}

// growStackBytes is the stack frame growStack takes. A connection's
// goroutine starts with a small stack (the runtime's average, a few KiB)
// and grows it by copying — every frame on it adjusted — each time a call
// runs out: for a renewal three times, at the hybrid key exchange
// (mlkem.kemEncaps), in the signing (encoding/asn1's recursion inside
// x509.CreateCertificate, some fifty frames deep) and on the way there,
// together ~4% of the server's CPU. One frame this big at the top of the
// handshake makes the runtime grow the stack to 32 KiB at once, with a
// dozen frames to copy; nothing later needs more (docs/BENCHMARKS.md,
// "stack copies per renewal"). It is what CockroachDB's growstack does.
const growStackBytes = 16 << 10

// growStack makes the runtime grow the calling goroutine's stack by at
// least growStackBytes. Its frame is zeroed (a few microseconds' less
// than one copy) and must not be optimized away: stackSink reads it.
//
//go:noinline
func growStack() byte {
	var buf [growStackBytes]byte
	return stackSink(&buf)
}

//go:noinline
func stackSink(b *[growStackBytes]byte) byte { return b[len(b)-1] }

// tls12Suites are the TLS 1.2 cipher suites the CA accepts: forward-secret
// (ECDHE) and authenticated encryption (GCM, ChaCha20-Poly1305), for ECDSA
// and RSA server keys.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Timeouts of the CA's HTTPS server (NewHTTPServer). Every request body is
// at most MaxBodyBytes (64 KiB), so a client that has not sent its headers
// within ReadHeaderTimeout, or its whole request within ReadTimeout, is
// too slow to be a device enrolling and only holds a connection: it is
// cut. WriteTimeout bounds the answer (signing and the durable commit take
// milliseconds; a store that cannot commit answers 503 at once). An idle
// keep-alive connection is closed after IdleTimeout.
type Timeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

// DefaultTimeouts are the timeouts ca serve uses.
var DefaultTimeouts = Timeouts{
	ReadHeader: 5 * time.Second,
	Read:       10 * time.Second,
	Write:      15 * time.Second,
	Idle:       60 * time.Second,
}

// NewHTTPServer is the CA's HTTPS server for handler: tlsConfig (from
// TLSConfig), the timeouts t (zero fields take DefaultTimeouts'), 16 KiB of
// headers at most, and the server's own errors logged at debug level.
func NewHTTPServer(handler http.Handler, tlsConfig *tls.Config, t Timeouts, log *slog.Logger) *http.Server {
	d := DefaultTimeouts
	pick := func(v, def time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return def
	}
	return &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: pick(t.ReadHeader, d.ReadHeader),
		ReadTimeout:       pick(t.Read, d.Read),
		WriteTimeout:      pick(t.Write, d.Write),
		IdleTimeout:       pick(t.Idle, d.Idle),
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// secureHeaders sets, on every answer, X-Content-Type-Options: nosniff and
// X-Frame-Options: DENY, and on answers over TLS Strict-Transport-Security
// (one year): the CA's URLs are HTTPS-only except the plain-HTTP
// publication listener, which this header does not reach.
var secureHeaders = middleware.SecureWithConfig(middleware.SecureConfig{
	ContentTypeNosniff: "nosniff",
	XFrameOptions:      "DENY",
	HSTSMaxAge:         365 * 24 * 60 * 60,
	// Subdomains are not ours to pin.
	HSTSExcludeSubdomains: true,
})

// verifyPeer is the middleware that verifies the client certificate a
// request's connection presented against this CA: the root as the anchor,
// the issuing chain as known intermediates (a leaf alone is enough), for
// client authentication at the server's clock. When it verifies, the
// request's TLS state carries the chains in VerifiedChains, as if the
// handshake had verified them, for every route that authenticates a devpki
// certificate (admin, EST re-enrollment; the native renewal checks its
// certificate against the registry instead). A certificate of
// another issuer (a factory IDevID) is left in PeerCertificates with no
// VerifiedChains: only an IDevID admission step looks at it, and verifies
// it against the registry's manufacturer roots.
func (s *Server) verifyPeer(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Method == http.MethodPost && r.URL.Path == renewPath {
			// A renewal authenticates its certificate by the registry
			// record it reads anyway (provision.RenewRequest.Unverified).
			return next(c)
		}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.VerifiedChains) == 0 {
			cs := *r.TLS
			cs.VerifiedChains, _ = s.trust().peers.Verify(cs.PeerCertificates, s.cfg.Now())
			r.TLS = &cs
		}
		return next(c)
	}
}

// peerVerifier trusts the CA's root with its issuing chain known.
func peerVerifier(root *x509.Certificate, chain []*x509.Certificate) *pki.ChainVerifier {
	roots := x509.NewCertPool()
	roots.AddCert(root)
	return pki.NewChainVerifier(roots, chain, x509.ExtKeyUsageClientAuth)
}
