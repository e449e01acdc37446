package api

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
)

// routesRenewExpired adds the renewal of an expired certificate: a
// challenge, then its answer signed with the certificate's key. Both are
// one rate-limited door; a wrong proof counts as a failed authentication.
// The mutual-TLS door (/v1/renew) keeps refusing expired certificates.
func (s *Server) routesRenewExpired(e *echo.Echo) {
	e.POST("/v1/renew/expired/challenge", s.renewExpiredChallenge, s.door("renew-expired"),
		s.auditRefusals(provision.ActionRenewExpiredChallenge))
	e.POST("/v1/renew/expired", s.renewExpired, s.door("renew-expired"), s.auditRefusals(provision.ActionRenewExpired))
}

// renewExpiredChallenge is POST /v1/renew/expired/challenge.
func (s *Server) renewExpiredChallenge(c echo.Context) error {
	var req wire.ExpiredChallengeRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	ch, err := s.cfg.Provision.RenewExpiredChallenge(c.Request().Context(), &provision.ExpiredChallengeRequest{
		CertPEM: []byte(req.Certificate), SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, &wire.ExpiredChallengeResponse{ChallengeID: ch.ID, Nonce: ch.Nonce, Expires: ch.Expires.UTC()})
}

// renewExpired is POST /v1/renew/expired: the answer to a challenge.
func (s *Server) renewExpired(c echo.Context) error {
	var req wire.RenewExpiredRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	res, err := s.cfg.Provision.RenewExpired(c.Request().Context(), &provision.RenewExpiredRequest{
		ChallengeID: req.ChallengeID, CertPEM: []byte(req.Certificate), Signature: req.Signature,
		CSRPEM: []byte(req.CSR), Certify: certification(req.Certify), SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return s.issued(c, res)
}

// expiredPeer is the answer of the mutual-TLS renewal door to a client
// certificate of this CA that has only expired: where to renew it instead.
// nil when there is no such certificate.
func (s *Server) expiredPeer(cs *tls.ConnectionState) error {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	if !s.cfg.Now().After(leaf.NotAfter) {
		return nil
	}
	if _, err := s.trust().peers.Verify(cs.PeerCertificates, leaf.NotAfter); err != nil {
		return nil
	}
	return problem(http.StatusUnauthorized, wire.SlugUnauthorized, "Client certificate expired",
		fmt.Sprintf("client certificate %s expired at %s: it cannot authenticate a renewal over mutual TLS; renew it by proof of possession "+
			"of its key (POST /v1/renew/expired/challenge, then /v1/renew/expired; 'enroll renew' does it), within the CA's grace period",
			leaf.SerialNumber.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339)))
}
