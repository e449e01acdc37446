package api

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/labstack/echo/v4"

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
func TLSConfig(cert tls.Certificate, classical bool) *tls.Config {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		// Devices talk to the CA once per enrollment or renewal, weeks
		// apart: a session ticket would never be used, and making one
		// costs CPU and a write on every handshake. (It also means every
		// request's client certificate is verified afresh, so a revoked
		// admin is refused on its next request.)
		SessionTicketsDisabled: true,
	}
	if classical {
		c.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	}
	return c
}

// verifyPeer is the middleware that verifies the client certificate a
// request's connection presented against this CA: the root as the anchor,
// the issuing chain as known intermediates (a leaf alone is enough), for
// client authentication at the server's clock. When it verifies, the
// request's TLS state carries the chains in VerifiedChains, as if the
// handshake had verified them, for every route that authenticates a devpki
// certificate (admin, renewal, EST re-enrollment). A certificate of
// another issuer (a factory IDevID) is left in PeerCertificates with no
// VerifiedChains: only an IDevID admission step looks at it, and verifies
// it against the registry's manufacturer roots.
func (s *Server) verifyPeer(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.VerifiedChains) == 0 {
			cs := *r.TLS
			cs.VerifiedChains, _ = s.peers.Verify(cs.PeerCertificates, s.cfg.Now())
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
